"""Overfitting: the train/validation loss gap, memorised answers, and the diversity of answers.

Loss is the token-weighted mean NLL with exactly :func:`~pytest_ftmodel.perplexity`'s scoring. Items
are plain texts, or instruction records (``instruction`` + ``output``): for records the loss is that
of the output given the instruction, formatted as the model is prompted (its chat template when it
has one), which is what supervised fine-tuning minimises.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

from pytest_ftmodel.errors import DataError

BANDS = ((0.5, "strong overfitting"), (0.2, "some overfitting"))
ADVICE = {
    "fine": "train and validation loss agree",
    "some overfitting": "consider fewer epochs, early stopping on validation loss, or more data",
    "strong overfitting": (
        "the model learned its training set rather than the task: train fewer epochs (load the checkpoint with "
        "the lowest eval loss), add data, raise LoRA dropout or weight decay, or lower the LoRA rank"
    ),
}


def band(gap: float) -> str:
    """Fine-tuners' reading of a loss gap: > 0.5 strong, 0.2-0.5 some overfitting, < 0.2 fine."""
    for bar, name in BANDS:
        if gap > bar:
            return name
    return "fine"


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.casefold())


def _normal(text: str) -> str:
    return " ".join(_words(text))


@dataclass(frozen=True)
class Memorised:
    index: int
    prompt: str
    answer: str
    training_output: str
    verbatim: bool


@dataclass(frozen=True)
class OverfitResult:
    train_loss: float
    val_loss: float
    gap: float
    ratio: float
    band: str
    advice: str
    train: Any  # PerplexityResult
    val: Any
    n_answers: int = 0
    memorised_share: float | None = None
    memorised: tuple[Memorised, ...] = ()
    distinct1: float | None = None
    distinct2: float | None = None
    duplicate_share: float | None = None
    #: answers that equal a common training output (a label, a template answer) other than their own
    #: reference: not counted as memorised (see :func:`memorisation`)
    n_common_answers: int = 0
    #: answers per validation item (``samples=``); with more than one, ``n_answers`` counts items,
    #: ``memorised_share`` is the mean over items of each item's share of copying samples,
    #: ``memorised`` holds each copying item once (its first copying sample), the diversity figures
    #: are means over samples, and ``stability`` the :class:`~pytest_ftmodel.sampling.Repeats` of
    #: copied/not per sample (pass@k: the share of items that copy in any sample)
    samples: int = 1
    stability: Any = None


def _items(data: Sequence[Any], what: str) -> tuple[list[Any], str]:
    if isinstance(data, (str, bytes)) or not isinstance(data, Sequence) or not data:
        raise DataError(f"{what} is empty or not a list: pass a non-empty list of texts or instruction records")
    kinds = {"text" if isinstance(x, str) else "record" if isinstance(x, dict) and "instruction" in x and "output" in x else "other" for x in data}
    if kinds == {"text"}:
        return list(data), "text"
    if kinds == {"record"}:
        return [(str(x["instruction"]), str(x["output"])) for x in data], "record"
    if "other" in kinds:
        bad = next(i for i, x in enumerate(data) if not (isinstance(x, str) or (isinstance(x, dict) and "instruction" in x and "output" in x)))
        shape = f"item {bad} is neither a text nor a record with 'instruction' and 'output'"
    else:
        shape = "mixed texts and records"
    raise DataError(f"{what}: {shape}; pass all plain strings or all instruction records")


#: a training output shorter than this many words is a label or short answer, not copyable material
MIN_WORDS = 4
#: an output (or an n-gram) found in this many training records or more is a label or template
COMMON = 3


def _check_copy_rule(ngram: int, min_words: int, common: int) -> None:
    if ngram < 1 or min_words < 1 or common < 2:
        raise DataError(f"ngram {ngram} and min_words {min_words} must be at least 1, and common {common} at least 2")


def common_outputs(training_outputs: Sequence[str], *, min_words: int = MIN_WORDS, common: int = COMMON) -> set[str]:
    """The normalised training outputs that an answer may equal without having memorised anything:
    those of fewer than ``min_words`` words (class labels, names, numbers) and those that occur in
    ``common`` or more training records (labels, template answers)."""
    counts = Counter(_normal(o) for o in training_outputs)
    return {n for n, c in counts.items() if n and (c >= common or len(n.split()) < min_words)}


def memorisation(
    answers: Sequence[str],
    prompts: Sequence[str],
    references: Sequence[str],
    training_outputs: Sequence[str],
    *,
    ngram: int = 8,
    min_words: int = MIN_WORDS,
    common: int = COMMON,
) -> list[Memorised]:
    """Answers that copy a distinctive training output verbatim, or share ``ngram`` consecutive words
    with one, where the item's own reference does not explain the copy (a correct answer that happens
    to equal a training output is not memorisation).

    An answer equal to a common training output (see :func:`common_outputs`: a label such as
    "negative", a template answer) is not a copy: on data that mixes classification records every
    wrong label equals some training output. Likewise an n-gram found in ``common`` or more training
    outputs is a template phrase, not a copy.
    """
    _check_copy_rule(ngram, min_words, common)
    shared = common_outputs(training_outputs, min_words=min_words, common=common)
    exact: dict[str, str] = {}
    gram_count: Counter[tuple[str, ...]] = Counter()
    gram_source: dict[tuple[str, ...], str] = {}
    for out in training_outputs:
        norm = _normal(out)
        if norm and norm not in shared:
            exact.setdefault(norm, out)
        w = norm.split()
        grams = {tuple(w[i : i + ngram]) for i in range(len(w) - ngram + 1)}
        gram_count.update(grams)  # each record counts a gram once
        for gram in grams:
            gram_source.setdefault(gram, out)
    found = []
    for i, (answer, prompt, ref) in enumerate(zip(answers, prompts, references)):
        norm = _normal(answer)
        if not norm or norm == _normal(ref):
            continue
        if norm in exact:
            found.append(Memorised(i, prompt, answer, exact[norm], True))
            continue
        w = norm.split()
        ref_text = " " + _normal(ref) + " "
        for j in range(len(w) - ngram + 1):
            gram = tuple(w[j : j + ngram])
            if 0 < gram_count[gram] < common and (" " + " ".join(gram) + " ") not in ref_text:
                found.append(Memorised(i, prompt, answer, gram_source[gram], False))
                break
    return found


def diversity(answers: Sequence[str]) -> tuple[float, float, float]:
    """distinct-1, distinct-2 (unique n-grams / all n-grams, over all answers) and the duplicate share."""
    unigrams, bigrams = [], []
    for a in answers:
        w = _words(a)
        unigrams += w
        bigrams += list(zip(w, w[1:]))
    d1 = len(set(unigrams)) / len(unigrams) if unigrams else 0.0
    d2 = len(set(bigrams)) / len(bigrams) if bigrams else 0.0
    normals = [_normal(a) for a in answers]
    dup = 1.0 - len(set(normals)) / len(normals) if normals else 0.0
    return d1, d2, dup


def overfit_report(
    model: Any,
    train: Sequence[Any],
    val: Sequence[Any],
    *,
    ngram: int = 8,
    min_words: int = MIN_WORDS,
    common: int = COMMON,
    max_new_tokens: int = 128,
    answers: bool = True,
    samples: int = 1,
    **generate_kwargs: Any,
) -> OverfitResult:
    """Loss gap and ratio with its band and advice; for instruction records also memorisation of
    training outputs in answers to validation prompts, and the diversity of those answers.

    ``samples=k`` (with ``temperature > 0``, ``top_p``, ``seed``): k seeded answers per validation
    item, each checked (see :mod:`pytest_ftmodel.sampling`)."""
    from pytest_ftmodel.sampling import check_sampling

    check_sampling(samples, generate_kwargs.get("temperature", 0.0), top_p=generate_kwargs.get("top_p", 1.0), seed=generate_kwargs.get("seed", 0))
    from pytest_ftmodel.metrics.perplexity import perplexity

    _check_copy_rule(ngram, min_words, common)
    train_items, train_kind = _items(train, "train")
    val_items, val_kind = _items(val, "val")
    if train_kind != val_kind:
        raise DataError("train and val differ in shape (texts vs instruction records): pass the same kind for both")
    chat = "auto" if val_kind == "record" else False
    # the scores go through the cache the answers use (``cache=`` among the keywords)
    cache = generate_kwargs.get("cache", "auto")
    tr = perplexity(model, _as_trained(train_items, val_kind), chat=chat, cache=cache)
    va = perplexity(model, _as_trained(val_items, val_kind), chat=chat, cache=cache)
    gap = va.mean_nll - tr.mean_nll
    name = band(gap)
    n_answers, share, copies, d1, d2, dup, n_common = 0, None, [], None, None, None, 0
    stability = None
    if val_kind == "record" and answers:
        from pytest_ftmodel.sampling import repeats, sampled_answers

        prompts = [p for p, _ in val_items]
        rows = sampled_answers(model, prompts, samples=samples, max_new_tokens=max_new_tokens, **generate_kwargs)
        refs, outputs = [o for _, o in val_items], [o for _, o in train_items]
        shared = common_outputs(outputs, min_words=min_words, common=common)
        copied = [[0.0] * samples for _ in prompts]
        first: dict[int, Memorised] = {}
        figures = []
        for j in range(samples):
            got = [row[j] for row in rows]
            for m in memorisation(got, prompts, refs, outputs, ngram=ngram, min_words=min_words, common=common):
                copied[m.index][j] = 1.0
                first.setdefault(m.index, m)
            n_common += sum(1 for a, r in zip(got, refs) if _normal(a) in shared and _normal(a) != _normal(r))
            figures.append(diversity(got))
        copies = [first[i] for i in sorted(first)]
        n_answers = len(prompts)
        share = sum(sum(row) / samples for row in copied) / len(prompts)
        d1, d2, dup = (sum(f[m] for f in figures) / samples for m in range(3))
        stability = repeats(copied, binary=True) if samples > 1 else None
    return OverfitResult(
        train_loss=tr.mean_nll,
        val_loss=va.mean_nll,
        gap=gap,
        ratio=va.mean_nll / tr.mean_nll if tr.mean_nll else float("inf"),
        band=name,
        advice=ADVICE[name],
        train=tr,
        val=va,
        n_answers=n_answers,
        memorised_share=share,
        memorised=tuple(copies),
        distinct1=d1,
        distinct2=d2,
        duplicate_share=dup,
        n_common_answers=n_common,
        samples=samples,
        stability=stability,
    )


def _as_trained(items: list[Any], kind: str) -> list[Any]:
    """Records as instruction records again, which :func:`~pytest_ftmodel.metrics.perplexity.perplexity`
    formats as the model read them in training (with ``chat="auto"``, see
    :func:`~pytest_ftmodel.metrics.perplexity.as_trained`)."""
    if kind != "record":
        return items
    return [{"instruction": p, "output": o} for p, o in items]
