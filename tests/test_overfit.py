"""Overfitting: the gap from perplexity(), memorisation and diversity, the training curve."""

from __future__ import annotations

import json
import shutil

import pytest

from pytest_ftmodel import DataError, assert_no_overfit, assert_training_converged, load_model, overfit_report, perplexity, training_curve
from pytest_ftmodel import demo
from pytest_ftmodel.metrics.overfit import band, diversity, memorisation

DATA = demo.demo_data()


@pytest.fixture(scope="module")
def overtrained(bpe_pair, tmp_path_factory):
    """The demo base trained hard on six items: it must look overfit by every measure."""
    path = tmp_path_factory.mktemp("overfit") / "model"
    shutil.copytree(bpe_pair.base, path)
    model = load_model(path, device="cpu")
    few = [r for r in DATA["train"] if r["category"] != "code"][:6]
    seqs = [demo.encode_example(model.tokenizer, r) for r in few]
    demo.train(model.model, seqs, demo.RECIPES["bpe"], 200, model.tokenizer.eos_token_id)
    model.memo.clear()
    return model, few


def test_the_gap_is_the_difference_of_two_perplexity_nlls(byte_model) -> None:
    train, val = [r["output"] for r in DATA["train"][:40]], [r["output"] for r in DATA["val"]]
    result = overfit_report(byte_model, train, val)
    tr, va = perplexity(byte_model, train), perplexity(byte_model, val)
    assert result.gap == pytest.approx(va.nll / va.n_tokens - tr.nll / tr.n_tokens)
    assert result.ratio == pytest.approx((va.nll / va.n_tokens) / (tr.nll / tr.n_tokens))
    assert result.memorised_share is None  # plain texts: no prompts to answer


def test_records_are_scored_as_output_given_prompt(bpe_model) -> None:
    result = overfit_report(bpe_model, DATA["train"][:30], DATA["val"], answers=False)
    pairs = [(r["instruction"], r["output"]) for r in DATA["val"]]
    assert result.val.nll == pytest.approx(perplexity(bpe_model, pairs, chat="auto").nll)


def test_an_overtrained_model_shows_a_large_gap_and_copies(overtrained) -> None:
    model, few = overtrained
    result = overfit_report(model, few, DATA["val"], cache=None, max_new_tokens=48)
    assert result.gap > 1.0 and result.band == "strong overfitting" and "fewer epochs" in result.advice
    assert result.memorised_share >= 0.6
    with pytest.raises(AssertionError, match=r"(?s)validation loss exceeds training loss by \d\.\d+ nats/token .* strong overfitting; .*fewer epochs"):
        assert_no_overfit(model, few, DATA["val"], max_gap=0.5, cache=None)


def test_the_normal_demo_does_not(byte_model, overtrained) -> None:
    normal = overfit_report(byte_model, DATA["train"], DATA["val"], cache=None, max_new_tokens=48)
    over = overfit_report(overtrained[0], overtrained[1], DATA["val"], cache=None, max_new_tokens=48)
    assert normal.band == "fine" and normal.gap < 0.2
    assert normal.memorised_share < 0.3 < over.memorised_share
    assert_no_overfit(byte_model, DATA["train"], DATA["val"], max_gap=0.2, max_memorised=0.3, cache=None)


def test_bands() -> None:
    assert [band(g) for g in (-0.1, 0.1, 0.2, 0.21, 0.5, 0.51, 3)] == ["fine", "fine", "fine", "some overfitting", "some overfitting", "strong overfitting", "strong overfitting"]


def test_memorisation_and_diversity_by_hand() -> None:
    train_out = ["The cat chased the ball.", "alpha beta gamma delta epsilon zeta eta theta iota"]
    answers = ["the CAT chased the ball", "The cat chased the ball.", "x alpha beta gamma delta epsilon zeta eta theta y", "new words"]
    refs = ["The dog ate the hat.", "The cat chased the ball.", "something else", "new words"]
    found = memorisation(answers, ["p"] * 4, refs, train_out, ngram=8)
    assert [(m.index, m.verbatim) for m in found] == [(0, True), (2, False)]  # item 1 is right, not a copy
    d1, d2, dup = diversity(["a b", "a b", "c d"])
    assert (d1, d2, dup) == (pytest.approx(2 / 3), pytest.approx(2 / 3), pytest.approx(1 / 3))


def test_bad_input(bpe_model) -> None:
    with pytest.raises(DataError, match="train is empty"):
        overfit_report(bpe_model, [], DATA["val"])
    with pytest.raises(DataError, match="mixed texts and records"):
        overfit_report(bpe_model, ["text", DATA["train"][0]], DATA["val"])
    with pytest.raises(DataError, match="differ in shape"):
        overfit_report(bpe_model, ["a", "b"], DATA["val"])


# ---- training curve ---------------------------------------------------------------------------


def _state(tmp_path, history):
    path = tmp_path / "trainer_state.json"
    path.write_text(json.dumps({"log_history": history}))
    return path


def _train(steps, start=2.0, slope=-0.01):
    return [{"step": s, "loss": start + slope * s} for s in steps]


def test_a_healthy_curve(tmp_path) -> None:
    history = _train(range(10, 110, 10)) + [{"step": s, "eval_loss": 2.0 - 0.005 * s} for s in (25, 50, 75, 100)]
    curve = training_curve(_state(tmp_path, history[::-1]))  # any order
    assert curve.loss_decreased and not curve.eval_rising and curve.best_step == 100
    assert_training_converged(tmp_path)  # a folder works too


def test_eval_rising_while_training_falls_is_overfitting(tmp_path) -> None:
    evals = [(20, 1.0), (40, 0.8), (60, 0.85), (80, 0.9), (100, 0.95)]
    history = _train(range(5, 105, 5)) + [{"step": s, "eval_loss": v} for s, v in evals]
    curve = training_curve(_state(tmp_path, history), patience=3)
    assert curve.eval_rising and curve.best_step == 40 and curve.best_eval_loss == 0.8
    with pytest.raises(AssertionError, match=r"eval loss rose over the last 3 evaluations .* the best checkpoint is step 40"):
        assert_training_converged(tmp_path / "trainer_state.json")
    assert not training_curve(_state(tmp_path, history), patience=4).eval_rising  # only three rises


def test_eval_rising_while_training_also_rises_is_not_called_overfitting(tmp_path) -> None:
    history = _train(range(5, 105, 5), start=1.0, slope=0.01) + [{"step": s, "eval_loss": 1 + s / 100} for s in (20, 40, 60, 80)]
    curve = training_curve(_state(tmp_path, history))
    assert not curve.eval_rising and not curve.loss_decreased
    with pytest.raises(AssertionError, match="training loss did not decrease"):
        assert_training_converged(tmp_path)


def test_the_fixture_path_and_checkpoint_folders(bpe_model, tmp_path) -> None:
    assert training_curve(bpe_model).path == bpe_model.path / "trainer_state.json"
    for step in (5, 50, 10):
        (tmp_path / f"checkpoint-{step}").mkdir()
        _state(tmp_path / f"checkpoint-{step}", _train(range(1, step + 1)) + [{"step": step, "eval_loss": 1.0}])
    assert training_curve(tmp_path).path.parent.name == "checkpoint-50"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        ("{broken", "not a trainer_state.json with a log_history list"),
        (json.dumps({"log_history": [{"step": 1, "loss": 1.0}]}), "no 'eval_loss' entries: train with an eval dataset"),
        (json.dumps({"log_history": [{"step": 1, "eval_loss": 1.0}]}), "no training 'loss' entries"),
        (json.dumps({"global_step": 3}), "not a trainer_state.json"),
    ],
)
def test_bad_logs_name_the_file_and_the_fix(tmp_path, content, message) -> None:
    path = tmp_path / "trainer_state.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match=message):
        training_curve(path)
