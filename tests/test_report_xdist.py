"""Under pytest-xdist the workers' records and cache counts reach the controller: the same table as
a serial run, and the reports are written once, by the controller."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("xdist")

SUITE = {
    "test_a.py": """
import pytest
from pytest_ftmodel import record_metric
from pytest_ftmodel.cache import active_cache

@pytest.mark.parametrize("i", range(6))
def test_many(i):
    record_metric(f"metric {i}", i / 10, threshold=0.3, op="<=", n=10 + i, unit="items", passed=i / 10 <= 0.3,
                  model="m", interval=(i / 20, i / 5))
    active_cache().hits += 2
    active_cache().misses += 1
    assert i / 10 <= 0.3

def test_two_in_one():
    record_metric("first", 1.0, threshold=None, op=">=", n=1, unit="items", passed=True, model="m")
    record_metric("second", 2.0, threshold=None, op=">=", n=1, unit="items", passed=True, model="m")
""",
    "test_b.py": """
from pytest_ftmodel import record_metric

def test_other():
    record_metric("rouge1", 0.61, threshold=0.5, op=">=", n=40, unit="items", passed=True, model="m")
""",
}


def _section(result: pytest.RunResult) -> list[str]:
    lines = result.stdout.lines
    start = next(i for i, line in enumerate(lines) if "ftmodel metrics" in line)
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("==="))
    return [line for line in lines[start + 1 : end] if not line.startswith("ftmodel: JSON")]


def test_the_table_under_xdist_has_exactly_the_rows_of_a_serial_run(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(**SUITE)
    serial = pytester.runpytest_subprocess("-p", "no:randomly", "--ftmodel-json", "serial.json")
    parallel = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "xdist", "-n", "2", "--ftmodel-json", "parallel.json")
    serial.assert_outcomes(passed=6, failed=2)
    parallel.assert_outcomes(passed=6, failed=2)
    table = _section(serial)
    assert table == _section(parallel)
    assert len([line for line in table if line.startswith("test_")]) == 9
    assert "9 metrics recorded, 7 passed, 2 failed." in table
    assert any(line.startswith("generation cache: 12 hits, 6 misses") for line in table)
    docs = [json.loads((pytester.path / name).read_text()) for name in ("serial.json", "parallel.json")]
    assert [r["name"] for r in docs[0]["records"]] == [r["name"] for r in docs[1]["records"]]
    assert docs[1]["records"][4]["diagnosis"].startswith("assert")  # the failure's message came across too


@pytest.mark.slow  # the whole example suite twice; the table's rows under xdist are checked above
def test_the_example_suite_prints_the_same_table_under_xdist(pytester: pytest.Pytester, bpe_pair) -> None:
    # two fresh copies of the suite (its review sheets are written beside it, and a sheet that exists
    # is not generated again), one answer cache: the parallel run reuses the serial run's answers
    source = Path(__file__).resolve().parent.parent / "example_suite"
    # folder names of one length: the baseline line names the file, and a longer name wraps it elsewhere
    suites = [pytester.path / run / "example_suite" for run in ("serial", "xdist2")]
    for suite in suites:
        shutil.copytree(source, suite, ignore=shutil.ignore_patterns("__pycache__", "reviews"))
    options = ("-p", "no:randomly", "--ftmodel-cache-dir", str(pytester.path / "answers"))
    serial = pytester.runpytest_subprocess(str(suites[0]), *options)
    parallel = pytester.runpytest_subprocess(str(suites[1]), *options, "-p", "xdist", "-n", "2")
    assert serial.ret == parallel.ret == 0, parallel.stdout.str()
    table, cache = _section(serial), _section(parallel)
    counted = ("generation cache", "score cache")
    # the baseline line names each copy's own baseline file (serial/..., xdist2/...)
    assert [line.replace("baseline serial/", "baseline ") for line in table if not line.startswith(counted)] == [
        line.replace("baseline xdist2/", "baseline ") for line in cache if not line.startswith(counted)
    ]
    assert "13 metrics recorded, 13 passed, 0 failed." in table
    # the workers' cache counts add up: every answer (and per-text score) the serial run made or read is a hit now
    for what in counted:
        counts = [line.split()[2:5:2] for run in (table, cache) for line in run if line.startswith(what)]
        assert counts[1] == [str(sum(map(int, counts[0]))), "0"], counts
