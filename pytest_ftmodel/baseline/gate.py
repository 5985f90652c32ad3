"""The session's baseline gate: compare each judged figure with its entry, say why it failed.

One :class:`BaselineSession` per pytest session (per pytest-xdist worker; the controller merges what
the workers saw and writes the file once). It is the recorder's ``gate``: every record passes
through :meth:`BaselineSession.__call__` before it is kept and exported, which fills
``record.baseline`` (see the shared spec: verdict, the comparison's figures, the baseline's model
and the items that got worse). The ``assert_*`` helpers then fail a test whose figure regressed,
even when its absolute bar holds. Standard library only at import.
"""

from __future__ import annotations

import contextvars
import difflib
import math
import re
import shlex
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable, Mapping

from pytest_ftmodel.baseline import store
from pytest_ftmodel.escaping import visible
from pytest_ftmodel.report.records import model_tag, record_model_tag

#: margins used when compare.py does not define DEFAULT_MARGINS (absolute, perplexity relative)
FALLBACK_MARGINS = {"binary": 0.01, "continuous": 0.01, "perplexity": 0.02, "ordinal": 0.1}

#: verdicts that fail the test that recorded the figure (inconclusive only in noninferiority mode)
FAILING = ("regressed", "mismatch")

#: a helper's ``margin=``: a number for every metric it judges, or {metric: number}
_helper_margin: contextvars.ContextVar[Any] = contextvars.ContextVar("ftmodel_helper_margin", default=None)

#: items shown in a diagnosis
SHOWN = 3
#: items kept in ``record.baseline["worse_items"]``
KEPT = 5


def set_helper_margin(margin: Any) -> contextvars.Token[Any]:
    return _helper_margin.set(margin)


def reset_helper_margin(token: contextvars.Token[Any]) -> None:
    _helper_margin.reset(token)


def parse_margin(text: str) -> tuple[str, float]:
    """``NAME=VALUE`` (``accuracy=0.02``, ``perplexity=0.05``) as a pair; ValueError with the fix."""
    name, sep, value = str(text).rpartition("=")
    name = name.strip()
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not sep or not name or not math.isfinite(number) or number < 0:
        raise ValueError(
            f"bad margin {text!r}: write NAME=VALUE with the metric's name and a non-negative number, "
            "e.g. accuracy=0.02 or perplexity=0.05"
        )
    return name, number


def parse_margins(text: str) -> list[tuple[str, float]]:
    """One option value or ini line as ``NAME=VALUE`` pairs: one, or several separated by commas or
    spaces (``loss gap=0.5, accuracy=0.1``; a name may hold spaces, a value may not)."""
    parts = str(text).strip().rstrip(",").split("=")
    if len(parts) <= 2:
        return [parse_margin(str(text))]
    names, values = [parts[0]], list[str]()
    for middle in parts[1:-1]:
        found = re.match(r"\s*([^\s,]+)[\s,]+(.*\S.*)$", middle, re.S)
        if not found:
            values = []
            break
        values.append(found[1])
        names.append(found[2])
    try:
        if not values:
            raise ValueError(text)
        return [parse_margin(f"{name}={value}") for name, value in zip(names, [*values, parts[-1]])]
    except ValueError:
        raise ValueError(
            f"bad margin {text!r}: write NAME=VALUE with the metric's name and a non-negative number, "
            "e.g. accuracy=0.02 or perplexity=0.05, several separated by commas"
        ) from None


#: names of the figures the assert_* helpers record (patterns for those with a part of the user's)
KNOWN_METRICS = (
    "perplexity", "perplexity improvement", "loss gap", "rouge1", "rouge2", "rougeL", "accuracy", "macro_f1",
    "A/B win rate", "mc accuracy", "mc accuracy change", "memorised share", "distinct-2", "eval loss (best)", "leaked val items",
    "format", "exact_match", "f1", "bleu", "chrf", "length ratio",
)
KNOWN_PATTERNS = (r"pass@\d+", r"human .+", r"A/B judge .+ vs people \(kappa\)")


def known_metric(name: str) -> bool:
    return name in KNOWN_METRICS or any(re.fullmatch(p, name) for p in KNOWN_PATTERNS)


#: where a session's margins come from, for the lines that name one
MARGINS_FROM = "--ftmodel-margin / ini ftmodel_margins"


def misnamed_margin(name: str, recorded: Iterable[str], *, listed: Iterable[str], listed_as: str) -> str:
    """The error line for a margin that names no metric (not one the helpers record, nor one in
    ``recorded``, the names recorded in this run); empty when it names one. ``listed`` are the names
    shown after ``listed_as`` (e.g. "compared in this run")."""
    recorded = list(recorded)
    if known_metric(name) or name in recorded:
        return ""
    pool = {m.lower(): m for m in [*KNOWN_METRICS, "pass@1", *recorded]}
    close = difflib.get_close_matches(name.lower(), list(pool), n=3, cutoff=0.6)
    hint = f" (did you mean {' or '.join(repr(pool[c]) for c in close)}?)" if close else ""
    return (
        f"ERROR baseline: margin {name!r} ({MARGINS_FROM}): no metric has that name{hint}; {listed_as}: "
        f"{', '.join(sorted(set(listed))) or 'none'}. Fix the name; the run fails until then."
    )


class MarginWarning(UserWarning):
    """A regression margin names a metric that no figure of this run was compared on."""


def default_margins() -> dict[str, float]:
    from pytest_ftmodel.baseline import compare

    margins = dict(FALLBACK_MARGINS)
    margins.update(getattr(compare, "DEFAULT_MARGINS", {}) or {})
    return margins


def _shown(text: Any, width: int = 60) -> str:
    """Untrusted text for a terminal: whitespace runs folded, cut, and quoted by repr, so control
    characters read as escapes (``\\x1b``) and never act."""
    flat = " ".join(str(text or "").split())
    return repr(flat if len(flat) <= width else flat[: width - 3] + "...")


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    value = float(value)
    if math.isnan(value):
        return "nan"
    return f"{value:.4g}"


def _round_up(value: float) -> str:
    """``value`` rounded up to two significant digits (a margin that covers it)."""
    digits = 1 - math.floor(math.log10(abs(value)))
    return f"{math.ceil(value * 10**digits) / 10**digits:.{max(digits, 0)}f}"


def _fmt_delta(value: float, relative: bool) -> str:
    return f"{value:+.1%}" if relative else f"{value:+.4g}"


def _now_model(b: Mapping[str, Any]) -> str:
    """`` (model sft/final (b276e640))``: this run's model, named beside the baseline's."""
    return f" (model {visible(str(b['model']))})" if b.get("model") else ""


class BaselineSession:
    """Baseline options read once, the file's entries, and what this session did with them."""

    def __init__(
        self,
        path: Path,
        *,
        update: bool,
        mode: str = "superiority",
        margins: Mapping[str, float] | None = None,
        alpha: float = 0.05,
        command: str = "pytest",
        command_options: Iterable[str] = (),
        version: str = "",
        rootdir: Path | None = None,
    ) -> None:
        self.path = path
        #: pytest's rootdir: node ids are relative to it, the file's test names to the file's folder
        self.rootdir = rootdir
        self.update = update
        self.mode = mode
        self.margins = dict(margins or {})
        self.alpha = alpha
        self.command = command
        self.command_options = list(command_options)
        self.version = version
        #: what was wrong with a broken file that this update replaces (kept aside, see store.keep_aside)
        self.broken = ""
        try:
            self.entries: dict[str, dict[str, Any]] = store.load(path)
        except store.BaselineFileError as exc:
            if not (update and exc.broken):
                raise
            self.entries, self.broken = dict(exc.salvaged), exc.broken
        #: tests whose call phase passed, every test collected or deselected, those deselected
        #: (node ids), and the files a selection narrowed (rootdir-relative; None: every file, --lf)
        self.passed: set[str] = set()
        self.known: set[str] = set()
        self.deselected: set[str] = set()
        self.narrowed: set[str] | None = set()
        #: the line saying the file could not be written (the run then fails)
        self.write_failed = ""
        if not update and rootdir is not None:
            self._check_beside_its_tests()
        self._seen: dict[tuple[str, str], int] = {}
        #: what the controller wrote at the end (for the summary)
        self.outcome: list[str] = []

    def _check_beside_its_tests(self) -> None:
        """A gate never passes on nothing: a file none of whose entries belongs to a test file beside
        it (moved away from its tests) matches no test, so it stops the run."""
        folder = self.path.parent
        files = sorted({store.file_of(store.test_of(k, e)): k for k, e in sorted(self.entries.items(), reverse=True)}.items())
        if not files or any((folder / file).is_file() for file, _ in files):
            return
        file, key = files[0]
        raise store.BaselineFileError(
            f"baseline file {self.path}: none of its {len(self.entries)} entries belongs to a test file beside it (keys are relative "
            f"to the baseline's folder: {key} would be {folder / file}, which does not exist): move the file back beside the tests, "
            "or re-record it where it is with --ftmodel-update-baseline"
        )

    # -- the gate ---------------------------------------------------------------------------------

    def __call__(self, record: Any) -> Any:
        """``record`` with ``baseline`` filled (and ``passed`` False when the comparison fails it)."""
        if not record.test:
            return record
        count = self._seen.get((record.test, record.name), 0) + 1
        self._seen[(record.test, record.name)] = count
        if self.update:
            return record  # the figures are recorded, not compared
        kind = (record.details or {}).get("compare_kind")
        if not kind or (record.details or {}).get("self_compared"):
            return record  # no per-item figures, or a helper that compares with its entry itself (assert_length)
        key = f"{self.test_key(record.test)}::{record.name}" + (f"#{count}" if count > 1 else "")
        entry = self.entries.get(key)
        if entry is None:
            return replace(record, baseline={"verdict": "new"})
        problem, remedy = self._mismatch(record, kind, entry, key=key)
        if problem:
            reason = f"{problem}: {remedy}re-record the baseline with {self.update_command(record.test)}"
            return replace(record, baseline={"verdict": "mismatch", "reason": reason}, passed=False)
        baseline = self._compare(record, kind, entry)
        failed = baseline["verdict"] in FAILING or (baseline["verdict"] == "inconclusive" and self.mode == "noninferiority")
        return replace(record, baseline=baseline, passed=record.passed and not failed)

    def test_key(self, nodeid: str) -> str:
        """The test's name in the file: its node id with the file relative to the baseline's folder."""
        return nodeid if self.rootdir is None else store.relative_test(nodeid, self.rootdir, self.path.parent)

    def margin_for(self, name: str, kind: str) -> float:
        helper = _helper_margin.get()
        if isinstance(helper, Mapping):
            if name in helper:
                return float(helper[name])
        elif helper is not None:
            return float(helper)
        if name in self.margins:
            return self.margins[name]
        return float(default_margins().get(kind, 0.01))

    def _mismatch(self, record: Any, kind: str, entry: Mapping[str, Any], *, key: str = "") -> tuple[str, str]:
        """Why this record cannot be compared with ``entry`` (empty when it can), and what would let it."""
        rule = store.scoring_rule(str((record.details or {}).get("kind", "")))
        if entry.get("scoring_rule") != rule:
            return (
                f"the scoring rule changed ({entry.get('scoring_rule')} in the baseline, written by pytest-ftmodel "
                f"{entry.get('package_version') or '?'}; {rule} now), so the figures do not compare", "",
            )
        # settings first: a changed setting (samples=, temperature=) is why the kind of comparison changed
        then, now = entry.get("settings") or {}, store.stable(record.settings or {})
        differ = sorted(k for k in set(then) | set(now) if then.get(k, "<unset>") != now.get(k, "<unset>"))
        if differ:
            shown = ", ".join(f"{k}={json_text(then.get(k, '<unset>'))} in the baseline, {json_text(now.get(k, '<unset>'))} now" for k in differ[:3])
            more = f" and {len(differ) - 3} more" if len(differ) > 3 else ""
            return f"settings differ from the baseline's ({shown}{more})", "restore the setting" + ("s" if len(differ) > 1 else "") + ", or "
        if entry.get("compare_kind") != kind:
            return f"the baseline compares it as {entry.get('compare_kind')}, this run as {kind}", ""
        ids = {str(it["id"]) for it in record.items if "id" in it}
        base_ids = set(entry.get("items") or {})
        if not base_ids:
            return "the baseline entry has no per-item values to compare with", ""
        broken = _invalid_values(kind, entry.get("items") or {})
        if broken:
            return (
                f"the baseline entry {key!r} is broken: {len(broken)} of its {len(base_ids)} items have no valid "
                f"{VALID[kind]} (e.g. {json_text(broken[0])})", "restore the file from version control, or ",
            )
        shared = len(ids & base_ids)
        if 2 * shared < len(base_ids):
            same = _same_words(entry.get("items") or {}, record.items)
            if 2 * same >= len(base_ids):
                return (
                    f"only {shared} of the baseline's {len(base_ids)} items pair by content with this run's, yet {same} have the "
                    "same words: the texts are formatted differently (was the baseline, of model "
                    f"{entry.get('model') or '?'}, recorded with another tokenizer family or chat template?)",
                    "compare with a baseline recorded with the same formatting (--ftmodel-baseline), or ",
                )
            return f"only {shared} of the baseline's {len(base_ids)} items are in this run (fewer than half: the data changed)", "restore the data, or "
        return "", ""

    def update_command(self, test: str) -> str:
        return " ".join([self.command, shlex.quote(test), *map(shlex.quote, self.command_options), "--ftmodel-update-baseline"])

    def _compare(self, record: Any, kind: str, entry: Mapping[str, Any]) -> dict[str, Any]:
        from pytest_ftmodel.baseline.compare import compare

        base_items: Mapping[str, Any] = entry.get("items") or {}
        cand = {str(it["id"]): it for it in record.items if "id" in it}
        result = compare(
            kind,
            {i: v["value"] for i, v in base_items.items()},
            # rounded as the file rounds them, so an unchanged item compares equal to its entry
            {i: store.stable(store.compare_value(kind, it)) for i, it in cand.items()},
            higher_is_better=record.op == ">=",
            margin=self.margin_for(record.name, kind),
            alpha=self.alpha,
            mode=self.mode,
        )
        out: dict[str, Any] = dict(result.as_dict())
        notes = list(out.get("notes") or [])
        if entry.get("data_hash") and store.entry_of(record, version="").get("data_hash") != entry.get("data_hash"):
            notes.append(f"the data changed: {result.n_paired} items paired of {len(base_items)} in the baseline and {len(cand)} now")
        note = (record.details or {}).get("compare_note")
        if note:
            notes.append(f"compared: {note}")
        out["notes"] = notes
        if (record.details or {}).get("compare_quantity"):
            out["quantity"] = str(record.details["compare_quantity"])
        out.update(
            verdict=result.verdict,
            baseline_model=entry.get("model", ""),
            baseline_fingerprint=entry.get("fingerprint", ""),
            model=record_model_tag(record),
            baseline_n=len(base_items),
            worse_items=[self._worse_item(kind, i, base_items.get(i, {}), cand.get(i, {})) for i in list(result.worse)[:KEPT]],
            update_command=self.update_command(record.test),
        )
        return store.stable(out)

    @staticmethod
    def _worse_item(kind: str, item_id: str, before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
        def said(side: Mapping[str, Any], value: Any) -> str:
            if kind == "perplexity":
                nll, tokens = value
                figure = f"{nll / tokens:.3f} nats/token" if tokens else "-"
            else:
                figure = _fmt(value)
            text = side.get("answer") or ""
            return f"{figure} {str(text)[: store.TEXT_CHARS]}".rstrip() if text else figure

        return {
            "id": item_id,
            "prompt": str(after.get("prompt") or before.get("prompt") or after.get("text") or before.get("text") or "")[: store.TEXT_CHARS],
            "expected": str(after.get("expected") or before.get("expected") or "")[: store.TEXT_CHARS],
            "before": said(before, before.get("value")) if before else "",
            "after": said(after, store.compare_value(kind, after)) if after else "",
        }

    # -- what a failing test says -----------------------------------------------------------------

    def failure_message(self, record: Any) -> str:
        """The diagnosis of a record whose baseline comparison fails its test."""
        b = record.baseline or {}
        if b.get("verdict") == "mismatch":
            return f"baseline mismatch for {record.name}: {b.get('reason', 'not compared')}"
        relative = bool(b.get("relative"))
        unit = "relative change" if relative else "change"
        n = b.get("n_paired", 0)
        quantity = f"{b['quantity']} " if b.get("quantity") else ""
        interval = f"[{_fmt_delta(float(b.get('low') or 0.0), relative)}, {_fmt_delta(float(b.get('high') or 0.0), relative)}]"
        margin = _fmt_delta(float(b.get("margin") or 0.0), relative).lstrip("+")
        head = (
            f"{record.name} {b.get('verdict')} against the baseline: {quantity}{_fmt(b.get('value'))} in the baseline "
            f"(model {visible(model_tag(str(b.get('baseline_model') or '?'), str(b.get('baseline_fingerprint') or '')))}) -> "
            f"{_fmt(b.get('candidate'))} now{_now_model(b)}, "
            f"{unit} {_fmt_delta(float(b.get('delta') or 0.0), relative)} "
            f"(95% CI {interval}) "
            f"on {n} paired {record.unit}; {b.get('test')}, one-sided p = {float(b.get('p_value') or 0.0):.3g} "
            f"(alpha {b.get('alpha')}), margin {margin} "
            f"({b.get('mode')} mode; {'lower is better' if relative else record.direction})."
        )
        inconclusive = b.get("verdict") == "inconclusive"
        if inconclusive:
            head += " " + self._why_inconclusive(b, interval, margin, record.unit)
        lines = [head]
        for note in b.get("notes") or []:
            lines.append(f"  note: {note}")
        worse = b.get("worse_items") or []
        if worse:
            total = int(b.get("n_worse") or len(b.get("worse") or worse))
            lines.append(f"  items that got worse ({min(SHOWN, len(worse))} of {total} shown, worst first):")
            for it in worse[:SHOWN]:
                lines.append(
                    f"    {_shown(it.get('prompt'), 50)}" + (f" expected {_shown(it.get('expected'), 30)}" if it.get("expected") else "")
                    + f"\n      before {_shown(it.get('before'))}\n      after  {_shown(it.get('after'))}"
                )
        if inconclusive:
            lines.append("  " + self._resolve_inconclusive(record, b))
        else:
            lines.append(f"  if the change is intended, update the baseline ({self.path}): {b.get('update_command') or self.update_command(record.test)}")
        return "\n".join(lines)

    @staticmethod
    def _why_inconclusive(b: Mapping[str, Any], interval: str, margin: str, unit: str) -> str:
        """Why the noninferiority mode could not decide: the interval against the margin at this n."""
        n = int(b.get("n_paired") or 0)
        if not n:
            return "In noninferiority mode the data must show the drop is within the margin; no item could be compared (see the notes)."
        low: Any = b.get("low")
        high: Any = b.get("high")
        if not (store.finite(low) and store.finite(high)):
            return f"In noninferiority mode the data must show the drop is within the margin; {n} paired {unit} give no interval (see the notes)."
        wide = float(high) - float(low) > float(b.get("margin") or 0.0)
        return (
            f"In noninferiority mode the data must show the drop is within the margin: the 95% interval of the change {interval} "
            + (f"is wider than the margin {margin} at {n} paired {unit}, so it cannot show that, whatever the items say."
               if wide else f"reaches beyond the margin {margin} on the worse side.")
        )

    def _resolve_inconclusive(self, record: Any, b: Mapping[str, Any]) -> str:
        """What can turn "inconclusive" into a verdict: more items, a wider margin, or the default mode."""
        n = int(b.get("n_paired") or 0)
        low: Any = b.get("low")
        high: Any = b.get("high")
        worse_bound = None
        if store.finite(low) and store.finite(high):
            higher_better = b.get("higher_is_better", record.op == ">=") and not b.get("relative")
            worse_bound = -float(low) if higher_better else float(high)
        value = f"{_round_up(worse_bound)}" if worse_bound is not None and worse_bound > 0 else "VALUE"
        return (
            f"to decide it: compare on more items than the {n} now (the interval narrows as 1/sqrt(n)), allow a wider margin "
            f"if a drop of that size is acceptable (margin= on the helper or --ftmodel-margin {shlex.quote(f'{record.name}={value}')}), "
            "or fail only on significant drops (--ftmodel-baseline-mode=superiority); updating the baseline does not help"
        )

    # -- the end of the session -------------------------------------------------------------------

    def merge(self, payload: Mapping[str, Any]) -> None:
        """What a pytest-xdist worker saw (see :meth:`payload`)."""
        self.passed.update(payload.get("passed", ()))
        self.known.update(payload.get("known", ()))
        self.deselected.update(payload.get("deselected", ()))

    def payload(self) -> dict[str, Any]:
        return {"passed": sorted(self.passed), "known": sorted(self.known), "deselected": sorted(self.deselected)}

    def unused(self, produced: Iterable[str]) -> dict[str, str]:
        """Entries no test produced, among those this run can speak for, each with why (see
        :func:`~pytest_ftmodel.baseline.store.unused_entries`)."""
        whole: set[str] = set()
        if self.narrowed is not None:
            narrowed = self.narrowed | self.deselected
            whole = {store.file_of(self.test_key(t)) for t in self.known} - {store.file_of(self.test_key(t)) for t in narrowed}
        return store.unused_entries(
            self.entries, produced, [self.test_key(t) for t in self.passed], [self.test_key(t) for t in self.known],
            whole_files=whole, folder=self.path.parent if self.rootdir is not None else None,
        )

    def end_of_session(self, records: list[Any]) -> bool:
        """Add the summary's lines on margins that named no compared metric (each also a pytest
        warning). True when the run must fail: a margin names no metric at all (not one the helpers
        record, nor one recorded here), so a typo never leaves a gate at its default margin unnoticed."""
        compared = sorted({r.name for r in records if (r.details or {}).get("compare_kind")})
        names = ", ".join(compared) or "none"
        fail = False
        for name in sorted(self.margins):
            if name in compared:
                continue
            line = misnamed_margin(name, {r.name for r in records}, listed=compared, listed_as="compared in this run")
            if line:
                fail = True
            else:
                line = f"baseline: margin {name!r} ({MARGINS_FROM}): that metric is not compared in this run (compared in this run: {names})"
            self.outcome.append(line)
            warnings.warn(MarginWarning(line), stacklevel=1)
        return fail

    def recordable(self, records: Iterable[Any]) -> list[Any]:
        """The records an update writes: those of tests that passed (a gate that failed as its test
        expected, inside ``pytest.raises``, is recorded; one whose test failed is not)."""
        return [r for r in records if r.test and r.test in self.passed]

    def _not_recorded(self, records: list[Any]) -> None:
        """The summary's line on figures an update leaves out because their tests did not pass."""
        left = [r for r in records if r.test and r.test not in self.passed]
        if not left:
            return
        shown = ", ".join(
            f"{self.test_key(r.test)}::{r.name} ({_fmt(r.value)}" + (f", bar {r.op} {_fmt(r.threshold)})" if r.threshold is not None else ")")
            for r in left[:5]
        ) + (f" and {len(left) - 5} more" if len(left) > 5 else "")
        self.outcome.append(
            f"baseline: {len(left)} figure{'s' if len(left) > 1 else ''} not recorded, their tests did not pass "
            f"(their entries stay as they were): {shown}"
        )

    def finish(self, records: list[Any], *, interrupted: str = "") -> None:
        """Update mode: write the file (the controller only) from the records of tests that passed,
        unless the run was ``interrupted`` (why, "" when it ran to its end). Otherwise: note unused
        entries."""
        if self.update and interrupted:
            self.outcome.append(
                f"baseline {self.path}: not written, the run did not reach its end ({interrupted}); the file is unchanged. "
                "Run the update again to its end to record."
            )
            return
        tested = self.recordable(records) if self.update else [r for r in records if r.test]
        keyed = list(zip(store.entry_keys(tested, self.test_key), tested))
        produced = {k: r for k, r in keyed}
        unused = self.unused(produced)
        listed = ", ".join(f"{k} ({why})" for k, why in list(unused.items())[:5]) + (f" and {len(unused) - 5} more" if len(unused) > 5 else "")
        if not self.update:
            counts: dict[str, int] = {}
            for r in records:
                if r.baseline:
                    counts[r.baseline.get("verdict", "?")] = counts.get(r.baseline["verdict"], 0) + 1
            if not counts and not unused:
                return
            order = ("regressed", "mismatch", "inconclusive", "within noise", "improved", "new")
            shown = ", ".join(f"{counts[v]} {v}" for v in order if v in counts) or "nothing compared"
            if not counts:  # the reports' own line counts the verdicts of compared figures
                self.outcome.append(f"baseline {self.path}: {shown}.")
            new = [k for k, r in keyed if r.baseline and r.baseline.get("verdict") == "new"]
            if new:
                self.outcome.append(f"baseline: new figures, no entry yet (--ftmodel-update-baseline records them): {', '.join(new[:5])}" + (f" and {len(new) - 5} more" if len(new) > 5 else ""))
            if unused:
                self.outcome.append(
                    f"baseline: {len(unused)} unused entr{'y' if len(unused) == 1 else 'ies'} (no test produced them): {listed}; "
                    "--ftmodel-update-baseline removes them"
                )
            return
        self._not_recorded(records)
        entries = {k: v for k, v in self.entries.items() if k not in unused}
        written = {k: store.entry_of(r, version=self.version, test=self.test_key(r.test)) for k, r in produced.items()}
        added = sum(k not in self.entries for k in written)
        changed = sum(k in self.entries and self.entries[k] != v for k, v in written.items())
        entries.update(written)
        if not entries and not self.path.exists():
            self.outcome.append(f"baseline {self.path}: nothing recorded (no test that passed judged a figure), so no file was written.")
            return
        try:
            before = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            before = None
        existed = self.path.exists()
        try:
            if self.broken:  # never lose a person's work: the broken file is kept beside the new one
                aside = store.keep_aside(self.path)
                self.outcome.append(f"baseline {self.path} was broken ({self.broken}): kept as {aside}; a new file is written from this run")
            if before != store.dumps(entries):
                store.write(self.path, entries)
        except OSError as exc:
            where = f": {exc.filename}" if exc.filename and str(exc.filename) != str(self.path) else ""
            self.write_failed = (
                f"baseline {self.path} could not be written ({type(exc).__name__}: {exc.strerror or exc}{where}): "
                + ("the file is unchanged" if existed else "no file was written")
                + "; fix the permissions, or pass --ftmodel-baseline with a path you can write"
            )
            self.outcome.append(self.write_failed)
            return
        kept = len(entries) - len(written)
        self.outcome.append(
            f"baseline {self.path}: {len(written)} entr{'y' if len(written) == 1 else 'ies'} recorded "
            f"({added} new, {changed} changed, {len(written) - added - changed} unchanged), {kept} kept, {len(unused)} removed (unused)."
        )
        if unused:
            self.outcome.append("  removed: " + listed)


def json_text(value: Any) -> str:
    import json

    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


#: what a baseline item's value must be, per kind (as the file is written: store.compare_value)
VALID = {
    "perplexity": "(NLL >= 0, token count > 0) pair",
    "binary": "per-item 0/1 value",
    "continuous": "number",
    "ordinal": "number",
}


def _valid_value(kind: str, value: Any) -> bool:
    if kind == "perplexity":
        return isinstance(value, list) and len(value) == 2 and all(map(store.finite, value)) and value[0] >= 0 and value[1] > 0
    if kind == "binary":
        return store.finite(value) and value in (0, 1)
    return store.finite(value)


def _invalid_values(kind: str, items: Mapping[str, Any]) -> list[Any]:
    """The values of a baseline entry's items that its kind cannot have (the file was edited or damaged:
    the plugin writes none), in item order. The candidate's side is not checked here: a NaN of the
    model's is left out of the comparison with a note, as compare() documents."""
    return [
        item.get("value") if isinstance(item, Mapping) else item
        for _, item in sorted(items.items())
        if not (isinstance(item, Mapping) and _valid_value(kind, item.get("value")))
    ]


def _words(item: Mapping[str, Any]) -> tuple[str, ...]:
    """An item's texts with their whitespace folded and cut as the file cuts them, so that the same
    prompts and references read the same when only the formatting around them changed."""
    out = []
    for k in ("prompt", "expected", "text"):
        text = str(item.get(k) or "")
        text = " ".join(text[: store.TEXT_CHARS - 1].split())
        out.append(text[:100])
    return tuple(out)


def _same_words(base_items: Mapping[str, Any], items: Iterable[Mapping[str, Any]]) -> int:
    """How many baseline items have a candidate item with the same words (texts only, not ids)."""
    now = {_words(it) for it in items}
    now.discard(("", "", ""))
    return sum(isinstance(it, Mapping) and _words(it) in now for it in base_items.values())
