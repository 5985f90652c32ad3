"""Repeated sampling (``samples=k``): false-fail rate, power and interval coverage, by simulation.

Run from the repository root: ``python bench/samples_sim.py [--sims 2000]``.

The scenario: a gate on a 0/1 figure per answer (a right label). Each item has a majority outcome
(right for 70% of items) and every sampled answer flips away from it with probability ``flip`` (0.2:
a right item is right in 80% of draws, a wrong one in 20%). Items are drawn afresh in every
simulation, so the quantity gated on is the accuracy over the population of items (0.62 here).

1. False-fail: two runs of the same model (nothing changed), each with k samples per item, compared
   as the baseline gate compares them (k=1: per-item 0/1, McNemar mid-p; k>1: per-item means, paired
   sign-flip test; the default margin 0.01). The rate of "regressed" must stay <= 0.05.
2. Power: the candidate is 5 points worse (every item's chance of a right answer lowered by 0.05).
3. Coverage of the 95% interval of the accuracy: with the item as the unit (the beta interval at the
   fractional count of per-item means, what the gates report) against the interval that treats the
   n*k draws as independent (a binomial proportion of all answers), which is too narrow because the
   draws of one item are not independent.

Every comparison uses the package's own paired_test/decide (2,000 resamples, seed 0).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pytest_ftmodel.baseline import compare as cmp  # noqa: E402
from pytest_ftmodel.metrics.stats import beta_interval  # noqa: E402

ACCURACY = 0.7  # share of items whose majority answer is right
FLIP = 0.2  # chance that a sampled answer differs from its item's majority
DROP = 0.05


def _chances(rng: np.random.Generator, sims: int, n: int) -> np.ndarray:
    """Per-item chance of a right answer, (sims, n): 1 - FLIP for majority-right items, FLIP otherwise."""
    right = rng.random((sims, n)) < ACCURACY
    return np.where(right, 1.0 - FLIP, FLIP)


def _run(rng: np.random.Generator, chances: np.ndarray, k: int) -> np.ndarray:
    """Per-item mean over k sampled answers, (sims, n)."""
    draws = rng.random((*chances.shape, k)) < chances[..., None]
    return draws.mean(axis=-1)


def regressed_share(sims: int, n: int, k: int, drop: float, seed: int) -> float:
    rng = np.random.default_rng(seed)
    chances = _chances(rng, sims, n)
    base = _run(rng, chances, k)
    cand = _run(rng, np.clip(chances - drop, 0.0, 1.0), k)
    kind = "binary" if k == 1 else "continuous"
    test = cmp.paired_test(kind, base, cand, higher_is_better=True, interval=False)
    margin = cmp.DEFAULT_MARGINS[kind]
    verdicts = cmp.decide(test, kind=kind, higher_is_better=True, margin=margin)
    return float(np.mean(verdicts == "regressed"))


def coverage(sims: int, n: int, k: int, seed: int) -> tuple[float, float]:
    """Coverage of the population accuracy: items as the unit, draws as independent."""
    rng = np.random.default_rng(seed)
    truth = ACCURACY * (1 - FLIP) + (1 - ACCURACY) * FLIP
    means = _run(rng, _chances(rng, sims, n), k)
    low, high = beta_interval(means.sum(axis=1), n)
    items = float(np.mean((low <= truth) & (truth <= high)))
    low, high = beta_interval(np.round(means.sum(axis=1) * k), n * k)
    draws = float(np.mean((low <= truth) & (truth <= high)))
    return items, draws


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sims", type=int, default=2000)
    args = parser.parse_args()
    start = time.perf_counter()
    print(f"scenario: {ACCURACY:.0%} of items right by majority, each answer flips with p={FLIP}; {args.sims} simulations per cell\n")
    print("1. false-fail (no real change, default margin 0.01; must be <= 0.05)")
    print(f"{'items':>8}" + "".join(f"{f'k={k}':>10}" for k in (1, 5, 10)))
    for n in (50, 200, 500):
        print(f"{n:>8}" + "".join(f"{regressed_share(args.sims, n, k, 0.0, seed=n + k):>10.3f}" for k in (1, 5, 10)))
    print(f"\n2. power: share of runs failed for a {DROP:.0%}-point drop")
    print(f"{'items':>8}" + "".join(f"{f'k={k}':>10}" for k in (1, 3, 5, 10)))
    for n in (50, 200, 500):
        print(f"{n:>8}" + "".join(f"{regressed_share(args.sims, n, k, DROP, seed=7 * n + k):>10.0%}" for k in (1, 3, 5, 10)))
    print("\n3. coverage of the 95% interval of the accuracy (items drawn from a population)")
    print(f"{'items':>8}{'k':>4}{'items as unit':>16}{'draws independent':>20}")
    for n in (50, 200):
        for k in (5, 10):
            items, draws = coverage(args.sims, n, k, seed=11 * n + k)
            print(f"{n:>8}{k:>4}{items:>16.3f}{draws:>20.3f}")
    print(f"\n({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
