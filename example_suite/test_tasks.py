"""Task gates on generated answers: ROUGE for summaries, accuracy/F1 for sentiment labels.

Answers are generated once per model and cached (.pytest_cache): re-running after editing a bar
costs seconds.
"""

from pytest_ftmodel import assert_classification, assert_rouge_above

LABELS = ["positive", "negative", "neutral"]


def test_summaries(ftmodel, summaries):
    assert_rouge_above(ftmodel, summaries, rouge1=0.45, rougeL=0.45, max_new_tokens=48)


def test_sentiment(ftmodel, reviews):
    assert_classification(ftmodel, reviews, LABELS, min_accuracy=0.8, min_macro_f1=0.8)
