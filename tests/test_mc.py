"""Multiple-choice scoring: the boundary rule, the normalisations, and the log-likelihoods against a
hand-written per-token log-softmax, one sequence at a time (hypothesis: batch sizes and orders)."""

from __future__ import annotations

import math
import random

import pytest

torch = pytest.importorskip("torch")
from hypothesis import given, strategies as st  # noqa: E402

from pytest_ftmodel.errors import DataError  # noqa: E402
from pytest_ftmodel.metrics.mc import (  # noqa: E402
    MCItem,
    choice_sequence,
    load_mc_items,
    mc_accuracy,
    score_continuations,
    split_boundary,
)
from pytest_ftmodel.tokens import prompt_ids  # noqa: E402

_ANIMALS = ["cat", "dog", "fox", "owl"]
_PLACES = ["garden", "kitchen", "park", "barn"]


def _items(n: int = 12) -> list[dict]:
    rng = random.Random(7)
    out = []
    for i in range(n):
        a = rng.choice(_ANIMALS)
        place = rng.choice(_PLACES)
        choices = [place, rng.choice(_ANIMALS), "rainy day", "x"]
        rng.shuffle(choices)
        # varied prompt endings: none, a space, a line break
        prompt = f"The small {a} found the ball in the" + ["", " ", "\n"][i % 3]
        out.append({"prompt": prompt, "choices": choices, "answer": place, "category": "places", "id": f"q{i}"})
    return out


def _reference(model, ids: list[int], m: int) -> float:
    """Summed log-probability of the last ``m`` ids: one sequence, full logits, a plain per-token
    log-softmax in float64 (no batching, no logits_to_keep)."""
    with torch.inference_mode():
        logits = model.model(input_ids=torch.tensor([ids[:-1]])).logits[0].double()
    total = 0.0
    for p in range(len(ids) - 1 - m, len(ids) - 1):
        row = logits[p]
        total += float(row[ids[p + 1]] - torch.logsumexp(row, dim=0))
    return total


@pytest.fixture(scope="module")
def units(demo_model):
    seqs = []
    for item in _items():
        for c in item["choices"]:
            ids, m, _ = choice_sequence(demo_model.tokenizer, item["prompt"], c)
            seqs.append((ids, m))
    return seqs


@pytest.fixture(scope="module")
def reference(demo_model, units):
    return [_reference(demo_model, ids, m) for ids, m in units]


@given(data=st.data())
def test_loglik_matches_the_reference_at_any_batch_size_and_order(demo_model, units, reference, data):
    size = data.draw(st.sampled_from([1, 7, 32]))
    order = data.draw(st.permutations(range(len(units))))
    got = score_continuations(demo_model, [units[i] for i in order], batch_size=size)
    for k, i in enumerate(order):
        assert got[k] == pytest.approx(reference[i], abs=1e-5)


def test_accuracy_predictions_and_counts(demo_model, no_score_cache):
    items = _items()
    result = mc_accuracy(demo_model, items, cache=None)
    assert result.n == len(items)
    for it, raw in zip(result.items, items):
        assert it.choices == tuple(raw["choices"]) and it.gold == raw["choices"].index(raw["answer"])
        assert it.predicted == max(range(len(it.loglik)), key=lambda j: it.loglik[j])
        assert it.n_chars == tuple(len(c) for c in raw["choices"])  # the choice alone, as lm-eval counts
        assert all(n >= 1 for n in it.n_tokens)
    assert result.accuracy == sum(it.correct for it in result.items) / result.n
    low, high = result.interval
    assert low <= result.accuracy <= high
    assert result.rule["normalize"] == "none" and result.rule["target_delimiter"] == " "


def _item(loglik, choices, gold=0):
    return MCItem(
        index=0, prompt="p", choices=tuple(choices), gold=gold, predicted=-1, loglik=tuple(loglik),
        n_tokens=(1, 4), n_chars=tuple(len(c) for c in choices), n_bytes=tuple(len(c.encode()) for c in choices),
    )


def test_normalisations_rank_choices_by_their_own_length():
    # "ééé" is 3 characters but 6 bytes; "abcd" 4 and 4
    item = _item([-4.0, -5.0], ["ééé", "abcd"])
    assert item.predicted_by("none") == 0
    assert item.scores("char") == (-4.0 / 3, -5.0 / 4)
    assert item.predicted_by("char") == 1  # -1.25 beats -1.33
    assert item.scores("byte") == (-4.0 / 6, -5.0 / 4)
    assert item.predicted_by("byte") == 0  # -0.67 beats -1.25: char and byte disagree
    assert item.scores("token") == (-4.0, -5.0 / 4)
    assert item.predicted_by("token") == 1


def test_every_normalisation_is_reported(demo_model, no_score_cache):
    result = mc_accuracy(demo_model, _items(), normalize="char", cache=None)
    assert set(result.accuracies) == {"none", "char", "byte", "token"}
    for rule, acc in result.accuracies.items():
        assert acc == sum(it.predicted_by(rule) == it.gold for it in result.items) / result.n
    assert result.accuracy == result.accuracies["char"] and result.rule["normalize"] == "char"


# --- the boundary rule -------------------------------------------------------------------------

BOUNDARY_CASES = [
    ("Ans", "", "wer"),  # a token spans the join: lm-eval's cut leaves the continuation nothing
    ("hello wor", "", "ld"),
    ("The ca", "", "t"),
    ("Question: where? Answer: ", " ", "garden"),  # prompt ending in a space
    ("Question: where? Answer:", " ", " garden"),  # a choice starting with one
    ("The cat sat in the", " ", "garden"),
    ("", " ", "garden"),  # an empty prompt
]


@pytest.mark.parametrize("prompt,delim,choice", BOUNDARY_CASES)
def test_scored_tokens_are_exactly_the_continuations(demo_model, prompt, delim, choice):
    tok = demo_model.tokenizer
    ids, m, cont = choice_sequence(tok, prompt, choice, target_delimiter=delim)
    kept, expected_cont = split_boundary(prompt, delim + choice)
    assert cont == expected_cont and not kept.endswith((" ", "\n"))
    own = tok(cont, add_special_tokens=False).input_ids
    assert m == len(own) >= 1 and ids[-m:] == own
    assert ids[:-m] == prompt_ids(tok, kept, chat=False)
    start = [t for t in (tok.bos_token_id,) if t is not None]
    if start:  # a Llama-style tokenizer's BOS, once
        assert ids[0] == start[0] and ids.count(start[0]) == 1


#: joins where the demo tokenizers merge across prompt and continuation: cutting the whole text's ids
#: at the prompt's token count (lm-eval) leaves the continuation no token, or too few
MERGES = [("The ca", "t"), ("Summar", "ize"), ("the gar", "den"), ("The kitc", "hen")]


@pytest.mark.parametrize("prompt,choice", MERGES)
def test_joins_that_a_cut_at_the_prompts_length_loses(demo_model, prompt, choice):
    tok = demo_model.tokenizer
    whole = tok(prompt + choice, add_special_tokens=False).input_ids
    context = tok(prompt, add_special_tokens=False).input_ids
    assert len(whole) <= len(context) or whole[: len(context)] != context  # the case is real for this tokenizer
    ids, m, cont = choice_sequence(tok, prompt, choice, target_delimiter="")
    assert cont == choice and m >= 1 and ids[-m:] == tok(choice, add_special_tokens=False).input_ids
    [item] = mc_accuracy(demo_model, [{"prompt": prompt, "choices": [choice, "zzz"], "answer": 0}], target_delimiter="", cache=None).items
    assert item.n_tokens[0] == m and math.isfinite(item.loglik[0]) and item.loglik[0] < 0


def test_chat_template_prompt(bpe_model):
    tok = bpe_model.tokenizer
    ids, m, cont = choice_sequence(tok, "Where is the cat? ", "garden", chat=True)
    assert cont == "garden"  # no delimiter after the assistant header
    head = prompt_ids(tok, "Where is the cat? ", chat=True)
    assert ids[: len(head)] == head and ids[-m:] == tok("garden", add_special_tokens=False).input_ids
    assert ids.count(tok.bos_token_id) == 1  # the template's BOS, never doubled
    result = mc_accuracy(bpe_model, [{"prompt": "Where is the cat?", "choices": ["garden", "rainy"], "answer": 0}], chat=True, cache=None)
    assert result.rule["chat"] is True and result.rule["target_delimiter"] == ""


def test_empty_continuation_is_refused(byte_model):
    with pytest.raises(DataError, match="no token to score"):
        choice_sequence(byte_model.tokenizer, "Q", "", target_delimiter="")


@pytest.mark.parametrize(
    "items,match",
    [
        ([], "no multiple-choice items"),
        ([{"prompt": "p", "choices": ["a", "b"]}], "has no 'answer'"),
        ([{"prompt": "p", "choices": ["a"], "answer": 0}], "at least two strings"),
        ([{"prompt": "p", "choices": ["a", "b"], "answer": 2}], "out of range"),
        ([{"prompt": "p", "choices": ["a", "b"], "answer": "c"}], "not one of its choices"),
        ([{"prompt": 3, "choices": ["a", "b"], "answer": 0}], "'prompt' must be a string"),
        (["text"], "is a str"),
    ],
)
def test_bad_items_get_one_line(items, match):
    with pytest.raises(DataError, match=match) as info:
        load_mc_items(items)
    assert "\n" not in str(info.value)


def test_answer_by_text_and_jsonl(tmp_path):
    path = tmp_path / "mc.jsonl"
    path.write_text('{"prompt": "p", "choices": ["a", "b"], "answer": "b", "category": "c"}\n')
    [item] = load_mc_items(path)
    assert item["answer"] == 1 and item["category"] == "c"


def test_unknown_normalisation(byte_model):
    with pytest.raises(DataError, match="normalize='chars'"):
        mc_accuracy(byte_model, _items(), normalize="chars")


def test_scores_are_cached_per_item(byte_model, tmp_path):
    from pytest_ftmodel.cache import GenerationCache

    store = GenerationCache(tmp_path / "cache")
    first = mc_accuracy(byte_model, _items(), cache=store)

    class Untouchable:
        """The same model as the cache knows it, whose tokenizer and engine must not be used."""

        fingerprint, numerics = byte_model.fingerprint, byte_model.numerics

        @property
        def tokenizer(self):
            raise AssertionError("the tokenizer was used on a warm run")

        engine = tokenizer

    again = mc_accuracy(Untouchable(), _items(), cache=store)
    assert [it.loglik for it in again.items] == [it.loglik for it in first.items]
    assert again.rule == first.rule and math.isfinite(again.items[0].loglik[0])
    # one item more: only it is scored
    more = mc_accuracy(byte_model, [*_items(), {"prompt": "It was a", "choices": ["sunny", "cat"], "answer": 0}], cache=store)
    assert more.n == len(_items()) + 1 and [it.loglik for it in more.items[:-1]] == [it.loglik for it in first.items]
