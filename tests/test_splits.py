"""split() and find_leakage(): properties with hypothesis, and the edge cases that crash the naive way."""

from __future__ import annotations

import unicodedata
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_ftmodel import DataError, assert_no_leakage, find_leakage, split
from pytest_ftmodel.demo import demo_data
from pytest_ftmodel.splits import NORMALIZE, normalise


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
def test_prose_finds_every_planted_duplicate(texts, data) -> None:
    half = len(texts) // 2
    train, val = texts[:half] or texts[:1], texts[half:]
    planted = data.draw(st.lists(st.tuples(st.integers(0, len(train) - 1), st.integers(0, 4)), max_size=5))
    val = val + [_perturb(train[i], how) for i, how in planted]
    leaks = find_leakage(train, val, normalize="prose")
    found = {(x.train_index, x.val_index) for x in leaks}
    for k, (i, how) in enumerate(planted):
        j = len(val) - len(planted) + k
        assert any(v == j for _, v in found)
        assert next(x for x in leaks if x.val_index == j).exact == (how == 0)
    assert len(leaks) == len(planted) + sum(t in train for t in texts[half:])
    assert {x.rule for x in leaks} <= {"prose"}


@given(texts=distinct_texts)
def test_no_false_positives_on_distinct_items(texts) -> None:
    half = len(texts) // 2
    for rule in NORMALIZE:
        assert find_leakage(texts[:half], texts[half:], normalize=rule) == []


def test_brackets_carry_meaning_by_default() -> None:
    # the structure of code and data is in its brackets, operators and quotes: these differ
    train = ["[[1], [2]]", "f(a) + b", "x = 'a'", "a - b"]
    val = ["[1, 2]", "f(a + b)", "x = a", "a + b"]
    assert find_leakage(train, val) == []
    assert find_leakage(train, val, normalize="structure") == []
    # the old rule, for prose, folds punctuation away and calls three of them the same
    assert [(x.train_index, x.val_index, x.rule) for x in find_leakage(train, val, normalize="prose")] == [
        (0, 0, "prose"), (1, 1, "prose"), (2, 2, "prose"),
    ]


def test_exact_folds_nothing() -> None:
    leaks = find_leakage(["Same text", "other"], ["Same text", "same  text", "SAME TEXT"], normalize="exact")
    assert [(x.train_index, x.val_index, x.exact, x.rule) for x in leaks] == [(0, 0, True, "exact")]


def test_an_unknown_rule_names_the_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown normalize rule 'code': use one of 'structure', 'prose', 'exact'"):
        find_leakage(["a"], ["a"], normalize="code")


# texts with brackets, operators, quotes, letters of several scripts, digits and whitespace of all kinds
_CHARS = st.characters(codec="utf-8", exclude_categories=("Cs",))
_CODE = st.text(st.sampled_from(list("abcXYZ019 _.,:;=+-*/<>()[]{}'\"\t\n") + ["\u00e9", "\u00df", "\u03a3", "\uff21"]), min_size=1, max_size=40)
_BRACKETS = "()[]{}<>'\"+-*/=,:"


@given(text=st.text(_CHARS, max_size=40), rule=st.sampled_from(sorted(NORMALIZE)))
def test_folding_is_idempotent(text, rule) -> None:
    once = normalise(text, rule)
    assert normalise(once, rule) == once


def _respelled(text: str, how: list[int]) -> str:
    """``text`` in another case, with other runs of whitespace, in another Unicode form."""
    out = []
    for c, h in zip(text, how + [0] * len(text)):
        if c.isspace():
            out.append([" ", "\t", "  \n ", "\u00a0", "\u3000"][h % 5])
        else:
            out.append([c, c.upper(), c.lower(), c.swapcase(), c][h % 5])
    return unicodedata.normalize(["NFC", "NFD", "NFKC", "NFKD"][sum(how) % 4], "\n " + "".join(out) + " ")


@given(text=_CODE, how=st.lists(st.integers(0, 4), max_size=40))
def test_case_whitespace_and_unicode_forms_are_matched(text, how) -> None:
    other = _respelled(text, how)
    if not text.split():
        return  # all whitespace: nothing to leak
    leaks = find_leakage([text], [other])
    assert [(x.train_index, x.val_index, x.exact, x.rule) for x in leaks] == [(0, 0, text == other, "structure")]


@given(text=_CODE, where=st.integers(0, 40), mark=st.sampled_from(_BRACKETS))
def test_a_bracket_operator_or_quote_more_is_another_item(text, where, mark) -> None:
    changed = text[:where] + mark + text[where:]
    assert find_leakage([text], [changed]) == []
    assert find_leakage([changed], [text.upper()]) == []


def test_records_and_the_gate(private_record) -> None:
    data = demo_data()
    assert_no_leakage(data["train"], data["val"])
    leaked = data["val"] + [{**data["train"][3], "instruction": data["train"][3]["instruction"].upper()}]
    with pytest.raises(AssertionError) as failed:
        assert_no_leakage(data["train"], leaked)
    first, second = str(failed.value).splitlines()[:2]
    assert first == (
        f"1 of {len(leaked)} validation items also appear in training (normalize='structure': case, runs of whitespace and "
        "Unicode forms (NFKC) folded; brackets, operators and quotes kept):"
    )
    shown = repr(leaked[-1]["instruction"] + " " + leaked[-1]["output"])
    head = f"    val {len(leaked) - 1} = train 3 (after folding): "
    # the item is shown whole, or cut with '...' where it is long
    assert second.startswith(head) and (second[len(head):] == shown or (second.endswith("...'") and shown.startswith(second[len(head):-4])))
    assert [r.passed for r in private_record.records] == [True, False]
    assert [r.settings for r in private_record.records] == [{"normalize": "structure"}] * 2
    punctuated = data["val"] + [{**data["train"][5], "instruction": data["train"][5]["instruction"] + "!"}]
    assert_no_leakage(data["train"], punctuated)
    with pytest.raises(AssertionError, match=rf"normalize='prose'.*\n.*val {len(punctuated) - 1} = train 5 \(after folding\)"):
        assert_no_leakage(data["train"], punctuated, normalize="prose")
