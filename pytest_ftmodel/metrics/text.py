"""Task metrics on generated answers: ROUGE (summaries) and accuracy/F1 (classification)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from pytest_ftmodel.data import require_keys
from pytest_ftmodel.errors import DataError
from pytest_ftmodel.metrics.stats import bounded_mean_interval, proportion_interval
from pytest_ftmodel.sampling import Repeats, repeats

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
NO_LABEL = "<no label>"


# ---- ROUGE ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RougeItem:
    index: int
    prompt: str
    reference: str
    generated: str
    rouge1: float
    rouge2: float
    rougeL: float
    #: with samples > 1: every sample's answer (``generated`` is sample 0's) and its F-measures; the
    #: item's rouge1/rouge2/rougeL are the means over its samples
    answers: tuple[str, ...] = ()
    sample_scores: tuple[dict[str, float], ...] = ()


@dataclass(frozen=True)
class RougeResult:
    """Mean ROUGE F-measures over items (rouge-score's), each with a 95% interval for a mean of [0, 1] values.

    With ``samples > 1`` each item's scores are the means over its samples, the intervals take the
    items as the unit, and ``stability`` holds each measure's :class:`~pytest_ftmodel.sampling.Repeats`."""

    rouge1: float
    rouge2: float
    rougeL: float
    intervals: dict[str, tuple[float, float]]
    items: tuple[RougeItem, ...]
    samples: int = 1
    stability: dict[str, Repeats] | None = None

    @property
    def n(self) -> int:
        return len(self.items)

    def worst(self, k: int = 3, metric: str = "rougeL") -> list[RougeItem]:
        return sorted(self.items, key=lambda item: (getattr(item, metric), item.index))[:k]


def _is_rouge(value: dict[str, Any]) -> bool:
    return all(isinstance(value.get(t), float) and 0.0 <= value[t] <= 1.0 for t in ROUGE_TYPES)


def rouge_scores(predictions: Sequence[str], references: Sequence[str], *, use_stemmer: bool = True) -> list[dict[str, float]]:
    """Per-pair ROUGE-1/2/L F-measures, computed by rouge-score (remembered in the session's cache,
    per pair and rouge-score version, so that a warm run need not import it)."""
    from pytest_ftmodel.cache import MetricCache, active_metric_cache

    if len(predictions) != len(references):
        raise DataError(f"{len(predictions)} predictions for {len(references)} references: pass one per reference")
    store = active_metric_cache()
    keys = [
        MetricCache.key("rouge", "rouge-score", {"types": ROUGE_TYPES, "stemmer": use_stemmer, "prediction": p, "reference": r})
        for p, r in zip(predictions, references)
    ] if store is not None else []
    scores: list[dict[str, float] | None] = [store.get(k, _is_rouge) for k in keys] if store is not None else [None] * len(predictions)
    missing = [i for i, s in enumerate(scores) if s is None]
    if missing:
        from rouge_score import rouge_scorer

        scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=use_stemmer)
        for i in missing:
            computed = {t: float(s.fmeasure) for t, s in scorer.score(references[i], predictions[i]).items()}
            scores[i] = computed
            if store is not None:
                store.put(keys[i], computed)
    return [{t: s[t] for t in ROUGE_TYPES} for s in scores if s is not None]


def rouge(
    model: Any,
    data: Sequence[dict[str, Any]],
    *,
    prompt_key: str = "instruction",
    reference_key: str = "output",
    max_new_tokens: int = 128,
    use_stemmer: bool = True,
    samples: int = 1,
    **generate_kwargs: Any,
) -> RougeResult:
    """Generate an answer to each item's prompt and score it against its reference with ROUGE.

    ``samples=k`` (with ``temperature > 0``, ``top_p``, ``seed``): k seeded answers per item, each
    scored; an item's score is its mean (see :mod:`pytest_ftmodel.sampling`)."""
    from pytest_ftmodel.sampling import sampled_answers

    items = require_keys(data, [prompt_key, reference_key])
    prompts = [str(item[prompt_key]) for item in items]
    references = [str(item[reference_key]) for item in items]
    answers = sampled_answers(model, prompts, samples=samples, max_new_tokens=max_new_tokens, **generate_kwargs)
    flat = rouge_scores([a for row in answers for a in row], [r for r in references for _ in range(samples)], use_stemmer=use_stemmer)
    per_item = [flat[i * samples : (i + 1) * samples] for i in range(len(items))]
    scores = [row[0] if samples == 1 else {t: sum(s[t] for s in row) / samples for t in ROUGE_TYPES} for row in per_item]
    rows = tuple(
        RougeItem(
            i, p, r, a[0], s["rouge1"], s["rouge2"], s["rougeL"],
            answers=tuple(a) if samples > 1 else (), sample_scores=tuple(row) if samples > 1 else (),
        )
        for i, (p, r, a, s, row) in enumerate(zip(prompts, references, answers, scores, per_item))
    )
    # F-measures lie in [0, 1]: an interval that cannot collapse to [1, 1] when every answer is perfect;
    # with samples, over the items' means (the item is the unit, not the draw)
    intervals = {t: bounded_mean_interval([s[t] for s in scores]) for t in ROUGE_TYPES}
    means = {t: float(np.mean([s[t] for s in scores])) for t in ROUGE_TYPES}
    stability = {t: repeats([[s[t] for s in row] for row in per_item], binary=False) for t in ROUGE_TYPES} if samples > 1 else None
    return RougeResult(means["rouge1"], means["rouge2"], means["rougeL"], intervals, rows, samples=samples, stability=stability)


# ---- classification ---------------------------------------------------------------------------


def _check_labels(labels: Sequence[str]) -> list[str]:
    if isinstance(labels, str):
        raise DataError("labels is a single string: pass a list of labels, e.g. ['positive', 'negative']")
    labels = [str(label) for label in labels]
    if not labels:
        raise DataError("labels is empty: pass the list of labels the model should answer with")
    seen: dict[str, str] = {}
    for label in labels:
        if not label.strip():
            raise DataError("labels contain an empty label: remove it")
        if label.casefold() in seen:
            raise DataError(f"labels contain {seen[label.casefold()]!r} and {label!r}, which match alike: list each label once")
        seen[label.casefold()] = label
    return labels


def extract_label(answer: str, labels: Sequence[str]) -> str | None:
    """The label an answer names, or None.

    Labels match case-insensitively as whole words. Where matches overlap ("positive" inside
    "very positive") the longest wins; of what remains, the first in the answer wins.
    """
    spans: list[tuple[int, int, str]] = []
    for label in labels:
        pattern = r"(?<!\w)" + re.escape(label) + r"(?!\w)"
        spans.extend((m.start(), m.end(), label) for m in re.finditer(pattern, answer, flags=re.IGNORECASE))
    if not spans:
        return None
    # drop every match that lies inside a longer one
    kept = [s for s in spans if not any(o[0] <= s[0] and s[1] <= o[1] and (o[1] - o[0]) > (s[1] - s[0]) for o in spans)]
    return min(kept, key=lambda s: (s[0], -(s[1] - s[0])))[2]


@dataclass(frozen=True)
class LabelScores:
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class ClassificationItem:
    index: int
    prompt: str
    expected: str
    generated: str
    predicted: str | None
    #: with samples > 1: every sample's answer and the label read from it (``generated`` and
    #: ``predicted`` are sample 0's)
    answers: tuple[str, ...] = ()
    predictions: tuple[str | None, ...] = ()

    @property
    def correct(self) -> float:
        """The share of the item's samples (its one answer: 0 or 1) that named the expected label."""
        labels = self.predictions or (self.predicted,)
        return sum(p == self.expected for p in labels) / len(labels)


@dataclass(frozen=True)
class ClassificationResult:
    """Accuracy and macro-F1 over ``labels`` (scikit-learn); unparseable answers count as wrong.

    With ``samples > 1`` every sample's answer counts once (accuracy is then the mean over items of
    each item's share of right samples; macro-F1, the per-label scores and the confusion matrix pool
    all answers), the accuracy interval takes the items as the unit, and ``stability`` holds the
    :class:`~pytest_ftmodel.sampling.Repeats` of right/wrong per sample (pass@k, pass^k, flip rate)."""

    accuracy: float
    macro_f1: float
    per_label: dict[str, LabelScores]
    confusion: tuple[tuple[int, ...], ...]  # rows: expected, columns: predicted (labels, then NO_LABEL)
    confusion_labels: tuple[str, ...]
    n_unparseable: int
    accuracy_interval: tuple[float, float]
    items: tuple[ClassificationItem, ...]
    samples: int = 1
    stability: Repeats | None = None

    @property
    def n(self) -> int:
        return len(self.items)

    def errors(self) -> list[ClassificationItem]:
        """Items with a wrong answer (with samples: any wrong sample), the least often right first."""
        return sorted((item for item in self.items if item.correct < 1), key=lambda item: (item.correct, item.index))


def _is_classification(value: dict[str, Any]) -> bool:
    per_label = value.get("per_label")
    confusion = value.get("confusion")
    return (
        isinstance(value.get("accuracy"), float)
        and isinstance(value.get("macro_f1"), float)
        and isinstance(per_label, dict)
        and all(isinstance(v, list) and len(v) == 4 for v in per_label.values())
        and isinstance(confusion, list)
        and all(isinstance(row, list) and all(isinstance(c, int) for c in row) for row in confusion)
        and isinstance(value.get("confusion_labels"), list)
    )


def classification_scores(expected: Sequence[str], predicted: Sequence[str | None], labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro-F1, per-label scores and confusion matrix (scikit-learn's, remembered in the
    session's cache so that a warm run need not import it); ``None`` predictions are wrong."""
    from pytest_ftmodel.cache import MetricCache, active_metric_cache

    labels = list(labels)
    y_pred = [p if p is not None else NO_LABEL for p in predicted]
    y_true = list(expected)
    store = active_metric_cache()
    key = MetricCache.key("classification", "scikit-learn", {"labels": labels, "expected": y_true, "predicted": y_pred})
    found = store.get(key, _is_classification) if store is not None else None
    if found is None:
        found = _sklearn_classification(y_true, y_pred, labels)
        if store is not None:
            store.put(key, found)
    return {
        "accuracy": found["accuracy"],
        "macro_f1": found["macro_f1"],
        "per_label": {label: LabelScores(float(p), float(r), float(f), int(s)) for label, (p, r, f, s) in found["per_label"].items()},
        "confusion": tuple(tuple(row) for row in found["confusion"]),
        "confusion_labels": tuple(found["confusion_labels"]),
    }


def _sklearn_classification(y_true: list[str], y_pred: list[str], labels: list[str]) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    columns = labels + [NO_LABEL]
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "per_label": {label: [float(p), float(r), float(f), int(s)] for label, p, r, f, s in zip(labels, precision, recall, f1, support)},
        "confusion": [[int(v) for v in row] for row in confusion_matrix(y_true, y_pred, labels=columns)[: len(labels)]],
        "confusion_labels": columns,
    }


def classify(
    model: Any,
    data: Sequence[dict[str, Any]],
    labels: Sequence[str],
    *,
    label_key: str = "expected_label",
    prompt_key: str = "instruction",
    max_new_tokens: int = 16,
    samples: int = 1,
    **generate_kwargs: Any,
) -> ClassificationResult:
    """Ask the model each item's prompt, read a label from its answer, and score against ``label_key``.

    ``samples=k`` (with ``temperature > 0``, ``top_p``, ``seed``): k seeded answers per item, each
    read and scored (see :mod:`pytest_ftmodel.sampling`)."""
    from pytest_ftmodel.sampling import sampled_answers

    labels = _check_labels(labels)
    items = require_keys(data, [prompt_key, label_key])
    canonical = {label.casefold(): label for label in labels}
    expected: list[str] = []
    for i, item in enumerate(items):
        value = str(item[label_key])
        if value.casefold() not in canonical:
            raise DataError(f"data item {i} expects label {value!r}, which is not in labels {labels}: add it or fix the item")
        expected.append(canonical[value.casefold()])
    prompts = [str(item[prompt_key]) for item in items]
    answers = sampled_answers(model, prompts, samples=samples, max_new_tokens=max_new_tokens, **generate_kwargs)
    predicted = [[extract_label(a, labels) for a in row] for row in answers]
    flat = [p for row in predicted for p in row]
    scores = classification_scores([e for e in expected for _ in range(samples)], flat, labels)
    right = [[float(p == e) for p in row] for row, e in zip(predicted, expected)]
    stability = repeats(right, binary=True) if samples > 1 else None
    if stability is None:
        interval = proportion_interval(int(sum(row[0] for row in right)), len(items))
    else:  # the item is the unit: its samples are not independent draws
        interval = bounded_mean_interval(stability.means)
    return ClassificationResult(
        accuracy=scores["accuracy"],
        macro_f1=scores["macro_f1"],
        per_label=scores["per_label"],
        confusion=scores["confusion"],
        confusion_labels=scores["confusion_labels"],
        n_unparseable=sum(p is None for p in flat),
        accuracy_interval=interval,
        items=tuple(
            ClassificationItem(
                i, p, e, a[0], d[0], answers=tuple(a) if samples > 1 else (), predictions=tuple(d) if samples > 1 else (),
            )
            for i, (p, e, a, d) in enumerate(zip(prompts, expected, answers, predicted))
        ),
        samples=samples,
        stability=stability,
    )
