"""Repeated sampling for the generation gates: ``samples=k`` answers per item, and what they say.

A gate that rests on one greedy answer per item says nothing about a model served with sampling:
an item may be right on one draw and wrong on the next. With ``samples=k`` (and ``temperature > 0``)
every item is answered ``k`` times and scored per answer; the gate's figure is the mean over items of
each item's mean over its samples, and the item, never the draw, is the unit of every interval and
baseline comparison (draws of one item are not independent: treating them as such makes intervals
too narrow; see ``bench/samples_sim.py``).

* Sample ``j`` of an item is generated with the seed :func:`sample_seed` ``(seed, j)``, and sample 0
  with ``seed`` itself: ``samples=1`` is exactly the single-answer path (same answers, same cache
  entries), and ``samples=10`` reuses the cached answers of ``samples=5``.
* Each sample is one :func:`~pytest_ftmodel.generation.generate` call with its own seed, so each
  answer is cached on its own (the key holds the seed, the temperature and top_p).
* Greedy decoding with ``samples > 1`` is an error: every sample would be the same answer.

Per item: the mean over samples; for a figure that is 0/1 per answer (a correct label, a copied
training output) also pass@k (any sample right), pass^k (all samples right) and whether the samples
disagree (the flip rate is the share of items whose samples disagree). Items whose samples disagree
are *flaky*: listed in the diagnosis and the reports, never dropped.
"""

from __future__ import annotations

import hashlib
import numbers
from dataclasses import dataclass
from typing import Any, Sequence

from pytest_ftmodel.errors import BarError, BarTypeError, DataError

#: a continuous per-answer score (ROUGE) whose samples span at least this much marks a flaky item
FLAKY_SPREAD = 0.2


def sample_seed(seed: int, index: int) -> int:
    """The seed of sample ``index`` of a run seeded ``seed``: ``seed`` itself for sample 0 (so one
    sample is the single-answer path), a 63-bit hash of both for the others."""
    if index == 0:
        return int(seed)
    digest = hashlib.sha256(f"pytest-ftmodel sample\0{int(seed)}\0{int(index)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and value == value  # not NaN


def check_sampling(samples: Any, temperature: Any, where: str = "samples", *, top_p: Any = 1.0, seed: Any = 0) -> int:
    """``samples`` as an int >= 1; one line (a :class:`~pytest_ftmodel.errors.BarError`) for a wrong
    value (of ``samples``, ``temperature``, ``top_p`` or ``seed``) or for greedy decoding with several samples."""
    if not _real(temperature) or temperature < 0:
        error = BarError if _real(temperature) else BarTypeError
        raise error(f"temperature={temperature!r:.40}: pass a number >= 0 (0 is greedy)")
    if not _real(top_p) or not 0 < top_p <= 1:
        error = BarError if _real(top_p) else BarTypeError
        raise error(f"top_p={top_p!r:.40}: pass a number in (0, 1], the nucleus's share of probability")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise BarTypeError(f"seed={seed!r:.40}: pass a whole number")
    if isinstance(samples, bool) or not isinstance(samples, numbers.Integral):
        raise BarTypeError(f"{where}={samples!r}: pass a whole number of answers per item, at least 1")
    count = int(samples)
    if count < 1:
        raise BarError(f"{where}={samples!r}: pass a whole number of answers per item, at least 1")
    if count > 1 and not float(temperature) > 0:
        raise BarError(
            f"{where}={samples} with temperature={temperature!r} (greedy): every sample would be the same answer; "
            "pass temperature > 0 (e.g. temperature=0.7, the one you serve with), or samples=1"
        )
    return count


def sampled_answers(
    model: Any,
    prompts: Sequence[str],
    *,
    samples: int = 1,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    **generate_kwargs: Any,
) -> list[list[str]]:
    """``samples`` answers per prompt (a list per prompt, sample 0 first), each generated with the
    seed :func:`sample_seed` ``(seed, j)`` and cached on its own."""
    from pytest_ftmodel.generation import generate

    samples = check_sampling(samples, temperature, top_p=top_p, seed=seed)
    if "n" in generate_kwargs:
        raise DataError("n= is pass@k's number of samples: the generation gates take samples= (with temperature > 0)")
    per_sample = [
        generate(model, prompts, temperature=temperature, top_p=top_p, seed=sample_seed(seed, j), **generate_kwargs)
        for j in range(samples)
    ]
    return [[answers[i] for answers in per_sample] for i in range(len(prompts))]


@dataclass(frozen=True)
class Repeats:
    """What ``samples`` answers per item say about a figure's stability.

    ``means``: per item, the mean of its samples' values (the gate's figure is their mean);
    ``spreads``: per item, max - min over its samples. For 0/1 values (``binary``): ``pass_at_k``,
    the share of items with any sample right (value 1), ``pass_hat_k`` the share with all right.
    ``flip_rate``: the share of items whose samples disagree; ``flaky``: their indices (for
    continuous values: those whose samples span at least :data:`FLAKY_SPREAD`)."""

    samples: int
    binary: bool
    means: tuple[float, ...]
    spreads: tuple[float, ...]
    flip_rate: float
    flaky: tuple[int, ...]
    pass_at_k: float | None = None
    pass_hat_k: float | None = None

    @property
    def n(self) -> int:
        return len(self.means)

    @property
    def mean(self) -> float:
        return sum(self.means) / len(self.means) if self.means else float("nan")

    def interval(self) -> tuple[float, float]:
        """95% interval of the mean over items, the items as the unit (values must lie in [0, 1])."""
        from pytest_ftmodel.metrics.stats import bounded_mean_interval

        return bounded_mean_interval(self.means)

    def summary(self, what: str = "items") -> str:
        """One line: samples, pass@k/pass^k where binary, flip rate and the count of flaky items."""
        k = self.samples
        parts = [f"{k} samples per item"]
        if self.binary and self.pass_at_k is not None and self.pass_hat_k is not None:
            parts.append(f"pass@{k} {self.pass_at_k:.3f}, pass^{k} {self.pass_hat_k:.3f}")
        parts.append(f"flip rate {self.flip_rate:.3f}")
        rule = "samples disagree" if self.binary else f"samples span >= {FLAKY_SPREAD:g}"
        parts.append(f"{len(self.flaky)} of {self.n} {what} flaky ({rule})")
        return "; ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        """The figures the reports show (JSON-safe)."""
        out: dict[str, Any] = {
            "samples": self.samples, "binary": self.binary, "flip_rate": self.flip_rate, "flaky": list(self.flaky),
            "n": self.n,
        }
        if self.binary:
            out["pass_at_k"], out["pass_hat_k"] = self.pass_at_k, self.pass_hat_k
        return out


def repeats(values: Sequence[Sequence[float]], *, binary: bool) -> Repeats:
    """:class:`Repeats` of per-item, per-sample values (every item with the same number of samples)."""
    rows = [[float(v) for v in row] for row in values]
    if not rows or any(not row for row in rows):
        raise DataError("repeats need at least one item with at least one sample")
    k = len(rows[0])
    if any(len(row) != k for row in rows):
        raise DataError("every item needs the same number of samples")
    means = tuple(sum(row) / k for row in rows)
    spreads = tuple(max(row) - min(row) for row in rows)
    disagree = [i for i, s in enumerate(spreads) if s > 0]
    flaky = tuple(disagree) if binary else tuple(i for i, s in enumerate(spreads) if s >= FLAKY_SPREAD - 1e-12)
    pass_at = pass_hat = None
    if binary:
        if any(v not in (0.0, 1.0) for row in rows for v in row):
            raise DataError("binary repeats need values of 0 or 1")
        pass_at = sum(1 for row in rows if max(row) == 1.0) / len(rows)
        pass_hat = sum(1 for row in rows if min(row) == 1.0) / len(rows)
    return Repeats(
        samples=k, binary=binary, means=means, spreads=spreads, flip_rate=len(disagree) / len(rows), flaky=flaky,
        pass_at_k=pass_at, pass_hat_k=pass_hat,
    )


def sampling_settings(samples: int) -> dict[str, int]:
    """``samples`` as a baseline setting: written only when above 1, so that a single-answer figure
    keeps its key (and baselines recorded before samples= existed still compare), while a sampled
    figure never compares with a single-answer one (temperature, top_p and seed are settings too)."""
    return {"samples": samples} if samples > 1 else {}
