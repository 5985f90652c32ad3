"""ROUGE against rouge-score, classification against scikit-learn, label extraction properties."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_ftmodel import DataError, assert_classification, assert_rouge_above, classify, extract_label, generate, rouge
from pytest_ftmodel.demo import LABELS, demo_data
from pytest_ftmodel.metrics.text import NO_LABEL, classification_scores

VAL = demo_data()["val"]
SUMMARIES = [r for r in VAL if r["category"] == "summarize"]
REVIEWS = [r for r in VAL if r["category"] == "classify"]


# ---- ROUGE ------------------------------------------------------------------------------------


def test_rouge_equals_rouge_score_on_the_generated_answers(demo_model) -> None:
    from rouge_score import rouge_scorer

    result = rouge(demo_model, SUMMARIES, max_new_tokens=48, cache=None)
    answers = generate(demo_model, [r["instruction"] for r in SUMMARIES], max_new_tokens=48, cache=None)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    expected = [scorer.score(r["output"], a) for r, a in zip(SUMMARIES, answers)]
    assert [item.generated for item in result.items] == answers
    for item, ref in zip(result.items, expected):
        assert (item.rouge1, item.rouge2, item.rougeL) == (ref["rouge1"].fmeasure, ref["rouge2"].fmeasure, ref["rougeL"].fmeasure)
    for metric in ("rouge1", "rouge2", "rougeL"):
        mean = sum(e[metric].fmeasure for e in expected) / len(expected)
        assert getattr(result, metric) == pytest.approx(mean)
        low, high = result.intervals[metric]
        assert low <= getattr(result, metric) <= high
    assert result.n == len(SUMMARIES) and result.worst(1)[0].rougeL == min(i.rougeL for i in result.items)


def test_rouge_data_errors_name_the_item_and_keys(bpe_model) -> None:
    with pytest.raises(DataError, match=r"data item 1 lacks 'output' \(keys present: 'instruction', 'summary'\)"):
        rouge(bpe_model, [{"instruction": "a", "output": "b"}, {"instruction": "c", "summary": "d"}])
    with pytest.raises(DataError, match="data is empty"):
        rouge(bpe_model, [])


def test_rouge_gate_passes_records_and_fails_with_the_worst_items(bpe_model, bpe_pair, private_record) -> None:
    from pytest_ftmodel import load_model

    result = assert_rouge_above(bpe_model, SUMMARIES, rouge1=0.45, rougeL=0.45, max_new_tokens=48)
    assert [(r.name, r.passed) for r in private_record.records] == [("rouge1", True), ("rougeL", True)]
    base = load_model(bpe_pair.base, device="cpu")
    with pytest.raises(AssertionError) as info:
        assert_rouge_above(base, SUMMARIES, rougeL=result.rougeL, max_new_tokens=48)
    message = str(info.value)
    assert re.match(r"rougeL 0\.\d+ is below the bar 0\.\d+ \(95% CI \[.*\]\) on 12 items, model base", message)
    assert message.count("expected '") == 3 and message.count("generated '") == 3
    with pytest.raises(ValueError, match="no threshold given"):
        assert_rouge_above(bpe_model, SUMMARIES)


# ---- classification ---------------------------------------------------------------------------


def test_classification_equals_scikit_learn(demo_model) -> None:
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    result = classify(demo_model, REVIEWS, LABELS, cache=None)
    y_true = [r["expected_label"] for r in REVIEWS]
    y_pred = [item.predicted or NO_LABEL for item in result.items]
    assert result.accuracy == accuracy_score(y_true, y_pred)
    assert result.macro_f1 == pytest.approx(f1_score(y_true, y_pred, labels=list(LABELS), average="macro", zero_division=0))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=list(LABELS), zero_division=0)
    for i, label in enumerate(LABELS):
        scores = result.per_label[label]
        assert (scores.precision, scores.recall, scores.f1, scores.support) == pytest.approx((p[i], r[i], f[i], s[i]))
    full = confusion_matrix(y_true, y_pred, labels=[*LABELS, NO_LABEL])
    assert [list(row) for row in result.confusion] == full[: len(LABELS)].tolist()
    assert result.n_unparseable == y_pred.count(NO_LABEL)


def test_unparseable_answers_count_as_wrong_never_dropped() -> None:
    scores = classification_scores(["a", "b", "b", "a"], ["a", None, "b", None], ["a", "b"])
    assert scores["accuracy"] == 0.5
    assert scores["per_label"]["b"].recall == 0.5 and scores["per_label"]["a"].recall == 0.5
    assert scores["confusion"] == ((1, 0, 1), (0, 1, 1))  # the last column counts answers naming no label


def test_classification_gate(bpe_model, bpe_pair, private_record) -> None:
    from pytest_ftmodel import load_model

    assert_classification(bpe_model, REVIEWS, LABELS, min_accuracy=0.8, min_macro_f1=0.8)
    assert [(r.name, r.passed) for r in private_record.records] == [("accuracy", True), ("macro_f1", True)]
    with pytest.raises(AssertionError, match=r"accuracy 0\.000 is below the bar 0\.500 on 12 items \(accuracy 95% CI \[0\.000, 0\.\d+\], 12 answers named no label"):
        assert_classification(load_model(bpe_pair.base, device="cpu"), REVIEWS, LABELS, min_accuracy=0.5)


@pytest.mark.parametrize(
    ("labels", "message"),
    [([], "labels is empty"), (["yes", "Yes"], "labels contain 'yes' and 'Yes'"), ("yes", "single string"), (["a", " "], "empty label")],
)
def test_bad_labels(bpe_model, labels, message) -> None:
    with pytest.raises(DataError, match=message):
        classify(bpe_model, REVIEWS, labels)


def test_an_expected_label_outside_the_list_is_an_error(bpe_model) -> None:
    first = REVIEWS[0]["expected_label"]
    with pytest.raises(DataError, match=rf"data item 0 expects label '{first}', which is not in labels \['good', 'bad'\]"):
        classify(bpe_model, REVIEWS, ["good", "bad"])


# ---- label extraction -------------------------------------------------------------------------


def test_extraction_examples() -> None:
    labels = ["positive", "very positive", "negative"]
    assert extract_label("I'd say VERY positive!", labels) == "very positive"
    assert extract_label("Positive.", labels) == "positive"
    assert extract_label("positively not", labels) is None  # whole words only
    assert extract_label("negative2", labels) is None  # digits belong to the word
    assert extract_label("negative, not positive", labels) == "negative"  # the first named wins
    assert extract_label("no idea", labels) is None


separators = st.text(alphabet=" \n\t.,;:!?()-\"'", max_size=6)  # no letters, digits or _: those join words
label_words = st.lists(st.from_regex(r"[a-z]{2,8}( [a-z]{2,8})?", fullmatch=True), min_size=1, max_size=5, unique_by=str.casefold)


@given(labels=label_words, data=st.data(), before=separators, after=separators)
def test_a_label_alone_is_always_found_in_any_case(labels, data, before, after) -> None:
    label = data.draw(st.sampled_from(labels))
    cased = "".join(c.upper() if data.draw(st.booleans()) else c for c in label)
    found = extract_label(before + cased + after, labels)
    # the label itself, or a longer label it is part of (impossible here: the text holds only this one)
    assert found is not None and found.casefold() == label.casefold()


@given(labels=label_words, text=separators)
def test_text_without_letters_names_no_label(labels, text) -> None:
    assert extract_label(text, labels) is None


@given(labels=label_words, text=st.text(max_size=40))
def test_extraction_returns_a_label_or_none(labels, text) -> None:
    assert extract_label(text, labels) in [*labels, None]


@given(word=st.from_regex(r"[a-z]{3,8}", fullmatch=True), extra=st.from_regex(r"[a-z]{2,6}", fullmatch=True))
def test_the_longest_overlapping_label_wins(word, extra) -> None:
    longer = f"{extra} {word}"
    assert extract_label(f"It is {longer}.", [word, longer]) == longer
    assert extract_label(f"It is {word}.", [word, longer]) == word
