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
* Answers are cached per (model fingerprint, prompt, settings, package version): editing a threshold
  and re-running the suite does not run the model again.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from typing import Any, Literal, Sequence, overload

from pytest_ftmodel.cache import GenerationCache, active_cache, entry_key
from pytest_ftmodel.data import require_strings
from pytest_ftmodel.errors import DataError
from pytest_ftmodel.progress import progress
from pytest_ftmodel.served import is_served
from pytest_ftmodel.tokens import PROMPT_RULE, prompt_parts, uses_chat

log = logging.getLogger("pytest_ftmodel.generation")


class TruncationWarning(UserWarning):
    """Some prompts were cut from the left to fit the model's context."""


def _row_seed(seed: int, prompt: str, index: int) -> int:
    digest = hashlib.sha256(f"{seed}\0{index}\0{prompt}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _eos_ids(model: Any) -> list[int]:
    ids: list[int] = []
    gen_cfg = getattr(model.model, "generation_config", None)
    configured = getattr(gen_cfg, "eos_token_id", None)
    for value in (configured if isinstance(configured, list) else [configured]) + [model.tokenizer.eos_token_id]:
        if isinstance(value, int) and value not in ids:
            ids.append(value)
    return ids


def _processors(torch: Any, temperature: float, top_p: float, seeds: list[int]) -> list[Any]:
    """A logits processor that samples each row from its own seeded stream.

    It leaves only the drawn token finite, so generate()'s greedy step picks exactly that token:
    transformers' own sampling would draw from one stream shared by the whole batch.
    """
    from transformers import LogitsProcessor

    class SeededSampler(LogitsProcessor):
        def __init__(self) -> None:
            self.generators = [torch.Generator().manual_seed(s) for s in seeds]

        def __call__(self, input_ids: Any, scores: Any) -> Any:
            u = torch.cat([torch.rand(1, generator=g, dtype=torch.float64) for g in self.generators])
            probs = torch.softmax(scores.double() / temperature, dim=-1)
            sorted_p, order = probs.sort(dim=-1, descending=True, stable=True)
            keep = (sorted_p.cumsum(-1) - sorted_p) < top_p  # the nucleus: up to and including the crossing token
            sorted_p = sorted_p * keep
            cum = sorted_p.cumsum(-1)
            target = u.to(cum.device)[:, None] * cum[:, -1:]
            pick = (cum < target).sum(-1).clamp(max=scores.shape[-1] - 1)
            token = order.gather(1, pick[:, None])
            out = torch.full_like(scores, float("-inf"))
            out.scatter_(1, token, 0.0)
            return out

    return [SeededSampler()]


def _stopping(torch: Any, tokenizer: Any, prompt_width: int, stop: list[str]) -> list[Any]:
    from transformers import StoppingCriteria

    tail = max(len(s) for s in stop) + 8  # tokens hold at least one character (bytes: one byte)

    class StopStrings(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            texts = tokenizer.batch_decode(input_ids[:, max(prompt_width, input_ids.shape[1] - tail) :], skip_special_tokens=True)
            return torch.tensor([any(s in t for s in stop) for t in texts], device=input_ids.device)

    return [StopStrings()]


def _cut(text: str, stop: list[str]) -> str:
    cuts = [text.find(s) for s in stop if s in text]
    return text[: min(cuts)] if cuts else text


def _generate_batch(
    model: Any,
    batch: list[list[int]],
    seeds: list[int],
    *,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    stop: list[str],
) -> list[str]:
    import torch
    from transformers import GenerationConfig

    tokenizer = model.tokenizer
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    width = max(len(ids) for ids in batch)
    input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for r, ids in enumerate(batch):
        input_ids[r, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        mask[r, width - len(ids) :] = 1
    eos = _eos_ids(model)
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        use_cache=True,
        eos_token_id=eos or None,
        pad_token_id=pad,
    )
    from pytest_ftmodel.model import quiet_transformers

    with quiet_transformers(), torch.inference_mode():
        out = model.model.generate(
            input_ids=input_ids.to(model.device),
            attention_mask=mask.to(model.device),
            generation_config=config,
            logits_processor=_processors(torch, temperature, top_p, seeds) if temperature > 0 else None,
            stopping_criteria=_stopping(torch, tokenizer, width, stop) if stop else None,
        )
    texts = tokenizer.batch_decode(out[:, width:].cpu(), skip_special_tokens=True)
    return [_cut(t, stop) for t in texts]


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
    if isinstance(cache, str) and cache != "auto":
        raise ValueError(f"cache={cache!r}: pass 'auto', None or a GenerationCache")
    store = active_cache() if isinstance(cache, str) else cache
    served = is_served(model)
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
    if todo and served:  # a served model: the same requests, answered over HTTP
        from pytest_ftmodel.served.model import complete

        use_chat = model.uses_chat(chat)

        jobs_served = [(i, s) for i in todo for s in range(samples)]
        bar = progress("generating answers", len(jobs_served))
        texts = complete(
            model,
            [(prompts[i], _row_seed(seed, prompts[i], s)) for i, s in jobs_served],
            chat=use_chat, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, stop=stop,
            on_done=lambda: bar.advance(1),
        )
        bar.close()
        for k, i in enumerate(todo):
            answers[i] = texts[k * samples : (k + 1) * samples]
            if store is not None:
                store.put(keys[i], texts[k * samples : (k + 1) * samples])
        todo = []
    if todo:
        use_chat = uses_chat(model.tokenizer, chat)
        context = model.context_length
        jobs: list[tuple[int, int, list[int]]] = []  # (prompt index, sample index, ids)
        truncated = 0
        # a prompt that fills the context keeps this many tokens: room for up to half the context of answer
        keep = context - min(max_new_tokens, context // 2)
        from pytest_ftmodel.model import quiet_transformers

        with quiet_transformers():  # its "longer than the maximum" warning: the cut below handles it
            for i in todo:
                parts = prompt_parts(model.tokenizer, prompts[i], chat=use_chat)
                ids = parts.ids
                if len(ids) >= context:
                    truncated += 1
                    ids = parts.cut_to(keep)
                jobs.extend((i, s, ids) for s in range(samples))
        if truncated:
            warnings.warn(
                f"{truncated} of {len(todo)} prompt(s) were longer than the model's context of {context} tokens "
                f"allows (no room for an answer): cut from the left to {keep} tokens, keeping any chat template's "
                f"head, to leave room for {context - keep} new tokens",
                TruncationWarning,
                stacklevel=2,
            )
        size = batch_size or (64 if str(model.device).startswith("cuda") else 16)
        # Rows of a batch share one max_new_tokens (a row cannot run past its own context), so batches
        # are made of prompts with the same budget; most prompts have the full max_new_tokens.
        groups: dict[int, list[tuple[int, int, list[int]]]] = {}
        for job in jobs:
            groups.setdefault(min(max_new_tokens, context - len(job[2])), []).append(job)
        results: dict[int, list[str]] = {i: [""] * samples for i in todo}
        done = 0
        bar = progress("generating answers", len(jobs))
        for budget, group in sorted(groups.items(), reverse=True):
            group.sort(key=lambda job: len(job[2]))
            for start in range(0, len(group), size):
                chunk = group[start : start + size]
                texts = _generate_batch(
                    model,
                    [ids for _, _, ids in chunk],
                    [_row_seed(seed, prompts[i], s) for i, s, _ in chunk],
                    max_new_tokens=budget,
                    temperature=temperature,
                    top_p=top_p,
                    stop=stop,
                )
                for (i, s, _), text in zip(chunk, texts):
                    results[i][s] = text
                done += len(chunk)
                log.info("generated %d/%d answers", done, len(jobs))
                bar.advance(len(chunk))
        bar.close()
        for i in todo:
            answers[i] = results[i]
            if store is not None:
                store.put(keys[i], results[i])

    final = [a if a is not None else [] for a in answers]
    if n == 1:
        return [a[0] for a in final]
    return [a * n if samples == 1 else list(a) for a in final]
