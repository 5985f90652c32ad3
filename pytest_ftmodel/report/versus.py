"""How every report shows a record's comparison with the baseline (``MetricRecord.baseline``).

The dict is filled by the baseline comparison: always a ``verdict``; when compared, the baseline's
figure (``value``), ``delta`` with its 95% interval (``low``, ``high``), ``p_value``, ``margin``,
``relative`` (delta and margin are relative changes, as for perplexity), the test used, ``notes``,
the ids that got ``worse`` (at most 20) and ``n_worse`` (all of them), and up to five
``worse_items``; ``quantity`` when the figures compared are not the metric's own (the validation
perplexity behind a loss gap: shown as ``ppl 1.704``); for a ``mismatch``, the ``reason``. The renderers share the wording and the
number formats defined here, so the terminal, Markdown, HTML and JUnit say the same thing.
"""

from __future__ import annotations

from typing import Any, Iterable

from pytest_ftmodel.escaping import visible
from pytest_ftmodel.report.records import MetricRecord, fmt, model_tag, record_model_tag

#: the order verdicts are counted and listed in: what needs attention first
VERDICTS = ("regressed", "mismatch", "inconclusive", "within noise", "improved", "new")

def baseline_failed(b: dict[str, Any] | None) -> bool:
    """Whether the comparison fails the test: a regression, a stopped comparison, or (in
    noninferiority mode) a comparison that could not show the candidate is not worse."""
    if not b:
        return False
    verdict = b.get("verdict")
    return verdict in ("regressed", "mismatch") or (verdict == "inconclusive" and b.get("mode") == "noninferiority")


def gate_failed(record: MetricRecord) -> bool:
    """The gate's own verdict: the figure missed its bar or its baseline comparison failed."""
    return not record.passed or baseline_failed(record.baseline)


def failed(record: MetricRecord) -> bool:
    """The record's outcome, as pytest counts it: its test's outcome once pytest reported it (a gate
    inside ``pytest.raises(AssertionError)`` fails as its test expects, and the test passes), the
    gate's own verdict before that and outside pytest."""
    if record.test_outcome:
        return record.test_outcome == "failed"
    return gate_failed(record)


#: the result column's word for a test's outcome
_RESULT = {"failed": "FAIL", "passed": "pass", "skipped": "skip", "xfailed": "xfail"}


def result_text(record: MetricRecord) -> str:
    """``pass`` / ``FAIL`` (``skip``, ``xfail``): the record's outcome; marked ``*`` where the gate's
    own verdict differs from it (see :data:`DIFFERS_NOTE`)."""
    word = _RESULT.get(record.test_outcome, "FAIL" if failed(record) else "pass")
    return word + ("*" if differs(record) else "")


def differs(record: MetricRecord) -> bool:
    """The test's outcome is not the gate's own verdict: a gate expected to fail (inside
    ``pytest.raises``) in a test that passed, or a gate that passed in a test that failed."""
    return record.test_outcome in ("passed", "failed") and failed(record) != gate_failed(record)


def gate_verdict(record: MetricRecord) -> str:
    return "fail" if gate_failed(record) else "pass"


#: what every report of a run that stopped before its end says, after "interrupted (why)"
INTERRUPTED_NOTE = (
    "the run did not reach its end, so these figures are those of the tests that ran before it stopped, "
    "and it wrote no baseline"
)


def interruption(session: dict[str, Any] | None) -> str:
    """Why the run of a report's ``session`` stopped before its end; "" when it ran to its end."""
    session = session or {}
    if not session.get("interrupted"):
        return ""
    return visible(session.get("interruption") or "interrupted")


#: the footnote of a ``*`` in a result column
DIFFERS_NOTE = (
    "* the test's outcome, which differs from the gate's own verdict (shown as gate_verdict): a gate expected "
    "to fail (inside pytest.raises) in a test that passed, or a gate that passed in a test that failed"
)


def compared(b: dict[str, Any] | None) -> bool:
    """The comparison ran and has a delta (not ``new``, not ``mismatch``)."""
    return b is not None and isinstance(b.get("delta"), (int, float)) and b.get("verdict") not in ("new", "mismatch")


def fmt_change(value: Any, relative: bool, *, sign: bool = True) -> str:
    """A change in the metric's units (``+0.0123``) or, when relative, in percent (``+1.94%``), to
    0.001%: a relative change below that is float noise (another summation order, another number of
    threads), shown as 0%."""
    if not isinstance(value, (int, float)):
        return "-"
    if relative:
        pct = float(value) * 100
        pct = 0.0 if abs(pct) < 5e-4 else pct
        text = f"{pct:.0f}" if abs(pct) >= 1000 else f"{pct:.3g}"
        text = "0" if text in ("0", "-0") else text
        return ("+" if sign and text[0] != "-" and text != "0" else "") + text + "%"
    text = fmt(float(value) + 0.0)  # -0.0 + 0.0 is 0.0
    return ("+" if sign and text[0] != "-" and text not in ("0", "nan") else "") + text  # no sign on 0 or nan


def delta_text(b: dict[str, Any] | None) -> str:
    """``Δ [low, high]``: the change and its 95% interval (``-`` when nothing was compared)."""
    if not compared(b):
        return "-"
    assert b is not None
    rel = bool(b.get("relative"))
    text = fmt_change(b["delta"], rel)
    if isinstance(b.get("low"), (int, float)) and isinstance(b.get("high"), (int, float)):
        text += f" [{fmt_change(b['low'], rel)}, {fmt_change(b['high'], rel)}]"
    return text


def margin_text(b: dict[str, Any] | None) -> str:
    if not b or not isinstance(b.get("margin"), (int, float)):
        return "-"
    return fmt_change(b["margin"], bool(b.get("relative")), sign=False)


def quantity_label(b: dict[str, Any] | None) -> str:
    """The short label of the quantity compared when it is not the metric's own figure (``ppl`` for the
    perplexity behind the loss gap or a perplexity improvement, ``acc`` for the fine-tuned model's
    accuracy behind an accuracy change), else ``""``."""
    quantity = str((b or {}).get("quantity") or "")
    if "perplexity" in quantity:
        return "ppl"
    return "acc" if "accuracy" in quantity else visible(quantity)


def _labelled(b: dict[str, Any] | None, value: Any) -> str:
    label = quantity_label(b)
    return f"{label} {fmt(float(value))}" if label else fmt(float(value))


def baseline_value_text(b: dict[str, Any] | None) -> str:
    """The baseline's figure on the paired items, labelled when it is another quantity than the metric."""
    if not b or not isinstance(b.get("value"), (int, float)):
        return "-"
    return _labelled(b, b["value"])


def candidate_text(b: dict[str, Any] | None, default: Any = None) -> str:
    """This run's figure on the paired items (the quantity compared), labelled as the baseline's is."""
    value = (b or {}).get("candidate", default)
    if not isinstance(value, (int, float)):
        return "-"
    return _labelled(b, value)


#: notes that change what a verdict rests on (items left out, another test used), shown whatever the verdict
_DECIDING = ("left out", "compared as continuous")


def verdict_notes(b: dict[str, Any] | None) -> list[str]:
    """The comparison's notes a reader of the terminal needs: all of them for an ``inconclusive``
    verdict (they say why), else those that change what the verdict rests on."""
    notes = [visible(n) for n in (b or {}).get("notes") or []]
    if verdict_of(b) == "inconclusive":
        return notes
    return [n for n in notes if any(d in n for d in _DECIDING)]


def p_text(b: dict[str, Any] | None, *, floor: bool = True) -> str:
    """The one-sided p-value to 3 digits (``<0.001`` below that, unless ``floor`` is false)."""
    if not b or not isinstance(b.get("p_value"), (int, float)):
        return "-"
    p = float(b["p_value"])
    return "<0.001" if floor and p < 0.001 else f"{p:.3g}"


def verdict_of(b: dict[str, Any] | None) -> str:
    return str((b or {}).get("verdict") or "-")


def worse_is_higher(record: MetricRecord) -> bool:
    """Which way a change hurts: up for relative (perplexity) comparisons and lower-is-better
    metrics, down for higher-is-better ones."""
    b = record.baseline or {}
    if isinstance(b.get("higher_is_better"), bool):
        return not b["higher_is_better"]
    if b.get("relative"):
        return True
    return record.op != ">="


def verdict_counts(records: Iterable[MetricRecord]) -> dict[str, int]:
    """Verdict -> how many records have it, in :data:`VERDICTS` order (unknown verdicts last)."""
    counts: dict[str, int] = {}
    for r in records:
        if r.baseline:
            v = verdict_of(r.baseline)
            counts[v] = counts.get(v, 0) + 1
    known = {v: counts[v] for v in VERDICTS if v in counts}
    return {**known, **{v: n for v, n in counts.items() if v not in known}}


def baseline_source(records: Iterable[MetricRecord], path: Any = None) -> str:
    """``baseline PATH of full/final (8333c1f0), now sft/final (b276e640)``: which baseline the records
    were compared with, and on which model this run's figures are; each named by the tail of its path
    and its fingerprint's prefix, so that two runs' ``final`` folders read apart."""
    text = "baseline" + (f" {visible(path)}" if path else "")
    for r in records:
        b = r.baseline or {}
        model, fp = b.get("baseline_model"), b.get("baseline_fingerprint")
        if model or fp:
            then = visible(model_tag(str(model or ""), str(fp or "")))
            now = visible(str(b.get("model") or "") or (record_model_tag(r) if any(r.fingerprints) else ""))
            return f"{text} of {then}" + (f", now {now}" if now and now != then else "")
    return text


def summary_line(records: list[MetricRecord], path: Any = None) -> str | None:
    """``baseline ftmodel-baseline.json (finetuned 4aa8dc33): 1 regressed, 5 within noise, 1 new``."""
    counts = verdict_counts(records)
    if not counts:
        return None
    return baseline_source(records, path) + ": " + ", ".join(f"{n} {visible(v)}" for v, n in counts.items())


def explain(record: MetricRecord) -> str:
    """A diagnosis from the comparison alone, for a record whose test left no message of its own."""
    b = record.baseline or {}
    verdict = verdict_of(b)
    if verdict == "mismatch":
        return f"{record.name}: not compared with the baseline: {visible(b.get('reason') or 'the settings differ')}"
    if not compared(b):
        return f"{record.name}: {verdict}"
    lines = [
        f"{record.name} {verdict} against the baseline: {baseline_value_text(b)} -> {candidate_text(b, record.value)}, "
        f"Δ {delta_text(b)} (95% CI), {visible(b.get('test') or 'paired test')} p = {p_text(b)}, margin {margin_text(b)}"
        + (f", {b['n_paired']} paired items" if isinstance(b.get("n_paired"), int) else "")
    ]
    for item in b.get("worse_items") or []:
        lines.append(
            f"  {visible(item.get('id'))}: {_quoted(item.get('prompt'))} expected {_quoted(item.get('expected'))}: "
            f"before {_quoted(item.get('before'))}, now {_quoted(item.get('after'))}"
        )
    return "\n".join(lines)


def _quoted(text: Any, limit: int = 120) -> str:
    """A short quoted form of an item's text; ``repr`` shows its control characters escaped."""
    text = "" if text is None else str(text)
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def scored_text(records: Iterable[MetricRecord]) -> str | None:
    """How the sacrebleu scores were computed (their signatures), for every report; None when no
    BLEU or chrF gate ran."""
    seen: dict[str, str] = {}
    for r in records:
        signature = r.details.get("signature")
        if signature and r.details.get("metric"):
            seen.setdefault(str(r.details["metric"]), str(signature))
    if not seen:
        return None
    return "scored with sacrebleu: " + "; ".join(f"{metric} {sig}" for metric, sig in sorted(seen.items()))


def judged_text(records: Iterable[MetricRecord]) -> str | None:
    """How the code gates' samples were judged, for every report: how many split, how many in-process
    (where an answer could tamper with its tests) and why; None when no code gate ran."""
    counts: dict[str, int] = {}
    why: dict[str, str] = {}
    for r in records:
        for verdict, count in (r.details.get("judged") or {}).items():
            counts[verdict] = counts.get(verdict, 0) + int(count)
        why.update(r.details.get("in_process") or {})
    if not counts:
        return None
    judged = f"judged: {counts.get('split', 0)} samples split, {counts.get('in-process', 0)} in-process"
    if why:
        shown = "; ".join(f"{task}: {reason}" for task, reason in sorted(why.items())[:5])
        more = f"; and {len(why) - 5} more problems" if len(why) > 5 else ""
        judged += f" (where an answer can tamper with its tests: {shown}{more}; --sandbox-judging=split-only refuses them)"
    return judged
