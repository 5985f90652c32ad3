"""The session metrics record: one titled table in the terminal summary, JUnit properties."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from pytest_ftmodel import report


def test_table_rows_carry_value_bar_interval_size_and_verdict() -> None:
    rec = report.MetricRecord(
        name="perplexity", value=12.3456, threshold=15.0, op="<=", n=24, unit="texts", passed=True,
        model="ckpt", test="tests/test_x.py::test_ppl", low=10.0, high=14.5,
    )
    header, row = report.format_table([rec])
    assert header.split() == ["test", "metric", "model", "value", "bar", "95%", "CI", "n", "result"]
    assert row.split() == ["test_ppl", "perplexity", "ckpt", "12.35", "<=", "15", "[10,", "14.5]", "24", "texts", "pass"]


def test_summary_counts_passed_and_failed() -> None:
    make = lambda ok: report.MetricRecord("m", 1.0, 2.0, "<=", 3, "items", ok)  # noqa: E731
    lines = report.summary_lines([make(True), make(False), make(True)])
    assert lines[-1] == "3 metrics recorded, 2 passed, 1 failed."
    assert report.summary_lines([]) == []


def test_records_from_tests_appear_in_the_terminal_summary_and_junit(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from pytest_ftmodel import record_metric

        def test_good():
            record_metric("rouge1", 0.61, threshold=0.5, op=">=", n=40, unit="items", passed=True, model="m")

        def test_bad():
            record_metric("accuracy", 0.4, threshold=0.8, op=">=", n=10, unit="items", passed=False,
                          model="m", interval=(0.2, 0.6))
            assert False
        """
    )
    result = pytester.runpytest("--junitxml=out.xml")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*= ftmodel metrics =*",
            "test*metric*model*value*bar*95% CI*n*result",
            "test_good*rouge1*m*0.61*>= 0.5*-*40 items*pass",
            "test_bad*accuracy*m*0.4*>= 0.8*[0.2, 0.6]*10 items*FAIL",
            "2 metrics recorded, 1 passed, 1 failed.",
        ]
    )
    tree = ET.parse(pytester.path / "out.xml")
    props = {
        (case.get("name"), p.get("name")): p.get("value")
        for case in tree.iter("testcase")
        for p in case.iter("property")
    }
    assert props[("test_good", "ftmodel.rouge1")] == "0.61"
    assert props[("test_bad", "ftmodel.accuracy")] == "0.4"


def test_no_table_when_nothing_was_measured(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_a():\n    pass\n")
    result = pytester.runpytest()
    assert "ftmodel metrics" not in result.stdout.str()


def test_an_inner_session_does_not_wipe_the_outer_record(pytester: pytest.Pytester) -> None:
    outer = report.recorder()
    report.record_metric("outer", 1.0, threshold=None, op=">=", n=1, unit="items", passed=True)
    count = len(outer.records)
    pytester.makepyfile(
        "from pytest_ftmodel import record_metric\n\ndef test_a():\n"
        "    record_metric('inner', 1.0, threshold=None, op='>=', n=1, unit='items', passed=True)\n"
    )
    pytester.runpytest().assert_outcomes(passed=1)
    assert report.recorder() is outer and len(outer.records) == count
    outer.records.pop()  # keep this suite's own summary clean


def test_library_errors_in_a_test_read_as_one_line(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from pytest_ftmodel import load_jsonl

        def test_data():
            load_jsonl("missing.jsonl")
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "test_library_errors_in_a_test_read_as_one_line.py:3: DataError: cannot read data file 'missing.jsonl'" in out
    assert "Traceback" not in out and "def load_jsonl" not in out
