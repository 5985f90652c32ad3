"""Start-up stays cheap: the plugin imports neither torch nor transformers (nor numpy)."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "numpy")


def test_importing_the_plugin_imports_no_heavy_package() -> None:
    code = "import sys, pytest_ftmodel.plugin, pytest_ftmodel; print(sorted(m for m in %r if m in sys.modules))" % (HEAVY,)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_suite_that_uses_no_fixture_never_imports_torch(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import sys

        def test_plain():
            assert 1 + 1 == 2

        def test_torch_absent():
            assert "torch" not in sys.modules and "transformers" not in sys.modules

        def test_nothing_else_heavy_or_unused():
            loaded = [m for m in ("numpy", "pytest_ftmodel.sandbox", "pytest_ftmodel.human") if m in sys.modules]
            assert loaded == []
        """
    )
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=3)


def test_the_plugin_is_registered_through_its_entry_point(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--trace-config", "--co")
    result.stdout.fnmatch_lines(["*ftmodel*pytest_ftmodel*plugin.py*"])


def test_every_public_name_resolves() -> None:
    import pytest_ftmodel

    missing = [name for name in pytest_ftmodel.__all__ if getattr(pytest_ftmodel, name, None) is None]
    assert missing == [] and "load_model" in dir(pytest_ftmodel)
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        pytest_ftmodel.nope  # noqa: B018
