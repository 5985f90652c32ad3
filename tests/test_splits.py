"""split() and find_leakage(): properties with hypothesis, and the edge cases that crash the naive way."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_ftmodel import DataError, assert_no_leakage, find_leakage, split
from pytest_ftmodel.demo import demo_data


records = st.lists(
    st.fixed_dictionaries({"category": st.sampled_from("abcde"), "t": st.integers(0, 50)}), min_size=2, max_size=80
).map(lambda items: [{**x, "id": i} for i, x in enumerate(items)])
sizes = st.floats(0.05, 0.95)


@given(data=records, test_size=sizes, strategy=st.sampled_from(["random", "temporal", "category"]), seed=st.integers(0, 10))
def test_split_is_a_deterministic_partition(data, test_size, strategy, seed) -> None:
    try:
        train, val = split(data, strategy=strategy, test_size=test_size, seed=seed)
    except DataError as exc:  # only the per-category split may find no category large enough
        assert strategy == "category" and "large enough" in str(exc)
        return
    assert sorted(x["id"] for x in train + val) == list(range(len(data)))
    assert train and val
    assert [x["id"] for x in train] == sorted(x["id"] for x in train)  # input order kept
    assert (train, val) == split(data, strategy=strategy, test_size=test_size, seed=seed)


@given(data=records, test_size=sizes, seed=st.integers(0, 10))
def test_random_size(data, test_size, seed) -> None:
    _, val = split(data, test_size=test_size, seed=seed)
    assert len(val) == min(len(data) - 1, max(1, round(test_size * len(data))))


@given(data=records, test_size=sizes)
def test_temporal_holds_out_the_latest(data, test_size) -> None:
    train, val = split(data, strategy="temporal", test_size=test_size, time_key="t")
    assert max(x["t"] for x in train) <= min(x["t"] for x in val)
    _, by_order = split(data, strategy="temporal", test_size=test_size)
    assert [x["id"] for x in by_order] == list(range(len(data) - len(by_order), len(data)))


@given(data=records, test_size=sizes, seed=st.integers(0, 10))
def test_category_keeps_every_share(data, test_size, seed) -> None:
    try:
        train, val = split(data, strategy="category", test_size=test_size, seed=seed)
    except DataError:
        return
    totals, held = Counter(x["category"] for x in data), Counter(x["category"] for x in val)
    for cat, n in totals.items():
        assert held[cat] == min(n - 1, round(test_size * n))


def test_a_category_of_one_item_stays_in_training() -> None:
    data = [{"category": "big", "i": i} for i in range(10)] + [{"category": "solo", "i": 99}]
    train, val = split(data, strategy="category", test_size=0.2)
    assert {"category": "solo", "i": 99} in train and len(val) == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"strategy": "stratified"}, "unknown split strategy 'stratified'"),
        ({"test_size": 1.0}, "test_size 1.0 must be between 0 and 1"),
        ({"test_size": 0}, "test_size 0 must be between 0 and 1"),
        ({"strategy": "temporal", "time_key": "date"}, "item 0 has no 'date'"),
        ({"strategy": "category", "category_key": "topic"}, "item 0 has no 'topic'"),
    ],
)
def test_bad_arguments(kwargs, message) -> None:
    with pytest.raises(DataError, match=message):
        split([{"category": "a"}, {"category": "b"}, {"category": "a"}], **kwargs)
    with pytest.raises(DataError, match="cannot split 1 item"):
        split(["only"])


# ---- leakage ----------------------------------------------------------------------------------

distinct_texts = st.lists(st.from_regex(r"[a-z]{3,8}( [a-z]{3,8}){1,5}", fullmatch=True), min_size=2, max_size=30, unique=True)


def _perturb(text: str, how: int) -> str:
    return [text, text.upper(), "  " + text.replace(" ", "   ") + " ", text + "!", text.title() + "?"][how]


@given(texts=distinct_texts, data=st.data())
def test_finds_every_planted_duplicate(texts, data) -> None:
    half = len(texts) // 2
    train, val = texts[:half] or texts[:1], texts[half:]
    planted = data.draw(st.lists(st.tuples(st.integers(0, len(train) - 1), st.integers(0, 4)), max_size=5))
    val = val + [_perturb(train[i], how) for i, how in planted]
    leaks = find_leakage(train, val)
    found = {(x.train_index, x.val_index) for x in leaks}
    for k, (i, how) in enumerate(planted):
        j = len(val) - len(planted) + k
        assert any(v == j for _, v in found)
        assert next(x for x in leaks if x.val_index == j).exact == (how == 0)
    assert len(leaks) == len(planted) + sum(t in train for t in texts[half:])


@given(texts=distinct_texts)
def test_no_false_positives_on_distinct_items(texts) -> None:
    half = len(texts) // 2
    assert find_leakage(texts[:half], texts[half:]) == []


def test_records_and_the_gate(private_record) -> None:
    data = demo_data()
    assert_no_leakage(data["train"], data["val"])
    leaked = data["val"] + [{**data["train"][3], "instruction": data["train"][3]["instruction"].upper()}]
    with pytest.raises(AssertionError, match=r"1 of 25 validation items also appear in training:\n    val 24 = train 3 \(after normalising"):
        assert_no_leakage(data["train"], leaked)
    assert [r.passed for r in private_record.records] == [True, False]
