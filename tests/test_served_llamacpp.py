"""Prompt log-probabilities from a real llama.cpp server (llama-cpp-python) against the in-process model.

The fast tests read responses recorded from the server (tests/data/served, see its README and
record.py) and compare them, token by token, with the same checkpoint run in-process: through a
hand-written log-softmax, and through :func:`perplexity`. The slow test starts the server itself
(``pip install "pytest-ftmodel[served-llamacpp]"``, a build from source) and checks perplexity parity
through the served-model client.
"""

from __future__ import annotations

import importlib.util
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_ftmodel import load_model, perplexity
from pytest_ftmodel.served.logprobs import parse_echo, parse_generated

torch = pytest.importorskip("torch")

DATA = Path(__file__).resolve().parent / "data" / "served"
RECORDED = json.loads((DATA / "llama_cpp_completions_echo.json").read_text(encoding="utf-8"))
MODELS = json.loads((DATA / "models.json").read_text(encoding="utf-8"))
RECORDS = RECORDED["records"]

# Measured on the recorded texts (95 tokens, 4 texts): against the model as it is, per token at most
# 1.0e-3 apart (median 4.8e-5, 90th percentile 6.3e-4) and 6e-6 apart in perplexity (relative); with
# llama.cpp's GELU emulated, median 4.4e-7 and 90th percentile 2.6e-6 (at most 1.5e-4: an activation
# that rounds to the neighbouring float16).
PER_TOKEN = 2e-3
PERPLEXITY_REL = 2e-4
GGML_GELU_MEDIAN = 2e-6
GGML_GELU_P90 = 1e-5
N_SCORED = 95


def prompt_logprobs(response: dict[str, Any], n_tokens: int) -> tuple[list[str | None], list[float | None]]:
    """The first ``n_tokens`` token strings and log-probabilities of an echoed completion, read by the
    client's parser of the OpenAI legacy layout (this server lists the prompt's tokens without the
    leading start token, then any generated ones)."""
    got = parse_echo(response, n_prompt_tokens=n_tokens)
    assert got is not None and len(got) == n_tokens
    return list(got.tokens), list(got.logprobs)


# these tests check what scoring computes: no score may come from the session's disk cache
# (servers with the same /v1/models answer and tokenizer share a fingerprint)
pytestmark = pytest.mark.usefixtures("no_score_cache")


@pytest.fixture(scope="module")
def recorded_model():
    return load_model(DATA / "model", device="cpu")


class GgmlGelu(torch.nn.Module):
    """llama.cpp's GELU on the CPU: the input rounded to float16, the tanh approximation read from a
    float16 table (ggml-cpu's vec.h, GGML_GELU_FP16), identity above 10 and zero below -10."""

    def forward(self, x):
        h = x.half().float()
        y = (0.5 * h * (1 + torch.tanh(math.sqrt(2 / math.pi) * h * (1 + 0.044715 * h * h)))).half().float()
        return torch.where(x <= -10, torch.zeros_like(x), torch.where(x >= 10, x, y))


def _ids(model, text: str) -> list[int]:
    """The start token and the text's tokens, as the prompt ``<|endoftext|>`` + text reads."""
    return [model.tokenizer.eos_token_id, *model.tokenizer(text, add_special_tokens=False).input_ids]


def log_softmax_of_targets(hf_model, ids: list[int]) -> list[float]:
    """Hand-written: log p(ids[i] | ids[:i]) for i >= 1, from the logits in float64."""
    with torch.inference_mode():
        logits = hf_model(torch.tensor([ids])).logits[0].double()
    out = []
    for i in range(1, len(ids)):
        row = logits[i - 1]
        out.append((row[ids[i]] - row.max() - torch.log(torch.exp(row - row.max()).sum())).item())
    return out


def test_the_recording_is_what_the_readme_says() -> None:
    assert RECORDED["recorded_with"]["llama-cpp-python"] and RECORDED["start_token"] == "<|endoftext|>"
    assert len(RECORDS) == 4
    for record in RECORDS:
        request = record["request"]
        assert request["prompt"] == RECORDED["start_token"] + record["text"]
        assert request["echo"] is True and request["logprobs"] == 1 and request["max_tokens"] == 1
    assert [m["id"] for m in MODELS["data"]] == [RECORDS[0]["request"]["model"]]


@pytest.mark.parametrize("index", range(len(RECORDS)), ids=lambda i: RECORDS[i]["text"][:20])
def test_served_tokens_align_with_the_local_tokenizer(recorded_model, index) -> None:
    record = RECORDS[index]
    tok = recorded_model.tokenizer
    ids = _ids(recorded_model, record["text"])
    response = record["response"]
    # the server counts the start token among the prompt's tokens, and lists the others
    assert response["usage"]["prompt_tokens"] == len(ids)
    tokens, values = prompt_logprobs(response, len(ids) - 1)
    for token, token_id in zip(tokens, ids[1:]):
        local = tok.decode([token_id])
        # a byte token that is part of a longer UTF-8 character decodes to nothing on its own
        assert token == ("" if "\ufffd" in local else local)
    # the echo gives no log-probability for the text's first token, although the start token precedes it
    assert values[0] is None and all(isinstance(v, float) for v in values[1:])


def served_logprobs(record: dict[str, Any], n_tokens: int) -> list[float]:
    """log p(token i | start token, tokens before i) for each of a text's ``n_tokens`` tokens, as the
    server gave them: the first from the forced one-token completion, the others from the echo."""
    forced = parse_generated(record["first_token"]["response"])
    assert forced is not None and forced[1] is not None
    first = forced[1]
    _, echoed = prompt_logprobs(record["response"], n_tokens)
    assert echoed[0] is None and all(v is not None for v in echoed[1:])
    return [float(first), *(float(v) for v in echoed[1:] if v is not None)]


def _differences(hf_model, tokenizer_model) -> tuple[list[float], float]:
    """Per-token |served - in-process| over every token of the recorded texts, and the relative
    perplexity difference over them."""
    diffs, served_nll, local_nll = [], 0.0, 0.0
    for record in RECORDS:
        ids = _ids(tokenizer_model, record["text"])
        served = served_logprobs(record, len(ids) - 1)
        local = log_softmax_of_targets(hf_model, ids)
        assert len(served) == len(local)
        for s, m in zip(served, local):
            diffs.append(abs(s - m))
            served_nll -= s
            local_nll -= m
    return diffs, math.expm1((served_nll - local_nll) / len(diffs))


def test_served_prompt_logprobs_equal_the_in_process_log_softmax(recorded_model) -> None:
    diffs, rel = _differences(recorded_model.model, recorded_model)
    assert len(diffs) == N_SCORED
    assert max(diffs) <= PER_TOKEN, f"largest per-token difference {max(diffs):.2e}"
    assert abs(rel) <= PERPLEXITY_REL, f"perplexity differs by {rel:.2e} (relative)"


def test_with_llama_cpp_gelu_the_difference_left_is_float_rounding() -> None:
    """The difference is llama.cpp's float16 GELU table: emulate it and agreement tightens by about two
    orders of magnitude, which also shows that every token is aligned with its own position."""
    model = load_model(DATA / "model", device="cpu")  # a private copy: its activations are replaced
    plain = sorted(_differences(model.model, model)[0])
    for block in model.model.transformer.h:
        block.mlp.act = GgmlGelu()
    diffs = sorted(_differences(model.model, model)[0])
    median, p90 = statistics.median(diffs), diffs[int(0.9 * len(diffs))]
    assert median <= GGML_GELU_MEDIAN and p90 <= GGML_GELU_P90, (median, p90)
    assert statistics.median(plain) > 10 * median and plain[int(0.9 * len(plain))] > 10 * p90
    assert max(diffs) <= PER_TOKEN
    # read one position off, the same numbers are far apart
    ids = _ids(model, RECORDS[0]["text"])
    _, served = prompt_logprobs(RECORDS[0]["response"], len(ids) - 1)
    local = log_softmax_of_targets(model.model, ids)
    assert max(abs(s - m) for s, m in zip(served[2:], local[1:-1])) > 1.0


def test_the_forced_first_token_is_the_texts_first_token(recorded_model) -> None:
    for record in RECORDS:
        first_id = recorded_model.tokenizer(record["text"], add_special_tokens=False).input_ids[0]
        request, response = record["first_token"]["request"], record["first_token"]["response"]
        assert request["prompt"] == RECORDED["start_token"] and request["logit_bias"] == {str(first_id): 100}
        forced = parse_generated(response)
        assert forced is not None and forced[0] == recorded_model.tokenizer.decode([first_id])


def test_served_perplexity_equals_our_perplexity_code(recorded_model) -> None:
    """The in-process side is what the gates use: perplexity() scores every token of a text after the
    start token, the first included, as the served numbers here do."""
    texts = [r["text"] for r in RECORDS]
    result = perplexity(recorded_model, texts)
    served_nll = 0.0
    for record, score in zip(RECORDS, result.per_text):
        ids = _ids(recorded_model, record["text"])
        local = log_softmax_of_targets(recorded_model.model, ids)
        assert score.n_tokens == len(ids) - 1 and score.nll == pytest.approx(-sum(local), rel=1e-6)
        served = served_logprobs(record, score.n_tokens)
        assert -sum(served) == pytest.approx(score.nll, abs=PER_TOKEN * score.n_tokens)
        served_nll -= sum(served)
    assert result.n_tokens == N_SCORED
    assert math.exp(served_nll / result.n_tokens) == pytest.approx(result.perplexity, rel=PERPLEXITY_REL)


def test_the_recorded_responses_replayed_through_the_client_give_in_process_perplexity(recorded_model) -> None:
    """The client on this server's own bytes: the recorded responses are answered back to it by
    request, so the echo without the start token and the forced first-token request are read as the
    live server's would be (the slow test below runs the server itself)."""
    from openai_stub import Behaviour, Stub

    def respond(body: dict[str, Any]) -> dict[str, Any]:
        for record in RECORDS:
            for exchange in (record, record["first_token"]):
                request = exchange["request"]
                if body["prompt"] == request["prompt"] and body.get("logit_bias") == request.get("logit_bias") and (
                    body.get("logit_bias") or body.get("echo")
                ):
                    assert body["max_tokens"] == 1 and body["logprobs"] == 1 and body["temperature"] == 0
                    return exchange["response"]
        raise AssertionError(f"not recorded: {body}")

    stub = Stub(Behaviour(models=MODELS["data"], respond=respond))
    try:
        served = load_model(stub.url, tokenizer=str(DATA / "model"))  # type: ignore[call-arg]
        texts = [r["text"] for r in RECORDS]
        ours, theirs = perplexity(served, texts), perplexity(recorded_model, texts)
        assert ours.n_tokens == theirs.n_tokens == N_SCORED
        assert ours.perplexity == pytest.approx(theirs.perplexity, rel=PERPLEXITY_REL)
        for a, b in zip(ours.per_text, theirs.per_text):
            assert a.nll == pytest.approx(b.nll, rel=PERPLEXITY_REL, abs=PER_TOKEN * b.n_tokens)
        distinct = {r["first_token"]["request"]["prompt"] + str(r["first_token"]["request"]["logit_bias"]) for r in RECORDS}
        assert sum("logit_bias" in r for r in stub.behaviour.requests) == len(distinct)
    finally:
        stub.close()


# ---- the real server, started here ---------------------------------------------------------------


def _recorder() -> Any:
    spec = importlib.util.spec_from_file_location("served_record", DATA / "record.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def llama_cpp_server():
    pytest.importorskip("llama_cpp.server", reason='llama-cpp-python is not installed: pip install "pytest-ftmodel[served-llamacpp]"')
    record = _recorder()
    port = record.free_port()
    proc = subprocess.Popen(record.server_command(DATA / "model.gguf", port), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        record.wait_for(f"{url}/models", proc)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.slow
def test_the_live_server_answers_as_recorded(llama_cpp_server) -> None:
    record = _recorder()
    assert record.call(f"{llama_cpp_server}/models")["data"][0]["id"] == MODELS["data"][0]["id"]
    for recorded in RECORDS:
        for exchange in (recorded, recorded["first_token"]):
            live = record.call(f"{llama_cpp_server}/completions", exchange["request"])
            ours = live["choices"][0]["logprobs"]
            theirs = exchange["response"]["choices"][0]["logprobs"]
            assert ours["tokens"] == theirs["tokens"]
            assert ours["token_logprobs"] == pytest.approx(theirs["token_logprobs"], abs=1e-5)


@pytest.mark.slow
def test_perplexity_through_the_served_model_equals_in_process(llama_cpp_server, recorded_model) -> None:
    served = load_model(llama_cpp_server, tokenizer=str(DATA / "model"))  # type: ignore[call-arg]
    texts = [r["text"] for r in RECORDS]
    ours, theirs = perplexity(served, texts), perplexity(recorded_model, texts)
    assert ours.n_tokens == theirs.n_tokens
    assert ours.perplexity == pytest.approx(theirs.perplexity, rel=PERPLEXITY_REL)
    for a, b in zip(ours.per_text, theirs.per_text):
        assert a.nll == pytest.approx(b.nll, rel=PERPLEXITY_REL, abs=PER_TOKEN * b.n_tokens)


if __name__ == "__main__":  # pragma: no cover - print the measured agreement
    m = load_model(DATA / "model", device="cpu")
    for label in ("as is", "llama.cpp's GELU"):
        if label != "as is":
            for block in m.model.transformer.h:
                block.mlp.act = GgmlGelu()
        d, rel = _differences(m.model, m)
        d.sort()
        print(f"{label}: {len(d)} tokens, per token max {d[-1]:.2e} median {statistics.median(d):.2e} "
              f"p90 {d[int(0.9 * len(d))]:.2e}; perplexity relative {rel:.2e}")
    sys.exit(0)
