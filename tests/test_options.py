"""Options, ini twins and the start-up checks of bad input (exit code 4, one line)."""

from __future__ import annotations

import pytest

PASSING = "def test_nothing():\n    pass\n"


def _error_lines(result: pytest.RunResult) -> list[str]:
    return [line for line in result.stderr.lines if line.startswith("ERROR")]


def test_help_lists_every_option_with_its_default(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(
        [
            "fine-tuned model evaluation (pytest-ftmodel):",
            "*--model=PATH*",
            "*--base-model=PATH*",
            "*--model-device=DEVICE*",
            "*--model-dtype=DTYPE*",
        ]
    )
    text = " ".join(result.stdout.str().split())  # help text is wrapped to the terminal width
    for default in (
        "(default: ini ftmodel_model, else none)",
        "(default: ini ftmodel_base_model, else none)",
        "auto | cpu | cuda | cuda:N | mps (default: ini ftmodel_device, else auto)",
        "auto | float32 | bfloat16 | float16 (default: ini ftmodel_dtype, else auto)",
    ):
        assert default in text
    result.stdout.fnmatch_lines(["*ftmodel_model (string)*", "*ftmodel_base_model (string)*", "*ftmodel_device (string)*", "*ftmodel_dtype (string)*"])


def test_missing_model_path_exits_4_with_one_line(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(PASSING)
    result = pytester.runpytest("--model", "/does/not/exist")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = _error_lines(result)
    assert errors == ["ERROR: --model path '/does/not/exist' does not exist: pass a checkpoint directory"]
    assert "Traceback" not in result.stderr.str()


def test_directory_without_a_model_exits_4_naming_what_was_looked_for(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(PASSING)
    empty = pytester.mkdir("empty_ckpt")
    result = pytester.runpytest("--model", str(empty))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --model path '*empty_ckpt' holds no model: looked for config.json*adapter_config.json*"])


def test_a_file_instead_of_a_directory_exits_4(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(PASSING)
    weights = pytester.makefile(".safetensors", model="not a dir")
    result = pytester.runpytest("--base-model", str(weights))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --base-model path '*model.safetensors' is a file*"])


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--model-device", "gpu", "*unknown model device 'gpu': use one of auto | cpu | cuda | cuda:N | mps*"),
        ("--model-device", "cuda:x", "*unknown model device 'cuda:x'*"),
        ("--model-dtype", "fp8", "*unknown model dtype 'fp8': use one of auto | float32 | bfloat16 | float16*"),
    ],
)
def test_unknown_device_or_dtype_is_a_usage_error(pytester: pytest.Pytester, flag: str, value: str, message: str) -> None:
    pytester.makepyfile(PASSING)
    result = pytester.runpytest(flag, value)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


@pytest.mark.parametrize(
    ("ini", "message"),
    [
        ("ftmodel_device = tpu", "ERROR: unknown model device 'tpu'*"),
        ("ftmodel_dtype = int4", "ERROR: unknown model dtype 'int4'*"),
        ("ftmodel_model = missing/ckpt", "ERROR: --model path '*missing/ckpt' does not exist*"),
    ],
)
def test_bad_ini_values_are_usage_errors(pytester: pytest.Pytester, ini: str, message: str) -> None:
    pytester.makeini(f"[pytest]\n{ini}\n")
    pytester.makepyfile(PASSING)
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_valid_device_and_dtype_values_are_accepted(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(PASSING)
    result = pytester.runpytest("--model-device", "CUDA:1", "--model-dtype", "bfloat16")
    result.assert_outcomes(passed=1)


def test_options_reach_the_session_and_the_report_header(pytester: pytest.Pytester, bpe_pair) -> None:
    pytester.makepyfile(
        """
        from pytest_ftmodel.plugin import session_of

        def test_session(request):
            s = session_of(request.config)
            assert s.device == "cpu" and s.dtype == "float16"
            assert s.paths["model"].name == "finetuned" and s.paths["base_model"].name == "base"
        """
    )
    result = pytester.runpytest(
        "--model", str(bpe_pair.finetuned), "--base-model", str(bpe_pair.base), "--model-device", "cpu", "--model-dtype", "float16"
    )
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["ftmodel: model=*finetuned base_model=*base device=cpu dtype=float16 sandbox=auto"])


def test_ini_twins_set_every_option_and_paths_resolve_against_the_ini_file(pytester: pytest.Pytester, bpe_pair) -> None:
    import os

    here = pytester.path
    rel_model = os.path.relpath(bpe_pair.finetuned, here)
    rel_base = os.path.relpath(bpe_pair.base, here)
    pytester.makeini(
        f"[pytest]\nftmodel_model = {rel_model}\nftmodel_base_model = {rel_base}\n"
        "ftmodel_device = cpu\nftmodel_dtype = bfloat16\n"
    )
    pytester.makepyfile(
        """
        import torch

        def test_loaded(ftmodel, base_model):
            assert ftmodel.dtype == "bfloat16" and ftmodel.device == "cpu"
            assert next(ftmodel.model.parameters()).dtype == torch.bfloat16
            assert ftmodel.path.name == "finetuned" and base_model.path.name == "base"
        """
    )
    sub = pytester.mkdir("sub")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(sub)  # relative ini paths are relative to the ini file, not the working directory
        result = pytester.runpytest(str(here))
    result.assert_outcomes(passed=1)


def test_command_line_wins_over_ini(pytester: pytest.Pytester, bpe_pair) -> None:
    pytester.makeini("[pytest]\nftmodel_dtype = bfloat16\nftmodel_model = nowhere\n")
    pytester.makepyfile(
        """
        def test_loaded(ftmodel):
            assert ftmodel.dtype == "float32"
        """
    )
    result = pytester.runpytest(f"--model={bpe_pair.finetuned}", "--model-dtype", "float32")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["configfile: tox.ini"])  # the ini was read, and lost


def test_a_model_path_that_hides_the_ini_file_is_a_usage_error(pytester: pytest.Pytester, bpe_pair) -> None:
    """pytest picks its ini file before plugins load, reading `--model PATH`'s value as a test path."""
    pytester.makeini("[pytest]\nftmodel_device = cpu\n")
    pytester.makepyfile(PASSING)
    result = pytester.runpytest("--model", str(bpe_pair.finetuned))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: pytest read the path after --model/--base-model as a test path and so did not load *tox.ini: "
         "write the option as one word (--model=PATH), or name the tests too (pytest tests --model PATH)"]
    )
    # both fixes work, and the ini file is read
    for args in ([f"--model={bpe_pair.finetuned}"], [str(pytester.path), "--model", str(bpe_pair.finetuned)]):
        ok = pytester.runpytest(*args)
        ok.assert_outcomes(passed=1)
        ok.stdout.fnmatch_lines(["configfile: tox.ini"])
        ok.stdout.fnmatch_lines(["ftmodel: model=* device=cpu dtype=auto sandbox=*"])


# ---- library errors in a test: one line, and the short summary carries the message ---------------

EMPTY_SPLIT = """
from pytest_ftmodel import split

def test_empty_list():
    split([])
"""


@pytest.mark.parametrize("ci", [False, True])
def test_a_library_error_shows_its_message_in_the_short_summary(pytester: pytest.Pytester, monkeypatch, ci: bool) -> None:
    # off CI the short line is cut to the terminal width; on CI it is whole
    for var in ("CI", "BUILD_NUMBER"):
        monkeypatch.delenv(var, raising=False)
    if ci:
        monkeypatch.setenv("CI", "true")
    pytester.makepyfile(test_bad=EMPTY_SPLIT)
    result = pytester.runpytest("-rA")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*test_bad.py:3: DataError: cannot split 0 item(s): need at least 2",
            "*short test summary info*",
            "FAILED test_bad.py::test_empty_list - DataError: cannot split 0 item(s)*" if ci else "FAILED test_bad.py::test_empty_list - DataError: *",
        ]
    )
    assert "Traceback" not in result.stdout.str() and "def split" not in result.stdout.str()


def test_the_short_summary_message_survives_xdist(pytester: pytest.Pytester, monkeypatch) -> None:
    pytest.importorskip("xdist")
    monkeypatch.setenv("CI", "true")
    pytester.makepyfile(test_bad=EMPTY_SPLIT)
    result = pytester.runpytest_subprocess("-ra", "-n", "2", "-p", "xdist")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*test_bad.py:3: DataError: cannot split 0 item(s): need at least 2",
            "FAILED test_bad.py::test_empty_list - DataError: cannot split 0 item(s): need at least 2",
        ]
    )


# ---- a device this machine lacks: one line at start-up, not an error in every test --------------


def _missing_devices() -> list[str]:
    torch = pytest.importorskip("torch")
    missing = [] if torch.cuda.is_available() else ["cuda", "cuda:0"]
    missing.append(f"cuda:{torch.cuda.device_count() if torch.cuda.is_available() else 1}")
    if not torch.backends.mps.is_available():
        missing.append("mps")
    return missing


def test_a_device_this_machine_lacks_stops_the_run_at_start_up(pytester: pytest.Pytester, bpe_pair) -> None:
    pytester.makepyfile("def test_a(ftmodel):\n    pass\n\ndef test_b(ftmodel):\n    pass\n")
    for device in _missing_devices():
        result = pytester.runpytest(f"--model={bpe_pair.finetuned}", "--model-device", device)
        assert result.ret == pytest.ExitCode.USAGE_ERROR, device
        errors = _error_lines(result)
        assert len(errors) == 1 and errors[0].startswith(f"ERROR: model device '{device}' asked for, but "), errors
        assert "use " in errors[0] and "Traceback" not in result.stderr.str()
        assert "test_a" not in result.stdout.str()  # nothing ran


def test_the_ini_device_is_checked_too_and_only_when_a_model_is_given(pytester: pytest.Pytester, bpe_pair) -> None:
    device = _missing_devices()[0]
    pytester.makeini(f"[pytest]\nftmodel_device = {device}\n")
    pytester.makepyfile(PASSING)
    result = pytester.runpytest(f"--model={bpe_pair.finetuned}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: model device '{device}' asked for, but *"])
    # no model to load: the device does not matter, and the tests run
    pytester.runpytest().assert_outcomes(passed=1)


def test_the_dev_extra_installs_what_the_readme_runs() -> None:
    """The README's type check (`python -m mypy`) needs mypy: the `dev` extra brings it, with the tests'."""
    import re
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    root = Path(__file__).resolve().parent.parent
    extras = tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {re.split(r"[<>=\[ ]", r, maxsplit=1)[0] for r in extras["dev"]}
    assert {"mypy", "pytest-ftmodel"} <= names and "pytest-ftmodel[test]" in extras["dev"]
    readme = " ".join((root / "README.md").read_text().split())
    assert 'python -m pip install -e ".[dev]" && python -m mypy' in readme
