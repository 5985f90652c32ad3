"""Scores against reference answers: exact match and token F1 (SQuAD v1.1), BLEU and chrF (sacrebleu).

* ``exact_match`` and ``f1`` normalise as the SQuAD v1.1 evaluation script does (and lm-eval's
  SQuAD tasks): lower case, punctuation removed, the articles a/an/the removed, whitespace folded;
  with several references an item takes its best. EM is a share of 0/1 items (Clopper-Pearson
  interval); F1 a mean of [0, 1] item scores (the beta interval at the fractional count, see
  :mod:`~pytest_ftmodel.metrics.stats`). Both are on a 0-1 scale.
* ``bleu`` and ``chrf`` are sacrebleu's corpus scores (0-100, its defaults), with its signature
  (tokenizer, smoothing, version) kept in the result, the record's settings and the baseline key.
  Per item, sacrebleu's sentence scores (BLEU with effective order, as ``sentence_bleu``) go to the
  baseline. Interval: percentile bootstrap over items, each resample's corpus score computed from the
  resampled items' summed sufficient statistics (what sacrebleu sums itself), seeded, at the expanded
  percentile levels (Hesterberg 2015) that correct its narrowness at small samples. At the edges
  (every item scores 0, or 100) every resample is the same and the bootstrap collapses to a point:
  there the interval is the beta interval of the sentence scores (scaled to 0-100), which keeps its
  coverage as EM's does (8 perfect items: [63.1, 100], never [100, 100]).

The sacrebleu results of a call are remembered in the session's metric cache, so that a warm run
does not import sacrebleu.

With ``samples=k`` (a model, ``temperature > 0``; see :mod:`pytest_ftmodel.sampling`) every item is
answered k times and each answer scored; an item's value is the mean over its samples and the figure
the mean over items, with the items as the unit of the interval (the beta interval of the per-item
means). For BLEU and chrF that figure is the mean of the sentence scores (BLEU with effective
order), not a corpus score: pooling k answers per item into one corpus would weigh items by their
answers' lengths and make the draws, not the items, the unit.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from collections import Counter
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from pytest_ftmodel.errors import DataError
from pytest_ftmodel.metrics.stats import BOOTSTRAP_SAMPLES, BOOTSTRAP_SEED, bounded_mean_interval, expanded_levels, proportion_interval
from pytest_ftmodel.sampling import Repeats, repeats

METRICS = ("exact_match", "f1", "bleu", "chrf")
#: how the BLEU/chrF interval is computed, in the cache key: a cached result of another rule is not read
INTERVAL_RULE = "expanded-percentile-bootstrap/1"
#: the scale of each metric's figure (and of its bar)
SCALE = {"exact_match": 1.0, "f1": 1.0, "bleu": 100.0, "chrf": 100.0}


# ---- SQuAD v1.1 normalisation --------------------------------------------------------------

_PUNCTUATION = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces (SQuAD v1.1's ``normalize_answer``)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match_score(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def f1_score(prediction: str, reference: str) -> float:
    """Token F1 of the normalised texts (SQuAD v1.1's ``f1_score``)."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    common = Counter(pred) & Counter(ref)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


# ---- results ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReferenceItem:
    index: int
    prompt: str
    references: tuple[str, ...]
    generated: str
    value: float  # the item's score: 0/1 (EM), [0, 1] (F1), sentence score 0-100 (BLEU, chrF)
    #: with samples > 1: every sample's answer and score (``generated`` is sample 0's; ``value`` their mean)
    answers: tuple[str, ...] = ()
    values: tuple[float, ...] = ()


@dataclass(frozen=True)
class ReferenceResult:
    """One reference score over items, its 95% interval, the per-item scores and (sacrebleu) signature."""

    metric: str
    score: float
    interval: tuple[float, float]
    items: tuple[ReferenceItem, ...]
    signature: str = ""
    interval_method: str = ""
    samples: int = 1
    stability: Repeats | None = None

    @property
    def n(self) -> int:
        return len(self.items)

    def worst(self, k: int = 3) -> list[ReferenceItem]:
        return sorted(self.items, key=lambda item: (item.value, item.index))[:k]


def _references(value: Any, i: int, key: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise DataError(f"data item {i}: {key!r} must be a reference string or a non-empty list of them, got {type(value).__name__}")


def _inputs(
    answers_or_model: Any, data: Sequence[Any], prompt_key: str, reference_key: str, max_new_tokens: int, generate_kwargs: dict[str, Any],
    samples: int = 1,
) -> tuple[list[str], list[tuple[str, ...]], list[list[str]]]:
    """Prompts, references and answers (a list of ``samples`` per item): generated by the model, or
    given as strings (then ``data`` holds items with ``reference_key`` or the references themselves)."""
    if isinstance(data, (str, bytes)) or not isinstance(data, Sequence):
        raise DataError(f"data must be a list of items, got {type(data).__name__}")
    if not data:
        raise DataError("data is empty: pass at least one item (a gate on nothing would pass)")
    given = isinstance(answers_or_model, (list, tuple)) and all(isinstance(a, str) for a in answers_or_model)
    refs, prompts = [], []
    for i, item in enumerate(data):
        if isinstance(item, Mapping):
            if reference_key not in item:
                raise DataError(f"data item {i} has no {reference_key!r}: add it, or pass reference_key=")
            refs.append(_references(item[reference_key], i, reference_key))
            prompts.append(str(item.get(prompt_key, "")))
        elif given:
            refs.append(_references(item, i, reference_key))
            prompts.append("")
        else:
            raise DataError(f"data item {i} is {type(item).__name__}: pass dicts with {prompt_key!r} and {reference_key!r}")
    if given:
        answers = list(answers_or_model)
        if len(answers) != len(refs):
            raise DataError(f"{len(answers)} answers for {len(refs)} references: pass one answer per item")
        if samples != 1:
            raise DataError(f"samples={samples!r} with answers given: pass the model to sample its answers, or drop samples=")
        return prompts, refs, [[a] for a in answers]
    from pytest_ftmodel.sampling import sampled_answers

    missing = next((i for i, p in enumerate(prompts) if not p and prompt_key not in data[i]), None)
    if missing is not None:
        raise DataError(f"data item {missing} has no {prompt_key!r}: add it, or pass prompt_key=")
    return prompts, refs, sampled_answers(answers_or_model, prompts, samples=samples, max_new_tokens=max_new_tokens, **generate_kwargs)


def _sampled_result(
    metric: str, prompts: list[str], refs: list[tuple[str, ...]], rows: list[list[str]], values: list[list[float]], signature: str = "",
) -> ReferenceResult:
    """The result of several samples per item: each item's value the mean of its samples' scores, the
    interval over items (see the module doc)."""
    scale = SCALE[metric]
    # within the scale: sacrebleu's sentence BLEU of a perfect match can exceed 100 by a rounding error
    values = [[min(max(float(v), 0.0), scale) for v in row] for row in values]
    stability = repeats([[v / scale for v in row] for row in values], binary=metric == "exact_match")
    items = tuple(
        ReferenceItem(i, p, rs, row[0], scale * m, answers=tuple(row), values=tuple(vs))
        for i, (p, rs, row, vs, m) in enumerate(zip(prompts, refs, rows, values, stability.means))
    )
    low, high = bounded_mean_interval(stability.means)
    method = f"beta interval of the per-item means over {stability.samples} samples (items as the unit)"
    return ReferenceResult(
        metric, scale * stability.mean, (scale * low, scale * high), items, signature=signature, interval_method=method,
        samples=stability.samples, stability=stability,
    )


def _squad(
    metric: str, answers_or_model: Any, data: Sequence[Any], *, prompt_key: str, reference_key: str, max_new_tokens: int, samples: int = 1, **kw: Any,
) -> ReferenceResult:
    prompts, refs, rows_ = _inputs(answers_or_model, data, prompt_key, reference_key, max_new_tokens, kw, samples)
    score = exact_match_score if metric == "exact_match" else f1_score
    if samples > 1:
        return _sampled_result(metric, prompts, refs, rows_, [[max(score(a, r) for r in rs) for a in row] for row, rs in zip(rows_, refs)])
    answers = [row[0] for row in rows_]
    values = [max(score(a, r) for r in rs) for a, rs in zip(answers, refs)]
    rows = tuple(ReferenceItem(i, p, rs, a, v) for i, (p, rs, a, v) in enumerate(zip(prompts, refs, answers, values)))
    mean = sum(values) / len(values)
    if metric == "exact_match":
        interval, method = proportion_interval(int(sum(values)), len(values)), "Clopper-Pearson"
    else:
        interval, method = bounded_mean_interval(values), "beta interval of a [0, 1] mean"
    return ReferenceResult(metric, mean, interval, rows, interval_method=method)


def exact_match(
    answers_or_model: Any, data: Sequence[Any], *, prompt_key: str = "instruction", reference_key: str = "output",
    max_new_tokens: int = 64, samples: int = 1, **generate_kwargs: Any,
) -> ReferenceResult:
    """Share of answers equal to a reference after SQuAD normalisation. ``answers_or_model``: a model
    (answers generated to ``data[prompt_key]``, greedy and cached) or the answers as strings."""
    return _squad("exact_match", answers_or_model, data, prompt_key=prompt_key, reference_key=reference_key, max_new_tokens=max_new_tokens, samples=samples, **generate_kwargs)


def f1(
    answers_or_model: Any, data: Sequence[Any], *, prompt_key: str = "instruction", reference_key: str = "output",
    max_new_tokens: int = 64, samples: int = 1, **generate_kwargs: Any,
) -> ReferenceResult:
    """Mean token F1 against the best reference, after SQuAD normalisation (see :func:`exact_match`)."""
    return _squad("f1", answers_or_model, data, prompt_key=prompt_key, reference_key=reference_key, max_new_tokens=max_new_tokens, samples=samples, **generate_kwargs)


# ---- sacrebleu -------------------------------------------------------------------------------


def _is_sacre(value: dict[str, Any]) -> bool:
    return (
        isinstance(value.get("score"), float) and isinstance(value.get("signature"), str)
        and isinstance(value.get("sentence"), list) and all(isinstance(v, float) for v in value["sentence"])
        and isinstance(value.get("interval"), list) and len(value["interval"]) == 2 and isinstance(value.get("method"), str)
    )


def _metric(metric: str, sentence: bool = False) -> Any:
    try:
        from sacrebleu.metrics import BLEU, CHRF
    except ImportError:
        raise DataError(f'{metric} needs sacrebleu: pip install "pytest-ftmodel[reference]"') from None

    if metric == "bleu":
        return BLEU(effective_order=True) if sentence else BLEU()
    return CHRF()


def sacre_scores(metric: str, answers: Sequence[str], refs: Sequence[Sequence[str]]) -> dict[str, Any]:
    """sacrebleu's corpus score, signature, sentence scores and bootstrap interval (see the module
    doc), remembered in the session's metric cache."""
    from pytest_ftmodel.cache import MetricCache, active_metric_cache

    widths = {len(r) for r in refs}
    if len(widths) != 1:
        raise DataError(f"{metric}: items have {sorted(widths)} references: sacrebleu needs the same number for every item")
    store = active_metric_cache()
    key = ""
    if store is not None:
        digest = hashlib.sha256(json.dumps([list(answers), [list(r) for r in refs]], ensure_ascii=False).encode("utf-8", "surrogatepass")).hexdigest()
        key = MetricCache.key(metric, "sacrebleu", {"texts": digest, "n": len(answers), "samples": BOOTSTRAP_SAMPLES, "seed": BOOTSTRAP_SEED, "interval": INTERVAL_RULE})
        found = store.get(key, _is_sacre)
        if found is not None and len(found["sentence"]) == len(answers):
            return found
    computed = _sacre(metric, list(answers), [list(r) for r in refs])
    if store is not None:
        store.put(key, computed)
    return computed


def bootstrap_corpus_interval(scorer: Any, stats: Sequence[Sequence[float]], *, samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """Percentile bootstrap interval of a sacrebleu corpus score: items resampled with replacement,
    each resample scored by sacrebleu from its summed per-item statistics (seeded)."""
    import numpy as np

    table = np.asarray(stats, dtype=np.float64)
    n = len(table)
    rng = np.random.default_rng(seed)
    counts = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(samples)])
    boot = np.array([scorer._compute_score_from_stats([int(round(v)) for v in row]).score for row in counts @ table])  # noqa: SLF001
    # the expanded percentile levels (Hesterberg 2015), as the baseline's paired comparisons use: the
    # plain 2.5/97.5 percentiles cover a corpus BLEU 89% of the time at 10 items, these 93%
    # (bench/answer_intervals.py)
    lo, hi = expanded_levels(n)
    low, high = np.quantile(boot, [lo, hi])
    return float(low), float(high)


def _sacre(metric: str, answers: list[str], refs: list[list[str]]) -> dict[str, Any]:
    import numpy as np

    scorer = _metric(metric)
    streams = [list(column) for column in zip(*refs)]
    corpus = scorer.corpus_score(answers, streams)
    sentence_scorer = _metric(metric, sentence=True)
    sentence = [float(sentence_scorer.sentence_score(a, list(r)).score) for a, r in zip(answers, refs)]
    stats = scorer._extract_corpus_statistics(answers, streams)  # noqa: SLF001 - the sums sacrebleu scores
    low, high = bootstrap_corpus_interval(scorer, stats)
    method = "expanded percentile bootstrap over items"
    if float(high) - float(low) == 0.0 and all(v in (0.0, 100.0) for v in sentence):
        # every resample alike at an edge: the beta interval of the sentence scores keeps coverage
        low, high = (100.0 * x for x in bounded_mean_interval([v / 100.0 for v in sentence]))
        method = "beta interval of the sentence scores (the bootstrap collapses at the edge)"
    return {
        "score": float(corpus.score), "signature": str(scorer.get_signature().format()), "sentence": sentence,
        "interval": [float(low), float(high)], "method": method,
    }


def _sacre_result(
    metric: str, answers_or_model: Any, data: Sequence[Any], *, prompt_key: str, reference_key: str, max_new_tokens: int, samples: int = 1, **kw: Any,
) -> ReferenceResult:
    prompts, refs, rows_ = _inputs(answers_or_model, data, prompt_key, reference_key, max_new_tokens, kw, samples)
    if samples > 1:  # the mean of sentence scores over samples and items (see the module doc)
        found = sacre_scores(metric, [a for row in rows_ for a in row], [rs for rs in refs for _ in range(samples)])
        values = [found["sentence"][i * samples : (i + 1) * samples] for i in range(len(rows_))]
        sig = found["signature"] + (" (mean of sentence scores, effective order)" if metric == "bleu" else " (mean of sentence scores)")
        return _sampled_result(metric, prompts, refs, rows_, values, signature=sig)
    answers = [row[0] for row in rows_]
    found = sacre_scores(metric, answers, refs)
    rows = tuple(ReferenceItem(i, p, rs, a, v) for i, (p, rs, a, v) in enumerate(zip(prompts, refs, answers, found["sentence"])))
    low, high = found["interval"]
    return ReferenceResult(metric, found["score"], (low, high), rows, signature=found["signature"], interval_method=found["method"])


def bleu(
    answers_or_model: Any, data: Sequence[Any], *, prompt_key: str = "instruction", reference_key: str = "output",
    max_new_tokens: int = 64, samples: int = 1, **generate_kwargs: Any,
) -> ReferenceResult:
    """sacrebleu's corpus BLEU (0-100, its defaults: 13a tokenizer, exp smoothing), with its signature."""
    return _sacre_result("bleu", answers_or_model, data, prompt_key=prompt_key, reference_key=reference_key, max_new_tokens=max_new_tokens, samples=samples, **generate_kwargs)


def chrf(
    answers_or_model: Any, data: Sequence[Any], *, prompt_key: str = "instruction", reference_key: str = "output",
    max_new_tokens: int = 64, samples: int = 1, **generate_kwargs: Any,
) -> ReferenceResult:
    """sacrebleu's corpus chrF (0-100, character 6-grams, beta 2), with its signature."""
    return _sacre_result("chrf", answers_or_model, data, prompt_key=prompt_key, reference_key=reference_key, max_new_tokens=max_new_tokens, samples=samples, **generate_kwargs)
