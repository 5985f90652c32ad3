"""The example suite a user copies: green on the fine-tuned demo, red on the base."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "example_suite"


@pytest.fixture
def suite(pytester: pytest.Pytester) -> Path:
    dest = pytester.path / "example_suite"
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def test_example_suite_passes_on_the_embedded_demo_by_default(pytester: pytest.Pytester, suite, bpe_pair) -> None:
    result = pytester.runpytest_subprocess(str(suite))
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["*= ftmodel metrics =*", "*metrics recorded, * passed, 0 failed."])


def test_example_suite_passes_for_the_fine_tuned_model_given_explicitly(pytester: pytest.Pytester, suite, bpe_pair) -> None:
    result = pytester.runpytest_subprocess(str(suite), "--model", str(bpe_pair.finetuned), "--base-model", str(bpe_pair.base))
    assert result.ret == 0, result.stdout.str()


def test_example_suite_fails_for_the_base_model(pytester: pytest.Pytester, suite, bpe_pair) -> None:
    result = pytester.runpytest_subprocess(str(suite), "--model", str(bpe_pair.base), "--base-model", str(bpe_pair.base))
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    outcomes = result.parseoutcomes()
    assert outcomes["failed"] >= 2
    result.stdout.fnmatch_lines(["*perplexity * is above the bar*"])
