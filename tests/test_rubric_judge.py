"""The rubric judge: the score is read at the final-score position (never a digit in the reasoning),
weighted by the probabilities of "1".."5" there, or the last score written in the final-score slot;
no silent fallback when log-probabilities are missing; cached so a warm run makes no judge call."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_ftmodel import load_model, rubric_judge
from pytest_ftmodel.cache import GenerationCache
from pytest_ftmodel.errors import DataError
from pytest_ftmodel.judges import CUE, JudgeError, JudgeLogprobsUnavailable, weighted_score, written_score

REASONING = "Score 5 would need every fact; 1 of the 3 facts is missing, so not a 4 either."


# ---- reading a score --------------------------------------------------------------------------


def test_the_last_final_score_slot_wins_and_digits_in_the_reasoning_are_never_read() -> None:
    assert written_score(REASONING + "\nFinal score: 2") == 2
    assert written_score("Final score: 2\nOn reflection the answer is right.\nFinal score: 4") == 4
    assert written_score("final score = 3/5") == 3
    assert written_score("Final score: **5**") == 5
    # an invalid last slot gives no score, never the earlier slot or a digit from the reasoning
    assert written_score("Final score: 3\nActually, Final score: 7") is None
    assert written_score("Final score: 4 or maybe 5") is None
    assert written_score(REASONING) is None


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60).filter(lambda t: "score" not in t.lower()), st.integers(1, 5))
def test_any_reasoning_then_the_slot_gives_the_slot(reasoning: str, k: int) -> None:
    assert written_score(f"{reasoning}\nFinal score: {k}") == k


def test_weighted_score_against_a_hand_computation() -> None:
    logp = {1: math.log(0.1), 3: math.log(0.2), 4: math.log(0.6)}
    p = np.array([0.1, 0.0, 0.2, 0.6, 0.0])
    got = weighted_score(logp)
    assert got.score == pytest.approx(float((p * np.arange(1, 6)).sum() / p.sum()))
    assert got.mass == pytest.approx(0.9)
    assert weighted_score({}).score is None


@given(st.lists(st.floats(-30, 0), min_size=5, max_size=5))
def test_weighted_score_lies_within_the_levels_given_probability(values: list[float]) -> None:
    got = weighted_score(dict(zip(range(1, 6), values)))
    assert got.score is not None and 1 - 1e-9 <= got.score <= 5 + 1e-9


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 0.5, "high"])
def test_garbage_log_probabilities_are_one_line_errors(bad) -> None:
    with pytest.raises(JudgeError, match="not a finite number <= 0") as exc:
        weighted_score({3: bad})
    assert "\n" not in str(exc.value)


# ---- a demo checkpoint as judge: the position, the weighting ----------------------------------


def _reference_score(model, judge_prompt: str, reasoning: str) -> float:
    """By hand: tokenize the judge prompt (chat template when the tokenizer has one), its reasoning and
    the cue; one forward pass; softmax of the last position; weight the five score tokens."""
    import torch

    tok = model.tokenizer
    if tok.chat_template:
        head = tok.apply_chat_template([{"role": "user", "content": judge_prompt}], tokenize=False, add_generation_prompt=True)
        ids = tok(head, add_special_tokens=False).input_ids
    else:
        ids = tok(judge_prompt).input_ids
    tail = reasoning + CUE
    digits = [tok(f"{CUE} {k}", add_special_tokens=False).input_ids for k in range(1, 6)]
    base = tok(CUE, add_special_tokens=False).input_ids
    if all(len(d) == len(base) + 1 for d in digits):
        targets = [d[-1] for d in digits]
    else:  # byte level: the space is a token of its own
        tail += " "
        targets = [d[-1] for d in digits]
    ids = list(ids) + tok(tail, add_special_tokens=False).input_ids
    with torch.inference_mode():
        probs = torch.softmax(model.model(input_ids=torch.tensor([ids])).logits[0, -1].double(), -1)
    p = np.array([float(probs[t]) for t in targets])
    return float((p * np.arange(1, 6)).sum() / p.sum())


def test_a_demo_checkpoint_scores_at_the_final_score_position(demo_model, monkeypatch) -> None:
    """The judge's reasoning is scripted to contain digits; the score is the weighted score after the
    cue that follows the reasoning, computed here by hand."""
    import pytest_ftmodel.judges._access as access

    monkeypatch.setattr(access, "reasoning_texts", lambda model, prompts, samples, **kw: [[REASONING] * samples for _ in prompts])
    judge = rubric_judge(demo_model, criteria=["accuracy", "fluency"], cache=None)
    got = judge("Summarize: the cat sat on the mat.", "A cat sat.", "The cat sat.")
    for c in ("accuracy", "fluency"):
        want = _reference_score(demo_model, judge.prompt_for(c, "Summarize: the cat sat on the mat.", "A cat sat.", "The cat sat."), REASONING)
        assert got.scores[c] == pytest.approx(want, abs=1e-5)
        assert got.reasoning[c] == (REASONING,)
    assert got.scores["accuracy"] != got.scores["fluency"]  # the rubric is in the prompt


def test_a_demo_checkpoint_judges_end_to_end(bpe_model) -> None:
    judge = rubric_judge(bpe_model, max_new_tokens=8, cache=None)
    [a, b] = judge.score([{"prompt": "Say hi.", "answer": "hi"}, {"prompt": "Say hi.", "answer": "def f(): pass"}])
    assert set(a.scores) == {"accuracy", "relevance", "fluency", "format"}
    assert all(1 <= s <= 5 for s in [*a.scores.values(), *b.scores.values()])  # type: ignore[operator]
    assert judge.calls == 2 * 4 * 2  # a reasoning and a score read per answer and criterion


def test_bad_settings_are_one_line_errors(bpe_model) -> None:
    with pytest.raises(DataError, match="no rubric"):
        rubric_judge(bpe_model, criteria=["humour"])
    with pytest.raises(DataError, match="scoring="):
        rubric_judge(bpe_model, scoring="top")
    with pytest.raises(DataError, match="temperature"):
        rubric_judge(bpe_model, repeats=3, temperature=0)
    judge = rubric_judge(bpe_model, criteria=["humour"], rubric={"humour": {1: "dull", 5: "witty"}})
    assert "1: dull\n5: witty" in judge.prompt_for("humour", "p", "a")
    # an unknown cache word is refused as every other function refuses it, never read as "auto"
    with pytest.raises(ValueError, match="cache='off': pass 'auto', None or a GenerationCache"):
        rubric_judge(bpe_model, criteria=["accuracy"], cache="off").score([{"prompt": "p", "answer": "a"}])


@pytest.mark.parametrize(
    "kw, what",
    [
        ({"criteria": "accuracy"}, "criteria="), ({"criteria": [1]}, "criteria="), ({"temperature": "hot"}, "temperature="),
        ({"temperature": -1.0}, "temperature="), ({"top_p": 2.0}, "top_p="), ({"top_p": 0}, "top_p="), ({"seed": "x"}, "seed="),
        ({"max_new_tokens": 0}, "max_new_tokens="), ({"rubric": {"accuracy": {1: "a", "5": "b"}}}, "rubric="),
        ({"rubric": {"accuracy": {0: "a", 9: "b"}}}, "rubric="), ({"rubric": {"accuracy": 5}}, "rubric="),
        ({"prompt": "{answer} {rubric} {oops}"}, "prompt="), ({"cue": 5}, "cue="),
    ],
)
def test_bad_argument_types_and_values_are_one_line_errors_before_any_judge_call(serve, kw, what) -> None:
    stub = serve(**_scripted("Fine.", {" 3": 0.0}))
    with pytest.raises((DataError, JudgeError), match=what) as exc:
        rubric_judge(load_model(stub.url), cache=None, **{"criteria": ["accuracy"], **kw})
    assert "\n" not in str(exc.value)
    assert not stub.behaviour.requests


# ---- a scripted served judge ------------------------------------------------------------------


def _scripted(reasoning: str, top: dict | None):
    """A /v1/completions that writes ``reasoning`` and, asked for logprobs, gives ``top`` as the next
    token's alternatives (None: no logprobs, as transformers serve)."""

    def respond(body):
        choice = {"index": 0, "text": reasoning, "finish_reason": "stop", "logprobs": None}
        if body.get("logprobs") is not None and top is not None:
            choice["text"] = next(iter(top))
            choice["logprobs"] = {"tokens": [choice["text"]], "token_logprobs": [0.0], "text_offset": [0], "top_logprobs": [top]}
        return {"object": "text_completion", "choices": [choice]}

    return {"respond": respond, "answer": lambda body: reasoning}  # the chat endpoint writes the same


def test_a_served_judge_reads_the_score_after_its_reasoning(serve) -> None:
    top = {" 2": math.log(0.3), " 4": math.log(0.3), "4": math.log(0.2), " The": math.log(0.2)}
    stub = serve(**_scripted(REASONING + "\nFinal score: 5", top))
    judge = rubric_judge(load_model(stub.url), criteria=["accuracy"], cache=None)
    got = judge("Name three facts.", "Two facts.")
    assert got.scores["accuracy"] == pytest.approx((2 * 0.3 + 4 * 0.5) / 0.8)
    asks = [r for r in stub.behaviour.requests if r.get("logprobs") is not None]
    assert len(asks) == 1 and asks[0]["max_tokens"] == 1
    # the reasoning was asked to stop before its own score; the cue follows it
    gens = [r for r in stub.behaviour.requests if r.get("logprobs") is None]
    assert "Final score" in gens[0]["stop"]
    assert asks[0]["prompt"].endswith("Answer:\nTwo facts.\n\nExplain in a few sentences how the answer meets the rubric, then end with the line 'Final score: N', N a whole number from 1 to 5.\n\nReasoning:" + REASONING + CUE)
    # (the stub ignores stop strings; the client cuts the reasoning at the first, as some servers return it)


@pytest.mark.parametrize("slot, cue", [("Final Score: 5", CUE), ("Score: 5", "\nScore:")])
def test_a_score_the_judge_writes_in_its_reasoning_in_any_case_is_cut_before_the_cue(serve, slot, cue) -> None:
    # judges write "Final Score:" in title case as often as not; the reasoning stops there (and at a
    # cue of the user's own), so the score is read after the cue alone, not after a score already written
    top = {" 2": math.log(0.5), " 3": math.log(0.5)}
    stub = serve(**_scripted(f"Two facts are right.\n{slot}\nThat is all.", top))
    judge = rubric_judge(load_model(stub.url), criteria=["accuracy"], cue=cue, cache=None)
    assert judge("Name three facts.", "Two facts.").scores["accuracy"] == pytest.approx(2.5)
    [ask] = [r for r in stub.behaviour.requests if r.get("logprobs") is not None]
    assert ask["prompt"].endswith("Reasoning:Two facts are right." + cue)


def test_a_served_judge_scoring_text_takes_the_last_slot(serve) -> None:
    stub = serve(**_scripted("I'd say 5.\nFinal score: 2\nOn reflection, it is better.\nFinal score: 4\n", None))
    judge = rubric_judge(load_model(stub.url), criteria=["accuracy"], scoring="text", cache=None)
    assert judge("q", "a").scores["accuracy"] == 4
    stub2 = serve(**_scripted("Final score: 3\nno wait. Final score: nine", None))
    judge2 = rubric_judge(load_model(stub2.url), criteria=["accuracy"], scoring="text", cache=None)
    assert judge2("q", "a").scores["accuracy"] is None


def test_a_judge_without_logprobs_is_an_error_never_a_silent_switch(serve) -> None:
    stub = serve(**_scripted("Fine.\nFinal score: 4", None))
    judge = rubric_judge(load_model(stub.url), criteria=["accuracy"], cache=None)
    with pytest.raises(JudgeLogprobsUnavailable, match="scoring='text'") as exc:
        judge("q", "a")
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("value", ["0.5", "NaN", "\"x\""])
def test_garbage_served_logprobs_are_one_line_errors(serve, value) -> None:
    stub = serve(respond=lambda body: json.loads(
        '{"choices": [{"text": "ok", "logprobs": {"top_logprobs": [{" 3": %s}]}}]}' % value
    ))
    judge = rubric_judge(load_model(stub.url), criteria=["accuracy"], cache=None)
    with pytest.raises(JudgeError, match="broken") as exc:
        judge("q", "a")
    assert "\n" not in str(exc.value)


def test_a_served_score_token_too_unlikely_to_count_weighs_nothing(serve) -> None:
    # -1e308 is a finite log-probability <= 0: p = exp(-1e308) underflows to 0, so the score is the
    # other level's, never a crash on log(0)
    stub = serve(respond=lambda body: {"choices": [{"text": " 4", "logprobs": {"top_logprobs": [{" 3": -1e308, " 4": -0.1}]}}]})
    judge = rubric_judge(load_model(stub.url), criteria=["accuracy"], cache=None)
    assert judge("q", "a").scores["accuracy"] == pytest.approx(4.0)


# ---- the cache ---------------------------------------------------------------------------------


def test_a_warm_run_makes_no_judge_call_and_any_change_to_what_decides_a_score_does(serve, tmp_path) -> None:
    top = {" 3": math.log(0.5), " 4": math.log(0.5)}
    stub = serve(**_scripted("Fine.", top))
    served = load_model(stub.url)
    items = [{"prompt": "q1", "answer": "a1"}, {"prompt": "q2", "answer": "a2", "reference": "r2"}]

    def run(**kw) -> tuple[int, list]:
        before = len(stub.behaviour.requests)
        judge = rubric_judge(served, cache=GenerationCache(tmp_path), **{"criteria": ["accuracy", "format"], **kw})
        scores = judge.score(items)
        assert judge.calls == len(stub.behaviour.requests) - before  # every model call is counted
        return judge.calls, scores

    cold, first = run()
    assert cold == 2 * 2 * 2
    warm, again = run()
    assert warm == 0 and again == first
    # an edited answer, another rubric, another scoring rule or cue: judged again, never a stale score
    items[0]["answer"] = "a1, edited"
    assert run()[0] == 2 * 2
    assert run(rubric={"format": "1: bad\n5: good"})[0] == 2 * 2
    assert run(scoring="text")[0] == 2 * 2  # only the reasoning: the score is read from it
    assert run(cue="\nScore:")[0] == 2 * 2 * 2
    assert run(repeats=2, temperature=0.5)[0] == 2 * 2 * 2 * 2


def test_a_judge_of_another_model_is_not_served_from_the_cache(bpe_pair, byte_model, tmp_path) -> None:
    bpe = load_model(bpe_pair.finetuned, device="cpu")
    a = rubric_judge(bpe, criteria=["fluency"], max_new_tokens=4, cache=GenerationCache(tmp_path))
    b = rubric_judge(byte_model, criteria=["fluency"], max_new_tokens=4, cache=GenerationCache(tmp_path))
    a("q", "a")
    b("q", "a")
    assert a.calls == b.calls == 2 and a.fingerprint != b.fingerprint


# ---- a real server: transformers serve ------------------------------------------------------------


@pytest.mark.slow
def test_transformers_serve_as_judge_gives_no_logprobs_and_says_so_in_one_line(transformers_server, bpe_pair, bpe_model) -> None:
    served = load_model(transformers_server, tokenizer=bpe_pair.finetuned)
    judge = rubric_judge(served, criteria=["accuracy"], max_new_tokens=8, cache=None)
    with pytest.raises(JudgeLogprobsUnavailable) as exc:
        judge("Say hi.", "hi")
    assert "\n" not in str(exc.value) and f"at {served.url}" in str(exc.value) and "scoring='text'" in str(exc.value)
    # scoring="text" works there, and the served judge reasons as the same checkpoint in process does
    far = rubric_judge(served, criteria=["accuracy"], scoring="text", max_new_tokens=12, cache=None)("Say hi.", "hi")
    near = rubric_judge(bpe_model, criteria=["accuracy"], scoring="text", max_new_tokens=12, cache=None)("Say hi.", "hi")
    assert far == near and far.reasoning["accuracy"][0].strip()
