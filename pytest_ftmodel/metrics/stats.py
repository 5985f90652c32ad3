"""Small statistics shared by the metrics: intervals that keep their coverage at the edges.

* A proportion (accuracy, an A/B win rate, pass@1 from one sample per problem) gets the
  Clopper-Pearson interval: exact, so it covers the truth at least 95% of the time for every true
  value and sample size, and it never collapses to ``[1, 1]`` for 8 of 8 (its lower end is then
  0.631) or ``[0, 0]`` for 0 of 8.
* A mean of values in ``[0, 1]`` (pass@k from ``n`` samples per problem, ROUGE F-measures) gets the
  same beta quantiles at the fractional count ``S = sum(values)``; for 0/1 values that *is*
  Clopper-Pearson. Why it holds for fractional values: of all distributions on ``[0, 1]`` with mean
  ``mu`` the Bernoulli one spreads most, and a sum of independent ``[0, 1]`` variables with mean
  ``n * mu`` is smaller in convex order than ``Binomial(n, mu)`` (Hoeffding 1956/1963), so the
  interval built for the binomial count is, if anything, too wide for them; ``tests/test_intervals.py``
  checks the coverage by simulation. For pass@k the items are problems: each problem's unbiased
  estimate lies in ``[0, 1]`` and averages to the population's pass@k, whatever ``n`` and ``k``.
  The price is width where values spread little (ROUGE in mid-range): the interval assumes the widest
  spread a ``[0, 1]`` score can have at that mean.
* A percentile bootstrap is kept for unbounded figures (perplexity, its improvement), where no edge
  exists to collapse on.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

LEVEL = 0.95

BOOTSTRAP_SAMPLES = 1000
BOOTSTRAP_SEED = 20211


def bootstrap_interval(
    columns: Sequence[Sequence[float]],
    statistic: Callable[..., np.ndarray],
    *,
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over items, resampled with replacement.

    ``columns`` are per-item arrays of equal length (resampled together, so paired data stays
    paired); ``statistic`` receives each column as a 2-D array ``(samples, n)`` and returns one
    value per resample. Seeded: the same data always gives the same interval.
    """
    arrays = [np.asarray(c, dtype=np.float64) for c in columns]
    n = len(arrays[0])
    if n == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(samples, n))
    values = np.asarray(statistic(*(a[idx] for a in arrays)), dtype=np.float64)
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return (float(low), float(high))


def beta_interval(successes: np.ndarray | float, n: np.ndarray | int, *, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Clopper-Pearson's beta quantiles at (possibly fractional) counts ``successes`` of ``n``;
    vectorised over arrays. Lower end 0 at a count of 0, upper end 1 at a count of ``n``."""
    from scipy.special import betaincinv

    s = np.asarray(successes, dtype=np.float64)
    size = np.broadcast_to(np.asarray(n, dtype=np.float64), s.shape)
    # a float sum of 0/1 values can miss an integer by rounding; never let it cross 0 or n
    s = np.clip(np.round(s, 9), 0.0, size)
    tail = (1.0 - level) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        low = np.where(s > 0, betaincinv(np.maximum(s, 1e-300), size - s + 1, tail), 0.0)
        high = np.where(s < size, betaincinv(s + 1, np.maximum(size - s, 1e-300), 1.0 - tail), 1.0)
    return low, high


def proportion_interval(successes: int, n: int, *, level: float = LEVEL) -> tuple[float, float]:
    """Clopper-Pearson (exact) interval of a binomial proportion (equal to scipy's
    ``binomtest(...).proportion_ci(method="exact")``); NaNs for n = 0."""
    if n == 0:
        return (float("nan"), float("nan"))
    low, high = beta_interval(int(successes), int(n), level=level)
    return (float(low), float(high))


def sign_test_p(successes: int, n: int) -> float:
    """Two-sided p-value of ``successes`` out of ``n`` against a fair coin: scipy's
    ``binomtest(successes, n, 0.5).pvalue`` (by symmetry, twice the smaller tail), from
    scipy.special so that scipy.stats (most of a second to import) is not needed; 1 for n = 0."""
    from scipy.special import bdtr  # bdtr(k, n, p) = P(X <= k)

    if n <= 0:
        return 1.0
    return float(min(1.0, 2.0 * bdtr(min(successes, n - successes), n, 0.5)))


def bounded_mean_interval(values: Sequence[float], *, level: float = LEVEL) -> tuple[float, float]:
    """Interval of the mean of values in ``[0, 1]`` that keeps its coverage at the edges: the beta
    interval at the fractional count ``sum(values)`` of ``len(values)`` (see the module doc); NaNs
    for no values."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return (float("nan"), float("nan"))
    if np.any((x < 0) | (x > 1)):
        raise ValueError("bounded_mean_interval needs values in [0, 1]")
    low, high = beta_interval(x.sum(), x.size, level=level)
    return (float(low), float(high))


def expanded_levels(n: int, level: float = LEVEL) -> tuple[float, float]:
    """Expanded percentile levels (Hesterberg 2015) of a bootstrap interval of ``n`` items: the
    percentiles at ``Phi(+-sqrt(n / (n - 1)) * t_{n-1, 0.975})``, which correct the plain percentile
    interval's narrowness at small ``n`` (the baseline's comparisons use the same); (0, 1) below 2."""
    import math

    from scipy.special import ndtr, stdtrit

    if n < 2:
        return (0.0, 1.0)
    z = math.sqrt(n / (n - 1)) * float(stdtrit(n - 1, 0.5 + level / 2))
    return float(ndtr(-z)), float(ndtr(z))
