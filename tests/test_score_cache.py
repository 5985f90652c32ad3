"""Per-item scores are cached like answers: a warm run gives the same bits without running the model."""

from __future__ import annotations

import json

import pytest

from pytest_ftmodel import demo, load_model, overfit_report, perplexity, texts_of
from pytest_ftmodel.cache import CacheWarning, GenerationCache

VAL = demo.demo_data()["val"]
TEXTS = texts_of(VAL[:6])


@pytest.fixture
def model(bpe_model):
    """The session's fine-tuned bpe demo with a forward hook that counts the rows it scores; its
    in-memory memo emptied, so that only the disk cache can spare the model."""
    rows: list[int] = []
    handle = bpe_model.model.register_forward_pre_hook(lambda mod, args, kwargs: rows.append(int(kwargs["input_ids"].shape[0])), with_kwargs=True)
    bpe_model.memo.clear()
    bpe_model.rows = rows
    yield bpe_model
    handle.remove()
    bpe_model.memo.clear()


def _per_item(result):
    return [(s.nll, s.n_tokens, s.n_bytes, s.n_words) for s in result.per_text]


def test_a_warm_call_gives_identical_results_without_a_forward_pass(model, tmp_path) -> None:
    cache = GenerationCache(tmp_path)
    cold = perplexity(model, TEXTS, cache=cache)
    assert model.rows and (cache.scores.hits, cache.scores.misses) == (0, 6)
    model.memo.clear()
    model.rows.clear()
    warm = perplexity(model, TEXTS, cache=cache)
    assert model.rows == [] and (cache.scores.hits, cache.scores.misses) == (6, 6)
    assert warm == cold and _per_item(warm) == _per_item(cold)  # bit for bit, texts and interval too
    # instruction records under the chat template (the overfit losses' path) as well
    first = overfit_report(model, VAL[:8], VAL[8:], answers=False, cache=cache)
    model.memo.clear()
    model.rows.clear()
    again = overfit_report(model, VAL[:8], VAL[8:], answers=False, cache=cache)
    assert model.rows == [] and again == first


def test_a_model_that_was_never_loaded_is_not_loaded_on_hits(bpe_pair, tmp_path) -> None:
    from pytest_ftmodel.model import load_or_defer

    cache = GenerationCache(tmp_path)
    loaded = load_or_defer(bpe_pair.finetuned, device="cpu", memory=cache)  # first time: loads, remembers
    assert loaded.loaded
    cold = perplexity(loaded, TEXTS, cache=cache)
    calls: list[int] = []
    again = load_or_defer(bpe_pair.finetuned, device="cpu", memory=cache)
    assert not again.loaded and again.fingerprint == loaded.fingerprint and (again.device, again.dtype) == ("cpu", "float32")
    real_loader = again._loader
    again._loader = lambda: calls.append(1) or real_loader()
    assert perplexity(again, TEXTS, cache=cache) == cold
    assert calls == [] and not again.loaded
    # a miss loads it, once
    perplexity(again, TEXTS + ["A text not seen before."], cache=cache)
    assert calls == [1] and again.loaded


@pytest.mark.parametrize(
    "change",
    [
        {"max_length": 16},
        {"max_length": 16, "stride": 4},
        {"windows": "lm-eval", "max_length": 16},
        {"texts": [t + "!" for t in TEXTS]},
        {"dtype": "bfloat16"},
        {"model": "base"},
        {"items": "records", "chat": False},
    ],
    ids=lambda c: "+".join(c),
)
def test_every_setting_item_and_model_is_part_of_the_key(model, bpe_pair, tmp_path, change) -> None:
    cache = GenerationCache(tmp_path)
    records = change.get("items") == "records"
    first_items = VAL[:6] if records else TEXTS
    perplexity(model, first_items, chat="auto" if records else False, cache=cache)
    other = model
    if "dtype" in change:
        other = load_model(bpe_pair.finetuned, device="cpu", dtype=change["dtype"])
    elif "model" in change:
        other = load_model(bpe_pair.base, device="cpu")
    settings = {k: v for k, v in change.items() if k in ("max_length", "stride", "windows", "chat")}
    perplexity(other, change.get("texts", first_items), cache=cache, **settings)
    assert (cache.scores.hits, cache.scores.misses) == (0, 12)


def test_plain_texts_share_entries_whatever_chat_says(model, tmp_path) -> None:
    """chat shapes only the context of pairs and records; a text scores the same either way."""
    cache = GenerationCache(tmp_path)
    perplexity(model, TEXTS, chat=False, cache=cache)
    perplexity(model, TEXTS, chat="auto", cache=cache)
    assert (cache.scores.hits, cache.scores.misses) == (6, 6)


def test_partial_hits_score_only_the_misses_and_equal_the_cold_result(model, tmp_path) -> None:
    cache = GenerationCache(tmp_path)
    perplexity(model, TEXTS[::2], cache=cache)  # half the texts are cached
    model.memo.clear()
    model.rows.clear()
    mixed = perplexity(model, TEXTS, cache=cache)
    assert sum(model.rows) == 3 and (cache.scores.hits, cache.scores.misses) == (3, 6)  # one window per short text
    model.memo.clear()
    cold = perplexity(model, TEXTS, cache=None)
    assert mixed.texts == cold.texts and [s.n_tokens for s in mixed.per_text] == [s.n_tokens for s in cold.per_text]
    # other batches, same numbers up to float tolerance (the scoring rule: padding is masked)
    assert [s.nll for s in mixed.per_text] == pytest.approx([s.nll for s in cold.per_text], rel=1e-6)


def test_scores_finished_before_a_ctrl_c_are_kept_in_the_cache(model, tmp_path) -> None:
    cache = GenerationCache(tmp_path)
    forwards: list[int] = []

    def ctrl_c_at_the_second_batch(module, args, kwargs):
        forwards.append(1)
        if len(forwards) == 2:
            raise KeyboardInterrupt

    handle = model.model.register_forward_pre_hook(ctrl_c_at_the_second_batch, with_kwargs=True)
    try:
        with pytest.raises(KeyboardInterrupt):
            perplexity(model, TEXTS, batch_size=2, cache=cache)
    finally:
        handle.remove()
    assert len(sorted((tmp_path / "scores").rglob("*.json"))) == 2  # the first batch: one window per short text
    model.memo.clear()
    model.rows.clear()
    resumed = perplexity(model, TEXTS, batch_size=2, cache=cache)
    assert sum(model.rows) == 4 and cache.scores.hits == 2  # only what the interrupted run did not finish
    model.memo.clear()
    assert resumed == perplexity(model, TEXTS, batch_size=2, cache=None)  # the kept scores are the scores


def test_a_corrupt_or_foreign_entry_is_ignored_with_a_warning_and_rebuilt(model, tmp_path) -> None:
    cache = GenerationCache(tmp_path)
    cold = perplexity(model, TEXTS, cache=cache)
    files = sorted((tmp_path / "scores").rglob("*.json"))
    assert len(files) == 6
    files[0].write_text("{ truncated")
    data = json.loads(files[1].read_text())
    files[1].write_text(json.dumps({**data, "score": {**data["score"], "nll": "12"}}))  # a wrong type
    model.memo.clear()
    model.rows.clear()
    with pytest.warns(CacheWarning, match=r"ignoring score cache file .*: corrupt or written for another key; it will be rebuilt"):
        again = perplexity(model, TEXTS, cache=cache)
    assert sum(model.rows) == 2 and cache.scores.rebuilt == 2
    assert [s.nll for s in again.per_text] == pytest.approx([s.nll for s in cold.per_text], rel=1e-6)
    assert [p[1:] for p in _per_item(again)] == [p[1:] for p in _per_item(cold)]
    model.memo.clear()
    model.rows.clear()
    assert perplexity(model, TEXTS, cache=cache) == again and model.rows == []


def test_bad_items_still_get_their_one_line_with_the_cache_on(model, tmp_path) -> None:
    from pytest_ftmodel.errors import DataError

    cache = GenerationCache(tmp_path)
    with pytest.raises(DataError, match="no texts to score"):
        perplexity(model, [], cache=cache)
    with pytest.raises(DataError, match="text 1 is int"):
        perplexity(model, ["fine", 3], cache=cache)
    with pytest.raises(DataError, match="yields no token to score"):
        perplexity(model, ["fine", ""], cache=cache)


# ---- through pytest ---------------------------------------------------------------------------

GATE = """
from pytest_ftmodel import assert_perplexity_below, demo, texts_of

def test_ppl(ftmodel):
    assert_perplexity_below(ftmodel, texts_of(demo.demo_data()["val"][:6]), 1000.0)
"""

REPORT_IMPORTS = """
import sys

HEAVY = ("torch", "transformers", "rouge_score", "nltk", "sklearn", "scipy.stats", "jsonschema", "sacrebleu")

def pytest_sessionfinish(session):
    print(f"\\ntransformers imported: {'transformers' in sys.modules}")
    print(f"heavy libraries imported: {', '.join(m for m in HEAVY if m in sys.modules) or 'none'}")
"""


def test_a_warm_session_loads_no_model_and_no_cache_disables_it(pytester: pytest.Pytester, bpe_pair) -> None:
    pytester.makepyfile(GATE)
    pytester.makepyfile(imports_probe=REPORT_IMPORTS)
    args = [f"--model={bpe_pair.finetuned}", "-p", "imports_probe", "-s"]
    cold = pytester.runpytest_subprocess(*args)
    cold.assert_outcomes(passed=1)
    cold.stdout.fnmatch_lines(["transformers imported: True", "score cache: 0 hits, 6 misses (*ftmodel)"])
    warm = pytester.runpytest_subprocess(*args)
    warm.assert_outcomes(passed=1)
    warm.stdout.fnmatch_lines(["transformers imported: False", "score cache: 6 hits, 0 misses (*ftmodel)"])
    off = pytester.runpytest_subprocess(*args, "--ftmodel-no-cache")
    off.assert_outcomes(passed=1)
    assert "score cache" not in off.stdout.str()
    off.stdout.fnmatch_lines(["transformers imported: True"])


TWO_GATES = GATE + """

def test_ppl_again(ftmodel):
    assert_perplexity_below(ftmodel, texts_of(demo.demo_data()["val"][6:12]), 1000.0)
"""


@pytest.mark.slow  # three pytest processes under xdist; the counts' merge is checked in test_report_xdist
def test_xdist_workers_counts_add_up(pytester: pytest.Pytester, bpe_pair) -> None:
    pytest.importorskip("xdist")
    pytester.makepyfile(TWO_GATES)
    args = [f"--model={bpe_pair.finetuned}", "-n", "2", "-p", "no:randomly"]
    pytester.runpytest_subprocess(*args).stdout.fnmatch_lines(["score cache: 0 hits, 12 misses (*)"])
    pytester.runpytest_subprocess(*args).stdout.fnmatch_lines(["score cache: 12 hits, 0 misses (*)"])


def test_the_example_suite_passes_on_the_regressed_demo_and_a_warm_rerun_runs_no_model(pytester: pytest.Pytester, bpe_pair) -> None:
    """The regressed demo clears every absolute bar (a regression gate, not a bar, must stop it); the
    same run again takes every score and answer from the cache and never loads a model."""
    import shutil
    from pathlib import Path

    shutil.copytree(Path(__file__).resolve().parent.parent / "example_suite", pytester.path / "example_suite", ignore=shutil.ignore_patterns("__pycache__"))
    pytester.makepyfile(imports_probe=REPORT_IMPORTS)
    # the absolute bars alone: --ftmodel-baseline=none turns the comparison off
    args = [
        "example_suite", f"--model={bpe_pair.regressed}", f"--base-model={bpe_pair.base}", "-p", "imports_probe", "-s",
        "--ftmodel-baseline=none",
    ]
    cold = pytester.runpytest_subprocess(*args, "--ftmodel-json=cold.json")
    assert cold.ret == 0, cold.stdout.str()
    cold.stdout.fnmatch_lines(["*metrics recorded, * passed, 0 failed."])
    warm = pytester.runpytest_subprocess(*args, "--ftmodel-json=warm.json")
    assert warm.ret == 0, warm.stdout.str()
    warm.stdout.fnmatch_lines(["transformers imported: False", "generation cache: * hits, 0 misses (*)", "score cache: * hits, 0 misses (*)"])
    # nor does it import the metric libraries (ROUGE, classification scores come from the cache too)
    warm.stdout.fnmatch_lines(["heavy libraries imported: none"])

    def figures(name: str) -> list[tuple[str, str, float]]:
        records = json.loads((pytester.path / name).read_text())["records"]
        return [(r["test"], r["name"], r["value"]) for r in records]

    # equal to float rounding: an item that appears twice is scored twice cold (in other batches),
    # once for the cache
    cold_figures, warm_figures = figures("cold.json"), figures("warm.json")
    assert [f[:2] for f in warm_figures] == [f[:2] for f in cold_figures] and len(cold_figures) >= 10
    assert [f[2] for f in warm_figures] == pytest.approx([f[2] for f in cold_figures], rel=1e-7)
    # against the example suite's committed baseline of the fine-tuned demo it fails as a regression
    # (from the cache: nothing runs again)
    compared = pytester.runpytest_subprocess(*args[:-1])
    assert compared.ret == 1, compared.stdout.str()
    compared.stdout.fnmatch_lines(["*regressed against the baseline*", "baseline *ftmodel-baseline.bpe.json*regressed*"])
    compared.stdout.fnmatch_lines(["heavy libraries imported: none"])  # the comparisons need no scipy.stats
