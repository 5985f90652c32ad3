"""How far a judge agrees with people, and with itself: Krippendorff's alpha (ordinal) on the scores
1-5, with a seeded percentile bootstrap interval over items (the A/B gate's calibration, for scores).

The judge's probability-weighted score and a person's mean over reviewers are put on the ordinal
scale by rounding half up (3.5 -> 4) before alpha is computed: alpha's ordinal metric is defined on
the levels 1..5, and the bar a user sets (0.6 by default) reads the same as for people.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from pytest_ftmodel.human import krippendorff_alpha_ordinal

BOOTSTRAP_SAMPLES = 1000
BOOTSTRAP_SEED = 20261


def to_level(score: float) -> int:
    """The nearest level 1..5, halves up."""
    return min(5, max(1, int(math.floor(score + 0.5))))


@dataclass(frozen=True)
class Calibration:
    """A judge against people on one criterion, over the ``overlap`` items both scored."""

    criterion: str
    alpha: float | None  # None when undefined (no overlap, or every value the same)
    interval: tuple[float, float] | None  # 95% percentile bootstrap over items; None when alpha is
    overlap: int
    #: (people's mean, the judge's score) per item both scored, in the sheet's order
    pairs: tuple[tuple[float, float], ...] = ()


def alpha_interval(
    rows: Sequence[Sequence[int | None]], *, samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED
) -> tuple[float, float] | None:
    """Percentile bootstrap of alpha over the items (the columns of ``rows``), seeded; None when
    alpha is undefined in most resamples."""
    import krippendorff
    import numpy as np

    data = np.array([[np.nan if v is None else float(v) for v in r] for r in rows], dtype=float)
    n = data.shape[1]
    if n < 2:
        return None
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(samples):
        sub = data[:, rng.integers(0, n, size=n)]
        pairable = sub[:, (~np.isnan(sub)).sum(axis=0) >= 2]
        seen = pairable[~np.isnan(pairable)]
        if seen.size < 2 or np.unique(seen).size < 2:
            continue  # alpha undefined in this resample (as krippendorff_alpha_ordinal says)
        values.append(float(krippendorff.alpha(reliability_data=sub, level_of_measurement="ordinal", value_domain=[1, 2, 3, 4, 5])))
    if len(values) < samples / 2:
        return None
    low, high = np.percentile(values, [2.5, 97.5])
    return (float(low), float(high))


def calibrate(criterion: str, human: Sequence[float], judge: Sequence[float]) -> Calibration:
    """The judge's agreement with people on the items both scored (``human[i]`` and ``judge[i]`` are
    one item's people's mean and the judge's score)."""
    rows = [[to_level(j) for j in judge], [to_level(h) for h in human]]
    alpha = krippendorff_alpha_ordinal(rows) if rows[0] else None
    interval = alpha_interval(rows) if alpha is not None else None  # type: ignore[arg-type]
    return Calibration(criterion, alpha, interval, len(human), tuple(zip(map(float, human), map(float, judge))))


def _level_or_none(score: float | None) -> int | None:
    return None if score is None else to_level(score)


def self_agreement(repeats: Sequence[Sequence[float | None]]) -> float | None:
    """The judge's agreement with itself: alpha (ordinal) with each repeat as a coder, over items
    (``repeats[i]`` are item ``i``'s scores); None for one repeat or no variation at all."""
    if not repeats or max(len(r) for r in repeats) < 2:
        return None
    k = max(len(r) for r in repeats)
    rows = [[_level_or_none(r[j] if j < len(r) else None) for r in repeats] for j in range(k)]
    return krippendorff_alpha_ordinal(rows)  # type: ignore[arg-type]
