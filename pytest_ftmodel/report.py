"""The session's record of measured metrics, and its rendering as a terminal table.

Every ``assert_*`` helper calls :func:`record_metric` once per figure it judges. The plugin tells the
recorder which test is running, so each record carries its test id, and the record is also attached
to the test report's ``user_properties`` (which JUnit XML exports as ``<property>`` elements).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from pytest_ftmodel._stack import SessionStack


@dataclass(frozen=True)
class MetricRecord:
    """One judged figure: what was measured, against which bar, on how many items."""

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

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Recorder:
    """Collects :class:`MetricRecord` objects for one pytest session (one per xdist worker)."""

    def __init__(self) -> None:
        self.records: list[MetricRecord] = []
        self.current_item: Any = None

    def add(self, record: MetricRecord) -> MetricRecord:
        item = self.current_item
        if item is not None and not record.test:
            record = MetricRecord(**{**record.as_dict(), "test": item.nodeid})
        self.records.append(record)
        if item is not None:
            item.user_properties.append((f"ftmodel.{record.name}", _fmt(record.value)))
        return record


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


def record_metric(
    name: str,
    value: float,
    *,
    threshold: float | None,
    op: str,
    n: int,
    unit: str,
    passed: bool,
    model: str = "",
    interval: tuple[float, float] | None = None,
) -> MetricRecord:
    low, high = interval if interval is not None else (None, None)
    return recorder().add(
        MetricRecord(
            name=name,
            value=float(value),
            threshold=None if threshold is None else float(threshold),
            op=op,
            n=int(n),
            unit=unit,
            passed=bool(passed),
            model=model,
            low=low,
            high=high,
        )
    )


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.3g}"
    return f"{value:.4g}"


def format_table(records: list[MetricRecord]) -> list[str]:
    """Rows of an aligned text table, header first."""
    header = ("test", "metric", "model", "value", "bar", "95% CI", "n", "result")
    rows = [header]
    for r in records:
        test = r.test.rsplit("::", 1)[-1] if r.test else "-"
        bar = "-" if r.threshold is None else f"{r.op} {_fmt(r.threshold)}"
        ci = "-" if r.low is None else f"[{_fmt(r.low)}, {_fmt(r.high)}]"
        rows.append(
            (test, r.name, r.model or "-", _fmt(r.value), bar, ci, f"{r.n} {r.unit}", "pass" if r.passed else "FAIL")
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]


def summary_lines(records: list[MetricRecord]) -> list[str]:
    if not records:
        return []
    failed = sum(not r.passed for r in records)
    lines = format_table(records)
    lines.append(f"{len(records)} metrics recorded, {len(records) - failed} passed, {failed} failed.")
    return lines
