"""Test set-up: the shipped demo models; a cache of the session's own for rebuilds and generations."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

# One thread per test process (and per pytest run a test starts): the suite runs under pytest-xdist with a
# worker per core, where torch's default of a thread per core oversubscribes the machine (tiny models gain
# nothing from threads; on 2 cores under load two threads each ran many times slower than one).
os.environ.setdefault("OMP_NUM_THREADS", "1")

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


def _build(config: pytest.Config, family: str, **rebuild):
    """A copy of the shipped demo pair in the session's cache folder (as `pytest-ftmodel demo DIR` puts
    it: a model outside any project, so that `--model PATH` written as two words in the pytest runs
    under test finds no ini file above it), or (``rebuild=True``) one trained here, with pytest's
    output capture lifted so its progress shows."""
    from pytest_ftmodel.demo import build_demo

    out = None if rebuild else os.path.join(os.environ["PYTEST_FTMODEL_CACHE"], f"shipped-demo-{os.getpid()}")
    capman = config.pluginmanager.getplugin("capturemanager")
    with capman.global_and_fixture_disabled() if capman else contextlib.nullcontext():
        return build_demo(family, out, **rebuild)


@pytest.fixture(scope="session")
def rebuilt_bpe(pytestconfig):
    """The bpe demo trained again here under another seed: the stand-in for a new torch or transformers
    release, which trains other bits from the same recipe (about 20 s of CPU, once a session)."""
    from pytest_ftmodel.demo import SEED

    return _build(pytestconfig, "bpe", rebuild=True, seed=SEED + 1)


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


def start_transformers_serve(checkpoint, *, timeout: float = 180.0):
    """Start ``transformers serve`` (transformers' own OpenAI-compatible server) on 127.0.0.1 at a free
    port, on CPU, with ``checkpoint`` preloaded; return ``(process, url)`` once it answers /health.
    Skips when the serving extra is missing (``pip install "transformers[serving]"``)."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    pytest.importorskip("fastapi", reason='transformers serve needs pip install "transformers[serving]"')
    pytest.importorskip("uvicorn", reason='transformers serve needs pip install "transformers[serving]"')
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tempfile.NamedTemporaryFile(prefix="transformers-serve-", suffix=".log", delete=False)
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    code = "import sys; from transformers.cli.transformers import main; sys.argv[0] = 'transformers'; sys.exit(main())"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "serve", str(checkpoint), "--device", "cpu", "--host", "127.0.0.1", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return proc, url + "/v1"
        except OSError:
            time.sleep(0.5)
    proc.kill()
    proc.wait()
    tail = open(log.name, encoding="utf-8", errors="replace").read()[-2000:]
    raise RuntimeError(f"transformers serve did not start within {timeout:.0f} s:\n{tail}")


@pytest.fixture(scope="session")
def transformers_server(bpe_pair):
    """One ``transformers serve`` for the whole session, serving the bpe demo's fine-tuned model."""
    proc, url = start_transformers_serve(bpe_pair.finetuned)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except Exception:  # noqa: BLE001
        proc.kill()


@pytest.fixture
def no_score_cache():
    """No per-item score from the session's disk cache: for tests of what scoring computes."""
    from pytest_ftmodel.cache import pop_cache, push_cache

    push_cache(None)
    yield
    pop_cache(None)


@pytest.fixture
def serve():
    """Starts scripted OpenAI-compatible servers on 127.0.0.1 (tests/openai_stub.py): ``serve(**behaviour)``."""
    from openai_stub import Behaviour, Stub

    stubs: list[Stub] = []

    def start(**kwargs) -> Stub:
        stubs.append(Stub(Behaviour(**kwargs)))
        return stubs[-1]

    yield start
    for s in stubs:
        try:
            s.close()
        except OSError:
            pass
