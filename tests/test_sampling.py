"""samples=k: seeds per sample, answers cached per sample, greedy refused, per-item figures by hand."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_ftmodel import BarError, DataError, generate
from pytest_ftmodel.cache import GenerationCache
from pytest_ftmodel.demo import demo_data
from pytest_ftmodel.sampling import FLAKY_SPREAD, check_sampling, repeats, sample_seed, sampled_answers

PROMPTS = [r["instruction"] for r in demo_data()["val"][:4]]
TOKENS = 12


def test_sample_zero_is_the_seed_and_the_others_differ() -> None:
    assert sample_seed(7, 0) == 7
    seeds = [sample_seed(7, j) for j in range(50)]
    assert len(set(seeds)) == 50 and all(0 <= s < 2**63 for s in seeds)
    assert sample_seed(8, 1) != sample_seed(7, 1)  # another run seed, other samples


def test_sampled_answers_are_reproducible_cached_per_sample_and_differ(bpe_model, tmp_path) -> None:
    cache = GenerationCache(tmp_path)
    kwargs = dict(temperature=1.0, seed=5, max_new_tokens=TOKENS)
    first = sampled_answers(bpe_model, PROMPTS, samples=4, cache=cache, **kwargs)
    assert cache.misses == 4 * len(PROMPTS) and cache.hits == 0  # one entry per item and sample
    again = sampled_answers(bpe_model, PROMPTS, samples=4, cache=cache, **kwargs)
    assert again == first and cache.hits == 4 * len(PROMPTS)
    # fewer samples reuse the first ones: the cache holds each sample on its own
    assert sampled_answers(bpe_model, PROMPTS, samples=2, cache=cache, **kwargs) == [row[:2] for row in first]
    assert cache.misses == 4 * len(PROMPTS)
    assert sampled_answers(bpe_model, PROMPTS, samples=4, cache=None, **kwargs) == first  # the cache changes nothing
    assert all(len(row) == 4 for row in first)
    assert sum(len(set(row)) > 1 for row in first) >= len(PROMPTS) // 2  # at temperature 1 the samples differ
    assert sampled_answers(bpe_model, PROMPTS, samples=4, cache=None, **{**kwargs, "seed": 6}) != first


def test_one_sample_is_the_single_answer_path(bpe_model) -> None:
    sampled = sampled_answers(bpe_model, PROMPTS, samples=1, temperature=0.8, top_p=0.9, seed=3, max_new_tokens=TOKENS, cache=None)
    single = generate(bpe_model, PROMPTS, temperature=0.8, top_p=0.9, seed=3, max_new_tokens=TOKENS, cache=None)
    assert sampled == [[a] for a in single]
    greedy = sampled_answers(bpe_model, PROMPTS, max_new_tokens=TOKENS, cache=None)
    assert greedy == [[a] for a in generate(bpe_model, PROMPTS, max_new_tokens=TOKENS, cache=None)]


@pytest.mark.parametrize(
    ("samples", "temperature", "message"),
    [
        (3, 0.0, r"samples=3 with temperature=0.0 \(greedy\): every sample would be the same answer; pass temperature > 0"),
        (0, 1.0, r"samples=0: pass a whole number of answers per item, at least 1"),
        (2.5, 1.0, r"samples=2.5: pass a whole number"),
        (True, 1.0, r"samples=True: pass a whole number"),
    ],
)
def test_bad_sampling_is_one_line(samples, temperature, message) -> None:
    with pytest.raises(BarError, match=message):
        check_sampling(samples, temperature)
    with pytest.raises(BarError, match=message):
        sampled_answers(object(), PROMPTS, samples=samples, temperature=temperature)


def test_binary_repeats_by_hand() -> None:
    # item 0 always right, 1 always wrong, 2 right 2 of 3, 3 right 1 of 3
    result = repeats([[1, 1, 1], [0, 0, 0], [1, 0, 1], [0, 0, 1]], binary=True)
    assert result.samples == 3 and result.n == 4
    assert result.means == pytest.approx((1.0, 0.0, 2 / 3, 1 / 3))
    assert result.mean == pytest.approx(0.5)
    assert result.pass_at_k == 0.75  # items 0, 2, 3 have a right sample
    assert result.pass_hat_k == 0.25  # only item 0 is right every time
    assert result.flip_rate == 0.5 and result.flaky == (2, 3)
    assert "pass@3 0.750, pass^3 0.250; flip rate 0.500; 2 of 4 items flaky" in result.summary()
    low, high = result.interval()
    assert low < 0.5 < high


def test_continuous_repeats_flag_wide_spreads() -> None:
    result = repeats([[0.5, 0.5], [0.2, 0.2 + FLAKY_SPREAD], [0.4, 0.5]], binary=False)
    assert result.flip_rate == pytest.approx(2 / 3)  # two items' scores vary
    assert result.flaky == (1,)  # only one spans FLAKY_SPREAD
    assert result.pass_at_k is None and "pass@" not in result.summary()


def test_repeats_refuse_uneven_or_non_binary_values() -> None:
    with pytest.raises(DataError, match="same number of samples"):
        repeats([[1, 0], [1]], binary=True)
    with pytest.raises(DataError, match="values of 0 or 1"):
        repeats([[0.5, 1]], binary=True)
    with pytest.raises(DataError, match="at least one item"):
        repeats([], binary=True)


@given(st.lists(st.lists(st.booleans(), min_size=3, max_size=3), min_size=1, max_size=20))
def test_binary_repeats_bounds(rows) -> None:
    result = repeats([[float(v) for v in row] for row in rows], binary=True)
    assert result.pass_hat_k <= result.mean <= result.pass_at_k
    # an item flips exactly when it is right at least once but not every time
    assert result.flip_rate == pytest.approx(result.pass_at_k - result.pass_hat_k)


def test_a_served_model_gets_one_seeded_request_per_item_and_sample(serve, bpe_pair, tmp_path) -> None:
    from pytest_ftmodel import load_model

    stub = serve(answer=lambda body: f"seed {body.get('seed')}")
    served = load_model(stub.url, tokenizer=bpe_pair.finetuned)
    cache = GenerationCache(tmp_path)
    kwargs = dict(temperature=0.7, seed=1, chat=False, max_new_tokens=4)
    rows = sampled_answers(served, ["a", "b"], samples=3, cache=cache, **kwargs)
    seeds = [r["seed"] for r in stub.behaviour.requests]
    assert len(seeds) == 6 == len(set(seeds))  # every item and sample its own seed
    assert all(len(set(row)) == 3 for row in rows)
    stub.behaviour.requests.clear()
    assert sampled_answers(served, ["a", "b"], samples=3, cache=cache, **kwargs) == rows
    assert stub.behaviour.requests == []  # a warm run asks nothing
    assert [row[0] for row in rows] == generate(served, ["a", "b"], cache=None, **kwargs)  # sample 0 is the single answer


@pytest.mark.parametrize(
    "bad", [{"temperature": "hot"}, {"temperature": None}, {"seed": "x"}, {"seed": 1.5}, {"top_p": "a"}, {"top_p": 0}, {"top_p": 1.5}],
)
def test_the_compute_twins_refuse_bad_sampling_settings_in_one_line_before_any_model_call(serve, bad) -> None:
    from pytest_ftmodel import classify, load_model, overfit_report, rouge

    stub = serve(answer=lambda body: "positive")
    served = load_model(stub.url)
    data = [{"instruction": "Classify: good.", "output": "positive", "expected_label": "positive"}]
    kw = {"samples": 2, "temperature": 1.0, **bad}
    for call in (
        lambda: rouge(served, data, **kw), lambda: classify(served, data, ["positive"], **kw),
        lambda: overfit_report(served, data, data, answers=True, **kw),
    ):
        with pytest.raises(BarError, match=next(iter(bad))) as exc:
            call()
        assert "\n" not in str(exc.value)
    assert not stub.behaviour.requests
