"""The embedded demo models: deterministic, cached, and the fine-tuned one measurably better."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_ftmodel import demo, load_model, perplexity, texts_of


def test_fine_tuned_demo_beats_base_on_validation_data(demo_pair) -> None:
    val = texts_of(demo.demo_data()["val"])
    tuned = perplexity(load_model(demo_pair.finetuned, device="cpu"), val)
    base = perplexity(load_model(demo_pair.base, device="cpu"), val)
    assert tuned.perplexity < 0.5 * base.perplexity
    assert tuned.interval[1] < base.interval[0]  # the intervals do not even overlap


def test_demo_writes_a_trainer_state_log(demo_pair) -> None:
    state = json.loads((demo_pair.finetuned / "trainer_state.json").read_text())
    losses = [h["loss"] for h in state["log_history"] if "loss" in h]
    evals = [h["eval_loss"] for h in state["log_history"] if "eval_loss" in h]
    assert losses[-1] < losses[0] / 2 and len(evals) >= 4
    assert state["best_metric"] == min(evals)


def test_data_is_deterministic_and_validation_is_disjoint_from_training() -> None:
    a, b = demo.demo_data(), demo.demo_data()
    assert a == b
    train = {r["instruction"] for r in a["train"]}
    assert not train & {r["instruction"] for r in a["val"]}
    assert {r["category"] for r in a["train"]} == {"summarize", "classify", "code", "json"}
    for problem in a["problems"]:
        solution = next(r["output"] for r in a["train"] if r["instruction"] == problem["prompt"])
        exec(solution + "\n" + problem["test_code"], {})  # noqa: S102 - the reference solutions pass


def _quick(family: str):
    """The family's recipe cut to a few steps: a rebuild's machinery in a second, not its quality."""
    import dataclasses

    return dataclasses.replace(demo.RECIPES[family], base_steps=4, finetune_steps=6, regressed_steps=3)


def test_a_rebuild_is_deterministic(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(demo.RECIPES, "bpe", _quick("bpe"))
    one = demo.build_demo("bpe", tmp_path / "one", rebuild=True)
    two = demo.build_demo("bpe", tmp_path / "two", rebuild=True)
    other = demo.build_demo("bpe", tmp_path / "other", rebuild=True, seed=demo.SEED + 1)
    for which in ("base", "finetuned", "regressed"):
        weights = [(getattr(pair, which) / "model.safetensors").read_bytes() for pair in (one, two, other)]
        assert weights[0] == weights[1]  # same seed, same releases, same machine: the same bits
        assert weights[0] != weights[2]  # the seed reaches the weights


def test_the_demo_is_the_shipped_one_whatever_the_library_versions(monkeypatch) -> None:
    """A new torch or transformers release trains other bits from the same recipe; the demo the example
    suite evaluates must not move with it (nor be trained at all)."""
    from importlib import metadata

    def refuse(*args, **kwargs):
        raise AssertionError("trained a demo model where the shipped one was asked for")

    real_version = metadata.version
    monkeypatch.setattr(metadata, "version", lambda name: "99.0" if name in ("torch", "transformers", "tokenizers") else real_version(name))
    monkeypatch.setattr(demo, "_build_family", refuse)
    for family in demo.FAMILIES:
        pair = demo.build_demo(family)
        assert pair == demo.shipped_demo(family)
        package = Path(demo.__file__).resolve().parent
        assert pair.finetuned.is_relative_to(package) and (pair.finetuned / "model.safetensors").is_file()
        assert (pair.regressed / "model.safetensors").is_file() and (pair.base / "tokenizer.json").is_file()
    assert demo.demo_data_dir().is_relative_to(Path(demo.__file__).resolve().parent)


def test_the_shipped_data_is_what_the_builder_makes() -> None:
    from pytest_ftmodel import load_jsonl

    made = demo.demo_data()
    for name in ("train", "val", "problems"):
        assert load_jsonl(demo.demo_data_dir() / f"{name}.jsonl") == made[name]


def test_a_rebuild_in_the_cache_is_reused_without_training(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PYTEST_FTMODEL_CACHE", str(tmp_path))
    monkeypatch.setitem(demo.RECIPES, "byte", _quick("byte"))
    first = demo.build_demo("byte", rebuild=True, seed=7)
    assert first.finetuned.is_relative_to(tmp_path) and (first.regressed / "config.json").is_file()

    def refuse(*args, **kwargs):
        raise AssertionError("rebuilt a cached demo model")

    monkeypatch.setattr(demo, "_build_family", refuse)
    assert demo.build_demo("byte", rebuild=True, seed=7) == first


def test_recipe_hash_changes_with_the_data_and_the_seed(monkeypatch) -> None:
    before = demo.recipe_hash()
    assert demo.recipe_hash(demo.SEED + 1) != before
    monkeypatch.setattr(demo, "SEED", demo.SEED + 1)
    assert demo.recipe_hash() != before


def test_unknown_family_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown demo family 'gpt'"):
        demo.build_demo("gpt")


def test_train_plain_trains_a_checkpoint_further_and_saves_it_with_its_tokenizer(bpe_pair, tmp_path) -> None:
    # the bpe family: its tokenizer's start token (<s>) goes in front of every plain text
    texts = ["The red fox jumped over the tall fence.", "A blue bird sang on the roof."]
    out = demo.train_plain(bpe_pair.base, texts, tmp_path / "more", steps=10)
    assert out == tmp_path / "more" and json.loads((out / "trainer_state.json").read_text())["global_step"] == 10
    tuned = load_model(out, device="cpu")  # model and tokenizer, loaded back as a user would
    assert tuned.tokenizer.bos_token == "<s>" and tuned.tokenizer.chat_template
    before = perplexity(load_model(bpe_pair.base, device="cpu"), texts).perplexity
    assert perplexity(tuned, texts).perplexity < before / 2


def test_train_plain_refuses_nothing_to_train_on(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"train_plain: needs texts and steps >= 1 \(got 0 texts, steps=30\)"):
        demo.train_plain(demo.shipped_demo("byte").base, [], tmp_path / "x")


def test_demo_command_copies_the_shipped_models_into_a_folder_and_prints_paths(tmp_path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pytest_ftmodel", "demo", str(tmp_path), "--family", "bpe"],
        capture_output=True, text=True, check=True, timeout=300,
    ).stdout
    assert f"bpe/base:      {tmp_path}/bpe/base\n" in out
    assert f"bpe/finetuned: {tmp_path}/bpe/finetuned\n" in out
    assert load_model(tmp_path / "bpe" / "finetuned", device="cpu").kind == "checkpoint"
    shipped = demo.shipped_demo("bpe")
    for which in ("base", "finetuned", "regressed"):
        assert (tmp_path / "bpe" / which / "model.safetensors").read_bytes() == (
            shipped.finetuned.parent / which / "model.safetensors"
        ).read_bytes()
    assert (tmp_path / "data" / "val.jsonl").is_file()


def test_demo_command_refuses_a_seed_without_rebuild(tmp_path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest_ftmodel", "demo", str(tmp_path), "--seed", "3"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "pytest-ftmodel demo: --seed sets the training seed of a rebuild: add --rebuild"
    ]
    assert not (tmp_path / "bpe").exists()


def test_a_build_says_what_it_is_doing(tmp_path, capfd) -> None:
    """A build takes seconds: it prints its progress (stage, step, loss) rather than hanging silently."""
    import dataclasses

    quick = dataclasses.replace(demo.RECIPES["bpe"], base_steps=4, finetune_steps=4)
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(demo.RECIPES, "bpe", quick)
        demo._build_family("bpe", tmp_path)
    err = capfd.readouterr().err
    assert "pytest-ftmodel demo: building the bpe demo models" in err
    assert "bpe base: step 4/4, loss" in err and "bpe fine-tuning: step 4/4, loss" in err
    assert "bpe demo models built in" in err


def test_demo_models_have_a_realistic_context(demo_pair) -> None:
    model = load_model(demo_pair.finetuned, device="cpu")
    assert model.context_length >= 512
    assert model.tokenizer.model_max_length == model.context_length


def test_the_fine_tuned_demo_learned_its_tasks(demo_pair) -> None:
    """Both families pass the example suite's task bars by a margin, not by luck of one item."""
    from pytest_ftmodel import classify, rouge

    model = load_model(demo_pair.finetuned, device="cpu")
    val = demo.demo_data()["val"]
    reviews = [r for r in val if r["category"] == "classify"]
    assert classify(model, reviews, list(demo.LABELS)).accuracy >= 0.9
    assert rouge(model, [r for r in val if r["category"] == "summarize"], max_new_tokens=48).rouge1 >= 0.5


def test_the_regressed_variant_is_worse_item_by_item(bpe_pair) -> None:
    """The same fine-tuning run saved early: its answers are less likely on validation data and its
    summaries and labels no better (tests/test_score_cache.py runs the example suite on it: green)."""
    from pytest_ftmodel import classify, rouge

    tuned, regressed = (load_model(p, device="cpu") for p in (bpe_pair.finetuned, bpe_pair.regressed))
    val = demo.demo_data()["val"]
    ppl = {m: perplexity(m, val, chat="auto") for m in (tuned, regressed)}
    assert ppl[regressed].perplexity > 1.03 * ppl[tuned].perplexity
    worse = sum(r.per_token > t.per_token for r, t in zip(ppl[regressed].per_text, ppl[tuned].per_text))
    assert worse >= 0.65 * len(val)
    summaries = [r for r in val if r["category"] == "summarize"]
    reviews = [r for r in val if r["category"] == "classify"]
    r_rouge, t_rouge = (rouge(m, summaries, max_new_tokens=48).rouge1 for m in (regressed, tuned))
    assert r_rouge < t_rouge
    r_acc, t_acc = (classify(m, reviews, list(demo.LABELS)).accuracy for m in (regressed, tuned))
    assert r_acc <= t_acc
    state = json.loads((bpe_pair.regressed / "trainer_state.json").read_text())
    assert state["global_step"] == demo.RECIPES["bpe"].regressed_steps < demo.RECIPES["bpe"].finetune_steps
