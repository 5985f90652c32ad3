"""``assert_*`` helpers on the form and the words of an answer: format, exact match, token F1,
BLEU, chrF, and answer length against the base model or the release baseline.

They decide only; the numbers come from :mod:`pytest_ftmodel.metrics.form` and
:mod:`pytest_ftmodel.metrics.reference`.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Pattern, Sequence

from pytest_ftmodel.assertions import SAMPLING_BARS, Margin, _cut, _flaky_lines, _gated, _judged, _name, _sampling, _shown
from pytest_ftmodel.bars import choice, number, proportion, whole
from pytest_ftmodel.baseline.store import effective_settings
from pytest_ftmodel.escaping import visible
from pytest_ftmodel.report import record_metric
from pytest_ftmodel.sampling import sampling_settings

#: items shown in a diagnosis
SHOWN = 5


def _given(answers_or_model: Any) -> bool:
    return isinstance(answers_or_model, (list, tuple)) and all(isinstance(a, str) for a in answers_or_model)


def _model_of(answers_or_model: Any) -> Any:
    return "" if _given(answers_or_model) else _name(answers_or_model)


def _model_text(answers_or_model: Any) -> str:
    return "answers given" if _given(answers_or_model) else f"model {_shown(answers_or_model)}"


def _pct(value: float) -> str:
    return f"{value:.1%}"


@_gated(at_least=proportion(0.95), max_words=whole(50, low=0, optional=True), extract=choice("auto", "whole"), **SAMPLING_BARS)
def assert_format(
    model: Any,
    data: Sequence[Any] | None,
    *,
    at_least: float = 0.95,
    json_schema: Mapping[str, Any] | bool | None = None,
    regex: str | Pattern[str] | Sequence[str | Pattern[str]] | None = None,
    contains: str | Sequence[str] = (),
    not_contains: str | Sequence[str] = (),
    max_words: int | None = None,
    extract: str = "auto",
    margin: Margin = None,
    samples: int = 1,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    **kwargs: Any,
) -> Any:
    """Fail unless at least ``at_least`` of the answers pass every check of
    :func:`~pytest_ftmodel.metrics.form.format_check` (which takes ``kwargs``: ``prompt_key``,
    ``max_new_tokens``, generation settings). Returns the FormatResult.

    ``samples=k`` (a model, ``temperature > 0``, ``top_p``, ``seed``): k answers per item, each
    checked; the share is the mean over items of their share of passing samples, with pass@k, pass^k
    and the flip rate beside it (see :mod:`pytest_ftmodel.sampling`)."""
    __tracebackhide__ = True
    from pytest_ftmodel.generation import generate
    from pytest_ftmodel.metrics.form import format_check, reason_kind

    checks: dict[str, Any] = dict(
        json_schema=json_schema, regex=regex, contains=contains, not_contains=not_contains, max_words=max_words, extract=extract
    )
    sampling = _sampling("assert_format", samples, temperature, top_p, seed)
    if _given(model):  # answers given: nothing is generated (samples > 1 is refused by format_check)
        sampling = {k: v for k, v in sampling.items() if k == "samples" and v != 1}
    result = format_check(model, data, **checks, **sampling, **kwargs)
    regexes = [regex] if isinstance(regex, (str, re.Pattern)) else list(regex or [])
    shown_checks = {**checks, "regex": [getattr(p, "pattern", p) for p in regexes] or None}
    settings = effective_settings(
        {**kwargs, **sampling, **shown_checks}, format_check, *(() if _given(model) else (generate,)), **sampling_settings(samples)
    )
    passed = _judged(
        "format", result.share, at_least, ">=", n=result.n, unit="answers", model=_model_of(model), interval=result.interval,
        result=result, settings=settings,
    )
    if not passed:
        low, high = result.interval
        failing = result.failing()
        k = result.samples
        lines = []
        for it in failing[:SHOWN]:
            # with samples: the first failing one (sample 0 may pass)
            j = next((j for j, r in enumerate(it.reasons) if r), 0)
            said = it.answers[j] if it.answers else it.answer
            where = f" (sample {j}; passes in {round(it.share * k)} of {k} samples)" if k > 1 else ""
            lines.append(f"    item {it.index}: {visible(it.reason)}{where}\n      answer {_cut(said, 80)!r}")
        reasons: dict[str, int] = {}
        for it in failing:
            for why in it.reasons or (it.reason,):
                if why:
                    reasons[reason_kind(why)] = reasons.get(reason_kind(why), 0) + 1
        counted = ", ".join(f"{k}: {v}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1]))
        more = len(failing) - min(len(failing), SHOWN)
        flaky = _flaky_lines(
            result.stability,
            lambda i: f"item {i}: passes in {round(result.items[i].share * k)} of {k} samples  prompt {_cut(result.items[i].prompt, 40)!r}",
        )
        head = (
            f"format: {result.n_passed} of {result.n} answers pass ({_pct(result.share)}, "
            if k == 1 else f"format: {_pct(result.share)} of {result.n} items x {k} samples pass ("
        )
        raise AssertionError(
            head + f"95% CI [{_pct(low)}, {_pct(high)}]), "
            f"below the bar {_pct(at_least)} (checks: {'; '.join(result.checks)}; {_model_text(model)})\n"
            f"  why they fail{' (samples)' if k > 1 else ''}: {visible(counted)}\n"
            f"  failing {'items' if k > 1 else 'answers'}:\n" + "\n".join(lines)
            + (f"\n    ... and {more} more" if more > 0 else "") + flaky
        )
    return result


_NAMES = {"exact_match": "exact match", "f1": "token F1", "bleu": "BLEU", "chrf": "chrF"}


def _reference_gate(
    metric: str, model: Any, data: Sequence[Any], at_least: float, kwargs: dict[str, Any], sampling: dict[str, Any],
) -> Any:
    __tracebackhide__ = True
    from pytest_ftmodel.generation import generate
    from pytest_ftmodel.metrics import reference

    compute = getattr(reference, metric)
    samples = sampling["samples"]
    if _given(model):  # answers given: nothing is generated (samples > 1 is refused by the metric)
        sampling = {k: v for k, v in sampling.items() if k == "samples" and v != 1}
    result = compute(model, data, **sampling, **kwargs)
    extra = {"signature": result.signature} if result.signature else {}
    settings = effective_settings(
        {**kwargs, **sampling}, compute, *(() if _given(model) else (generate,)), **extra, **sampling_settings(samples)
    )
    passed = _judged(
        metric, result.score, at_least, ">=", n=result.n, unit="items", model=_model_of(model), interval=result.interval,
        result=result, settings=settings,
    )
    if not passed:
        low, high = result.interval
        scale = reference.SCALE[metric]
        fmt = (lambda v: f"{v:.3f}") if scale == 1.0 else (lambda v: f"{v:.2f}")
        worst = [
            f"    item {it.index}: {fmt(it.value)}  prompt {_cut(it.prompt, 40)!r}\n"
            f"      expected {_cut(it.references[0])!r}\n      generated {_cut(it.generated)!r}"
            for it in result.worst(3)
        ]
        sig = f"; sacrebleu {result.signature}" if result.signature else ""
        k = result.samples
        flaky = _flaky_lines(
            result.stability,
            lambda i: f"item {i}: {' '.join(fmt(v) for v in result.items[i].values)} over its samples  prompt {_cut(result.items[i].prompt, 40)!r}",
        )
        items = f"{result.n} items" + (f" x {k} samples" if k > 1 else "")
        raise AssertionError(
            f"{_NAMES[metric]} {fmt(result.score)} is below the bar {fmt(at_least)} on {items} "
            f"(95% CI [{fmt(low)}, {fmt(high)}], {result.interval_method}{sig}; {_model_text(model)})\n"
            f"  lowest-scored items{' (means over samples; sample 0 shown)' if k > 1 else ''}:\n" + "\n".join(worst) + flaky
        )
    return result


@_gated(at_least=proportion(0.8), **SAMPLING_BARS)
def assert_exact_match(
    model: Any, data: Sequence[Any], *, at_least: float = 0.8, margin: Margin = None,
    samples: int = 1, temperature: float = 0.0, top_p: float = 1.0, seed: int = 0, **kwargs: Any,
) -> Any:
    """Fail unless the share of answers equal to a reference after SQuAD normalisation reaches
    ``at_least``; ``kwargs`` go to :func:`~pytest_ftmodel.metrics.reference.exact_match`."""
    __tracebackhide__ = True
    return _reference_gate("exact_match", model, data, at_least, kwargs, _sampling("assert_exact_match", samples, temperature, top_p, seed))


@_gated(at_least=proportion(0.8), **SAMPLING_BARS)
def assert_f1(
    model: Any, data: Sequence[Any], *, at_least: float = 0.8, margin: Margin = None,
    samples: int = 1, temperature: float = 0.0, top_p: float = 1.0, seed: int = 0, **kwargs: Any,
) -> Any:
    """Fail unless the mean token F1 (SQuAD) reaches ``at_least``; see :func:`~pytest_ftmodel.metrics.reference.f1`."""
    __tracebackhide__ = True
    return _reference_gate("f1", model, data, at_least, kwargs, _sampling("assert_f1", samples, temperature, top_p, seed))


_SACRE = "sacrebleu's 0-100 scale"

# ``samples=k`` (a model, ``temperature > 0``, ``top_p``, ``seed``) on every reference gate: k answers
# per item, each scored; the figure is the mean over items of their mean over samples, the items the
# unit of the interval (for BLEU and chrF the mean of sentence scores; see metrics.reference).


@_gated(at_least=number(30.0, low=0, high=100, why=_SACRE), **SAMPLING_BARS)
def assert_bleu(
    model: Any, data: Sequence[Any], *, at_least: float = 30.0, margin: Margin = None,
    samples: int = 1, temperature: float = 0.0, top_p: float = 1.0, seed: int = 0, **kwargs: Any,
) -> Any:
    """Fail unless sacrebleu's corpus BLEU (0-100) reaches ``at_least``; see :func:`~pytest_ftmodel.metrics.reference.bleu`."""
    __tracebackhide__ = True
    return _reference_gate("bleu", model, data, at_least, kwargs, _sampling("assert_bleu", samples, temperature, top_p, seed))


@_gated(at_least=number(50.0, low=0, high=100, why=_SACRE), **SAMPLING_BARS)
def assert_chrf(
    model: Any, data: Sequence[Any], *, at_least: float = 50.0, margin: Margin = None,
    samples: int = 1, temperature: float = 0.0, top_p: float = 1.0, seed: int = 0, **kwargs: Any,
) -> Any:
    """Fail unless sacrebleu's corpus chrF (0-100) reaches ``at_least``; see :func:`~pytest_ftmodel.metrics.reference.chrf`."""
    __tracebackhide__ = True
    return _reference_gate("chrf", model, data, at_least, kwargs, _sampling("assert_chrf", samples, temperature, top_p, seed))


LENGTH = "length ratio"


def _baseline_entry() -> tuple[Any, dict[str, Any] | None]:
    """The session's baseline gate and this test's length entry in its file (None when absent)."""
    from pytest_ftmodel.report import recorder

    rec = recorder()
    gate: Any = rec.gate
    item = rec.current_item
    if gate is None or item is None:
        return gate, None
    return gate, gate.entries.get(f"{gate.test_key(item.nodeid)}::{LENGTH}")


@_gated(
    max_ratio=number(1.5, low=0, why="a ratio of lengths"), min_ratio=number(0.5, low=0, optional=True, why="a ratio of lengths"),
    unit=choice("tokens", "words"),
)
def assert_length(
    model: Any,
    data: Sequence[Any],
    *,
    base: Any = None,
    max_ratio: float = 1.5,
    min_ratio: float | None = None,
    unit: str = "tokens",
    margin: Margin = None,
    **kwargs: Any,
) -> Any:
    """Fail when the model's answers grew (or, with ``min_ratio``, shrank) against the base model's
    answers to the same prompts: the geometric mean of the per-item ratios ``(length + 1) / (base
    length + 1)`` above ``max_ratio`` (below ``min_ratio``). Without ``base`` the lengths recorded in
    the baseline file for this test are the base (``--ftmodel-update-baseline`` records them).
    ``kwargs`` go to :func:`~pytest_ftmodel.metrics.form.length_ratio`. Returns the LengthResult."""
    __tracebackhide__ = True
    import dataclasses

    from pytest_ftmodel.data import require_keys
    from pytest_ftmodel.errors import DataError
    from pytest_ftmodel.generation import generate
    from pytest_ftmodel.metrics.form import length_ratio
    from pytest_ftmodel.report.records import item_ids

    if min_ratio is not None and min_ratio > max_ratio:
        raise DataError(f"assert_length: min_ratio={min_ratio} is above max_ratio={max_ratio}: no length could pass")
    settings = effective_settings({**kwargs, "unit": unit}, length_ratio, generate)
    prompt_key = kwargs.get("prompt_key", "instruction")
    prompts = [str(item[prompt_key]) for item in require_keys(data, [prompt_key])]
    if base is not None:
        result = length_ratio(model, data, base, unit=unit, **kwargs)
    else:
        gate, entry = _baseline_entry()
        if entry is None:
            if gate is None or not gate.update:
                raise DataError(
                    "assert_length: no base= and no baseline entry for this test to compare answer lengths with: pass "
                    "base=base_model, or record the released model's lengths with --ftmodel-update-baseline"
                )
            # recording the baseline: the model is its own base
            result = dataclasses.replace(length_ratio(model, data, model, unit=unit, **kwargs), against="itself (recording the baseline)")
        else:
            then = (entry.get("settings") or {}).get("unit")
            if then != unit:
                raise DataError(f"assert_length: the baseline counted lengths in {then}, this test in {unit}: use the same unit, or re-record the baseline")
            recorded = entry.get("items") or {}
            lengths = [recorded.get(i, {}).get("value") for i in item_ids([p] for p in prompts)]
            result = length_ratio(model, data, base_lengths=[None if v is None else int(v) for v in lengths], unit=unit, **kwargs)
    low, high = result.interval
    base_name = _name(base) if base is not None else "baseline"
    record_model = (_name(model), _name(base)) if base is not None else _name(model)
    grew = result.ratio > max_ratio
    shrank = min_ratio is not None and result.ratio < min_ratio
    failed = (["grew: ratio above the bar " + f"{max_ratio:.3g}"] if grew else []) + (
        [f"shrank: ratio below the bar {min_ratio:.3g}"] if shrank and min_ratio is not None else []
    )
    record_metric(
        LENGTH, result.ratio, threshold=min_ratio if shrank else max_ratio, op=">=" if shrank else "<=", n=result.n, unit="items",
        passed=not failed, model=record_model, interval=result.interval, result=result, settings=settings,
    )
    if failed:
        shown = result.extremes(3, longest=result.ratio > 1)
        lines = [
            f"    item {it.index}: {it.length} vs {it.base_length} {unit}  prompt {_cut(it.prompt, 40)!r}\n"
            f"      answer {_cut(it.answer)!r}" + (f"\n      base   {_cut(it.base_answer)!r}" if it.base_answer else "")
            for it in shown
        ]
        against = "the base model's" if base is not None else f"the {result.against}'s"
        models = f"model {_shown(model)}" + (f", base {visible(str(base_name))}" if base is not None else "")
        raise AssertionError(
            f"answer length {'; '.join(failed)}: the answers are {result.ratio:.3g}x as long as {against} "
            f"(geometric mean of per-item ratios, 95% CI [{low:.3g}, {high:.3g}], {result.n} items; mean {result.mean_length:.1f} "
            f"vs {result.mean_base_length:.1f} {unit}; {models})\n"
            f"  most {'grown' if result.ratio > 1 else 'shrunk'} items:\n" + "\n".join(lines)
        )
    return result
