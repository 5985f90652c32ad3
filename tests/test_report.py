"""The session metrics record: one titled table in the terminal summary, JUnit properties."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import pytest_ftmodel.metrics.code  # noqa: F401 - numpy loads once, here, not inside an in-process inner session
from pytest_ftmodel import report
from pytest_ftmodel.report.terminal import cut_middle


def _rec(**kw) -> report.MetricRecord:
    base = dict(name="perplexity", value=12.3456, threshold=15.0, op="<=", n=24, unit="texts", passed=True)
    return report.MetricRecord(**{**base, **kw})


def test_table_rows_carry_value_bar_interval_size_and_verdict() -> None:
    rec = _rec(model="ckpt", test="tests/test_x.py::test_ppl", low=10.0, high=14.5)
    header, row = report.format_table([rec])
    assert header.split() == ["test", "metric", "value", "bar", "95%", "CI", "n", "result"]
    assert row.split() == ["test_ppl", "perplexity", "12.35", "<=", "15", "[10,", "14.5]", "24", "pass"]
    assert report.summary_lines([rec])[0] == "model: ckpt"  # one model: named once, above the table
    # -v: the full node id, the model and the unit of n
    header, row = report.format_table([rec], verbose=True)
    assert header.split() == ["test", "metric", "model", "value", "bar", "95%", "CI", "n", "result"]
    assert row.split() == ["tests/test_x.py::test_ppl", "perplexity", "ckpt", "12.35", "<=", "15", "[10,", "14.5]", "24", "texts", "pass"]
    # two models: a column
    other = _rec(model="other", test="tests/test_x.py::test_ppl2")
    assert report.format_table([rec, other])[0].split()[:3] == ["test", "metric", "model"]


def test_numbers_have_four_significant_digits() -> None:
    assert [report.fmt(v) for v in (0.778812, 22.8349, 1234.56, 0.5, 1.0, 123456.0, 0.000123)] == [
        "0.7788", "22.83", "1235", "0.5", "1", "1.23e+05", "0.000123",
    ]


def test_long_names_are_cut_in_the_middle_to_fit_100_columns() -> None:
    long_test = "tests/test_x.py::test_" + "very_long_parametrised_name_" * 3 + "[case-with-a-long-id]"
    records = [
        _rec(test=long_test, name="perplexity improvement", model="finetuned-checkpoint-final vs base-model-v2", low=0.7438, high=0.8219, value=0.7791, threshold=0.5, op=">=", unit="val items"),
        _rec(test="tests/test_x.py::test_short", name="rouge1", model="m", low=0.5, high=0.61, value=0.55),
    ]
    lines = report.format_table(records)
    assert max(map(len, lines)) <= 100
    assert "…" in lines[1] and lines[1].startswith("test_ver")  # head kept, middle cut
    assert "ong-id]  " in lines[1]  # tail kept
    assert "[0.7438, 0.8219]" in lines[1] and "0.7791" in lines[1] and ">= 0.5" in lines[1]
    full = report.format_table(records, verbose=True)
    assert long_test in full[1] and "finetuned-checkpoint-final vs base-model-v2" in full[1] and "val items" in full[1]


def test_cut_middle() -> None:
    assert cut_middle("abcdefghij", 10) == "abcdefghij"
    assert cut_middle("abcdefghijkl", 7) == "abc…jkl"
    assert len(cut_middle("x" * 50, 12)) == 12


def test_summary_counts_passed_and_failed() -> None:
    make = lambda ok: report.MetricRecord("m", 1.0, 2.0, "<=", 3, "items", ok)  # noqa: E731
    lines = report.summary_lines([make(True), make(False), make(True)])
    assert lines[-1] == "3 metrics recorded, 2 passed, 1 failed."
    assert report.summary_lines([]) == []


def test_checkpoints_with_the_same_folder_name_are_told_apart() -> None:
    full = report.ModelName("checkpoint-320", "/data/runs/full/checkpoint-320", "aaaa")
    lora = report.ModelName("checkpoint-320", "/data/runs/lora/checkpoint-320", "bbbb")
    other = report.ModelName("base", "/models/base", "cccc")
    report.record_metric("perplexity", 3.0, threshold=5.0, op="<=", n=4, unit="texts", passed=True, model=full)
    report.record_metric("perplexity", 4.0, threshold=5.0, op="<=", n=4, unit="texts", passed=True, model=lora)
    report.record_metric("perplexity improvement", 0.3, threshold=0.1, op=">=", n=4, unit="texts", passed=True, model=(lora, other))
    records = report.recorder().records[-3:]
    names = report.display_names(records)
    assert [report.model_label(r, names) for r in records] == [
        "full/checkpoint-320", "lora/checkpoint-320", "lora/checkpoint-320 vs base",
    ]
    assert records[2].fingerprints == ("bbbb", "cccc")
    table = "\n".join(report.format_table(records))
    assert "full/checkpoint-320" in table and "lora/checkpoint-320" in table


def test_a_loaded_model_is_named_by_its_path(tmp_path: Path) -> None:
    class Loaded:  # what the helpers receive: an FTModel has name, path and fingerprint
        name = "ckpt"
        path = tmp_path / "a" / "ckpt"
        fingerprint = "0123456789abcdef"

    label = report.model_name(Loaded())
    assert label == "ckpt" and label.path == str(tmp_path / "a" / "ckpt") and label.fingerprint == "0123456789abcdef"


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
            "model: m",
            "test*metric*value*bar*95% CI*n*result",
            "test_good*rouge1*0.61*>= 0.5*-*40*pass",
            "test_bad*accuracy*0.4*>= 0.8*[0.2, 0.6]*10*FAIL",
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
    assert props[("test_bad", "ftmodel.accuracy.bar")] == "0.8"
    assert props[("test_bad", "ftmodel.accuracy.direction")] == ">="
    assert props[("test_bad", "ftmodel.accuracy.interval")] == "[0.2, 0.6]"
    assert props[("test_bad", "ftmodel.accuracy.n")] == "10 items"
    assert props[("test_bad", "ftmodel.accuracy.verdict")] == "fail"
    assert props[("test_good", "ftmodel.rouge1.verdict")] == "pass"
    assert ("test_good", "ftmodel.rouge1.interval") not in props


def test_verbose_shows_the_full_table(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from pytest_ftmodel import record_metric

        def test_good():
            record_metric("rouge1", 0.61, threshold=0.5, op=">=", n=40, unit="items", passed=True, model="m")
        """
    )
    result = pytester.runpytest("-v")
    result.stdout.fnmatch_lines(["test_verbose_shows_the_full_table.py::test_good*rouge1*m*0.61*>= 0.5*40 items*pass"])


def test_the_header_names_the_sandbox_level_and_the_summary_what_code_ran_under(pytester: pytest.Pytester, tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}")
    (ckpt / "tokenizer.json").write_text("{}")  # never loaded; the start-up check looks for a tokenizer's files
    pytester.makepyfile(
        """
        from pytest_ftmodel import record_metric
        from pytest_ftmodel.metrics.code import CodeResult, ProblemResult, Sample

        def test_code():
            result = CodeResult({1: 1.0}, {1: (0.5, 1.0)}, (ProblemResult("t/0", (Sample("x = 1", "passed", ""),)),), 1,
                                "process, network reachable, shared /tmp")
            record_metric("pass@1", 1.0, threshold=0.5, op=">=", n=1, unit="problems", passed=True, result=result)
        """
    )
    result = pytester.runpytest("--model", str(ckpt), "--sandbox", "process", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["ftmodel: model=*ckpt*sandbox=process", "sandbox (--sandbox process): process, network reachable, shared /tmp"])


def test_the_sandbox_line_wraps_within_100_columns() -> None:
    isolation = "namespaces, no network, own PID namespace, private /tmp, unprivileged uid, forked from a pristine interpreter"
    line = report.sandbox_line([_rec(details={"isolation": isolation})], "auto")
    assert line is not None and max(map(len, line.splitlines())) <= 100
    assert " ".join(line.split()) == f"sandbox (--sandbox auto): {isolation}"
    assert report.sandbox_line([_rec()], "auto") is None  # no code gate ran: no line


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
