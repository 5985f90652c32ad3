"""A judge that disagrees with itself: repeats (seeded, sampled) give each item's spread and the
judge's self-agreement; a gate whose repeats' verdicts disagree is inconclusive, naming the items
on both sides of the bar; length and position bias are reported. The simulation of the rule is
bench/judge_repeats.py."""

from __future__ import annotations

import json
import re

import pytest

from pytest_ftmodel import assert_judge_scores, judge_scores, judge_sheet, load_model, rubric_judge
from pytest_ftmodel.generation import _row_seed
from pytest_ftmodel.human import EVAL_FORMAT

BASES = [2, 3, 4] * 8


def repeats_server(serve, offsets):
    """A served judge: repeat ``s`` of an answer "score-B ..." reasons to the verdict B + offsets[s]
    (the repeat is found from the seed the client sends: seeds are per prompt and sample index), and
    the score read after the cue is that verdict."""

    def respond(body):
        if body.get("logprobs") is None:
            base = int(body["prompt"].split("Answer:\nscore-", 1)[1][0])
            s = next(s for s in range(len(offsets)) if _row_seed(0, body["prompt"], s) == body.get("seed"))
            return {"choices": [{"index": 0, "text": f" verdict {base + offsets[s]}.", "logprobs": None}]}
        level = re.findall(r"verdict (\d)\.", body["prompt"])[-1]
        return {"choices": [{"index": 0, "text": f" {level}", "logprobs": {"top_logprobs": [{f" {level}": 0.0}]}}]}

    return serve(respond=respond)


def _sheet(tmp_path):
    items = [
        {"id": f"i{i}", "prompt": f"question {i}", "expected": None, "generated": f"score-{b} " + "words " * (3 * b),
         "reviews": {"ana": {"scores": {"accuracy": b}, "notes": ""}} if i < 21 else {}}
        for i, b in enumerate(BASES)
    ]
    path = tmp_path / "sheet.json"
    path.write_text(json.dumps({"format": EVAL_FORMAT, "version": 2, "model": {"path": "m", "fingerprint": "fp"}, "criteria": ["accuracy"], "items": items}))
    return path


def test_repeats_that_split_around_the_bar_make_the_gate_inconclusive(serve, tmp_path) -> None:
    stub = repeats_server(serve, [1, -1, 0])
    judge = rubric_judge(load_model(stub.url), criteria=["accuracy"], repeats=3, cache=None, name="robo")
    path = _sheet(tmp_path)
    judge_sheet(path, judge)
    result = judge_scores(path, judge=judge)
    assert result.repeats == 3 and result.means["accuracy"] == pytest.approx(3.0)
    assert [it["repeats"]["accuracy"] for it in result.items[:3]] == [[3.0, 1.0, 2.0], [4.0, 2.0, 3.0], [5.0, 3.0, 4.0]]
    assert result.spread["accuracy"] == pytest.approx(2.0)
    assert result.self_agreement["accuracy"] < 0.5  # one repeat's 3 is another's 1
    assert result.calibration["accuracy"].alpha == pytest.approx(1.0)  # the mean over repeats agrees with people
    with pytest.raises(AssertionError, match=r"inconclusive: the judge 'robo' disagrees with itself around the bar: accuracy: 67% of 3 repeats agree with the verdict on their mean \(needs 80%; repeat means 4\.00, 2\.00, 3\.00\); items on both sides of 3\.0: i0, i1, i3, i4, i6, i7, i9, i10"):
        assert_judge_scores(path, judge=judge, min_mean={"accuracy": 3.0})
    assert_judge_scores(path, judge=judge, min_mean={"accuracy": 3.0}, min_stable=0.6)  # 2 of 3 is enough then


def test_a_judge_that_agrees_with_itself_is_stable_and_its_biases_are_reported(serve, tmp_path) -> None:
    stub = repeats_server(serve, [0, 0, 0])
    judge = rubric_judge(load_model(stub.url), criteria=["accuracy"], repeats=3, cache=None, name="robo")
    path = _sheet(tmp_path)
    judge_sheet(path, judge)
    result = assert_judge_scores(path, judge=judge, min_mean={"accuracy": 3.0})
    assert result.self_agreement["accuracy"] == pytest.approx(1.0) and result.spread["accuracy"] == 0.0
    # longer answers got higher scores here, by construction: the length bias shows it
    assert result.length_bias["accuracy"] == pytest.approx(1.0)
    assert abs(result.position_bias["accuracy"]) < 0.2


def test_repeats_of_a_demo_checkpoint_are_seeded_samples(bpe_model) -> None:
    kw = dict(criteria=["accuracy"], repeats=3, temperature=1.0, max_new_tokens=6, cache=None)
    a = rubric_judge(bpe_model, **kw)("Say hi.", "hi")
    b = rubric_judge(bpe_model, **kw)("Say hi.", "hi")
    assert a == b  # seeded
    assert len(set(a.reasoning["accuracy"])) > 1 and len(a.repeats["accuracy"]) == 3
    assert a.scores["accuracy"] == pytest.approx(sum(a.repeats["accuracy"]) / 3)
    c = rubric_judge(bpe_model, **{**kw, "seed": 1})("Say hi.", "hi")
    assert c.reasoning != a.reasoning


def test_spearman_rho_against_scipy() -> None:
    from hypothesis import given, strategies as st
    from scipy.stats import spearmanr

    from pytest_ftmodel.judges.gate import spearman_rho

    @given(st.lists(st.tuples(st.integers(0, 6), st.floats(1, 5)), min_size=3, max_size=30))
    def check(pairs):
        x, y = [float(a) for a, _ in pairs], [b for _, b in pairs]
        got = spearman_rho(x, y)
        if len(set(x)) < 2 or len(set(y)) < 2:
            assert got is None
        else:
            assert got == pytest.approx(float(spearmanr(x, y).statistic), abs=1e-9)

    check()
