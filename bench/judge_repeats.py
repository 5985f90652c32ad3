"""How often a judge gate decides wrongly on noise, with and without repeats, by simulation.

Run from the repository root: ``python bench/judge_repeats.py [--sims 2000]``. Every simulated gate
uses the library's own rule (``pytest_ftmodel.judges.gate.repeat_verdict``, ``min_stable=0.8``).

Scenario: a sheet of ``n`` items whose true scores (what the judge gives on average) are spread
around a mean set ``delta`` from the bar; each repeat of the judge adds independent noise to each item
(sd ``noise``; scores are left unclipped so that a repeat's expected score is the true one). The right verdict is the one on the true mean of these items;
"wrong" is a pass or fail that differs from it, "inconclusive" the gate's refusal to decide.

The issue proposed "inconclusive when fewer than a set share of items are stable (their repeats on
one side of the bar)". That rule looks at items, and items near the bar straddle it whatever the
sheet's mean does: the side rows show it calls most gates inconclusive even far from the bar. The
rule kept is on the gate's own verdict: inconclusive when fewer than ``min_stable`` of the repeats'
verdicts (each repeat's mean over the items against the bar) agree with the verdict on their mean.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pytest_ftmodel.judges.gate import repeat_verdict  # noqa: E402

BAR = 3.5
MIN_STABLE = 0.8


def simulate(delta: float, k: int, *, n: int, noise: float, item_sd: float, sims: int, seed: int) -> tuple[float, float, float]:
    """(wrong, inconclusive, inconclusive by the per-item rule) shares over ``sims`` sheets."""
    rng = np.random.default_rng(seed)
    wrong = inconclusive = item_rule = 0
    for _ in range(sims):
        true = BAR + delta + rng.normal(0, item_sd, n)
        true += BAR + delta - true.mean()  # the sheet's true mean is exactly delta from the bar
        # not clipped to 1..5: clipping would move the judge's expected score away from the true one
        scores = true[:, None] + rng.normal(0, noise, (n, k))
        out = repeat_verdict(scores.tolist(), BAR)
        truth = delta >= 0
        if k > 1 and out["agreeing"] < MIN_STABLE:
            inconclusive += 1
        elif out["passed"] != truth:
            wrong += 1
        if k > 1 and 1 - len(out["straddling"]) / n < MIN_STABLE:
            item_rule += 1
    return wrong / sims, inconclusive / sims, item_rule / sims


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sims", type=int, default=2000)
    parser.add_argument("--n", type=int, default=40, help="items on the sheet")
    parser.add_argument("--noise", type=float, default=0.8, help="sd of one repeat's score around the item's true score")
    parser.add_argument("--item-sd", type=float, default=0.8, help="sd of the items' true scores")
    args = parser.parse_args()
    print(f"judge gate under repeats: {args.n} items, repeat noise sd {args.noise}, item sd {args.item_sd}, bar {BAR}, "
          f"min_stable {MIN_STABLE}, {args.sims} sheets per row")
    print(f"{'true mean - bar':>16}{'k':>4}{'wrong':>10}{'inconclusive':>14}{'per-item rule: inconclusive':>30}")
    for delta in (-0.3, -0.2, -0.1, -0.05, 0.05, 0.1, 0.2, 0.3):
        for k in (1, 3, 5):
            w, inc, item = simulate(delta, k, n=args.n, noise=args.noise, item_sd=args.item_sd, sims=args.sims, seed=int(1000 * (delta + 1)) * 10 + k)
            print(f"{delta:>+16.2f}{k:>4}{w:>10.3f}{inc if k > 1 else float('nan'):>14.3f}{item if k > 1 else float('nan'):>30.3f}")


if __name__ == "__main__":
    main()
