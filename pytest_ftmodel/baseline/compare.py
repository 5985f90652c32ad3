"""Paired comparison of a candidate's per-item results with the baseline's.

The test is chosen by the metric's kind (see :data:`KINDS`); the verdict by the one-sided p-value
(is the candidate worse?), the estimated change and the margin. ``Comparison.as_dict()`` is what
goes into ``MetricRecord.baseline`` and the reports.

The tests, per kind (``delta`` is candidate minus baseline; its interval is two-sided 95%):

* ``binary`` (per-item 0/1: accuracy, pass@1): McNemar's test, mid-p version. Only the discordant
  pairs carry information; under "no change" the number ``k`` that got worse out of the ``m``
  discordant pairs is Binomial(m, 1/2). The one-sided mid-p value is ``P(X > k) + P(X = k) / 2``
  (``scipy.stats.binom.sf(k, m, .5) + binom.pmf(k, m, .5) / 2``), half a step below the exact
  conditional p-value (``binomtest(k, m, 0.5, alternative="greater")``), whose discreteness makes
  the exact test conservative: its level is 0.02-0.04 where 0.05 is asked, and it catches a 5-point
  accuracy drop on 500 items in 79.8% of cases where the mid-p test catches 82.4% (computed exactly
  over the simulation model of tests/test_baseline_stats.py, 85% agreement), with a level that never
  exceeds 0.0502 over 10-600 items and 50-99% agreement. Fagerland, Lydersen & Laake (2013, "The
  McNemar test for binary matched-pairs data: mid-p and asymptotic are better than exact
  conditional") recommend it for the same reasons. Interval: Newcombe's hybrid
  score (square-and-add) interval for a difference of paired proportions (Newcombe 1998, method 10):
  Wilson intervals of the two proportions combined with their correlation (continuity-corrected
  towards 0, as Newcombe does). Closed form, it keeps its coverage near 95% down to small samples
  and at the edges (no zero-width interval when the runs agree on every item), where a Wald or
  bootstrap interval collapses.
* ``continuous`` (ROUGE, per-problem pass@k): the mean of the paired differences. p-value: the
  sign-flip (Rademacher wild) bootstrap under the null, i.e. the paired randomisation test: under
  "no change" a baseline/candidate pair is as likely either way round, so the observed mean is
  compared with the means of the differences under random sign flips (all ``2**n`` of them when
  that is at most :data:`REPLICATES`, so exact for small ``n``; else :data:`REPLICATES` seeded
  draws, p = (1 + count) / (1 + draws)). Unlike the shift-method bootstrap p-value it keeps its
  level at every ``n`` (the shift method calls 3 items all worse by 0.2 "p = 0.0005"; here p = 1/8).
  Interval: paired bootstrap (items resampled with replacement, seeded) with the expanded percentile
  method (Hesterberg 2015): percentiles at ``Phi(+-sqrt(n/(n-1)) * t_{n-1, 0.975})`` instead of
  2.5/97.5, which corrects the plain percentile interval's narrowness at small ``n`` and equals it
  for large ``n``.
* ``perplexity``: per text ``(nll_sum_nats, n_tokens)``. The statistic is the log-ratio of the two
  perplexities, each from its own sums (``sum nll_c / sum tokens_c - sum nll_b / sum tokens_b``),
  so a new tokenizer that changes the token counts is handled. p-value: the same randomisation test
  (each text's two results swapped at random); interval: the paired bootstrap of texts, as above.
  ``delta``, its interval and the margin are relative: ``ppl_c / ppl_b - 1`` (0.02 = 2%).
  Lower is better, whatever ``higher_is_better`` says.
* ``ordinal`` (human scores): Wilcoxon signed-rank, one-sided (``scipy.stats.wilcoxon``, method
  "auto": the exact null up to 50 differences without ties; with ties, all sign permutations up to 13
  differences, else the normal approximation corrected for ties, whose level the simulations check). Zero differences are discarded (``zero_method="wilcox"``): the test is then
  conditional on the items that changed, as McNemar's is on the discordant pairs. ``delta``: mean
  difference, with the bootstrap interval above.

The verdict (``superiority``, the default): "regressed" iff the one-sided p-value is below
``alpha`` AND the estimated drop exceeds the margin; "improved" iff significantly better (the other
one-sided p-value below ``alpha``); else "within noise". ``noninferiority``: "within noise" (or
"improved") only when the worse end of the 95% interval is within the margin (and, for a bootstrap
interval, at least :data:`MIN_BOOTSTRAP_ITEMS` items are paired); "regressed" when
significantly worse beyond the margin (as above); else "inconclusive". No paired items gives
"inconclusive"; too few items or no changed item can never give "regressed". ``notes`` says why.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

if TYPE_CHECKING:
    import numpy as np

#: kind -> how its per-item values look and which paired test compares them
KINDS = {
    "binary": "per-item 0/1 (accuracy, pass@1): McNemar (mid-p)",
    "continuous": "per-item score (ROUGE, per-problem pass@k): paired sign-flip test of the mean difference, bootstrap interval",
    "perplexity": "per-item (NLL sum in nats, token count): paired sign-flip test of the perplexity log-ratio, bootstrap interval",
    "ordinal": "per-item human score: Wilcoxon signed-rank",
}

#: kind -> the margin used when none is given (absolute; relative for perplexity: 0.02 = 2%)
DEFAULT_MARGINS = {"binary": 0.01, "continuous": 0.01, "perplexity": 0.02, "ordinal": 0.1}

#: verdicts; the first fails a gate, "inconclusive" fails only in noninferiority mode
VERDICTS = ("regressed", "within noise", "improved", "inconclusive", "new")

MODES = ("superiority", "noninferiority")

#: name of the test, as reports show it
TESTS = {
    "binary": "McNemar mid-p",
    "continuous": "paired sign-flip test (mean difference)",
    "perplexity": "paired sign-flip test (log-ratio of perplexities)",
    "ordinal": "Wilcoxon signed-rank",
}

#: bootstrap resamples (interval) and sign-flip draws (p-value) per comparison
REPLICATES = 2000

LEVEL = 0.95

#: ids of the items that got worse kept in a comparison (the count of them all is kept too)
WORSE_KEPT = 20

#: below this many paired items a bootstrap interval is too rough to show non-inferiority
MIN_BOOTSTRAP_ITEMS = 10

# elements of a resampling matrix built at once (memory stays ~100 MB for any number of items)
_CHUNK_ELEMENTS = 4_000_000


@dataclass(frozen=True)
class Comparison:
    """A candidate metric against its baseline entry, on the items both have.

    ``delta`` is candidate minus baseline in the metric's own units, except for ``relative``
    comparisons (perplexity), where it is ``candidate / baseline - 1``. ``low``/``high``: its 95%
    interval (two-sided). ``p_value``: one-sided, the alternative being "the candidate is worse".
    ``worse``: ids of the paired items that got worse, worst first (at most :data:`WORSE_KEPT`);
    ``n_worse``: how many got worse in all.
    """

    verdict: str
    test: str
    value: float  # the baseline's figure on the paired items
    candidate: float  # the candidate's figure on the paired items
    delta: float
    low: float
    high: float
    p_value: float
    margin: float
    relative: bool
    n_paired: int
    alpha: float = 0.05
    mode: str = "superiority"
    worse: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)
    n_worse: int = 0

    @property
    def failed(self) -> bool:
        return self.verdict == "regressed" or (self.verdict == "inconclusive" and self.mode == "noninferiority")

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["worse"], out["notes"] = list(self.worse), list(self.notes)
        return out


@dataclass(frozen=True)
class PairedTest:
    """One kind's test on ``S`` comparisons at once (arrays of shape ``(S,)``): what
    :func:`paired_test` returns and :func:`decide` turns into verdicts."""

    value: np.ndarray
    candidate: np.ndarray
    delta: np.ndarray
    low: np.ndarray
    high: np.ndarray
    p_worse: np.ndarray  # one-sided: the candidate is worse
    p_better: np.ndarray  # one-sided: the candidate is better
    n: int = 0  # paired items per comparison
    bootstrap: bool = False  # the interval comes from the bootstrap (too rough below MIN_BOOTSTRAP_ITEMS)


def worse_sign(kind: str, higher_is_better: bool) -> float:
    """+1 when a positive ``delta`` means worse (perplexity; lower-is-better metrics), else -1."""
    return 1.0 if kind == "perplexity" or not higher_is_better else -1.0


# ---------------------------------------------------------------------------------------------
# resampling streams (deterministic for a seed; the tests rebuild them to check the statistics)


def _streams(seed: int) -> tuple[Any, Any]:
    import numpy as np

    boot, signs = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(boot), np.random.default_rng(signs)


def _chunk_rows(n: int, replicates: int) -> Iterator[int]:
    rows = max(1, _CHUNK_ELEMENTS // max(n, 1))
    for start in range(0, replicates, rows):
        yield min(rows, replicates - start)


def _index_chunks(n: int, replicates: int, seed: int) -> Iterator[np.ndarray]:
    rng = _streams(seed)[0]
    for rows in _chunk_rows(n, replicates):
        yield rng.integers(0, n, size=(rows, n))


def bootstrap_indices(n: int, replicates: int = REPLICATES, seed: int = 0) -> np.ndarray:
    """The item indices of every bootstrap resample :func:`compare` draws for ``n`` items and
    ``seed``: shape ``(replicates, n)``, row ``r`` lists the items of resample ``r``."""
    import numpy as np

    return np.concatenate(list(_index_chunks(n, replicates, seed)))


def _count_chunks(n: int, replicates: int, seed: int) -> Iterator[np.ndarray]:
    """Per resample, how often each item was drawn (``(rows, n)`` floats), so a resampled sum of
    every comparison at once is one matrix product."""
    import numpy as np

    for idx in _index_chunks(n, replicates, seed):
        rows = idx.shape[0]
        flat = (idx + (np.arange(rows) * n)[:, None]).ravel()
        yield np.bincount(flat, minlength=rows * n).reshape(rows, n).astype(np.float64)


def _exhaustive(n: int, replicates: int) -> bool:
    return n <= 30 and 2**n <= replicates


def _sign_chunks(n: int, replicates: int, seed: int) -> tuple[Iterator[np.ndarray], int, bool]:
    """The sign vectors of the randomisation test, in chunks of ``(rows, n)``; their count; whether
    they are all ``2**n`` of them (exact) rather than ``replicates`` seeded random ones."""
    import numpy as np

    if _exhaustive(n, replicates):
        grid = (np.arange(2**n)[:, None] >> np.arange(n)[None, :]) & 1
        return iter([2.0 * grid - 1.0]), 2**n, True

    def draws() -> Iterator[np.ndarray]:
        rng = _streams(seed)[1]
        for rows in _chunk_rows(n, replicates):
            yield 2.0 * rng.integers(0, 2, size=(rows, n)) - 1.0

    return draws(), replicates, False


def sign_flips(n: int, replicates: int = REPLICATES, seed: int = 0) -> tuple[np.ndarray, bool]:
    """Every sign vector the randomisation test of :func:`compare` uses for ``n`` items and ``seed``
    (``(rows, n)``), and whether they are all ``2**n`` of them (the test is then exact)."""
    import numpy as np

    chunks, _, exact = _sign_chunks(n, replicates, seed)
    return np.concatenate(list(chunks)), exact


def _quantile_levels(n: int) -> tuple[float, float]:
    """Expanded percentile levels (Hesterberg 2015) for a 95% bootstrap interval of ``n`` items."""
    # scipy.special's functions are what scipy.stats' t.ppf and norm.cdf evaluate, without importing
    # scipy.stats (most of a second; a warm run compares in a fraction of that)
    from scipy.special import ndtr, stdtrit

    if n < 2:
        return (float("nan"), float("nan"))
    z = math.sqrt(n / (n - 1)) * float(stdtrit(n - 1, 0.5 + LEVEL / 2))
    return float(ndtr(-z)), float(ndtr(z))


def _percentiles(boot: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    import numpy as np

    lo, hi = _quantile_levels(n)
    if math.isnan(lo):
        nan = np.full(boot.shape[0], np.nan)
        return nan, nan.copy()
    q = np.quantile(boot, [lo, hi], axis=1)
    return q[0], q[1]


def _randomisation_p(
    observed: np.ndarray, null: Iterator[np.ndarray], count: int, exact: bool, worse: float, scale: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One-sided p-values (worse, better) of ``observed`` (S,) against null draws (chunks of (S, rows));
    ``scale`` (S,): the size of the per-item changes, so that rounding never breaks a tie."""
    import numpy as np

    tol = 1e-9 * (np.abs(observed) + scale)
    ge = np.zeros(observed.shape[0])
    le = np.zeros(observed.shape[0])
    for draws in null:
        ge += np.sum(worse * draws >= (worse * observed - tol)[:, None], axis=1)
        le += np.sum(worse * draws <= (worse * observed + tol)[:, None], axis=1)
    if exact:
        return np.minimum(ge / count, 1.0), np.minimum(le / count, 1.0)
    return np.minimum((ge + 1) / (count + 1), 1.0), np.minimum((le + 1) / (count + 1), 1.0)


# ---------------------------------------------------------------------------------------------
# the tests, vectorised over comparisons (rows)


def _wilson(successes: np.ndarray, n: int, z: float) -> tuple[np.ndarray, np.ndarray]:
    import numpy as np

    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def newcombe_interval(base: np.ndarray, cand: np.ndarray, *, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Newcombe's (1998, method 10) hybrid score interval for ``mean(cand) - mean(base)`` of paired
    0/1 values; rows are comparisons, columns items (``(S, n)``, ``n >= 1``)."""
    import numpy as np
    from scipy.special import ndtri

    n = base.shape[1]
    z = float(ndtri(0.5 + level / 2))
    both = np.sum((cand == 1) & (base == 1), axis=1).astype(np.float64)
    c_only = np.sum((cand == 1) & (base == 0), axis=1).astype(np.float64)
    b_only = np.sum((cand == 0) & (base == 1), axis=1).astype(np.float64)
    neither = n - both - c_only - b_only
    p1, p2 = (both + c_only) / n, (both + b_only) / n
    l1, u1 = _wilson(both + c_only, n, z)
    l2, u2 = _wilson(both + b_only, n, z)
    margins = (both + c_only) * (b_only + neither) * (both + b_only) * (c_only + neither)
    # the correlation of the two proportions, with Newcombe's continuity correction towards 0
    cross = both * neither - c_only * b_only
    cross = np.where(cross > n / 2, cross - n / 2, np.where(cross >= 0, 0.0, cross))
    phi = np.where(margins > 0, cross / np.sqrt(np.maximum(margins, 1e-300)), 0.0)
    theta = p1 - p2
    low = theta - np.sqrt(np.maximum((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2, 0.0))
    high = theta + np.sqrt(np.maximum((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2, 0.0))
    return np.clip(low, -1.0, 1.0), np.clip(high, -1.0, 1.0)


def mcnemar_midp(k: np.ndarray, m: np.ndarray) -> np.ndarray:
    """One-sided mid-p McNemar p-values: ``P(X > k) + P(X = k) / 2`` for X ~ Binomial(m, 1/2)
    (1 when ``m`` is 0: no item changed, nothing to test, as for identical continuous runs)."""
    import numpy as np
    from scipy.special import bdtrc  # bdtrc(j, m, p) = P(X > j): scipy.stats' binom.sf

    k = np.asarray(k, dtype=np.int64)
    m = np.asarray(m, dtype=np.int64)
    at_least = np.where(k > 0, bdtrc(np.maximum(k - 1, 0), m, 0.5), 1.0)  # P(X >= k)
    return np.where(m > 0, np.minimum(0.5 * (at_least + bdtrc(k, m, 0.5)), 1.0), 1.0)


def _binary(base: np.ndarray, cand: np.ndarray, worse: float) -> PairedTest:
    import numpy as np
    up = np.sum((cand == 1) & (base == 0), axis=1)
    down = np.sum((cand == 0) & (base == 1), axis=1)
    got_worse, got_better = (up, down) if worse > 0 else (down, up)
    m = up + down
    p_worse, p_better = mcnemar_midp(got_worse, m), mcnemar_midp(got_better, m)
    low, high = newcombe_interval(base, cand)
    value, candidate = base.mean(axis=1), cand.mean(axis=1)
    return PairedTest(value, candidate, candidate - value, low, high, p_worse, p_better, base.shape[1], False)


def _bootstrap_mean(diff: np.ndarray, replicates: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Expanded-percentile bootstrap interval of the mean of each row of ``diff``."""
    import numpy as np

    n = diff.shape[1]
    boot = np.concatenate([diff @ w.T / n for w in _count_chunks(n, replicates, seed)], axis=1)
    return _percentiles(boot, n)


def _no_interval(rows: int) -> tuple[np.ndarray, np.ndarray]:
    import numpy as np

    return np.full(rows, np.nan), np.full(rows, np.nan)


def _mean_difference(
    base: np.ndarray, cand: np.ndarray, worse: float, replicates: int, seed: int, interval: bool
) -> PairedTest:
    import numpy as np

    n = base.shape[1]
    diff = cand - base
    delta = diff.mean(axis=1)
    low, high = _bootstrap_mean(diff, replicates, seed) if interval else _no_interval(diff.shape[0])
    chunks, count, exact = _sign_chunks(n, replicates, seed)
    scale = np.abs(diff).mean(axis=1)
    p_worse, p_better = _randomisation_p(delta, (diff @ s.T / n for s in chunks), count, exact, worse, scale)
    return PairedTest(base.mean(axis=1), cand.mean(axis=1), delta, low, high, p_worse, p_better, n, True)


def _log_ppl(nll: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    import numpy as np

    with np.errstate(invalid="ignore", divide="ignore"):
        return nll / tokens


def _perplexity(base: np.ndarray, cand: np.ndarray, replicates: int, seed: int, interval: bool) -> PairedTest:
    import numpy as np

    n = base.shape[1]
    bn, bt, cn, ct = base[..., 0], base[..., 1], cand[..., 0], cand[..., 1]
    log_b, log_c = _log_ppl(bn.sum(1), bt.sum(1)), _log_ppl(cn.sum(1), ct.sum(1))
    log_ratio = log_c - log_b
    if interval:
        boot = np.concatenate(
            [_log_ppl(cn @ w.T, ct @ w.T) - _log_ppl(bn @ w.T, bt @ w.T) for w in _count_chunks(n, replicates, seed)],
            axis=1,
        )
        low, high = _percentiles(boot, n)
    else:
        low, high = _no_interval(base.shape[0])
    # randomisation: each text's two results swapped at random (sign -1 = swapped)
    half_n, half_t = (cn + bn).sum(1)[:, None] / 2, (ct + bt).sum(1)[:, None] / 2
    dn, dt = (cn - bn) / 2, (ct - bt) / 2
    chunks, count, exact = _sign_chunks(n, replicates, seed)
    null = (
        _log_ppl(half_n + dn @ s.T, half_t + dt @ s.T) - _log_ppl(half_n - dn @ s.T, half_t - dt @ s.T) for s in chunks
    )
    scale = np.abs(_log_ppl(cn, ct) - _log_ppl(bn, bt)).mean(axis=1)
    p_worse, p_better = _randomisation_p(log_ratio, null, count, exact, 1.0, scale)
    return PairedTest(
        np.exp(log_b), np.exp(log_c), np.expm1(log_ratio), np.expm1(low), np.expm1(high), p_worse, p_better, n, True
    )


def _ordinal(base: np.ndarray, cand: np.ndarray, worse: float, replicates: int, seed: int, interval: bool) -> PairedTest:
    import numpy as np
    from scipy.stats import wilcoxon

    diff = cand - base
    low, high = _bootstrap_mean(diff, replicates, seed) if interval else _no_interval(diff.shape[0])
    changed = np.any(diff != 0, axis=1)
    p_worse, p_better = np.ones(diff.shape[0]), np.ones(diff.shape[0])
    if changed.any():
        rows = diff[changed]
        worse_alt, better_alt = ("greater", "less") if worse > 0 else ("less", "greater")
        p_worse[changed] = wilcoxon(rows, zero_method="wilcox", alternative=worse_alt, axis=1).pvalue
        p_better[changed] = wilcoxon(rows, zero_method="wilcox", alternative=better_alt, axis=1).pvalue
    return PairedTest(
        base.mean(axis=1), cand.mean(axis=1), diff.mean(axis=1), low, high, p_worse, p_better, diff.shape[1], True
    )


def paired_test(
    kind: str,
    base: np.ndarray,
    cand: np.ndarray,
    *,
    higher_is_better: bool = True,
    replicates: int = REPLICATES,
    seed: int = 0,
    interval: bool = True,
) -> PairedTest:
    """The kind's paired test on clean data, for ``S`` comparisons at once: ``base``/``cand`` are
    ``(S, n)`` arrays (``(S, n, 2)`` of NLL sums and token counts for perplexity), ``n >= 1``, no
    NaN. Row ``s`` gives exactly what :func:`compare` gives for that row's items (same seed), which
    is what lets the simulation tests run thousands of comparisons quickly. ``interval=False`` skips
    the bootstrap interval (NaN; the superiority verdict does not need it)."""
    import numpy as np

    base, cand = np.asarray(base, dtype=np.float64), np.asarray(cand, dtype=np.float64)
    worse = worse_sign(kind, higher_is_better)
    if kind == "binary":
        return _binary(base, cand, worse)
    if kind == "continuous":
        return _mean_difference(base, cand, worse, replicates, seed, interval)
    if kind == "perplexity":
        return _perplexity(base, cand, replicates, seed, interval)
    if kind == "ordinal":
        return _ordinal(base, cand, worse, replicates, seed, interval)
    raise ValueError(f"unknown comparison kind {kind!r}: use one of {', '.join(KINDS)}")


def decide(
    result: PairedTest, *, kind: str, higher_is_better: bool, margin: float, alpha: float = 0.05, mode: str = "superiority"
) -> np.ndarray:
    """The verdict of every row of ``result`` (see the module's docstring for the rule)."""
    import numpy as np

    worse = worse_sign(kind, higher_is_better)
    drop = worse * result.delta
    bound = np.maximum(worse * result.low, worse * result.high)  # the worse end of the interval, as a drop
    significantly_worse = (result.p_worse < alpha) & (drop > margin)
    better = result.p_better < alpha
    verdict = np.where(better, "improved", "within noise").astype(object)
    if mode == "noninferiority":
        shown = np.isfinite(bound) & (bound <= margin)
        if result.bootstrap and result.n < MIN_BOOTSTRAP_ITEMS:
            shown[:] = False
        verdict = np.where(shown, verdict, np.where(significantly_worse, "regressed", "inconclusive"))
    else:
        verdict = np.where(significantly_worse, "regressed", verdict)
    return verdict


# ---------------------------------------------------------------------------------------------
# compare(): the one-comparison entry point, with the care real data needs


def _number(value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return float("nan")
    return out if math.isfinite(out) else float("nan")


def _pair(value: Any) -> tuple[float, float]:
    try:
        nll, tokens = value
    except (TypeError, ValueError):
        return (float("nan"), float("nan"))
    nll, tokens = _number(nll), _number(tokens)
    if math.isnan(nll) or math.isnan(tokens) or tokens <= 0 or nll < 0:
        return (float("nan"), float("nan"))
    return (nll, tokens)


def _worse_items(kind: str, ids: Sequence[str], base: np.ndarray, cand: np.ndarray, worse: float) -> tuple[tuple[str, ...], int]:
    """The ids of the items that got worse, worst first (at most :data:`WORSE_KEPT`), and their number."""
    import numpy as np

    if kind == "perplexity":
        change = cand[:, 0] / cand[:, 1] - base[:, 0] / base[:, 1]  # per-text change of log perplexity
    else:
        change = worse * (cand - base)
    order = sorted((i for i in range(len(ids)) if change[i] > 0), key=lambda i: (-float(change[i]), ids[i]))
    return (tuple(ids[i] for i in order[:WORSE_KEPT]), len(order)) if np.size(change) else ((), 0)


def compare(
    kind: str,
    baseline: Mapping[str, Any],
    candidate: Mapping[str, Any],
    *,
    higher_is_better: bool,
    margin: float,
    alpha: float = 0.05,
    mode: str = "superiority",
    seed: int = 0,
) -> Comparison:
    """Compare per-item values keyed by item id (only the ids both have are used).

    Values are floats (``binary``: 0.0/1.0; ``ordinal``: scores), or ``(nll_sum, n_tokens)`` pairs for
    ``perplexity`` (lower is better). ``margin`` is absolute, or relative for ``perplexity`` (0.02 =
    2%). In ``superiority`` mode (the default) the verdict is "regressed" when the candidate is
    significantly worse (one-sided ``alpha``) and the estimated drop exceeds the margin; "improved"
    when significantly better; "within noise" otherwise. In ``noninferiority`` mode it passes
    ("within noise"/"improved") only when the 95% bound of the drop is within the margin, is
    "regressed" when significantly worse beyond the margin, else "inconclusive".

    Items whose value is missing or not a number (NaN) on either side are left out, with a note.
    Deterministic: the same inputs and ``seed`` give the same result.
    """
    import numpy as np

    if kind not in KINDS:
        raise ValueError(f"unknown comparison kind {kind!r}: use one of {', '.join(KINDS)}")
    if mode not in MODES:
        raise ValueError(f"unknown baseline mode {mode!r}: use one of {', '.join(MODES)}")
    if not _number(margin) >= 0:
        raise ValueError(f"the comparison margin must be a number >= 0, not {margin!r}")
    if not 0 < _number(alpha) < 1:
        raise ValueError(f"alpha must be between 0 and 1, not {alpha!r}")
    notes: list[str] = []
    shared = sorted(set(baseline) & set(candidate), key=str)
    if len(shared) < max(len(baseline), len(candidate)):
        notes.append(f"compared on the {len(shared)} items both runs have (baseline {len(baseline)}, candidate {len(candidate)})")
    convert = _pair if kind == "perplexity" else _number
    b_all = [convert(baseline[i]) for i in shared]
    c_all = [convert(candidate[i]) for i in shared]
    keep = [k for k in range(len(shared)) if not (np.isnan(b_all[k]).any() or np.isnan(c_all[k]).any())]
    if len(keep) < len(shared):
        what = "(NLL, token count > 0) pair" if kind == "perplexity" else "number"
        notes.append(f"{len(shared) - len(keep)} paired items left out: value missing or not a valid {what}")
    ids = [shared[k] for k in keep]
    base = np.array([b_all[k] for k in keep], dtype=np.float64)
    cand = np.array([c_all[k] for k in keep], dtype=np.float64)
    n = len(ids)
    relative = kind == "perplexity"
    test_kind = kind
    if kind == "binary" and n and not (np.isin(base, (0.0, 1.0)).all() and np.isin(cand, (0.0, 1.0)).all()):
        test_kind = "continuous"
        notes.append("values are not all 0/1: compared as continuous (paired sign-flip test)")
    nan = float("nan")
    if n == 0:
        notes.append("no paired items: nothing to compare")
        return Comparison(
            verdict="inconclusive", test=TESTS[test_kind], value=nan, candidate=nan, delta=nan, low=nan, high=nan,
            p_value=nan, margin=float(margin), relative=relative, n_paired=0, alpha=alpha, mode=mode, notes=tuple(notes),
        )
    result = paired_test(test_kind, base[None], cand[None], higher_is_better=higher_is_better, seed=seed)
    verdict = str(decide(result, kind=test_kind, higher_is_better=higher_is_better, margin=margin, alpha=alpha, mode=mode)[0])
    if np.array_equal(base, cand):
        notes.append("identical on every paired item: no difference to test")
    elif test_kind == "binary" and result.p_worse[0] == 1.0 and result.p_better[0] == 1.0:
        notes.append("no discordant pairs")
    if n == 1:
        notes.append("1 paired item: too few to show a difference")
    elif result.bootstrap and n < MIN_BOOTSTRAP_ITEMS:
        rough = f"{n} paired items: the bootstrap interval is rough below {MIN_BOOTSTRAP_ITEMS}"
        notes.append(rough + (", so non-inferiority cannot be shown" if mode == "noninferiority" else ""))
    worse, n_worse = _worse_items(test_kind, ids, base, cand, worse_sign(test_kind, higher_is_better))
    return Comparison(
        verdict=verdict, test=TESTS[test_kind], value=float(result.value[0]), candidate=float(result.candidate[0]),
        delta=float(result.delta[0]), low=float(result.low[0]), high=float(result.high[0]),
        p_value=float(result.p_worse[0]), margin=float(margin), relative=relative, n_paired=n, alpha=alpha, mode=mode,
        worse=worse, notes=tuple(notes), n_worse=n_worse,
    )
