"""Batched generation with chat templates, stop strings, seeded sampling and an on-disk cache.

* Prompts are grouped by length and generated in batches with left padding and attention masks,
  KV cache on; only the new text is returned, cut at the first stop string and at EOS.
* ``chat="auto"`` sends each prompt as a user turn through the tokenizer's chat template when it has
  one; ``chat=False`` sends the text as ``tokenizer(prompt)`` tokenizes it (see
  :mod:`pytest_ftmodel.tokens`): as the model was fine-tuned and is served.
* Greedy by default. Sampling draws, for every (prompt, sample index), from a random stream seeded by
  ``(seed, prompt, sample index)`` alone, so the answers do not depend on batch size, batch
  composition or order.
* An answer is at most ``min(max_new_tokens, context - prompt length)`` tokens: a model cannot write
  past its context. Only a prompt that alone fills the context is cut, from the left, to leave room for
  ``min(max_new_tokens, context // 2)`` new tokens, with one warning that counts them; its head (a
  BOS, a chat template's header and system part) and the template's tail are kept, the start of the
  user's text goes.
* The model runs on its engine (:mod:`pytest_ftmodel.engines`): in-process transformers, or a served
  model answering the same requests over HTTP.
* Answers are cached per (model fingerprint, prompt, settings, package version): editing a threshold
  and re-running the suite does not run the model again.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any, Literal, Sequence, overload

from pytest_ftmodel.cache import GenerationCache, entry_key, resolve_cache
from pytest_ftmodel.data import require_strings
from pytest_ftmodel.errors import DataError
from pytest_ftmodel.engines import engine_of
from pytest_ftmodel.engines.common import TruncationWarning  # noqa: F401 - where it has always been offered
from pytest_ftmodel.tokens import PROMPT_RULE

log = logging.getLogger("pytest_ftmodel.generation")


def _row_seed(seed: int, prompt: str, index: int) -> int:
    digest = hashlib.sha256(f"{seed}\0{index}\0{prompt}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


@overload
def generate(
    model: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = ...,
    temperature: float = ...,
    top_p: float = ...,
    n: Literal[1] = ...,
    seed: int = ...,
    stop: Sequence[str] | None = ...,
    chat: bool | str = ...,
    batch_size: int | None = ...,
    cache: GenerationCache | None | str = ...,
) -> list[str]: ...


# The overlap is the point: n=1 (or no n) gives one string per prompt; an n typed int is taken to be
# more than 1 (a caller whose n may be 1 at run time checks it, as evaluate_code does).
@overload
def generate(  # type: ignore[overload-overlap]
    model: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = ...,
    temperature: float = ...,
    top_p: float = ...,
    n: int,
    seed: int = ...,
    stop: Sequence[str] | None = ...,
    chat: bool | str = ...,
    batch_size: int | None = ...,
    cache: GenerationCache | None | str = ...,
) -> list[list[str]]: ...


def generate(
    model: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_p: float = 1.0,
    n: int = 1,
    seed: int = 0,
    stop: Sequence[str] | None = None,
    chat: bool | str = "auto",
    batch_size: int | None = None,
    cache: GenerationCache | None | str = "auto",
) -> list[str] | list[list[str]]:
    """Generate answers to ``prompts`` with ``model`` (an :class:`~pytest_ftmodel.FTModel`).

    Returns one string per prompt when ``n == 1``, or a list of ``n`` strings per prompt when ``n > 1``.
    An answer is at most ``min(max_new_tokens, context - prompt length)`` tokens long.
    ``temperature=0`` is greedy (``n`` copies of the one answer); otherwise seeded nucleus sampling.
    ``cache="auto"`` uses the pytest session's cache (none outside pytest); pass ``None`` to skip it.
    """
    prompts = require_strings(prompts, "prompt", "to generate from")
    if n < 1 or max_new_tokens < 1:
        raise DataError(f"n ({n}) and max_new_tokens ({max_new_tokens}) must be at least 1")
    if temperature < 0 or not 0 < top_p <= 1:
        raise DataError(f"temperature ({temperature}) must be >= 0 and top_p ({top_p}) in (0, 1]")
    stop = [s for s in (stop or []) if s]
    store = resolve_cache(cache)
    samples = 1 if temperature == 0 else n
    # The key is made without loading the model: what the tokenizer and config make of a setting
    # (chat="auto": the template or not; the context; the effective max_new_tokens) is a function of
    # their files, which the fingerprint covers, so the requested setting keys an answer.
    settings = {
        "max_new_tokens": max_new_tokens,
        "temperature": float(temperature),
        "top_p": float(top_p) if temperature > 0 else 1.0,
        "samples": samples,
        "seed": int(seed) if temperature > 0 else 0,
        "stop": stop,
        "chat": chat if chat == "auto" else bool(chat),
        "prompt_rule": PROMPT_RULE,  # answers made under an older prompt rule are not reused
        **getattr(model, "numerics", {}),  # the device's kind and the dtype change greedy answers too
    }

    answers: list[list[str] | None] = [None] * len(prompts)
    keys: list[str] = []
    for i, p in enumerate(prompts):
        keys.append(entry_key(model.fingerprint, p, settings))
        if store is not None:
            answers[i] = store.get(keys[-1])

    todo = [i for i, a in enumerate(answers) if a is None]
    if todo:
        # sample s of a prompt has its own seed, so it does not depend on how many were asked for
        rows = [(i, _row_seed(seed, prompts[i], s)) for i in todo for s in range(samples)]
        texts = engine_of(model).generate(
            prompts, rows, chat=chat, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, stop=stop,
            batch_size=batch_size,
        )
        for k, i in enumerate(todo):
            answers[i] = texts[k * samples : (k + 1) * samples]
            if store is not None:
                store.put(keys[i], texts[k * samples : (k + 1) * samples])

    final = [a if a is not None else [] for a in answers]
    if n == 1:
        return [a[0] for a in final]
    return [a * n if samples == 1 else list(a) for a in final]
