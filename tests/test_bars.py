"""Every bar of every assert_* helper is checked before any model work: its type, and for
proportions the range 0-1. Parametrised over the public helpers, so a new helper whose bars have
no rule fails here."""

from __future__ import annotations

import inspect

import pytest

import pytest_ftmodel
from pytest_ftmodel import BarError, BarTypeError, DataError

HELPERS = sorted(name for name in pytest_ftmodel.__all__ if name.startswith("assert_"))


class Touched(Exception):
    pass


class Untouchable:
    """A model, data set or sheet whose every use is counted and raises: a helper that reaches one
    has started its model work."""

    uses: list[str] = []

    def __init__(self, name: str) -> None:
        object.__setattr__(self, "_name", name)

    def _touch(self, how: str) -> Touched:
        Untouchable.uses.append(f"{object.__getattribute__(self, '_name')}.{how}")
        return Touched(how)

    def __getattr__(self, attr: str):
        raise self._touch(attr)

    def __iter__(self):
        raise self._touch("__iter__")

    def __len__(self) -> int:
        raise self._touch("__len__")

    def __getitem__(self, key):
        raise self._touch("__getitem__")

    def __bool__(self) -> bool:
        raise self._touch("__bool__")

    def __fspath__(self) -> str:
        raise self._touch("__fspath__")


@pytest.fixture(autouse=True)
def _no_uses():
    Untouchable.uses = []
    yield


def _bar_like(param: inspect.Parameter) -> bool:
    """A parameter that is, or may be, a threshold: a float of some kind, or the margin."""
    annotation = str(param.annotation)
    return "float" in annotation or annotation == "Margin"


def _call(name: str, **given):
    """Call helper ``name`` with ``given``, every other required argument an Untouchable and every
    other argument that has a rule its rule's example."""
    helper = getattr(pytest_ftmodel, name)
    kwargs = {}
    for p in inspect.signature(helper).parameters.values():
        if p.name in given or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.name in helper.bars:
            kwargs[p.name] = helper.bars[p.name].example
        elif p.default is p.empty:
            kwargs[p.name] = Untouchable(p.name)
    return helper(**kwargs, **given)


def _cases(kinds=None):
    return [
        pytest.param(name, bar, id=f"{name}-{bar}")
        for name in HELPERS
        for bar, rule in getattr(pytest_ftmodel, name).bars.items()
        if kinds is None or rule.kind in kinds
    ]


@pytest.mark.parametrize("name", HELPERS)
def test_every_bar_of_every_helper_has_a_rule(name) -> None:
    helper = getattr(pytest_ftmodel, name)
    bars = getattr(helper, "bars", None)
    assert bars is not None, f"{name} declares no bars: decorate it with _gated(...) naming a rule for each"
    params = inspect.signature(helper).parameters
    unruled = [p.name for p in params.values() if _bar_like(p) and p.name not in bars]
    assert unruled == [], f"{name}: no rule for {unruled}"
    assert set(bars) <= set(params), f"{name}: rules for arguments it does not take"
    assert "margin" in bars


@pytest.mark.parametrize("name", HELPERS)
def test_valid_bars_pass_the_checks_and_reach_the_model_work(name) -> None:
    # the rules' examples are valid: the helper gets past its checks and starts on its inputs (or
    # on checking their shape, which an Untouchable does not have)
    with pytest.raises((Touched, DataError)) as stopped:
        _call(name)
    assert not isinstance(stopped.value, BarError)
    assert Untouchable.uses or "Untouchable" in str(stopped.value) or "not a list" in str(stopped.value)


@pytest.mark.parametrize(("name", "bar"), _cases())
def test_a_bar_of_the_wrong_type_fails_before_any_model_work(name, bar) -> None:
    rule = getattr(pytest_ftmodel, name).bars[bar]
    wrong = 1 if rule.kind == "choice" else "0.5"
    with pytest.raises(BarTypeError) as failed:
        _call(name, **{bar: wrong})
    message = str(failed.value)
    assert message.startswith(f"{name}: {bar} must be "), message
    assert f"got {wrong!r} ({type(wrong).__name__})" in message
    assert "\n" not in message
    assert Untouchable.uses == []
    assert isinstance(failed.value, TypeError)  # what Python itself would raise for it


@pytest.mark.parametrize(("name", "bar"), _cases(kinds=("proportion",)))
def test_a_proportion_in_percent_fails_before_any_model_work(name, bar) -> None:
    with pytest.raises(BarError) as failed:
        _call(name, **{bar: 80})
    message = str(failed.value)
    assert message == f"{name}: {bar}=80 is out of range: it must be between 0 and 1: for 80% write 0.8"
    assert Untouchable.uses == []
    assert isinstance(failed.value, ValueError)
    with pytest.raises(BarError, match=rf"{bar}=-0.1 is out of range"):
        _call(name, **{bar: -0.1})


@pytest.mark.parametrize(("name", "bar"), _cases())
def test_nan_and_bool_are_no_bars(name, bar) -> None:
    rule = getattr(pytest_ftmodel, name).bars[bar]
    if rule.kind in ("number", "proportion", "margin"):
        with pytest.raises(BarError, match=rf"{bar}=nan is out of range"):
            _call(name, **{bar: float("nan")})
    with pytest.raises(BarTypeError, match=rf"{bar} must be .*, got True \(bool\)"):
        _call(name, **{bar: True})
    assert Untouchable.uses == []


def test_the_messages_say_what_to_write() -> None:
    with pytest.raises(BarTypeError, match=r"^assert_perplexity_below: max_perplexity must be a number >= 1, got '800' \(str\): write 800 without quotes$"):
        pytest_ftmodel.assert_perplexity_below(Untouchable("model"), Untouchable("texts"), "800")
    with pytest.raises(BarError, match=r"^assert_perplexity_below: max_perplexity=0.5 is out of range: it must be >= 1 \(a perplexity is at least 1\)$"):
        pytest_ftmodel.assert_perplexity_below(Untouchable("model"), Untouchable("texts"), 0.5)
    with pytest.raises(BarError, match=r"^assert_classification: min_accuracy=80 is out of range: it must be between 0 and 1: for 80% write 0.8$"):
        pytest_ftmodel.assert_classification(Untouchable("model"), Untouchable("data"), ["a", "b"], min_accuracy=80)
    with pytest.raises(BarTypeError, match=r"^assert_passk: k must be a whole number >= 1, got 1.0 \(float\)$"):
        pytest_ftmodel.assert_passk(Untouchable("model"), Untouchable("problems"), 1.0, 0.5)
    with pytest.raises(BarError, match=r"^assert_rouge_above: margin\['rougeL'\]=-0.01 is out of range: it must be >= 0$"):
        pytest_ftmodel.assert_rouge_above(Untouchable("model"), Untouchable("data"), rougeL=0.4, margin={"rougeL": -0.01})
    with pytest.raises(BarError, match=r"^assert_perplexity_below: margin\['perplexty'\] names no metric \(did you mean 'perplexity'.*\?\): key the margin by the metric's name as the table shows it$"):
        pytest_ftmodel.assert_perplexity_below(Untouchable("model"), Untouchable("texts"), 4.0, margin={"perplexty": 0.5})
    with pytest.raises(BarTypeError, match=r"^assert_human_scores: min_mean\['accuracy'\] must be .*, got '4' \(str\): write 4 without quotes$"):
        pytest_ftmodel.assert_human_scores(Untouchable("sheet"), min_mean={"accuracy": "4"})
    with pytest.raises(BarError, match=r"^assert_no_leakage: normalize='code' is not a known setting: use one of 'structure', 'prose', 'exact'$"):
        pytest_ftmodel.assert_no_leakage(Untouchable("train"), Untouchable("val"), normalize="code")
    assert Untouchable.uses == []


def test_a_wrong_call_still_reads_as_python_says_it() -> None:
    with pytest.raises(TypeError, match=r"assert_perplexity_below\(\) missing 1 required positional argument: 'max_perplexity'"):
        pytest_ftmodel.assert_perplexity_below(Untouchable("model"), Untouchable("texts"))  # type: ignore[call-arg]
    assert Untouchable.uses == []


DATA = [{"instruction": "Is this good?", "expected_label": "a"}]
PROBLEMS = [{"prompt": "def f():\n", "test_code": "assert f() == 1"}]


def test_numbers_of_other_numeric_types_are_bars() -> None:
    import numpy as np
    from fractions import Fraction

    for value in (np.float32(0.8), np.float64(0.8), Fraction(4, 5), 1):
        with pytest.raises(Touched):
            pytest_ftmodel.assert_classification(Untouchable("model"), DATA, ["a", "b"], min_accuracy=value)
    with pytest.raises(Touched):
        pytest_ftmodel.assert_passk(Untouchable("model"), PROBLEMS, np.int64(1), 0.5)
    assert [u.split(".")[0] for u in Untouchable.uses] == ["model"] * 5


def test_a_bar_error_is_one_line_in_a_pytest_run(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_bar="""
from pytest_ftmodel import assert_perplexity_below

class Model:
    def __getattr__(self, name):
        raise RuntimeError("the model ran")

def test_ppl():
    assert_perplexity_below(Model(), ["a text"], "800")
"""
    )
    result = pytester.runpytest_inprocess("-p", "no:randomly", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*test_bar.py:*: BarTypeError: assert_perplexity_below: max_perplexity must be a number >= 1, got '800' (str): write 800 without quotes"])
    assert "the model ran" not in result.stdout.str()
    assert "Traceback" not in result.stdout.str()
