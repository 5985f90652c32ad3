"""The `ftmodel` and `base_model` fixtures: lazy, session-scoped, and never a silent pass."""

from __future__ import annotations

import shutil

import pytest

COUNTING_CONFTEST = """
import pytest
import pytest_ftmodel.model as m

CALLS = []
_real = m.load_model

def counting(*args, **kwargs):
    CALLS.append(args[0])
    return _real(*args, **kwargs)

m.load_model = counting

def pytest_sessionfinish(session):
    print(f"\\nload_model called {len(CALLS)} time(s)")
"""


def test_ftmodel_without_model_option_errors_naming_the_flag(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_gate(ftmodel):\n    pass\n")
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*the `ftmodel` fixture needs a model: pass --model PATH or set ftmodel_model in the ini file*"])


def test_base_model_without_option_errors_naming_the_flag(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_gate(base_model):\n    pass\n")
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*the `base_model` fixture needs a model: pass --base-model PATH*"])


def test_fixtures_load_once_per_session_and_lazily(pytester: pytest.Pytester, bpe_pair) -> None:
    pytester.makeconftest(COUNTING_CONFTEST)
    pytester.makepyfile(
        test_a="""
        SEEN = []

        def test_no_model_needed():
            pass

        def test_one(ftmodel, base_model):
            SEEN.append(id(ftmodel))
            assert not ftmodel.model.training and not base_model.model.training
            assert ftmodel.fingerprint != base_model.fingerprint
        """,
        test_b="""
        from test_a import SEEN

        def test_two(ftmodel):
            assert SEEN == [id(ftmodel)]
        """,
    )
    result = pytester.runpytest("-s", "--model", str(bpe_pair.finetuned), "--base-model", str(bpe_pair.base))
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["load_model called 2 time(s)"])


def test_lazy_fixtures_load_nothing_when_no_test_uses_them(pytester: pytest.Pytester, bpe_pair) -> None:
    pytester.makeconftest(COUNTING_CONFTEST)
    pytester.makepyfile("def test_plain():\n    pass\n")
    result = pytester.runpytest("-s", "--model", str(bpe_pair.finetuned))
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["load_model called 0 time(s)"])


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_corrupt_weights_error_every_test_with_one_line_and_load_once(pytester: pytest.Pytester, bpe_pair) -> None:
    broken = _copy(bpe_pair.finetuned, pytester.path / "broken")
    (broken / "model.safetensors").write_bytes(b"\x00\x01 definitely not safetensors")
    pytester.makeconftest(COUNTING_CONFTEST)
    pytester.makepyfile("def test_a(ftmodel):\n    pass\n\ndef test_b(ftmodel):\n    pass\n")
    result = pytester.runpytest("-s", "--model", str(broken))
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["load_model called 1 time(s)"])
    # one line per test error section (the short summary repeats them, truncated or not under CI)
    errors = [line for line in result.stdout.lines if line.startswith("weights in") and "failed to load" in line]
    assert len(errors) == 2, result.stdout.str()
    assert "model.safetensors" in errors[0]
    assert "Traceback" not in result.stdout.str()


def test_broken_tokenizer_names_the_tokenizer(pytester: pytest.Pytester, bpe_pair) -> None:
    broken = _copy(bpe_pair.finetuned, pytester.path / "broken")
    (broken / "tokenizer.json").write_text("{ this is not json")
    pytester.makepyfile("def test_a(ftmodel):\n    pass\n")
    result = pytester.runpytest("--model", str(broken))
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*tokenizer in '*broken' failed to load: *"])
