"""``assert_*`` helpers: measure through a metric, compare with the bar, record, explain failures.

They decide only; the numbers come from :mod:`pytest_ftmodel.metrics`.
"""

from __future__ import annotations

from typing import Any, Sequence

from pytest_ftmodel.report import record_metric


def _cut(text: str, width: int = 60) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def _name(model: Any) -> str:
    return str(getattr(model, "name", "") or "")


def _worst_lines(result: Any, k: int = 3) -> str:
    lines = [
        f"    text {i}: {nll:.3f} nats/token  {_cut(result.texts[i])!r}" for i, nll in result.worst(k)
    ]
    return "\n".join(["  highest per-token NLL:", *lines])


def _ppl_summary(result: Any) -> str:
    low, high = result.interval
    return (
        f"{result.n_texts} texts, {result.n_tokens} tokens scored, 95% CI [{low:.4g}, {high:.4g}]"
    )


def assert_perplexity_below(
    model: Any,
    texts: Sequence[str],
    max_perplexity: float,
    *,
    stride: int | None = None,
    batch_size: int | None = None,
) -> Any:
    """Fail unless the corpus perplexity of ``model`` on ``texts`` is at most ``max_perplexity``.

    Returns the :class:`~pytest_ftmodel.metrics.perplexity.PerplexityResult`.
    """
    __tracebackhide__ = True
    from pytest_ftmodel.metrics.perplexity import perplexity

    result = perplexity(model, texts, stride=stride, batch_size=batch_size)
    passed = result.perplexity <= max_perplexity
    record_metric(
        "perplexity",
        result.perplexity,
        threshold=max_perplexity,
        op="<=",
        n=result.n_texts,
        unit="texts",
        passed=passed,
        model=_name(model),
        interval=result.interval,
    )
    if not passed:
        raise AssertionError(
            f"perplexity {result.perplexity:.4g} is above the bar {max_perplexity:.4g} "
            f"({_ppl_summary(result)}; model {_name(model)})\n{_worst_lines(result)}"
        )
    return result


def assert_perplexity_improves(
    model: Any,
    base: Any,
    texts: Sequence[str],
    min_improvement: float = 0.0,
    *,
    stride: int | None = None,
    batch_size: int | None = None,
) -> Any:
    """Fail unless ``1 - ppl(model) / ppl(base)`` on ``texts`` is at least ``min_improvement``.

    ``min_improvement=0.25`` means "at least 25% lower perplexity than the base model". Returns the
    :class:`~pytest_ftmodel.metrics.perplexity.ImprovementResult`.
    """
    __tracebackhide__ = True
    from pytest_ftmodel.metrics.perplexity import perplexity_improvement

    result = perplexity_improvement(model, base, texts, stride=stride, batch_size=batch_size)
    passed = result.improvement >= min_improvement
    record_metric(
        "perplexity improvement",
        result.improvement,
        threshold=min_improvement,
        op=">=",
        n=result.model.n_texts,
        unit="texts",
        passed=passed,
        model=f"{_name(model)} vs {_name(base)}",
        interval=result.interval,
    )
    if not passed:
        low, high = result.interval
        raise AssertionError(
            f"perplexity improvement {result.improvement:.1%} is below the bar {min_improvement:.1%}: "
            f"{result.model.perplexity:.4g} ({_name(model)}) vs {result.base.perplexity:.4g} ({_name(base)}) "
            f"on {result.model.n_texts} texts, {result.model.n_tokens} tokens; 95% CI [{low:.1%}, {high:.1%}]\n"
            f"{_worst_lines(result.model)}"
        )
    return result
