"""A record's outcome is its test's: a gate inside ``pytest.raises(AssertionError)`` (a negative test
that passes) counts as passed in the terminal table, JSON, Markdown, HTML and JUnit, with the gate's
own verdict kept beside it; and only the figures of tests that passed enter the baseline."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import pytest_ftmodel.metrics.perplexity  # noqa: F401 - numpy loads once, here, not inside an in-process inner session

SUITE = """
import pytest
from pytest_ftmodel import assert_no_leakage

def test_leak_is_caught():  # a negative test: the gate fails, as the test expects
    with pytest.raises(AssertionError):
        assert_no_leakage(["a text in both splits"], ["a text in both splits"])

def test_clean_split():
    assert_no_leakage(["a training text"], ["a validation text"])

def test_leaky_split():
    assert_no_leakage(["another text in both"], ["another text in both"])

def test_fails_after_its_gate():
    assert_no_leakage(["one text"], ["another one"])
    assert 1 + 1 == 3
"""

NAME = "leaked val items"

#: test -> (its outcome, the gate's own verdict)
EXPECTED = {
    "test_leak_is_caught": ("pass", "fail"),
    "test_clean_split": ("pass", "pass"),
    "test_leaky_split": ("fail", "fail"),
    "test_fails_after_its_gate": ("fail", "pass"),
}


@pytest.fixture
def run(pytester: pytest.Pytester) -> pytest.RunResult:
    pytester.makepyfile(test_a=SUITE)
    result = pytester.runpytest(
        "-p", "no:randomly", "--ftmodel-json=r.json", "--ftmodel-markdown=r.md", "--ftmodel-html=r.html", "--junitxml=r.xml"
    )
    result.assert_outcomes(passed=2, failed=2)
    return result


def test_the_terminal_table_counts_what_pytest_counts(run: pytest.RunResult) -> None:
    run.stdout.fnmatch_lines(
        [
            "test_leak_is_caught *leaked val items*pass[*]",
            "test_clean_split *leaked val items*pass",
            "test_leaky_split *leaked val items*FAIL",
            "test_fails_after_its_gate *leaked val items*FAIL[*]",
            "4 metrics recorded, 2 passed, 2 failed.",
            "[*] the test's outcome, which differs from the gate's own verdict*",
        ]
    )


def test_the_json_report_has_the_outcome_and_the_gate_verdict(run: pytest.RunResult, pytester: pytest.Pytester) -> None:
    doc = json.loads((pytester.path / "r.json").read_text())
    assert doc["summary"] == {"metrics": 4, "passed": 2, "failed": 2}
    assert doc["session"]["tests_failed"] == 2 and doc["interrupted"] is False
    got = {r["test"].rsplit("::", 1)[-1]: (r["outcome"], r["gate_verdict"]) for r in doc["records"]}
    assert got == EXPECTED
    assert {r["test_outcome"] for r in doc["records"]} == {"passed", "failed"}


def test_the_markdown_summary_counts_and_lists_what_pytest_counts(run: pytest.RunResult, pytester: pytest.Pytester) -> None:
    text = (pytester.path / "r.md").read_text()
    assert "**4 metrics: 2 passed, 2 failed**" in text
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| test\\_")}
    assert rows["test\\_leak\\_is\\_caught"].endswith("| ✅ pass\\* |")
    assert rows["test\\_clean\\_split"].endswith("| ✅ pass |")
    assert rows["test\\_leaky\\_split"].endswith("| ❌ **FAIL** |")
    assert rows["test\\_fails\\_after\\_its\\_gate"].endswith("| ❌ **FAIL**\\* |")
    failing = text.split("### Failing gates", 1)[1]
    assert "test\\_leak\\_is\\_caught" not in failing and "test\\_leaky\\_split" in failing
    assert "test\\_fails\\_after\\_its\\_gate: 0, bar ≤ 0; the gate passed, its test failed" in failing


def test_the_html_report_counts_what_pytest_counts(run: pytest.RunResult, pytester: pytest.Pytester) -> None:
    page = (pytester.path / "r.html").read_text()
    assert '<span class="verdict fail">2 passed, 2 failed</span>' in page
    metrics = page.split('<table class="metrics">', 1)[1].split("</table>", 1)[0]
    for test, (outcome, gate) in EXPECTED.items():
        row = next(line for line in metrics.splitlines() if f'title="test_a.py::{test}"' in line)
        assert row.startswith(f'<tr class="{outcome}">'), row
        assert (f"the gate's own verdict: {gate}" in row) == (outcome != gate)
    failures = page.split('<section id="failures">', 1)[1]
    assert "test_leak_is_caught" not in failures and "test_leaky_split" in failures


def test_junit_says_the_tests_outcome_and_the_gates_own_verdict(run: pytest.RunResult, pytester: pytest.Pytester) -> None:
    props = {
        (case.get("name"), p.get("name")): p.get("value")
        for case in ET.parse(pytester.path / "r.xml").iter("testcase")
        for p in case.iter("property")
    }
    for test, (outcome, gate) in EXPECTED.items():
        assert (props[(test, f"ftmodel.{NAME}.verdict")], props[(test, f"ftmodel.{NAME}.gate_verdict")]) == (outcome, gate)


# ---- only the figures of tests that passed enter the baseline -------------------------------------

GATES = """
import math
from pathlib import Path

import pytest
from pytest_ftmodel import record_metric
from pytest_ftmodel.metrics.perplexity import PerplexityResult, TextScore

def gate(bar):
    scale = float(Path("scale.txt").read_text()) if Path("scale.txt").exists() else 1.0
    scores = tuple(TextScore(nll=(2.0 + i % 5) * 10 * scale / 3, n_tokens=10, n_bytes=40, n_words=8) for i in range(12))
    nll = sum(s.nll for s in scores)
    ppl = math.exp(nll / 120)
    result = PerplexityResult(ppl, nll, 120, 12, scores, 1.0, ppl, (ppl, ppl), tuple(f"text {i}" for i in range(12)))
    record_metric("perplexity", ppl, threshold=bar, op="<=", n=12, unit="texts", passed=ppl <= bar, result=result)
    if ppl > bar:
        raise AssertionError(f"perplexity {ppl:.4g} is above the bar {bar}")

def test_expected_to_fail():
    with pytest.raises(AssertionError):
        gate(bar=1.0)

def test_steady():
    gate(bar=1e6)

def test_over_bar():
    gate(bar=float(Path("bar.txt").read_text()))
"""


def test_an_update_records_only_the_figures_of_tests_that_passed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_a=GATES)
    (pytester.path / "bar.txt").write_text("1e6")
    pytester.runpytest("-p", "no:randomly", "--ftmodel-update-baseline").assert_outcomes(passed=3)
    path = pytester.path / "ftmodel-baseline.json"
    before = json.loads(path.read_text())["entries"]
    assert sorted(before) == ["test_a.py::test_expected_to_fail::perplexity", "test_a.py::test_over_bar::perplexity", "test_a.py::test_steady::perplexity"]
    # the figures change; test_over_bar now fails its bar: its entry stays as it was, the others are re-recorded
    (pytester.path / "scale.txt").write_text("1.5")
    (pytester.path / "bar.txt").write_text("1.0")
    run = pytester.runpytest("-p", "no:randomly", "--ftmodel-update-baseline")
    run.assert_outcomes(passed=2, failed=1)
    run.stdout.fnmatch_lines(
        [
            "baseline: 1 figure not recorded, their tests did not pass (their entries stay as they were): "
            "test_a.py::test_over_bar::perplexity (*, bar <= 1)",
            "baseline *ftmodel-baseline.json: 2 entries recorded (0 new, 2 changed, 0 unchanged), 1 kept, 0 removed (unused).",
        ]
    )
    assert "miss" not in run.stdout.str()  # the negative test's figure is not "below its bar"
    after = json.loads(path.read_text())["entries"]
    assert after["test_a.py::test_over_bar::perplexity"] == before["test_a.py::test_over_bar::perplexity"]
    changed = [k for k in after if after[k] != before[k]]
    assert changed == ["test_a.py::test_expected_to_fail::perplexity", "test_a.py::test_steady::perplexity"]
