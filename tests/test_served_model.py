"""A served model through the library, against a scripted OpenAI-compatible server on 127.0.0.1.

The server (tests/openai_stub.py) answers in the documented formats; for perplexity it scores
prompts with the real demo model (a per-token log-softmax, tokenizing as vLLM does), so served
perplexity must equal in-process perplexity. Generation parity with a real server is in
test_served_transformers.py.
"""

from __future__ import annotations

import math

import pytest

from openai_stub import reference_backend, reference_forced
from pytest_ftmodel import generate, load_model, perplexity
from pytest_ftmodel.errors import DataError, FTModelError
from pytest_ftmodel.served import LogprobsError, LogprobsUnavailable, ServedModelError, prompt_logprobs_missing


# these tests check what scoring computes: no score may come from the session's disk cache
# (servers with the same /v1/models answer and tokenizer share a fingerprint)
pytestmark = pytest.mark.usefixtures("no_score_cache")


@pytest.fixture(scope="module")
def family_model(request):
    cache: dict[str, object] = {}

    def get(family: str):
        if family not in cache:
            pair = request.getfixturevalue(f"{family}_pair")
            cache[family] = (pair, load_model(pair.finetuned, device="cpu"))
        return cache[family]

    return get


TEXTS = ["the cat sat on the mat.", "Summarize: a long day at the office ended early.", "def add(a, b):\n    return a + b"]


@pytest.mark.parametrize("family", ["byte", "bpe"])  # GPT-2 style (EOS as start token) and BOS-adding
@pytest.mark.parametrize("fmt", ["echo", "prompt_logprobs"])
def test_served_perplexity_equals_in_process(serve, family_model, family, fmt) -> None:
    pair, local = family_model(family)
    stub = serve(logprobs=fmt, score=reference_backend(local))
    served = load_model(stub.url, tokenizer=pair.finetuned)
    mine, theirs = perplexity(served, TEXTS), perplexity(local, TEXTS)
    assert mine.n_tokens == theirs.n_tokens
    assert mine.nll == pytest.approx(theirs.nll, rel=1e-5)
    assert [s.n_tokens for s in mine.per_text] == [s.n_tokens for s in theirs.per_text]
    # pairs through the chat template (bpe) or plain prompts (byte): only the continuation is scored
    pairs = [("Summarize: the cat sat.", " A cat sat."), ("2 + 2 =", " 4")]
    assert perplexity(served, pairs, chat="auto").nll == pytest.approx(perplexity(local, pairs, chat="auto").nll, rel=1e-5)


@pytest.mark.parametrize("family", ["byte", "bpe"])
def test_an_echo_without_the_start_token_as_llama_cpp_gives_is_completed_by_a_forced_token(serve, family_model, family) -> None:
    """llama.cpp's servers leave the start token out of the echo and give the text's first token no
    log-probability: it is read from one extra request per distinct first token, the start token
    alone as the prompt and the first token forced with logit_bias (reported unbiased)."""
    pair, local = family_model(family)
    stub = serve(logprobs="echo", score=reference_backend(local), drop_start=True, forced=reference_forced(local))
    served = load_model(stub.url, tokenizer=pair.finetuned)
    mine, theirs = perplexity(served, TEXTS), perplexity(local, TEXTS)
    assert mine.n_tokens == theirs.n_tokens
    assert [s.nll for s in mine.per_text] == pytest.approx([s.nll for s in theirs.per_text], rel=1e-5)
    forced = [r for r in stub.behaviour.requests if "logit_bias" in r]
    assert len(forced) == len(TEXTS)  # the three texts start with three different tokens
    for r in forced:
        assert r["max_tokens"] == 1 and r["logprobs"] == 1 and r["temperature"] == 0 and isinstance(r["prompt"], str)
        assert list(r["logit_bias"].values()) == [100] and not r.get("echo")
    pairs = [("Summarize: the cat sat.", " A cat sat."), ("2 + 2 =", " 4")]
    assert perplexity(served, pairs, chat="auto").nll == pytest.approx(perplexity(local, pairs, chat="auto").nll, rel=1e-5)
    served.memo.clear()
    before = len(stub.behaviour.requests)
    perplexity(served, TEXTS)
    assert not any("logit_bias" in r for r in stub.behaviour.requests[before:])  # remembered per model


def test_an_echo_without_the_start_token_and_no_logit_bias_is_one_line(serve, family_model) -> None:
    pair, local = family_model("byte")
    stub = serve(logprobs="echo", score=reference_backend(local), drop_start=True)  # logit_bias ignored
    served = load_model(stub.url, tokenizer=pair.finetuned)
    with pytest.raises(LogprobsError, match=r"leaves out the start token '<\|endoftext\|>'.*does not honour logit_bias") as info:
        perplexity(served, TEXTS)
    assert "\n" not in str(info.value) and "it answered ' x')" in str(info.value)


def test_a_server_that_tokenizes_otherwise_is_one_line(serve, family_model) -> None:
    byte_pair, byte_local = family_model("byte")
    bpe_pair, _ = family_model("bpe")
    stub = serve(logprobs="echo", score=reference_backend(byte_local))  # the server's tokenizer: byte
    served = load_model(stub.url, tokenizer=bpe_pair.finetuned)  # the local one: bpe
    with pytest.raises(LogprobsError, match=r"text 0 .*pass the served model's own tokenizer \(--tokenizer PATH\)") as info:
        perplexity(served, TEXTS, cache=None)  # another stub's scores may be cached
    assert "\n" not in str(info.value)


def test_a_server_without_prompt_logprobs_names_the_gate_and_what_it_lacks(serve, family_model) -> None:
    pair, _ = family_model("bpe")
    stub = serve(logprobs=None)
    served = load_model(stub.url, tokenizer=pair.finetuned)
    with pytest.raises(LogprobsUnavailable) as info:
        perplexity(served, TEXTS, cache=None)  # another stub's scores may be cached
    line = str(info.value)
    assert "test_a_server_without_prompt_logprobs" in line and "perplexity" in line
    assert "returns none (echo=True with logprobs: ignored; prompt_logprobs: ignored)" in line and "\n" not in line
    assert prompt_logprobs_missing(served) is not None
    with pytest.raises(DataError, match="needs its tokenizer.*--tokenizer PATH"):
        perplexity(load_model(stub.url), TEXTS, cache=None)


def test_generation_requests_carry_in_process_semantics(serve, family_model) -> None:
    pair, _ = family_model("bpe")
    stub = serve(answer=lambda body: "yes. STOP and more")
    served = load_model(stub.url, tokenizer=pair.finetuned)
    assert generate(served, ["hello"], stop=["STOP"], max_new_tokens=20, chat=False, cache=None) == ["yes. "]
    body = stub.behaviour.requests[-1]
    assert body["temperature"] == 0 and "seed" not in body and body["n"] == 1 and body["stop"] == ["STOP"]
    assert body["prompt"] == "hello" and body["max_tokens"] == 20 and body["model"] == "org/tuned"
    # chat="auto" with a tokenizer that has a chat template: the chat endpoint, the server templates
    generate(served, ["hello"], max_new_tokens=5, cache=None)
    assert stub.behaviour.requests[-1]["messages"] == [{"role": "user", "content": "hello"}]
    # sampling: one request per sample, each with its own seed (independent of n), same seeds on re-run
    stub.behaviour.requests.clear()
    generate(served, ["a", "b"], n=3, temperature=0.7, seed=1, chat=False, max_new_tokens=4, cache=None)
    seeds = sorted(r["seed"] for r in stub.behaviour.requests)
    assert len(seeds) == 6 == len(set(seeds))
    stub.behaviour.requests.clear()
    generate(served, ["a", "b"], n=2, temperature=0.7, seed=1, chat=False, max_new_tokens=4, cache=None)
    assert {r["seed"] for r in stub.behaviour.requests} <= set(seeds)


def test_the_answer_budget_follows_the_context_as_in_process(serve, family_model) -> None:
    pair, local = family_model("bpe")
    stub = serve(models=[{"id": "m", "max_model_len": 40}])
    served = load_model(stub.url, tokenizer=pair.finetuned)
    assert served.context_length == 40
    prompt = "the cat sat on the mat " * 3
    n = len(local.tokenizer(prompt).input_ids)
    generate(served, [prompt], chat=False, max_new_tokens=100, cache=None)
    assert stub.behaviour.requests[-1]["max_tokens"] == 40 - n
    with pytest.raises(DataError, match="no room for an answer in the served model's context of 40"):
        generate(served, ["the cat sat on the mat " * 20], chat=False, cache=None)


def test_retries_429_and_503_then_answers(serve) -> None:
    stub = serve(failures=[429, 503])
    served = load_model(stub.url)
    assert generate(served, ["x"], chat=False, cache=None, max_new_tokens=3) == ["an answer"]
    assert served.client.retried == 2


def test_errors_are_one_line_each(serve, tmp_path) -> None:
    stub = serve(failures=[500] * 10)
    with pytest.raises(ServedModelError, match=r"^GET http://127\.0\.0\.1:\d+/v1/models failed: HTTP 500: try again \(500\)$"):
        load_model(stub.url)
    slow = serve(stall=1.5)
    with pytest.raises(ServedModelError, match=r"did not finish within 0\.5 s \(--model-timeout bounds each request, from connecting to the last byte\): raise --model-timeout"):
        load_model(slow.url, timeout=0.5)
    several = serve(models=[{"id": "a"}, {"id": "b"}])
    with pytest.raises(ServedModelError, match=r"serves 2 models \('a', 'b'\): pick one with --model-name NAME"):
        load_model(several.url)
    with pytest.raises(ServedModelError, match=r"serves no model 'c'; it serves 'a', 'b': fix --model-name"):
        load_model(several.url, name="c")
    assert load_model(several.url, name="b").model_id == "b"
    port = stub.server.server_address[1]
    stub.close()
    with pytest.raises(ServedModelError, match=rf"the served model at http://127.0.0.1:{port}/v1 does not answer \(connection refused; 4 attempt"):
        load_model(f"http://127.0.0.1:{port}")  # the bare host gets /v1
    with pytest.raises(FTModelError, match="not a directory"):
        load_model(several.url, name="a", tokenizer=tmp_path / "nope")


def test_a_server_that_dies_mid_run_is_one_clear_error(serve) -> None:
    stub = serve(die_after=3)
    served = load_model(stub.url, concurrency=1)
    with pytest.raises(ServedModelError) as info:
        generate(served, [f"prompt {i}" for i in range(8)], chat=False, cache=None, max_new_tokens=2)
    line = str(info.value)
    assert "does not answer" in line and "is the server running?" in line and "\n" not in line


def test_the_key_is_sent_and_never_shown(serve, monkeypatch) -> None:
    key = "sk-test-9f8e7d6c5b4a"
    stub = serve(key=key)
    monkeypatch.setenv("FT_KEY", key)
    served = load_model(stub.url, api_key_env="FT_KEY")
    assert generate(served, ["x"], chat=False, cache=None, max_new_tokens=2) == ["an answer"]
    assert stub.behaviour.headers_seen[-1]["authorization"] == f"Bearer {key}"
    assert key not in repr(served) and key not in repr(served.client) and key not in served.fingerprint
    monkeypatch.setenv("FT_KEY", "sk-wrong-000")
    with pytest.raises(ServedModelError) as info:
        load_model(stub.url, api_key_env="FT_KEY")
    assert "HTTP 401" in str(info.value) and "check the key in $FT_KEY" in str(info.value)
    assert "sk-wrong-000" not in str(info.value) and key not in str(info.value)
    with pytest.raises(ServedModelError, match="pass --model-api-key-env VAR"):
        load_model(stub.url)
    monkeypatch.delenv("FT_KEY")
    with pytest.raises(ServedModelError, match="names FT_KEY, which is not set"):
        load_model(stub.url, api_key_env="FT_KEY")


def test_fingerprint_follows_what_the_server_says_and_the_revision(serve) -> None:
    a = serve(models=[{"id": "m", "root": "/w/ckpt-1", "max_model_len": 512, "created": 1}])
    b = serve(models=[{"id": "m", "root": "/w/ckpt-1", "max_model_len": 512, "created": 2}])
    c = serve(models=[{"id": "m", "root": "/w/ckpt-2", "max_model_len": 512}])
    fa, fb, fc = (load_model(s.url).fingerprint for s in (a, b, c))
    assert fa == fb != fc  # the port and volatile fields do not count; the weights' root does
    assert load_model(a.url, revision="v2").fingerprint not in (fa, fc)
    assert len(fa) == 16 and load_model(a.url).name == "m" and math.isfinite(len(fa))
