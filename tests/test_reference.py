"""Reference scores against their reference implementations: the SQuAD v1.1 script, sacrebleu."""

from __future__ import annotations

import re
import string
from collections import Counter

import pytest

pytest.importorskip("sacrebleu")
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_ftmodel.errors import DataError
from pytest_ftmodel.metrics.reference import bleu, chrf, exact_match, f1


# ---- the SQuAD v1.1 evaluation script's functions, verbatim (evaluate-v1.1.py, Rajpurkar et al.,
# https://rajpurkar.github.io/SQuAD-explorer/, CC BY-SA 4.0): the reference our scores must equal ----
def normalize_answer(s):
    """Lower text and remove punctuation, articles and extra whitespace."""
    def remove_articles(text):
        return re.sub(r'\b(a|an|the)\b', ' ', text)

    def white_space_fix(text):
        return ' '.join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return ''.join(ch for ch in text if ch not in exclude)

    def lower(text):
        return text.lower()

    return white_space_fix(remove_articles(remove_punc(lower(s))))


def f1_score(prediction, ground_truth):
    prediction_tokens = normalize_answer(prediction).split()
    ground_truth_tokens = normalize_answer(ground_truth).split()
    common = Counter(prediction_tokens) & Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    f1 = (2 * precision * recall) / (precision + recall)
    return f1


def exact_match_score(prediction, ground_truth):
    return (normalize_answer(prediction) == normalize_answer(ground_truth))


def metric_max_over_ground_truths(metric_fn, prediction, ground_truths):
    scores_for_ground_truths = []
    for ground_truth in ground_truths:
        score = metric_fn(prediction, ground_truth)
        scores_for_ground_truths.append(score)
    return max(scores_for_ground_truths)
# ---- end of the SQuAD script's functions ------------------------------------------------------

_words = st.sampled_from(["The", "a", "an", "cat", "Cat!", "sat", "on", "the", "mat.", "théâtre", "A-B", "  ", "don't", "an apple", "1,000"])
_texts = st.lists(_words, max_size=8).map(" ".join)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(st.tuples(_texts, st.lists(_texts, min_size=1, max_size=3)), min_size=1, max_size=6))
def test_exact_match_and_f1_equal_the_squad_script(pairs) -> None:
    answers = [a for a, _ in pairs]
    data = [{"output": refs} for _, refs in pairs]
    em, tf1 = exact_match(answers, data), f1(answers, data)
    expected_em = [float(metric_max_over_ground_truths(exact_match_score, a, refs)) for a, refs in pairs]
    expected_f1 = [metric_max_over_ground_truths(f1_score, a, refs) for a, refs in pairs]
    assert [it.value for it in em.items] == expected_em
    assert [it.value for it in tf1.items] == pytest.approx(expected_f1, abs=1e-15)
    assert em.score == pytest.approx(sum(expected_em) / len(pairs))
    assert tf1.score == pytest.approx(sum(expected_f1) / len(pairs))
    assert em.interval[0] <= em.score <= em.interval[1] and tf1.interval[0] <= tf1.score <= tf1.interval[1]


def test_exact_match_interval_is_clopper_pearson_and_never_collapses() -> None:
    result = exact_match(["Paris"] * 8, ["paris."] * 8)
    assert result.score == 1.0 and result.interval[0] == pytest.approx(0.631, abs=1e-3) and result.interval[1] == 1.0


HYPS = ["The cat sat on the mat.", "A quick brown fox jumps.", "It rained all day in the park", "The dog ate the cake", "hello"]
REFS = ["The cat sat on a mat.", "The quick brown fox jumped.", "It was a rainy day in the park.", "The dog ate the cake.", "hello world"]


@pytest.mark.parametrize("metric, scorer", [(bleu, "BLEU"), (chrf, "CHRF")])
def test_bleu_and_chrf_are_sacrebleus_corpus_scores_to_the_digit(metric, scorer) -> None:
    sacrebleu = pytest.importorskip("sacrebleu")
    from sacrebleu import metrics

    reference = getattr(metrics, scorer)()
    result = metric(HYPS, REFS)
    expected = reference.corpus_score(HYPS, [REFS])
    assert result.score == expected.score  # exactly
    assert result.signature == reference.get_signature().format() and f"version:{sacrebleu.__version__}" in result.signature
    sentence = getattr(metrics, scorer)(**({"effective_order": True} if scorer == "BLEU" else {}))
    assert [it.value for it in result.items] == [sentence.sentence_score(h, [r]).score for h, r in zip(HYPS, REFS)]
    low, high = result.interval
    assert low < result.score < high and result.interval_method == "expanded percentile bootstrap over items"


def test_the_bootstrap_recomputes_sacrebleus_corpus_score_per_resample() -> None:
    """A resample's score from summed statistics equals sacrebleu scoring the resampled corpus itself."""
    import numpy as np
    from sacrebleu.metrics import BLEU

    scorer = BLEU()
    stats = np.asarray(scorer._extract_corpus_statistics(HYPS, [REFS]))
    pick = [0, 0, 3, 4, 2]
    summed = stats[pick].sum(axis=0)
    assert scorer._compute_score_from_stats(list(summed)).score == scorer.corpus_score([HYPS[i] for i in pick], [[REFS[i] for i in pick]]).score


def test_several_references_per_item() -> None:
    from sacrebleu.metrics import BLEU

    refs = [[r, r.upper()] for r in REFS]
    result = bleu(HYPS, [{"output": r} for r in refs])
    assert result.score == BLEU().corpus_score(HYPS, [REFS, [r.upper() for r in REFS]]).score
    with pytest.raises(DataError, match="the same number for every item"):
        bleu(HYPS[:2], [["a"], ["b", "c"]])


def test_a_perfect_corpus_gets_an_interval_that_keeps_its_coverage() -> None:
    result = chrf(REFS * 2, REFS * 2)
    assert result.score == 100.0
    assert result.interval[1] == 100.0 and result.interval[0] == pytest.approx(100 * 0.025 ** (1 / 10), abs=1e-6)
    assert "collapses" in result.interval_method


def test_bad_data_is_one_line() -> None:
    with pytest.raises(DataError, match="2 answers for 1 references"):
        exact_match(["a", "b"], ["a"])
    with pytest.raises(DataError, match="data is empty"):
        f1([], [])
    with pytest.raises(DataError, match="has no 'answer'"):
        f1(["a"], [{"output": "a"}], reference_key="answer")
