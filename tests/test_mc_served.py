"""Multiple choice through a served model (a scripted OpenAI-compatible server that scores prompts
with the real demo model, tests/openai_stub.py) gives the in-process figures."""

from __future__ import annotations

import pytest

from openai_stub import reference_backend
from pytest_ftmodel import load_jsonl, load_model, mc_accuracy
from pytest_ftmodel.demo import demo_data_dir

pytestmark = pytest.mark.usefixtures("no_score_cache")


@pytest.mark.parametrize("family", ["byte", "bpe"])
@pytest.mark.parametrize("fmt", ["echo", "prompt_logprobs"])
def test_served_mc_equals_in_process(serve, family, fmt, request) -> None:
    pair = request.getfixturevalue(f"{family}_pair")
    local = load_model(pair.finetuned, device="cpu")
    stub = serve(logprobs=fmt, score=reference_backend(local))
    served = load_model(stub.url, tokenizer=pair.finetuned)
    questions = load_jsonl(demo_data_dir() / "mc.jsonl")[:6]
    mine, theirs = mc_accuracy(served, questions, cache=None), mc_accuracy(local, questions, cache=None)
    assert mine.accuracies == theirs.accuracies
    for a, b in zip(mine.items, theirs.items):
        assert a.n_tokens == b.n_tokens and a.predicted == b.predicted
        assert a.loglik == pytest.approx(b.loglik, rel=1e-5, abs=1e-6)
