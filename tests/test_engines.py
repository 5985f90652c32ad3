"""One engine interface: metrics ask a model's engine to score and generate, never which kind it is."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from pytest_ftmodel.engines import Engine, engine_of

PACKAGE = Path(__file__).resolve().parent.parent / "pytest_ftmodel"


def test_each_model_has_its_engine(byte_model, serve, byte_pair):
    from pytest_ftmodel import load_model
    from pytest_ftmodel.engines.served import ServedEngine
    from pytest_ftmodel.engines.transformers import TransformersEngine

    local = engine_of(byte_model)
    assert isinstance(local, TransformersEngine) and isinstance(local, Engine) and local.scores_windows
    served = engine_of(load_model(serve().url, tokenizer=byte_pair.finetuned))
    assert isinstance(served, ServedEngine) and isinstance(served, Engine) and not served.scores_windows


def test_a_model_without_an_engine_is_one_line():
    with pytest.raises(TypeError, match="runs on no engine: pass a model from load_model") as info:
        engine_of(object())
    assert "\n" not in str(info.value)


def test_no_metric_asks_which_engine_it_runs_on():
    for path in [*sorted((PACKAGE / "metrics").glob("*.py")), PACKAGE / "generation.py"]:
        text = path.read_text(encoding="utf-8")
        assert "is_served" not in text and "served.model import" not in text, path.name


def test_the_served_code_reaches_into_no_private_name_of_model_py():
    text = (PACKAGE / "served" / "model.py").read_text(encoding="utf-8")
    assert "from pytest_ftmodel.model import" not in text and "pytest_ftmodel.model." not in text


def test_token_logprobs_and_score_agree_with_a_hand_written_log_softmax(demo_model):
    import torch

    tok = demo_model.tokenizer
    units = [(tok("The cat sat in the garden.").input_ids, 3), (tok("It was a rainy day").input_ids, 1)]
    engine = engine_of(demo_model)
    per_token = engine.token_logprobs(units)
    sums = engine.score(units)
    for (ids, m), lps, nll in zip(units, per_token, sums):
        with torch.inference_mode():
            logits = demo_model.model(input_ids=torch.tensor([ids[:-1]])).logits[0].double()
        want = [float(logits[p, ids[p + 1]] - torch.logsumexp(logits[p], 0)) for p in range(len(ids) - 1 - m, len(ids) - 1)]
        assert lps == pytest.approx(want, abs=1e-5)
        assert nll == pytest.approx(-math.fsum(want), abs=1e-5)


class _ShortestWins:
    """A third engine, written as a new class: a choice's log-probability is minus its length."""

    scores_windows = True

    def check_scoring(self):
        return None

    def score(self, units, *, batch_size=None, on_done=None):
        return [float(m) for _, m in units]

    def token_logprobs(self, units, *, batch_size=None):
        return [[-1.0] * m for _, m in units]

    def generate(self, prompts, rows, **kwargs):
        return [f"answer to {prompts[i]}" for i, _ in rows]


def test_a_third_engine_needs_no_change_to_the_metrics(byte_model, no_score_cache):
    from pytest_ftmodel import generate, mc_accuracy, perplexity

    class Other:
        tokenizer, fingerprint, context_length, memo = byte_model.tokenizer, "other", 512, {}
        engine = _ShortestWins()

    items = [{"prompt": "The cat sat in the", "choices": ["garden of the old barn", "park"], "answer": 1}]
    result = mc_accuracy(Other(), items, cache=None)
    assert result.accuracy == 1.0 and result.items[0].loglik[1] == -len(byte_model.tokenizer(" park").input_ids)
    assert perplexity(Other(), ["some text"], cache=None).mean_nll == 1.0
    assert generate(Other(), ["hi"], cache=None) == ["answer to hi"]


def test_choices_share_their_prompts_cache_and_the_fallback_gives_the_same_numbers(demo_model, monkeypatch):
    from pytest_ftmodel.engines import transformers as engine_mod
    from pytest_ftmodel.metrics.mc import choice_sequence

    tok = demo_model.tokenizer
    units = []
    for prompt in ("The small cat chased the ball in the", "It was a"):
        for choice in ("garden. It was a cold day.", "park", "rainy day"):
            ids, m, _ = choice_sequence(tok, prompt, choice)
            units.append((ids, m))
    whole = engine_mod._whole_rows
    monkeypatch.setattr(engine_mod, "_whole_rows", lambda *a: pytest.fail("the prompts' cache was not shared"))
    shared = engine_of(demo_model).token_logprobs(units)
    monkeypatch.setattr(engine_mod, "_whole_rows", whole)
    monkeypatch.setattr(engine_mod, "_cache_argument", lambda net: None)  # a model whose cache cannot be reused
    fallback = engine_of(demo_model).token_logprobs(units)
    for a, b, (_, m) in zip(shared, fallback, units):
        assert len(a) == len(b) == m and a == pytest.approx(b, abs=1e-5)
