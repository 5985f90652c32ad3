"""Test set-up: demo models are built fresh for the session into a temporary cache."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

import pytest

_OWN_CACHE = pytest.StashKey[str]()


def pytest_configure(config: pytest.Config) -> None:
    # Tests (and the pytest subprocesses they start) build the demo models into a cache of their own,
    # never the user's; set PYTEST_FTMODEL_CACHE yourself to reuse builds across runs.
    if "PYTEST_FTMODEL_CACHE" not in os.environ:
        os.environ["PYTEST_FTMODEL_CACHE"] = tempfile.mkdtemp(prefix="ftmodel-test-cache-")
        config.stash[_OWN_CACHE] = os.environ["PYTEST_FTMODEL_CACHE"]
    if config.getoption("ftmodel_cache_dir", None) is None:
        # this suite's own generations stay out of the repository's .pytest_cache
        config.option.ftmodel_cache_dir = os.path.join(os.environ["PYTEST_FTMODEL_CACHE"], "session-generations")


def pytest_unconfigure(config: pytest.Config) -> None:
    own = config.stash.get(_OWN_CACHE, None)
    if own is not None:
        shutil.rmtree(own, ignore_errors=True)
        del os.environ["PYTEST_FTMODEL_CACHE"]


@pytest.fixture(autouse=True)
def private_record(request):
    """Each test records its metrics on a record of its own (some gates here fail on purpose), and
    can inspect it by asking for this fixture."""
    from pytest_ftmodel import report

    rec = report.push_recorder()
    rec.current_item = request.node
    yield rec
    report.pop_recorder(rec)


def _build(config: pytest.Config, family: str):
    """Build (or reuse) a demo pair with pytest's output capture lifted, so its progress shows."""
    from pytest_ftmodel.demo import build_demo

    capman = config.pluginmanager.getplugin("capturemanager")
    with capman.global_and_fixture_disabled() if capman else contextlib.nullcontext():
        return build_demo(family)


@pytest.fixture(scope="session")
def byte_pair(pytestconfig):
    return _build(pytestconfig, "byte")


@pytest.fixture(scope="session")
def bpe_pair(pytestconfig):
    return _build(pytestconfig, "bpe")


@pytest.fixture(scope="session", params=["byte", "bpe"])
def demo_pair(request):
    return request.getfixturevalue(f"{request.param}_pair")


@pytest.fixture(scope="session")
def byte_model(byte_pair):
    from pytest_ftmodel import load_model

    return load_model(byte_pair.finetuned, device="cpu")


@pytest.fixture(scope="session")
def bpe_model(bpe_pair):
    from pytest_ftmodel import load_model

    return load_model(bpe_pair.finetuned, device="cpu")


@pytest.fixture(scope="session", params=["byte", "bpe"])
def demo_model(request):
    return request.getfixturevalue(f"{request.param}_model")


try:
    from hypothesis import settings

    # model calls are slow and vary in time on shared CI machines; examples are derived, not random
    settings.register_profile("ftmodel", deadline=None, derandomize=True, max_examples=25)
    settings.load_profile("ftmodel")
except ImportError:  # pragma: no cover - hypothesis is a test extra
    pass
