"""The training curve in a transformers ``trainer_state.json`` (its ``log_history``)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_ftmodel.errors import DataError


@dataclass(frozen=True)
class TrainingCurve:
    path: Path
    train: tuple[tuple[int, float], ...]  # (step, loss), sorted by step
    eval: tuple[tuple[int, float], ...]  # (step, eval_loss)
    loss_decreased: bool
    first_loss: float
    last_loss: float
    best_step: int
    best_eval_loss: float
    eval_rising: bool  # eval loss rose over the last `patience` evaluations while training loss fell
    patience: int


def _state_file(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if p.is_dir():
        direct = p / "trainer_state.json"
        if direct.is_file():
            return direct
        checkpoints = sorted(
            (c for c in p.glob("checkpoint-*/trainer_state.json") if c.parent.name.split("-")[-1].isdigit()),
            key=lambda c: int(c.parent.name.split("-")[-1]),
        )
        if checkpoints:
            return checkpoints[-1]
        raise DataError(f"no trainer_state.json in {str(p)!r} or its checkpoint-* folders: pass the file the Trainer wrote")
    if not p.is_file():
        raise DataError(f"training log {str(p)!r} does not exist: pass trainer_state.json or the checkpoint folder")
    return p


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def training_curve(path: Any, *, patience: int = 3) -> TrainingCurve:
    """Read a ``trainer_state.json`` (or a checkpoint folder, or an FTModel) and judge its curve.

    Entries may come in any order and spacing. "Loss decreased" compares the mean of the first and
    the last tenth of the training-loss entries (at least one each), which is robust to noise.
    ``eval_rising``: the last ``patience`` evaluations each rose, while training loss over the same
    steps fell.
    """
    if patience < 1:
        raise DataError(f"patience {patience} must be at least 1")
    file = _state_file(getattr(path, "path", path))
    try:
        state = json.loads(file.read_text())
        history = state["log_history"]
        if not isinstance(history, list):
            raise TypeError("log_history is not a list")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{file}: not a trainer_state.json with a log_history list ({exc}); pass the file the Trainer wrote") from None
    train = sorted((int(h["step"]), float(h["loss"])) for h in history if isinstance(h, dict) and "loss" in h and "step" in h)
    evals = sorted((int(h["step"]), float(h["eval_loss"])) for h in history if isinstance(h, dict) and "eval_loss" in h and "step" in h)
    if not train:
        raise DataError(f"{file}: log_history has no training 'loss' entries")
    if not evals:
        raise DataError(f"{file}: log_history has no 'eval_loss' entries: train with an eval dataset and eval_strategy='steps' or 'epoch'")
    tenth = max(1, len(train) // 10)
    first, last = _mean([v for _, v in train[:tenth]]), _mean([v for _, v in train[-tenth:]])
    best_step, best = min(evals, key=lambda e: (e[1], e[0]))
    rising = False
    if len(evals) > patience:
        tail = evals[-(patience + 1) :]
        if all(b[1] > a[1] for a, b in zip(tail, tail[1:])):
            before = [v for s, v in train if s <= tail[0][0]][-tenth:]
            after = [v for s, v in train if s > tail[0][0]]
            rising = bool(before and after and _mean(after) < _mean(before))
    return TrainingCurve(file, tuple(train), tuple(evals), last < first, first, last, best_step, best, rising, patience)
