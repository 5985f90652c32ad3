"""``assert_*`` helpers: measure through a metric, compare with the bar, record, explain failures.

They decide only; the numbers come from :mod:`pytest_ftmodel.metrics`.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Mapping, ParamSpec, Sequence, TypeVar, Union

from pytest_ftmodel.bars import MARGIN, Rule, check_bars, choice, number, proportion, whole
from pytest_ftmodel.baseline.gate import reset_helper_margin, set_helper_margin
from pytest_ftmodel.baseline.store import effective_settings
from pytest_ftmodel.report import model_name, record_metric, recorder
from pytest_ftmodel.sampling import check_sampling, sampling_settings
from pytest_ftmodel.splits import NORMALIZE

P = ParamSpec("P")
R = TypeVar("R")

#: ``margin=`` of every helper: the largest drop against the baseline file that is not a regression,
#: for every metric the helper judges (a number) or per metric ({"accuracy": 0.02}); relative for
#: perplexity (0.05 = 5%). It takes precedence over ``--ftmodel-margin`` and the per-kind defaults.
Margin = Union[float, Mapping[str, float], None]


def _baseline_failures(start: int) -> list[Any]:
    rec = recorder()
    gate = rec.gate
    if gate is None:
        return []
    return [(gate, r) for r in rec.records[start:] if r.baseline and not r.passed and r.baseline.get("verdict") != "new"]


def _gated(**bars: Rule) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Check the helper's bars first, then fail the test when a figure the helper recorded regressed
    against the baseline file (or does not match its entry), even when the absolute bar holds;
    ``margin=`` applies to those figures.

    ``bars`` names a :class:`~pytest_ftmodel.bars.Rule` for every threshold the helper takes (and
    ``margin``, which every helper takes, is added): they run on the call's arguments before any
    model work, so a bar of the wrong type or range fails in one line, never after the model ran."""
    rules = {**bars, "margin": MARGIN}

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        signature = inspect.signature(func)

        @functools.wraps(func)
        def gated(*args: P.args, **kwargs: P.kwargs) -> R:
            __tracebackhide__ = True
            try:
                bound = signature.bind(*args, **kwargs)
            except TypeError:
                return func(*args, **kwargs)  # raises Python's own message for a wrong call
            bound.apply_defaults()
            check_bars(func.__name__, rules, bound.arguments)
            start = len(recorder().records)
            token = set_helper_margin(kwargs.get("margin"))
            try:
                result = func(*args, **kwargs)
            except AssertionError as exc:
                failures = _baseline_failures(start)
                if failures:
                    raise AssertionError("\n".join([str(exc), *(g.failure_message(r) for g, r in failures)])) from None
                raise
            finally:
                reset_helper_margin(token)
            failures = _baseline_failures(start)
            if failures:
                import pytest

                if all(r.baseline.get("verdict") == "mismatch" for _, r in failures):
                    pytest.fail("\n".join(g.failure_message(r) for g, r in failures), pytrace=False)
                raise AssertionError("\n".join(g.failure_message(r) for g, r in failures))
            return result

        gated.bars = rules  # type: ignore[attr-defined]  # what the tests check every helper declares
        return gated

    return decorate


def _judged(
    name: str,
    value: float,
    bar: float,
    op: str,
    *,
    n: int,
    unit: str,
    model: Any = "",
    interval: tuple[float, float] | None = None,
    result: Any = None,
    settings: dict[str, Any] | None = None,
) -> bool:
    """Compare ``value`` with ``bar`` (``op`` is "<=" or ">="), record it (with the per-item values of
    ``result`` for the reports), and say whether it passed."""
    passed = value <= bar if op == "<=" else value >= bar
    record_metric(
        name, value, threshold=bar, op=op, n=n, unit=unit, passed=passed, model=model, interval=interval,
        result=result, settings=settings,
    )
    return passed


def _cut(text: str, width: int = 60) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def _name(model: Any) -> str:
    return model_name(model)  # a str that also carries the checkpoint's path, for the reports


def _shown(model: Any) -> str:
    """The model's name as a failure message shows it: a served model's id or a folder's name is
    untrusted text (escape sequences and bidi overrides made visible)."""
    from pytest_ftmodel.escaping import visible

    return visible(str(_name(model)))


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


def _eos_setting(eos: bool) -> dict[str, bool]:
    """``eos`` as a baseline setting: written only when on, so that baselines recorded before it
    existed still compare, and one recorded with it never compares with a run without it."""
    return {"eos": True} if eos else {}


@_gated(max_perplexity=number(12.0, low=1, why="a perplexity is at least 1"))
def assert_perplexity_below(
    model: Any,
    texts: Sequence[Any],
    max_perplexity: float,
    *,
    stride: int | None = None,
    batch_size: int | None = None,
    max_length: int | None = None,
    chat: bool | str = False,
    windows: str = "sliding",
    cache: Any = "auto",
    margin: Margin = None,
    eos: bool = False,
) -> Any:
    """Fail unless the corpus perplexity of ``model`` on ``texts`` is at most ``max_perplexity``.

    Takes every keyword :func:`~pytest_ftmodel.metrics.perplexity.perplexity` takes. Returns the
    :class:`~pytest_ftmodel.metrics.perplexity.PerplexityResult`.
    """
    __tracebackhide__ = True
    from pytest_ftmodel.metrics.perplexity import perplexity

    result = perplexity(
        model, texts, stride=stride, batch_size=batch_size, max_length=max_length, chat=chat, windows=windows, cache=cache, eos=eos
    )
    settings = effective_settings(dict(stride=stride, max_length=max_length, chat=chat, windows=windows, **_eos_setting(eos)))
    passed = _judged(
        "perplexity", result.perplexity, max_perplexity, "<=",
        n=result.n_texts, unit="texts", model=_name(model), interval=result.interval, result=result, settings=settings,
    )
    if not passed:
        raise AssertionError(
            f"perplexity {result.perplexity:.4g} is above the bar {max_perplexity:.4g} "
            f"({_ppl_summary(result)}; model {_shown(model)})\n{_worst_lines(result)}"
        )
    return result


@_gated(min_improvement=number(0.25, high=1, why="1 would be a perplexity of 0"))
def assert_perplexity_improves(
    model: Any,
    base: Any,
    texts: Sequence[Any],
    min_improvement: float = 0.0,
    *,
    stride: int | None = None,
    batch_size: int | None = None,
    max_length: int | None = None,
    chat: bool | str = False,
    windows: str = "sliding",
    cache: Any = "auto",
    margin: Margin = None,
    eos: bool = False,
) -> Any:
    """Fail unless ``1 - ppl(model) / ppl(base)`` on ``texts`` is at least ``min_improvement``.

    ``min_improvement=0.25`` means "at least 25% lower perplexity than the base model". Takes every
    keyword :func:`~pytest_ftmodel.metrics.perplexity.perplexity` takes, applied to both models.
    Returns the :class:`~pytest_ftmodel.metrics.perplexity.ImprovementResult`.
    """
    __tracebackhide__ = True
    from pytest_ftmodel.metrics.perplexity import perplexity_improvement

    result = perplexity_improvement(
        model, base, texts, stride=stride, batch_size=batch_size, max_length=max_length, chat=chat, windows=windows, cache=cache, eos=eos
    )
    settings = effective_settings(dict(stride=stride, max_length=max_length, chat=chat, windows=windows, **_eos_setting(eos)))
    passed = _judged(
        "perplexity improvement", result.improvement, min_improvement, ">=",
        n=result.model.n_texts, unit="texts", model=(_name(model), _name(base)), interval=result.interval, result=result,
        settings=settings,
    )
    if not passed:
        low, high = result.interval
        raise AssertionError(
            f"perplexity improvement {result.improvement:.1%} is below the bar {min_improvement:.1%}: "
            f"{result.model.perplexity:.4g} ({_shown(model)}) vs {result.base.perplexity:.4g} ({_shown(base)}) "
            f"on {result.model.n_texts} texts, {result.model.n_tokens} tokens; 95% CI [{low:.1%}, {high:.1%}]\n"
            f"{_worst_lines(result.model)}"
        )
    return result


#: the bars of the sampling settings every generation gate takes (``samples=k`` answers per item,
#: with ``temperature > 0``; see :mod:`pytest_ftmodel.sampling`)
SAMPLING_BARS = {
    "samples": whole(1, low=1),
    "temperature": number(0.0, low=0, why="0 is greedy"),
    "top_p": number(1.0, low=0, high=1, why="the nucleus's share of probability"),
    "seed": Rule("whole", 0, low=None),
}


def _sampling(helper: str, samples: int, temperature: float, top_p: float, seed: int) -> dict[str, Any]:
    """The sampling keywords for the metric (greedy with several samples fails here, in one line)."""
    check_sampling(samples, temperature, where=f"{helper}: samples")
    return {"samples": samples, "temperature": temperature, "top_p": top_p, "seed": seed}


def _flaky_lines(stability: Any, describe: Callable[[int], str], shown: int = 5) -> str:
    """The stability line of a sampled figure and its flaky items (each described by ``describe``);
    empty for a single-answer figure."""
    if stability is None:
        return ""
    lines = [f"\n  repeated sampling: {stability.summary()}"]
    if stability.flaky:
        lines.append("\n  flaky items (their samples disagree; kept in every figure):")
        lines.extend(f"\n    {describe(i)}" for i in stability.flaky[:shown])
        if len(stability.flaky) > shown:
            lines.append(f"\n    ... and {len(stability.flaky) - shown} more")
    return "".join(lines)


def _require_a_bar(**bars: float | None) -> dict[str, float]:
    given = {k: v for k, v in bars.items() if v is not None}
    if not given:
        raise ValueError(f"no threshold given: pass at least one of {', '.join(f'{k}=' for k in bars)} (a gate on nothing would pass)")
    return given


@_gated(rouge1=proportion(optional=True), rouge2=proportion(optional=True), rougeL=proportion(optional=True), **SAMPLING_BARS)
def assert_rouge_above(
    model: Any,
    data: Sequence[dict[str, Any]],
    *,
    rouge1: float | None = None,
    rouge2: float | None = None,
    rougeL: float | None = None,  # noqa: N803 - the metric's own name
    margin: Margin = None,
    samples: int = 1,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    **kwargs: Any,
) -> Any:
    """Fail unless each given mean ROUGE F-measure reaches its bar; returns the RougeResult.

    ``samples=k`` (with ``temperature > 0``, ``top_p``, ``seed``): k answers per item, each item's
    score the mean over its samples (see :mod:`pytest_ftmodel.sampling`). ``kwargs`` go to
    :func:`~pytest_ftmodel.metrics.text.rouge` (``prompt_key``, ``reference_key``, ``max_new_tokens``,
    generation settings).
    """
    __tracebackhide__ = True
    from pytest_ftmodel.generation import generate
    from pytest_ftmodel.metrics.text import rouge

    bars = _require_a_bar(rouge1=rouge1, rouge2=rouge2, rougeL=rougeL)
    sampling = _sampling("assert_rouge_above", samples, temperature, top_p, seed)
    result = rouge(model, data, **sampling, **kwargs)
    settings = effective_settings({**kwargs, **sampling}, rouge, generate, **sampling_settings(samples))
    failed = []
    for metric, bar in bars.items():
        value = getattr(result, metric)
        if not _judged(metric, value, bar, ">=", n=result.n, unit="items", model=_name(model), interval=result.intervals[metric], result=result, settings=settings):
            low, high = result.intervals[metric]
            failed.append(f"{metric} {value:.3f} is below the bar {bar:.3f} (95% CI [{low:.3f}, {high:.3f}])")
    if failed:
        metric = next(m for m in ("rougeL", "rouge1", "rouge2") if m in bars)
        worst = [
            f"    item {it.index}: {metric} {getattr(it, metric):.2f}  prompt {_cut(it.prompt, 40)!r}\n"
            f"      expected {_cut(it.reference)!r}\n      generated {_cut(it.generated)!r}"
            for it in result.worst(3, metric)
        ]
        flaky = _flaky_lines(
            (result.stability or {}).get(metric),
            lambda i: f"item {i}: {metric} {min(s[metric] for s in result.items[i].sample_scores):.2f}"
            f"..{max(s[metric] for s in result.items[i].sample_scores):.2f} over its samples  prompt {_cut(result.items[i].prompt, 40)!r}",
        )
        raise AssertionError(
            "; ".join(failed) + f" on {result.n} items, model {_shown(model)}\n  lowest-scored items:\n" + "\n".join(worst) + flaky
        )
    return result


@_gated(min_accuracy=proportion(optional=True), min_macro_f1=proportion(optional=True), **SAMPLING_BARS)
def assert_classification(
    model: Any,
    data: Sequence[dict[str, Any]],
    labels: Sequence[str],
    *,
    min_accuracy: float | None = None,
    min_macro_f1: float | None = None,
    margin: Margin = None,
    samples: int = 1,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    **kwargs: Any,
) -> Any:
    """Fail unless accuracy and/or macro-F1 reach their bars; returns the ClassificationResult.

    ``samples=k`` (with ``temperature > 0``, ``top_p``, ``seed``): k answers per item, every answer
    read and scored; accuracy is the mean over items of their share of right samples, with pass@k,
    pass^k and the flip rate beside it (see :mod:`pytest_ftmodel.sampling`). ``kwargs`` go to
    :func:`~pytest_ftmodel.metrics.text.classify` (``label_key``, ``prompt_key``, ...).
    """
    __tracebackhide__ = True
    from pytest_ftmodel.generation import generate
    from pytest_ftmodel.metrics.text import classify

    bars = _require_a_bar(min_accuracy=min_accuracy, min_macro_f1=min_macro_f1)
    sampling = _sampling("assert_classification", samples, temperature, top_p, seed)
    result = classify(model, data, labels, **sampling, **kwargs)
    settings = effective_settings({**kwargs, **sampling}, classify, generate, labels=list(labels), **sampling_settings(samples))
    failed = []
    for key, bar in bars.items():
        metric = key.removeprefix("min_")
        value = getattr(result, metric)
        interval = result.accuracy_interval if metric == "accuracy" else None
        if not _judged(metric, value, bar, ">=", n=result.n, unit="items", model=_name(model), interval=interval, result=result, settings=settings):
            failed.append(f"{metric} {value:.3f} is below the bar {bar:.3f}")
    if failed:
        low, high = result.accuracy_interval
        per_label = ", ".join(f"{k} F1 {v.f1:.2f} (n={v.support})" for k, v in result.per_label.items())
        errors = []
        for it in result.errors()[:3]:
            # with samples: the first wrong one (sample 0 may be right)
            j = next((j for j, p in enumerate(it.predictions) if p != it.expected), 0)
            said, read = (it.answers[j], it.predictions[j]) if it.predictions else (it.generated, it.predicted)
            errors.append(
                f"    item {it.index}: expected {it.expected!r}, read {read!r} from {_cut(said, 40)!r}"
                + (f" (sample {j}; right in {round(it.correct * result.samples)} of {result.samples} samples)" if result.samples > 1 else "")
            )
        flaky = _flaky_lines(
            result.stability,
            lambda i: f"item {i}: expected {result.items[i].expected!r}, read "
            + ", ".join(repr(p) for p in result.items[i].predictions)
            + f"  prompt {_cut(result.items[i].prompt, 40)!r}",
        )
        items = f"{result.n} items" + (f" x {result.samples} samples" if result.samples > 1 else "")
        raise AssertionError(
            "; ".join(failed)
            + f" on {items} (accuracy 95% CI [{low:.3f}, {high:.3f}], {result.n_unparseable} answers named no label; "
            + f"model {_shown(model)})\n  {per_label}\n  first errors:\n"
            + "\n".join(errors)
            + flaky
        )
    return result


@_gated(k=whole(1, low=1), at_least=proportion(0.6), n=whole(1, low=1, optional=True))
def assert_passk(
    model: Any,
    problems: Sequence[dict[str, Any]],
    k: int = 1,
    at_least: float = 0.0,
    *,
    n: int | None = None,
    margin: Margin = None,
    **kwargs: Any,
) -> Any:
    """Fail unless pass@k of ``model`` on ``problems`` reaches ``at_least``; returns the CodeResult.

    ``n`` samples per problem (default ``k``; greedy when 1). Every sample runs in the sandbox.
    ``kwargs`` go to :func:`~pytest_ftmodel.metrics.code.evaluate_code`.
    """
    __tracebackhide__ = True
    from pytest_ftmodel.generation import generate
    from pytest_ftmodel.metrics.code import evaluate_code
    from pytest_ftmodel.sandbox import default_isolation

    n = k if n is None else n
    result = evaluate_code(model, problems, n=n, k=(k,), **kwargs)
    value = result.pass_at[k]
    # the sandbox level asked for (not the one reached, which varies by machine) shapes the verdicts
    settings = effective_settings(
        {"n": n, **kwargs}, evaluate_code, generate, k=k, isolation=kwargs.get("isolation") or default_isolation()
    )
    passed = _judged(
        f"pass@{k}", value, at_least, ">=", n=len(result.problems), unit="problems", model=_name(model), interval=result.intervals[k],
        result=result, settings=settings,
    )
    if not passed:
        low, high = result.intervals[k]
        worst = sorted(result.failing(), key=lambda p: p.correct / p.n)  # stable: ties keep the problems' order
        lines = []
        for problem in worst[:5]:
            bad = next(s for s in problem.samples if s.status != "passed")
            err = [_cut(line, 100) for line in bad.stderr.strip().splitlines() if line.strip()][-2:]
            lines.append(f"    {problem.task_id}: {problem.correct}/{problem.n} passed; {bad.status}: {' | '.join(err) or '(no stderr)'}")
            lines.extend(_code_lines(bad.completion))
        more = len(worst) - min(len(worst), 5)
        raise AssertionError(
            f"pass@{k} {value:.3f} is below the bar {at_least:.3f} on {len(result.problems)} problems, "
            f"n={n} samples each (95% CI [{low:.3f}, {high:.3f}]; model {_shown(model)}; sandbox: {result.isolation}; "
            f"judged {result.judged()})\n"
            f"  failing problems (worst first), with the first lines of their code:\n" + "\n".join(lines)
            + (f"\n    ... and {more} more" if more > 0 else "")
        )
    return result


def _code_lines(completion: str, shown: int = 3, width: int = 100) -> list[str]:
    """The first lines of the code a failing sample ran, indentation kept, every control character,
    terminal escape and bidi override shown as an escape (generated code is untrusted text)."""
    from pytest_ftmodel.metrics.code import extract_code
    from pytest_ftmodel.sandbox import escape_controls

    # split on newlines only: the other line breaks str.splitlines knows are controls, shown escaped
    code = extract_code(completion).strip("\n").split("\n")
    if code == [""]:
        return ["      | (no code)"]
    out = [f"      | {escape_controls(line if len(line) <= width else line[: width - 3] + '...')}".rstrip() for line in code[:shown]]
    if len(code) > shown:
        out.append(f"      | ... ({len(code) - shown} more line{'s' if len(code) - shown > 1 else ''})")
    return out


@_gated(
    max_gap=number(0.2), max_memorised=proportion(0.1, optional=True), min_distinct2=proportion(0.5, optional=True), **SAMPLING_BARS,
)
def assert_no_overfit(
    model: Any,
    train: Sequence[Any],
    val: Sequence[Any],
    *,
    max_gap: float = 0.2,
    max_memorised: float | None = None,
    min_distinct2: float | None = None,
    margin: Margin = None,
    samples: int = 1,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    **kwargs: Any,
) -> Any:
    """Fail when validation loss exceeds training loss by more than ``max_gap`` nats/token, or (for
    instruction records) when too many answers copy training outputs or their diversity collapses.

    ``samples=k`` (with ``temperature > 0``, ``top_p``, ``seed``): k answers per validation item, the
    memorised share the mean over items of their share of copying samples (see
    :mod:`pytest_ftmodel.sampling`). Returns the :class:`~pytest_ftmodel.metrics.overfit.OverfitResult`.
    """
    __tracebackhide__ = True
    from pytest_ftmodel.generation import generate
    from pytest_ftmodel.metrics.overfit import overfit_report

    need_answers = max_memorised is not None or min_distinct2 is not None
    sampling = _sampling("assert_no_overfit", samples, temperature, top_p, seed)
    if samples > 1 and not need_answers:  # a setting that changes nothing would read as if it did
        from pytest_ftmodel.errors import BarError

        raise BarError(
            f"assert_no_overfit: samples={samples} samples nothing: the loss gap reads no answers; "
            "pass max_memorised= or min_distinct2= to gate on sampled answers, or drop samples="
        )
    result = overfit_report(model, train, val, answers=need_answers, **sampling, **kwargs)
    answer_settings = (
        effective_settings({**kwargs, **sampling}, overfit_report, generate, **sampling_settings(samples)) if samples > 1 else None
    )
    n = result.val.n_texts
    failed = []
    if not _judged("loss gap", result.gap, max_gap, "<=", n=n, unit="val items", model=_name(model), result=result):
        failed.append(f"validation loss exceeds training loss by {result.gap:.3f} nats/token (bar {max_gap:.3f})")
    share, distinct2 = result.memorised_share, result.distinct2
    if need_answers and (share is None or distinct2 is None):
        raise ValueError("max_memorised/min_distinct2 need instruction records (instruction + output) to generate answers")
    if max_memorised is not None and share is not None:
        unit = "answers" if result.samples == 1 else "items"
        if not _judged(
            "memorised share", share, max_memorised, "<=", n=result.n_answers, unit=unit, model=_name(model), result=result,
            settings=answer_settings,
        ):
            failed.append(
                f"{share:.0%} of answers copy distinctive training outputs (bar {max_memorised:.0%}; "
                f"{result.n_common_answers} more equal a label or template answer of training, not counted)"
            )
    if min_distinct2 is not None and distinct2 is not None:
        if not _judged(
            "distinct-2", distinct2, min_distinct2, ">=", n=result.n_answers, unit="answers" if result.samples == 1 else "items",
            model=_name(model), settings=answer_settings,
        ):
            failed.append(f"distinct-2 of answers is {distinct2:.3f} (bar {min_distinct2:.3f})")
    if failed:
        copies = [
            f"    item {m.index}: {_cut(m.prompt, 40)!r} -> {_cut(m.answer, 50)!r} ({'verbatim' if m.verbatim else 'shared n-gram'})"
            for m in result.memorised[:3]
        ]
        raise AssertionError(
            "; ".join(failed)
            + f"\n  train loss {result.train_loss:.3f} ({result.train.n_texts} items), val loss {result.val_loss:.3f} "
            + f"({n} items), ratio {result.ratio:.2f}: {result.band}; {result.advice}"
            + ("\n  copied answers:\n" + "\n".join(copies) if copies else "")
            + _flaky_lines(
                result.stability if max_memorised is not None else None,
                lambda i: f"item {i}: copies a training output in {round(result.stability.means[i] * result.samples)} of "
                f"{result.samples} samples  prompt {_cut(str(val[i]['instruction']), 40)!r}",
            )
        )
    return result


@_gated(patience=whole(3, low=1), tolerance=number(0.05, low=0))
def assert_training_converged(path: Any, *, patience: int = 3, tolerance: float = 0.05, margin: Margin = None) -> Any:
    """Fail when training loss did not fall, or when eval loss turned up after its best while
    training loss kept falling: no improvement for ``patience`` evaluations, a final eval loss more
    than ``tolerance`` (relative) above the best, and an upward Theil-Sen trend since the best (see
    :func:`~pytest_ftmodel.metrics.curve.training_curve`). ``path``: trainer_state.json, a checkpoint
    or ``save_model()`` folder, or the ``ftmodel`` fixture itself. Returns the TrainingCurve."""
    __tracebackhide__ = True
    from pytest_ftmodel.metrics.curve import training_curve

    curve = training_curve(path, patience=patience, tolerance=tolerance)
    problems = []
    if not curve.loss_decreased:
        problems.append(f"training loss did not decrease ({curve.first_loss:.4g} at the start, {curve.last_loss:.4g} at the end)")
    if curve.eval_rising:
        best = curve.best_checkpoint if curve.best_checkpoint is not None else "none saved"
        problems.append(
            f"eval loss turned up while training loss fell: overfitting. Its best was {curve.best_eval_loss:.4g} at step "
            f"{curve.best_step}; {curve.evals_since_best} evaluations later it is {curve.final_eval_loss:.4g} "
            f"({curve.eval_rise:+.0%}, bar +{curve.tolerance:.0%}; trend {(curve.eval_slope or 0.0) * 1000:+.3g} per 1000 steps); "
            f"training loss {curve.last_loss:.4g} at the end. Best checkpoint: {best} ({curve.best_checkpoint_note})"
        )
    record_metric(
        "eval loss (best)", curve.best_eval_loss, threshold=None, op="<=", n=len(curve.eval), unit="evals",
        passed=not problems, model=_name(path) if not isinstance(path, str) else "", result=curve,
    )
    if problems:
        raise AssertionError("; ".join(problems) + f" [read {curve.path}]")
    return curve


@_gated(normalize=choice(*NORMALIZE))
def assert_no_leakage(train: Sequence[Any], val: Sequence[Any], *, normalize: str = "structure", margin: Margin = None) -> list[Any]:
    """Fail when a validation item also appears in training, exactly or after folding by the rule
    ``normalize`` names (see :func:`~pytest_ftmodel.splits.find_leakage`)."""
    __tracebackhide__ = True
    from pytest_ftmodel.splits import find_leakage

    leaks = find_leakage(train, val, normalize=normalize)
    if not _judged("leaked val items", len(leaks), 0, "<=", n=len(val), unit="val items", result=leaks, settings={"normalize": normalize}):
        shown = [
            f"    val {x.val_index} = train {x.train_index} ({'exact' if x.exact else 'after folding'}): {_cut(x.text)!r}"
            for x in leaks[:5]
        ]
        raise AssertionError(
            f"{len(leaks)} of {len(val)} validation items also appear in training (normalize={normalize!r}: {NORMALIZE[normalize]}):\n"
            + "\n".join(shown)
        )
    return leaks


@_gated(min_mean=Rule("scores", {"accuracy": 4.0}, optional=True), min_scored=whole(20))
def assert_human_scores(
    sheet: Any,
    *,
    min_mean: dict[str, float] | None = None,
    min_scored: int = 20,
    model: Any = None,
    margin: Margin = None,
) -> Any:
    """Fail when a criterion's mean human score is below its bar. While fewer than ``min_scored``
    items are scored the test is skipped with the command to run (a distinct, visible outcome,
    never a pass), and fails under ``--ftmodel-require-human``."""
    __tracebackhide__ = True
    import pytest

    from pytest_ftmodel.human import human_require_message, human_scores, require_human

    bars = min_mean or {"accuracy": 4.0}
    result = human_scores(sheet, model=model)
    if result.n_scored < min_scored:
        message = human_require_message(result, min_scored)
        if require_human():
            pytest.fail(message + " (--ftmodel-require-human)", pytrace=False)
        pytest.skip(message)
    unknown = [c for c in bars if c not in result.means]
    if unknown:
        raise ValueError(f"unknown criteria {unknown}: the sheet has {sorted(result.means)}")
    below = []
    for criterion, bar in bars.items():
        value = result.means[criterion]
        if not _judged(f"human {criterion}", value, bar, ">=", n=result.n_scored, unit="items", result=result):
            below.append(f"{criterion} {value:.2f} < {bar:.2f}")
    agreement = _human_agreement(result)
    if agreement:
        for criterion, alpha in (result.agreement or {}).items():
            if alpha is not None:
                record_metric(f"human agreement {criterion}", alpha, threshold=None, op=">=", n=result.n_multi, unit="items", passed=True)
    if below:
        lows = [
            f"    {it['id']}: {', '.join(f'{k} {v:.3g}' for k, v in it['scores'].items())}  {_cut(it['prompt'], 40)!r} {it.get('notes') or ''}".rstrip()
            for it in result.lowest
        ]
        raise AssertionError(
            f"human scores below the bar: {'; '.join(below)} (means over {result.n_scored} scored items of {result.n_items})\n"
            + (f"  {agreement}\n" if agreement else "")
            + "  lowest-scored items:\n" + "\n".join(lows)
        )
    return result


def _human_agreement(result: Any) -> str:
    """One line on how far reviewers agree, where items have several; empty otherwise."""
    if not result.agreement:
        return ""
    shown = ", ".join(f"{c} {'undefined' if a is None else f'{a:.2f}'}" for c, a in result.agreement.items())
    return f"agreement between {len(result.reviewers)} reviewers on {result.n_multi} items reviewed by several ({result.agreement_kind}): {shown}"


@_gated(
    at_least=proportion(0.5), alpha=proportion(0.05), min_human_agreement=number(0.6, low=-1, high=1, why="Cohen's kappa"),
    min_overlap=whole(20),
)
def assert_ab_win_rate(
    sheet_or_result: Any,
    *,
    at_least: float = 0.5,
    alpha: float = 0.05,
    significant: bool = False,
    judge: str | None = None,
    min_human_agreement: float = 0.6,
    min_overlap: int = 20,
    margin: Margin = None,
) -> Any:
    """Fail when the fine-tuned model's win rate over decided A/B comparisons is below ``at_least``
    or, with ``significant=True``, when its advantage is not significant (two-sided sign test).

    With ``judge=NAME`` only that automated judge's verdicts count, and only once it is shown to
    agree with people: Cohen's kappa against the human majority on at least ``min_overlap`` items
    both judged must reach ``min_human_agreement``, else the test fails with both numbers."""
    __tracebackhide__ = True
    from pytest_ftmodel.human import ABResult, ab_result

    if isinstance(sheet_or_result, ABResult):
        result = sheet_or_result
        if judge is not None and result.judge != judge:
            raise ValueError(f"this ABResult counts {result.judge or 'every judge'}'s verdicts: pass the sheet, or ab_result(sheet, judge={judge!r})")
    else:
        result = ab_result(sheet_or_result, judge=judge)
    if judge is not None:
        calibration = result.calibration_of(judge)
        kappa = None if calibration is None else calibration.kappa
        overlap = 0 if calibration is None else calibration.overlap
        trusted = kappa is not None and overlap >= min_overlap and kappa >= min_human_agreement
        if kappa is not None:
            record_metric(f"A/B judge {judge} vs people (kappa)", kappa, threshold=min_human_agreement, op=">=", n=overlap, unit="items", passed=trusted)
        if not trusted:
            shown = "no overlap" if kappa is None else f"Cohen's kappa {kappa:.2f} on {overlap} items"
            raise AssertionError(
                f"the automated judge {judge!r} is not shown to agree with people: {shown} judged by both "
                f"(needs kappa >= {min_human_agreement} on at least {min_overlap}); people: {', '.join(result.humans) or 'none'}. "
                f"Have people judge more of the sheet (python -m pytest_ftmodel ab SHEET --web) or lower min_human_agreement/min_overlap"
            )
    if result.decided == 0:
        raise AssertionError(
            f"no decided A/B comparison ({result.ties} ties, judges: {', '.join(result.judges) or 'none'}): "
            "judge the sheet (python -m pytest_ftmodel ab SHEET --judge NAME, or judge_ab) before gating on it"
        )
    low, high = result.interval
    summary = (
        f"base wins {result.base_wins} / fine-tuned wins {result.model_wins} / ties {result.ties}; "
        f"win rate {result.win_rate:.1%} of {result.decided} decided, 95% CI [{low:.1%}, {high:.1%}], "
        f"sign test p = {result.p_value:.3g}; judges: {', '.join(result.judges)}"
        + (f"; {result.agreement_kind} {result.agreement:.2f}" if result.agreement is not None else "")
        + "".join(
            f"; {c.judge} vs people: kappa {'n/a' if c.kappa is None else f'{c.kappa:.2f}'} on {c.overlap}"
            for c in result.calibration
        )
    )
    ok = result.win_rate >= at_least and (not significant or (result.p_value < alpha and result.win_rate > 0.5))
    record_metric(
        "A/B win rate", result.win_rate, threshold=at_least, op=">=", n=result.decided, unit="decided", passed=ok,
        interval=result.interval, result=result, settings={"judge": judge},
    )
    if result.win_rate < at_least:
        raise AssertionError(f"A/B win rate {result.win_rate:.1%} is below the bar {at_least:.1%}: {summary}")
    if significant and not ok:
        raise AssertionError(f"the fine-tuned model's advantage is not significant at alpha={alpha}: {summary}")
    return result


@_gated(
    min_mean=Rule("scores", {"accuracy": 4.0}), min_human_agreement=number(0.6, low=-1, high=1, why="Krippendorff's alpha"),
    min_overlap=whole(20), min_stable=proportion(0.8),
)
def assert_judge_scores(
    sheet: Any,
    *,
    judge: Any,
    min_mean: dict[str, float],
    min_human_agreement: float = 0.6,
    min_overlap: int = 20,
    min_stable: float = 0.8,
    margin: Margin = None,
) -> Any:
    """Fail when a criterion's mean score by the automated reviewer ``judge`` (its name on the sheet,
    or the :func:`~pytest_ftmodel.rubric_judge` that :func:`~pytest_ftmodel.judge_sheet` ran) is below
    its bar, once the judge is shown to agree with people: on every gated criterion Krippendorff's
    alpha (ordinal) between the judge and people on at least ``min_overlap`` items both scored must
    reach ``min_human_agreement``, else the test fails with both numbers. Items the judge has not
    scored (new, or changed since) fail the gate. With repeats, the gate is inconclusive (fails) when
    fewer than ``min_stable`` of the repeats' own verdicts agree with the verdict on their mean."""
    __tracebackhide__ = True
    from pytest_ftmodel.escaping import visible
    from pytest_ftmodel.judges.gate import judge_scores

    if not min_mean:
        raise ValueError('no threshold given: pass min_mean={"accuracy": 4.0, ...} with at least one criterion (a gate on nothing would pass)')
    result = judge_scores(sheet, judge=judge)
    name = _cut(result.judge, 40)
    if result.unjudged or not result.n_judged:
        shown = ", ".join(visible(_cut(i, 20)) for i in result.unjudged[:5]) + (" ..." if len(result.unjudged) > 5 else "")
        raise AssertionError(
            f"{len(result.unjudged)} of {result.n_items} items are not scored by the judge {name!r} (new, or changed since "
            f"it judged): {shown}; run judge_sheet(sheet, judge) before gating on it"
        )
    unknown = [c for c in min_mean if c not in result.means]
    if unknown:
        raise ValueError(f"the judge {name!r} gave no score on {unknown}: it scored {sorted(result.means)}")
    for c in min_mean:  # leaving out the items the judge could not score would move the mean (often up)
        unscored = [str(it["id"]) for it in result.items if c not in it["judge"]]
        if unscored:
            shown = ", ".join(visible(_cut(i, 20)) for i in unscored[:5]) + (" ..." if len(unscored) > 5 else "")
            raise AssertionError(
                f"{len(unscored)} of {result.n_items} items got no score from the judge {name!r} on {c} (no final score 1-5 "
                f"written, or no probability on 1-5 after its cue): {shown}; they are never left out of the mean: "
                "improve the judge's prompt or rubric, or give it more max_new_tokens"
            )
    untrusted = []
    for c in min_mean:
        cal = result.calibration[c]
        trusted = cal.alpha is not None and cal.overlap >= min_overlap and cal.alpha >= min_human_agreement
        if cal.alpha is not None:
            record_metric(
                f"judge {result.judge} vs people {c} (alpha)", cal.alpha, threshold=min_human_agreement, op=">=", n=cal.overlap,
                unit="items", passed=trusted, interval=cal.interval,
            )
        if not trusted:
            interval = f", 95% CI [{cal.interval[0]:.2f}, {cal.interval[1]:.2f}]" if cal.interval else ""
            shown = "undefined" if cal.alpha is None else f"{cal.alpha:.2f}{interval}"
            untrusted.append(f"{c}: alpha {shown} on {cal.overlap} items")
    if untrusted:
        raise AssertionError(
            f"the judge {name!r} is not shown to agree with people (Krippendorff's alpha, ordinal; needs >= "
            f"{min_human_agreement} on at least {min_overlap} items both scored): {'; '.join(untrusted)}; people: "
            f"{', '.join(visible(_cut(h, 20)) for h in result.humans) or 'none'}. Score more items by hand "
            f"(python -m pytest_ftmodel review {result.path} --web), or improve the judge's rubric"
        )
    below, unstable = [], []
    for c, bar in min_mean.items():
        value = result.means[c]
        if not _judged(f"judge {result.judge} {c}", value, bar, ">=", n=result.n_scored[c], unit="items", interval=result.intervals[c], result=result, settings={"judge": result.judge, "judge_fingerprint": result.fingerprint}):
            low, high = result.intervals[c]
            below.append(f"{c} {value:.2f} < {bar:.2f} (95% CI [{low:.2f}, {high:.2f}], {result.n_scored[c]} items)")
        if result.repeats > 1:
            stability = repeat_stability(result, c, bar)
            record_metric(
                f"judge {result.judge} {c} repeats agreeing", stability["agreeing"], threshold=min_stable, op=">=",
                n=result.repeats, unit="repeats", passed=stability["agreeing"] >= min_stable,
            )
            if stability["agreeing"] < min_stable:  # the verdict on noise: inconclusive
                unstable.append(
                    f"{c}: {stability['agreeing']:.0%} of {result.repeats} repeats agree with the verdict on their mean "
                    f"(needs {min_stable:.0%}; repeat means {', '.join(f'{m:.2f}' for m in stability['means'])}); "
                    f"items on both sides of {bar}: {', '.join(visible(_cut(str(i), 20)) for i in stability['straddling'][:8]) or 'none'}"
                )
    if unstable:
        raise AssertionError(
            f"inconclusive: the judge {name!r} disagrees with itself around the bar: {'; '.join(unstable)}. Judge with more "
            "repeats, a lower temperature, or a clearer rubric"
        )
    if below:
        worst = sorted(result.items, key=lambda it: sum(it["judge"].get(c, 5) for c in min_mean))[:3]
        lines = [
            f"    {visible(_cut(str(it['id']), 20))}: {', '.join(f'{c} {score:.2f}' for c, score in it['judge'].items() if c in min_mean)}  "
            f"{_cut(str(it['prompt'] or ''), 40)!r}"
            for it in worst
        ]
        calibrations = ", ".join(
            f"{c} {result.calibration[c].alpha:.2f} on {result.calibration[c].overlap}" for c in min_mean if result.calibration[c].alpha is not None
        )
        biases = ", ".join(f"{c} {result.length_bias[c]:+.2f}" for c in min_mean if result.length_bias.get(c) is not None)
        raise AssertionError(
            f"judge scores below the bar: {'; '.join(below)}; the judge {name!r} agrees with people (alpha): {calibrations}\n"
            + (f"  length bias (Spearman's rho of score with answer length): {biases}\n" if biases else "")
            + "  lowest-scored items:\n" + "\n".join(lines)
        )
    return result


def repeat_stability(result: Any, criterion: str, bar: float) -> dict[str, Any]:
    """:func:`~pytest_ftmodel.judges.gate.repeat_verdict` of the judge's repeats on ``criterion``,
    with the straddling items named by their sheet ids."""
    from pytest_ftmodel.judges.gate import repeat_verdict

    judged = [it for it in result.items if criterion in it["judge"]]
    out = repeat_verdict([it["repeats"].get(criterion, []) for it in judged], bar)
    out["straddling"] = [judged[i]["id"] for i in out["straddling"]]
    return out
