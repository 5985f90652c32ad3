"""--ftmodel-margin / ini ftmodel_margins: a margin that names no metric fails the run, whether or
not a baseline file exists, with one line and pytest's exit status for usage errors."""

from __future__ import annotations

import pytest

SUITE = """
from pytest_ftmodel import record_metric

def test_ppl():
    record_metric("perplexity", 3.0, threshold=4.0, op="<=", n=12, unit="texts", passed=True)
    record_metric("my score", 0.9, threshold=0.5, op=">=", n=12, unit="items", passed=True)
"""

LINE = "ERROR baseline: margin 'perplexty' (--ftmodel-margin / ini ftmodel_margins): no metric has that name (did you mean 'perplexity'?)*"


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_inprocess("-p", "no:randomly", "-p", "no:cacheprovider", *args)


def test_a_misspelt_margin_fails_without_a_baseline_file(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_a=SUITE)
    assert not list(pytester.path.glob("ftmodel-baseline*"))
    bad = _run(pytester, "--ftmodel-margin", "perplexty=0.1")
    bad.assert_outcomes(passed=1)
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stdout.fnmatch_lines([LINE])
    assert sum("perplexty" in line for line in bad.outlines) == 1  # one line
    assert not list(pytester.path.glob("ftmodel-baseline*"))  # and no file written


def test_names_the_helpers_record_or_the_run_records_pass(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_a=SUITE)
    ok = _run(pytester, "--ftmodel-margin", "perplexity=0.1", "--ftmodel-margin", "my score=0.1", "--ftmodel-margin", "accuracy=0.02")
    ok.assert_outcomes(passed=1)
    assert ok.ret == pytest.ExitCode.OK
    assert "ERROR" not in ok.stdout.str()


def test_a_misspelt_ini_margin_fails_too(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_a=SUITE)
    pytester.makeini("[pytest]\nftmodel_margins = perplexity=0.5, perplexty=0.1\n")
    bad = _run(pytester)
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stdout.fnmatch_lines([LINE])


def test_a_malformed_ini_margin_is_a_usage_error_without_a_baseline_file(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_a=SUITE)
    pytester.makeini("[pytest]\nftmodel_margins = perplexity\n")
    bad = _run(pytester)
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["ERROR: bad margin 'perplexity': write NAME=VALUE*"])
    assert "passed" not in bad.stdout.str()  # stopped before any test ran


def test_a_misspelt_margin_fails_alike_with_a_baseline_file(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_a=SUITE)
    _run(pytester, "--ftmodel-update-baseline").assert_outcomes(passed=1)
    assert (pytester.path / "ftmodel-baseline.json").exists()
    bad = _run(pytester, "--ftmodel-margin", "perplexty=0.1")
    bad.assert_outcomes(passed=1)
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stdout.fnmatch_lines([LINE])
    # a name recorded in the run is a metric, compared or not (this one has no per-item values)
    ok = _run(pytester, "--ftmodel-margin", "my score=0.1")
    assert ok.ret == pytest.ExitCode.OK
    ok.stdout.fnmatch_lines(["baseline: margin 'my score' (*): that metric is not compared in this run*"])


def test_a_failing_test_and_a_misspelt_margin(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_a=SUITE + "\n\ndef test_fails():\n    assert False\n")
    bad = _run(pytester, "--ftmodel-margin", "perplexty=0.1")
    bad.assert_outcomes(passed=1, failed=1)
    assert bad.ret == pytest.ExitCode.USAGE_ERROR  # the run was not asked what it meant to ask
    bad.stdout.fnmatch_lines([LINE])
