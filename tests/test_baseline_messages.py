"""What the baseline gate says: a broken entry, notes that decide a verdict, the advice for
"inconclusive", the count of worse items, mismatch lines, the compared quantity of loss gap and
perplexity improvement, margins that name no metric, and figures recorded below their bar."""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path

import pytest

from pytest_ftmodel import report
from pytest_ftmodel.baseline import store
from pytest_ftmodel.baseline.compare import compare
from pytest_ftmodel.baseline.gate import BaselineSession
from pytest_ftmodel.metrics.perplexity import PerplexityResult, TextScore
from pytest_ftmodel.report.records import describe_result

TEST = "t.py::test_x"


def _record(name: str, kind: str, values: list, *, ids: list[str] | None = None, passed: bool = True, op: str = ">=",
            details: dict | None = None, settings: dict | None = None, texts: list[dict] | None = None) -> report.MetricRecord:
    """A record of per-item ``values`` (``(nll, tokens)`` pairs for perplexity) compared as ``kind``."""
    ids = ids or [f"{i:016x}" for i in range(len(values))]
    items = []
    for i, (item_id, v) in enumerate(zip(ids, values)):
        item = {"index": i, "id": item_id, **(texts[i] if texts else {})}
        if kind == "perplexity":
            item.update(value=v[0] / v[1], nll=v[0], n_tokens=v[1])
        else:
            item["value"] = v
        items.append(item)
    value = float("nan") if kind == "perplexity" else sum(values) / len(values)
    return report.MetricRecord(
        name, value, 0.0, op, len(values), "items", passed, model="finetuned", test=TEST, items=tuple(items),
        details={"kind": "per-item score", "compare_kind": kind, **(details or {})}, settings=settings or {},
    )


def _gate(tmp_path: Path, baseline: report.MetricRecord, **options) -> BaselineSession:
    path = tmp_path / "ftmodel-baseline.json"
    store.write(path, {f"{TEST}::{baseline.name}": store.entry_of(baseline, version="test")})
    return BaselineSession(path, update=False, **options)


PPL = [(20.0 + i % 5, 10) for i in range(24)]


# ---- (4) a broken baseline entry ----------------------------------------------------------------


@pytest.mark.parametrize("bad", [[None, 6], "x", [1], None, [-1.0, 10], [3.0, 0]])
def test_invalid_baseline_values_are_a_mismatch_naming_the_entry(tmp_path: Path, bad) -> None:
    gate = _gate(tmp_path, _record("loss gap", "perplexity", PPL, op="<="))
    for item in gate.entries[f"{TEST}::loss gap"]["items"].values():
        item["value"] = bad
    record = gate(_record("loss gap", "perplexity", PPL, op="<="))
    b = record.baseline
    assert b["verdict"] == "mismatch" and not record.passed
    reason = b["reason"]
    assert f"entry '{TEST}::loss gap'" in reason and "24 of its 24 items" in reason
    assert "restore the file from version control, or re-record" in reason and reason.endswith("--ftmodel-update-baseline")
    assert "\n" not in gate.failure_message(record)


def test_one_invalid_baseline_value_is_enough(tmp_path: Path) -> None:
    gate = _gate(tmp_path, _record("accuracy", "binary", [1.0, 0.0] * 6))
    items = gate.entries[f"{TEST}::accuracy"]["items"]
    items[sorted(items)[3]]["value"] = "1"
    items[sorted(items)[4]]["value"] = 0.5  # not 0/1: no accuracy item the plugin writes looks like that
    record = gate(_record("accuracy", "binary", [1.0, 0.0] * 6))
    assert record.baseline["verdict"] == "mismatch" and "2 of its 12 items" in record.baseline["reason"]
    assert "per-item 0/1 value" in record.baseline["reason"]


def test_candidate_nan_stays_as_designed_and_its_note_reaches_the_terminal(tmp_path: Path) -> None:
    values = [0.5 + 0.01 * i for i in range(12)]
    gate = _gate(tmp_path, _record("rouge1", "continuous", values))
    some = gate(_record("rouge1", "continuous", [float("nan")] * 3 + values[3:]))
    assert some.baseline["verdict"] == "within noise" and some.baseline["n_paired"] == 9
    gate = _gate(tmp_path, _record("rouge1", "continuous", values))
    none = gate(_record("rouge1", "continuous", [float("nan")] * 12))
    assert none.baseline["verdict"] == "inconclusive" and none.passed  # superiority mode: as designed
    text = "\n".join(report.summary_lines([some, none], baseline_path="b.json"))
    assert "note: test_x rouge1: 3 paired items left out: value missing or not a valid number" in " ".join(text.split())
    assert "note: test_x rouge1: 12 paired items left out" in " ".join(text.split())
    assert "no paired items: nothing to compare" in " ".join(text.split())


# ---- (10) the advice for "inconclusive" ---------------------------------------------------------


def test_inconclusive_says_why_and_what_resolves_it_not_update_the_baseline(tmp_path: Path) -> None:
    values = [1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0]
    gate = _gate(tmp_path, _record("accuracy", "binary", values), mode="noninferiority")
    record = gate(_record("accuracy", "binary", values))
    assert record.baseline["verdict"] == "inconclusive" and not record.passed
    message = gate.failure_message(record)
    flat = " ".join(message.split())
    assert "identical on every paired item" in flat
    assert "the 95% interval of the change" in flat and "is wider than the margin 0.01 at 10 paired items" in flat
    assert "more items than the 10 now" in flat and "margin= on the helper or --ftmodel-margin accuracy=" in flat
    assert "--ftmodel-baseline-mode=superiority" in flat
    assert "update the baseline" not in flat and "--ftmodel-update-baseline" not in flat


def test_a_regression_still_says_how_to_update(tmp_path: Path) -> None:
    gate = _gate(tmp_path, _record("accuracy", "binary", [1.0] * 40))
    record = gate(_record("accuracy", "binary", [0.0] * 20 + [1.0] * 20))
    assert record.baseline["verdict"] == "regressed"
    assert "if the change is intended, update the baseline" in gate.failure_message(record)


# ---- (12) counts and names ----------------------------------------------------------------------


def test_the_count_of_worse_items_is_the_true_count(tmp_path: Path) -> None:
    base = [0.9 - 0.01 * i for i in range(24)]
    result = compare("continuous", dict(enumerate(base)), {i: v - 0.3 for i, v in enumerate(base)}, higher_is_better=True, margin=0.01)
    assert result.n_worse == 24 and len(result.worse) == 20
    gate = _gate(tmp_path, _record("rouge1", "continuous", base))
    record = gate(_record("rouge1", "continuous", [v - 0.3 for v in base]))
    b = record.baseline
    assert b["n_worse"] == 24 and len(b["worse"]) == 20
    message = gate.failure_message(record)
    assert "items that got worse (3 of 24 shown, worst first)" in message and "20+" not in message


def test_a_mismatch_line_names_the_metric_once(tmp_path: Path) -> None:
    gate = _gate(tmp_path, _record("rouge1", "continuous", [0.5] * 12, settings={"max_new_tokens": 48}))
    record = gate(_record("rouge1", "continuous", [0.5] * 12, settings={"max_new_tokens": 64}))
    reason = record.baseline["reason"]
    assert reason.startswith("settings differ from the baseline's (max_new_tokens=48 in the baseline, 64 now)")
    assert gate.failure_message(record).startswith("baseline mismatch for rouge1: settings differ")
    text = " ".join(report.summary_lines([record]))
    assert "mismatch: test_x rouge1: settings differ" in text and "rouge1: rouge1" not in text
    assert "rouge1: rouge1" not in report.versus.explain(record)


def test_items_formatted_differently_are_not_called_changed_data(tmp_path: Path) -> None:
    labels = ["positive", "negative", "neutral"]
    said = [{"prompt": f"Classify the sentiment: review {i}", "text": labels[i % 3]} for i in range(24)]
    gate = _gate(tmp_path, _record("loss gap", "perplexity", PPL, op="<=", texts=said))
    # another tokenizer family joins prompt and answer with a newline: same words, other ids
    other = [{"prompt": s["prompt"], "text": "\n" + s["text"]} for s in said]
    record = gate(_record("loss gap", "perplexity", PPL, op="<=", texts=other, ids=[f"{i:016x}" for i in range(100, 124)]))
    reason = record.baseline["reason"]
    assert record.baseline["verdict"] == "mismatch" and "the data changed" not in reason
    assert "only 0 of the baseline's 24 items pair by content" in reason
    assert "24 have the same words" in reason and "formatted differently" in reason and "tokenizer" in reason
    gate = _gate(tmp_path, _record("loss gap", "perplexity", PPL, op="<=", texts=said))
    changed = [{"prompt": f"another review {i}", "text": "x"} for i in range(24)]
    record = gate(_record("loss gap", "perplexity", PPL, op="<=", texts=changed, ids=[f"{i:016x}" for i in range(100, 124)]))
    assert "the data changed" in record.baseline["reason"]


# ---- (9) the compared quantity -------------------------------------------------------------------


def _ppl(values: list[float], tokens: int = 10) -> PerplexityResult:
    scores = tuple(TextScore(nll=v * tokens, n_tokens=tokens, n_bytes=40, n_words=8) for v in values)
    nll = sum(s.nll for s in scores)
    ppl = math.exp(nll / (tokens * len(values)))
    return PerplexityResult(ppl, nll, tokens * len(values), len(values), scores, 1.0, ppl, (ppl * 0.9, ppl * 1.1), tuple(f"text {i}" for i in range(len(values))))


def test_loss_gap_and_improvement_name_the_quantity_they_compare() -> None:
    from pytest_ftmodel.metrics.overfit import OverfitResult
    from pytest_ftmodel.metrics.perplexity import ImprovementResult

    val, train, base = _ppl([3.3 + 0.01 * i for i in range(8)]), _ppl([3.0] * 8), _ppl([4.0] * 8)
    gap = OverfitResult(3.0, 3.3, 0.3, 1.1, "some", "", train, val)
    improvement = ImprovementResult(0.5, val, base, (0.4, 0.6))
    assert describe_result(gap, "loss gap")[1]["compare_quantity"] == "validation perplexity"
    assert describe_result(improvement, "perplexity improvement")[1]["compare_quantity"] == "the fine-tuned model's perplexity"
    assert "compare_quantity" not in describe_result(val, "perplexity")[1]  # the metric itself: nothing to say


def test_the_gate_labels_a_compared_quantity_and_the_message_names_it(tmp_path: Path) -> None:
    details = {"compare_quantity": "validation perplexity"}
    gate = _gate(tmp_path, _record("loss gap", "perplexity", PPL, op="<=", details=details))
    record = gate(_record("loss gap", "perplexity", [(n * 2, t) for n, t in PPL], op="<=", details=details))
    b = record.baseline
    assert b["quantity"] == "validation perplexity" and b["verdict"] == "regressed"
    assert report.versus.baseline_value_text(b) == f"ppl {report.fmt(b['value'])}"
    assert gate.failure_message(record).startswith(
        f"loss gap regressed against the baseline: validation perplexity {report.fmt(b['value'])} in the baseline"
    )


# ---- (6) margins that name no metric -----------------------------------------------------------


def test_margins_on_one_line_split_at_commas_or_spaces() -> None:
    from pytest_ftmodel.baseline.gate import parse_margins

    assert parse_margins("loss gap=0.5, accuracy=0.1") == [("loss gap", 0.5), ("accuracy", 0.1)]
    assert parse_margins("loss gap=0.5 accuracy=0.1") == [("loss gap", 0.5), ("accuracy", 0.1)]
    assert parse_margins(" pass@1 = 0.05 ") == [("pass@1", 0.05)]
    with pytest.raises(ValueError, match="bad margin"):
        parse_margins("loss gap=0.5, accuracy")


def _margins_gate(tmp_path: Path, margins: dict[str, float]) -> BaselineSession:
    path = tmp_path / "b.json"
    store.write(path, {})
    return BaselineSession(path, update=False, margins=margins)


def test_a_margin_for_no_known_metric_fails_the_run_with_a_suggestion(tmp_path: Path) -> None:
    gate = _margins_gate(tmp_path, {"Loss Gap": 0.5, "rouge1": 0.1, "foo": 0.1})
    records = [_record("loss gap", "perplexity", PPL, op="<=")]
    with pytest.warns(UserWarning) as caught:
        failing = gate.end_of_session(records)
    assert failing
    lines = gate.outcome
    said = " ".join(str(w.message) for w in caught)
    assert any("'Loss Gap'" in line and "did you mean 'loss gap'?" in line for line in lines)
    assert any("'foo'" in line and "no metric has that name" in line for line in lines)
    assert any("'rouge1'" in line and "not compared in this run" in line for line in lines)
    assert "compared in this run: loss gap" in " ".join(lines)
    assert "'foo'" in said and "'rouge1'" in said


def test_a_margin_for_a_known_metric_not_in_this_run_only_warns(tmp_path: Path) -> None:
    gate = _margins_gate(tmp_path, {"pass@1": 0.05, "human fluency": 0.2, "my metric": 0.1})
    records = [_record("loss gap", "perplexity", PPL, op="<="), _record("my metric", "continuous", [0.5] * 4)]
    with pytest.warns(UserWarning) as caught:
        assert not gate.end_of_session(records)
    assert sorted(str(w.message).split("'")[1] for w in caught) == ["human fluency", "pass@1"]
    assert not any("margin 'my metric'" in line for line in gate.outcome)  # a metric of the user's own, compared here
    assert any("margin 'human fluency'" in line for line in gate.outcome)


def test_margins_that_all_match_say_nothing(tmp_path: Path) -> None:
    gate = _margins_gate(tmp_path, {"loss gap": 0.5})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not gate.end_of_session([_record("loss gap", "perplexity", PPL, op="<=")])
    assert gate.outcome == []


SUITE = """
import math
from pytest_ftmodel import record_metric
from pytest_ftmodel.metrics.perplexity import PerplexityResult, TextScore

def test_ppl():
    scores = tuple(TextScore(nll=(2.0 + i % 5) * 10 / 3, n_tokens=10, n_bytes=40, n_words=8) for i in range(12))
    nll = sum(s.nll for s in scores)
    ppl = math.exp(nll / 120)
    result = PerplexityResult(ppl, nll, 120, 12, scores, 1.0, ppl, (ppl, ppl), tuple(f"text {i}" for i in range(12)))
    record_metric("perplexity", ppl, threshold=BAR, op="<=", n=12, unit="texts", passed=ppl <= BAR, result=result)
"""


def test_margins_in_a_session_ini_on_one_line_and_unknown_names(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_a=SUITE.replace("BAR", "1e6"))
    pytester.runpytest_subprocess("-p", "no:randomly", "--ftmodel-update-baseline").assert_outcomes(passed=1)
    pytester.makeini("[pytest]\nftmodel_margins = perplexity=0.5, accuracy=0.1\n")
    ok = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:cacheprovider", "--ftmodel-json=r.json")
    ok.assert_outcomes(passed=1)
    import json

    assert json.loads((pytester.path / "r.json").read_text())["records"][0]["baseline"]["margin"] == 0.5
    ok.stdout.fnmatch_lines(["*margin 'accuracy'*not compared in this run*"])
    assert ok.ret == 0
    bad = pytester.runpytest_subprocess("-p", "no:randomly", "--ftmodel-margin", "perplexty=0.1")
    bad.stdout.fnmatch_lines(["*margin 'perplexty'*no metric has that name*did you mean 'perplexity'?*"])
    assert bad.ret == pytest.ExitCode.USAGE_ERROR  # as for other usage errors
    assert re.search(r"warnings summary", bad.stdout.str())


# ---- figures of failing tests, not recorded --------------------------------------------------------


def test_an_update_says_which_figures_it_left_out_because_their_tests_failed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_a=SUITE.replace("BAR", "1.0") + "    assert ppl <= 1.0\n")
    run = pytester.runpytest_subprocess("-p", "no:randomly", "--ftmodel-update-baseline")
    run.assert_outcomes(failed=1)
    run.stdout.fnmatch_lines(
        ["baseline: 1 figure not recorded, their tests did not pass (their entries stay as they were): test_a.py::test_ppl::perplexity (*, bar <= 1)",
         "baseline *ftmodel-baseline.json: nothing recorded (no test that passed judged a figure), so no file was written."]
    )
    assert not (pytester.path / "ftmodel-baseline.json").exists()


# ---- (9) every report labels the quantity compared ------------------------------------------------


def _gap_record() -> report.MetricRecord:
    from tests.test_report_baseline import _compared, _rec

    b = dict(_compared("regressed", 1.704, 2.15, 0.261, 0.188, 0.331, 0.0005, 0.02, relative=True, worse=2), quantity="validation perplexity")
    return _rec("test_not_overfit", "loss gap", 0.3524, 0.5, "<=", b, unit="texts")


def test_every_report_labels_the_perplexity_a_loss_gap_is_compared_on() -> None:
    from pytest_ftmodel.report.html import render_html
    from pytest_ftmodel.report.markdown import render_markdown

    record = _gap_record()
    compact = report.summary_lines([record])
    row = next(line for line in compact if line.startswith("test_not_overfit") and "regressed" in line)
    assert row.split()[1:5] == ["loss", "gap", "ppl", "1.704"]
    assert "ppl 1.704" in next(line for line in report.summary_lines([record], verbose=True) if "test_not_overfit" in line)
    assert dict(report.junit_properties(record))["ftmodel.loss gap.baseline"] == "ppl 1.704"
    assert "| ppl 1.704 | +26.1% [+18.8%, +33.1%] |" in render_markdown([record])
    page = render_html([record], {"baseline": {"path": "b.json"}})
    assert '<td class="num">ppl 1.704</td><td class="num">ppl 2.15</td>' in page
    assert "loss gap regressed against the baseline: ppl 1.704 -> ppl 2.15" in report.versus.explain(record)


# ---- README ---------------------------------------------------------------------------------------


def _readme_block(start: str) -> list[str]:
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    block = text.split(start, 1)[1].split("```", 1)[0]
    first = text.split(start, 1)[0].rsplit("\n", 1)[1]  # the indent of the block's first line
    return [start.strip()] + [line[len(first):] for line in block.splitlines()[1:]]


def test_the_readme_terminal_example_is_what_the_summary_prints(tmp_path: Path) -> None:
    """The README's baseline part of the terminal summary, mismatch line included, is printed by the
    code from records like the demo's: the mismatch reason comes from the gate itself."""
    from tests.test_report_baseline import _compared, _rec

    from dataclasses import replace

    test = "test_code.py::test_passk"
    baseline = replace(_record("pass@1", "binary", [1.0, 0.0] * 4, settings={"max_new_tokens": 48}), test=test)
    store.write(tmp_path / "b.json", {f"{test}::pass@1": store.entry_of(baseline, version="test")})
    gate = BaselineSession(tmp_path / "b.json", update=False, command_options=["--model=./checkpoint-new"])
    mismatch = gate(replace(_record("pass@1", "binary", [1.0, 0.0] * 4, settings={"max_new_tokens": 64}), test=test)).baseline
    assert mismatch is not None and mismatch["verdict"] == "mismatch"
    # the baseline recorded on the demo's fine-tuned model, this run on its regressed twin
    fingerprint = {"baseline_model": "bpe/finetuned", "baseline_fingerprint": "1cf688b9bbbf4279", "model": "bpe/regressed (56198aa2)"}
    ppl = {**fingerprint, "quantity": "the fine-tuned model's perplexity"}
    records = [
        _rec("test_summaries", "rouge1", 0.5312, 0.45, ">=", {**_compared("regressed", 0.6167, 0.5312, -0.0855, -0.142, -0.031, 0.002, 0.01, worse=4), **fingerprint}),
        _rec("test_sentiment", "accuracy", 0.9167, 0.8, ">=", {**_compared("within noise", 0.9167, 0.9167, 0.0, -0.0833, 0.0833, 0.5, 0.01), **fingerprint}),
        _rec("test_passk", "pass@1", 0.625, 0.6, ">=", mismatch, unit="problems"),
        _rec("test_val_perplexity", "perplexity", 28.1, 40, "<=", {**_compared("within noise", 26.99, 28.1, 0.0411, -0.008, 0.093, 0.06, 0.02, relative=True), **fingerprint}, unit="texts"),
        _rec("test_improves_on_base", "perplexity improvement", 0.7612, 0.5, ">=", {**_compared("improved", 26.99, 25.21, -0.066, -0.101, -0.032, 1.0, 0.02, relative=True), **ppl}, unit="texts"),
        _rec("test_not_overfit", "loss gap", 0.2859, 0.5, "<=", {**_compared("within noise", 1.704, 1.72, 0.0094, -0.01, 0.03, 0.2, 0.02, relative=True), **fingerprint, "quantity": "validation perplexity"}, unit="texts"),
        _rec("test_wins_ab_against_base", "A/B win rate", 0.9, 0.6, ">=", {"verdict": "new"}, unit="decided"),
    ]
    lines = report.summary_lines(records, baseline_path="ftmodel-baseline.json")
    shown = lines[lines.index("7 metrics recorded, 5 passed, 2 failed."):]
    assert _readme_block("7 metrics recorded, 5 passed, 2 failed.") == shown + [""]
