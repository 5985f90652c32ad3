"""The in-process engine: a transformers model (one device, or spread with a device map).

* Scoring (:meth:`TransformersEngine.score`, perplexity's windows and pairs): units sorted by length
  and batched with right padding and attention masks; only the scored positions get logits (the
  vocabulary projection runs on them alone where the model takes ``logits_to_keep`` as a mask), a
  float32 log-softmax per target, summed per unit in float64.
* Per-token log-probabilities (:meth:`TransformersEngine.token_logprobs`, multiple choice): units
  that share their head (a question's choices share its prompt) run the head once, heads of one
  length batched together, and their scored tokens on its key-value cache; the log-softmax of the
  scored positions is taken in float64, and only the asked-for ids are read from it (no
  vocabulary-sized vector is kept). A model whose cache cannot be reordered runs each sequence whole.
* Generation (:meth:`TransformersEngine.generate`): prompts grouped by their answer budget and
  length, left padding, KV cache on; seeded sampling per row (see :mod:`pytest_ftmodel.generation`).
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any, Callable, Sequence

from pytest_ftmodel.engines.base import Unit
from pytest_ftmodel.engines.common import TruncationWarning, quiet_transformers
from pytest_ftmodel.progress import progress

log = logging.getLogger("pytest_ftmodel.generation")

# float32 log-softmax rows computed at once: bounds the temporary copy of the logits
_CE_CHUNK_ELEMENTS = 1 << 24


class TransformersEngine:
    """Runs an :class:`~pytest_ftmodel.model.FTModel` in this process."""

    scores_windows = True

    def __init__(self, model: Any) -> None:
        self.ftmodel = model

    def check_scoring(self) -> None:
        return None

    def score(self, units: Sequence[Unit], *, batch_size: int | None = None, on_done: Callable[[int, float], None] | None = None) -> list[float]:
        m = self.ftmodel
        tokenizer = m.tokenizer
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        vocab = int(getattr(m.model.config, "vocab_size", 0) or len(tokenizer))
        return _score_windows(m.model, list(units), pad_id, m.device, _auto_batch_tokens(vocab, m.device), batch_size, on_done=on_done)

    def token_logprobs(self, units: Sequence[Unit], *, batch_size: int | None = None) -> list[list[float]]:
        return _token_logprobs(self.ftmodel, units, batch_size=batch_size)

    def generate(
        self,
        prompts: Sequence[str],
        rows: Sequence[tuple[int, int]],
        *,
        chat: bool | str,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        stop: Sequence[str],
        batch_size: int | None = None,
    ) -> list[str]:
        return _generate_rows(
            self.ftmodel, prompts, rows, chat=chat, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
            stop=list(stop), batch_size=batch_size,
        )


# --- scoring -------------------------------------------------------------------------------------

def _auto_batch_tokens(vocab: int, device: str) -> int:
    """Tokens per batch. On CPU small batches win: the model is compute-bound already and large
    activations fall out of cache (measured in bench/perplexity.py: 512 tokens beat 8192 by 1.5x).
    On accelerators, as many as a quarter of free memory holds, counting the logits."""
    if not device.startswith("cuda"):
        return 512
    import torch

    free, _total = torch.cuda.mem_get_info(torch.device(device))
    per_token = vocab * 4 * 3 + 64 * 1024  # logits (+ a float32 chunk) and activations
    return int(max(512, min(65536, free // 4 // per_token)))


def _score_windows(
    model: Any,
    units: list[tuple[list[int], int]],
    pad_id: int,
    device: str,
    batch_tokens: int,
    batch_size: int | None,
    on_done: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Summed NLL of the last ``m`` targets of each ``(ids, m)`` unit, in length-sorted batches;
    ``on_done(unit, value)`` as each batch is scored."""
    import torch
    import torch.nn.functional as F

    order = sorted(range(len(units)), key=lambda i: -len(units[i][0]))
    results = [0.0] * len(units)
    start = 0
    bar = progress("scoring windows", len(order))
    while start < len(order):
        width = len(units[order[start]][0])
        size = batch_size or max(1, batch_tokens // width)
        batch = order[start : start + size]
        try:
            sums = _score_batch(model, [units[i] for i in batch], pad_id, device, torch, F)
        except torch.cuda.OutOfMemoryError:  # back off and retry smaller
            if size == 1:
                raise
            torch.cuda.empty_cache()
            batch_tokens = max(width, batch_tokens // 2)
            batch_size = max(1, size // 2) if batch_size else None
            continue
        for i, value in zip(batch, sums):
            results[i] = value
            if on_done is not None:
                on_done(i, value)
        start += len(batch)
        bar.advance(len(batch))
    bar.close()
    return results


_KEEPS_MASK: dict[type, bool] = {}


def _keeps_mask(model: Any) -> bool:
    """Whether the model's forward takes ``logits_to_keep`` as a boolean (batch, position) mask: its
    signature names it and this transformers slices with ``slice_logits_to_keep``, which reads such
    a mask (older releases took only an int or a 1-D index)."""
    kind = type(model)
    if kind not in _KEEPS_MASK:
        import inspect

        from transformers import modeling_utils

        try:
            named = "logits_to_keep" in inspect.signature(model.forward).parameters
        except (TypeError, ValueError):
            named = False
        _KEEPS_MASK[kind] = named and hasattr(modeling_utils, "slice_logits_to_keep")
    return _KEEPS_MASK[kind]


def _target_logits(model: Any, ids: Any, mask: Any, keep: Any, n_targets: int) -> tuple[Any, bool]:
    """Logits for the scored positions: ``(logits, flat)``.

    Where the model can (``logits_to_keep`` with a boolean mask) the vocabulary projection runs on
    those positions alone, and the logits come back flat, one row per target in row-major order:
    context and padding positions never get logits. Otherwise the full ``(batch, position, vocab)``
    logits come back, for the caller to index chunk by chunk.
    """
    if _keeps_mask(model):
        try:
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False, logits_to_keep=keep).logits
        except IndexError:  # a model that slices positions itself, reading only an int or 1-D index
            logits = None
        if logits is not None and logits.ndim == 2 and logits.shape[0] == n_targets:
            return logits, True
        _KEEPS_MASK[type(model)] = False
    return model(input_ids=ids, attention_mask=mask, use_cache=False).logits, False


def _score_batch(model: Any, units: list[tuple[list[int], int]], pad_id: int, device: str, torch: Any, F: Any) -> list[float]:
    # a unit's last id is only a target: it is never fed (no logits need it), so a window of
    # max_length + 1 ids (lm-eval's) runs in the model's max_length positions
    width = max(len(ids) for ids, _ in units) - 1
    ids = torch.full((len(units), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(units), width), dtype=torch.long)
    keep = torch.zeros((len(units), width), dtype=torch.bool)
    targets: list[int] = []
    for r, (seq, m) in enumerate(units):
        n = len(seq)
        ids[r, : n - 1] = torch.tensor(seq[:-1], dtype=torch.long)
        mask[r, : n - 1] = 1
        # logits at position p predict token p + 1; score the last m tokens
        keep[r, n - m - 1 : n - 1] = True
        targets.extend(seq[n - m :])  # row-major, the order in which `keep` is read
    ids, mask, keep = ids.to(device), mask.to(device), keep.to(device)
    with torch.inference_mode():
        logits, flat = _target_logits(model, ids, mask, keep, len(targets))
        row_t, col_t = (t.to(logits.device) for t in keep.nonzero(as_tuple=True))
        tgt_t = torch.tensor(targets, device=logits.device)
        nll = torch.empty(len(targets), dtype=torch.float32, device=logits.device)
        chunk = max(1, _CE_CHUNK_ELEMENTS // logits.shape[-1])
        for s in range(0, len(targets), chunk):
            picked = logits[s : s + chunk] if flat else logits[row_t[s : s + chunk], col_t[s : s + chunk]]
            nll[s : s + chunk] = F.cross_entropy(picked.float(), tgt_t[s : s + chunk], reduction="none")
        per_row = torch.zeros(len(units), dtype=torch.float64, device=logits.device)
        per_row.index_add_(0, row_t, nll.double())
    return per_row.cpu().tolist()


def _mc_batch_tokens(device: str) -> int:
    return 512 if not str(device).startswith("cuda") else 16384


def _token_logprobs(model: Any, units: Sequence[Unit], *, batch_size: int | None = None) -> list[list[float]]:
    """Per unit, the log-probabilities of its last ``m`` ids. Units that share their head (the ids
    before the scored ones: the prompt of a question's choices) run the head once and the scored
    tokens on its key-value cache (:func:`_shared_heads`); where the model's cache cannot be
    reordered, each distinct sequence runs whole (:func:`_whole_rows`)."""
    import torch

    try:
        return _shared_heads(model, units, batch_size, torch)
    except _NoSharing:
        return _whole_rows(model, units, batch_size, torch)


class _NoSharing(Exception):
    """The model's key-value cache cannot be reordered per row."""


_PARAMETERS: dict[type, frozenset[str]] = {}


def _takes(net: Any, name: str) -> bool:
    kind = type(net)
    if kind not in _PARAMETERS:
        import inspect

        try:
            _PARAMETERS[kind] = frozenset(inspect.signature(net.forward).parameters)
        except (TypeError, ValueError):
            _PARAMETERS[kind] = frozenset()
    return name in _PARAMETERS[kind]


def _cache_argument(net: Any) -> str | None:
    """The keyword a model's forward takes a key-value cache under (``cache`` in current transformers,
    ``past_key_values`` before), or None."""
    return next((name for name in ("cache", "past_key_values") if _takes(net, name)), None)


def _shared_heads(model: Any, units: Sequence[Unit], batch_size: int | None, torch: Any) -> list[list[float]]:
    heads: dict[tuple[int, ...], dict[tuple[int, ...], None]] = {}  # head -> its distinct scored tails
    for ids, m in units:
        heads.setdefault(tuple(ids[: len(ids) - m]), {})[tuple(ids[len(ids) - m :])] = None
    if any(not head for head in heads):
        raise _NoSharing  # nothing to condition the first token on
    groups: dict[int, list[tuple[int, ...]]] = {}
    for head in heads:
        groups.setdefault(len(head), []).append(head)
    got: dict[tuple[tuple[int, ...], tuple[int, ...]], list[float]] = {}
    bar = progress("scoring choices", sum(len(t) for t in heads.values()))
    budget = _mc_batch_tokens(model.device)
    for length in sorted(groups):
        members = groups[length]
        # heads of one length together (no padding in the pass that reads them)
        size = batch_size or max(1, budget // max(length, 1))
        for s in range(0, len(members), size):
            batch = members[s : s + size]
            got.update(_score_on_heads(model, batch, [list(heads[h]) for h in batch], torch))
            bar.advance(sum(len(heads[h]) for h in batch))
    bar.close()
    return [got[tuple(ids[: len(ids) - m]), tuple(ids[len(ids) - m :])] for ids, m in units]


def _score_on_heads(model: Any, heads: list[tuple[int, ...]], tails: list[list[tuple[int, ...]]], torch: Any) -> dict[Any, list[float]]:
    """Run same-length heads once (keeping their cache), then every tail on its head's cache: the
    first tail token is read from the head's last position, the others from the tail pass (tails
    right-padded: padding follows every position a tail reads). Float64 log-softmax, asked-for ids only."""
    device = model.device
    net = model.model
    cache_arg = _cache_argument(net)
    with torch.inference_mode():
        ids = torch.tensor(heads, dtype=torch.long, device=device)
        # only the last position's logits are needed from the heads' pass
        keep = {"logits_to_keep": 1} if _takes(net, "logits_to_keep") else {}
        out = net(input_ids=ids, use_cache=True, **keep)
        # current transformers name it `cache` (reading `past_key_values` logs a deprecation)
        cache = out.get("cache") if out.get("cache") is not None else out.get("past_key_values")
        if cache_arg is None or cache is None or not hasattr(cache, "batch_select_indices"):
            raise _NoSharing
        first = torch.log_softmax(out.logits[:, -1].double(), dim=-1)
        rows = [(k, t) for k, ts in enumerate(tails) for t in ts]
        values: dict[Any, list[float]] = {}
        firsts = first[torch.tensor([k for k, _ in rows], device=first.device), torch.tensor([t[0] for _, t in rows], device=first.device)].cpu().tolist()
        width = max(len(t) for _, t in rows) - 1
        rest: list[list[float]] = [[] for _ in rows]
        if width > 0:
            cache.batch_select_indices(torch.tensor([k for k, _ in rows], device=device))
            length = len(heads[0])
            feed = torch.zeros((len(rows), width), dtype=torch.long)
            mask = torch.zeros((len(rows), length + width), dtype=torch.long)
            mask[:, :length] = 1
            for r, (_, t) in enumerate(rows):
                feed[r, : len(t) - 1] = torch.tensor(t[:-1], dtype=torch.long)
                mask[r, length : length + len(t) - 1] = 1
            logits = net(input_ids=feed.to(device), attention_mask=mask.to(device), use_cache=False, **{cache_arg: cache}).logits
            picks = [(r, p, t[p + 1]) for r, (_, t) in enumerate(rows) for p in range(len(t) - 1)]
            if picks:
                at_r = torch.tensor([r for r, _, _ in picks], device=logits.device)
                at_p = torch.tensor([p for _, p, _ in picks], device=logits.device)
                logp = torch.log_softmax(logits[at_r, at_p].double(), dim=-1)
                picked = logp[torch.arange(len(picks), device=logp.device), torch.tensor([t for _, _, t in picks], device=logp.device)]
                for (r, _, _), v in zip(picks, picked.cpu().tolist()):
                    rest[r].append(v)
    for r, (k, t) in enumerate(rows):
        values[heads[k], t] = [firsts[r], *rest[r]]
    return values


def _whole_rows(model: Any, units: Sequence[Unit], batch_size: int | None, torch: Any) -> list[list[float]]:
    # the positions of each distinct fed sequence that are scored, and the ids asked for at each
    wanted: dict[tuple[int, ...], dict[int, set[int]]] = {}
    for ids, m in units:
        fed = tuple(ids[:-1])
        at = wanted.setdefault(fed, {})
        for p in range(len(fed) - m, len(fed)):
            at.setdefault(p, set()).add(ids[p + 1])
    groups: dict[int, list[tuple[int, ...]]] = {}
    for fed in wanted:
        groups.setdefault(len(fed), []).append(fed)
    got: dict[tuple[tuple[int, ...], int, int], float] = {}
    bar = progress("scoring choices", len(wanted))
    budget = _mc_batch_tokens(model.device)
    # rows of one length together: no padding enters a batch, and the model runs its plain causal path
    # with no padding mask to build (measured faster on CPU than padded batches, bench/mc.py)
    for length in sorted(groups):
        members = groups[length]
        size = batch_size or max(1, budget // max(length, 1))
        for s in range(0, len(members), size):
            batch = members[s : s + size]
            got.update(_log_probs_at(model, batch, [wanted[fed] for fed in batch], torch))
            bar.advance(len(batch))
    bar.close()
    out = []
    for ids, m in units:
        fed = tuple(ids[:-1])
        n = len(fed)
        out.append([got[fed, p, ids[p + 1]] for p in range(n - m, n)])
    return out


def _log_probs_at(model: Any, rows: list[tuple[int, ...]], wanted: list[dict[int, set[int]]], torch: Any) -> dict[Any, float]:
    """``{(row, position, id): log p(id | row[:position + 1])}`` for the wanted ids, from a float64
    log-softmax of the scored positions only."""
    width = max(len(r) for r in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    keep = torch.zeros((len(rows), width), dtype=torch.bool)
    order: list[tuple[int, int]] = []
    for r, (row, at) in enumerate(zip(rows, wanted)):
        ids[r, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[r, : len(row)] = 1
        cols = sorted(at)
        keep[r, cols] = True
        order.extend((r, c) for c in cols)  # row-major: the order in which `keep` is read
    device = model.device
    with torch.inference_mode():
        logits, flat = _target_logits(model.model, ids.to(device), mask.to(device), keep.to(device), len(order))
        if not flat:
            at_r, at_c = keep.nonzero(as_tuple=True)
            logits = logits[at_r.to(logits.device), at_c.to(logits.device)]
        logp = torch.log_softmax(logits.double(), dim=-1)
        picks = [(k, r, c, t) for k, (r, c) in enumerate(order) for t in sorted(wanted[r][c])]
        index = torch.tensor([[k for k, _, _, _ in picks], [t for _, _, _, t in picks]], device=logp.device)
        values = logp[index[0], index[1]].cpu().tolist()
    return {(rows[r], c, t): v for (_, r, c, t), v in zip(picks, values)}


# --- generation ----------------------------------------------------------------------------------

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


def _generate_rows(
    model: Any,
    prompts: Sequence[str],
    rows: Sequence[tuple[int, int]],
    *,
    chat: bool | str,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    stop: list[str],
    batch_size: int | None,
) -> list[str]:
    from pytest_ftmodel.tokens import prompt_parts, uses_chat

    use_chat = uses_chat(model.tokenizer, chat)
    context = model.context_length
    # a prompt that fills the context keeps this many tokens: room for up to half the context of answer
    keep = context - min(max_new_tokens, context // 2)
    ids_of: dict[int, list[int]] = {}
    truncated = 0
    with quiet_transformers():  # its "longer than the maximum" warning: the cut below handles it
        for i in dict.fromkeys(i for i, _ in rows):
            parts = prompt_parts(model.tokenizer, prompts[i], chat=use_chat)
            ids = parts.ids
            if len(ids) >= context:
                truncated += 1
                ids = parts.cut_to(keep)
            ids_of[i] = ids
    if truncated:
        warnings.warn(
            f"{truncated} of {len(ids_of)} prompt(s) were longer than the model's context of {context} tokens "
            f"allows (no room for an answer): cut from the left to {keep} tokens, keeping any chat template's "
            f"head, to leave room for {context - keep} new tokens",
            TruncationWarning,
            stacklevel=4,
        )
    size = batch_size or (64 if str(model.device).startswith("cuda") else 16)
    # Rows of a batch share one max_new_tokens (a row cannot run past its own context), so batches
    # are made of prompts with the same budget; most prompts have the full max_new_tokens.
    groups: dict[int, list[int]] = {}
    for r, (i, _) in enumerate(rows):
        groups.setdefault(min(max_new_tokens, context - len(ids_of[i])), []).append(r)
    results = [""] * len(rows)
    done = 0
    bar = progress("generating answers", len(rows))
    for budget, group in sorted(groups.items(), reverse=True):
        group.sort(key=lambda r: len(ids_of[rows[r][0]]))
        for start in range(0, len(group), size):
            chunk = group[start : start + size]
            texts = _generate_batch(
                model,
                [ids_of[rows[r][0]] for r in chunk],
                [rows[r][1] for r in chunk],
                max_new_tokens=budget,
                temperature=temperature,
                top_p=top_p,
                stop=stop,
            )
            for r, text in zip(chunk, texts):
                results[r] = text
            done += len(chunk)
            log.info("generated %d/%d answers", done, len(rows))
            bar.advance(len(chunk))
    bar.close()
    return results
