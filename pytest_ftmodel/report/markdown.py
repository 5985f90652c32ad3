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

from pytest_ftmodel.report.records import MetricRecord, display_names, fmt, model_label

# inline Markdown punctuation, and ":" so that no URL in a model's answer becomes a live link
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~>:])")


def md_text(text: str) -> str:
    """``text`` as literal inline Markdown: one line, HTML-escaped, Markdown punctuation escaped."""
    flat = " ".join(str(text).split())
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


def render_markdown(records: list[MetricRecord], session: dict[str, Any] | None = None, *, title: str = "ftmodel metrics") -> str:
    names = display_names(records)
    failed = [r for r in records if not r.passed]
    lines = [f"## {md_text(title)}", ""]
    if not records:
        return "\n".join(lines + ["No metrics were recorded.", ""])
    verdict = "❌" if failed else "✅"
    lines.append(f"{verdict} **{len(records)} metrics: {len(records) - len(failed)} passed, {len(failed)} failed**")
    models = (session or {}).get("models") or {}
    described = [f"{md_text(role)}: {md_text(v.get('path') or '-')}" for role, v in models.items() if v]
    if described:
        lines.append("")
        lines.append("Models: " + ", ".join(described))
    lines += ["", "| test | metric | model | value | bar | 95% CI | n | result |", "|---|---|---|--:|--:|--:|--:|---|"]
    for r in records:
        ci = "-" if r.interval is None else f"[{fmt(r.low)}, {fmt(r.high)}]"
        cells = [
            md_text(r.test.rsplit("::", 1)[-1] or "-"), md_text(r.name), md_text(model_label(r, names) or "-"),
            fmt(r.value), _bar(r), ci, f"{r.n} {md_text(r.unit)}", "✅ pass" if r.passed else "❌ **FAIL**",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    # a place for baseline columns (value, delta with interval, verdict) when baselines exist
    if failed:
        lines += ["", "### Failing gates"]
        for r in failed:
            lines += ["", f"**{md_text(r.name)}** in {md_text(r.test or '-')}: {fmt(r.value)}, bar {_bar(r)}"]
            if r.diagnosis:
                lines += ["", md_code_block(r.diagnosis)]
    lines.append("")
    return "\n".join(lines)
