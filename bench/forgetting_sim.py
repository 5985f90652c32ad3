"""assert_no_forgetting's decision by simulation: false-fail rate when nothing changed, and power.

Model: 500 items; the base model answers each right with probability 0.75. The fine-tuned model
agrees with the base on every item except a share ``churn`` of them that change (half lost, half
gained in expectation: noise, no net change), plus, for a drop of ``d``, a further share ``d`` of
items the base got right and the fine-tune now gets wrong (see :func:`simulate`). Each row is the decision the gate takes (McNemar mid-p,
one-sided, alpha 0.05, and a drop beyond the margin 0.01: ``compare.paired_test`` and ``decide``,
the code the gate runs). The per-category gate (``per_category=True``) is simulated with 5 categories of 100 items:
Holm over the overall test and the 5 category tests.
The false-fail rate of the overall test is also computed exactly (no simulation noise).

    python bench/forgetting_sim.py [--runs 4000] [--items 500]
"""

from __future__ import annotations

import argparse

import numpy as np


def simulate(rng, runs: int, n: int, churn: float, drop: float, p_base: float = 0.75) -> tuple[np.ndarray, np.ndarray]:
    """Per item, independently: the base is right with probability ``p_base``; an item it got right
    is lost with probability ``(churn / 2 + drop) / p_base``, one it got wrong is gained with
    probability ``churn / 2 / (1 - p_base)``: a share ``churn`` of items changes with no net change in
    expectation, plus a net drop of ``drop``."""
    base = (rng.random((runs, n)) < p_base).astype(np.float64)
    u = rng.random((runs, n))
    lose = (base == 1.0) & (u < (churn / 2 + drop) / p_base)
    gain = (base == 0.0) & (u < churn / 2 / (1 - p_base))
    cand = np.where(lose, 0.0, np.where(gain, 1.0, base))
    return base, cand


def fails(base: np.ndarray, cand: np.ndarray, margin: float, alpha: float) -> np.ndarray:
    from pytest_ftmodel.baseline.compare import decide, paired_test

    result = paired_test("binary", base, cand, higher_is_better=True, interval=False)
    return decide(result, kind="binary", higher_is_better=True, margin=margin, alpha=alpha) == "regressed"


def holm_fails(base: np.ndarray, cand: np.ndarray, categories: int, margin: float, alpha: float) -> np.ndarray:
    from pytest_ftmodel.assertions_mc import holm
    from pytest_ftmodel.baseline.compare import paired_test

    parts = np.array_split(np.arange(base.shape[1]), categories)
    ps, drops = [], []
    for idx in parts:
        r = paired_test("binary", base[:, idx], cand[:, idx], higher_is_better=True, interval=False)
        ps.append(r.p_worse)
        drops.append(-r.delta)
    ps_arr, drops_arr = np.stack(ps, axis=1), np.stack(drops, axis=1)
    whole = paired_test("binary", base, cand, higher_is_better=True, interval=False)
    # the overall test is in the family too (as the gate does with per_category=True)
    ps_arr = np.concatenate([whole.p_worse[:, None], ps_arr], axis=1)
    drops_arr = np.concatenate([-whole.delta[:, None], drops_arr], axis=1)
    adjusted = np.array([holm(list(row)) for row in ps_arr])
    return ((adjusted < alpha) & (drops_arr > margin)).any(axis=1)


def exact_false_fail(n: int, churn: float, margin: float, alpha: float) -> float:
    """The exact false-fail rate of the overall test under the null model of :func:`simulate`: the
    number of changed items m ~ Binomial(n, churn), of which k lost ~ Binomial(m, 1/2); the gate
    fails when the mid-p of k of m is below alpha and the drop (2k - m) / n exceeds the margin."""
    from scipy.stats import binom

    from pytest_ftmodel.baseline.compare import mcnemar_midp

    total = 0.0
    for m in range(n + 1):
        pm = binom.pmf(m, n, churn)
        if pm < 1e-15:
            continue
        k = np.arange(m + 1)
        reject = (mcnemar_midp(k, np.full_like(k, m)) < alpha) & ((2 * k - m) / n > margin)
        total += pm * float(binom.pmf(k[reject], m, 0.5).sum())
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4000)
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--margin", type=float, default=0.01)
    parser.add_argument("--alpha", type=float, default=0.05)
    args = parser.parse_args()
    rng = np.random.default_rng(2024)
    print(f"{args.items} items, {args.runs} runs per row, margin {args.margin}, alpha {args.alpha}, base accuracy 0.75")
    print(f"{'churn':>6} {'true drop':>10} {'fail rate':>10} {'per-category (Holm) fail':>26}")
    for churn in (0.0, 0.05, 0.10, 0.20):
        for drop in (0.0, args.margin, 0.05):
            base, cand = simulate(rng, args.runs, args.items, churn, drop)
            overall = fails(base, cand, args.margin, args.alpha)
            either = holm_fails(base, cand, 5, args.margin, args.alpha)
            label = "false-fail" if drop == 0 else ("at margin" if drop == args.margin else "power")
            exact = f"   (exact: {exact_false_fail(args.items, churn, args.margin, args.alpha):.4f})" if drop == 0 else ""
            print(f"{churn:>6.0%} {drop:>10.2f} {overall.mean():>10.3f} {either.mean():>26.3f}   {label}{exact}")


if __name__ == "__main__":
    main()
