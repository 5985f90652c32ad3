"""What the bars (thresholds) and settings of the ``assert_*`` helpers must be, checked before any
model work.

A bar of the wrong type (``"800"``) used to surface as a bare TypeError from deep in the package
after the model had run, and a proportion given in percent (``min_accuracy=80``) made a gate that
can never pass. Each helper declares a :class:`Rule` per bar (``assertions._gated``); the rules run
on the bound arguments before the helper's body, and a broken bar fails in one line that names the
helper, the argument, what was given and what to write instead. Standard library only.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pytest_ftmodel.errors import BarError, BarTypeError


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _given(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _as_written(value: Any) -> str:
    """A hint for a number written as a string ("800"): the number itself."""
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return ""
        if math.isfinite(number):
            return f": write {value.strip()} without quotes"
    return ""


def _bounds(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"between {low:g} and {high:g}"
    if low is not None:
        return f">= {low:g}"
    if high is not None:
        return f"<= {high:g}"
    return ""


@dataclass(frozen=True)
class Rule:
    """What one argument of a helper must be.

    ``kind``: "number" (a real number, not NaN, within ``low``/``high``), "proportion" (a number
    between 0 and 1), "whole" (an integer >= ``low``), "margin" (a number >= 0, or {metric: number}),
    "scores" ({criterion: number}) or "choice" (one of ``choices``). ``optional``: None is allowed.
    ``example`` is a valid value (the tests call every helper with them). ``why`` says what the
    bounds mean, for the message."""

    kind: str
    example: Any
    low: float | None = None
    high: float | None = None
    optional: bool = False
    choices: tuple[str, ...] = ()
    why: str = ""

    @property
    def what(self) -> str:
        if self.kind == "proportion":
            return "a proportion between 0 and 1"
        if self.kind == "whole":
            return f"a whole number {_bounds(self.low, None)}".rstrip()
        if self.kind == "margin":
            return 'a number >= 0, or {"metric": number}'
        if self.kind == "scores":
            return '{"criterion": number}'
        if self.kind == "choice":
            return f"one of {', '.join(map(repr, self.choices))}"
        bounds = _bounds(self.low, self.high)
        return f"a number {bounds}".rstrip() if bounds else "a number"

    def check(self, helper: str, name: str, value: Any) -> None:
        """Raise :class:`BarTypeError` or :class:`BarError` (one line) unless ``value`` fits."""
        if value is None and self.optional:
            return
        where = f"{helper}: {name}"
        if self.kind == "choice":
            if not isinstance(value, str):
                raise BarTypeError(f"{where} must be {self.what}, got {_given(value)}")
            if value not in self.choices:
                raise BarError(f"{where}={value!r} is not a known setting: use {self.what}")
            return
        if self.kind in ("margin", "scores") and isinstance(value, Mapping):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise BarTypeError(f"{where} must be {self.what}, got the key {_given(key)}")
                if self.kind == "margin":
                    self._number(f"{where}[{key!r}]", item, low=0.0, high=None)
                else:  # a mean score on the sheet's scale: 0.8 or 0 would pass every model, 6 fail every one
                    self._number(f"{where}[{key!r}]", item, low=1.0, high=5.0)
                if self.kind == "margin":
                    _check_margin_name(where, key)
            return
        if self.kind == "scores":
            raise BarTypeError(f"{where} must be {self.what}, got {_given(value)}")
        if self.kind == "margin":
            self._number(where, value, low=0.0, high=None)
        elif self.kind == "whole":
            if not isinstance(value, numbers.Integral) or isinstance(value, bool):
                raise BarTypeError(f"{where} must be {self.what}, got {_given(value)}{_as_written(value)}")
            if self.low is not None and value < self.low:
                raise BarError(f"{where}={value!r} is out of range: it must be {self.what}")
        elif self.kind == "proportion":
            self._number(where, value, low=0.0, high=1.0)
        else:
            self._number(where, value, low=self.low, high=self.high)

    def _number(self, where: str, value: Any, *, low: float | None, high: float | None) -> None:
        if not _is_number(value):
            raise BarTypeError(f"{where} must be {self.what}, got {_given(value)}{_as_written(value)}")
        if math.isnan(value) or (low is not None and value < low) or (high is not None and value > high):
            hint = f" ({self.why})" if self.why else ""
            if high == 1.0 and 1 < value <= 100:  # a percentage where a proportion is meant
                hint += f": for {value:g}% write {value / 100:g}"
            raise BarError(f"{where}={value!r} is out of range: it must be {_bounds(low, high) or 'a number, not NaN'}{hint}")


def number(example: float, *, low: float | None = None, high: float | None = None, optional: bool = False, why: str = "") -> Rule:
    return Rule("number", example, low=low, high=high, optional=optional, why=why)


def proportion(example: float = 0.8, *, optional: bool = False) -> Rule:
    return Rule("proportion", example, low=0.0, high=1.0, optional=optional)


def whole(example: int, *, low: int = 0, optional: bool = False) -> Rule:
    return Rule("whole", example, low=low, optional=optional)


def choice(*choices: str) -> Rule:
    return Rule("choice", choices[0], choices=choices)


#: ``margin=`` of every helper (see assertions.Margin)
MARGIN = Rule("margin", 0.02, optional=True)


def check_bars(helper: str, rules: Mapping[str, Rule], arguments: Mapping[str, Any]) -> None:
    """Check every argument that has a rule; the first that does not fit raises."""
    __tracebackhide__ = True
    for name, rule in rules.items():
        if name in arguments:
            rule.check(helper, name, arguments[name])


def _check_margin_name(where: str, key: str) -> None:
    """A margin keyed by a name no helper records would be silently unused (the default margin then
    applies): a typo is an error, as in ``--ftmodel-margin``."""
    from pytest_ftmodel.baseline.gate import KNOWN_METRICS, known_metric

    if known_metric(key):
        return
    import difflib

    close = difflib.get_close_matches(key, [*KNOWN_METRICS, "pass@1"], n=2, cutoff=0.6)
    hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
    raise BarError(f"{where}[{key!r}] names no metric{hint}: key the margin by the metric's name as the table shows it")
