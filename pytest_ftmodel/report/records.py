"""The session's record of judged figures.

Every ``assert_*`` helper calls :func:`record_metric` once per figure it judges, with the result
object it judged: the per-item values a report plots (per-text NLL, per-item ROUGE, per-problem
pass counts, the training curve, A/B counts) are taken from it here, as plain JSON-safe data, so
records cross from pytest-xdist workers to the controller and into the JSON report unchanged. The
plugin tells the recorder which test is running, so each record carries its test id, and the record
is also attached to the test report's ``user_properties`` (which JUnit XML exports as
``<property>`` elements).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Callable, Iterable, Mapping

from pytest_ftmodel._stack import SessionStack

#: texts kept per item (prompt, expected, answer): enough to read, bounded for big data sets
TEXT_LIMIT = 1000


class ModelName(str):
    """A model's short name that remembers which checkpoint it names (path and fingerprint), so that
    reports can tell two ``checkpoint-320`` folders apart."""

    path: str
    fingerprint: str

    def __new__(cls, name: str, path: str = "", fingerprint: str = "") -> ModelName:
        self = super().__new__(cls, name)
        self.path = path
        self.fingerprint = fingerprint
        return self


def _where(path: Any) -> str:
    """An absolute checkpoint path, or a served model's URL as it is."""
    if isinstance(path, str) and path.lower().startswith(("http://", "https://")):
        return path
    return os.path.abspath(path) if isinstance(path, (str, os.PathLike)) else ""


def path_tail(path: str, depth: int = 2) -> str:
    """The last ``depth`` parts of a checkpoint path (``runs/sft/final`` -> ``sft/final``): what tells
    two runs' ``final`` folders apart in a baseline file that other machines read; a URL as it is."""
    if path.lower().startswith(("http://", "https://")):
        return path
    parts = [p for p in path.replace(os.sep, "/").split("/") if p]
    return "/".join(parts[-depth:]) or path


def model_tag(name: str, fingerprint: str = "") -> str:
    """``sft/final (b276e640)``: a model's name with its fingerprint's prefix, which tells apart two
    models of one name (the baseline's and this run's) even when their paths match."""
    return f"{name} ({fingerprint[:8]})" if name and fingerprint else name or (fingerprint[:8] if fingerprint else "")


def record_model_tag(record: Any) -> str:
    """The tag of the model a record's figure is compared on (the first of a ``model vs base`` pair)."""
    paths, fingerprints = tuple(record.model_paths or ()), tuple(record.fingerprints or ())
    if paths and paths[0] and not paths[0].lower().startswith(("http://", "https://")):
        return model_tag(path_tail(paths[0]), fingerprints[0] if fingerprints else "")
    return model_tag(str(record.model).split(" vs ")[0], fingerprints[0] if fingerprints else "")


def model_name(model: Any) -> ModelName:
    """The name of a model object (``FTModel``), a path, or a string, with its provenance."""
    if isinstance(model, ModelName):
        return model
    if model is None or isinstance(model, str):
        return ModelName(model or "")
    name = str(getattr(model, "name", "") or "")
    path = getattr(model, "path", None)
    fingerprint = getattr(model, "fingerprint", "")
    return ModelName(
        name,
        _where(path),
        fingerprint if isinstance(fingerprint, str) else "",
    )


@dataclass(frozen=True)
class MetricRecord:
    """One judged figure: what was measured, against which bar, on how many items.

    ``items`` are per-item values (each a dict with at least ``value``; texts cut to
    :data:`TEXT_LIMIT`; an ``id``, a content hash, where the figure can be compared per item), ``details``
    the figures a plot needs (``kind`` says which; ``compare_kind`` how it is compared with a baseline),
    ``baseline`` the comparison with the baseline file (verdict, figures, interval, p-value, margin,
    the items that got worse; see :mod:`pytest_ftmodel.baseline.gate`), None when no file is in use.
    """

    name: str
    value: float
    threshold: float | None
    op: str  # how value is compared with threshold: "<=" or ">="
    n: int
    unit: str
    passed: bool
    model: str = ""
    test: str = ""
    low: float | None = None
    high: float | None = None
    model_paths: tuple[str, ...] = ()
    fingerprints: tuple[str, ...] = ()
    settings: dict[str, Any] = field(default_factory=dict)
    items: tuple[dict[str, Any], ...] = ()
    details: dict[str, Any] = field(default_factory=dict)
    baseline: dict[str, Any] | None = None
    diagnosis: str = ""  # the failing test's message, when this figure failed
    #: the outcome of the test that recorded the figure ("passed", "failed", "skipped", "xfailed"),
    #: once pytest reported it; "" before that and outside pytest. ``passed`` stays the gate's own
    #: verdict: a gate inside ``pytest.raises(AssertionError)`` fails it while its test passes
    test_outcome: str = ""

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["model_paths"], out["fingerprints"], out["items"] = list(self.model_paths), list(self.fingerprints), list(self.items)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MetricRecord:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for key in ("model_paths", "fingerprints", "items"):
            values[key] = tuple(values.get(key) or ())
        return cls(**values)

    @property
    def interval(self) -> tuple[float, float] | None:
        return None if self.low is None or self.high is None else (self.low, self.high)

    @property
    def direction(self) -> str:
        return "higher is better" if self.op == ">=" else "lower is better"


class Recorder:
    """Collects :class:`MetricRecord` objects for one pytest session (one per xdist worker)."""

    def __init__(self) -> None:
        self.records: list[MetricRecord] = []
        self.current_item: Any = None
        #: the session's baseline gate (``pytest_ftmodel.baseline.gate``): fills ``record.baseline``
        #: before the record is kept and exported; None when no baseline file is in use
        self.gate: Callable[[MetricRecord], MetricRecord] | None = None
        #: node id -> position in the collection, so records come out in the order of a serial run
        self.order: dict[str, int] = {}

    def add(self, record: MetricRecord) -> MetricRecord:
        item = self.current_item
        if item is not None and not record.test:
            record = replace(record, test=item.nodeid)
        if self.gate is not None:
            record = self.gate(record)
        self.records.append(record)
        if item is not None:
            item.user_properties.extend(junit_properties(record))
        return record

    def settle(self, item: Any, outcome: str) -> None:
        """Give the records of the test ``item`` that have no outcome yet the outcome pytest reported
        for it, and their JUnit properties (taken when the figure was recorded) the same."""
        for i, r in enumerate(self.records):
            if r.test == item.nodeid and not r.test_outcome:
                self.records[i] = replace(r, test_outcome=outcome)
                _replace_run(item.user_properties, junit_properties(r), junit_properties(self.records[i]))

    def attach_diagnosis(self, test: str, message: str) -> None:
        """Give the failing figures of ``test`` the message its failure printed."""
        for i, r in enumerate(self.records):
            if r.test == test and not r.passed and not r.diagnosis:
                self.records[i] = replace(r, diagnosis=message)

    def ordered(self) -> list[MetricRecord]:
        """Records by the tests' collection order (a test's own records in the order taken)."""
        last = len(self.order)
        return sorted(self.records, key=lambda r: self.order.get(r.test, last))

    def merge(self, payload: dict[str, Any]) -> None:
        """Take in what a pytest-xdist worker sent (see :meth:`payload`)."""
        for test, index in payload.get("order", {}).items():
            self.order.setdefault(test, index)
        self.records.extend(MetricRecord.from_dict(r) for r in payload.get("records", []))

    def payload(self) -> dict[str, Any]:
        """This process's records as plain data for ``config.workeroutput``."""
        tests = {r.test for r in self.records}
        return {
            "records": [r.as_dict() for r in self.records],
            "order": {t: i for t, i in self.order.items() if t in tests},
        }


def junit_properties(record: MetricRecord) -> list[tuple[str, str]]:
    """``ftmodel.<metric>`` (the value) and its bar, direction, interval, size and verdict (the test's
    outcome once pytest reported it, with the gate's own as ``.gate_verdict``); with a
    baseline, its ``.baseline`` figure, ``.delta`` and ``.delta_interval`` (in percent when relative),
    ``.baseline_verdict``, ``.p_value`` and ``.margin``."""
    from pytest_ftmodel.report import versus

    key = f"ftmodel.{versus.visible(record.name)}"  # a name may hold a judge's name from a sheet: no raw control characters in XML
    props = [(key, fmt(record.value))]
    if record.threshold is not None:
        props += [(f"{key}.bar", fmt(record.threshold)), (f"{key}.direction", record.op)]
    if record.interval is not None:
        props.append((f"{key}.interval", f"[{fmt(record.low)}, {fmt(record.high)}]"))
    props += [(f"{key}.n", f"{record.n} {record.unit}"), (f"{key}.verdict", versus.result_text(record).rstrip("*").lower())]
    rep = (record.details or {}).get("repeats")
    if isinstance(rep, dict):
        props += [(f"{key}.samples", str(rep.get("samples"))), (f"{key}.flip_rate", fmt(rep.get("flip_rate")))]
        if rep.get("binary"):
            props += [(f"{key}.pass_at_k", fmt(rep.get("pass_at_k"))), (f"{key}.pass_hat_k", fmt(rep.get("pass_hat_k")))]
        props.append((f"{key}.flaky_items", ",".join(str(f.get("index")) for f in rep.get("flaky") or [])))
    if (record.details or {}).get("signature"):  # how a sacrebleu score was computed
        props.append((f"{key}.signature", str(record.details["signature"])))
    if record.test_outcome:  # the verdict is the test's outcome; the gate's own beside it
        props.append((f"{key}.gate_verdict", versus.gate_verdict(record)))
    b = record.baseline
    if b:
        if versus.compared(b):
            rel = bool(b.get("relative"))
            props += [
                (f"{key}.baseline", versus.baseline_value_text(b)), (f"{key}.delta", versus.fmt_change(b["delta"], rel)),
                (f"{key}.delta_interval", f"[{versus.fmt_change(b.get('low'), rel)}, {versus.fmt_change(b.get('high'), rel)}]"),
                (f"{key}.p_value", versus.p_text(b, floor=False)), (f"{key}.margin", versus.margin_text(b)),
            ]
        props.append((f"{key}.baseline_verdict", versus.verdict_of(b)))
        if b.get("reason"):
            props.append((f"{key}.baseline_reason", versus.visible(b["reason"])))
    return props


def _replace_run(values: list[Any], old: list[Any], new: list[Any]) -> None:
    """Replace the first run of ``old`` in ``values`` by ``new`` (nothing when it is not there)."""
    for start in range(len(values) - len(old) + 1):
        if values[start : start + len(old)] == old:
            values[start : start + len(old)] = new
            return


_recorders: SessionStack[Recorder] = SessionStack(Recorder())


def recorder() -> Recorder:
    """The recorder of the innermost running pytest session (or a default one outside pytest)."""
    return _recorders.current()


def push_recorder() -> Recorder:
    """Start a fresh record for a session; nested sessions (pytester) leave the outer one intact."""
    return _recorders.push(Recorder())


def pop_recorder(rec: Recorder) -> None:
    if _recorders.current() is rec:
        _recorders.pop()


def _models(model: Any) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """Display name, paths and fingerprints of one model or of a ``(model, base)`` comparison."""
    parts = [model_name(m) for m in (model if isinstance(model, tuple) else (model,))]
    name = " vs ".join(str(p) for p in parts) if any(parts) else ""
    if not any(p.path for p in parts):
        return name, (), ()
    return name, tuple(p.path for p in parts), tuple(p.fingerprint for p in parts)


def record_metric(
    name: str,
    value: float,
    *,
    threshold: float | None,
    op: str,
    n: int,
    unit: str,
    passed: bool,
    model: Any = "",
    interval: tuple[float, float] | None = None,
    result: Any = None,
    settings: dict[str, Any] | None = None,
) -> MetricRecord:
    """Record one judged figure for the session's reports.

    ``model``: a name, a loaded model, or a ``(model, base)`` pair. ``result``: the result object the
    figure came from; its per-item values go into the record (never an error: a result it does not
    know adds nothing). ``settings``: the options that produced the figure, shown in the JSON report.
    """
    low, high = interval if interval is not None else (None, None)
    label, paths, fingerprints = _models(model)
    items, details = describe_result(result, name)
    return recorder().add(
        MetricRecord(
            name=name,
            value=float(value),
            threshold=None if threshold is None else float(threshold),
            op=op,
            n=int(n),
            unit=unit,
            passed=bool(passed),
            model=label,
            low=None if low is None else float(low),
            high=None if high is None else float(high),
            model_paths=paths,
            fingerprints=fingerprints,
            settings=json_safe(settings or {}),
            items=items,
            details=details,
        )
    )


def fmt(value: float | None) -> str:
    """A number to 4 significant digits (3 in exponent form)."""
    if value is None:
        return "-"
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.3g}"
    return f"{value:.4g}"



def json_safe(value: Any) -> Any:
    """``value`` as JSON-safe data (dicts with string keys, lists, str, finite-or-None floats)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_safe(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    try:
        return float(value)  # numpy scalars
    except (TypeError, ValueError):
        return str(value)


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else "" if value is None else " / ".join(map(str, value)) if isinstance(value, tuple) else str(value)
    return text if len(text) <= TEXT_LIMIT else text[: TEXT_LIMIT - 1] + "…"


def item_ids(identities: Iterable[Any]) -> list[str]:
    """A content hash (16 hex digits) per item from its identity (the FULL prompt/text and reference,
    never the cut ones), with the occurrence index among equal items appended, so that reordering or
    extending the data keeps every item's id and duplicates stay apart."""
    seen: dict[str, int] = {}
    out = []
    for identity in identities:
        key = json.dumps(identity, sort_keys=True, ensure_ascii=False, default=str)
        count = seen.get(key, 0)
        seen[key] = count + 1
        out.append(hashlib.sha256(f"{key}\x00{count}".encode()).hexdigest()[:16])
    return out


# --- per-item values and plot data from the result objects the helpers judge --------------------
# Duck-typed on attribute names, so a metric module can grow without this file knowing; a result it
# does not understand contributes nothing rather than failing a gate.

Described = tuple[tuple[dict[str, Any], ...], dict[str, Any]]


def _add_repeats(details: dict[str, Any], stability: Any, prompts: Mapping[int, str], scale: float = 1.0) -> None:
    """With samples > 1: the figure's stability (samples, pass@k and pass^k for 0/1 figures, the flip
    rate) and its flaky items (index, mean over samples on the figure's ``scale``, prompt), every one of them."""
    if stability is None:
        return
    out = stability.as_dict()
    out["flaky"] = [
        {"index": i, "mean": scale * stability.means[i], **({"prompt": _text(prompts[i])} if i in prompts else {})}
        for i in stability.flaky
    ]
    details["repeats"] = out


def repeats_text(record: MetricRecord, shown: int = 5) -> str:
    """One line on a sampled figure's stability and its flaky items ("" for a single-answer figure);
    plain text: the callers escape it."""
    rep = (record.details or {}).get("repeats")
    if not isinstance(rep, dict):
        return ""
    k = rep.get("samples")
    parts = [f"{k} samples per item"]
    if rep.get("binary"):
        parts.append(f"pass@{k} {fmt(rep.get('pass_at_k'))}, pass^{k} {fmt(rep.get('pass_hat_k'))}")
    parts.append(f"flip rate {fmt(rep.get('flip_rate'))}")
    flaky = rep.get("flaky") or []
    listed = ", ".join(str(f.get("index")) for f in flaky[:shown]) + (f" and {len(flaky) - shown} more" if len(flaky) > shown else "")
    parts.append(f"{len(flaky)} of {rep.get('n')} items flaky" + (f" (items {listed})" if flaky else ""))
    return "; ".join(parts)


def _perplexity_items(result: Any) -> list[dict[str, Any]]:
    texts = tuple(getattr(result, "texts", ()) or ())
    contexts = tuple(getattr(result, "contexts", ()) or ())
    ids = item_ids(
        [contexts[i] if i < len(contexts) else "", texts[i] if i < len(texts) else str(i)] for i in range(len(result.per_text))
    )
    return [
        {
            "index": i, "id": ids[i], "value": s.per_token, "nll": s.nll, "n_tokens": s.n_tokens,
            **({"text": _text(texts[i])} if i < len(texts) else {}),
            **({"prompt": _text(contexts[i])} if i < len(contexts) and contexts[i] else {}),
        }
        for i, s in enumerate(result.per_text)
    ]


def _perplexity(result: Any, name: str) -> Described:
    details = {
        "kind": "per-text NLL", "item_value": "NLL per token (nats)", "better": "lower", "n_tokens": result.n_tokens,
        "compare_kind": "perplexity",
    }
    return tuple(_perplexity_items(result)), details


def _improvement(result: Any, name: str) -> Described:
    items = _perplexity_items(result.model)
    for item, base in zip(items, result.base.per_text):
        item["model"], item["base"] = item["value"], base.per_token
        item["value"] = item["model"] - item["base"]  # the texts it improved least come first
    # against a baseline, the fine-tuned side is compared ("nll" is the model's): the base model is
    # the same in both runs, so a worse improvement is a worse perplexity of the model on these texts
    details = {
        "kind": "per-text NLL", "item_value": "NLL per token minus the base model's (nats)", "better": "lower", "compare": "base",
        "model_perplexity": result.model.perplexity, "base_perplexity": result.base.perplexity,
        "compare_kind": "perplexity", "compare_note": "the fine-tuned model's perplexity on these texts (the base model's side is not compared)",
        "compare_quantity": "the fine-tuned model's perplexity",
    }
    return tuple(items), details


def _rouge(result: Any, name: str) -> Described:
    metric = name if name in ("rouge1", "rouge2", "rougeL") else "rougeL"
    ids = item_ids([it.prompt, it.reference] for it in result.items)
    items = [
        {"index": it.index, "id": i, "value": getattr(it, metric), "prompt": _text(it.prompt), "expected": _text(it.reference), "answer": _text(it.generated)}
        for i, it in zip(ids, result.items)
    ]
    details = {"kind": "per-item score", "item_value": f"{metric} F-measure", "better": "higher", "compare_kind": "continuous"}
    _add_repeats(details, (getattr(result, "stability", None) or {}).get(metric), {it.index: it.prompt for it in result.items})
    return tuple(items), details


def _classification(result: Any, name: str) -> Described:
    ids = item_ids([it.prompt, it.expected] for it in result.items)
    items = [
        {
            "index": it.index, "id": i, "value": float(getattr(it, "correct", it.predicted == it.expected)), "prompt": _text(it.prompt),
            "expected": _text(it.expected), "answer": _text(it.generated), "predicted": it.predicted,
        }
        for i, it in zip(ids, result.items)
    ]
    details = {
        "kind": "classification", "item_value": "correct", "better": "higher", "perfect": 1.0,
        "labels": list(result.confusion_labels), "confusion": [list(r) for r in result.confusion],
        "per_label_f1": {k: v.f1 for k, v in result.per_label.items()},
    }
    # accuracy is a mean of per-item 0/1 (with samples: of per-item shares of right samples, compared
    # with the items as the unit); macro-F1 is not a per-item mean, so it is not compared
    if name == "accuracy":
        details["compare_kind"] = "binary" if getattr(result, "samples", 1) == 1 else "continuous"
    _add_repeats(details, getattr(result, "stability", None), {it.index: it.prompt for it in result.items})
    return tuple(items), details


def _mc_items(result: Any) -> list[dict[str, Any]]:
    from pytest_ftmodel.metrics.mc import item_identity

    ids = item_ids(item_identity(it) for it in result.items)
    return [
        {
            "index": it.index, "id": i, "value": float(it.correct), "prompt": _text(it.prompt),
            "expected": _text(it.choices[it.gold]), "answer": _text(it.choices[it.predicted]), "predicted": it.predicted,
            "loglik": list(it.loglik), **({"category": it.category} if it.category else {}),
        }
        for i, it in zip(ids, result.items)
    ]


def _mc(result: Any, name: str) -> Described:
    from pytest_ftmodel.metrics.mc import rule_signature

    details = {
        "kind": "multiple choice", "item_value": "correct", "better": "higher", "perfect": 1.0,
        "accuracies": dict(result.accuracies), "rule": rule_signature(result), "compare_kind": "binary",
    }
    return tuple(_mc_items(result)), details


def _forgetting(result: Any, name: str) -> Described:
    from pytest_ftmodel.metrics.mc import rule_signature

    items = _mc_items(result.model)
    for item, theirs in zip(items, result.base.items):
        item["model"], item["base"] = item["value"], float(theirs.correct)
    # against a baseline, the fine-tuned side is compared: the base model is the same in both runs
    details = {
        "kind": "multiple choice", "item_value": "correct", "better": "higher", "perfect": 1.0, "compare": "base",
        "model_accuracy": result.model.accuracy, "base_accuracy": result.base.accuracy, "p_value": result.p_value,
        "rule": rule_signature(result.model), "compare_kind": "binary",
        "compare_note": "the fine-tuned model's per-item accuracy (the base model's side is not compared)",
        "compare_quantity": "the fine-tuned model's accuracy",
        "categories": [
            {"category": c.category, "n": c.n, "model": c.model, "base": c.base, "p": c.p_value, "p_holm": c.p_holm}
            for c in result.categories
        ],
    }
    return tuple(items), details


def _code(result: Any, name: str) -> Described:
    from pytest_ftmodel.metrics.code import pass_at_k

    k = int(name.removeprefix("pass@")) if name.startswith("pass@") and name[5:].isdigit() else 1
    ids = item_ids([p.task_id, getattr(p, "prompt", ""), getattr(p, "test", "")] for p in result.problems)
    items = []
    for i, p in enumerate(result.problems):
        shown = next((s for s in p.samples if s.status != "passed"), p.samples[0] if p.samples else None)
        items.append(
            {
                "index": i, "id": ids[i], "task_id": p.task_id, "value": p.correct / p.n if p.n else 0.0, "correct": p.correct, "n": p.n,
                **({"compare": pass_at_k(p.n, p.correct, k)} if k > 1 and p.n >= k else {}),
                **({"prompt": _text(p.prompt)} if getattr(p, "prompt", "") else {}),
                **({"status": shown.status, "answer": _text(shown.completion), "stderr": _text(shown.stderr[-TEXT_LIMIT:])} if shown else {}),
            }
        )
    n = int(result.n)
    by_k = {
        str(k): sum(pass_at_k(p.n, p.correct, k) for p in result.problems) / len(result.problems)
        for k in range(1, n + 1)
    } if result.problems and all(p.n == n for p in result.problems) else {}
    details = {
        "kind": "pass@k", "item_value": "share of samples passing", "better": "higher", "perfect": 1.0, "samples": n,
        "pass_at": by_k, "isolation": str(result.isolation) if result.isolation is not None else "",
        # how the samples were judged ("split", "in-process": counts) and why a problem was judged in-process
        "judged": dict(getattr(result, "verdicts", {})), "in_process": dict(getattr(result, "in_process", {})),
        # pass@1 of one greedy sample per problem is 0/1 per problem; otherwise each problem's
        # unbiased pass@k estimate (item "compare") is a score in [0, 1]
        "compare_kind": "binary" if n == 1 and k == 1 else "continuous",
    }
    return tuple(items), details


def _overfit(result: Any, name: str) -> Described:
    if name == "memorised share":
        items = [
            {"index": m.index, "value": 1.0, "prompt": _text(m.prompt), "answer": _text(m.answer),
             "expected": _text(m.training_output), "verbatim": m.verbatim}
            for m in result.memorised
        ]
        memo: dict[str, Any] = {"kind": "memorised", "item_value": "copied a training output", "better": "lower"}
        # every flaky item copies in some sample, so it is among the copies, with its prompt
        _add_repeats(memo, getattr(result, "stability", None), {m.index: m.prompt for m in result.memorised})
        return tuple(items), memo
    if name != "loss gap":
        return (), {}
    items = _perplexity_items(result.val)
    # the gap is a difference of two losses: against a baseline the validation side is compared (a
    # higher validation loss on the same items is the regression; the absolute bar keeps the gap)
    details = {
        "kind": "per-text NLL", "item_value": "NLL per token (nats)", "better": "lower", "band": result.band,
        "train_loss": result.train_loss, "val_loss": result.val_loss,
        "train_values": [s.per_token for s in result.train.per_text],
        "compare_kind": "perplexity", "compare_note": "validation perplexity (the training side is not compared)",
        "compare_quantity": "validation perplexity",
    }
    return tuple(items), details


def _curve(result: Any, name: str) -> Described:
    details = {
        "kind": "training curve", "train": [list(p) for p in result.train], "eval": [list(p) for p in result.eval],
        "best_step": result.best_step, "best_eval_loss": result.best_eval_loss, "path": str(result.path),
    }
    for extra in ("best_checkpoint", "source"):
        if getattr(result, extra, None) is not None:
            details[extra] = str(getattr(result, extra))
    return (), details


def _ab(result: Any, name: str) -> Described:
    details = {
        "kind": "A/B", "model_wins": result.model_wins, "base_wins": result.base_wins, "ties": result.ties,
        "interval": list(result.interval), "p_value": result.p_value, "judges": list(result.judges),
        "agreement": result.agreement, "agreement_kind": result.agreement_kind, "better": "higher",
    }
    per_item = tuple(getattr(result, "items", ()) or ())
    # per item: the share of its decided judgements the fine-tuned model won (items only tied are left out)
    decided = [it for it in per_item if it.get("model", 0) + it.get("base", 0)]
    ids = item_ids([it.get("prompt", ""), it.get("expected")] for it in decided)
    items = [
        {"index": i, "id": ids[i], "value": it["model"] / (it["model"] + it["base"]), "model": it["model"], "base": it["base"],
         "ties": it.get("tie", 0), "prompt": _text(it.get("prompt")), "sheet_id": str(it.get("id", ""))}
        for i, it in enumerate(decided)
    ]
    if items:
        details["compare_kind"] = "continuous"
        details["item_value"] = "share of the item's decided judgements won by the fine-tuned model"
    return tuple(items), details


def _human(result: Any, name: str) -> Described:
    criterion = name.removeprefix("human ")
    every = tuple(getattr(result, "items", ()) or ())
    source = every or result.lowest
    ids = item_ids([it.get("prompt"), it.get("expected")] for it in source)
    items = []
    for i, it in enumerate(source):
        given = it.get("scores") or {}
        scores = [v for v in given.values() if isinstance(v, (int, float))]
        value = given.get(criterion) if isinstance(given.get(criterion), (int, float)) else (sum(scores) / len(scores) if scores else 0.0)
        items.append(
            {"index": i, "value": value, "id": ids[i], "sheet_id": str(it.get("id", i)),
             "prompt": _text(it.get("prompt")), "expected": _text(it.get("expected")), "answer": _text(it.get("generated")),
             "notes": _text(it.get("notes"))}
        )
    details = {"kind": "human", "means": dict(result.means), "n_items": result.n_items, "better": "higher", "item_value": "mean score"}
    if every and criterion in result.means:
        # every scored item's mean score (over its reviewers) on this criterion: an ordinal paired comparison
        details["compare_kind"] = "ordinal"
        details["item_value"] = f"mean {criterion} score"
    return tuple(items), details


def _judge(result: Any, name: str) -> Described:
    """An automated judge's scores on one criterion (the record's name ends with it): per item the
    judge's score, and for the plot the (people's mean, judge) pairs on the items both scored."""
    criterion = name.rsplit(" ", 1)[-1]
    judged = [it for it in result.items if criterion in it["judge"]]
    ids = item_ids([it.get("prompt"), it.get("generated")] for it in judged)
    items = [
        {"index": i, "id": ids[i], "sheet_id": str(it["id"]), "value": it["judge"][criterion],
         "repeats": it["repeats"].get(criterion, []), "human": (it["human"] or {}).get(criterion),
         "prompt": _text(it.get("prompt")), "answer": _text(it.get("generated"))}
        for i, it in enumerate(judged)
    ]
    cal = result.calibration.get(criterion)
    details = {
        "kind": "judge", "judge": result.judge, "criterion": criterion, "better": "higher",
        "item_value": f"judge's {criterion} score", "compare_kind": "continuous",
        "means": dict(result.means), "n_items": result.n_items, "repeats": result.repeats,
        "alpha": None if cal is None else cal.alpha, "alpha_interval": None if cal is None or cal.interval is None else list(cal.interval),
        "overlap": 0 if cal is None else cal.overlap, "pairs": [] if cal is None else [list(p) for p in cal.pairs],
        "self_agreement": result.self_agreement.get(criterion), "spread": result.spread.get(criterion),
        "length_bias": result.length_bias.get(criterion), "position_bias": result.position_bias.get(criterion),
    }
    return tuple(items), details


def _leaks(result: Any, name: str) -> Described:
    items = [{"index": x.val_index, "value": 1.0, "train_index": x.train_index, "exact": x.exact, "text": _text(x.text)} for x in result]
    return tuple(items), {"kind": "leakage", "item_value": "leaked", "better": "lower"}


def _format(result: Any, name: str) -> Described:
    from pytest_ftmodel.metrics.form import reason_kind

    ids = item_ids([it.prompt] for it in result.items)
    items = [
        {
            "index": it.index, "id": i, "value": float(getattr(it, "share", it.passed)), "prompt": _text(it.prompt), "answer": _text(it.answer),
            **({"reason": _text(it.reason)} if it.reason else {}),
        }
        for i, it in zip(ids, result.items)
    ]
    reasons: dict[str, int] = {}  # with samples: over every failing sample
    for it in result.items:
        for why in getattr(it, "reasons", ()) or (it.reason,):
            if why:
                reasons[reason_kind(why)] = reasons.get(reason_kind(why), 0) + 1
    sampled = getattr(result, "samples", 1) > 1
    details = {
        "kind": "format", "item_value": "share of samples passing every check" if sampled else "passes every check", "better": "higher",
        "perfect": 1.0, "compare_kind": "continuous" if sampled else "binary",  # with samples: per-item shares, the item the unit
        "checks": list(result.checks), "reasons": reasons, "n_passed": result.n_passed,
    }
    _add_repeats(details, getattr(result, "stability", None), {it.index: it.prompt for it in result.items})
    return tuple(items), details


def _reference(result: Any, name: str) -> Described:
    ids = item_ids([it.prompt, list(it.references)] for it in result.items)
    items = [
        {
            "index": it.index, "id": i, "value": it.value, "prompt": _text(it.prompt), "expected": _text(it.references[0]),
            "answer": _text(it.generated),
        }
        for i, it in zip(ids, result.items)
    ]
    item_value = {
        "exact_match": "exact match (SQuAD-normalised)", "f1": "token F1 (SQuAD-normalised)",
        "bleu": "sentence BLEU (sacrebleu, effective order)", "chrf": "sentence chrF (sacrebleu)",
    }.get(result.metric, "score")
    if getattr(result, "samples", 1) > 1:
        item_value = f"mean {item_value} over {result.samples} samples"
    details = {
        "kind": "reference score", "metric": result.metric, "item_value": item_value, "better": "higher",
        # with samples, exact match is a per-item share of right samples (the item the unit)
        "compare_kind": "binary" if result.metric == "exact_match" and getattr(result, "samples", 1) == 1 else "continuous",
        "interval_method": result.interval_method,
        **({"signature": result.signature} if result.signature else {}),
        **({"perfect": 1.0} if result.metric == "exact_match" else {}),
    }
    scale = {"bleu": 100.0, "chrf": 100.0}.get(result.metric, 1.0)
    _add_repeats(details, getattr(result, "stability", None), {it.index: it.prompt for it in result.items}, scale)
    return tuple(items), details


def _length(result: Any, name: str) -> Described:
    ids = item_ids([it.prompt] for it in result.items)
    items = [
        {
            "index": it.index, "id": i, "value": it.length, "words": it.n_words, **({"tokens": it.n_tokens} if it.n_tokens is not None else {}),
            **({"base": it.base_length, "ratio": it.ratio} if it.base_length is not None else {}),
            "prompt": _text(it.prompt), "answer": _text(it.answer),
        }
        for i, it in zip(ids, result.items)
    ]
    details = {
        "kind": "length", "unit": result.unit, "against": result.against, "item_value": f"answer length ({result.unit})",
        "better": "lower", "model_lengths": [it.length for it in result.items],
        "base_lengths": [it.base_length for it in result.items if it.base_length is not None],
        "mean_length": result.mean_length, "mean_base_length": result.mean_base_length,
        # each item's length goes to the baseline file, where assert_length without base= reads it;
        # the helper compares with it itself (a paired test of raw lengths would gate on any change)
        "compare_kind": "continuous", "self_compared": True,
    }
    return tuple(items), details


_DESCRIBERS: dict[str, Callable[[Any, str], Described]] = {
    "FormatResult": _format,
    "ReferenceResult": _reference,
    "LengthResult": _length,
    "PerplexityResult": _perplexity,
    "ImprovementResult": _improvement,
    "RougeResult": _rouge,
    "ClassificationResult": _classification,
    "CodeResult": _code,
    "MCResult": _mc,
    "ForgettingResult": _forgetting,
    "OverfitResult": _overfit,
    "TrainingCurve": _curve,
    "ABResult": _ab,
    "HumanScores": _human,
    "JudgeScores": _judge,
}


def describe_result(result: Any, name: str) -> Described:
    """Per-item values and plot data of ``result`` as JSON-safe data; nothing for an unknown result."""
    if result is None:
        return (), {}
    kind = type(result).__name__
    describe = _DESCRIBERS.get(kind)
    if describe is None and isinstance(result, list) and all(type(x).__name__ == "Leak" for x in result):
        describe = _leaks
    if describe is None:
        return (), {}
    try:
        items, details = describe(result, name)
    except Exception:  # noqa: BLE001 - a report detail never fails a gate
        return (), {}
    return tuple(json_safe(dict(i)) for i in items), json_safe(details)


def display_names(records: Iterable[MetricRecord]) -> dict[str, str]:
    """Each checkpoint path -> the shortest trailing part of it that no other path of the session
    shares (``full/checkpoint-320`` and ``lora/checkpoint-320``, not ``checkpoint-320`` twice)."""
    paths = sorted({p for r in records for p in r.model_paths if p})
    split = {p: [part for part in p.replace(os.sep, "/").split("/") if part] for p in paths}
    names: dict[str, str] = {}
    for p, parts in split.items():
        for depth in range(1, len(parts) + 1):
            tail = parts[-depth:]
            if not any(q != p and split[q][-depth:] == tail for q in paths):
                names[p] = "/".join(tail)
                break
        else:
            names[p] = p
    return names


def model_label(record: MetricRecord, names: dict[str, str]) -> str:
    """The record's model as the session tells its models apart (its own name when it has no path)."""
    if not record.model_paths or not all(record.model_paths):
        return record.model
    return " vs ".join(names.get(p, p) for p in record.model_paths)
