"""Human evaluation and A/B sheets: nothing a person wrote is ever lost; the statistics are right."""

from __future__ import annotations

import json
import random
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
    human_scores,
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

    import warnings

    with warnings.catch_warnings():  # the judge prompt fits the demo's 512-token context: nothing is cut
        warnings.simplefilter("error", TruncationWarning)
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


# ---- several reviewers, judges calibrated on people ------------------------------------------------


def _eval_sheet(tmp_path, reviews_per_item, criteria=("accuracy", "relevance", "fluency", "format"), name="s.json"):
    items = [
        {"id": f"v{i}", "prompt": f"p{i}", "expected": "e", "generated": "g",
         "reviews": {who: {"scores": dict(zip(criteria, scores)), "notes": ""} for who, scores in reviews.items()}}
        for i, reviews in enumerate(reviews_per_item)
    ]
    path = tmp_path / name
    path.write_text(json.dumps({"format": "pytest-ftmodel/evaluation-sheet", "version": 2, "model": {"fingerprint": "f"},
                                "criteria": list(criteria), "items": items}))
    return path


def test_a_version_1_sheet_reads_as_its_reviewer_and_is_upgraded_without_loss(tmp_path) -> None:
    from pytest_ftmodel.human import set_review

    items = [{"id": "a", "prompt": "p", "expected": None, "generated": "g", "scores": {"accuracy": 4, "fluency": 3}, "notes": "ok", "reviewer": "ana"},
             {"id": "b", "prompt": "p", "expected": None, "generated": "g", "scores": {"accuracy": 2, "fluency": 5}, "notes": "", "reviewer": None},
             {"id": "c", "prompt": "p", "expected": None, "generated": "g", "scores": {"accuracy": None, "fluency": None}, "notes": "", "reviewer": None}]
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"format": "pytest-ftmodel/evaluation-sheet", "version": 1, "model": {"fingerprint": "f"},
                                "criteria": ["accuracy", "fluency"], "items": items}))
    before = path.read_text()
    result = assert_human_scores(path, min_scored=2, min_mean={"accuracy": 3})
    assert result.means == {"accuracy": 3.0, "fluency": 4.0} and result.reviewers == ("ana", "unnamed")
    assert path.read_text() == before  # reading never rewrites
    set_review(path, "c", "bo", scores={"accuracy": 5})
    after = _load(path)["items"]
    assert after[0]["reviews"] == {"ana": {"scores": {"accuracy": 4, "fluency": 3}, "notes": "ok"}}
    assert after[1]["reviews"] == {"unnamed": {"scores": {"accuracy": 2, "fluency": 5}, "notes": ""}}
    assert after[2]["reviews"] == {"bo": {"scores": {"accuracy": 5, "fluency": None}, "notes": ""}}
    assert "scores" not in after[0] and _load(path)["version"] == 2


def test_several_reviewers_are_kept_averaged_per_item_and_their_agreement_reported(tmp_path) -> None:
    import krippendorff
    import numpy as np

    rng = random.Random(5)
    truth = [rng.randint(1, 5) for _ in range(30)]
    jitter = lambda v: min(5, max(1, v + rng.choice([-1, 0, 0, 1])))  # noqa: E731
    reviews = []
    for i, t in enumerate(truth):
        r = {"ana": [t, t, 5, 5]}
        if i % 2 == 0:
            r["bo"] = [jitter(t), t, 5, 4]
        if i % 3 == 0:
            r["cy"] = [jitter(t), t, 4, 5]
        reviews.append(r)
    path = _eval_sheet(tmp_path, reviews)
    result = assert_human_scores(path, min_scored=30, min_mean={"accuracy": 1})
    assert result.reviewers == ("ana", "bo", "cy") and result.n_scored == 30 and result.n_multi == 20
    item_means = [sum(r[0] for r in rv.values()) / len(rv) for rv in reviews]
    assert result.means["accuracy"] == pytest.approx(sum(item_means) / 30)  # each item weighs the same
    matrix = np.array([[rv[w][0] if w in rv else np.nan for rv in reviews] for w in ("ana", "bo", "cy")], dtype=float)
    assert result.agreement["accuracy"] == pytest.approx(krippendorff.alpha(reliability_data=matrix, level_of_measurement="ordinal"))
    assert result.agreement["relevance"] == pytest.approx(1.0)  # everyone gave the same score
    assert 0.5 < result.agreement["accuracy"] < 1.0  # close but not equal scores
    assert result.agreement_kind == "Krippendorff's alpha (ordinal)"
    # off by one is a smaller disagreement than off by four, on an ordinal scale
    near = human_scores(_eval_sheet(tmp_path, [{"a": [v] * 4, "b": [min(5, v + 1)] * 4} for v in (1, 2, 3, 4, 1, 2, 3, 4)], name="n.json"))
    far = human_scores(_eval_sheet(tmp_path, [{"a": [v] * 4, "b": [1 if v > 2 else 5] * 4} for v in (1, 2, 3, 4, 1, 2, 3, 4)], name="f.json"))
    assert near.agreement["accuracy"] > far.agreement["accuracy"]
    with pytest.raises(AssertionError, match=r"agreement between 3 reviewers on 20 items reviewed by several \(Krippendorff's alpha \(ordinal\)\): accuracy 0\.\d\d"):
        assert_human_scores(path, min_scored=30, min_mean={"accuracy": 5})


def _ab_with(tmp_path, people: dict[str, list[str]], auto: dict[str, list[str]], n: int):
    """An A/B sheet where A is always the fine-tuned model; choices 'A', 'B', 'tie' or None (not judged)."""
    items = [{"id": f"q{i}", "prompt": "p", "expected": None, "A": "a", "B": "b", "judgements": []} for i in range(n)]
    for kind, who in (("human", people), ("auto", auto)):
        for judge, choices in who.items():
            for item, choice in zip(items, choices):
                if choice is not None:
                    item["judgements"].append({"judge": judge, "kind": kind, "choice": choice, "reason": ""})
    path = tmp_path / "ab.json"
    path.write_text(json.dumps({"format": "pytest-ftmodel/ab-sheet", "version": 2, "items": items}))
    (tmp_path / "ab.key.json").write_text(json.dumps({"fingerprints": {}, "a_is": {f"q{i}": "model" for i in range(n)}}))
    return path


def test_an_automated_judge_gates_only_when_it_agrees_with_people(tmp_path) -> None:
    from sklearn.metrics import cohen_kappa_score

    rng = random.Random(3)
    n = 30
    ana = [rng.choice("AAB") for _ in range(n)]
    bo = [c if i % 5 else ("tie" if c == "A" else "A") for i, c in enumerate(ana)]
    cy = [c if i % 7 else "B" for i, c in enumerate(ana)]
    majority = []
    for votes in zip(ana, bo, cy):
        top = max(set(votes), key=votes.count)
        majority.append(top if votes.count(top) > 1 else None)  # 1-1-1: no majority, left out
    good = [m or "A" for m in majority]
    good[0] = "B" if good[0] != "B" else "A"  # one disagreement
    path = _ab_with(tmp_path, {"ana": ana, "bo": bo, "cy": cy}, {"good-judge": good, "coin": [rng.choice("AB") for _ in range(n)]}, n)
    result = ab_result(path)
    assert result.humans == ("ana", "bo", "cy") and [c.judge for c in result.calibration] == ["coin", "good-judge"]
    ids = [i for i in range(n) if majority[i] is not None]
    to_side = {"A": "model", "B": "base", "tie": "tie"}
    want = cohen_kappa_score([to_side[good[i]] for i in ids], [to_side[majority[i]] for i in ids], labels=["model", "base", "tie"])
    assert result.calibration_of("good-judge").kappa == pytest.approx(want) and result.calibration_of("good-judge").overlap == len(ids)
    gated = assert_ab_win_rate(path, judge="good-judge", at_least=0.5)
    assert gated.decided + gated.ties == n and gated.model_wins == sum(c == "A" for c in good)  # that judge's verdicts only
    with pytest.raises(AssertionError, match=r"'coin' is not shown to agree with people: Cohen's kappa -?0\.\d\d on \d+ items judged by both \(needs kappa >= 0.6 on at least 20\)"):
        assert_ab_win_rate(path, judge="coin")
    few = _ab_with(tmp_path, {"ana": ana[:10] + [None] * 20}, {"good-judge": good}, n)
    with pytest.raises(AssertionError, match=r"Cohen's kappa .* on 10 items .*at least 20"):
        assert_ab_win_rate(few, judge="good-judge")
    nobody = _ab_with(tmp_path, {}, {"good-judge": good}, n)
    with pytest.raises(AssertionError, match="no overlap"):
        assert_ab_win_rate(nobody, judge="good-judge")
    with pytest.raises(DataError, match="no judgement by 'other'"):
        assert_ab_win_rate(path, judge="other")


def test_human_majority_needs_more_votes_than_any_other() -> None:
    from pytest_ftmodel.human import human_majority

    assert human_majority(["model"]) == "model" and human_majority(["model", "base", "model"]) == "model"
    assert human_majority(["model", "base"]) is None and human_majority([]) is None


# ---- the terminal commands: where am I, go back, resume, nothing left ---------------------------


def test_review_shows_position_resumes_goes_back_and_keeps_other_reviewers(tmp_path) -> None:
    path = _eval_sheet(tmp_path, [{"ana": [4, 4, 4, 4], "bo": [1, 1, 1, 1]}, {"bo": [2, 2, 2, 2]}, {}])
    sheet = _load(path)
    sheet["items"][1]["reviews"]["ana"] = {"scores": {"accuracy": 3, "relevance": None, "fluency": None, "format": None}, "notes": ""}
    sheet["items"][2]["generated"] = "\x1b[2J\x1b[31mgotcha"
    path.write_text(json.dumps(sheet))
    # item 2: keep accuracy 3 (enter), 4 4 4, no note; item 3: b goes back to item 2: accuracy 5, keep the rest, a note
    # then item 3: 2 2 2 2, a note
    out = _review(path, "\n4\n4\n4\n\nb\n5\n\n\n\nfixed\n2\n2\n2\n2\nok\n", "--judge", "ana")
    assert out.returncode == 0, out.stderr
    assert "ana: 1 of 3 items scored, 2 left" in out.stdout
    assert "item 2 of 3 (2 left)" in out.stdout and "your scores so far: accuracy 3, relevance -, fluency -, format -" in out.stdout
    assert "item 3 of 3 (1 left)" in out.stdout and "your scores so far: accuracy 3, relevance 4, fluency 4, format 4" in out.stdout
    assert "\\x1b[2J\\x1b[31mgotcha" in out.stdout and "\x1b" not in out.stdout  # shown, not obeyed
    assert "0 await review by ana. Nothing left." in out.stdout
    items = _load(path)["items"]
    assert items[1]["reviews"]["ana"] == {"scores": {"accuracy": 5, "relevance": 4, "fluency": 4, "format": 4}, "notes": "fixed"}
    assert items[2]["reviews"] == {"ana": {"scores": {"accuracy": 2, "relevance": 2, "fluency": 2, "format": 2}, "notes": "ok"}}
    assert [it["reviews"].get("bo") for it in items[:2]] == [{"scores": dict.fromkeys(sheet["criteria"], 1), "notes": ""}, {"scores": dict.fromkeys(sheet["criteria"], 2), "notes": ""}]
    before = path.read_text()
    again = _review(path, "", "--judge", "ana")
    assert again.returncode == 0 and again.stdout.strip() == f"nothing left: all 3 items of {path} are scored by ana."
    assert path.read_text() == before
    assert "item 1 of 3 (3 left)" in _review(path, "q\n", "--judge", "cy").stdout  # another reviewer starts afresh


def test_ab_shows_position_goes_back_and_changes_a_choice(tmp_path) -> None:
    path = _sheet_with(tmp_path, {"bo": ["B", "B", "B"]}, ["model", "base", "model"])
    out = subprocess.run(
        [sys.executable, "-m", "pytest_ftmodel", "ab", str(path), "--judge", "ana"],
        input="a\nfirst\nb\n\np\nt\n\n\nt\nlast\n", capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "item 1 of 3 (3 left)" in out.stdout and "item 2 of 3 (2 left)" in out.stdout
    assert "your choice so far: B" in out.stdout and "Nothing left." in out.stdout
    mine = [[(j["choice"], j["reason"]) for j in it["judgements"] if j["judge"] == "ana"] for it in _load(path)["items"]]
    assert mine == [[("A", "first")], [("tie", "")], [("tie", "last")]]
    assert all([j["choice"] for j in it["judgements"] if j["judge"] == "bo"] == ["B"] for it in _load(path)["items"])
    done = subprocess.run([sys.executable, "-m", "pytest_ftmodel", "ab", str(path), "--judge", "ana"], capture_output=True, text=True, timeout=60)
    assert done.stdout.startswith("nothing left: all 3 comparisons")


@pytest.mark.parametrize(("argv0", "prog"), [("/usr/local/bin/pytest-ftmodel", "pytest-ftmodel"), (None, "python -m pytest_ftmodel")])
def test_help_is_plain_text_under_the_name_it_was_called_by(argv0, prog) -> None:
    if argv0 is None:
        cmd = [sys.executable, "-m", "pytest_ftmodel", "--help"]
    else:
        cmd = [sys.executable, "-c", f"import sys; sys.argv[0] = {argv0!r}; from pytest_ftmodel.__main__ import main; sys.exit(main())", "--help"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith(f"usage: {prog} ")
    assert "``" not in out.stdout and "review SHEET" in out.stdout
    sub = subprocess.run(cmd[:-1] + ["review", "--help"], capture_output=True, text=True, timeout=60)
    assert f"usage: {prog} review" in sub.stdout and "--web" in sub.stdout and "--no-browser" in sub.stdout


def test_concurrent_changes_by_several_reviewers_all_survive(tmp_path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from pytest_ftmodel.human import set_judgement, set_review

    path = _eval_sheet(tmp_path, [{} for _ in range(8)])
    work = [(who, f"v{i}", c, 1 + (i + k) % 5) for k, who in enumerate(["ana", "bo", "cy", "di"]) for i in range(8)
            for c in ("accuracy", "relevance", "fluency", "format")]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda w: set_review(path, w[1], w[0], scores={w[2]: w[3]}), work))
    items = {it["id"]: it for it in _load(path)["items"]}
    assert all(items[item]["reviews"][who]["scores"][c] == v for who, item, c, v in work)
    ab = _ab_with(tmp_path, {}, {}, 8)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda w: set_judgement(ab, w[1].replace("v", "q"), w[0], choice="A" if w[3] > 2 else "B"), work[::4]))
    assert all(len(it["judgements"]) == 4 for it in _load(ab)["items"])


# ---- what a session saved is counted however it ends --------------------------------------------


def _answering(monkeypatch, answers: list[str], end: BaseException) -> None:
    """The terminal prompts get ``answers``, then ``end`` (a Ctrl-C raises KeyboardInterrupt from input())."""
    given = iter(answers)

    def answer(prompt: str = "") -> str:
        try:
            return next(given)
        except StopIteration:
            raise end from None

    monkeypatch.setattr("builtins.input", answer)


@pytest.mark.parametrize("end", [KeyboardInterrupt(), EOFError()], ids=["ctrl-c", "end-of-input"])
def test_a_stopped_review_counts_the_items_it_saved(tmp_path, monkeypatch, capsys, end) -> None:
    from pytest_ftmodel.__main__ import main

    path = _eval_sheet(tmp_path, [{}, {}, {}, {}])
    # two whole items (four scores and a note each), then one score of the third, then Ctrl-C
    _answering(monkeypatch, ["4", "4", "4", "4", "ok", "5", "5", "5", "5", "", "3"], end)
    assert main(["review", str(path), "--judge", "ana"]) == 0
    out = capsys.readouterr().out
    saved = [it for it in _load(path)["items"] if "ana" in it["reviews"]]
    assert len(saved) == 3 and _mine(saved[2]) == {"accuracy": 3, "relevance": None, "fluency": None, "format": None}
    assert "every answer given so far is saved" in out
    assert "3 item(s) reviewed in this session (1 in part); 2 await review by ana." in out


def test_a_stopped_ab_session_counts_the_comparisons_it_saved(tmp_path, monkeypatch, capsys) -> None:
    from pytest_ftmodel.__main__ import main

    path = _sheet_with(tmp_path, {}, ["model", "base", "model"])
    _answering(monkeypatch, ["A", "clearer", "t"], KeyboardInterrupt())  # Ctrl-C at the second reason prompt
    assert main(["ab", str(path), "--judge", "ana"]) == 0
    out = capsys.readouterr().out
    assert [len(it["judgements"]) for it in _load(path)["items"]] == [1, 1, 0]
    assert "2 comparison(s) judged in this session; 1 await ana." in out
