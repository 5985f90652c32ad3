"""The session's records -> terminal table, JSON, Markdown (job summary), HTML with plots, JUnit.

``records`` holds what was measured (and is all a test run imports); the renderers are imported
when a report is asked for.
"""

from __future__ import annotations

from typing import Any, Callable

from pytest_ftmodel.report.records import (
    TEXT_LIMIT,
    MetricRecord,
    ModelName,
    Recorder,
    display_names,
    fmt,
    junit_properties,
    model_label,
    model_name,
    pop_recorder,
    push_recorder,
    record_metric,
    recorder,
)
from pytest_ftmodel.report.terminal import format_table, sandbox_line, scored_line, summary_lines
from pytest_ftmodel.report.versus import INTERRUPTED_NOTE

_fmt = fmt

#: how much of a failure message a record keeps as its diagnosis
DIAGNOSIS_LIMIT = 4000


def diagnosis_of(exc: BaseException) -> str:
    """The message a failing gate raised (its one-paragraph diagnosis), bounded in length."""
    text = str(getattr(exc, "msg", "") or exc) if type(exc).__name__ == "Failed" else str(exc)
    text = text or type(exc).__name__
    return text if len(text) <= DIAGNOSIS_LIMIT else text[: DIAGNOSIS_LIMIT - 1] + "…"


def fingerprint_of(records: list[MetricRecord], path: Any) -> str:
    """The fingerprint the records give the checkpoint at ``path`` (empty when none does)."""
    import os

    wanted = os.path.abspath(path)
    for r in records:
        for p, f in zip(r.model_paths, r.fingerprints):
            if p == wanted and f:
                return f
    return ""


def write_reports(
    records: list[MetricRecord], session: dict[str, Any], paths: dict[str, Any], step_summary: str | None = None
) -> list[str]:
    """Write the reports asked for (``paths``: json, markdown, html -> path or None) and append the
    Markdown summary to a GitHub job summary file when there is one and something was measured.
    Returns one line per report for the terminal; a report that cannot be written says why there,
    and never fails the run."""
    lines: list[str] = []

    def attempt(what: str, path: Any, write: Callable[[], Any]) -> None:
        try:
            write()
        except OSError as exc:
            lines.append(f"ftmodel: cannot write the {what} to {path}: {exc.strerror or exc}")
        else:
            lines.append(f"ftmodel: {what} written to {path}")

    if paths.get("json"):
        from pytest_ftmodel.report.document import write_json

        attempt("JSON report", paths["json"], lambda: write_json(paths["json"], records, session))
    if paths.get("markdown") or (step_summary and records):
        from pytest_ftmodel.report.markdown import render_markdown

        text = render_markdown(records, session)
        if paths.get("markdown"):
            from pytest_ftmodel.report.document import write_atomic

            attempt("Markdown summary", paths["markdown"], lambda: write_atomic(paths["markdown"], text))
        if step_summary and records:
            def append() -> None:
                from pytest_ftmodel.files import append_text

                append_text(step_summary, text + "\n")

            attempt("job summary", step_summary, append)
    if paths.get("html"):
        from pytest_ftmodel.report.document import write_atomic
        from pytest_ftmodel.report.html import render_html

        attempt("HTML report", paths["html"], lambda: write_atomic(paths["html"], render_html(records, session)))
    return lines

__all__ = [
    "INTERRUPTED_NOTE",
    "TEXT_LIMIT",
    "MetricRecord",
    "ModelName",
    "Recorder",
    "diagnosis_of",
    "display_names",
    "fingerprint_of",
    "fmt",
    "format_table",
    "junit_properties",
    "model_label",
    "model_name",
    "pop_recorder",
    "push_recorder",
    "record_metric",
    "recorder",
    "sandbox_line",
    "scored_line",
    "summary_lines",
    "write_reports",
]
