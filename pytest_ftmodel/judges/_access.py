"""How a judge model is asked: its reasoning (generated as any answer is), and the log-probabilities
of the score tokens at the position right after the final-score cue, from an in-process checkpoint
(one forward pass) or a served model (one ``/completions`` request with ``max_tokens=1`` and
``logprobs``). Metrics never ask which engine; this module does, once."""

from __future__ import annotations

import math
from typing import Any, Sequence

from pytest_ftmodel.judges.scores import LEVELS, JudgeError, JudgeLogprobsUnavailable
from pytest_ftmodel.served import is_served

#: alternatives the server is asked for at the score position (vLLM's default maximum is 20)
TOP_LOGPROBS = 20


def score_logprobs(model: Any, prompt: str, reasoning: str, cue: str, *, chat: bool | str) -> dict[int, float]:
    """``{k: log p(k)}`` for the scores 1..5 at the position after ``prompt``, the judge's
    ``reasoning`` and the ``cue`` (levels the model gives no probability to are left out)."""
    if is_served(model):
        return _served(model, prompt + reasoning + cue)
    return _in_process(model, prompt, reasoning, cue, chat=chat)


def score_token_ids(tokenizer: Any, cue: str) -> tuple[str, dict[int, list[int]]]:
    """What follows the cue before the score (``""`` or ``" "``) and the token id of each score there.
    Byte-pair tokenizers write " 4" as one token right after the cue; byte-level ones write the space
    as a token of its own, so the space joins the context and the digit is read after it."""
    base = list(tokenizer(cue, add_special_tokens=False).input_ids)
    spaced = list(tokenizer(cue + " ", add_special_tokens=False).input_ids)
    for lead, context in (("", base), (" ", spaced)):
        ids: dict[int, list[int]] = {}
        for k in LEVELS:
            whole = list(tokenizer(cue + f" {k}", add_special_tokens=False).input_ids)
            if whole[: len(context)] == context and len(whole) == len(context) + 1:
                ids[k] = [whole[-1]]
        if len(ids) == len(LEVELS):
            return lead, ids
    raise JudgeError(
        "the judge's tokenizer does not write the scores 1-5 as single tokens after the cue; score with scoring='text'"
    )


def _in_process(model: Any, prompt: str, reasoning: str, cue: str, *, chat: bool | str) -> dict[int, float]:
    import torch

    from pytest_ftmodel.model import input_device
    from pytest_ftmodel.tokens import prompt_parts

    tok = model.tokenizer
    lead, ids_of = score_token_ids(tok, cue)
    ids = prompt_parts(tok, prompt, chat=chat).ids + list(tok(reasoning + cue + lead, add_special_tokens=False).input_ids)
    ids = ids[-model.context_length :]
    with torch.inference_mode():
        logits = model.model(input_ids=torch.tensor([ids], device=input_device(model.model))).logits[0, -1].float()
    logp = torch.log_softmax(logits, dim=-1)
    return {k: float(torch.logsumexp(logp[list(v)], dim=0)) for k, v in ids_of.items()}


def _served(model: Any, text: str) -> dict[int, float]:
    body = {"model": model.model_id, "prompt": text, "max_tokens": 1, "temperature": 0.0, "logprobs": TOP_LOGPROBS}
    out = model.client.post("/completions", body)
    try:
        top = out["choices"][0]["logprobs"]["top_logprobs"][0]
    except (KeyError, IndexError, TypeError):
        top = None
    if not isinstance(top, dict) or not top:
        raise JudgeLogprobsUnavailable(
            f"the served judge {model.model_id!r} at {model.url} returns no log-probabilities for the next token "
            "(its /completions answer has no logprobs.top_logprobs): score with rubric_judge(..., scoring='text'), "
            "or serve the judge with a server that gives them (vLLM, llama.cpp)"
        )
    found: dict[int, list[float]] = {}
    for token, value in top.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value > 1e-6:
            raise JudgeError(
                f"the served judge {model.model_id!r} gave the log-probability {value!r:.40} for the token "
                f"{str(token)!r:.20}: not a finite number <= 0; its log-probabilities are broken, score with "
                "scoring='text' or use another server"
            )
        level = str(token).strip()
        if level in {str(k) for k in LEVELS}:
            found.setdefault(int(level), []).append(min(float(value), 0.0))
    total = {k: sum(math.exp(v) for v in vs) for k, vs in found.items()}
    return {k: math.log(p) for k, p in total.items() if p > 0.0}  # exp(-1e308) is 0: that level weighs nothing


def reasoning_texts(
    model: Any, prompts: Sequence[str], *, samples: int, temperature: float, top_p: float, seed: int,
    max_new_tokens: int, stop: Sequence[str], chat: bool | str,
) -> list[list[str]]:
    """``samples`` reasonings per judge prompt: greedy when ``temperature`` is 0, else seeded per sample."""
    from pytest_ftmodel.generation import generate

    if temperature == 0 or samples == 1:
        texts = generate(
            model, list(prompts), max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
            seed=seed, stop=list(stop), chat=chat, cache=None,
        )
        return [[t] * samples for t in texts]
    return generate(
        model, list(prompts), max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
        n=samples, seed=seed, stop=list(stop), chat=chat, cache=None,
    )
