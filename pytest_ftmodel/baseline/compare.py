"""Paired comparison of a candidate's per-item results with the baseline's.

The test is chosen by the metric's kind (see :data:`KINDS`); the verdict by the one-sided p-value
(is the candidate worse?), the estimated change and the margin. ``Comparison.as_dict()`` is what
goes into ``MetricRecord.baseline`` and the reports.

INTERIM: the statistics below are a placeholder (a plain paired bootstrap for every kind) so that
the plumbing can be built against this interface; the kind-specific tests replace it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

#: kind -> how its per-item values look and which paired test compares them
KINDS = {
    "binary": "per-item 0/1 (accuracy, pass@1): exact McNemar",
    "continuous": "per-item score (ROUGE, per-problem pass@k): paired bootstrap of the mean difference",
    "perplexity": "per-item (NLL sum in nats, token count): paired bootstrap of the log-ratio of summed NLL",
    "ordinal": "per-item human score: Wilcoxon signed-rank",
}

#: verdicts; the first fails a gate, "inconclusive" fails only in noninferiority mode
VERDICTS = ("regressed", "within noise", "improved", "inconclusive", "new")

MODES = ("superiority", "noninferiority")


@dataclass(frozen=True)
class Comparison:
    """A candidate metric against its baseline entry, on the items both have.

    ``delta`` is candidate minus baseline in the metric's own units, except for ``relative``
    comparisons (perplexity), where it is ``candidate / baseline - 1``. ``low``/``high``: its 95%
    interval (two-sided). ``p_value``: one-sided, the alternative being "the candidate is worse".
    ``worse``: ids of the paired items that got worse, worst first (at most 20).
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

    @property
    def failed(self) -> bool:
        return self.verdict == "regressed" or (self.verdict == "inconclusive" and self.mode == "noninferiority")

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["worse"], out["notes"] = list(self.worse), list(self.notes)
        return out


def _value(kind: str, values: Sequence[Any]) -> float:
    if kind == "perplexity":
        nll = sum(float(v[0]) for v in values)
        tokens = sum(int(v[1]) for v in values)
        return math.exp(nll / tokens) if tokens else float("nan")
    return sum(float(v) for v in values) / len(values) if values else float("nan")


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
    """
    import numpy as np

    if kind not in KINDS:
        raise ValueError(f"unknown comparison kind {kind!r}: use one of {', '.join(KINDS)}")
    if mode not in MODES:
        raise ValueError(f"unknown baseline mode {mode!r}: use one of {', '.join(MODES)}")
    ids = sorted(set(baseline) & set(candidate))
    b = [baseline[i] for i in ids]
    c = [candidate[i] for i in ids]
    base_value, cand_value = _value(kind, b), _value(kind, c)
    relative = kind == "perplexity"
    rng = np.random.default_rng(seed)
    n = len(ids)
    reps = 2000
    idx = rng.integers(0, n, size=(reps, n)) if n else np.zeros((reps, 0), dtype=int)
    if relative:
        bn, bt = np.array([float(v[0]) for v in b]), np.array([float(v[1]) for v in b])
        cn, ct = np.array([float(v[0]) for v in c]), np.array([float(v[1]) for v in c])
        boot = np.exp(cn[idx].sum(1) / ct[idx].sum(1) - bn[idx].sum(1) / bt[idx].sum(1)) - 1.0
        delta = cand_value / base_value - 1.0
        worse_sign = 1.0
        per_item = cn / np.maximum(ct, 1) - bn / np.maximum(bt, 1)
    else:
        diff = np.array([float(y) - float(x) for x, y in zip(b, c)])
        boot = diff[idx].mean(1)
        delta = cand_value - base_value
        worse_sign = -1.0 if higher_is_better else 1.0
        per_item = diff
    drop = worse_sign * delta  # > 0: worse
    p_value = float((np.sum(worse_sign * boot <= 0) + 1) / (reps + 1))
    low, high = (float(x) for x in np.quantile(boot, [0.025, 0.975])) if n else (float("nan"), float("nan"))
    bound = max(worse_sign * low, worse_sign * high)
    better = float((np.sum(worse_sign * boot >= 0) + 1) / (reps + 1)) < alpha
    if mode == "noninferiority":
        if bound <= margin:
            verdict = "improved" if better else "within noise"
        elif p_value < alpha and drop > margin:
            verdict = "regressed"
        else:
            verdict = "inconclusive"
    else:
        verdict = "regressed" if (p_value < alpha and drop > margin) else "improved" if better else "within noise"
    order = sorted(range(n), key=lambda i: -worse_sign * per_item[i])
    worse = tuple(ids[i] for i in order if worse_sign * per_item[i] > 0)[:20]
    return Comparison(
        verdict=verdict, test="paired bootstrap (interim)", value=base_value, candidate=cand_value, delta=float(delta),
        low=low, high=high, p_value=p_value, margin=margin, relative=relative, n_paired=n, alpha=alpha, mode=mode,
        worse=worse,
    )
