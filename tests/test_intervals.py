"""Every interval reported on a proportion-like figure keeps its 95% coverage at the edges.

Coverage is checked by simulation: for true values p in {0.02, 0.1, 0.5, 0.9, 0.98} and sample sizes
n in {8, 20, 100}, 2,000 seeded draws each; the interval must hold the truth in at least 93% of them.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest
from scipy.stats import binomtest

from pytest_ftmodel.metrics.code import pass_at_k, passk_interval
from pytest_ftmodel.metrics.stats import beta_interval, bounded_mean_interval, proportion_interval

TRUTHS = (0.02, 0.1, 0.5, 0.9, 0.98)
SIZES = (8, 20, 100)
DRAWS = 2000
FLOOR = 0.93
GRID = [(p, n) for p in TRUTHS for n in SIZES]


def _coverage(low: np.ndarray, high: np.ndarray, truth: float) -> float:
    return float(np.mean((low <= truth) & (truth <= high)))


def _proportion_coverage(interval, p: float, n: int, rng: np.random.Generator) -> float:
    """Simulated coverage of a scalar interval function of (successes, n): one call per distinct count."""
    counts = rng.binomial(n, p, size=DRAWS)
    bounds = {int(c): interval(int(c), n) for c in np.unique(counts)}
    low = np.array([bounds[int(c)][0] for c in counts])
    high = np.array([bounds[int(c)][1] for c in counts])
    return _coverage(low, high, p)


@pytest.mark.parametrize("p, n", GRID)
def test_proportion_interval_covers_at_the_edges(p, n) -> None:
    """Accuracy and the A/B win rate use proportion_interval."""
    rng = np.random.default_rng(1000 + int(p * 100) + n)
    assert _proportion_coverage(_cached_proportion_interval, p, n, rng) >= FLOOR


_cached_proportion_interval = lru_cache(maxsize=None)(proportion_interval)  # the same counts recur across cells


@pytest.mark.parametrize("p, n", GRID)
def test_pass_at_1_interval_covers_at_the_edges(p, n) -> None:
    """pass@1 from one greedy sample per problem: a proportion over problems."""
    rng = np.random.default_rng(2000 + int(p * 100) + n)
    correct = rng.binomial(1, p, size=(DRAWS, n))
    low, high = passk_interval(correct, 1, 1)
    assert _coverage(low, high, p) >= FLOOR


def _problem_rates(truth: float, k: int, spread: str, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Per-problem pass probabilities whose population pass@k is exactly ``truth``.

    "equal": every problem has the same rate q, 1 - (1 - q)^k = truth. "beta": rates ~ Beta(a, b) with
    a + b = 2 (problems from hopeless to trivial), where 1 - E[(1 - q)^k] = prod_j (b + j) / (2 + j) is
    solved for b."""
    if spread == "equal":
        return np.full(size, 1 - (1 - truth) ** (1 / k))
    from scipy.optimize import brentq

    def miss(b: float) -> float:  # E[(1 - q)^k] for q ~ Beta(2 - b, b), minus the target
        return float(np.prod([(b + j) / (2 + j) for j in range(k)])) - (1 - truth)

    b = brentq(miss, 1e-9, 2 - 1e-9)
    return rng.beta(2 - b, b, size=size)


@pytest.mark.parametrize("spread", ["equal", "beta"])
@pytest.mark.parametrize("samples, k", [(5, 1), (5, 2), (5, 5), (10, 3)])
def test_pass_at_k_interval_with_samples_covers_at_the_edges(samples, k, spread) -> None:
    """pass@k from `samples` samples per problem: the per-problem unbiased estimates are fractional."""
    rng = np.random.default_rng(3000 + 10 * samples + k + (spread == "beta"))
    for p, n in GRID:
        rates = _problem_rates(p, k, spread, (DRAWS, n), rng)
        correct = rng.binomial(samples, rates)
        low, high = passk_interval(correct, samples, k)
        assert _coverage(low, high, p) >= FLOOR, (p, n)


@pytest.mark.parametrize("concentration", [2.0, 20.0])
def test_mean_of_bounded_scores_interval_covers_at_the_edges(concentration) -> None:
    """ROUGE F-measures: per-item scores in [0, 1] (Beta distributed, wide and narrow) around mean p."""
    rng = np.random.default_rng(4000 + int(concentration))
    for p, n in GRID:
        scores = rng.beta(p * concentration, (1 - p) * concentration, size=(DRAWS, n))
        low, high = beta_interval(scores.sum(axis=-1), n)
        assert _coverage(low, high, p) >= FLOOR, (p, n)
        # the vectorised path is the one the metrics call, one row at a time
        for row in range(3):
            assert bounded_mean_interval(scores[row]) == pytest.approx((low[row], high[row]), abs=1e-12)


def test_the_edges_no_longer_collapse() -> None:
    for interval in (proportion_interval(8, 8), passk_interval([1] * 8, 1, 1), bounded_mean_interval([1.0] * 8)):
        assert interval[1] == 1.0 and interval[0] == pytest.approx(0.025 ** (1 / 8))  # 0.631, not 1
    for interval in (proportion_interval(0, 8), passk_interval([0] * 8, 1, 1), bounded_mean_interval([0.0] * 8)):
        assert interval[0] == 0.0 and interval[1] == pytest.approx(1 - 0.025 ** (1 / 8))  # 0.369, not 0
    low, high = passk_interval([4] * 8, 4, 2)  # every sample of every problem passed
    assert high == 1.0 and low < 0.7


@pytest.mark.parametrize("successes, n", [(0, 8), (1, 8), (5, 8), (8, 8), (3, 20), (97, 100)])
def test_proportions_are_clopper_pearson_from_scipy(successes, n) -> None:
    ci = binomtest(successes, n).proportion_ci(confidence_level=0.95, method="exact")
    assert proportion_interval(successes, n) == pytest.approx((ci.low, ci.high), abs=1e-9)
    assert passk_interval([1] * successes + [0] * (n - successes), 1, 1) == pytest.approx((ci.low, ci.high), abs=1e-9)
    assert bounded_mean_interval([1.0] * successes + [0.0] * (n - successes)) == pytest.approx((ci.low, ci.high), abs=1e-9)


def test_pass_at_k_interval_holds_the_estimate() -> None:
    rng = np.random.default_rng(5)
    for _ in range(200):
        samples = int(rng.integers(1, 12))
        k = int(rng.integers(1, samples + 1))
        correct = rng.integers(0, samples + 1, size=int(rng.integers(1, 30)))
        estimate = float(np.mean([pass_at_k(samples, int(c), k) for c in correct]))
        low, high = passk_interval(correct, samples, k)
        assert 0.0 <= low <= estimate <= high <= 1.0


def test_empty_and_out_of_range() -> None:
    assert all(np.isnan(proportion_interval(0, 0))) and all(np.isnan(bounded_mean_interval([])))
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        bounded_mean_interval([0.5, 1.5])


def test_sign_test_p_is_scipys_two_sided_binomtest() -> None:
    from pytest_ftmodel.metrics.stats import sign_test_p

    # every k for small n, and a spread of n up to 400 (each k of those), against scipy
    for n in [*range(0, 40), 57, 64, 99, 100, 119, 256, 399]:
        for k in range(0, n + 1):
            expected = binomtest(k, n, 0.5).pvalue if n else 1.0
            assert sign_test_p(k, n) == pytest.approx(expected, rel=1e-9, abs=1e-300), (k, n)
