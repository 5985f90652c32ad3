"""Multiple-choice gates: an accuracy bar, and "did fine-tuning break what the base model could do"
(the fine-tuned and the base model on the same items, paired item by item).

``assert_no_forgetting`` decides as the baseline gate does for per-item 0/1 figures: McNemar's test,
mid-p (:func:`pytest_ftmodel.baseline.compare.compare`, kind ``binary``), one-sided, and Newcombe's
interval for the change in accuracy. It fails when the fine-tuned model is significantly worse
(p < ``alpha``) AND its accuracy dropped by more than ``margin``. ``per_category=True`` runs the same
test in every category and also fails a category whose drop is significant after Holm's correction
for the number of categories (and beyond the margin); the overall test then joins the Holm family,
so that "the whole set or any category" keeps the level alpha. ``bench/forgetting_sim.py`` checks
the false-fail rate (exactly and by simulation) and the power.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from pytest_ftmodel.assertions import Margin, _cut, _gated, _judged, _name, _shown
from pytest_ftmodel.bars import number, proportion
from pytest_ftmodel.baseline.store import effective_settings


@dataclass(frozen=True)
class CategoryChange:
    """One category's paired change: accuracies, the drop's p-value and its Holm-adjusted one."""

    category: str
    n: int
    model: float
    base: float
    p_value: float
    p_holm: float = 1.0
    failed: bool = False

    @property
    def delta(self) -> float:
        return self.model - self.base


@dataclass(frozen=True)
class ForgettingResult:
    """The fine-tuned (``model``) and base (``base``) :class:`~pytest_ftmodel.metrics.mc.MCResult` on
    the same items, and the paired comparison: ``delta`` (model minus base accuracy) with its 95%
    interval, the one-sided McNemar mid-p ``p_value``, the items that got worse and better, and
    per-category changes."""

    model: Any
    base: Any
    delta: float
    interval: tuple[float, float]
    p_value: float
    n: int
    margin: float
    alpha: float
    verdict: str
    lost: tuple[int, ...]  # indices the base got right and the fine-tune gets wrong
    gained: tuple[int, ...]
    categories: tuple[CategoryChange, ...] = field(default_factory=tuple)

    @property
    def failed(self) -> bool:
        return self.verdict == "regressed" or any(c.failed for c in self.categories)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error at most alpha when each is compared
    with alpha): the k-th smallest is multiplied by ``m - k``, kept monotone, capped at 1."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    out, running = [1.0] * m, 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (m - k) * p_values[i]))
        out[i] = running
    return out


def _paired(model_items: Sequence[Any], base_items: Sequence[Any], margin: float, alpha: float) -> Any:
    from pytest_ftmodel.baseline.compare import compare

    base = {str(k): float(it.correct) for k, it in enumerate(base_items)}
    cand = {str(k): float(it.correct) for k, it in enumerate(model_items)}
    return compare("binary", base, cand, higher_is_better=True, margin=margin, alpha=alpha)


def forgetting(
    model: Any,
    base: Any,
    items: Any,
    *,
    margin: float = 0.01,
    alpha: float = 0.05,
    per_category: bool = False,
    normalize: str = "none",
    target_delimiter: str = " ",
    chat: bool | str = False,
    batch_size: int | None = None,
    cache: Any = "auto",
) -> ForgettingResult:
    """The paired comparison behind :func:`assert_no_forgetting` (same keywords)."""
    from pytest_ftmodel.metrics.mc import mc_accuracy

    options: dict[str, Any] = dict(normalize=normalize, target_delimiter=target_delimiter, chat=chat, batch_size=batch_size, cache=cache)
    mine = mc_accuracy(model, items, **options)
    theirs = mc_accuracy(base, items, **options)
    overall = _paired(mine.items, theirs.items, margin, alpha)
    lost = tuple(k for k, (m, b) in enumerate(zip(mine.items, theirs.items)) if b.correct and not m.correct)
    gained = tuple(k for k, (m, b) in enumerate(zip(mine.items, theirs.items)) if m.correct and not b.correct)
    names = sorted({it.category or "" for it in mine.items})
    changes = []
    for name in names:
        idx = [k for k, it in enumerate(mine.items) if (it.category or "") == name]
        c = _paired([mine.items[k] for k in idx], [theirs.items[k] for k in idx], margin, alpha)
        changes.append(CategoryChange(name, len(idx), c.candidate, c.value, c.p_value))
    verdict = overall.verdict
    adjusted = holm([c.p_value for c in changes])
    if per_category:
        # the overall test joins the family, so that "the whole set or any category" keeps the level
        family = holm([overall.p_value, *(c.p_value for c in changes)])
        adjusted = family[1:]
        if verdict == "regressed" and family[0] >= alpha:
            verdict = "within noise"
    categories = tuple(
        CategoryChange(
            c.category, c.n, c.model, c.base, c.p_value, p,
            failed=per_category and p < alpha and c.base - c.model > margin,
        )
        for c, p in zip(changes, adjusted)
    )
    return ForgettingResult(
        model=mine, base=theirs, delta=overall.delta, interval=(overall.low, overall.high), p_value=overall.p_value,
        n=overall.n_paired, margin=float(margin), alpha=float(alpha), verdict=verdict, lost=lost, gained=gained,
        categories=categories,
    )


def _mc_settings(result: Any, **given: Any) -> dict[str, Any]:
    from pytest_ftmodel.metrics.mc import mc_accuracy

    # the rule (normalisation, delimiter, chat, boundary rule version) is part of the baseline key
    return effective_settings(given, mc_accuracy, **{k: v for k, v in result.rule.items()})


@_gated(at_least=proportion(0.6))
def assert_mc_accuracy(
    model: Any,
    items: Any,
    at_least: float = 0.0,
    *,
    normalize: str = "none",
    target_delimiter: str = " ",
    chat: bool | str = False,
    batch_size: int | None = None,
    cache: Any = "auto",
    margin: Margin = None,
) -> Any:
    """Fail unless the multiple-choice accuracy of ``model`` on ``items`` is at least ``at_least``
    (see :func:`~pytest_ftmodel.metrics.mc.mc_accuracy`); returns the ``MCResult``. Per item it is a
    0/1 figure, compared with the release baseline by McNemar's test."""
    __tracebackhide__ = True
    from pytest_ftmodel.metrics.mc import mc_accuracy

    result = mc_accuracy(model, items, normalize=normalize, target_delimiter=target_delimiter, chat=chat, batch_size=batch_size, cache=cache)
    settings = _mc_settings(result, normalize=normalize, target_delimiter=target_delimiter, chat=chat)
    passed = _judged(
        "mc accuracy", result.accuracy, at_least, ">=", n=result.n, unit="items", model=_name(model),
        interval=result.interval, result=result, settings=settings,
    )
    if not passed:
        low, high = result.interval
        others = ", ".join(f"{k} {v:.3f}" for k, v in result.accuracies.items() if k != normalize)
        raise AssertionError(
            f"multiple-choice accuracy {result.accuracy:.3f} ({result.n_correct}/{result.n}, normalize={normalize!r}) is below "
            f"the bar {at_least:.3f}; 95% CI [{low:.3f}, {high:.3f}]; model {_shown(model)}\n"
            f"  other normalisations: {others}\n{_category_lines(result)}\n  first errors:\n"
            + "\n".join(_item_line(result, it.index) for it in result.errors()[:3])
        )
    return result


def _category_lines(result: Any) -> str:
    cats = result.per_category()
    if len(cats) <= 1:
        return "  (no categories)"
    return "  per category: " + ", ".join(f"{k or '(none)'} {c}/{n}" for k, (c, n) in sorted(cats.items()))


def _item_line(result: Any, index: int, base: Any = None) -> str:
    from pytest_ftmodel.escaping import visible

    it = result.items[index]
    name = f" [{visible(it.id)}]" if it.id else ""
    said = f"chose {visible(_cut(it.choices[it.predicted], 30))!r}, gold {visible(_cut(it.choices[it.gold], 30))!r}"
    return f"    item {index}{name}: {visible(_cut(it.prompt, 50))!r}: {said}"


@_gated(alpha=number(0.05, low=0, high=1, why="a significance level lies in (0, 1)"))
def assert_no_forgetting(
    model: Any,
    base: Any,
    items: Any,
    *,
    margin: float = 0.01,
    alpha: float = 0.05,
    per_category: bool = False,
    normalize: str = "none",
    target_delimiter: str = " ",
    chat: bool | str = False,
    batch_size: int | None = None,
    cache: Any = "auto",
) -> ForgettingResult:
    """Fail when the fine-tuned ``model`` answers the multiple-choice ``items`` significantly worse
    than ``base`` (one-sided McNemar mid-p below ``alpha``) by more than ``margin`` (an accuracy
    drop); ``per_category=True`` also fails a category that lost significantly beyond the margin,
    Holm-corrected for the number of categories. Returns the :class:`ForgettingResult`.

    ``margin`` here is the gate's own allowance (the baseline file compares the fine-tuned model's
    per-item accuracy with ``--ftmodel-margin``)."""
    __tracebackhide__ = True
    from pytest_ftmodel.bars import Rule

    # the gate's allowance is one accuracy drop (the baseline file takes the same number)
    Rule("number", 0.01, low=0.0, high=1.0, why="an accuracy drop lies in [0, 1]").check("assert_no_forgetting", "margin", margin)
    result = forgetting(
        model, base, items, margin=margin, alpha=alpha, per_category=per_category, normalize=normalize,
        target_delimiter=target_delimiter, chat=chat, batch_size=batch_size, cache=cache,
    )
    settings = _mc_settings(result.model, normalize=normalize, target_delimiter=target_delimiter, chat=chat, per_category=per_category)
    passed = not result.failed
    from pytest_ftmodel.report import record_metric

    record_metric(
        "mc accuracy change", result.delta, threshold=-margin, op=">=", n=result.n, unit="items", passed=passed,
        model=(_name(model), _name(base)), interval=result.interval, result=result, settings=settings,
    )
    if not passed:
        raise AssertionError(forgetting_diagnosis(result, model, base))
    return result


def forgetting_diagnosis(result: ForgettingResult, model: Any = "model", base: Any = "base") -> str:
    """What :func:`assert_no_forgetting` says when it fails."""
    from pytest_ftmodel.escaping import visible

    low, high = result.interval
    lines = [
        f"the fine-tuned model forgot: multiple-choice accuracy {result.model.accuracy:.3f} vs the base model's "
        f"{result.base.accuracy:.3f} on the same {result.n} items, change {result.delta:+.3f} (95% CI [{low:+.3f}, {high:+.3f}]), "
        f"McNemar mid-p {result.p_value:.2g} (one-sided) < alpha {result.alpha:g}, margin {result.margin:g}; "
        f"{len(result.lost)} items lost, {len(result.gained)} gained; normalize={result.model.normalize!r}; "
        f"model {_shown(model)}, base {_shown(base)}"
    ]
    cats = sorted(result.categories, key=lambda c: c.delta)
    if len(cats) > 1 or (cats and cats[0].category):
        lines.append("  categories that lost most:")
        for c in cats[:3]:
            flag = "  FAILED (Holm)" if c.failed else ""
            lines.append(
                f"    {visible(c.category) or '(none)'}: {c.base:.3f} -> {c.model:.3f} ({c.delta:+.3f}, n={c.n}, "
                f"p {c.p_value:.2g}, Holm {c.p_holm:.2g}){flag}"
            )
    if result.lost:
        lines.append("  worst items (the base model right, the fine-tuned model wrong):")
        worst = sorted(result.lost, key=lambda k: _margin_lost(result, k), reverse=True)
        lines.extend(_item_line(result.model, k) for k in worst[:5])
    return "\n".join(lines)


def _margin_lost(result: ForgettingResult, k: int) -> float:
    """How far the fine-tuned model now prefers its wrong choice over the gold one (under the rule)."""
    it = result.model.items[k]
    s = it.scores(result.model.normalize)
    return s[it.predicted] - s[it.gold]
