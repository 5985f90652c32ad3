"""A run that stops before its end (Ctrl-C, pytest.exit, -x / --maxfail, an internal error, a lost
pytest-xdist worker) writes no baseline, and every report says it was interrupted. Tiny gates: a
recorded perplexity built from fixed per-text values (no model); the runs are real pytest sessions."""

from __future__ import annotations

import hashlib
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

# numpy and scipy.special (the comparison's) load once, here: modules first imported inside an
# in-process inner session are unloaded after it, and numpy's cannot load twice in a process
import numpy.random  # noqa: F401
import scipy.special  # noqa: F401

import pytest_ftmodel.metrics.perplexity  # noqa: F401
import pytest_ftmodel.report.document  # noqa: F401

HELPERS = """
import math
from pathlib import Path
from pytest_ftmodel import record_metric
from pytest_ftmodel.metrics.perplexity import PerplexityResult, TextScore

def gate(n=12):
    scale = float(Path("scale.txt").read_text()) if Path("scale.txt").exists() else 1.0
    scores = tuple(TextScore(nll=(2.0 + i % 5) * 10 * scale / 3, n_tokens=10, n_bytes=40, n_words=8) for i in range(n))
    nll = sum(s.nll for s in scores)
    ppl = math.exp(nll / (10 * n))
    result = PerplexityResult(ppl, nll, 10 * n, n, scores, 1.0, ppl, (ppl, ppl), tuple(f"text {i}" for i in range(n)))
    record_metric("perplexity", ppl, threshold=1e6, op="<=", n=n, unit="texts", passed=True, result=result)
"""

SUITE = {
    "ftm_helpers": HELPERS,
    "test_a": """
import os
from pathlib import Path

import pytest
from ftm_helpers import gate

def test_one():
    gate()

def test_two():
    gate()
    stop = Path("stop.txt").read_text() if Path("stop.txt").exists() else ""
    if stop == "ctrl-c":
        raise KeyboardInterrupt
    if stop == "exit":
        pytest.exit("stopped by the test", returncode=0)
    if stop == "crash":
        os._exit(1)
    assert stop != "fail"

def test_three():
    gate()
""",
    # an internal error: a hook of the project's own raises while pytest reports a test
    "conftest": """
from pathlib import Path

def pytest_runtest_logreport(report):
    if report.when == "call" and report.nodeid.endswith("test_two") and Path("stop.txt").exists() and Path("stop.txt").read_text() == "internal":
        raise RuntimeError("a broken hook")
""",
}

REPORTS = ("--ftmodel-json=r.json", "--ftmodel-markdown=r.md", "--junitxml=r.xml")
#: the HTML report draws its plots (seconds): asked for in the Ctrl-C run only
HTML = "--ftmodel-html=r.html"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def recorded(pytester: pytest.Pytester) -> Path:
    """The suite, its baseline recorded by a full update, and figures that have changed since."""
    pytester.makepyfile(**SUITE)
    pytester.runpytest("-p", "no:randomly", "--ftmodel-update-baseline").assert_outcomes(passed=3)
    path = pytester.path / "ftmodel-baseline.json"
    assert len(json.loads(path.read_text())["entries"]) == 3
    (pytester.path / "scale.txt").write_text("1.5")  # an update that ran to its end would change every entry
    return path


def _assert_reported_interrupted(pytester: pytest.Pytester, why: str) -> None:
    doc = json.loads((pytester.path / "r.json").read_text())
    assert doc["interrupted"] is True and doc["session"]["interrupted"] is True
    assert why in doc["session"]["interruption"]
    markdown = (pytester.path / "r.md").read_text()
    assert markdown.splitlines()[2].startswith("> ⚠️ **Interrupted** (") and "wrote no baseline" in markdown
    if (pytester.path / "r.html").exists():
        html = (pytester.path / "r.html").read_text()
        assert '<p class="interrupted">Interrupted (' in html and "wrote no baseline" in html
    props = {p.get("name"): p.get("value") for p in ET.parse(pytester.path / "r.xml").getroot().iter("property")}
    assert why in props["ftmodel.interrupted"]


@pytest.mark.parametrize(
    ("stop", "options", "why", "status"),
    [
        ("ctrl-c", (), "KeyboardInterrupt", pytest.ExitCode.INTERRUPTED),
        ("exit", (), "stopped by the test", pytest.ExitCode.OK),  # pytest.exit(returncode=0): a success status, yet cut short
        ("fail", ("-x",), "stopping after 1 failures", pytest.ExitCode.TESTS_FAILED),
        ("fail", ("--maxfail=1",), "stopping after 1 failures", pytest.ExitCode.TESTS_FAILED),
        ("internal", (), "internal error", pytest.ExitCode.INTERNAL_ERROR),
    ],
    ids=["ctrl-c", "pytest.exit", "-x", "--maxfail", "internal-error"],
)
def test_an_interrupted_update_leaves_the_baseline_as_it_was_and_every_report_says_so(
    pytester: pytest.Pytester, recorded: Path, stop: str, options: tuple[str, ...], why: str, status: int
) -> None:
    before = _digest(recorded)
    (pytester.path / "stop.txt").write_text(stop)
    # (no_reraise_ctrlc: the inner run's Ctrl-C is the inner run's, not one to stop this test run)
    html = (HTML,) if stop == "ctrl-c" else ()
    run = pytester.runpytest("-p", "no:randomly", "--ftmodel-update-baseline", *options, *REPORTS, *html, no_reraise_ctrlc=True)
    assert (pytester.path / "r.html").exists() == bool(html)
    assert run.ret == status
    assert _digest(recorded) == before
    _assert_reported_interrupted(pytester, why)
    if stop != "internal":  # pytest prints no terminal summary after an internal error
        run.stdout.fnmatch_lines(
            [f"INTERRUPTED (*{why}*): the run did not reach its end*wrote no baseline",
             "baseline *ftmodel-baseline.json: not written, the run did not reach its end (*); the file is unchanged.*"]
        )
        assert "entries recorded" not in run.stdout.str()
    # the same update run to its end rewrites the file, and its reports say nothing of an interruption
    (pytester.path / "stop.txt").unlink()
    whole = pytester.runpytest("-p", "no:randomly", "--ftmodel-update-baseline", *REPORTS)
    whole.assert_outcomes(passed=3)
    assert _digest(recorded) != before
    assert json.loads((pytester.path / "r.json").read_text())["interrupted"] is False
    assert "Interrupted" not in (pytester.path / "r.md").read_text() and "INTERRUPTED" not in whole.stdout.str()


def test_a_lost_xdist_worker_leaves_the_baseline_as_it_was(pytester: pytest.Pytester, recorded: Path) -> None:
    pytest.importorskip("xdist")
    before = _digest(recorded)
    (pytester.path / "stop.txt").write_text("crash")
    # one worker: it dies in test_two, pytest-xdist starts another for test_three, and the run ends "normally"
    run = pytester.runpytest("-p", "no:randomly", "-p", "xdist", "-n", "1", "--ftmodel-update-baseline", *REPORTS)
    assert run.ret == pytest.ExitCode.TESTS_FAILED
    run.assert_outcomes(passed=2, failed=1)  # test_three ran: the session went on to its end, less a worker
    assert _digest(recorded) == before
    _assert_reported_interrupted(pytester, "went down")
    run.stdout.fnmatch_lines(["INTERRUPTED (worker gw* went down*", "baseline *: not written, the run did not reach its end*"])


def test_a_compare_run_that_is_interrupted_says_so_and_keeps_the_file(pytester: pytest.Pytester, recorded: Path) -> None:
    before = _digest(recorded)
    (pytester.path / "stop.txt").write_text("ctrl-c")
    run = pytester.runpytest("-p", "no:randomly", "--ftmodel-json=r.json", no_reraise_ctrlc=True)
    assert run.ret == pytest.ExitCode.INTERRUPTED
    assert _digest(recorded) == before
    run.stdout.fnmatch_lines(["INTERRUPTED (KeyboardInterrupt): *"])
    assert json.loads((pytester.path / "r.json").read_text())["interrupted"] is True
