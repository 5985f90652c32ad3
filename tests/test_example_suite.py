"""The example suite a user copies: green on the fine-tuned demo, red on the base."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "example_suite"


@pytest.fixture
def suite(pytester: pytest.Pytester) -> Path:
    dest = pytester.path / "example_suite"
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def test_example_suite_passes_on_the_embedded_demo_by_default(pytester: pytest.Pytester, suite, rebuilt_bpe) -> None:
    """Quick start (1): green on the shipped demo, also where the installed releases train other bits
    (a rebuild under another seed sits in the cache): the suite evaluates the shipped checkpoints."""
    result = pytester.runpytest_subprocess(str(suite))
    assert result.ret == 0, result.stdout.str()
    from pytest_ftmodel.demo import shipped_demo

    shipped = shipped_demo("bpe")
    result.stdout.fnmatch_lines([f"ftmodel: model={shipped.finetuned} base_model={shipped.base} *"])
    # the README's sample output is what this run prints (all but the cache lines, whose counts and
    # folder are those of a second run on the author's machine)
    readme = (EXAMPLE.parent / "README.md").read_text(encoding="utf-8")
    block = readme.split("```\n=============================== ftmodel metrics", 1)[1].split("```", 1)[0]
    sample = [line for line in ("=" * 31 + " ftmodel metrics" + block).splitlines() if not line.endswith("cache/d/ftmodel)")]
    printed = result.stdout.lines
    start = printed.index(sample[0])
    assert printed[start : start + len(sample)] == sample
    result.stdout.fnmatch_lines(["*= ftmodel metrics =*", "*metrics recorded, * passed, 0 failed."])
    # compared with the committed baseline of the demo's fine-tuned model, item by item
    result.stdout.fnmatch_lines(["baseline *ftmodel-baseline.bpe.json*: 10 within noise"])


def test_a_rebuilt_demo_passes_every_absolute_bar(pytester: pytest.Pytester, suite, rebuilt_bpe) -> None:
    """The recipe, not one lucky set of bits, clears the example suite's bars: a rebuild under another
    seed passes every gate (compared with no baseline: the committed one is of the shipped weights)."""
    result = pytester.runpytest_subprocess(
        str(suite), f"--model={rebuilt_bpe.finetuned}", f"--base-model={rebuilt_bpe.base}", "--ftmodel-baseline=none",
        "-p", "no:cacheprovider",
    )
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["13 metrics recorded, 13 passed, 0 failed."])


def test_a_rebuilt_regressed_twin_fails_against_the_rebuilt_fine_tuned_baseline(pytester: pytest.Pytester, suite, rebuilt_bpe) -> None:
    """The regressed twin clears the absolute bars (above) but a baseline recorded on its own
    fine-tuned model stops it: the demo's story holds for any rebuild, not only the shipped bits."""
    baseline = pytester.path / "rebuilt-baseline.json"
    common = (str(suite / "test_perplexity.py"), f"--base-model={rebuilt_bpe.base}", f"--ftmodel-baseline={baseline}")
    recorded = pytester.runpytest_subprocess(*common, f"--model={rebuilt_bpe.finetuned}", "--ftmodel-update-baseline")
    assert recorded.ret == 0, recorded.stdout.str()
    result = pytester.runpytest_subprocess(*common, f"--model={rebuilt_bpe.regressed}")
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    result.stdout.fnmatch_lines(["*perplexity regressed against the baseline: *"])


@pytest.mark.slow  # the default run above evaluates the same checkpoints
def test_example_suite_passes_for_the_fine_tuned_model_given_explicitly(pytester: pytest.Pytester, suite, bpe_pair) -> None:
    result = pytester.runpytest_subprocess(str(suite), f"--model={bpe_pair.finetuned}", f"--base-model={bpe_pair.base}")
    assert result.ret == 0, result.stdout.str()


def test_example_suite_fails_for_the_base_model(pytester: pytest.Pytester, suite, bpe_pair) -> None:
    result = pytester.runpytest_subprocess(str(suite), f"--model={bpe_pair.base}", f"--base-model={bpe_pair.base}")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    outcomes = result.parseoutcomes()
    assert outcomes["failed"] >= 2
    result.stdout.fnmatch_lines(["*perplexity * is above the bar*"])
    result.stdout.fnmatch_lines(["*perplexity regressed against the baseline: *", "*--ftmodel-update-baseline"])


@pytest.mark.parametrize("family", [pytest.param("byte", marks=pytest.mark.slow), "bpe"])  # byte: slow, the same command
def test_the_command_the_demo_command_prints_passes(pytester: pytest.Pytester, suite, family, request) -> None:
    """`pytest-ftmodel demo DIR` ends with the command to run; run it, as printed, in the checkout."""
    request.getfixturevalue(f"{family}_pair")  # built once for the session; the command copies it
    out = pytester.path / "demo"
    printed = subprocess.run(
        [sys.executable, "-m", "pytest_ftmodel", "demo", str(out), "--family", family],
        capture_output=True, text=True, check=True, timeout=600,
    ).stdout
    [command] = [line.removeprefix("run: ") for line in printed.splitlines() if line.startswith("run: ")]
    words = command.split()
    assert words[:2] == ["pytest", "example_suite"] and f"{out}/{family}/finetuned" in words
    result = pytester.runpytest_subprocess(*words[1:])  # pytester's directory holds example_suite/
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["*metrics recorded, * passed, 0 failed.", f"baseline *ftmodel-baseline.{family}.json*: 10 within noise"])
