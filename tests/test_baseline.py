"""Regression baselines: per-item ids, the baseline file's life cycle, the gate's verdicts and its
one-line refusals, and the diagnosis a regression prints."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from pytest_ftmodel import assert_classification, assert_perplexity_below, load_model, report, texts_of
from pytest_ftmodel.baseline import store
from pytest_ftmodel.baseline.gate import BaselineSession, parse_margin, reset_helper_margin, set_helper_margin
from pytest_ftmodel.demo import demo_data
from pytest_ftmodel.metrics.perplexity import PerplexityResult, TextScore
from pytest_ftmodel.report.records import describe_result

VAL = texts_of(demo_data()["val"])
# VAL[12:20] are sentiment texts, which the base model (never taught the format) finds far less likely
REVIEWS = [x for x in demo_data()["val"] if x.get("category") == "classify"][:4]
LABELS = ["positive", "negative", "neutral"]


def _session(tmp_path: Path, records: list[report.MetricRecord], **options) -> BaselineSession:
    """A baseline file holding ``records`` and a gate comparing with it."""
    path = tmp_path / "ftmodel-baseline.json"
    keys = store.entry_keys(records)
    store.write(path, {k: store.entry_of(r, version="test") for k, r in zip(keys, records)})
    return BaselineSession(path, update=False, **options)


@pytest.fixture(scope="module")
def noisy_model(bpe_pair, tmp_path_factory):
    """The fine-tuned demo with N(0, 1e-4) added to every weight, saved and loaded back as a user would."""
    import torch
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("noisy") / "finetuned-noisy"
    shutil.copytree(bpe_pair.finetuned, out)
    model = AutoModelForCausalLM.from_pretrained(bpe_pair.finetuned)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 1e-4)
    model.save_pretrained(out)
    return load_model(out, device="cpu")


@pytest.fixture(scope="module")
def base_bpe(bpe_pair):
    return load_model(bpe_pair.base, device="cpu")


# ---- per-item ids -------------------------------------------------------------------------------


def _ppl_result(values: list[float], texts: list[str], tokens: int = 10) -> PerplexityResult:
    scores = tuple(TextScore(nll=v * tokens, n_tokens=tokens, n_bytes=40, n_words=8) for v in values)
    nll = sum(s.nll for s in scores)
    import math

    ppl = math.exp(nll / (tokens * len(values)))
    return PerplexityResult(ppl, nll, tokens * len(values), len(values), scores, 1.0, ppl, (ppl * 0.9, ppl * 1.1), tuple(texts))


def test_item_ids_follow_content_not_position_and_keep_duplicates_apart() -> None:
    texts = ["a", "b", "a", "x" * 1500 + "1", "x" * 1500 + "2"]
    items, details = describe_result(_ppl_result([1, 2, 3, 4, 5], texts), "perplexity")
    ids = [i["id"] for i in items]
    assert details["compare_kind"] == "perplexity" and len(set(ids)) == 5  # duplicates and texts equal when cut differ
    assert all(len(i) == 16 for i in ids)
    reordered, _ = describe_result(_ppl_result([2, 1, 3, 4, 5], ["b", "a", "a", texts[3], texts[4]]), "perplexity")
    assert [i["id"] for i in reordered][:2] == [ids[1], ids[0]]
    assert items[0]["nll"] == 10.0 and items[0]["n_tokens"] == 10


def test_every_comparable_record_names_its_kind(tmp_path: Path) -> None:
    from tests.test_report_files import record_every_kind

    records = record_every_kind(tmp_path)
    kinds = {r.name: r.details.get("compare_kind") for r in records}
    assert kinds["perplexity"] == "perplexity" and kinds["rouge1"] == "continuous" and kinds["pass@1"] == "continuous"
    assert all("id" in it for r in records if r.details.get("compare_kind") for it in r.items)


# ---- the file ----------------------------------------------------------------------------------


def test_the_file_is_deterministic_sorted_and_rounded(tmp_path: Path) -> None:
    entries = {"b::m": {"value": 0.1 + 0.2, "items": {"z": {"value": 1 / 3}, "a": {"value": 2.0}}}, "a::m": {"value": 1.0}}
    text = store.dumps(entries)
    assert text == store.dumps(dict(reversed(list(entries.items()))))
    assert text.index('"a::m"') < text.index('"b::m"') and '"value": 0.3' in text and "0.333333333333" in text
    store.write(tmp_path / "f.json", entries)
    assert (tmp_path / "f.json").read_text() == text and not list(tmp_path.glob(".*tmp"))
    assert store.load(tmp_path / "f.json")["a::m"]["value"] == 1.0


def test_a_broken_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    path.write_text("{not json")
    with pytest.raises(store.BaselineFileError, match=r"not valid JSON .*--ftmodel-update-baseline \(the broken file is kept as b.json.broken\)$") as info:
        store.load(path)
    assert info.value.broken == "not valid JSON" and info.value.salvaged == {}


def test_unused_entries_only_among_what_the_run_can_speak_for(tmp_path: Path) -> None:
    for name in ("t.py", "u.py", "w.py"):
        (tmp_path / name).write_text("")
    entries = {
        "t.py::a::m": {"test": "t.py::a"},  # ran and passed, produced nothing: unused
        "t.py::b::m": {"test": "t.py::b"},  # not selected (deselected): kept
        "t.py::gone::m": {"test": "t.py::gone"},  # its file was narrowed by the selection: kept
        "w.py::gone::m": {"test": "w.py::gone"},  # its file was collected whole and lacks the test: unused
        "u.py::c::m": {"test": "u.py::c"},  # another file, not collected: kept
        "t.py::d::m": {"test": "t.py::d"},  # produced
        "v.py::e::m": {"test": "v.py::e"},  # its file is gone: unused
    }
    unused = store.unused_entries(
        entries, ["t.py::d::m"], ["t.py::a", "t.py::d"], ["t.py::a", "t.py::b", "t.py::d", "w.py::f"], whole_files=["w.py"], folder=tmp_path
    )
    assert unused == {
        "t.py::a::m": "its test ran without it", "v.py::e::m": "test file v.py is gone", "w.py::gone::m": "no such test in w.py now",
    }


# ---- the gate on real models -------------------------------------------------------------------


def _baseline_of(private_record: report.Recorder, tmp_path: Path, run, **options) -> BaselineSession:
    start = len(private_record.records)
    run()
    session = _session(tmp_path, private_record.records[start:], **options)
    private_record.gate = session
    return session


def test_the_same_model_passes_within_noise(bpe_model, private_record, tmp_path) -> None:
    _baseline_of(private_record, tmp_path, lambda: assert_perplexity_below(bpe_model, VAL[:8], 1e6))
    assert_perplexity_below(bpe_model, VAL[:8], 1e6)
    record = private_record.records[-1]
    assert record.baseline["verdict"] == "within noise" and record.passed
    assert record.baseline["n_paired"] == 8 and record.baseline["baseline_n"] == 8 and record.baseline["delta"] == 0


def test_weight_noise_of_1e_4_passes(bpe_model, noisy_model, private_record, tmp_path) -> None:
    _baseline_of(private_record, tmp_path, lambda: assert_perplexity_below(bpe_model, VAL[:8], 1e6))
    assert_perplexity_below(noisy_model, VAL[:8], 1e6)
    record = private_record.records[-1]
    assert record.baseline["verdict"] in ("within noise", "improved") and record.passed
    assert abs(record.baseline["delta"]) < 1e-3  # the noise moved perplexity, but far less than the 2% margin


def test_a_worse_model_fails_as_a_regression_although_its_bar_holds(bpe_model, base_bpe, private_record, tmp_path) -> None:
    _baseline_of(private_record, tmp_path, lambda: assert_perplexity_below(bpe_model, VAL[12:20], 1e6))
    with pytest.raises(AssertionError) as info:
        assert_perplexity_below(base_bpe, VAL[12:20], 1e6)  # the base model: no fine-tuning at all
    record = private_record.records[-1]
    assert record.value < 1e6 and record.baseline["verdict"] == "regressed" and not record.passed
    message = str(info.value)
    first = message.splitlines()[0]
    assert first.startswith("perplexity regressed against the baseline: ") and f"in the baseline (model bpe/finetuned ({record.baseline['baseline_fingerprint'][:8]}))" in first
    assert f"{record.baseline['test']}, one-sided p = " in first and "margin 2.0%" in first and "95% CI [" in first
    assert "items that got worse (3 of" in message and "before '" in message and "after  '" in message
    assert message.splitlines()[-1].endswith(f"pytest {record.test} --ftmodel-update-baseline")
    worse = record.baseline["worse_items"]
    assert worse and set(worse[0]) == {"id", "prompt", "expected", "before", "after"} and "nats/token" in worse[0]["after"]


def _named(model, path: Path):
    """``model`` as it would load from ``path``: the same weights and fingerprint, another folder."""
    from pytest_ftmodel.model import FTModel

    return FTModel(model.model, model.tokenizer, path, model.device, model.dtype, model.fingerprint)


def test_models_of_one_name_from_two_runs_read_apart(bpe_model, base_bpe, private_record, tmp_path) -> None:
    """runs/full/final in the baseline, runs/sft/final now: both folders are called final, so each
    model is named by the tail of its path and its fingerprint's prefix."""
    full, sft = _named(bpe_model, tmp_path / "runs" / "full" / "final"), _named(base_bpe, tmp_path / "runs" / "sft" / "final")
    then, now = f"full/final ({full.fingerprint[:8]})", f"sft/final ({sft.fingerprint[:8]})"
    session = _baseline_of(private_record, tmp_path, lambda: assert_perplexity_below(full, VAL[12:20], 1e6))
    [entry] = store.load(session.path).values()
    assert entry["model"] == "full/final" and entry["fingerprint"] == full.fingerprint  # no machine path in the file
    with pytest.raises(AssertionError) as info:
        assert_perplexity_below(sft, VAL[12:20], 1e6)
    first = str(info.value).splitlines()[0]
    assert f"in the baseline (model {then}) -> " in first and f" now (model {now}), " in first
    record = private_record.records[-1]
    assert record.baseline["model"] == now
    assert report.versus.summary_line([record], "ftmodel-baseline.json") == f"baseline ftmodel-baseline.json of {then}, now {now}: 1 regressed"
    # the same model in both: named once
    _baseline_of(private_record, tmp_path, lambda: assert_perplexity_below(full, VAL[12:20], 1e6))
    assert_perplexity_below(full, VAL[12:20], 1e6)
    assert report.versus.baseline_source([private_record.records[-1]]) == f"baseline of {then}"


def test_margin_on_the_helper_wins(bpe_model, base_bpe, private_record, tmp_path) -> None:
    _baseline_of(private_record, tmp_path, lambda: assert_perplexity_below(bpe_model, VAL[:8], 1e6), margins={"perplexity": 0.0})
    assert_perplexity_below(base_bpe, VAL[:8], 1e6, margin=100.0)  # a 10,000% allowance: passes
    assert private_record.records[-1].baseline["margin"] == 100.0 and private_record.records[-1].passed


def test_margin_precedence(tmp_path: Path) -> None:
    session = _session(tmp_path, [], margins={"accuracy": 0.05})
    assert session.margin_for("rougeL", "continuous") == 0.01 and session.margin_for("perplexity", "perplexity") == 0.02
    assert session.margin_for("human accuracy", "ordinal") == 0.1
    assert session.margin_for("accuracy", "binary") == 0.05
    token = set_helper_margin({"accuracy": 0.2})
    try:
        assert session.margin_for("accuracy", "binary") == 0.2 and session.margin_for("rougeL", "continuous") == 0.01
    finally:
        reset_helper_margin(token)
    token = set_helper_margin(0.3)
    try:
        assert session.margin_for("accuracy", "binary") == 0.3
    finally:
        reset_helper_margin(token)
    assert parse_margin("pass@1=0.05") == ("pass@1", 0.05)
    with pytest.raises(ValueError, match="NAME=VALUE"):
        parse_margin("accuracy")


def test_changed_settings_stop_the_comparison_with_one_line(bpe_model, private_record, tmp_path) -> None:
    run = lambda tokens: assert_classification(bpe_model, REVIEWS, LABELS, min_accuracy=0.0, max_new_tokens=tokens)  # noqa: E731
    _baseline_of(private_record, tmp_path, lambda: run(64))
    with pytest.raises(pytest.fail.Exception) as info:
        run(128)
    message = str(info.value)
    assert "\n" not in message
    assert "accuracy: settings differ from the baseline's (max_new_tokens=64 in the baseline, 128 now): restore the setting, or re-record" in message
    assert message.endswith("--ftmodel-update-baseline")
    assert private_record.records[-1].baseline["verdict"] == "mismatch"


def test_fewer_than_half_the_items_stop_the_comparison_with_one_line(bpe_model, private_record, tmp_path) -> None:
    _baseline_of(private_record, tmp_path, lambda: assert_perplexity_below(bpe_model, VAL[:8], 1e6))
    with pytest.raises(pytest.fail.Exception) as info:
        assert_perplexity_below(bpe_model, VAL[:3], 1e6)
    message = str(info.value)
    assert "\n" not in message and "only 3 of the baseline's 8 items are in this run (fewer than half" in message
    private_record.gate = BaselineSession(private_record.gate.path, update=False)  # the test's next figure is #2
    assert_perplexity_below(bpe_model, VAL[:5], 1e6)  # 5 of 8: compared on the 5
    assert private_record.records[-1].baseline["n_paired"] == 5


def test_a_changed_scoring_rule_is_a_mismatch(bpe_model, private_record, tmp_path) -> None:
    session = _baseline_of(private_record, tmp_path, lambda: assert_perplexity_below(bpe_model, VAL[:8], 1e6))
    for entry in session.entries.values():
        entry["scoring_rule"] = "per-text NLL/0"
    with pytest.raises(pytest.fail.Exception, match=r"the scoring rule changed \(per-text NLL/0 in the baseline"):
        assert_perplexity_below(bpe_model, VAL[:8], 1e6)


def _synthetic(private_record: report.Recorder, values: list[float]) -> report.MetricRecord:
    result = _ppl_result(values, [f"text {i}" for i in range(len(values))])
    return report.record_metric("perplexity", result.perplexity, threshold=1e6, op="<=", n=len(values), unit="texts", passed=True, result=result)


def test_noninferiority_fails_what_it_cannot_show(private_record, tmp_path) -> None:
    import random

    rng = random.Random(0)
    base = [2.0 + rng.random() for _ in range(10)]
    moved = [v * (1.3 if i % 2 else 0.7) for i, v in enumerate(base)]  # large changes both ways, none on average
    baseline = _synthetic(private_record, base)
    for mode, verdict in (("noninferiority", "inconclusive"), ("superiority", "within noise")):
        private_record.gate = _session(tmp_path, [baseline], mode=mode)
        record = _synthetic(private_record, moved)
        assert record.baseline["verdict"] == verdict and record.passed is (mode == "superiority")


def test_no_entry_is_new_and_passes(private_record, tmp_path) -> None:
    private_record.gate = _session(tmp_path, [])
    record = _synthetic(private_record, [2.0, 3.0])
    assert record.baseline == {"verdict": "new"} and record.passed


def test_the_diagnosis_escapes_what_the_model_wrote(tmp_path: Path) -> None:
    session = _session(tmp_path, [])
    record = report.MetricRecord(
        "rougeL", 0.2, 0.1, ">=", 10, "items", False, test="t.py::x",
        baseline={
            "verdict": "regressed", "value": 0.5, "candidate": 0.2, "delta": -0.3, "low": -0.4, "high": -0.2, "p_value": 0.001,
            "margin": 0.01, "relative": False, "n_paired": 10, "alpha": 0.05, "mode": "superiority", "test": "paired bootstrap",
            "worse": ["a"], "notes": [], "baseline_model": "m",
            "worse_items": [{"id": "a", "prompt": "p\x1b[2J", "expected": "e", "before": "0.9 good", "after": "0.1 \x1b[31mbad\r"}],
        },
    )
    message = session.failure_message(record)
    assert "\x1b" not in message and "\\x1b[31mbad" in message and "\r" not in message


# ---- the plugin: options, life cycle, xdist -----------------------------------------------------

SUITE = {
    "test_a.py": """
import math
from pytest_ftmodel import record_metric
from pytest_ftmodel.metrics.perplexity import PerplexityResult, TextScore
from pytest_ftmodel.report.records import describe_result

def _record(name, scale=1.0, n=12):
    scores = tuple(TextScore(nll=(2.0 + i % 5) * 10 * scale / 3, n_tokens=10, n_bytes=40, n_words=8) for i in range(n))
    nll = sum(s.nll for s in scores)
    ppl = math.exp(nll / (10 * n))
    result = PerplexityResult(ppl, nll, 10 * n, n, scores, 1.0, ppl, (ppl, ppl), tuple(f"text {i}" for i in range(n)))
    record_metric(name, ppl, threshold=1e6, op="<=", n=n, unit="texts", passed=True, result=result)

def test_one():
    _record("perplexity")

def test_two():
    _record("perplexity")
    _record("perplexity", scale=1.01)
""",
}

EXTRA = """
def test_three():
    _record("perplexity")
"""


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_life_cycle_record_compare_update(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(**SUITE)
    plain = pytester.runpytest_subprocess("-p", "no:randomly")
    plain.assert_outcomes(passed=2)
    assert "baseline" not in plain.stdout.str() and not (pytester.path / "ftmodel-baseline.json").exists()

    first = pytester.runpytest_subprocess("-p", "no:randomly", "--ftmodel-update-baseline")
    first.assert_outcomes(passed=2)
    first.stdout.fnmatch_lines(["baseline *ftmodel-baseline.json: 3 entries recorded (3 new, 0 changed, 0 unchanged), 0 kept, 0 removed (unused)."])
    path = pytester.path / "ftmodel-baseline.json"
    entries = json.loads(path.read_text())["entries"]
    assert sorted(entries) == ["test_a.py::test_one::perplexity", "test_a.py::test_two::perplexity", "test_a.py::test_two::perplexity#2"]
    entry = entries["test_a.py::test_one::perplexity"]
    assert entry["compare_kind"] == "perplexity" and len(entry["items"]) == 12 and entry["package_version"]
    digest = _digest(path)

    again = pytester.runpytest_subprocess("-p", "no:randomly", "--ftmodel-update-baseline")
    again.stdout.fnmatch_lines(["*3 entries recorded (0 new, 0 changed, 3 unchanged)*"])
    assert _digest(path) == digest  # the same results give the same bytes

    compared = pytester.runpytest_subprocess("-p", "no:randomly")
    compared.assert_outcomes(passed=2)
    compared.stdout.fnmatch_lines(["baseline *ftmodel-baseline.json*: 3 within noise"])

    # a new test: "new" in the summary; then gone: unused, removed only by an update that ran its file
    pytester.makepyfile(test_a=SUITE["test_a.py"] + EXTRA)
    new = pytester.runpytest_subprocess("-p", "no:randomly")
    new.stdout.fnmatch_lines(["*: 3 within noise, 1 new", "*new figures, no entry yet*test_a.py::test_three::perplexity"])
    pytester.runpytest_subprocess("-p", "no:randomly", "--ftmodel-update-baseline")
    pytester.makepyfile(test_a=SUITE["test_a.py"])
    unused = pytester.runpytest_subprocess("-p", "no:randomly")
    unused.stdout.fnmatch_lines([
        "*1 unused entry (no test produced them): test_a.py::test_three::perplexity (no such test in test_a.py now); --ftmodel-update-baseline removes them"
    ])
    # an update of some of the file's tests cannot tell a test gone from one not selected: kept
    partial = pytester.runpytest_subprocess("-p", "no:randomly", "--ftmodel-update-baseline", "-k", "test_one")
    partial.stdout.fnmatch_lines(["*1 entry recorded*, 3 kept, 0 removed (unused)."])
    whole = pytester.runpytest_subprocess("-p", "no:randomly", "--ftmodel-update-baseline")
    whole.stdout.fnmatch_lines(["*3 entries recorded*, 0 kept, 1 removed (unused).", "*removed: test_a.py::test_three::perplexity (no such test in test_a.py now)"])
    assert _digest(path) == digest


def test_the_options_are_documented_and_checked(pytester: pytest.Pytester) -> None:
    help_ = pytester.runpytest_subprocess("--help")
    help_.stdout.fnmatch_lines(["*--ftmodel-baseline=PATH*", "*--ftmodel-update-baseline*", "*--ftmodel-margin=NAME=VALUE*", "*--ftmodel-baseline-mode=MODE*"])
    bad = pytester.runpytest_subprocess("--ftmodel-margin", "accuracy")
    bad.stderr.fnmatch_lines(["*bad margin 'accuracy': write NAME=VALUE*"])
    (pytester.path / "ftmodel-baseline.json").write_text("[]")
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    broken = pytester.runpytest_subprocess()
    broken.stderr.fnmatch_lines(["*ftmodel-baseline.json is not a pytest-ftmodel baseline*"])


def test_xdist_writes_one_file_with_the_bytes_of_a_serial_run(pytester: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    pytester.makepyfile(**SUITE)
    serial = pytester.runpytest_subprocess("-p", "no:randomly", "--ftmodel-update-baseline", "--ftmodel-baseline=serial.json")
    serial.assert_outcomes(passed=2)
    parallel = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "xdist", "-n", "2", "--ftmodel-update-baseline", "--ftmodel-baseline=parallel.json")
    parallel.assert_outcomes(passed=2)
    assert (pytester.path / "serial.json").read_bytes() == (pytester.path / "parallel.json").read_bytes()
    assert not list(pytester.path.glob(".*.tmp"))
    compared = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "xdist", "-n", "2", "--ftmodel-baseline=serial.json")
    compared.stdout.fnmatch_lines(["baseline serial.json*: 3 within noise"])


def test_the_file_names_tests_relative_to_its_own_folder(tmp_path: Path) -> None:
    """pytest's rootdir moves with the paths on the command line when there is no ini file; the keys don't."""
    root = tmp_path
    assert store.relative_test("suite/test_a.py::test_x[1]", root, root / "suite") == "test_a.py::test_x[1]"
    assert store.relative_test("suite/test_a.py::test_x", root / "", root) == "suite/test_a.py::test_x"
    assert store.relative_test("test_a.py::t", root / "proj", root) == "proj/test_a.py::t"


def test_each_kind_gives_the_per_item_values_it_is_compared_on() -> None:
    from pytest_ftmodel.human import ABResult, HumanScores
    from pytest_ftmodel.metrics.code import CodeResult, ProblemResult, Sample, pass_at_k
    from pytest_ftmodel.metrics.text import ClassificationItem, ClassificationResult

    scored = tuple(
        {"id": f"q{i}", "prompt": f"p{i}", "expected": "e", "generated": "g", "scores": {"accuracy": 1 + i, "fluency": 5 - i}, "notes": ""}
        for i in range(4)
    )
    human = HumanScores(Path("sheet.json"), "fp", 4, 4, {"accuracy": 2.5, "fluency": 3.5}, scored[:3], items=scored)
    items, details = describe_result(human, "human fluency")
    assert details["compare_kind"] == "ordinal" and [i["value"] for i in items] == [5, 4, 3, 2]  # every item, this criterion

    ab = ABResult(3, 1, 1, 0.75, (0.2, 0.99), 0.6, ("ana",), None, None, items=(
        {"id": "a", "prompt": "p1", "expected": None, "model": 2, "base": 0, "tie": 0},
        {"id": "b", "prompt": "p2", "expected": None, "model": 1, "base": 1, "tie": 0},
        {"id": "c", "prompt": "p3", "expected": None, "model": 0, "base": 0, "tie": 1},  # only tied: not an item
    ))
    items, details = describe_result(ab, "A/B win rate")
    assert details["compare_kind"] == "continuous" and [i["value"] for i in items] == [1.0, 0.5]

    problems = tuple(ProblemResult(f"t{i}", tuple(Sample("x", "passed" if j < i else "failed", "") for j in range(4)), f"prompt {i}", "test") for i in range(5))
    code = CodeResult({2: 0.5}, {2: (0.1, 0.9)}, problems, 4, "process")
    items, details = describe_result(code, "pass@2")
    assert details["compare_kind"] == "continuous" and [i["compare"] for i in items] == [pass_at_k(4, i, 2) for i in range(5)]
    one = CodeResult({1: 0.4}, {1: (0.1, 0.9)}, tuple(ProblemResult(p.task_id, p.samples[:1], p.prompt) for p in problems), 1, "process")
    assert describe_result(one, "pass@1")[1]["compare_kind"] == "binary"

    cls = ClassificationResult(0.5, 0.4, {}, (), (), 0, (0.1, 0.9), (ClassificationItem(0, "p", "positive", "positive", "positive"), ClassificationItem(1, "q", "negative", "x", None)))
    items, details = describe_result(cls, "accuracy")
    assert details["compare_kind"] == "binary" and [i["value"] for i in items] == [1.0, 0.0]
    assert "compare_kind" not in describe_result(cls, "macro_f1")[1]  # not a mean over items: recorded, not compared
