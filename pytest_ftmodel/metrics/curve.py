"""The training curve in a transformers ``trainer_state.json`` (its ``log_history``).

Overfitting is judged on the trend of the eval loss after its best evaluation, not on strict
monotony: a curve that climbs from 1.22 to 2.37 is overfit even if its last evaluation dips.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_ftmodel.errors import DataError

#: default relative rise of the final eval loss above its best that counts as "turned up"
DEFAULT_TOLERANCE = 0.05


@dataclass(frozen=True)
class TrainingCurve:
    path: Path  # the trainer_state.json that was read
    train: tuple[tuple[int, float], ...]  # (step, loss), sorted by step
    eval: tuple[tuple[int, float], ...]  # (step, eval_loss)
    loss_decreased: bool
    first_loss: float
    last_loss: float
    best_step: int
    best_eval_loss: float
    eval_rising: bool  # eval loss turned up after its best while training loss fell (see training_curve)
    patience: int
    tolerance: float = DEFAULT_TOLERANCE
    final_eval_loss: float = 0.0
    eval_rise: float = 0.0  # final eval loss / best eval loss - 1
    eval_slope: float | None = None  # Theil-Sen slope of eval loss per step, from the best evaluation on
    eval_slope_low: float | None = None  # the lower end of its 95% confidence interval
    evals_since_best: int = 0
    best_checkpoint: Path | None = None  # the saved checkpoint closest to the best step, when one exists
    best_checkpoint_note: str = ""  # how best_checkpoint was chosen, or why there is none


def _step_of(folder: Path) -> int | None:
    tail = folder.name.rsplit("-", 1)[-1]
    return int(tail) if folder.name.startswith("checkpoint-") and tail.isdigit() else None


def _checkpoints(folder: Path) -> dict[int, Path]:
    """The ``checkpoint-N`` folders directly in ``folder``, by step."""
    if not folder.is_dir():
        return {}
    found = {}
    for child in folder.iterdir():
        step = _step_of(child)
        if step is not None and child.is_dir():
            found[step] = child
    return found


def _latest_state(folder: Path) -> Path | None:
    with_state = {s: c / "trainer_state.json" for s, c in _checkpoints(folder).items() if (c / "trainer_state.json").is_file()}
    return with_state[max(with_state)] if with_state else None


def _state_file(path: str | os.PathLike[str]) -> Path:
    """The trainer_state.json for a file or folder.

    A folder is looked in, then its latest ``checkpoint-*``, then its parent's (``trainer.save_model()``
    writes no trainer_state.json, and is usually given a folder inside the Trainer's output_dir).
    """
    p = Path(path)
    if p.is_dir():
        direct = p / "trainer_state.json"
        if direct.is_file():
            return direct
        found = _latest_state(p)
        if found is None:
            parent = p.resolve().parent
            found = parent / "trainer_state.json" if (parent / "trainer_state.json").is_file() else _latest_state(parent)
        if found is not None:
            return found
        raise DataError(
            f"no trainer_state.json in {str(p)!r}, its checkpoint-* folders or its parent's: "
            "pass the file the Trainer wrote (output_dir/checkpoint-N/trainer_state.json)"
        )
    if not p.is_file():
        raise DataError(f"training log {str(p)!r} does not exist: pass trainer_state.json or the checkpoint folder")
    return p


def _output_dir(state_file: Path) -> Path:
    """The Trainer's output_dir: the folder that holds the checkpoint-* folders."""
    folder = state_file.parent
    return folder.parent if _step_of(folder) is not None else folder


def _best_checkpoint(state: dict[str, Any], state_file: Path, best_step: int) -> tuple[Path | None, str]:
    out = _output_dir(state_file)
    saved = _checkpoints(out)
    notes = []
    named = state.get("best_model_checkpoint")
    if isinstance(named, str) and named:
        # the Trainer records output_dir as it was given (often relative to where training ran)
        candidates = [Path(named), out / Path(named).name]
        trainer_best = next((c for c in candidates if c.is_dir()), None)
        if trainer_best is not None and _step_of(trainer_best) == best_step:
            return trainer_best, "the Trainer's best_model_checkpoint"
        if trainer_best is None:
            notes.append(f"the Trainer's best_model_checkpoint {named!r} is not on disk")
        else:
            # its metric_for_best_model may not be eval_loss, or its best step was not a saving step
            notes.append(f"the Trainer's best_model_checkpoint is {trainer_best}")
    if best_step in saved:
        chosen, note = saved[best_step], f"saved at the best step {best_step}"
    elif saved:
        step = min(saved, key=lambda s: (abs(s - best_step), s))
        chosen, note = saved[step], f"step {best_step} was never saved; this is the nearest saved checkpoint"
    else:
        chosen, note = None, f"step {best_step} was never saved: no checkpoint-* folder in {str(out)!r}"
    return chosen, "; ".join([note, *notes])


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _theil_sen(points: list[tuple[int, float]]) -> tuple[float, float]:
    """The Theil-Sen slope (median of pairwise slopes) and the lower end of its 95% interval."""
    from scipy.stats import theilslopes

    fit = theilslopes([v for _, v in points], [s for s, _ in points], alpha=0.95)
    return float(fit.slope), float(fit.low_slope)


def training_curve(path: Any, *, patience: int = 3, tolerance: float = DEFAULT_TOLERANCE) -> TrainingCurve:
    """Read a ``trainer_state.json`` (or a checkpoint folder, or an FTModel) and judge its curve.

    Entries may come in any order and spacing. "Loss decreased" compares the mean of the first and
    the last tenth of the training-loss entries (at least one each), which is robust to noise.

    ``eval_rising`` (overfitting) holds when all of these do:

    - the best (lowest) eval loss is at least ``patience`` evaluations before the last one (what
      transformers' ``EarlyStoppingCallback`` would have stopped on);
    - the final eval loss is more than ``tolerance`` (relative, default 5%) above the best;
    - the Theil-Sen slope of eval loss over the evaluations from the best on is positive with 95%
      confidence (its interval lies above 0): the trend is up, and one noisy evaluation neither
      makes nor hides it;
    - training loss kept falling over those steps.
    """
    if patience < 1:
        raise DataError(f"patience {patience} must be at least 1")
    if not tolerance >= 0:
        raise DataError(f"tolerance {tolerance} must be a non-negative fraction (0.05 = 5% above the best eval loss)")
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
    since = [e for e in evals if e[0] >= best_step]
    final = evals[-1][1]
    rise = final / best - 1 if best > 0 else (float("inf") if final > best else 0.0)
    slope, slope_low = _theil_sen(since) if len(since) >= 2 else (None, None)
    rising = False
    if len(since) - 1 >= patience and rise > tolerance and slope_low is not None and slope_low > 0:
        before = [v for s, v in train if s <= best_step][-tenth:]
        after = [v for s, v in train if s > best_step]
        rising = bool(before and after and _mean(after) < _mean(before))
    checkpoint, note = _best_checkpoint(state, file, best_step)
    return TrainingCurve(
        path=file,
        train=tuple(train),
        eval=tuple(evals),
        loss_decreased=last < first,
        first_loss=first,
        last_loss=last,
        best_step=best_step,
        best_eval_loss=best,
        eval_rising=rising,
        patience=patience,
        tolerance=tolerance,
        final_eval_loss=final,
        eval_rise=rise,
        eval_slope=slope,
        eval_slope_low=slope_low,
        evals_since_best=len(since) - 1,
        best_checkpoint=checkpoint,
        best_checkpoint_note=note,
    )
