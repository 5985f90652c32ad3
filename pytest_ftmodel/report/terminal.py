"""The terminal table: readable in 100 columns, complete with ``-v``.

Numbers have 4 significant digits. The compact table shows the test's own name (not its file), the
sample size without its unit, a model column only when the run measured more than one model (else
one ``model:`` line above the table), and cuts the longest names in the middle until the table
fits; ``-v`` shows full node ids, units, names and the model column.

When some record was compared with a baseline, a line counts the verdicts. The compact view then
shows the comparison as a second table (baseline, Δ with its 95% interval, verdict) under the
metrics table, one row per compared metric: the absolute figures (value, bar, interval, n, result)
and the comparison together take about 100 columns before any name, so one table would leave the
test and metric names a few letters each. ``-v`` shows one full table with every column, the
p-value and the margin included.
"""

from __future__ import annotations

import textwrap

from pytest_ftmodel.report import versus
from pytest_ftmodel.report.records import MetricRecord, display_names, fmt, model_label, repeats_text

WIDTH = 100
_SEP = "  "
_MIN_CUT = 10
_SHRINKABLE = ("test", "metric", "model")


def cut_middle(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters, its middle replaced by an ellipsis."""
    if len(text) <= width:
        return text
    if width <= 1:
        return text[:width]
    head = (width - 1 + 1) // 2
    tail = width - 1 - head
    return text[:head] + "…" + (text[-tail:] if tail else "")


def _primary_models(records: list[MetricRecord], names: dict[str, str]) -> list[str]:
    """The models the records measure (a comparison counts as the model compared), in order."""
    seen: dict[str, None] = {}
    for r in records:
        label = model_label(r, names).split(" vs ")[0]
        if label:
            seen.setdefault(label, None)
    return list(seen)


def table_rows(records: list[MetricRecord], *, verbose: bool = False) -> list[dict[str, str]]:
    names = display_names(records)
    models = _primary_models(records, names)
    show_model = len(models) > 1 or (verbose and bool(models))
    show_baseline = any(r.baseline for r in records)
    rows = []
    for r in records:
        row = {"test": (r.test if verbose else r.test.rsplit("::", 1)[-1]) or "-", "metric": r.name}
        if show_model:
            row["model"] = model_label(r, names) or "-"
        row["value"] = fmt(r.value)
        row["bar"] = "-" if r.threshold is None else f"{r.op} {fmt(r.threshold)}"
        row["95% CI"] = "-" if r.interval is None else f"[{fmt(r.low)}, {fmt(r.high)}]"
        row["n"] = f"{r.n} {r.unit}" if verbose else str(r.n)
        if verbose and show_baseline:
            b = r.baseline
            row["baseline"], row["Δ [95% CI]"] = versus.baseline_value_text(b), versus.delta_text(b)
            row["p"], row["margin"], row["vs baseline"] = versus.p_text(b), versus.margin_text(b), versus.verdict_of(b)
        row["result"] = versus.result_text(r)
        rows.append(row)
    return rows


def baseline_rows(records: list[MetricRecord]) -> list[dict[str, str]]:
    """The compact view's comparison table: one row per record that has a baseline entry."""
    return [
        {
            "test": r.test.rsplit("::", 1)[-1] or "-", "metric": r.name, "baseline": versus.baseline_value_text(r.baseline),
            "Δ [95% CI]": versus.delta_text(r.baseline), "vs baseline": versus.verdict_of(r.baseline),
        }
        for r in records
        if r.baseline
    ]


def format_table(records: list[MetricRecord], *, verbose: bool = False, width: int = WIDTH) -> list[str]:
    """Rows of an aligned text table, header first."""
    return _aligned(table_rows(records, verbose=verbose), verbose=verbose, width=width)


def _aligned(rows: list[dict[str, str]], *, verbose: bool, width: int) -> list[str]:
    if not rows:
        return []
    rows = [{c: versus.visible(v) for c, v in row.items()} for row in rows]  # test ids, names, served ids: untrusted
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(row[c]) for row in rows)) for c in columns}
    if not verbose:
        shrink = [c for c in _SHRINKABLE if c in widths]
        while sum(widths.values()) + len(_SEP) * (len(columns) - 1) > width:
            widest = max(shrink, key=lambda c: widths[c])
            if widths[widest] <= _MIN_CUT:
                break
            widths[widest] -= 1
    lines = [_SEP.join(c.ljust(widths[c]) for c in columns).rstrip()]
    for row in rows:
        lines.append(_SEP.join(cut_middle(row[c], widths[c]).ljust(widths[c]) for c in columns).rstrip())
    return lines


def summary_lines(records: list[MetricRecord], *, verbose: bool = False, baseline_path: str | None = None) -> list[str]:
    """The terminal summary: the table, the counts and, when there were comparisons, the baseline's
    verdicts (``baseline_path``: the baseline file, named in that line)."""
    if not records:
        return []
    failed = sum(versus.failed(r) for r in records)
    lines = format_table(records, verbose=verbose)
    models = _primary_models(records, display_names(records))
    if not verbose and len(models) == 1:
        lines.insert(0, f"model: {versus.visible(models[0])}")
    lines.append(f"{len(records)} metrics recorded, {len(records) - failed} passed, {failed} failed.")
    for r in records:
        sampled = repeats_text(r)
        if sampled:
            what = r.test.rsplit("::", 1)[-1] if not verbose else r.test
            lines.extend(_wrap(versus.visible(f"repeated sampling: {what} {r.name}: {sampled}")))
    if any(versus.differs(r) for r in records):
        lines.extend(_wrap(versus.DIFFERS_NOTE))
    counted = versus.summary_line(records, baseline_path)
    if counted:
        lines.extend(_wrap(counted))
        if not verbose:
            lines.extend(_aligned(baseline_rows(records), verbose=False, width=WIDTH))
        for r in records:
            what = versus.visible(f"{r.test.rsplit('::', 1)[-1] if not verbose else r.test} {r.name}")
            if versus.verdict_of(r.baseline) == "mismatch":
                lines.extend(_wrap(f"mismatch: {what}: {versus.visible((r.baseline or {}).get('reason') or 'not compared')}"))
            notes = versus.verdict_notes(r.baseline)
            if notes:
                lines.extend(_wrap(f"note: {what}: {'; '.join(notes)}"))
    return lines


def _wrap(text: str) -> list[str]:
    return textwrap.wrap(text, WIDTH, subsequent_indent="  ", break_on_hyphens=False, break_long_words=False) or [""]


def sandbox_line(records: list[MetricRecord], asked: str) -> str | None:
    """Which isolation the code gates' programs ran under, when any ran, and how their samples were
    judged: how many in-process (where an answer could tamper with its tests), and why."""
    seen = sorted({str(r.details.get("isolation")) for r in records if r.details.get("isolation")})
    if not seen:
        return None
    lines = [f"sandbox (--sandbox {asked}): " + "; ".join(seen)]
    judged = versus.judged_text(records)
    if judged:
        lines.append(versus.visible(judged))
    return "\n".join(w for line in lines for w in textwrap.wrap(line, WIDTH, subsequent_indent="  ", break_on_hyphens=False))


def scored_line(records: list[MetricRecord]) -> str | None:
    """The sacrebleu signatures of the BLEU and chrF gates that ran (how their scores were computed)."""
    scored = versus.scored_text(records)
    return "\n".join(textwrap.wrap(versus.visible(scored), WIDTH, subsequent_indent="  ", break_on_hyphens=False)) if scored else None
