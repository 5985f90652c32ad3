"""Validation splits (random, temporal, per-category) and train/validation leakage."""

from __future__ import annotations

import random
import re
import unicodedata
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Sequence

from pytest_ftmodel.data import text_of
from pytest_ftmodel.errors import DataError

STRATEGIES = ("random", "temporal", "category")


def _n_val(n: int, test_size: float) -> int:
    return int(round(test_size * n))


def split(
    data: Sequence[Any],
    *,
    strategy: str = "random",
    test_size: float = 0.1,
    seed: int = 42,
    time_key: str | None = None,
    category_key: str = "category",
) -> tuple[list[Any], list[Any]]:
    """Split ``data`` into ``(train, val)``, deterministically; both keep the input order.

    * ``random``: a seeded shuffle picks ``round(test_size * n)`` items (at least 1) for validation.
    * ``temporal``: the latest items are held out: by ``time_key`` when given (ties keep input
      order), else the last items of the input.
    * ``category``: every category (``category_key``) gives ``round(test_size * size)`` of its items
      to validation, so each keeps its share. A category too small for that to be at least one item
      (a single item, say) stays whole in training: the naive per-category ``train_test_split``
      crashes there.
    """
    if strategy not in STRATEGIES:
        raise DataError(f"unknown split strategy {strategy!r}: use one of {', '.join(STRATEGIES)}")
    if not 0 < test_size < 1:
        raise DataError(f"test_size {test_size} must be between 0 and 1 (exclusive), e.g. 0.1")
    items = list(data)
    if len(items) < 2:
        raise DataError(f"cannot split {len(items)} item(s): need at least 2")
    n = len(items)
    if strategy == "random":
        order = list(range(n))
        random.Random(seed).shuffle(order)
        held = set(order[: min(n - 1, max(1, _n_val(n, test_size)))])
    elif strategy == "temporal":
        if time_key is not None:
            missing = [i for i, x in enumerate(items) if not isinstance(x, dict) or time_key not in x]
            if missing:
                raise DataError(f"item {missing[0]} has no {time_key!r}: every item needs the time_key, or pass time_key=None for input order")
            order = sorted(range(n), key=lambda i: (items[i][time_key], i))
        else:
            order = list(range(n))
        held = set(order[n - min(n - 1, max(1, _n_val(n, test_size))) :])
    else:
        groups: dict[Any, list[int]] = defaultdict(list)
        for i, x in enumerate(items):
            if not isinstance(x, dict) or category_key not in x:
                raise DataError(f"item {i} has no {category_key!r}: per-category splits need it on every item (or pass category_key=)")
            groups[x[category_key]].append(i)
        rng = random.Random(seed)
        held = set()
        for key in sorted(groups, key=str):
            members = groups[key][:]
            rng.shuffle(members)
            k = min(len(members) - 1, _n_val(len(members), test_size))
            held.update(members[: max(k, 0)])
        if not held:
            raise DataError(f"no category is large enough to give validation an item at test_size={test_size}: raise test_size")
    return [x for i, x in enumerate(items) if i not in held], [x for i, x in enumerate(items) if i in held]


def _text(item: Any) -> str:
    text = text_of(item, also=("instruction", "prompt"))  # the same reading as perplexity's texts_of
    if text is None:
        raise DataError(f"cannot read text from {type(item).__name__}: pass strings or records with instruction/text/prompt")
    return text


#: the rules :func:`find_leakage` may fold texts by (``normalize=``), and what each folds away.
#: ``structure`` keeps everything that can carry meaning in code and data (``[[1], [2]]`` is not
#: ``[1, 2]``); ``prose`` also folds punctuation, for natural-language items only.
NORMALIZE = {
    "structure": "case, runs of whitespace and Unicode forms (NFKC) folded; brackets, operators and quotes kept",
    "prose": "case, runs of whitespace, Unicode forms (NFKC) and punctuation folded",
    "exact": "nothing folded",
}


def check_rule(normalize: str) -> str:
    """``normalize`` when it names a rule of :data:`NORMALIZE`, else ValueError naming them."""
    if not isinstance(normalize, str) or normalize not in NORMALIZE:
        raise ValueError(f"unknown normalize rule {normalize!r}: use one of {', '.join(map(repr, NORMALIZE))}")
    return normalize


def _fold_case_and_form(text: str) -> str:
    # casefold can leave text that NFKC changes again (and NFKC text that casefold changes), so
    # both are applied until neither changes anything: the fold must be idempotent
    for _ in range(4):
        folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
        if folded == text:
            break
        text = folded
    return text


def normalise(text: str, rule: str = "structure") -> str:
    """``text`` as the leakage check compares it under ``rule`` (see :data:`NORMALIZE`)."""
    if check_rule(rule) == "exact":
        return text
    text = _fold_case_and_form(text)
    if rule == "prose":
        text = "".join(" " if unicodedata.category(c).startswith("P") else c for c in text)
    return re.sub(r"\s+", " ", text).strip()


@dataclass(frozen=True)
class Leak:
    train_index: int
    val_index: int
    exact: bool
    text: str
    rule: str = "structure"  # the normalize rule under which the two items matched


def find_leakage(train: Sequence[Any], val: Sequence[Any], *, normalize: str = "structure") -> list[Leak]:
    """Validation items that also appear in training: exactly, or after folding by the rule
    ``normalize`` names (:data:`NORMALIZE`): by default case, runs of whitespace and Unicode forms,
    keeping brackets, operators and quotes; ``"prose"`` also folds punctuation; ``"exact"`` nothing."""
    rule = check_rule(normalize)
    exact: dict[str, int] = {}
    loose: dict[str, int] = {}
    for i, item in enumerate(train):
        t = _text(item)
        exact.setdefault(t, i)
        loose.setdefault(normalise(t, rule), i)
    leaks = []
    for j, item in enumerate(val):
        t = _text(item)
        folded = normalise(t, rule)
        if t in exact:
            leaks.append(Leak(exact[t], j, True, t, rule))
        elif folded and folded in loose:
            leaks.append(Leak(loose[folded], j, False, t, rule))
    return leaks
