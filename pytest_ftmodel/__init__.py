"""pytest-ftmodel: evaluate a fine-tuned language model as pytest test cases.

Public names load on first use (PEP 562), so ``import pytest_ftmodel`` (and the pytest plugin)
imports neither torch, transformers nor numpy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "BarError": "pytest_ftmodel.errors",
    "BarTypeError": "pytest_ftmodel.errors",
    "DataError": "pytest_ftmodel.errors",
    "FTModelError": "pytest_ftmodel.errors",
    "ModelLoadError": "pytest_ftmodel.errors",
    "ModelPathError": "pytest_ftmodel.errors",
    "FTModel": "pytest_ftmodel.model",
    "load_model": "pytest_ftmodel.model",
    "ServedModel": "pytest_ftmodel.served",
    "load_jsonl": "pytest_ftmodel.data",
    "texts_of": "pytest_ftmodel.data",
    "MetricRecord": "pytest_ftmodel.report",
    "record_metric": "pytest_ftmodel.report",
    "perplexity": "pytest_ftmodel.metrics.perplexity",
    "perplexity_improvement": "pytest_ftmodel.metrics.perplexity",
    "PerplexityResult": "pytest_ftmodel.metrics.perplexity",
    "ImprovementResult": "pytest_ftmodel.metrics.perplexity",
    "assert_perplexity_below": "pytest_ftmodel.assertions",
    "assert_perplexity_improves": "pytest_ftmodel.assertions",
    "generate": "pytest_ftmodel.generation",
    "GenerationCache": "pytest_ftmodel.cache",
    "rouge": "pytest_ftmodel.metrics.text",
    "RougeResult": "pytest_ftmodel.metrics.text",
    "classify": "pytest_ftmodel.metrics.text",
    "extract_label": "pytest_ftmodel.metrics.text",
    "ClassificationResult": "pytest_ftmodel.metrics.text",
    "assert_rouge_above": "pytest_ftmodel.assertions",
    "assert_classification": "pytest_ftmodel.assertions",
    "run_sandboxed": "pytest_ftmodel.sandbox",
    "SandboxResult": "pytest_ftmodel.sandbox",
    "pass_at_k": "pytest_ftmodel.metrics.code",
    "evaluate_code": "pytest_ftmodel.metrics.code",
    "load_problems": "pytest_ftmodel.metrics.code",
    "CodeResult": "pytest_ftmodel.metrics.code",
    "assert_passk": "pytest_ftmodel.assertions",
    "overfit_report": "pytest_ftmodel.metrics.overfit",
    "OverfitResult": "pytest_ftmodel.metrics.overfit",
    "training_curve": "pytest_ftmodel.metrics.curve",
    "TrainingCurve": "pytest_ftmodel.metrics.curve",
    "split": "pytest_ftmodel.splits",
    "find_leakage": "pytest_ftmodel.splits",
    "assert_no_overfit": "pytest_ftmodel.assertions",
    "assert_training_converged": "pytest_ftmodel.assertions",
    "assert_no_leakage": "pytest_ftmodel.assertions",
    "evaluation_sheet": "pytest_ftmodel.human",
    "ab_sheet": "pytest_ftmodel.human",
    "judge_ab": "pytest_ftmodel.human",
    "reference_judge": "pytest_ftmodel.human",
    "model_judge": "pytest_ftmodel.human",
    "ab_result": "pytest_ftmodel.human",
    "human_scores": "pytest_ftmodel.human",
    "HumanScores": "pytest_ftmodel.human",
    "ABResult": "pytest_ftmodel.human",
    "JudgeAgreement": "pytest_ftmodel.human",
    "assert_human_scores": "pytest_ftmodel.assertions",
    "mc_accuracy": "pytest_ftmodel.metrics.mc",
    "mc_items": "pytest_ftmodel.metrics.mc_tasks",
    "MCResult": "pytest_ftmodel.metrics.mc",
    "assert_mc_accuracy": "pytest_ftmodel.assertions_mc",
    "assert_no_forgetting": "pytest_ftmodel.assertions_mc",
    "forgetting": "pytest_ftmodel.assertions_mc",
    "ForgettingResult": "pytest_ftmodel.assertions_mc",
    "assert_ab_win_rate": "pytest_ftmodel.assertions",
    "rubric_judge": "pytest_ftmodel.judges",
    "judge_sheet": "pytest_ftmodel.judges",
    "judge_scores": "pytest_ftmodel.judges",
    "JudgeScores": "pytest_ftmodel.judges",
    "assert_judge_scores": "pytest_ftmodel.assertions",
    "RubricJudge": "pytest_ftmodel.judges",
    "JudgeError": "pytest_ftmodel.judges",
    "JudgeLogprobsUnavailable": "pytest_ftmodel.judges",
    "format_check": "pytest_ftmodel.metrics.form",
    "FormatResult": "pytest_ftmodel.metrics.form",
    "exact_match": "pytest_ftmodel.metrics.reference",
    "f1": "pytest_ftmodel.metrics.reference",
    "bleu": "pytest_ftmodel.metrics.reference",
    "chrf": "pytest_ftmodel.metrics.reference",
    "ReferenceResult": "pytest_ftmodel.metrics.reference",
    "length_ratio": "pytest_ftmodel.metrics.form",
    "LengthResult": "pytest_ftmodel.metrics.form",
    "assert_format": "pytest_ftmodel.assertions_answers",
    "assert_exact_match": "pytest_ftmodel.assertions_answers",
    "assert_f1": "pytest_ftmodel.assertions_answers",
    "assert_bleu": "pytest_ftmodel.assertions_answers",
    "assert_chrf": "pytest_ftmodel.assertions_answers",
    "assert_length": "pytest_ftmodel.assertions_answers",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:
    from pytest_ftmodel.assertions import (
        assert_ab_win_rate,
        assert_classification,
        assert_human_scores,
        assert_judge_scores,
        assert_no_leakage,
        assert_no_overfit,
        assert_passk,
        assert_perplexity_below,
        assert_perplexity_improves,
        assert_rouge_above,
        assert_training_converged,
    )
    from pytest_ftmodel.cache import GenerationCache
    from pytest_ftmodel.generation import generate
    from pytest_ftmodel.human import (
        ABResult,
        HumanScores,
        JudgeAgreement,
        ab_result,
        ab_sheet,
        evaluation_sheet,
        human_scores,
        judge_ab,
        model_judge,
        reference_judge,
    )
    from pytest_ftmodel.judges import JudgeError, JudgeLogprobsUnavailable, JudgeScores, RubricJudge, judge_scores, judge_sheet, rubric_judge
    from pytest_ftmodel.metrics.code import CodeResult, evaluate_code, load_problems, pass_at_k
    from pytest_ftmodel.metrics.curve import TrainingCurve, training_curve
    from pytest_ftmodel.assertions_mc import ForgettingResult, assert_mc_accuracy, assert_no_forgetting, forgetting
    from pytest_ftmodel.metrics.mc import MCResult, mc_accuracy
    from pytest_ftmodel.metrics.mc_tasks import mc_items
    from pytest_ftmodel.assertions_answers import (
        assert_bleu,
        assert_chrf,
        assert_exact_match,
        assert_f1,
        assert_format,
        assert_length,
    )
    from pytest_ftmodel.metrics.form import FormatResult, LengthResult, format_check, length_ratio
    from pytest_ftmodel.metrics.reference import ReferenceResult, bleu, chrf, exact_match, f1
    from pytest_ftmodel.metrics.overfit import OverfitResult, overfit_report
    from pytest_ftmodel.splits import find_leakage, split
    from pytest_ftmodel.sandbox import SandboxResult, run_sandboxed
    from pytest_ftmodel.metrics.text import ClassificationResult, RougeResult, classify, extract_label, rouge
    from pytest_ftmodel.data import load_jsonl, texts_of
    from pytest_ftmodel.errors import BarError, BarTypeError, DataError, FTModelError, ModelLoadError, ModelPathError
    from pytest_ftmodel.metrics.perplexity import (
        ImprovementResult,
        PerplexityResult,
        perplexity,
        perplexity_improvement,
    )
    from pytest_ftmodel.model import FTModel, load_model
    from pytest_ftmodel.served import ServedModel
    from pytest_ftmodel.report import MetricRecord, record_metric


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pytest_ftmodel' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
