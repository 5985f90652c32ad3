"""Multiple-choice scoring by log-likelihood (lm-evaluation-harness's ``acc`` / ``acc_norm``).

An item is ``{"prompt": str, "choices": [str, ...], "answer": index or choice text, "id"?,
"category"?}``. Every choice is scored as the *continuation* ``target_delimiter + choice`` (default
``" "``, lm-eval's) given the prompt; the predicted choice is the one with the highest score.

The boundary rule (what is scored, token by token):

* Trailing whitespace of the prompt moves to the start of the continuation (as lm-eval does), so
  ``"Q: ... A: "`` + ``"Paris"`` scores ``" Paris"``, the way the text would be tokenized whole.
* The prompt is tokenized as every prompt in this package is
  (:func:`~pytest_ftmodel.tokens.prompt_ids`): ``tokenizer(prompt)`` with the tokenizer's own special
  tokens (a BOS for Llama-style tokenizers, nothing for GPT-2-style ones; an empty prompt is the start
  token alone), or the chat template with its generation prompt (``chat=True``, or ``"auto"`` and the
  tokenizer has one); never a start token twice.
* The continuation is tokenized *alone* (no special tokens) and appended to the prompt's ids. The
  scored tokens are therefore exactly the continuation's own tokens, and there is always at least
  one. lm-eval instead tokenizes prompt and continuation together and cuts at the prompt's token
  count, which gives a continuation no tokens, or tokens of the prompt, where a token spans the join
  (``"Ans" + "wer"`` with a byte-level BPE).
* With a chat template the delimiter is ``""``: the answer follows the assistant header directly.

Normalisations (``normalize=``, all four are always computed and reported):

* ``"none"``: the summed log-likelihood (lm-eval's ``acc``);
* ``"char"``: divided by the choice's length in characters (lm-eval's ``acc_norm``; the delimiter
  is not counted, as lm-eval does not count it);
* ``"byte"``: divided by the choice's length in UTF-8 bytes (fair across scripts, where characters
  are not);
* ``"token"``: divided by its number of tokens (the mean per-token log-likelihood).

Numbers: a question's prompt runs once and its choices run on the prompt's key-value cache (prompts
of one length batched together, no padding); only the continuation positions get logits, and only the asked-for ids are read from their float64
log-softmax. A choice scored alone, in any batch or order gives the same log-likelihood within float32
noise of the forward pass (tests/test_mc.py checks 1e-5 nats against a per-token reference).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from pytest_ftmodel.errors import DataError
from pytest_ftmodel.metrics.stats import proportion_interval

NORMALIZATIONS = ("none", "char", "byte", "token")

#: Bumped whenever the boundary rule or the scoring changes, so cached scores and baselines made under
#: an older rule are not mixed with new ones.
MC_RULE = 1


@dataclass(frozen=True)
class MCItem:
    """One item's scores: per choice the log-likelihood of its continuation (nats), its token count,
    and the choice's length in characters and UTF-8 bytes (without the delimiter, as lm-eval's
    ``acc_norm`` counts); the gold and predicted index under the rule."""

    index: int
    prompt: str
    choices: tuple[str, ...]
    gold: int
    predicted: int
    loglik: tuple[float, ...]
    n_tokens: tuple[int, ...]
    n_chars: tuple[int, ...]
    n_bytes: tuple[int, ...]
    id: str | None = None
    category: str | None = None

    @property
    def correct(self) -> bool:
        return self.predicted == self.gold

    def scores(self, normalize: str) -> tuple[float, ...]:
        """The choices' scores under a normalisation (higher is better)."""
        if normalize == "none":
            return self.loglik
        size = {"char": self.n_chars, "byte": self.n_bytes, "token": self.n_tokens}[normalize]
        return tuple(ll / max(n, 1) for ll, n in zip(self.loglik, size))

    def predicted_by(self, normalize: str) -> int:
        s = self.scores(normalize)
        return max(range(len(s)), key=lambda j: (s[j], -j))  # ties: the first choice, as numpy's argmax


@dataclass(frozen=True)
class MCResult:
    """Accuracy under ``normalize`` with its exact (Clopper-Pearson) interval and ``n``; every
    normalisation's accuracy (``accuracies``); per item the scores (``items``); and the rule that
    produced them (``rule``: recorded in reports and baseline keys)."""

    accuracy: float
    interval: tuple[float, float]
    n: int
    normalize: str
    accuracies: dict[str, float]
    items: tuple[MCItem, ...]
    rule: dict[str, Any] = field(default_factory=dict)

    @property
    def n_correct(self) -> int:
        return sum(it.correct for it in self.items)

    def errors(self) -> list[MCItem]:
        return [it for it in self.items if not it.correct]

    def per_category(self) -> dict[str, tuple[int, int]]:
        """category -> (correct, n); items without a category are under ``""``."""
        out: dict[str, tuple[int, int]] = {}
        for it in self.items:
            c, n = out.get(it.category or "", (0, 0))
            out[it.category or ""] = (c + int(it.correct), n + 1)
        return out


# --------------------------------------------------------------------------------------------
# Items


def load_mc_items(items: Any) -> list[dict[str, Any]]:
    """Items as checked dicts ``{"prompt", "choices", "answer" (an index), "id", "category"}`` from a
    list of dicts or a JSONL path; bad input raises one :class:`DataError` line naming the item."""
    if isinstance(items, (str, os.PathLike)):
        from pytest_ftmodel.data import load_jsonl

        items = load_jsonl(Path(items), required=["prompt", "choices", "answer"])
    if isinstance(items, (str, bytes)) or not hasattr(items, "__len__"):
        raise DataError(f"multiple-choice items must be a list of dicts or a JSONL path, not {type(items).__name__}")
    if len(items) == 0:
        raise DataError("no multiple-choice items: a gate on nothing would pass; give at least one item")
    out = []
    for i, item in enumerate(items):
        where = f"multiple-choice item {i}"
        if not isinstance(item, dict):
            raise DataError(f"{where} is a {type(item).__name__}: give dicts with 'prompt', 'choices' and 'answer'")
        missing = [k for k in ("prompt", "choices", "answer") if k not in item]
        if missing:
            raise DataError(f"{where} has no {', '.join(repr(k) for k in missing)} (keys: {sorted(item)}): add them")
        prompt, choices, answer = item["prompt"], item["choices"], item["answer"]
        if not isinstance(prompt, str):
            raise DataError(f"{where}: 'prompt' must be a string, not {type(prompt).__name__}")
        if not isinstance(choices, (list, tuple)) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
            raise DataError(f"{where}: 'choices' must be a list of at least two strings, got {choices!r:.80}")
        if isinstance(answer, bool) or not isinstance(answer, (int, str)):
            raise DataError(f"{where}: 'answer' must be a choice's index or its text, not {answer!r:.40}")
        if isinstance(answer, str):
            if answer not in choices:
                raise DataError(f"{where}: answer {answer!r:.40} is not one of its choices {list(choices)!r:.120}")
            gold = list(choices).index(answer)
        else:
            if not 0 <= answer < len(choices):
                raise DataError(f"{where}: answer index {answer} is out of range for {len(choices)} choices")
            gold = int(answer)
        out.append(
            {
                "prompt": prompt, "choices": [str(c) for c in choices], "answer": gold,
                "id": None if item.get("id") is None else str(item["id"]),
                "category": None if item.get("category") is None else str(item["category"]),
                "target_delimiter": _delimiter(item.get("target_delimiter"), where),
            }
        )
    return out


def _delimiter(value: Any, where: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise DataError(f"{where}: 'target_delimiter' must be a string, not {type(value).__name__}")


# --------------------------------------------------------------------------------------------
# The boundary rule


def split_boundary(prompt: str, continuation: str) -> tuple[str, str]:
    """The prompt's trailing whitespace moves to the start of the continuation."""
    kept = prompt.rstrip()
    return kept, prompt[len(kept) :] + continuation


def choice_sequence(
    tokenizer: Any, prompt: str, choice: str, *, target_delimiter: str = " ", chat: bool | str = False
) -> tuple[list[int], int, str]:
    """The ids of ``prompt`` then ``target_delimiter + choice`` under the boundary rule (module doc),
    the number of continuation tokens at their end (always at least one), and the continuation text."""
    from pytest_ftmodel.tokens import prompt_ids, uses_chat

    templated = uses_chat(tokenizer, chat)
    context = prompt if templated else split_boundary(prompt, "")[0]
    head = prompt_ids(tokenizer, context, chat=templated)
    return _with_choice(tokenizer, head, prompt, choice, target_delimiter, templated)


def _with_choice(tokenizer: Any, head: list[int], prompt: str, choice: str, target_delimiter: str, templated: bool) -> tuple[list[int], int, str]:
    continuation = choice if templated else split_boundary(prompt, target_delimiter + choice)[1]
    cont = list(tokenizer(continuation, add_special_tokens=False).input_ids)
    if not cont:
        raise DataError(
            f"choice {choice!r:.40} gives no token to score (its continuation {continuation!r} is empty): remove empty choices"
        )
    return head + cont, len(cont), continuation


# --------------------------------------------------------------------------------------------
# Scoring


def score_continuations(
    model: Any, units: Sequence[tuple[list[int], int]], *, batch_size: int | None = None
) -> list[float]:
    """Summed log-likelihood (nats) of the last ``m`` ids of each ``(ids, m)`` unit, from the model's
    engine (:meth:`~pytest_ftmodel.engines.Engine.token_logprobs`: in-process, the choices of a
    prompt run on its key-value cache, float64 log-softmax on the scored positions)."""
    from pytest_ftmodel.engines import engine_of

    if not units:
        return []
    return [math.fsum(lps) for lps in engine_of(model).token_logprobs(units, batch_size=batch_size)]


def _rule(target_delimiter: str, chat: bool | str, templated: bool) -> dict[str, Any]:
    return {"mc_rule": MC_RULE, "target_delimiter": "" if templated else target_delimiter, "chat": templated}


def _cache_key(model: Any, item: dict[str, Any], rule: dict[str, Any]) -> str:
    from pytest_ftmodel.cache import entry_key

    identity = json.dumps(["mc", item["prompt"], item["choices"], item.get("target_delimiter")], ensure_ascii=False)
    return entry_key(model.fingerprint, identity, {"score": "mc-loglik", **rule, **getattr(model, "numerics", {})})


def _item_delimiter(item: dict[str, Any], default: str) -> str:
    """An item's own ``target_delimiter`` (an lm-eval task's, see :func:`~pytest_ftmodel.metrics.mc_tasks.mc_items`), else the call's."""
    own = item.get("target_delimiter")
    return default if own is None else str(own)


def _is_entry(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("loglik"), list)
        and all(isinstance(v, float) and math.isfinite(v) for v in value["loglik"])
        and isinstance(value.get("n_tokens"), list)
        and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in value["n_tokens"])
        and isinstance(value.get("chat"), bool)
    )


def choice_logliks(
    model: Any,
    items: Sequence[dict[str, Any]],
    *,
    target_delimiter: str = " ",
    chat: bool | str = False,
    batch_size: int | None = None,
    cache: Any = "auto",
) -> tuple[list[tuple[list[float], list[int]]], bool]:
    """Per checked item (:func:`load_mc_items`): every choice's log-likelihood and token count under
    the boundary rule, and whether the chat template was used. Taken from ``cache`` where it holds
    them, keyed by the settings as requested (what ``chat="auto"`` makes of them follows from the
    tokenizer's files, which the fingerprint covers): when every item is cached, the model and its
    tokenizer are never touched."""
    from pytest_ftmodel.engines import engine_of
    from pytest_ftmodel.tokens import prompt_ids, uses_chat

    from pytest_ftmodel.cache import resolve_cache

    store = resolve_cache(cache)
    requested = {"mc_rule": MC_RULE, "target_delimiter": target_delimiter, "chat": chat if chat == "auto" else bool(chat)}
    keys = [_cache_key(model, it, requested) for it in items] if store is not None else []
    out: list[tuple[list[float], list[int]] | None] = [None] * len(items)
    templated_seen: set[bool] = set()
    for i, item in enumerate(items):
        found = store.metrics.get(keys[i], _is_entry) if store is not None else None
        if found is not None and len(found["loglik"]) == len(found["n_tokens"]) == len(item["choices"]):
            out[i] = (list(found["loglik"]), list(found["n_tokens"]))
            templated_seen.add(bool(found["chat"]))
    missing = [i for i, x in enumerate(out) if x is None]
    if not missing and len(templated_seen) == 1:
        return [x for x in out if x is not None], templated_seen.pop()
    engine = engine_of(model)
    engine.check_scoring()
    tokenizer = model.tokenizer
    templated = uses_chat(tokenizer, chat)
    continuations = {
        i: [c if templated else split_boundary(items[i]["prompt"], _item_delimiter(items[i], target_delimiter) + c)[1] for c in items[i]["choices"]]
        for i in missing
    }
    # every continuation alone, in one call (a fast tokenizer encodes a batch as it encodes each text)
    flat = [c for i in missing for c in continuations[i]]
    encoded = iter(tokenizer(flat, add_special_tokens=False).input_ids if flat else [])
    units: list[tuple[list[int], int]] = []
    owners: list[tuple[int, int]] = []
    counts: dict[int, list[int]] = {}
    for i in missing:
        item = items[i]
        head = prompt_ids(tokenizer, item["prompt"] if templated else split_boundary(item["prompt"], "")[0], chat=templated)
        counts[i] = []
        for j, (c, cont) in enumerate(zip(item["choices"], continuations[i])):
            own = list(next(encoded))
            if not own:
                raise DataError(
                    f"multiple-choice item {i}: choice {c!r:.40} gives no token to score (its continuation {cont!r} is empty): "
                    "remove empty choices"
                )
            units.append((head + own, len(own)))
            owners.append((i, j))
            counts[i].append(len(own))
    values = score_continuations(model, units, batch_size=batch_size)
    fresh: dict[int, list[float]] = {i: [0.0] * len(items[i]["choices"]) for i in missing}
    for (i, j), v in zip(owners, values):
        fresh[i][j] = v
    for i in missing:
        out[i] = (fresh[i], counts[i])
        if store is not None:
            store.metrics.put(keys[i], {"loglik": fresh[i], "n_tokens": counts[i], "chat": templated})
    return [x for x in out if x is not None], templated


def mc_accuracy(
    model: Any,
    items: Any,
    *,
    normalize: str = "none",
    target_delimiter: str = " ",
    chat: bool | str = False,
    batch_size: int | None = None,
    cache: Any = "auto",
) -> MCResult:
    """Accuracy of ``model`` on multiple-choice ``items`` (dicts or a JSONL path; see the module doc
    for the boundary rule and the normalisations). ``normalize`` picks the rule that decides
    ``accuracy``; every normalisation's accuracy is in ``accuracies``. ``chat``: format the prompt
    through the chat template (then the delimiter is ``""``). ``cache="auto"`` reuses per-item scores
    from the pytest session's cache."""
    if normalize not in NORMALIZATIONS:
        raise DataError(f"normalize={normalize!r} is not a normalisation: use one of {', '.join(NORMALIZATIONS)}")
    if not isinstance(target_delimiter, str):
        raise DataError(f"target_delimiter must be a string, not {type(target_delimiter).__name__}")
    checked = load_mc_items(items)
    scored, templated = choice_logliks(model, checked, target_delimiter=target_delimiter, chat=chat, batch_size=batch_size, cache=cache)
    mc_items: list[MCItem] = []
    for i, (item, (lls, counts)) in enumerate(zip(checked, scored)):
        base = MCItem(
            index=i, prompt=item["prompt"], choices=tuple(item["choices"]), gold=item["answer"], predicted=-1,
            loglik=tuple(lls), n_tokens=tuple(counts), n_chars=tuple(len(c) for c in item["choices"]),
            n_bytes=tuple(len(c.encode("utf-8")) for c in item["choices"]), id=item["id"], category=item["category"],
        )
        mc_items.append(_with_prediction(base, normalize))
    n = len(mc_items)
    accuracies = {rule: sum(it.predicted_by(rule) == it.gold for it in mc_items) / n for rule in NORMALIZATIONS}
    correct = sum(it.correct for it in mc_items)
    return MCResult(
        accuracy=correct / n, interval=proportion_interval(correct, n), n=n, normalize=normalize, accuracies=accuracies,
        items=tuple(mc_items), rule={**_rule(target_delimiter, chat, templated), "normalize": normalize},
    )


def _with_prediction(item: MCItem, normalize: str) -> MCItem:
    from dataclasses import replace

    return replace(item, predicted=item.predicted_by(normalize))


def item_identity(item: MCItem) -> list[Any]:
    """What an item is, for baseline ids: its prompt, choices and gold index."""
    return ["mc", item.prompt, list(item.choices), item.gold]


def rule_signature(result: MCResult) -> str:
    """A short text naming the rule, as reports show it (sacrebleu-style signature)."""
    r = result.rule
    return f"mc:{r.get('mc_rule')}|norm:{r.get('normalize')}|delim:{json.dumps(r.get('target_delimiter'))}|chat:{r.get('chat')}"
