"""Human evaluation and A/B sheets: nothing a person wrote is ever lost; the statistics are right."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from pytest_ftmodel import (
    DataError,
    ab_result,
    ab_sheet,
    assert_ab_win_rate,
    assert_human_scores,
    evaluation_sheet,
    judge_ab,
    load_model,
    model_judge,
    reference_judge,
)
from pytest_ftmodel.demo import demo_data
from pytest_ftmodel.human import fleiss_kappa

VAL = demo_data()["val"]
SUMMARIES = [r for r in VAL if r["category"] == "summarize"]


@pytest.fixture(scope="module")
def base(bpe_pair):
    return load_model(bpe_pair.base, device="cpu")


def _load(path):
    return json.loads(path.read_text())


def _score_all(path, value=5, only=None, reviewer="ana"):
    sheet = _load(path)
    for item in sheet["items"][:only]:
        item["reviews"][reviewer] = {"scores": {k: value for k in sheet["criteria"]}, "notes": ""}
    path.write_text(json.dumps(sheet))


def _mine(item, reviewer="ana"):
    return item["reviews"][reviewer]["scores"]


# ---- evaluation sheets ------------------------------------------------------------------------


def test_sheet_samples_deterministically_and_records_the_fingerprint(bpe_model, tmp_path) -> None:
    path = evaluation_sheet(bpe_model, VAL, tmp_path / "s.json", n=5, seed=3, max_new_tokens=16)
    sheet = _load(path)
    assert sheet["model"]["fingerprint"] == bpe_model.fingerprint and len(sheet["items"]) == 5
    item = sheet["items"][0]
    assert set(item) == {"id", "prompt", "expected", "generated", "reviews"} and item["reviews"] == {}
    assert sheet["criteria"] == ["accuracy", "relevance", "fluency", "format"] and sheet["version"] == 2
    again = evaluation_sheet(bpe_model, VAL, tmp_path / "t.json", n=5, seed=3, max_new_tokens=16)
    assert [i["id"] for i in _load(again)["items"]] == [i["id"] for i in sheet["items"]]
    assert not list(tmp_path.glob(".*.tmp"))


def test_rerunning_keeps_every_existing_score(bpe_model, tmp_path) -> None:
    path = evaluation_sheet(bpe_model, VAL, tmp_path / "s.json", n=5, max_new_tokens=16)
    sheet = _load(path)
    sheet["items"][1]["reviews"]["ana"] = {"scores": {"accuracy": 2, "relevance": None, "fluency": None, "format": None}, "notes": "wrong animal"}
    sheet["items"][1]["reviews"]["bo"] = {"scores": {"accuracy": 4, "relevance": 4, "fluency": 4, "format": 4}, "notes": ""}
    sheet["items"][1]["generated"] = "what the reviewer saw"
    path.write_text(json.dumps(sheet))
    evaluation_sheet(bpe_model, VAL, path, n=10, max_new_tokens=16)
    after = _load(path)
    kept = next(i for i in after["items"] if i["id"] == sheet["items"][1]["id"])
    assert kept == sheet["items"][1]  # untouched, answer included
    assert len(after["items"]) == 10


def test_a_changed_model_sets_the_old_sheet_aside(bpe_model, base, tmp_path) -> None:
    path = evaluation_sheet(bpe_model, VAL, tmp_path / "s.json", n=3, max_new_tokens=16)
    _score_all(path, 4)
    scored = path.read_text()
    evaluation_sheet(base, VAL, path, n=3, max_new_tokens=16)
    aside = tmp_path / f"s.{bpe_model.fingerprint}.json"
    assert aside.read_text() == scored  # kept, byte for byte
    assert _load(path)["model"]["fingerprint"] == base.fingerprint
    assert all(i["reviews"] == {} for i in _load(path)["items"])


def _as_version_1(item, scores):
    del item["reviews"]
    item.update(scores=scores, notes="", reviewer=None)


def _review_of(sheet):
    return sheet["items"][0]["reviews"].setdefault("ana", {"scores": {}, "notes": ""})["scores"]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: _review_of(s).update(accuracy=6), r"item '.*' \(reviewer 'ana'\) scores accuracy = 6; use a whole number 1-5"),
        (lambda s: _review_of(s).update(fluency="good"), r"scores fluency = 'good'"),
        (lambda s: _review_of(s).update(format=3.5), r"scores format = 3.5"),
        (lambda s: (_review_of(s), s["items"][0]["reviews"]["ana"].pop("scores")), "has no scores object"),
        (lambda s: s["items"][0].update(scores={"accuracy": 3}), "has both reviews and a version-1 scores/reviewer field"),
        (lambda s: s["items"][0].update(reviews=[3]), "it must map reviewer names to"),
        # a version-1 item (one reviewer, fields on the item) is checked the same way
        (lambda s: _as_version_1(s["items"][0], {"accuracy": 0}), r"item '[^']*' scores accuracy = 0"),
        (lambda s: _as_version_1(s["items"][0], None), "has no scores object"),
    ],
)
def test_hand_edited_sheets_get_a_clear_error_and_stay_as_they_were(bpe_model, tmp_path, edit, message) -> None:
    path = evaluation_sheet(bpe_model, VAL, tmp_path / "s.json", n=2, max_new_tokens=16)
    sheet = _load(path)
    edit(sheet)
    path.write_text(json.dumps(sheet))
    before = path.read_text()
    with pytest.raises(DataError, match=message):
        evaluation_sheet(bpe_model, VAL, path, n=2, max_new_tokens=16)
    with pytest.raises(DataError, match=message):
        assert_human_scores(path, min_scored=1)
    assert path.read_text() == before


def test_a_truncated_sheet_is_an_error_not_an_overwrite(bpe_model, tmp_path) -> None:
    path = evaluation_sheet(bpe_model, VAL, tmp_path / "s.json", n=2, max_new_tokens=16)
    broken = path.read_text()[:-40]
    path.write_text(broken)
    with pytest.raises(DataError, match=r"not valid JSON \(line \d+, column \d+.*the scores in it are kept"):
        evaluation_sheet(bpe_model, VAL, path, n=2, max_new_tokens=16)
    assert path.read_text() == broken


# ---- the review command -----------------------------------------------------------------------


def _review(path, answers, *extra):
    return subprocess.run(
        [sys.executable, "-m", "pytest_ftmodel", "review", str(path), *extra],
        input=answers, capture_output=True, text=True, timeout=60,
    )


def test_the_review_command_scores_a_sheet_end_to_end(bpe_model, tmp_path) -> None:
    path = evaluation_sheet(bpe_model, VAL, tmp_path / "s.json", n=2, max_new_tokens=16)
    # item 1: an invalid score, then 4 5 3 2 and a note; item 2: 0 (invalid), then 5 5 5 5, no note
    answers = "7\n4\n5\n3\n2\ntoo short\n0\n5\n5\n5\n5\n\n"
    out = _review(path, answers, "--judge", "ana")
    assert out.returncode == 0, out.stderr
    assert "enter a whole number 1-5" in out.stdout and "0 await review" in out.stdout
    items = _load(path)["items"]
    assert items[0]["reviews"] == {"ana": {"scores": {"accuracy": 4, "relevance": 5, "fluency": 3, "format": 2}, "notes": "too short"}}
    assert items[1]["reviews"] == {"ana": {"scores": {"accuracy": 5, "relevance": 5, "fluency": 5, "format": 5}, "notes": ""}}
    assert_human_scores(path, min_mean={"accuracy": 4.5}, min_scored=2)


def test_skip_and_quit_keep_what_was_given(bpe_model, tmp_path) -> None:
    path = evaluation_sheet(bpe_model, VAL, tmp_path / "s.json", n=3, max_new_tokens=16)
    out = _review(path, "s\n3\nq\n", "--judge", "ana")
    assert out.returncode == 0 and "every answer given so far is saved" in out.stdout
    items = _load(path)["items"]
    assert "ana" not in items[0]["reviews"] and _mine(items[1])["accuracy"] == 3


def test_a_review_killed_mid_way_keeps_every_answer(bpe_model, tmp_path) -> None:
    path = evaluation_sheet(bpe_model, VAL, tmp_path / "s.json", n=3, max_new_tokens=16)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest_ftmodel", "review", str(path), "--judge", "ana"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    proc.stdin.write("4\n4\n4\n4\nfine\n2\n")  # one whole item, and one score of the next
    proc.stdin.flush()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        items = _load(path)["items"]
        if "ana" in items[1]["reviews"] and _mine(items[1])["accuracy"] == 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)  # reap it and close the pipes
    items = _load(path)["items"]
    assert items[0]["reviews"]["ana"] == {"scores": {"accuracy": 4, "relevance": 4, "fluency": 4, "format": 4}, "notes": "fine"}
    assert _mine(items[1])["accuracy"] == 2


# ---- the human gate ---------------------------------------------------------------------------


def test_unfinished_review_is_a_skip_with_the_command_never_a_pass(pytester: pytest.Pytester, bpe_pair) -> None:
    pytester.makepyfile(
        """
        from pytest_ftmodel import assert_human_scores, evaluation_sheet
        from pytest_ftmodel.demo import demo_data

        def test_review(ftmodel):
            sheet = evaluation_sheet(ftmodel, demo_data()["val"], "review.json", n=3, max_new_tokens=8)
            assert_human_scores(sheet, min_scored=3)
        """
    )
    result = pytester.runpytest(f"--model={bpe_pair.finetuned}", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*3 items await review (0 of 3 scored, 3 needed): run python -m pytest_ftmodel review review.json*"])
    strict = pytester.runpytest(f"--model={bpe_pair.finetuned}", "--ftmodel-require-human")
    strict.assert_outcomes(failed=1)
    strict.stdout.fnmatch_lines(["*3 items await review*(--ftmodel-require-human)*"])
    pytester.makeini("[pytest]\nftmodel_require_human = true\n")
    pytester.runpytest(f"--model={bpe_pair.finetuned}").assert_outcomes(failed=1)


def test_low_scores_fail_naming_the_criteria_and_the_items(bpe_model, tmp_path, private_record) -> None:
    path = evaluation_sheet(bpe_model, VAL, tmp_path / "s.json", n=4, max_new_tokens=16)
    sheet = _load(path)
    for i, item in enumerate(sheet["items"]):
        item["reviews"]["ana"] = {"scores": {"accuracy": 2 + i % 2, "relevance": 5, "fluency": 5, "format": 1 + i}, "notes": ""}
    path.write_text(json.dumps(sheet))
    with pytest.raises(AssertionError, match=r"human scores below the bar: accuracy 2.50 < 4.00; format 2.50 < 3.00 \(means over 4 scored items of 4\)") as info:
        assert_human_scores(path, min_mean={"accuracy": 4, "relevance": 4, "format": 3}, min_scored=4)
    first_listed = str(info.value).split("lowest-scored items:\n")[1].splitlines()[0]
    assert "accuracy 2, relevance 5, fluency 5, format 1" in first_listed  # the lowest total leads the list
    assert [(r.name, r.passed) for r in private_record.records] == [("human accuracy", False), ("human relevance", True), ("human format", False)]
    with pytest.raises(DataError, match="the model changed"):
        assert_human_scores(path, min_scored=1, model=type(bpe_model)(None, None, bpe_model.path, "cpu", "float32", "0" * 16))


# ---- A/B --------------------------------------------------------------------------------------


def test_ab_sheet_is_blinded_and_shuffled(bpe_model, base, tmp_path) -> None:
    path = ab_sheet(bpe_model, base, SUMMARIES, tmp_path / "ab.json", seed=1, max_new_tokens=16)
    sheet, key = _load(path), _load(tmp_path / "ab.key.json")
    text = json.dumps(sheet)
    assert "a_is" not in text and bpe_model.fingerprint not in text and base.fingerprint not in text
    sides = list(key["a_is"].values())
    assert set(sides) == {"model", "base"}  # shuffled per item
    assert key["fingerprints"] == {"model": bpe_model.fingerprint, "base": base.fingerprint}
    again = ab_sheet(bpe_model, base, SUMMARIES, tmp_path / "ab2.json", seed=1, max_new_tokens=16)
    assert _load(again)["items"] == sheet["items"]


def test_reference_judge_and_win_rate(bpe_model, base, tmp_path, private_record) -> None:
    path = ab_sheet(bpe_model, base, SUMMARIES, tmp_path / "ab.json", max_new_tokens=48)
    assert judge_ab(path, reference_judge(), name="ref") == len(SUMMARIES)
    assert judge_ab(path, reference_judge(), name="ref") == 0  # judged once per judge
    result = assert_ab_win_rate(path, at_least=0.6)
    assert result.model_wins > result.base_wins and result.judges == ("ref",)


def test_both_orders_turn_a_position_biased_judge_into_ties(bpe_model, base, tmp_path) -> None:
    path = ab_sheet(bpe_model, base, SUMMARIES, tmp_path / "ab.json", max_new_tokens=16)
    judge_ab(path, lambda prompt, first, second, expected: "first", name="always-first")
    result = ab_result(path)
    assert (result.model_wins, result.base_wins, result.ties) == (0, 0, len(SUMMARIES))
    assert all("position bias" in j["reason"] for i in _load(path)["items"] for j in i["judgements"])
    with pytest.raises(AssertionError, match="no decided A/B comparison"):
        assert_ab_win_rate(path)


def test_a_model_judge_gives_valid_verdicts(bpe_model, base, tmp_path) -> None:
    path = ab_sheet(bpe_model, base, SUMMARIES[:3], tmp_path / "ab.json", max_new_tokens=16)
    from pytest_ftmodel.generation import TruncationWarning

    with pytest.warns(TruncationWarning):  # the judge prompt outgrows the tiny demo's 128-token context
        judge_ab(path, model_judge(bpe_model), name="demo-judge")
    choices = [j["choice"] for i in _load(path)["items"] for j in i["judgements"]]
    assert len(choices) == 3 and set(choices) <= {"A", "B", "tie"}


def _sheet_with(tmp_path, judgements: dict[str, list[str]], a_is: list[str]):
    """An A/B sheet judged by hand: judgements[judge][i] in A/B/tie."""
    items = [{"id": f"q{i}", "prompt": "p", "expected": None, "A": "a", "B": "b", "judgements": []} for i in range(len(a_is))]
    for judge, choices in judgements.items():
        for item, choice in zip(items, choices):
            item["judgements"].append({"judge": judge, "choice": choice, "reason": ""})
    path = tmp_path / "ab.json"
    path.write_text(json.dumps({"format": "pytest-ftmodel/ab-sheet", "version": 1, "items": items}))
    (tmp_path / "ab.key.json").write_text(json.dumps({"fingerprints": {}, "a_is": {f"q{i}": s for i, s in enumerate(a_is)}}))
    return path


def test_win_rate_clopper_pearson_interval_and_p_value_equal_scipy(tmp_path) -> None:
    from scipy.stats import binomtest

    a_is = ["model", "base"] * 15
    choices = ["A"] * 18 + ["B"] * 7 + ["tie"] * 5  # with a_is: A on even = model, A on odd = base
    path = _sheet_with(tmp_path, {"ana": choices}, a_is)
    result = ab_result(path)
    model_wins = sum((c == "A") == (s == "model") for c, s in zip(choices, a_is) if c != "tie")
    decided = sum(c != "tie" for c in choices)
    assert (result.model_wins, result.decided, result.ties) == (model_wins, decided, 5)
    test = binomtest(model_wins, decided, 0.5)
    assert result.p_value == pytest.approx(test.pvalue)
    ci = test.proportion_ci(confidence_level=0.95, method="exact")
    assert result.interval == pytest.approx((ci.low, ci.high))
    assert result.win_rate == pytest.approx(model_wins / decided)


def test_significance_and_the_usual_printout(tmp_path) -> None:
    path = _sheet_with(tmp_path, {"ana": ["A"] * 7 + ["B"] * 5}, ["model"] * 12)
    result = assert_ab_win_rate(path, at_least=0.5)  # 7 of 12: above the bar...
    with pytest.raises(AssertionError, match=r"not significant at alpha=0.05: base wins 5 / fine-tuned wins 7 / ties 0; win rate 58.3% of 12 decided"):
        assert_ab_win_rate(result, at_least=0.5, significant=True)  # ...but no evidence it is real
    with pytest.raises(AssertionError, match=r"A/B win rate 58.3% is below the bar 70.0%"):
        assert_ab_win_rate(path, at_least=0.7)


def test_agreement_between_judges(tmp_path) -> None:
    from sklearn.metrics import cohen_kappa_score

    a = ["A", "A", "B", "tie", "B", "A", "A", "B"]
    b = ["A", "B", "B", "tie", "B", "A", "tie", "B"]
    path = _sheet_with(tmp_path, {"ana": a, "bo": b}, ["model"] * 8)
    result = ab_result(path)
    to_side = {"A": "model", "B": "base", "tie": "tie"}
    assert result.agreement_kind == "Cohen's kappa"
    assert result.agreement == pytest.approx(cohen_kappa_score([to_side[x] for x in a], [to_side[x] for x in b]))
    c = ["A", "A", "B", "tie", "A", "A", "A", "B"]
    three = ab_result(_sheet_with(tmp_path, {"ana": a, "bo": b, "cy": c}, ["model"] * 8))
    assert three.agreement_kind == "Fleiss' kappa" and -1 <= three.agreement < 1


def test_fleiss_kappa_by_hand() -> None:
    assert fleiss_kappa([[3, 0, 0], [0, 3, 0], [0, 0, 3]]) == pytest.approx(1.0)
    # with two raters Fleiss' kappa is Scott's pi: (p_o - p_e) / (1 - p_e), p_e from pooled marginals
    pairs = [("x", "x"), ("x", "y"), ("y", "y"), ("y", "y"), ("x", "x"), ("y", "x")]
    p_o = sum(a == b for a, b in pairs) / len(pairs)
    pooled = [v for pair in pairs for v in pair]
    p_e = sum((pooled.count(c) / len(pooled)) ** 2 for c in "xy")
    table = [[sum(v == c for v in pair) for c in "xy"] for pair in pairs]
    assert fleiss_kappa(table) == pytest.approx((p_o - p_e) / (1 - p_e))


def test_bad_judgements_and_a_missing_key(tmp_path) -> None:
    path = _sheet_with(tmp_path, {"ana": ["A", "C"]}, ["model", "base"])
    with pytest.raises(DataError, match=r"item 'q1' has judgement .*'C'.*choice of A, B or tie"):
        ab_result(path)
    path = _sheet_with(tmp_path, {"ana": ["A", "B"]}, ["model", "base"])
    (tmp_path / "ab.key.json").unlink()
    with pytest.raises(DataError, match=r"ab.key.json: the A/B key .* is missing or broken"):
        ab_result(path)


def test_the_ab_command_records_the_judge(bpe_model, base, tmp_path) -> None:
    path = ab_sheet(bpe_model, base, SUMMARIES[:2], tmp_path / "ab.json", max_new_tokens=16)
    out = subprocess.run(
        [sys.executable, "-m", "pytest_ftmodel", "ab", str(path), "--judge", "ana"],
        input="x\nA\nclearer\nt\n\n", capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    judgements = [i["judgements"] for i in _load(path)["items"]]
    assert judgements == [[{"judge": "ana", "kind": "human", "choice": "A", "reason": "clearer"}], [{"judge": "ana", "kind": "human", "choice": "tie", "reason": ""}]]
    bad = subprocess.run([sys.executable, "-m", "pytest_ftmodel", "review", str(tmp_path / "none.json")], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("error: no sheet at") and "Traceback" not in bad.stderr


@pytest.mark.parametrize("after_choice", ["q\n", "", "SIGINT"])
def test_an_ab_choice_is_saved_before_the_reason_is_asked(tmp_path, after_choice) -> None:
    path = _sheet_with(tmp_path, {}, ["model", "base"])
    cmd = [sys.executable, "-m", "pytest_ftmodel", "ab", str(path), "--judge", "ana"]
    if after_choice == "SIGINT":  # Ctrl-C at the reason prompt
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        proc.stdin.write("B\n")
        proc.stdin.flush()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not _load(path)["items"][0]["judgements"]:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
        choice = "B"
    else:
        out = subprocess.run(cmd, input="A\n" + after_choice, capture_output=True, text=True, timeout=60).stdout
        choice = "A"
    assert "every answer given so far is saved" in out
    [judgement] = _load(path)["items"][0]["judgements"]
    assert (judgement["judge"], judgement["choice"]) == ("ana", choice)
