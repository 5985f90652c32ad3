"""The cache's default place: ``<rootdir>/.pytest_cache/d/ftmodel`` whether or not pytest's
cacheprovider is on (runs with and without it share their entries), and never inside a model folder:
when the rootdir is a model folder or inside one, the user's cache folder, said in the header."""

from __future__ import annotations

import shutil

import pytest

from pytest_ftmodel.model import cache_root
from pytest_ftmodel.plugin import default_cache_dir

pytest_plugins = "pytester"

GATE = """
from pytest_ftmodel import perplexity

def test_scores(ftmodel):
    assert perplexity(ftmodel, ["The cat sat on the mat.", "A dog ran home."]).n_texts == 2
"""


def test_runs_with_and_without_the_cacheprovider_share_one_cache(pytester: pytest.Pytester, bpe_pair) -> None:
    pytester.makepyfile(GATE)
    where = pytester.path / ".pytest_cache" / "d" / "ftmodel"
    off = pytester.runpytest(f"--model={bpe_pair.finetuned}", "-p", "no:cacheprovider")
    off.assert_outcomes(passed=1)
    off.stdout.fnmatch_lines([f"score cache: 0 hits, 2 misses ({where})"])
    on = pytester.runpytest(f"--model={bpe_pair.finetuned}")
    on.stdout.fnmatch_lines([f"score cache: 2 hits, 0 misses ({where})"])
    again = pytester.runpytest(f"--model={bpe_pair.finetuned}", "-p", "no:cacheprovider")
    again.stdout.fnmatch_lines([f"score cache: 2 hits, 0 misses ({where})"])
    assert not (pytester.path / ".pytest_cache" / "ftmodel").exists()


# stores an answer in the session's cache, or finds the one an earlier run stored (no model needed)
STORE = """
from pytest_ftmodel.cache import active_cache

def test_store():
    cache = active_cache()
    if cache.get("k" * 64) is None:
        cache.put("k" * 64, ["an answer"])
"""


def test_a_model_folder_is_never_written_into(pytester: pytest.Pytester, bpe_pair, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("PYTEST_FTMODEL_CACHE", str(tmp_path / "user"))  # read before $XDG_CACHE_HOME/pytest-ftmodel
    user = cache_root() / "cache"
    model = pytester.path / "checkpoint"
    shutil.copytree(bpe_pair.finetuned, model)
    before = {p.relative_to(model) for p in model.rglob("*")}
    # the rootdir is the model folder, then a folder inside it: one cache, outside the model, shared
    for rootdir, counts in ((model, "0 hits, 1 misses"), (model / "eval", "1 hits, 0 misses")):
        rootdir.mkdir(exist_ok=True)
        (rootdir / "test_store.py").write_text(STORE)
        (rootdir / "pytest.ini").write_text("[pytest]\n")
        monkeypatch.chdir(rootdir)
        result = pytester.runpytest(f"--model={model}", "-p", "no:cacheprovider", str(rootdir))
        result.assert_outcomes(passed=1)
        result.stdout.fnmatch_lines([
            f"ftmodel cache: {user} (the rootdir {rootdir} is inside the model folder {model}, which is never written to)",
            f"generation cache: {counts} ({user})",
        ])
    new = [p.relative_to(model) for p in model.rglob("*") if p.relative_to(model) not in before]
    assert not [p for p in new if p.suffix == ".json" or ".pytest_cache" in p.parts], new
    assert len(list((user / "generations").rglob("*.json"))) == 1


def test_default_cache_dir_rule(tmp_path) -> None:
    model = tmp_path / "runs" / "final"
    assert default_cache_dir(tmp_path / "project", [model]) == (tmp_path / "project" / ".pytest_cache" / "d" / "ftmodel", None)
    # a model folder inside the rootdir is fine: the cache is not inside it
    assert default_cache_dir(tmp_path, [model])[1] is None
    for rootdir in (model, model / "eval" / "tests"):
        path, note = default_cache_dir(rootdir, [tmp_path / "elsewhere", model])
        assert note is not None and model not in path.parents and path.name == "cache"
