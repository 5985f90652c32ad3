"""Reading a judge's score: the probability-weighted score at the final-score position, or the
last score the judge wrote in the final-score slot. Pure functions, no model.

G-Eval (Liu et al. 2023; DeepEval's ``GEval``) weights each score by its probability at the
position where the score is written: ``sum p(k) * k / sum p(k)`` over the tokens "1".."5". The
position is the one right after the final-score cue, never a digit inside the reasoning.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Mapping

from pytest_ftmodel.errors import FTModelError

LEVELS = (1, 2, 3, 4, 5)
#: what the judge is asked to end with, and what is appended after its reasoning before the score is read
CUE = "\nFinal score:"
#: the final-score slot in written text: the cue, then whatever the judge wrote up to the end of the line
_SLOT = re.compile(r"final score\s*[:=]\s*([^\n]*)", re.IGNORECASE)
_WHOLE = re.compile(r"^\**\s*([1-5])(?:\s*(?:/\s*5|out of 5))?\s*\**\s*[.!]?\s*$")


class JudgeError(FTModelError, RuntimeError):
    """A judge model cannot do what the rubric asks of it; the message says what and how to fix it."""


class JudgeLogprobsUnavailable(JudgeError):
    """``scoring="logprobs"`` asked of a judge that gives no log-probabilities (never silently the top token)."""


@dataclass(frozen=True)
class WeightedScore:
    score: float | None  # sum p(k) k / sum p(k); None when no probability fell on "1".."5"
    mass: float  # sum p(k): how much of the next-token probability the five scores hold
    probabilities: tuple[float, ...]  # p(1) .. p(5), unnormalised


def weighted_score(logprobs: Mapping[int, float], *, where: str = "the judge") -> WeightedScore:
    """G-Eval's weighted score from the log-probabilities of the score tokens (``{k: log p(k)}``,
    levels missing from the map have probability 0). A value that is not a finite number or is
    above 0 is the server's error, raised in one line rather than turned into a score."""
    probs = []
    for k in LEVELS:
        value = logprobs.get(k)
        if value is None:
            probs.append(0.0)
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or value > 1e-6 or value == math.inf:
            raise JudgeError(
                f"{where} gave the log-probability {value!r:.40} for the score {k}: not a finite number <= 0; "
                "the server's log-probabilities are broken, score with scoring='text' or use another server"
            )
        probs.append(math.exp(min(float(value), 0.0)))
    mass = sum(probs)
    if mass <= 0.0:
        return WeightedScore(None, 0.0, tuple(probs))
    return WeightedScore(sum(p * k for p, k in zip(probs, LEVELS)) / mass, mass, tuple(probs))


def written_score(text: str) -> int | None:
    """The score in the LAST final-score slot the judge wrote ("Final score: 4", "final score = 4/5");
    None when there is no slot, or the last slot holds no whole score 1-5. A digit anywhere else
    (in the reasoning, in an earlier slot the judge then replaced) is never read."""
    slots = _SLOT.findall(text)
    if not slots:
        return None
    found = _WHOLE.match(slots[-1].strip())
    return int(found.group(1)) if found else None
