"""assert_no_forgetting's decision (paired McNemar mid-p, margin, Holm per category) on canned
per-item results, and assert_mc_accuracy on a demo model."""

from __future__ import annotations

import pytest

from pytest_ftmodel.assertions_mc import assert_no_forgetting, forgetting, holm
from pytest_ftmodel.metrics.mc import MCItem, MCResult


def test_holm_against_a_hand_computation():
    # sorted p: 0.01 (x3 = 0.03), 0.02 (x2 = 0.04), 0.04 (x1 = 0.04, kept monotone)
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([0.01]) == [0.01]


def _result(correct: list[bool], categories: list[str]) -> MCResult:
    items = tuple(
        MCItem(
            index=k, prompt=f"question {k}", choices=("right", "wrong"), gold=0, predicted=0 if ok else 1,
            loglik=(-1.0, -2.0) if ok else (-2.0, -1.0), n_tokens=(1, 1), n_chars=(6, 6), n_bytes=(6, 6),
            id=f"q{k}", category=cat,
        )
        for k, (ok, cat) in enumerate(zip(correct, categories))
    )
    acc = sum(correct) / len(correct)
    return MCResult(accuracy=acc, interval=(0.0, 1.0), n=len(items), normalize="none", accuracies={"none": acc},
                    items=items, rule={"mc_rule": 1, "normalize": "none", "target_delimiter": " ", "chat": False})


@pytest.fixture
def canned(monkeypatch):
    """mc_accuracy answers from a table: model name -> per-item correctness."""
    table: dict[str, MCResult] = {}

    def fake(model, items, **kwargs):
        return table[model]

    monkeypatch.setattr("pytest_ftmodel.metrics.mc.mc_accuracy", fake)
    return table


def test_nothing_lost_passes(canned):
    cats = ["a"] * 50 + ["b"] * 50
    canned["base"] = canned["ft"] = _result([True] * 90 + [False] * 10, cats)
    result = assert_no_forgetting("ft", "base", [], cache=None)
    assert result.delta == 0 and result.p_value == 1.0 and result.n == 100 and not result.lost


def test_a_significant_drop_fails_with_a_diagnosis(canned):
    cats = ["places"] * 30 + ["weather"] * 30 + ["things"] * 40
    base = [True] * 100
    ft = [k >= 12 for k in range(100)]  # 12 lost, all in "places"
    canned["base"], canned["ft"] = _result(base, cats), _result(ft, cats)
    with pytest.raises(AssertionError) as info:
        assert_no_forgetting("ft", "base", [], cache=None)
    text = str(info.value)
    assert "accuracy 0.880 vs the base model's 1.000 on the same 100 items, change -0.120" in text
    assert "McNemar mid-p 0.00012" in text  # 12 of 12 discordant pairs lost: (2**-12) * 1/2 ... + 1/2 P(X = 12)
    assert "12 items lost, 0 gained" in text
    assert "places: 1.000 -> 0.600 (-0.400, n=30" in text.splitlines()[2]
    assert "worst items (the base model right, the fine-tuned model wrong)" in text
    assert "[q0]" in text


def test_midp_value_matches_mcnemar(canned):
    from scipy.stats import binom

    cats = ["x"] * 200
    base = [True] * 150 + [False] * 50
    ft = list(base)
    for k in range(9):
        ft[k] = False  # 9 lost
    for k in range(150, 152):
        ft[k] = True  # 2 gained
    canned["base"], canned["ft"] = _result(base, cats), _result(ft, cats)
    result = forgetting("ft", "base", [], cache=None)
    expected = binom.sf(9, 11, 0.5) + binom.pmf(9, 11, 0.5) / 2
    assert result.p_value == pytest.approx(expected)
    assert result.delta == pytest.approx(-7 / 200)
    assert result.verdict == "regressed"


def test_a_drop_within_the_margin_passes(canned):
    cats = ["x"] * 1000
    base = [True] * 1000
    ft = [k >= 8 for k in range(1000)]  # 0.8 points: significant, within a 1-point margin
    canned["base"], canned["ft"] = _result(base, cats), _result(ft, cats)
    result = assert_no_forgetting("ft", "base", [], margin=0.01, cache=None)
    assert result.p_value < 0.05 and result.verdict == "within noise"
    with pytest.raises(AssertionError):
        assert_no_forgetting("ft", "base", [], margin=0.005, cache=None)


def test_per_category_catches_a_category_the_total_hides(canned):
    # 8 of 20 "rare" items lost, 6 gained elsewhere: overall -0.5 points, "rare" -40 points
    cats = ["rare"] * 20 + ["a"] * 130 + ["b"] * 130 + ["c"] * 120
    base = [True] * 20 + [True] * 300 + [False] * 80
    ft = [k >= 8 for k in range(20)] + [True] * 300 + [k < 6 for k in range(80)]
    canned["base"], canned["ft"] = _result(base, cats), _result(ft, cats)
    assert assert_no_forgetting("ft", "base", [], cache=None).verdict == "within noise"
    with pytest.raises(AssertionError) as info:
        assert_no_forgetting("ft", "base", [], per_category=True, cache=None)
    assert "rare: 1.000 -> 0.600" in str(info.value) and "FAILED (Holm)" in str(info.value)
    result = forgetting("ft", "base", [], per_category=True, cache=None)
    [rare] = [c for c in result.categories if c.category == "rare"]
    others = sorted(c.p_value for c in result.categories)
    # Holm over the overall test and 4 categories: the smallest p is multiplied by 5
    assert rare.p_holm == pytest.approx(min(1.0, 5 * others[0]))


@pytest.mark.parametrize("kwargs,match", [({"margin": 2}, "margin=2"), ({"alpha": 1.5}, "alpha=1.5"), ({"margin": "x"}, "margin")])
def test_bad_settings_get_one_line(canned, kwargs, match):
    from pytest_ftmodel.errors import BarError, BarTypeError

    with pytest.raises((BarError, BarTypeError), match=match):
        assert_no_forgetting("ft", "base", [], **kwargs)


def test_the_record_carries_per_item_correctness(canned, private_record):
    cats = ["x"] * 10
    canned["base"] = canned["ft"] = _result([True] * 9 + [False], cats)
    assert_no_forgetting("ft", "base", [], cache=None)
    [rec] = private_record.records
    assert rec.name == "mc accuracy change" and rec.details["compare_kind"] == "binary"
    assert [i["value"] for i in rec.items] == [1.0] * 9 + [0.0]
    assert rec.settings["normalize"] == "none" and rec.settings["mc_rule"] == 1


# --- on the demo: the shipped general questions ---------------------------------------------------


@pytest.fixture(scope="module")
def questions():
    from pytest_ftmodel import load_jsonl
    from pytest_ftmodel.demo import demo_data_dir

    return load_jsonl(demo_data_dir() / "mc.jsonl")


def test_the_bases_answer_the_general_questions_and_the_fine_tunes_keep_them(demo_pair, questions, no_score_cache):
    from pytest_ftmodel import load_model

    assert len(questions) == 90 and {q["category"] for q in questions} == {"places", "weather", "sentences"}
    base, tuned = (load_model(p, device="cpu") for p in (demo_pair.base, demo_pair.finetuned))
    result = assert_no_forgetting(tuned, base, questions, per_category=True, cache=None)
    assert result.base.accuracy == 1.0 and set(result.base.accuracies.values()) == {1.0}
    assert result.model.accuracy >= 0.98 and result.verdict == "within noise"


@pytest.fixture(scope="module")
def forgetful(byte_pair, tmp_path_factory):
    """The byte demo's base model fine-tuned here, in well under a second of CPU, to forget how its
    sentences go on: its own plain corpus with every "The <adj> <animal> <verb> the <object> in the"
    rewritten to "... the <object> and the <other object> in the", so that after an object comes
    "and", no longer "in" (the "sentences" questions), while places and weather stay as they were.
    Saved with save_pretrained (tokenizer too) and loaded back as a user would: its path and the model.
    (The shipped regressed twins no longer forget: every shipped model answers the 90 questions right.)"""
    import random
    import re

    from pytest_ftmodel import load_model
    from pytest_ftmodel.demo import base_corpus, train_plain

    shape = re.compile(r"^(The \w+ \w+ \w+ the )(\w+) in the ")
    corpus = base_corpus()
    objects = sorted({m.group(2) for m in map(shape.match, corpus) if m})
    rng = random.Random(0)
    texts = [shape.sub(lambda m: f"{m.group(1)}{m.group(2)} and the {rng.choice(objects)} in the ", t) for t in corpus]
    assert sum(" and the " in t for t in texts) > 200  # most of the corpus now says it the other way
    # 30 steps: at 12 it still answers every question right, from 16 on it answers no "sentences" one
    path = train_plain(byte_pair.base, texts, tmp_path_factory.mktemp("forget") / "forgetful", steps=30)
    return path, load_model(path, device="cpu")


def test_a_model_trained_to_forget_how_sentences_go_on_fails_the_gate(byte_pair, forgetful, questions, no_score_cache):
    from pytest_ftmodel import load_model

    base = load_model(byte_pair.base, device="cpu")
    with pytest.raises(AssertionError) as info:
        assert_no_forgetting(forgetful[1], base, questions, margin=0.02, per_category=True, cache=None)
    lines = str(info.value).splitlines()
    # the 30 "sentences" questions, and nothing else, are lost (the base answers all 90 right)
    assert "accuracy 0.667 vs the base model's 1.000 on the same 90 items, change -0.333" in lines[0]
    assert "30 items lost, 0 gained" in lines[0] and "model forgetful, base base" in lines[0]
    assert lines[1].strip() == "categories that lost most:"
    assert "sentences: 1.000 -> 0.000 (-1.000, n=30" in lines[2] and "FAILED (Holm)" in lines[2]
    assert all("+0.000" in line and "FAILED" not in line for line in lines[3:5])
    assert "worst items (the base model right, the fine-tuned model wrong)" in lines[5]
    assert lines[6:] and all("chose 'and', gold 'in'" in line for line in lines[6:])
    # the same model, without the category split, still fails on the total
    result = forgetting(forgetful[1], base, questions, margin=0.02, cache=None)
    assert result.verdict == "regressed" and len(result.lost) == 30


def test_assert_mc_accuracy_on_the_demo(forgetful, questions, no_score_cache):
    from pytest_ftmodel import assert_mc_accuracy

    model = forgetful[1]
    result = assert_mc_accuracy(model, questions, at_least=0.6, normalize="char", cache=None)
    assert result.rule["normalize"] == "char" and result.n == 90 and result.accuracy == pytest.approx(60 / 90)
    with pytest.raises(AssertionError) as info:
        assert_mc_accuracy(model, questions, at_least=0.9, cache=None)
    text = str(info.value)
    assert text.startswith("multiple-choice accuracy 0.667 (60/90, normalize='none') is below the bar 0.900")
    assert "places 30/30, sentences 0/30, weather 30/30" in text
    assert "other normalisations: char 0.667, byte 0.667, token 0.667" in text


@pytest.mark.slow  # three pytest runs in subprocesses: about 16 s
def test_mc_accuracy_is_compared_with_the_release_baseline_item_by_item(pytester, byte_pair, forgetful):
    """Recorded on the fine-tuned byte demo, the per-item accuracy of the model trained to forget regresses
    (McNemar), and the rule is part of the entry: another normalisation is a mismatch, not a regression."""
    from pytest_ftmodel.demo import demo_data_dir

    pytester.makepyfile(
        test_mc=f"""
import os
from pytest_ftmodel import assert_mc_accuracy, load_jsonl

QUESTIONS = load_jsonl({str(demo_data_dir() / "mc.jsonl")!r})

def test_general(ftmodel):
    assert_mc_accuracy(ftmodel, QUESTIONS, at_least=0.5, normalize=os.environ.get("NORM", "none"))
"""
    )
    baseline = pytester.path / "baseline.json"
    common = (f"--ftmodel-baseline={baseline}", "-p", "no:cacheprovider")
    recorded = pytester.runpytest_subprocess(f"--model={byte_pair.finetuned}", "--ftmodel-update-baseline", *common)
    assert recorded.ret == 0, recorded.stdout.str()
    result = pytester.runpytest_subprocess(f"--model={forgetful[0]}", *common)
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    result.stdout.fnmatch_lines(["*mc accuracy regressed against the baseline*McNemar mid-p*", "*items that got worse (3 of 30 shown*"])
    pytester._monkeypatch.setenv("NORM", "char")
    other = pytester.runpytest_subprocess(f"--model={byte_pair.finetuned}", *common)
    other.stdout.fnmatch_lines(["*settings differ from the baseline's*normalize*"])
