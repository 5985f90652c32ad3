"""Automated judges of single answers (rubric, G-Eval style), filled into evaluation sheets and
calibrated against people before a gate rests on them. The pairwise (A/B) judge lives in
:mod:`pytest_ftmodel.human` beside the A/B sheets it fills."""

from __future__ import annotations

from pytest_ftmodel.judges.gate import JudgeScores, judge_scores, judge_sheet
from pytest_ftmodel.judges.rubric import RUBRICS, JudgedAnswer, RubricJudge, rubric_judge
from pytest_ftmodel.judges.scores import CUE, JudgeError, JudgeLogprobsUnavailable, WeightedScore, weighted_score, written_score

__all__ = [
    "CUE", "RUBRICS", "JudgeError", "JudgeLogprobsUnavailable", "JudgedAnswer", "JudgeScores", "RubricJudge", "judge_scores", "judge_sheet", "WeightedScore",
    "rubric_judge", "weighted_score", "written_score",
]
