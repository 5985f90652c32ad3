"""An automated reviewer on an evaluation sheet: filled beside people's reviews without touching
them, calibrated against people (Krippendorff's alpha, ordinal), and gated only once calibrated."""

from __future__ import annotations

import copy
import json
import math

import pytest

from pytest_ftmodel import assert_human_scores, assert_judge_scores, human_scores, judge_scores, judge_sheet, load_model, rubric_judge
from pytest_ftmodel.cache import GenerationCache
from pytest_ftmodel.errors import DataError
from pytest_ftmodel.human import EVAL_FORMAT, krippendorff_alpha_ordinal, set_review
from pytest_ftmodel.judges.calibration import calibrate

CRITERIA = ["accuracy", "fluency"]


def _level_of(prompt: str) -> int:
    answer = prompt.split("Answer:\n", 1)[1].split("\n\n", 1)[0]
    return int(answer.split("score-", 1)[1][0])


def scripted_judge_server(serve):
    """A served judge whose score for an answer "score-L ..." puts 0.9 on L and 0.1 on 3 (weighted
    0.9 L + 0.3, which rounds to L); its reasoning is full of other digits."""

    def respond(body):
        if body.get("logprobs") is None:
            return {"choices": [{"index": 0, "text": " 5 stars? No: 1 point off, 2 facts right.", "logprobs": None}]}
        level = _level_of(body["prompt"])
        top = {f" {level}": math.log(0.9)} if level == 3 else {f" {level}": math.log(0.9), " 3": math.log(0.1)}
        return {"choices": [{"index": 0, "text": f" {level}", "logprobs": {"top_logprobs": [top]}}]}

    return serve(respond=respond)


def _sheet(tmp_path, levels, human=None, name="sheet.json"):
    """A sheet of answers "score-L" with people's reviews: ``human[i]`` maps reviewer -> [accuracy, fluency]."""
    items = []
    for i, level in enumerate(levels):
        reviews = {who: {"scores": dict(zip(CRITERIA, s)), "notes": f"{who} on {i}"} for who, s in ((human or [{}] * len(levels))[i]).items()}
        items.append({"id": f"i{i}", "prompt": f"question {i}", "expected": None, "generated": f"score-{level} answer {i}", "reviews": reviews})
    path = tmp_path / name
    path.write_text(json.dumps({"format": EVAL_FORMAT, "version": 2, "model": {"path": "m", "fingerprint": "fp"}, "criteria": CRITERIA, "items": items}))
    return path


LEVELS = [1, 2, 3, 4, 5] * 5


def _weighted(level: int) -> float:
    return 3.0 if level == 3 else 0.9 * level + 0.1 * 3


@pytest.fixture
def judge(serve, tmp_path):
    stub = scripted_judge_server(serve)
    j = rubric_judge(load_model(stub.url), criteria=CRITERIA, cache=GenerationCache(tmp_path / "cache"), name="robo")
    j.stub = stub  # type: ignore[attr-defined]
    return j


def test_the_judge_fills_the_sheet_beside_people_and_touches_nothing_they_wrote(tmp_path, judge) -> None:
    human = [{"ana": [lv, 4]} if i < 22 else {} for i, lv in enumerate(LEVELS)]
    path = _sheet(tmp_path, LEVELS, human)
    people_before = [it["reviews"] for it in json.loads(path.read_text())["items"]]
    means_before = human_scores(path).means
    assert judge_sheet(path, judge) == 25
    after = json.loads(path.read_text())["items"]
    for before, it in zip(people_before, after):
        assert {k: v for k, v in it["reviews"].items() if k != "robo"} == before
        review = it["reviews"]["robo"]
        assert review["kind"] == "auto" and review["scores"]["accuracy"] == int(it["generated"][6])
        assert review["weighted"]["accuracy"] == pytest.approx(_weighted(int(it["generated"][6])))
    # people's figures are people's alone
    assert human_scores(path).means == means_before and human_scores(path).reviewers == ("ana",)
    assert_human_scores(path, min_scored=20, min_mean={"fluency": 4})
    # judged again: nothing to do, no judge call; a person may not review under the judge's name
    before = len(judge.stub.behaviour.requests)
    assert judge_sheet(path, judge) == 0 and len(judge.stub.behaviour.requests) == before
    with pytest.raises(DataError, match="automated judge"):
        set_review(path, "i0", "robo", scores={"accuracy": 1})
    with pytest.raises(DataError, match="as a person"):
        judge_sheet(path, judge, name="ana")


def test_a_calibrated_judge_gates_on_its_means(tmp_path, judge) -> None:
    # people agree with the judge but for a step of one on three items
    step = {2: 1, 7: -1, 13: 1}
    human = [{"ana": [lv + step.get(i, 0), 4]} if i < 22 else {} for i, lv in enumerate(LEVELS)]
    path = _sheet(tmp_path, LEVELS, human)
    judge_sheet(path, judge)
    result = assert_judge_scores(path, judge=judge, min_mean={"accuracy": 3.0})
    cal = result.calibration["accuracy"]
    assert cal.overlap == 22 and cal.alpha > 0.8 and cal.interval[0] < cal.alpha <= cal.interval[1]
    judge_levels = [lv for lv in LEVELS[:22]]
    assert cal.alpha == pytest.approx(krippendorff_alpha_ordinal([judge_levels, [h["ana"][0] for h in human[:22]]]))
    assert result.means["accuracy"] == pytest.approx(sum(map(_weighted, LEVELS)) / 25)
    with pytest.raises(AssertionError, match=r"judge scores below the bar: accuracy 3\.\d\d < 3\.50 \(95% CI \[\d\.\d\d, \d\.\d\d\], 25 items\)"):
        assert_judge_scores(path, judge="robo", min_mean={"accuracy": 3.5})


def test_an_uncalibrated_judge_is_refused_with_both_numbers(tmp_path, judge) -> None:
    human = [{"ana": [6 - lv, 4]} if i < 22 else {} for i, lv in enumerate(LEVELS)]  # people see it the other way round
    path = _sheet(tmp_path, LEVELS, human)
    judge_sheet(path, judge)
    with pytest.raises(AssertionError, match=r"not shown to agree with people .*needs >= 0\.6 on at least 20 items both scored\): accuracy: alpha -\d\.\d\d, 95% CI \[-?\d\.\d\d, -?\d\.\d\d\] on 22 items; people: ana\. Score more items by hand"):
        assert_judge_scores(path, judge=judge, min_mean={"accuracy": 1.0})
    # agreeing people, but too few of them
    path = _sheet(tmp_path, LEVELS, [{"ana": [lv, 4]} if i < 10 else {} for i, lv in enumerate(LEVELS)], name="few.json")
    judge_sheet(path, judge)
    with pytest.raises(AssertionError, match=r"accuracy: alpha 1\.00.* on 10 items"):
        assert_judge_scores(path, judge=judge, min_mean={"accuracy": 1.0})
    assert_judge_scores(path, judge=judge, min_mean={"accuracy": 1.0}, min_overlap=10)


def test_items_new_or_changed_since_judging_fail_the_gate(tmp_path, judge) -> None:
    path = _sheet(tmp_path, LEVELS, [{"ana": [lv, 4]} for lv in LEVELS])
    with pytest.raises(DataError, match="no review by the judge 'robo'.*run judge_sheet"):
        assert_judge_scores(path, judge=judge, min_mean={"accuracy": 1.0})
    judge_sheet(path, judge)
    sheet = json.loads(path.read_text())
    sheet["items"][4]["generated"] = "score-1 edited by hand"
    sheet["items"].append(copy.deepcopy(sheet["items"][0]) | {"id": "new", "reviews": {}})
    path.write_text(json.dumps(sheet))
    with pytest.raises(AssertionError, match=r"2 of 26 items are not scored by the judge 'robo' \(new, or changed since it judged\): i4, new; run judge_sheet"):
        assert_judge_scores(path, judge=judge, min_mean={"accuracy": 1.0})
    assert judge_sheet(path, judge) == 2
    assert json.loads(path.read_text())["items"][4]["reviews"]["robo"]["scores"]["accuracy"] == 1
    assert_judge_scores(path, judge=judge, min_mean={"accuracy": 1.0})
    # a judge under other settings (another rubric) has not judged this sheet
    other = rubric_judge(judge.model, criteria=CRITERIA, rubric={"fluency": "1: bad\n5: good"}, name="robo", cache=None)
    with pytest.raises(AssertionError, match="26 of 26 items are not scored"):
        assert_judge_scores(path, judge=other, min_mean={"accuracy": 1.0})


def test_ordinal_alpha_on_krippendorffs_published_example() -> None:
    """Krippendorff (2011), "Computing Krippendorff's alpha-reliability", the 4 coders x 12 units
    example with missing values: ordinal alpha = 0.815."""
    n = None
    data = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, n, n, n],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, n, 3],
        [n, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, n],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, n],
    ]
    assert krippendorff_alpha_ordinal(data) == pytest.approx(0.815, abs=5e-4)


def test_calibration_rounds_halves_up_and_its_interval_is_seeded() -> None:
    a = calibrate("accuracy", [1, 3, 3, 4, 5, 2, 4], [1.4, 2.5, 2.6, 4.49, 4.5, 1.5, 3.5])
    assert a.alpha == pytest.approx(1.0) and a.overlap == 7
    b = calibrate("accuracy", [1, 2, 3, 4, 5, 1, 5, 3], [1, 3, 3, 5, 4, 2, 5, 2])
    assert b.interval == calibrate("accuracy", [1, 2, 3, 4, 5, 1, 5, 3], [1, 3, 3, 5, 4, 2, 5, 2]).interval
    assert b.interval[0] < b.alpha < b.interval[1]


def test_a_person_saving_while_the_judge_works_loses_nothing(tmp_path, judge) -> None:
    path = _sheet(tmp_path, LEVELS[:5])
    score = judge.score

    def meanwhile(items):
        set_review(path, "i2", "ana", scores={"accuracy": 5, "fluency": 4}, notes="saved while judging")
        return score(items)

    judge.score = meanwhile
    assert judge_sheet(path, judge) == 5
    item = json.loads(path.read_text())["items"][2]
    assert item["reviews"]["ana"] == {"scores": {"accuracy": 5, "fluency": 4}, "notes": "saved while judging"}
    assert item["reviews"]["robo"]["kind"] == "auto"


def test_names_and_ids_from_the_sheet_are_shown_escaped(tmp_path, judge) -> None:
    path = _sheet(tmp_path, LEVELS, [{"\x1b[31mana\u202e": [6 - lv, 4]} for lv in LEVELS])
    judge_sheet(path, judge)
    with pytest.raises(AssertionError) as exc:
        assert_judge_scores(path, judge=judge, min_mean={"accuracy": 1.0})
    assert "\x1b" not in str(exc.value) and "\u202e" not in str(exc.value) and "people: \\x1b[31mana" in str(exc.value)


def test_a_gate_on_no_criterion_is_an_error_not_a_pass(tmp_path, judge) -> None:
    path = _sheet(tmp_path, LEVELS, [{"ana": [lv, 4]} for lv in LEVELS])
    judge_sheet(path, judge)
    with pytest.raises(ValueError, match="min_mean") as exc:
        assert_judge_scores(path, judge=judge, min_mean={})
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize(
    "field, bad",
    [("weighted", {"accuracy": 9}), ("weighted", {"accuracy": "five"}), ("weighted", {"accuracy": float("nan")}),
     ("weighted", "oops"), ("repeats", {"accuracy": [1, None, "z"]}), ("repeats", "nope"), ("repeats", {"accuracy": 7})],
)
def test_a_judge_review_edited_by_hand_with_bad_values_is_a_one_line_error(tmp_path, judge, field, bad) -> None:
    path = _sheet(tmp_path, LEVELS, [{"ana": [lv, 4]} for lv in LEVELS])
    judge_sheet(path, judge)
    data = json.loads(path.read_text())
    data["items"][3]["reviews"]["robo"][field] = bad
    path.write_text(json.dumps(data))
    before = path.read_bytes()
    with pytest.raises(DataError, match=r"item 'i3' \(judge 'robo'\).*judge_sheet") as exc:
        assert_judge_scores(path, judge=judge, min_mean={"accuracy": 1.0})
    assert "\n" not in str(exc.value) and path.read_bytes() == before


def test_a_request_or_reference_edited_after_judging_is_judged_again(tmp_path, judge) -> None:
    # the judge read the request and the reference as well as the answer: its score of an item whose
    # reference (or request) was edited since is stale, as for an edited answer
    path = _sheet(tmp_path, LEVELS, [{"ana": [lv, 4]} for lv in LEVELS])
    judge_sheet(path, judge)
    sheet = json.loads(path.read_text())
    sheet["items"][1]["expected"] = "a reference written later"
    sheet["items"][2]["prompt"] = "question 2, reworded"
    path.write_text(json.dumps(sheet))
    with pytest.raises(AssertionError, match=r"2 of 25 items are not scored by the judge 'robo' .*: i1, i2; run judge_sheet"):
        assert_judge_scores(path, judge=judge, min_mean={"accuracy": 1.0})
    assert judge_sheet(path, judge) == 2
    assert_judge_scores(path, judge=judge, min_mean={"accuracy": 1.0})


@pytest.mark.parametrize("bad", [5, None, ["robo"]])
def test_a_judge_that_is_neither_a_name_nor_a_rubric_judge_is_a_one_line_error(tmp_path, bad) -> None:
    path = _sheet(tmp_path, LEVELS)
    for call in (lambda: judge_scores(path, judge=bad), lambda: judge_sheet(path, bad)):
        with pytest.raises(DataError, match="rubric_judge") as exc:
            call()
        assert "\n" not in str(exc.value)


@pytest.mark.parametrize("bar", [0.8, 0, 6, 80])
def test_a_bar_off_the_1_to_5_scale_is_a_one_line_error_before_the_sheet_is_read(tmp_path, bar) -> None:
    # 0.8 (a share meant) or 0 would pass every judge, 6 would fail every one
    from pytest_ftmodel.errors import BarError

    missing = tmp_path / "not-built-yet.json"
    for gate in (assert_judge_scores, assert_human_scores):
        kw = {"judge": "robo"} if gate is assert_judge_scores else {}
        with pytest.raises(BarError, match=r"min_mean\['accuracy'\]=.* it must be between 1 and 5") as exc:
            gate(missing, min_mean={"accuracy": bar}, **kw)
        assert "\n" not in str(exc.value)


def test_the_terminal_review_refuses_the_judges_name_and_shows_none_of_its_scores(tmp_path, judge) -> None:
    import subprocess
    import sys

    path = _sheet(tmp_path, LEVELS[:3])
    judge_sheet(path, judge)
    run = subprocess.run(
        [sys.executable, "-m", "pytest_ftmodel", "review", str(path), "--judge", "robo"],
        input="3\n3\n\n", capture_output=True, text=True, timeout=60,
    )
    out = run.stdout + run.stderr
    assert run.returncode != 0 and "automated judge" in out and "review under your own name" in out
    assert "your scores so far" not in out and "nothing left" not in out


def test_items_the_judge_gave_no_score_fail_the_gate_rather_than_leaving_the_mean(serve, tmp_path) -> None:
    # a judge that puts no probability on 1-5 for the worst answers would otherwise raise the mean by
    # leaving them out: those items are named, as unjudged ones are, never silently dropped
    def respond(body):
        if body.get("logprobs") is None:
            return {"choices": [{"index": 0, "text": "Hm.", "logprobs": None}]}
        level = _level_of(body["prompt"])
        top = {" The": -0.01} if level == 1 else {f" {level}": -0.01}
        return {"choices": [{"index": 0, "text": " x", "logprobs": {"top_logprobs": [top]}}]}

    stub = serve(respond=respond)
    judge = rubric_judge(load_model(stub.url), criteria=CRITERIA, cache=None, name="robo")
    path = _sheet(tmp_path, LEVELS, [{"ana": [lv, 4]} for lv in LEVELS])
    judge_sheet(path, judge)
    assert judge_scores(path, judge=judge).n_scored["accuracy"] == 20
    with pytest.raises(AssertionError, match=r"5 of 25 items got no score from the judge 'robo' on accuracy.*: i0, i5, i10, i15, i20") as exc:
        assert_judge_scores(path, judge=judge, min_mean={"accuracy": 1.0}, min_human_agreement=-1)
    assert "\n" not in str(exc.value)
