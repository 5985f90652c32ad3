"""How a model is run: one interface (:class:`Engine`), an implementation per kind of model."""

from __future__ import annotations

from pytest_ftmodel.engines.base import Engine, Unit, engine_of

__all__ = ["Engine", "Unit", "engine_of"]
