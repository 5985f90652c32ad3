"""Exceptions whose message is one line a person can act on (what, where, how to fix)."""

from __future__ import annotations


class FTModelError(Exception):
    """Base class of every error this package raises on purpose."""


class ModelPathError(FTModelError, ValueError):
    """A model path or option is wrong; found before any weight is read."""


class ModelLoadError(FTModelError, RuntimeError):
    """A model directory looked right but failed to load (weights, tokenizer, device)."""


class DataError(FTModelError, ValueError):
    """Evaluation data is empty or malformed; the message names the item and the fix."""


class BarError(FTModelError, ValueError):
    """A bar (threshold) or setting of an ``assert_*`` helper is out of range; found before any model work."""


class BarTypeError(BarError, TypeError):
    """A bar or setting of an ``assert_*`` helper has the wrong type (``"800"`` for 800)."""
