"""The Markdown summary: a compact table and the failing gates with their diagnosis.

Written to ``--ftmodel-markdown PATH`` and appended to ``$GITHUB_STEP_SUMMARY`` (a GitHub Actions job
summary). Text from the run (test ids, model names, answers inside a diagnosis) is escaped: table
cells lose their Markdown and HTML meaning, diagnoses sit in a code fence longer than any run of
backticks they contain.
"""

from __future__ import annotations

import html
import re
from typing import Any

from pytest_ftmodel.report import versus
from pytest_ftmodel.report.records import MetricRecord, display_names, fmt, model_label

# inline Markdown punctuation, and ":" so that no URL in a model's answer becomes a live link
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~>:])")


def md_text(text: str) -> str:
    """``text`` as literal inline Markdown: one line, HTML-escaped, Markdown punctuation escaped."""
    flat = " ".join(versus.visible(text).split())
    escaped = _MD_SPECIAL.sub(r"\\\1", html.escape(flat, quote=False))
    return re.sub(r"(?i)\b(www)\.", r"\1\\.", escaped)  # nor a bare www. address


def md_code_block(text: str, info: str = "text") -> str:
    """``text`` verbatim in a fence that nothing inside it can close."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{text.rstrip()}\n{fence}"


def _bar(r: MetricRecord) -> str:
    if r.threshold is None:
        return "-"
    return ("≥ " if r.op == ">=" else "≤ ") + fmt(r.threshold)


_VERDICT_MARK = {"regressed": "🔻", "mismatch": "⚠️", "inconclusive": "❔", "within noise": "➖", "improved": "🔺", "new": "🆕"}


def _verdict(b: dict[str, Any] | None) -> str:
    verdict = versus.verdict_of(b)
    text = f"{_VERDICT_MARK.get(verdict, '')} {md_text(verdict)}".strip()
    return f"**{text}**" if versus.baseline_failed(b) else text


def _result(r: MetricRecord) -> str:
    """The result cell: the record's outcome, ``*`` where the gate's own verdict differs."""
    text = versus.result_text(r)
    mark = "\\*" if text.endswith("*") else ""
    return ("❌ **FAIL**" if versus.failed(r) else "✅ " + md_text(text.rstrip("*"))) + mark


def _baseline_source(records: list[MetricRecord], session: dict[str, Any]) -> Any:
    info = session.get("baseline")
    return info.get("path") if isinstance(info, dict) else info


def render_markdown(records: list[MetricRecord], session: dict[str, Any] | None = None, *, title: str = "ftmodel metrics") -> str:
    session = session or {}
    names = display_names(records)
    failed = [r for r in records if versus.failed(r)]
    lines = [f"## {md_text(title)}", ""]
    stopped = versus.interruption(session)
    if stopped:
        lines += [f"> ⚠️ **Interrupted** ({md_text(stopped)}): {md_text(versus.INTERRUPTED_NOTE)}.", ""]
    if not records:
        return "\n".join(lines + ["No metrics were recorded.", ""])
    verdict = "❌" if failed else "✅"
    lines.append(f"{verdict} **{len(records)} metrics: {len(records) - len(failed)} passed, {len(failed)} failed**")
    models = session.get("models") or {}
    described = [f"{md_text(role)}: {md_text(v.get('path') or '-')}" for role, v in models.items() if v]
    if described:
        lines.append("")
        lines.append("Models: " + ", ".join(described))
    judged = versus.judged_text(records)
    if judged:
        lines += ["", "Code samples " + md_text(judged)]
    scored = versus.scored_text(records)
    if scored:
        lines += ["", md_text(scored)]
    counted = versus.summary_line(records, _baseline_source(records, session))
    if counted:
        lines += ["", md_text(counted[0].upper() + counted[1:])]
    with_baseline = counted is not None
    head = ["test", "metric", "model", "value", "bar", "95% CI", "n"] + (["baseline", "Δ [95% CI]", "vs baseline"] if with_baseline else []) + ["result"]
    align = ["---", "---", "---", "--:", "--:", "--:", "--:"] + (["--:", "--:", "---"] if with_baseline else []) + ["---"]
    lines += ["", "| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    for r in records:
        ci = "-" if r.interval is None else f"[{fmt(r.low)}, {fmt(r.high)}]"
        cells = [
            md_text(r.test.rsplit("::", 1)[-1] or "-"), md_text(r.name), md_text(model_label(r, names) or "-"),
            fmt(r.value), _bar(r), ci, f"{r.n} {md_text(r.unit)}",
        ]
        if with_baseline:
            b = r.baseline
            cells += [versus.baseline_value_text(b), versus.delta_text(b), _verdict(b) if b else "-"]
        cells.append(_result(r))
        lines.append("| " + " | ".join(cells) + " |")
    if any(versus.differs(r) for r in records):
        lines += ["", md_text(versus.DIFFERS_NOTE)]
    sampled = [r for r in records if isinstance((r.details or {}).get("repeats"), dict)]
    if sampled:
        lines += ["", "### Repeated sampling", "", "| test | metric | samples | pass@k | pass^k | flip rate | flaky items |", "|---|---|--:|--:|--:|--:|---|"]
        for r in sampled:
            rep = r.details["repeats"]
            binary = bool(rep.get("binary"))
            flaky = "; ".join(f"{f.get('index')}: {md_text(f.get('prompt') or '')}" for f in rep.get("flaky") or []) or "-"
            lines.append(
                f"| {md_text(r.test.rsplit('::', 1)[-1] or '-')} | {md_text(r.name)} | {rep.get('samples')} | "
                f"{fmt(rep.get('pass_at_k')) if binary else '-'} | {fmt(rep.get('pass_hat_k')) if binary else '-'} | "
                f"{fmt(rep.get('flip_rate'))} | {flaky} |"
            )
    if failed:
        lines += ["", "### Failing gates"]
        for r in failed:
            b = r.baseline
            why = f"{fmt(r.value)}, bar {_bar(r)}"
            if not versus.gate_failed(r):
                why += "; the gate passed, its test failed"
            if versus.baseline_failed(b):
                why += f"; against the baseline: {md_text(versus.verdict_of(b))}"
                if versus.compared(b):
                    why += f", Δ {versus.delta_text(b)} (95% CI), p {md_text(versus.p_text(b))}, margin {versus.margin_text(b)}"
            lines += ["", f"**{md_text(r.name)}** in {md_text(r.test or '-')}: {why}"]
            diagnosis = r.diagnosis or (versus.explain(r) if versus.baseline_failed(b) else "")
            if diagnosis:
                lines += ["", md_code_block(versus.visible(diagnosis))]
    lines.append("")
    return "\n".join(lines)
