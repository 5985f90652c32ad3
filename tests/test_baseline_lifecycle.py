"""The baseline file's life cycle under real pytest runs: which entries an update removes (never those
of tests that did not run), a named file that is missing, a moved file, a file that cannot be
written, a broken or newer file, and malformed entries. Tiny gates: a recorded perplexity built from
fixed per-text values (no model)."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_ftmodel import report
from pytest_ftmodel.baseline import store
from pytest_ftmodel.baseline.gate import BaselineSession
from pytest_ftmodel.metrics.perplexity import PerplexityResult, TextScore
from pytest_ftmodel.report.records import describe_result

HELPERS = """
import math
from pytest_ftmodel import record_metric
from pytest_ftmodel.metrics.perplexity import PerplexityResult, TextScore

def gate(name="perplexity", scale=1.0, n=12):
    scores = tuple(TextScore(nll=(2.0 + i % 5) * 10 * scale / 3, n_tokens=10, n_bytes=40, n_words=8) for i in range(n))
    nll = sum(s.nll for s in scores)
    ppl = math.exp(nll / (10 * n))
    result = PerplexityResult(ppl, nll, 10 * n, n, scores, 1.0, ppl, (ppl, ppl), tuple(f"text {i}" for i in range(n)))
    record_metric(name, ppl, threshold=1e6, op="<=", n=n, unit="texts", passed=True, result=result)
"""

SUITE = {
    "ftm_helpers": HELPERS,
    "test_a": """
import pytest
from ftm_helpers import gate

def test_one():
    gate()

@pytest.mark.tagged
def test_two():
    gate()
    gate(scale=1.01)
""",
    "test_b": """
import os
from ftm_helpers import gate

def test_flaky():
    gate()
    assert not os.path.exists("fail.flag")

def test_steady():
    gate()
""",
}

ALL = [
    "test_a.py::test_one::perplexity",
    "test_a.py::test_two::perplexity",
    "test_a.py::test_two::perplexity#2",
    "test_b.py::test_flaky::perplexity",
    "test_b.py::test_steady::perplexity",
]

RUN = ("-p", "no:randomly")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _entries(path: Path) -> list[str]:
    return sorted(json.loads(path.read_text())["entries"])


@pytest.fixture
def recorded(pytester: pytest.Pytester) -> Path:
    """The suite, and its baseline recorded by a full update run."""
    pytester.makepyfile(**SUITE)
    pytester.makeini("[pytest]\nmarkers =\n    tagged: a marker to select by\n")
    first = pytester.runpytest_subprocess(*RUN, "--ftmodel-update-baseline")
    first.assert_outcomes(passed=4)
    path = pytester.path / "ftmodel-baseline.json"
    assert _entries(path) == ALL
    return path


# ---- (1) an update removes only what the run can speak for ---------------------------------------


@pytest.mark.parametrize(
    "selection",
    [
        ["test_a.py::test_one"],  # node id: the other tests of the file and of other files did not run
        ["-k", "one"],
        ["-m", "tagged"],
        ["--deselect", "test_a.py::test_two", "--deselect", "test_b.py::test_flaky"],
        ["test_b.py"],  # a file: the other file's entries are kept
    ],
    ids=["node-id", "-k", "-m", "--deselect", "file"],
)
def test_an_update_of_a_selection_keeps_every_entry_of_tests_that_did_not_run(pytester: pytest.Pytester, recorded: Path, selection) -> None:
    digest = _digest(recorded)
    result = pytester.runpytest_subprocess(*RUN, "--ftmodel-update-baseline", *selection)
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["baseline *ftmodel-baseline.json: * recorded (0 new, 0 changed, *), * kept, 0 removed (unused)."])
    assert "removed:" not in result.stdout.str()
    assert _digest(recorded) == digest
    # nor does a compare run of the selection call them unused
    compared = pytester.runpytest_subprocess(*RUN, *selection)
    assert compared.ret == 0 and "unused" not in compared.stdout.str(), compared.stdout.str()


def test_an_update_under_last_failed_keeps_the_entries_of_tests_that_passed_before(pytester: pytest.Pytester, recorded: Path) -> None:
    digest = _digest(recorded)
    (pytester.path / "fail.flag").write_text("")
    failing = pytester.runpytest_subprocess(*RUN)  # test_flaky fails; --lf then runs it alone
    failing.assert_outcomes(passed=3, failed=1)
    (pytester.path / "fail.flag").unlink()
    result = pytester.runpytest_subprocess(*RUN, "--lf", "--ftmodel-update-baseline")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*1 entry recorded (0 new, 0 changed, 1 unchanged), 4 kept, 0 removed (unused)."])
    assert _digest(recorded) == digest


def test_an_update_removes_what_tests_that_ran_no_longer_produce(pytester: pytest.Pytester, recorded: Path) -> None:
    # test_two now judges one figure: its second entry is unused, removed by an update that runs it
    pytester.makepyfile(test_a=SUITE["test_a"].replace("    gate(scale=1.01)\n", ""))
    compared = pytester.runpytest_subprocess(*RUN, "-k", "two")
    compared.stdout.fnmatch_lines(["*1 unused entry*test_a.py::test_two::perplexity#2 (its test ran without it)*"])
    result = pytester.runpytest_subprocess(*RUN, "--ftmodel-update-baseline", "-k", "two")
    result.stdout.fnmatch_lines(["*1 entry recorded*, 3 kept, 1 removed (unused).", "*removed: test_a.py::test_two::perplexity#2 (its test ran without it)"])
    assert _entries(recorded) == [k for k in ALL if not k.endswith("#2")]


def test_entries_of_a_deleted_test_file_are_unused_in_every_run_and_removed_by_any_update(pytester: pytest.Pytester, recorded: Path) -> None:
    (pytester.path / "test_b.py").unlink()
    compared = pytester.runpytest_subprocess(*RUN)
    assert compared.ret == 0, compared.stdout.str()
    compared.stdout.fnmatch_lines(["*2 unused entries*test_b.py::test_flaky::perplexity (test file test_b.py is gone)*--ftmodel-update-baseline removes them"])
    result = pytester.runpytest_subprocess(*RUN, "--ftmodel-update-baseline", "test_a.py::test_one")
    result.stdout.fnmatch_lines(["*1 entry recorded*, 2 kept, 2 removed (unused)."])
    assert _entries(recorded) == ALL[:3]


def test_a_test_gone_from_its_file_is_removed_only_by_an_update_of_the_whole_file(pytester: pytest.Pytester, recorded: Path) -> None:
    pytester.makepyfile(test_b=SUITE["test_b"].split("def test_steady")[0] + "def test_other():\n    pass\n")
    digest = _digest(recorded)
    for selection in (["-k", "flaky"], ["test_b.py::test_flaky"], ["--lf"]):  # test_other not selected: the file is narrowed
        partial = pytester.runpytest_subprocess(*RUN, "--ftmodel-update-baseline", *selection)
        partial.stdout.fnmatch_lines(["*, 0 removed (unused)."])
        assert _digest(recorded) == digest
    whole = pytester.runpytest_subprocess(*RUN, "--ftmodel-update-baseline", "test_b.py")
    whole.stdout.fnmatch_lines(["*1 entry recorded*, 3 kept, 1 removed (unused).", "*removed: test_b.py::test_steady::perplexity (no such test in test_b.py now)"])


# ---- (2) a named file that does not exist; turning comparison off ---------------------------------


def test_a_named_baseline_that_does_not_exist_stops_the_run_with_one_line(pytester: pytest.Pytester, recorded: Path) -> None:
    typo = pytester.runpytest_subprocess(*RUN, "--ftmodel-baseline=ftmodel-baseline.jsn")
    assert typo.ret == pytest.ExitCode.USAGE_ERROR
    typo.stderr.fnmatch_lines(["ERROR: baseline file ftmodel-baseline.jsn does not exist: fix the path, record one with --ftmodel-update-baseline, or pass --ftmodel-baseline=none*"])
    pytester.makeini("[pytest]\nftmodel_baseline = ci/baseline.json\nmarkers =\n    tagged: x\n")
    ini = pytester.runpytest_subprocess(*RUN)
    assert ini.ret == pytest.ExitCode.USAGE_ERROR
    ini.stderr.fnmatch_lines(["ERROR: baseline file *ci/baseline.json does not exist*"])
    # none: no comparison, though the default file exists
    pytester.makeini("[pytest]\nmarkers =\n    tagged: x\n")
    off = pytester.runpytest_subprocess(*RUN, "--ftmodel-baseline=none")
    assert off.ret == 0 and "ftmodel-baseline.json" not in off.stdout.str() and "within noise" not in off.stdout.str(), off.stdout.str()
    nothing = pytester.runpytest_subprocess(*RUN, "--ftmodel-baseline=none", "--ftmodel-update-baseline")
    assert nothing.ret == pytest.ExitCode.USAGE_ERROR
    nothing.stderr.fnmatch_lines(["ERROR: --ftmodel-update-baseline needs a baseline file*--ftmodel-baseline=none*"])
    # the default path, missing: silent, nothing compared
    recorded.unlink()
    plain = pytester.runpytest_subprocess(*RUN)
    assert plain.ret == 0 and "ftmodel-baseline.json" not in plain.stdout.str() and "new figures" not in plain.stdout.str()


# ---- (3) a baseline moved away from its tests ----------------------------------------------------


def test_a_baseline_none_of_whose_tests_exist_beside_it_fails_the_run(pytester: pytest.Pytester, recorded: Path) -> None:
    (pytester.path / "ci").mkdir()
    recorded.rename(pytester.path / "ci" / "ftmodel-baseline.json")
    moved = pytester.runpytest_subprocess(*RUN, "--ftmodel-baseline=ci/ftmodel-baseline.json")
    assert moved.ret == pytest.ExitCode.USAGE_ERROR, moved.stdout.str()
    moved.stderr.fnmatch_lines([
        "ERROR: baseline file ci/ftmodel-baseline.json: none of its 5 entries belongs to a test file beside it "
        "(keys are relative to the baseline's folder: test_a.py::test_one::perplexity would be ci*test_a.py, which does not exist)*"
        "move the file back beside the tests, or re-record*",
    ])


# ---- (5) a file that cannot be written -------------------------------------------------------------

REFUSE_REPLACE = """
import os
_replace = os.replace

def _refuse(src, dst, *a, **k):
    if str(dst).endswith("ftmodel-baseline.json"):
        raise PermissionError(1, "Operation not permitted", str(dst))
    return _replace(src, dst, *a, **k)

os.replace = _refuse
"""


@pytest.mark.parametrize("xdist", [False, True], ids=["serial", "xdist"])
def test_a_baseline_that_cannot_be_written_is_one_line_and_a_failed_run(pytester: pytest.Pytester, recorded: Path, xdist: bool) -> None:
    extra = ["-p", "xdist", "-n", "2"] if xdist else []
    if xdist:
        pytest.importorskip("xdist")
    before = recorded.read_bytes()
    pytester.makepyfile(test_a=SUITE["test_a"].replace("scale=1.01", "scale=1.02"))  # a changed figure: the file must be rewritten
    pytester.makeconftest(REFUSE_REPLACE)  # os.replace refuses, as on a read-only or immutable file (root ignores chmod)
    result = pytester.runpytest_subprocess(*RUN, *extra, "--ftmodel-update-baseline")
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    result.stdout.fnmatch_lines([
        "*= ftmodel metrics =*", "*metrics recorded*",
        "baseline *ftmodel-baseline.json could not be written (PermissionError: *Operation not permitted*): "
        "the file is unchanged; fix the permissions, or pass --ftmodel-baseline with a path you can write",
    ])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    assert recorded.read_bytes() == before and not list(pytester.path.glob(".*.tmp"))
    # a folder that cannot be made (its parent is a file)
    (pytester.path / "afile").write_text("")
    nowhere = pytester.runpytest_subprocess(*RUN, *extra, "--ftmodel-update-baseline", "--ftmodel-baseline=afile/b.json")
    assert nowhere.ret == pytest.ExitCode.TESTS_FAILED, nowhere.stdout.str() + nowhere.stderr.str()
    nowhere.stdout.fnmatch_lines(["baseline afile*b.json could not be written (FileExistsError: *): no file was written; *pass --ftmodel-baseline with a path you can write"])


# ---- (7) (8) (12) a broken, malformed or newer file -------------------------------------------------


def test_a_broken_baseline_is_kept_aside_and_rewritten_by_an_update(pytester: pytest.Pytester, recorded: Path) -> None:
    good = recorded.read_bytes()
    broken = good[: len(good) // 2]
    recorded.write_bytes(broken)
    compared = pytester.runpytest_subprocess(*RUN)
    assert compared.ret == pytest.ExitCode.USAGE_ERROR
    compared.stderr.fnmatch_lines(["ERROR: baseline file *ftmodel-baseline.json is not valid JSON (line *): restore it from version control, "
                                   "or record a new one with --ftmodel-update-baseline (the broken file is kept as ftmodel-baseline.json.broken)"])
    updated = pytester.runpytest_subprocess(*RUN, "--ftmodel-update-baseline")
    assert updated.ret == 0, updated.stdout.str() + updated.stderr.str()
    updated.stdout.fnmatch_lines(["baseline *ftmodel-baseline.json was broken (not valid JSON*): kept as *ftmodel-baseline.json.broken*", "*5 entries recorded (5 new*"])
    assert recorded.read_bytes() == good and (pytester.path / "ftmodel-baseline.json.broken").read_bytes() == broken
    # a second broken file does not overwrite the first one kept
    recorded.write_text("")
    pytester.runpytest_subprocess(*RUN, "--ftmodel-update-baseline").stdout.fnmatch_lines(["*kept as *ftmodel-baseline.json.broken.2*"])
    assert (pytester.path / "ftmodel-baseline.json.broken").read_bytes() == broken


def test_a_malformed_entry_is_one_line_naming_it_in_a_real_run(pytester: pytest.Pytester, recorded: Path) -> None:
    data = json.loads(recorded.read_text())
    data["entries"]["test_a.py::test_one::perplexity"]["settings"] = 5
    recorded.write_text(json.dumps(data))
    result = pytester.runpytest_subprocess(*RUN)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(['ERROR: baseline file *ftmodel-baseline.json: entry "test_a.py::test_one::perplexity" has "settings" 5 (a number, not an object)*'])
    assert "Traceback" not in result.stderr.str()
    # an update keeps the other entries, rewrites this one, and keeps the file as it was aside
    updated = pytester.runpytest_subprocess(*RUN, "--ftmodel-update-baseline", "-k", "one")
    assert updated.ret == 0, updated.stdout.str()
    updated.stdout.fnmatch_lines(["*kept as *ftmodel-baseline.json.broken*", "*1 entry recorded (1 new, 0 changed, 0 unchanged), 4 kept, 0 removed (unused)."])
    assert _entries(recorded) == ALL


def test_a_file_of_a_newer_format_says_so(pytester: pytest.Pytester, recorded: Path) -> None:
    data = json.loads(recorded.read_text())
    data["format"] = store.FORMAT + 1
    recorded.write_text(json.dumps(data))
    for args in ((), ("--ftmodel-update-baseline",)):
        result = pytester.runpytest_subprocess(*RUN, *args)
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines([f"ERROR: baseline file *ftmodel-baseline.json was written by a newer pytest-ftmodel (format {store.FORMAT + 1}; "
                                     f"this version reads format {store.FORMAT}): upgrade pytest-ftmodel, or re-record it*"])


@pytest.mark.parametrize(
    "change, named",
    [
        (lambda e: "x", '"k::t::m" is a string, not an object'),
        (lambda e: None, '"k::t::m" is null, not an object'),
        (lambda e: [1], '"k::t::m" is a list, not an object'),
        (lambda e: {**e, "settings": 5}, '"k::t::m" has "settings" 5 (a number, not an object)'),
        (lambda e: {**e, "items": []}, '"k::t::m" has "items" [] (a list, not an object)'),
        (lambda e: {**e, "value": "x"}, '"k::t::m" has "value" "x" (a string, not a number)'),
        (lambda e: {**e, "compare_kind": 3}, '"k::t::m" has "compare_kind" 3 (a number, not a string)'),
        (lambda e: {**e, "items": {"a": {"value": [None, 6]}}}, '"k::t::m" has item "a" whose "value" is [null, 6] (not [NLL, tokens], two numbers)'),
        (lambda e: {**e, "compare_kind": "binary", "items": {"a": {"value": "x"}}}, '"k::t::m" has item "a" whose "value" is "x" (a string, not a number)'),
        (lambda e: {**e, "items": {"a": 1}}, '"k::t::m" has item "a" that is a number, not an object'),
    ],
)
def test_every_entry_is_checked_on_load(tmp_path: Path, change, named) -> None:
    path = tmp_path / "ftmodel-baseline.json"
    entry = store.entry_of(_record(), version="test", test="k::t")
    path.write_text(json.dumps({"format": 1, "entries": {"k::t::m": change(entry), "k::t::other": entry}}))
    with pytest.raises(store.BaselineFileError) as info:
        store.load(path)
    message = str(info.value)
    assert "\n" not in message and f"entry {named}" in message, message
    assert message.endswith("re-record it with --ftmodel-update-baseline (the broken file is kept as ftmodel-baseline.json.broken)")


def _record(test: str = "t.py::x", scale: float = 1.0) -> report.MetricRecord:
    n = 6
    scores = tuple(TextScore(nll=(2.0 + i % 3) * 10 * scale, n_tokens=10, n_bytes=40, n_words=8) for i in range(n))
    nll = sum(s.nll for s in scores)
    ppl = math.exp(nll / (10 * n))
    result = PerplexityResult(ppl, nll, 10 * n, n, scores, 1.0, ppl, (ppl, ppl), tuple(f"text {i}" for i in range(n)))
    items, details = describe_result(result, "perplexity")
    return report.MetricRecord("perplexity", ppl, 1e6, "<=", n, "texts", True, test=test, items=items, details=details, settings={"stride": None})


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 10**6) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(where=st.integers(0, 10**6), field_pick=st.integers(0, 10**6), value=JSON, drop=st.booleans())
def test_any_corruption_of_an_entry_is_one_line_or_a_clean_run(tmp_path: Path, where: int, field_pick: int, value: Any, drop: bool) -> None:
    """Corrupt one field of an entry, of one of its items, or the entry itself: loading and gating
    either raise the one-line file error or run cleanly, never anything else."""
    path = tmp_path / "ftmodel-baseline.json"
    records = [_record("t.py::a"), _record("t.py::b", scale=1.1)]
    entries = {k: store.entry_of(r, version="test") for k, r in zip(store.entry_keys(records), records)}
    key = sorted(entries)[where % 2]
    entry = entries[key]
    places: list[tuple[dict[str, Any], str]] = [(entries, key)] + [(entry, f) for f in sorted(entry)]
    places += [(entry["items"], i) for i in sorted(entry["items"])] + [(it, f) for it in entry["items"].values() for f in sorted(it)]
    target, name = places[field_pick % len(places)]
    if drop:
        del target[name]
    else:
        target[name] = value
    path.write_text(json.dumps({"format": store.FORMAT, "entries": entries}))
    try:
        session = BaselineSession(path, update=False)
    except store.BaselineFileError as exc:
        assert "\n" not in str(exc) and str(exc).startswith(f"baseline file {path}")
        return
    for record in (_record("t.py::a"), _record("t.py::b", scale=1.3)):
        gated = session(record)
        if gated.baseline and gated.baseline.get("verdict") in ("regressed", "mismatch", "inconclusive"):
            session.failure_message(gated)
    session.finish([])
