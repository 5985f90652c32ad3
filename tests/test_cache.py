"""The generation cache: hits skip the model, any change of model or setting misses, files are never trusted blindly."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import pytest

from pytest_ftmodel import generate, load_model
from pytest_ftmodel import generation as gen_mod
from pytest_ftmodel.cache import CacheWarning, GenerationCache, entry_key

PROMPTS = ["Classify the sentiment: The book was lovely.", "Write a Python function add(a, b) that returns the sum of a and b."]


@pytest.fixture
def counting(monkeypatch):
    calls: list[int] = []
    from pytest_ftmodel.engines import transformers as engine_mod

    real = engine_mod._generate_batch
    monkeypatch.setattr(engine_mod, "_generate_batch", lambda model, batch, *a, **k: calls.append(len(batch)) or real(model, batch, *a, **k))
    return calls


def test_a_hit_returns_identical_text_and_skips_the_model(bpe_model, tmp_path, counting) -> None:
    cache = GenerationCache(tmp_path)
    first = generate(bpe_model, PROMPTS, max_new_tokens=24, cache=cache)
    assert counting == [2] and (cache.hits, cache.misses) == (0, 2)
    again = generate(bpe_model, PROMPTS, max_new_tokens=24, cache=cache)
    assert again == first and counting == [2] and cache.hits == 2
    # a new prompt among cached ones: only it is generated
    generate(bpe_model, PROMPTS + ["Hi"], max_new_tokens=24, cache=cache)
    assert counting == [2, 1]


@pytest.mark.parametrize(
    "change",
    [{"max_new_tokens": 25}, {"temperature": 0.5}, {"stop": ["\n"]}, {"chat": False}, {"temperature": 0.5, "seed": 1}, {"n": 2, "temperature": 0.5}],
)
def test_every_setting_is_part_of_the_key(bpe_model, tmp_path, counting, change) -> None:
    cache = GenerationCache(tmp_path)
    base = {"max_new_tokens": 24, "temperature": 0.5} if "seed" in change or "n" in change else {"max_new_tokens": 24}
    generate(bpe_model, PROMPTS, cache=cache, **base)
    generate(bpe_model, PROMPTS, cache=cache, **{**base, **change})
    assert len(counting) == 2 and cache.misses == 4


def test_the_key_covers_model_prompt_settings_and_version(monkeypatch) -> None:
    key = entry_key("fp", "p", {"a": 1})
    assert key == entry_key("fp", "p", {"a": 1})
    assert len({key, entry_key("fp2", "p", {"a": 1}), entry_key("fp", "q", {"a": 1}), entry_key("fp", "p", {"a": 2})}) == 4
    import pytest_ftmodel

    monkeypatch.setattr(pytest_ftmodel, "__version__", "99.0")
    assert entry_key("fp", "p", {"a": 1}) != key


def test_the_cache_invalidates_when_weights_change(bpe_pair, tmp_path, counting) -> None:
    from pytest_ftmodel import demo

    ckpt = shutil.copytree(bpe_pair.finetuned, tmp_path / "ckpt")
    cache = GenerationCache(tmp_path / "cache")
    before = load_model(ckpt, device="cpu")
    generate(before, PROMPTS, max_new_tokens=16, cache=cache)
    # retrain in place for a few steps, as a team re-running fine-tuning into the same folder would
    tok = before.tokenizer
    seqs = [demo.encode_example(tok, r) for r in demo.demo_data()["train"][:32]]
    demo.train(before.model, seqs, demo.RECIPES["bpe"], 5, tok.pad_token_id)
    before.model.save_pretrained(str(ckpt))
    after = load_model(ckpt, device="cpu")
    assert after.fingerprint != before.fingerprint
    generate(after, PROMPTS, max_new_tokens=16, cache=cache)
    assert counting == [2, 2] and cache.hits == 0


def test_corrupt_or_foreign_files_are_ignored_with_a_warning_and_rebuilt(bpe_model, tmp_path, counting) -> None:
    cache = GenerationCache(tmp_path)
    first = generate(bpe_model, PROMPTS, max_new_tokens=16, cache=cache)
    files = sorted((tmp_path / "generations").rglob("*.json"))
    assert len(files) == 2
    files[0].write_text("{ truncated")
    data = json.loads(files[1].read_text())
    files[1].write_text(json.dumps({**data, "key": "someone-else"}))
    with pytest.warns(CacheWarning, match="ignoring generation cache file .*: corrupt or written for another key; it will be rebuilt"):
        again = generate(bpe_model, PROMPTS, max_new_tokens=16, cache=cache)
    assert again == first and counting == [2, 2] and cache.rebuilt == 2
    assert generate(bpe_model, PROMPTS, max_new_tokens=16, cache=cache) == first and counting == [2, 2]


WRITER = textwrap.dedent(
    """
    import sys
    from pytest_ftmodel.cache import GenerationCache
    root, name = sys.argv[1], sys.argv[2]
    cache = GenerationCache(__import__("pathlib").Path(root))
    for i in range(300):
        cache.put(f"shared{i:04d}", [f"shared answer {i}"] * 3)
        cache.put(f"{name}{i:04d}", [f"{name} answer {i}"])
    """
)


def test_concurrent_writers_lose_nothing(tmp_path) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), name]) for name in ("a", "b")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    cache = GenerationCache(tmp_path)
    for i in range(300):
        assert cache.get(f"shared{i:04d}") == [f"shared answer {i}"] * 3
        assert cache.get(f"a{i:04d}") == [f"a answer {i}"]
        assert cache.get(f"b{i:04d}") == [f"b answer {i}"]
    assert cache.hits == 900 and cache.misses == 0
    assert not list(tmp_path.rglob("*.tmp"))


# ---- through pytest ---------------------------------------------------------------------------

GATE = """
from pytest_ftmodel import generate

def test_answers(ftmodel):
    assert len(generate(ftmodel, ["Hi", "Classify the sentiment: The meal was awful."], max_new_tokens=8)) == 2
"""


def test_the_session_cache_persists_across_runs_and_reports_hits(pytester: pytest.Pytester, bpe_pair) -> None:
    pytester.makepyfile(GATE)
    first = pytester.runpytest(f"--model={bpe_pair.finetuned}")
    first.assert_outcomes(passed=1)
    first.stdout.fnmatch_lines(["generation cache: 0 hits, 2 misses (*ftmodel)"])
    second = pytester.runpytest(f"--model={bpe_pair.finetuned}")
    second.stdout.fnmatch_lines([f"generation cache: 2 hits, 0 misses ({pytester.path}/.pytest_cache/d/ftmodel)"])


def test_cache_dir_option_and_ini_twin(pytester: pytest.Pytester, bpe_pair) -> None:
    pytester.makepyfile(GATE)
    pytester.runpytest(f"--model={bpe_pair.finetuned}", "--ftmodel-cache-dir", "mine").assert_outcomes(passed=1)
    assert len(list((pytester.path / "mine" / "generations").rglob("*.json"))) == 2
    pytester.makeini("[pytest]\nftmodel_cache_dir = viaini\n")
    result = pytester.runpytest(f"--model={bpe_pair.finetuned}")
    result.stdout.fnmatch_lines(["generation cache: 0 hits, 2 misses (*viaini)"])


def test_no_cache_option_and_ini_twin(pytester: pytest.Pytester, bpe_pair) -> None:
    pytester.makepyfile(GATE)
    for args, ini in ((["--ftmodel-no-cache"], ""), ([], "[pytest]\nftmodel_no_cache = true\n")):
        if ini:
            pytester.makeini(ini)
        result = pytester.runpytest(f"--model={bpe_pair.finetuned}", *args)
        result.assert_outcomes(passed=1)
        assert "generation cache" not in result.stdout.str()
    assert not (pytester.path / ".pytest_cache" / "d" / "ftmodel" / "generations").exists()
