"""False-fail rate and power of the baseline comparison, per kind, by simulation.

Run from the repository root: ``python bench/baseline_stats.py [--sims 2000]``. The scenarios are the
ones tests/test_baseline_stats.py checks (realistic per-item data, described there); every simulated
comparison uses compare()'s own statistics (``paired_test``/``decide``, 2,000 resamples, seed 0).

Columns: false-fail = share of "regressed" when nothing changed, with the default margin and with
margin 0 (the level of the test itself); power = share of "regressed" at the effect named. Side rows
compare with the alternatives we did not take: the exact conditional McNemar test (we use its mid-p
version; both also computed exactly over every outcome, by agreement between the runs), and the
shift-method bootstrap p-value on 5-30 items.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, os.path.join(HERE, ".."))

import test_baseline_stats as sims  # noqa: E402  (the scenarios the tests check)

from pytest_ftmodel.baseline import compare as cmp  # noqa: E402


def _row(label: str, *cells: object, note: str = "") -> None:
    print(f"{label:<34}" + "".join(f"{c!s:>18}" for c in cells) + (f"   {note}" if note else ""))


def _exact_binary(n: int, agreement: float, effect: float) -> tuple[float, float]:
    """P("regressed") of the binary gate (mid-p, exact conditional) over every outcome of the scenario."""
    from scipy.stats import binom

    worse, better = sims.discordant_chances(agreement, effect)
    m = np.arange(n + 1)[:, None]
    k = np.arange(n + 1)[None, :]
    chance = binom.pmf(m, n, worse + better) * binom.pmf(k, m, worse / (worse + better))
    drop = (2 * k - m) / n > cmp.DEFAULT_MARGINS["binary"]
    mid = cmp.mcnemar_midp(np.broadcast_to(k, chance.shape), np.broadcast_to(m, chance.shape))
    exact = binom.sf(k - 1, m, 0.5)
    valid = k <= m
    return (
        float(np.sum(chance * ((mid < sims.ALPHA) & drop & valid))),
        float(np.sum(chance * ((exact < sims.ALPHA) & drop & valid))),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sims", type=int, default=2000, help="simulated baseline/candidate pairs per cell (default 2000)")
    runs = parser.parse_args().sims
    start = time.perf_counter()
    print(f"{runs} simulated pairs per cell, alpha {sims.ALPHA}, {cmp.REPLICATES} resamples\n")
    _row("kind (items), default margin", "false-fail", "level (margin 0)", "power", note="effect (power)")
    for kind in sims.KINDS:
        n, effect, what = sims.POWER_EFFECTS[kind]
        fail = sims.gate_rates(kind, runs)["regressed"]
        level = sims.gate_rates(kind, runs, margin=0.0)["regressed"]  # the same simulated pairs
        power = sims.gate_rates(kind, runs, effect=effect, data_seed=2)["regressed"]
        _row(f"{kind} ({n}), margin {cmp.DEFAULT_MARGINS[kind]}", f"{fail:.4f}", f"{level:.4f}", f"{power:.4f}", note=what)
    fail = sims.gate_rates("binary", runs, agreement=0.90)["regressed"]
    power = sims.gate_rates("binary", runs, effect=0.05, data_seed=3, agreement=0.90)["regressed"]
    _row("binary (500), runs agree on 90%", f"{fail:.4f}", "", f"{power:.4f}", note="accuracy 0.75 -> 0.70")

    print("\nalternatives not taken (same scenarios):")
    rng = np.random.default_rng(4)
    from scipy.stats import binom

    for effect, label in ((0.0, "false-fail"), (0.05, "power")):
        base, cand = sims.scenario("binary", runs, 500, effect, rng)
        down = np.sum((base == 1) & (cand == 0), axis=1)
        up = np.sum((base == 0) & (cand == 1), axis=1)
        drop = (down - up) / 500 > cmp.DEFAULT_MARGINS["binary"]
        exact = binom.sf(down - 1, down + up, 0.5)
        mid = binom.sf(down, down + up, 0.5) + 0.5 * binom.pmf(down, down + up, 0.5)
        _row(f"binary (500) {label}", f"mid-p {np.mean((mid < 0.05) & drop):.4f}", f"exact {np.mean((exact < 0.05) & drop):.4f}")
    print("\nbinary gate computed exactly (no simulation), McNemar mid-p (ours) / exact conditional:")
    _row("runs agree on", "max level, n<=600", "power (500), -5pt")
    for agreement in (0.80, 0.85, 0.90, 0.95):
        level = [_exact_binary(n, agreement, 0.0) for n in range(10, 601, 10)]
        worst = max(level, key=lambda pair: pair[0])
        power = _exact_binary(500, agreement, 0.05)
        _row(f"{agreement:.0%}", f"{worst[0]:.4f} / {max(x[1] for x in level):.4f}", f"{power[0]:.4f} / {power[1]:.4f}")
    for n in (5, 10, 30):
        base, cand = sims.scenario("continuous", runs, n, 0.0, rng)
        diff = cand - base
        observed = diff.mean(axis=1)
        counts = np.concatenate(list(cmp._count_chunks(n, cmp.REPLICATES, 0)))
        boot = diff @ counts.T / n
        # shift method: the bootstrap distribution moved to the null, p = P*(mean* - mean <= mean)
        shift_p = (1 + np.sum(boot - observed[:, None] <= observed[:, None], axis=1)) / (cmp.REPLICATES + 1)
        ours = cmp.paired_test("continuous", base, cand, interval=False).p_worse
        _row(f"continuous ({n}) level, margin 0", f"shift {np.mean(shift_p < 0.05):.4f}", f"sign-flip {np.mean(ours < 0.05):.4f}")
    print(f"\n({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
