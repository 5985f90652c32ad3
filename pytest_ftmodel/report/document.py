"""The JSON report (``--ftmodel-json``): every record with its per-item values, and the session.

The layout is versioned by ``schema_version``; a reader should check it. Fields are only ever added
within a version.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pytest_ftmodel import files
from pytest_ftmodel.report import versus
from pytest_ftmodel.report.records import MetricRecord, display_names, json_safe, model_label

SCHEMA_VERSION = 1


def build_document(records: list[MetricRecord], session: dict[str, Any] | None = None) -> dict[str, Any]:
    """The report as plain data: ``schema_version``, ``session``, ``summary`` and ``records``."""
    from pytest_ftmodel import __version__

    names = display_names(records)
    failed = sum(versus.failed(r) for r in records)
    return json_safe(
        {
            "schema_version": SCHEMA_VERSION,
            "generator": f"pytest-ftmodel {__version__}",
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "session": session or {},
            "interrupted": bool(versus.interruption(session)),
            "summary": {"metrics": len(records), "passed": len(records) - failed, "failed": failed},
            "records": [
                # "outcome": pass or fail as pytest counts the test that recorded the figure (the gate's own
                # verdict where no test reported one); "test_outcome": pytest's word for it; "gate_verdict":
                # the figure against its bar and the baseline comparison, which "passed" also says ("" in
                # "test_outcome" where no test reported one)
                {**r.as_dict(), "model_label": model_label(r, names), "direction": r.direction,
                 "outcome": "fail" if versus.failed(r) else "pass", "gate_verdict": versus.gate_verdict(r)}
                for r in records
            ],
        }
    )


def write_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` as a whole, never through a planted link (see :mod:`pytest_ftmodel.files`),
    so a reader (or a crash) never sees half a report."""
    return files.write_atomic(path, text)


def write_json(path: str | os.PathLike[str], records: list[MetricRecord], session: dict[str, Any] | None = None) -> Path:
    text = json.dumps(build_document(records, session), indent=2, ensure_ascii=False, allow_nan=False)
    return write_atomic(path, text + "\n")
