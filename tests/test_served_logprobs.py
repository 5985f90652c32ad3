"""Parsing prompt log-probabilities, on responses written by hand in the documented formats.

* OpenAI legacy completions, ``echo=True`` + ``logprobs``: ``choices[0].logprobs`` has the parallel
  lists ``tokens``, ``token_logprobs``, ``text_offset``, ``top_logprobs`` (OpenAI API reference,
  "The completion object"; e.g. https://pub.dev/documentation/openai_dart/latest/openai_dart/CompletionLogprobs-class.html
  mirrors it: "text_offset: the offset of the token from the beginning of the prompt").
* vLLM's ``prompt_logprobs``: ``list[dict[int, Logprob] | None]``, the first entry None, each Logprob
  ``{logprob, rank, decoded_token}`` (https://docs.vllm.ai/en/v0.10.2/api/vllm/logprobs.html; "NOTE:
  logprob of first prompt token is None" in vllm/v1/engine/logprobs.py).
Responses recorded from real servers are tested beside these (tests/data/served/, when present).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_ftmodel.served.logprobs import LogprobsError, PromptLogprobs, check_alignment, parse_echo, parse_prompt_logprobs

ECHO = {
    "id": "cmpl-1",
    "object": "text_completion",
    "model": "org/tuned",
    "choices": [
        {
            "index": 0,
            "text": "The cat sat down",
            "finish_reason": "length",
            "logprobs": {
                "tokens": ["The", " cat", " sat", " down"],
                "token_logprobs": [None, -2.5, -1.25, -0.75],
                "text_offset": [0, 3, 7, 11],
                "top_logprobs": [None, {" cat": -2.5}, {" sat": -1.25}, {" down": -0.75}],
            },
        }
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}

PROMPT_LOGPROBS = {
    "object": "text_completion",
    "choices": [
        {
            "index": 0,
            "text": " down",
            "prompt_logprobs": [
                None,
                {"791": {"logprob": -2.5, "rank": 4, "decoded_token": " cat"}, "13": {"logprob": -0.3, "rank": 1, "decoded_token": "."}},
                {"7731": {"logprob": -1.25, "rank": 1, "decoded_token": " sat"}},
            ],
        }
    ],
}


def test_echo_keeps_the_prompt_tokens_by_usage_count_and_nulls_the_first() -> None:
    got = parse_echo(ECHO)
    assert got is not None
    assert got.tokens == ("The", " cat", " sat") and got.logprobs == (None, -2.5, -1.25)
    assert got.summed(2) == pytest.approx(3.75)


def test_echo_without_usage_cuts_the_generated_tokens_by_text_offset() -> None:
    response = json.loads(json.dumps(ECHO))
    del response["usage"]
    got = parse_echo(response, prompt="The cat sat")
    assert got is not None and len(got) == 3 and got.tokens[-1] == " sat"


def test_echo_first_logprob_sent_as_zero_is_still_unscored() -> None:
    response = json.loads(json.dumps(ECHO))
    response["choices"][0]["logprobs"]["token_logprobs"][0] = 0.0
    got = parse_echo(response)
    assert got is not None and got.logprobs[0] is None
    with pytest.raises(LogprobsError):
        got.summed(3)  # the first token has no log-probability to sum


@pytest.mark.parametrize("logprobs", [None, {}, {"tokens": [], "token_logprobs": []}])
def test_a_server_that_ignores_echo_gives_none(logprobs) -> None:
    response = {"choices": [{"index": 0, "text": "\n", "logprobs": logprobs}]}
    assert parse_echo(response) is None


def test_malformed_logprobs_are_one_line_errors() -> None:
    response = json.loads(json.dumps(ECHO))
    response["choices"][0]["logprobs"]["token_logprobs"][1] = "low"
    with pytest.raises(LogprobsError, match=r"token_logprobs\[1\] is 'low', not a number"):
        parse_echo(response)
    with pytest.raises(LogprobsError, match="no choices"):
        parse_echo({"object": "error"})


def test_vllm_prompt_logprobs_pick_the_prompt_token_by_expected_id() -> None:
    got = parse_prompt_logprobs(PROMPT_LOGPROBS, expected_ids=[464, 791, 7731])
    assert got is not None
    assert got.token_ids == (464, 791, 7731) and got.logprobs == (None, -2.5, -1.25)
    assert got.tokens[1:] == (" cat", " sat")


def test_vllm_prompt_logprobs_without_ids_take_the_token_not_ranked_first() -> None:
    got = parse_prompt_logprobs(PROMPT_LOGPROBS)
    assert got is not None and got.logprobs == (None, -2.5, -1.25) and got.token_ids[1:] == (791, 7731)


def test_vllm_prompt_logprobs_that_miss_the_local_token_are_a_misalignment() -> None:
    with pytest.raises(LogprobsError, match="not the local tokenizer's 792"):
        parse_prompt_logprobs(PROMPT_LOGPROBS, expected_ids=[464, 792, 7731])
    assert parse_prompt_logprobs({"choices": [{"text": "x"}]}) is None


def test_alignment_accepts_the_same_tokens_and_names_the_first_difference() -> None:
    scored = PromptLogprobs(tokens=("<s>", "The", " cat"), logprobs=(None, -1.0, -2.0))
    check_alignment(scored, [1, 464, 791], ["<s>", "The", " cat"], where="text 0")
    with pytest.raises(LogprobsError, match=r"text 0: token 2 is ' cat' on the server, ' dog' locally: pass the served model's own tokenizer"):
        check_alignment(scored, [1, 464, 900], ["<s>", "The", " dog"], where="text 0")
    with pytest.raises(LogprobsError, match="into 3 tokens, the local tokenizer into 2"):
        check_alignment(scored, [464, 791], ["The", " cat"], where="text 0")


def test_alignment_compares_ids_where_the_format_has_them_and_skips_byte_fragments() -> None:
    by_id = PromptLogprobs(tokens=(None, "x", "y"), logprobs=(None, -1.0, -1.0), token_ids=(5, 6, 7))
    check_alignment(by_id, [5, 6, 7], ["a", "b", "c"], where="t")  # strings differ, ids agree: aligned
    with pytest.raises(LogprobsError, match="token 1 is id 6 on the server, 9 locally"):
        check_alignment(by_id, [5, 9, 7], ["a", "b", "c"], where="t")
    fragments = PromptLogprobs(tokens=("a", "\ufffd", "bytes"), logprobs=(None, -1.0, -1.0))
    check_alignment(fragments, [1, 2, 3], ["a", "\xe9", "bytes"], where="t")
    as_ids = PromptLogprobs(tokens=("token_id:1", "token_id:2"), logprobs=(None, -1.0))
    check_alignment(as_ids, [1, 2], ["?", "?"], where="t")
    with pytest.raises(LogprobsError, match="token_id:2 on the server, id 3 locally"):
        check_alignment(as_ids, [1, 3], ["?", "?"], where="t")


@given(st.lists(st.floats(min_value=-30, max_value=0, allow_nan=False), min_size=1, max_size=40), st.data())
def test_both_formats_give_the_same_sums_as_the_numbers_they_carry(values, data) -> None:
    n = len(values) + 1
    ids = list(range(100, 100 + n))
    echo = {"choices": [{"logprobs": {"tokens": [f"t{i}" for i in ids], "token_logprobs": [None, *values], "text_offset": list(range(n))}}],
            "usage": {"prompt_tokens": n}}
    vllm = {"choices": [{"prompt_logprobs": [None] + [{str(i): {"logprob": v, "rank": 1}} for i, v in zip(ids[1:], values)]}]}
    last = data.draw(st.integers(1, n - 1))
    a, b = parse_echo(echo), parse_prompt_logprobs(vllm, expected_ids=ids)
    assert a is not None and b is not None
    assert a.summed(last) == pytest.approx(-math.fsum(values[len(values) - last :]), abs=1e-9)
    assert a.summed(last) == b.summed(last)


RECORDED = Path(__file__).parent / "data" / "served"


@pytest.mark.parametrize("path", sorted(RECORDED.glob("*.json")) if RECORDED.is_dir() else [], ids=lambda p: p.name)
def test_recorded_responses_parse(path: Path) -> None:
    """Every response recorded from a real server parses into log-probabilities with a null first."""
    recorded = json.loads(path.read_text())
    if "data" in recorded:  # /v1/models
        assert recorded["data"] and all(isinstance(m.get("id"), str) for m in recorded["data"])
        return
    # one response, or a recording of several exchanges ({"records": [{"response": ...}, ...]})
    bodies = [r["response"] for r in recorded["records"]] if "records" in recorded else [recorded.get("response", recorded)]
    for body in bodies:
        got = parse_echo(body) or parse_prompt_logprobs(body)
        assert got is not None and len(got) >= 1 and got.logprobs[0] is None
        assert all(isinstance(v, float) and v <= 1e-6 for v in got.logprobs[1:])
