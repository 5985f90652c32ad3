"""Overfitting: the gap from perplexity(), memorisation and diversity, the training curve."""

from __future__ import annotations

import json
import shutil

import pytest

from pytest_ftmodel import DataError, assert_no_overfit, assert_training_converged, load_model, overfit_report, perplexity, training_curve
from pytest_ftmodel import demo
from pytest_ftmodel.metrics.overfit import band, common_outputs, diversity, memorisation

DATA = demo.demo_data()


@pytest.fixture(scope="module")
def overtrained(bpe_pair, tmp_path_factory):
    """The demo base trained hard on six items: it must look overfit by every measure."""
    path = tmp_path_factory.mktemp("overfit") / "model"
    shutil.copytree(bpe_pair.base, path)
    model = load_model(path, device="cpu")
    few = [r for r in DATA["train"] if r["category"] != "code"][:6]
    seqs = [demo.encode_example(model.tokenizer, r) for r in few]
    demo.train(model.model, seqs, demo.RECIPES["bpe"], 200, model.tokenizer.eos_token_id)
    model.memo.clear()
    return model, few


def test_the_gap_is_the_difference_of_two_perplexity_nlls(byte_model) -> None:
    train, val = [r["output"] for r in DATA["train"][:40]], [r["output"] for r in DATA["val"]]
    result = overfit_report(byte_model, train, val)
    tr, va = perplexity(byte_model, train), perplexity(byte_model, val)
    assert result.gap == pytest.approx(va.nll / va.n_tokens - tr.nll / tr.n_tokens)
    assert result.ratio == pytest.approx((va.nll / va.n_tokens) / (tr.nll / tr.n_tokens))
    assert result.memorised_share is None  # plain texts: no prompts to answer


def test_records_are_scored_as_output_given_prompt(bpe_model) -> None:
    result = overfit_report(bpe_model, DATA["train"][:30], DATA["val"], answers=False)
    pairs = [(r["instruction"], r["output"]) for r in DATA["val"]]
    assert result.val.nll == pytest.approx(perplexity(bpe_model, pairs, chat="auto").nll)


def test_an_overtrained_model_shows_a_large_gap_and_copies(overtrained) -> None:
    model, few = overtrained
    result = overfit_report(model, few, DATA["val"], cache=None, max_new_tokens=48)
    assert result.gap > 1.0 and result.band == "strong overfitting" and "fewer epochs" in result.advice
    # it answers with its training outputs: distinctive ones (memorised), or the label it saw
    assert result.memorised_share >= 0.3
    assert result.memorised_share + result.n_common_answers / result.n_answers >= 0.6
    with pytest.raises(AssertionError, match=r"(?s)validation loss exceeds training loss by \d\.\d+ nats/token .* strong overfitting; .*fewer epochs"):
        assert_no_overfit(model, few, DATA["val"], max_gap=0.5, cache=None)


def test_the_normal_demo_does_not(byte_model, overtrained) -> None:
    normal = overfit_report(byte_model, DATA["train"], DATA["val"], cache=None, max_new_tokens=48)
    over = overfit_report(overtrained[0], overtrained[1], DATA["val"], cache=None, max_new_tokens=48)
    assert normal.band == "fine" and normal.gap < 0.2
    assert normal.memorised_share < 0.3 < over.memorised_share
    assert_no_overfit(byte_model, DATA["train"], DATA["val"], max_gap=0.2, max_memorised=0.3, cache=None)


def test_bands() -> None:
    assert [band(g) for g in (-0.1, 0.1, 0.2, 0.21, 0.5, 0.51, 3)] == ["fine", "fine", "fine", "some overfitting", "some overfitting", "strong overfitting", "strong overfitting"]


def test_memorisation_and_diversity_by_hand() -> None:
    train_out = ["The cat chased the ball.", "alpha beta gamma delta epsilon zeta eta theta iota"]
    answers = ["the CAT chased the ball", "The cat chased the ball.", "x alpha beta gamma delta epsilon zeta eta theta y", "new words"]
    refs = ["The dog ate the hat.", "The cat chased the ball.", "something else", "new words"]
    found = memorisation(answers, ["p"] * 4, refs, train_out, ngram=8)
    assert [(m.index, m.verbatim) for m in found] == [(0, True), (2, False)]  # item 1 is right, not a copy
    d1, d2, dup = diversity(["a b", "a b", "c d"])
    assert (d1, d2, dup) == (pytest.approx(2 / 3), pytest.approx(2 / 3), pytest.approx(1 / 3))


# Alpaca-style training data that mixes classification records with free answers.
MIXED_TRAIN = (
    [{"instruction": f"Sentiment of review {i}?", "output": label} for i, label in enumerate(["positive", "negative", "neutral"] * 5)]
    + [{"instruction": "Is this spam? Win a car now", "output": "definitely not spam"}]  # a rare label: once, three words
    + [{"instruction": f"Tell me a secret {i}", "output": "I am sorry, but I cannot share that information with you."} for i in range(3)]
    + [
        {"instruction": "Describe the lighthouse.", "output": "The old lighthouse keeper painted every stair a different shade of blue."},
        {"instruction": "Name the ship.", "output": "Its name was the Marigold Wanderer."},
        {"instruction": "Where is the key?", "output": "Under the third loose brick behind the bakery."},
        {"instruction": "Where is the key, again?", "output": "Under the third loose brick behind the bakery."},  # duplicated
        {"instruction": "Politely decline 1.", "output": "As a language model I am unable to do that for you today, friend."},
        {"instruction": "Politely decline 2.", "output": "As a language model I am unable to do that for you right now."},
        {"instruction": "Politely decline 3.", "output": "Sadly, as a language model I am unable to do that for you."},
    ]
)


def test_labels_and_template_answers_are_not_memorised_copies() -> None:
    """15 of 20 "memorised" answers of a LoRA model were wrong labels: every wrong label equals some
    training output. Neither a label nor a template answer is a copy of anything."""
    outputs = [r["output"] for r in MIXED_TRAIN]
    answers = [
        "negative",  # a wrong label (expected positive)
        "Positive.",  # a wrong label, other case and punctuation
        "definitely not spam",  # a rare label, seen once, but short
        "I am sorry, but I cannot share that information with you.",  # a template answer seen three times
        "Sure: as a language model I am unable to do that for you.",  # a phrase found in three outputs
    ]
    refs = ["positive", "neutral", "spam", "The password is swordfish.", "Here is the poem."]
    assert memorisation(answers, ["p"] * 5, refs, outputs) == []
    assert memorisation(answers, ["p"] * 5, refs, outputs, min_words=1, common=100) != []  # the rule, switched off
    assert common_outputs(outputs) == {
        "positive", "negative", "neutral", "definitely not spam", "i am sorry but i cannot share that information with you",
    }


def test_copies_of_distinctive_outputs_are_still_caught() -> None:
    outputs = [r["output"] for r in MIXED_TRAIN]
    answers = [
        "The old lighthouse keeper painted every stair a different shade of blue.",  # verbatim
        "Its name was the Marigold Wanderer!",  # verbatim, five words
        "under the third loose brick behind the bakery",  # verbatim of an output seen twice
        "Well, the old lighthouse keeper painted every stair a different colour.",  # a shared 8-gram
        "positive",  # a label: not a copy
    ]
    refs = ["x"] * 5
    found = memorisation(answers, ["p"] * 5, refs, outputs)
    assert [(m.index, m.verbatim) for m in found] == [(0, True), (1, True), (2, True), (3, False)]
    assert found[3].training_output == outputs[-7]  # the lighthouse
    with pytest.raises(DataError, match="common 1 at least 2"):
        memorisation(answers, ["p"] * 5, refs, outputs, common=1)


def test_a_classifier_that_errs_is_not_called_memorising(byte_model) -> None:
    """Through overfit_report: the demo's classification answers equal training labels whenever they
    are wrong, and are counted apart, not as memorised copies."""
    train = [r for r in DATA["train"] if r["category"] != "code"]
    val = [dict(r, output="mixed") if r["category"] == "classify" else r for r in DATA["val"] if r["category"] != "code"]
    result = overfit_report(byte_model, train, val, cache=None, max_new_tokens=24)
    labels = {"positive", "negative", "neutral"}
    n_labels = sum(1 for r in val if r["output"] == "mixed")
    assert n_labels >= 3
    assert not any(m.answer.strip().lower() in labels for m in result.memorised)
    assert result.n_common_answers >= n_labels - 1  # every "wrong" label answer but a stray one


def test_bad_input(bpe_model) -> None:
    with pytest.raises(DataError, match="train is empty"):
        overfit_report(bpe_model, [], DATA["val"])
    with pytest.raises(DataError, match="mixed texts and records"):
        overfit_report(bpe_model, ["text", DATA["train"][0]], DATA["val"])
    with pytest.raises(DataError, match="differ in shape"):
        overfit_report(bpe_model, ["a", "b"], DATA["val"])


# ---- training curve ---------------------------------------------------------------------------


def _state(tmp_path, history):
    path = tmp_path / "trainer_state.json"
    path.write_text(json.dumps({"log_history": history}))
    return path


def _train(steps, start=2.0, slope=-0.01):
    return [{"step": s, "loss": start + slope * s} for s in steps]


def _trainer_log(train: dict[int, float], evals: dict[int, float], *, final: bool = False) -> list[dict]:
    """A log_history as transformers' Trainer writes it: training entries every logging_steps and eval
    entries at their steps, interleaved by step (training entry first), and with ``final`` the
    summary entry ``trainer.train()`` appends (``train_loss``, not ``loss``)."""
    history: list[dict] = []
    last = max([*train, *evals])
    for step in sorted(set(train) | set(evals)):
        epoch = round(step / 50, 2)
        if step in train:
            history.append({"epoch": epoch, "grad_norm": 0.8, "learning_rate": 2e-4 * (1 - step / (last + 1)), "loss": train[step], "step": step})
        if step in evals:
            history.append({
                "epoch": epoch, "eval_loss": evals[step], "eval_runtime": 1.23,
                "eval_samples_per_second": 81.3, "eval_steps_per_second": 10.2, "step": step,
            })
    if final:
        history.append({
            "epoch": round(last / 50, 2), "step": last, "total_flos": 1.2e15, "train_loss": sum(train.values()) / len(train),
            "train_runtime": 301.5, "train_samples_per_second": 5.3, "train_steps_per_second": 0.66,
        })
    return history


def _trainer_run(
    root,
    train: dict[int, float],
    evals: dict[int, float],
    *,
    saved: tuple[int, ...],
    best_model_checkpoint: bool = True,
    output_dir: str = "runs/lora",
):
    """What a Trainer run leaves on disk: ``output_dir/checkpoint-N`` folders (weights, optimizer state and
    the trainer_state.json of the run so far) and ``trainer.save_model(output_dir/final)`` (no state).
    ``best_model_checkpoint`` is written as the Trainer writes it: under output_dir as it was given,
    relative to wherever training ran."""
    out = root / output_dir
    best = min(evals, key=lambda s: (evals[s], s))
    for n in saved:
        ckpt = out / f"checkpoint-{n}"
        ckpt.mkdir(parents=True)
        for name in ("config.json", "model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin"):
            (ckpt / name).write_text("{}")
        state = {
            "best_global_step": None, "best_metric": None, "best_model_checkpoint": None, "epoch": round(n / 50, 2),
            "eval_steps": 20, "global_step": n, "is_hyper_param_search": False, "is_local_process_zero": True,
            "is_world_process_zero": True, "logging_steps": 10, "max_steps": max(saved),
            "log_history": _trainer_log({s: v for s, v in train.items() if s <= n}, {s: v for s, v in evals.items() if s <= n}),
            "save_steps": 50, "total_flos": 1.0e15, "train_batch_size": 8, "trial_name": None, "trial_params": None,
        }
        seen = {s: v for s, v in evals.items() if s <= n}
        if best_model_checkpoint and seen:
            # the Trainer names the best of the checkpoints it saved, as it was evaluated at save time
            candidates = [s for s in saved if s <= n and s in evals]
            if candidates:
                b = min(candidates, key=lambda s: (evals[s], s))
                state.update(best_global_step=b, best_metric=evals[b], best_model_checkpoint=f"{output_dir}/checkpoint-{b}")
        (ckpt / "trainer_state.json").write_text(json.dumps(state, indent=2))
    final = out / "final"
    final.mkdir(parents=True)
    for name in ("config.json", "generation_config.json", "model.safetensors", "training_args.bin"):
        (final / name).write_text("{}")
    return out, best


def _decay(steps, start: float, end: float) -> dict[int, float]:
    first, last = steps[0], steps[-1]
    return {s: round(start * (end / start) ** ((s - first) / (last - first)), 6) for s in steps}


# The run from a LoRA fine-tune that overfit: train loss down to 0.0034, eval loss up from 1.224 at
# step 20 to 2.376, and then a last evaluation 0.002 lower.
OVERFIT_TRAIN = _decay(list(range(10, 210, 10)), 1.91, 0.0034)
OVERFIT_EVALS = dict(zip(range(20, 220, 20), [1.224, 1.262, 1.41, 1.58, 1.77, 1.93, 2.08, 2.22, 2.376, 2.374]))
# A healthy run: eval loss 0.869 -> 0.601, then a flat tail.
HEALTHY_TRAIN = _decay(list(range(10, 510, 10)), 1.42, 0.47)
HEALTHY_EVALS = dict(zip(range(50, 550, 50), [0.869, 0.742, 0.671, 0.633, 0.612, 0.604, 0.601, 0.603, 0.602, 0.604]))


def test_a_real_overfit_is_caught_though_the_last_evaluation_dips(tmp_path) -> None:
    out, best = _trainer_run(tmp_path, OVERFIT_TRAIN, OVERFIT_EVALS, saved=(20, 40, 60, 80, 100, 120, 140, 160, 180, 200))
    assert best == 20
    curve = training_curve(out / "checkpoint-200")
    assert curve.eval_rising and curve.best_step == 20 and curve.best_eval_loss == 1.224
    assert curve.final_eval_loss == 2.374 and curve.eval_rise == pytest.approx(2.374 / 1.224 - 1)
    assert curve.eval_slope > 0 and curve.eval_slope_low > 0
    assert curve.best_checkpoint == out / "checkpoint-20" and "the Trainer's best_model_checkpoint" in curve.best_checkpoint_note
    with pytest.raises(AssertionError) as info:
        assert_training_converged(out / "checkpoint-200")
    message = str(info.value)
    assert "eval loss turned up while training loss fell: overfitting" in message
    assert "best was 1.224 at step 20; 9 evaluations later it is 2.374 (+94%, bar +5%" in message
    assert f"Best checkpoint: {out / 'checkpoint-20'} (the Trainer's best_model_checkpoint)" in message
    assert f"[read {out / 'checkpoint-200' / 'trainer_state.json'}]" in message


def test_a_healthy_curve_with_a_flat_tail_passes(tmp_path) -> None:
    out, best = _trainer_run(tmp_path, HEALTHY_TRAIN, HEALTHY_EVALS, saved=(250, 500))
    curve = assert_training_converged(out)
    assert curve.loss_decreased and not curve.eval_rising
    assert curve.best_step == best == 350 and curve.evals_since_best == 3 and curve.eval_rise < 0.01
    assert curve.path == out / "checkpoint-500" / "trainer_state.json"  # the latest checkpoint's state
    # the best step was never saved; the Trainer's best_model_checkpoint is the better of the two saved
    assert curve.best_checkpoint == out / "checkpoint-250"
    assert curve.best_checkpoint_note == (
        "step 350 was never saved; this is the nearest saved checkpoint; "
        f"the Trainer's best_model_checkpoint is {out / 'checkpoint-500'}"
    )


def test_a_save_model_folder_reads_the_output_dirs_latest_checkpoint(tmp_path) -> None:
    out, _ = _trainer_run(tmp_path, OVERFIT_TRAIN, OVERFIT_EVALS, saved=(100, 200), best_model_checkpoint=False)
    assert not (out / "final" / "trainer_state.json").exists()  # trainer.save_model() writes none
    curve = training_curve(out / "final")
    assert curve.path == out / "checkpoint-200" / "trainer_state.json" and curve.eval_rising
    assert curve.best_checkpoint == out / "checkpoint-100"  # nearest to step 20 (100 - 20 < 200 - 20)
    assert curve.best_checkpoint_note == "step 20 was never saved; this is the nearest saved checkpoint"
    with pytest.raises(AssertionError, match=r"Best checkpoint: .*checkpoint-100 \(step 20 was never saved; .*\[read .*checkpoint-200/trainer_state.json\]"):
        assert_training_converged(out / "final")
    # trainer.save_state() writes output_dir/trainer_state.json: the whole run, which wins over a checkpoint's
    (out / "trainer_state.json").write_text(json.dumps({"log_history": _trainer_log(OVERFIT_TRAIN, OVERFIT_EVALS, final=True)}))
    assert training_curve(out / "final").path == out / "trainer_state.json"


def test_when_nothing_was_saved_it_says_so(tmp_path) -> None:
    history = _trainer_log(OVERFIT_TRAIN, OVERFIT_EVALS, final=True)
    curve = training_curve(_state(tmp_path, history))
    assert curve.eval_rising and curve.best_checkpoint is None
    assert curve.best_checkpoint_note == f"step 20 was never saved: no checkpoint-* folder in {str(tmp_path)!r}"
    with pytest.raises(AssertionError, match="Best checkpoint: none saved \\(step 20 was never saved"):
        assert_training_converged(tmp_path)


def test_a_trainer_best_by_another_metric_or_gone_from_disk_is_named(tmp_path) -> None:
    out, _ = _trainer_run(tmp_path, OVERFIT_TRAIN, OVERFIT_EVALS, saved=(20, 100, 200))
    state_file = out / "checkpoint-200" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    state["best_model_checkpoint"] = "runs/lora/checkpoint-100"  # e.g. metric_for_best_model="accuracy"
    state_file.write_text(json.dumps(state))
    curve = training_curve(state_file)
    assert curve.best_checkpoint == out / "checkpoint-20"
    assert curve.best_checkpoint_note == f"saved at the best step 20; the Trainer's best_model_checkpoint is {out / 'checkpoint-100'}"
    state["best_model_checkpoint"] = "/elsewhere/runs/lora/checkpoint-40"
    state_file.write_text(json.dumps(state))
    note = training_curve(state_file).best_checkpoint_note
    assert note == "saved at the best step 20; the Trainer's best_model_checkpoint '/elsewhere/runs/lora/checkpoint-40' is not on disk"


def test_the_rule_by_hand(tmp_path) -> None:
    evals = [(20, 1.0), (40, 0.8), (60, 0.85), (80, 0.9), (100, 0.95)]
    history = _train(range(5, 105, 5)) + [{"step": s, "eval_loss": v} for s, v in evals]
    curve = training_curve(_state(tmp_path, history), patience=3)
    assert curve.eval_rising and curve.best_step == 40 and curve.best_eval_loss == 0.8 and curve.evals_since_best == 3
    assert not training_curve(tmp_path, patience=4).eval_rising  # only three evaluations since the best
    assert not training_curve(tmp_path, tolerance=0.2).eval_rising  # 0.95 is 18.75% above 0.8
    assert training_curve(tmp_path, tolerance=0.18).eval_rising
    # a spike that comes back down has no upward trend, though the last value is 10% above the best
    spike = [(20, 1.0), (40, 0.6), (60, 0.8), (80, 0.75), (100, 0.7), (120, 0.66)]
    history = _train(range(5, 125, 5)) + [{"step": s, "eval_loss": v} for s, v in spike]
    assert not training_curve(_state(tmp_path, history)).eval_rising
    with pytest.raises(DataError, match="tolerance -0.1 must be a non-negative fraction"):
        training_curve(tmp_path, tolerance=-0.1)


def _simulated(rng, overfit: float, noise: float) -> list[dict]:
    """Train loss decaying; eval loss decaying to a plateau of 0.6, then rising by ``overfit`` nats
    over the last 600 steps; eval losses with relative noise of sd ``noise``."""
    import math

    history = [{"step": s, "loss": 2.0 * math.exp(-s / 300) + 0.05} for s in range(10, 1010, 10)]
    for s in range(50, 1050, 50):
        value = 0.6 + 0.3 * math.exp(-s / 100) + (overfit * (s - 400) / 600 if s > 400 else 0.0)
        history.append({"step": s, "eval_loss": value * (1 + rng.gauss(0, noise))})
    return history


@pytest.mark.parametrize(("noise", "max_false_alarms", "min_power"), [(0.01, 0.01, 0.99), (0.03, 0.09, 0.95)])
def test_false_alarms_and_power_by_simulation(tmp_path, noise, max_false_alarms, min_power) -> None:
    """20 evaluations with 1% or 3% relative noise each: a flat tail is rarely called overfit (about 0%
    and 6% over 1,000 runs), and a tail rising by 0.1 nats (17%) nearly always is (100%, 99%; the
    strict-monotony rule caught 44% and 11%)."""
    import random

    rng = random.Random(0)
    runs = 300

    def alarms(overfit):
        return sum(training_curve(_state(tmp_path, _simulated(rng, overfit, noise))).eval_rising for _ in range(runs)) / runs

    assert alarms(0.0) <= max_false_alarms
    assert alarms(0.1) >= min_power


def test_a_real_trainer_run(tmp_path, monkeypatch) -> None:
    """A tiny GPT-2 trained by transformers' own Trainer on 8 random sequences, evaluated on 8 others:
    it memorises, its eval loss climbs, and the files on disk are the Trainer's own."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    monkeypatch.chdir(tmp_path)  # the Trainer writes best_model_checkpoint relative to here
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=32, n_positions=16, n_embd=16, n_layer=1, n_head=2)

    class Random(torch.utils.data.Dataset):
        def __init__(self, seed):
            self.ids = torch.randint(0, 32, (8, 16), generator=torch.Generator().manual_seed(seed))

        def __len__(self):
            return len(self.ids)

        def __getitem__(self, i):
            return {"input_ids": self.ids[i], "labels": self.ids[i]}

    args = transformers.TrainingArguments(
        output_dir="out", max_steps=40, per_device_train_batch_size=4, learning_rate=3e-2, logging_steps=5,
        eval_strategy="steps", eval_steps=10, save_strategy="steps", save_steps=10, save_total_limit=2,
        load_best_model_at_end=True, metric_for_best_model="eval_loss", report_to=[], use_cpu=True, disable_tqdm=True,
    )
    trainer = transformers.Trainer(
        model=transformers.GPT2LMHeadModel(config), args=args, train_dataset=Random(0), eval_dataset=Random(1)
    )
    trainer.train()
    trainer.save_model("out/final")
    state = json.loads((tmp_path / "out" / "checkpoint-40" / "trainer_state.json").read_text())
    assert state["best_model_checkpoint"] == "out/checkpoint-10"  # relative to where training ran
    monkeypatch.chdir(tmp_path / "out")  # ... which is not where the tests run
    curve = training_curve(tmp_path / "out" / "final")
    assert curve.path == tmp_path / "out" / "checkpoint-40" / "trainer_state.json"
    assert curve.best_step == 10 and curve.eval_rising and curve.loss_decreased
    assert curve.best_checkpoint == tmp_path / "out" / "checkpoint-10"
    assert curve.best_checkpoint_note == "the Trainer's best_model_checkpoint"


def test_a_healthy_curve_in_any_order(tmp_path) -> None:
    history = _train(range(10, 110, 10)) + [{"step": s, "eval_loss": 2.0 - 0.005 * s} for s in (25, 50, 75, 100)]
    curve = training_curve(_state(tmp_path, history[::-1]))  # any order
    assert curve.loss_decreased and not curve.eval_rising and curve.best_step == 100
    assert_training_converged(tmp_path)  # a folder works too


def test_eval_rising_while_training_also_rises_is_not_called_overfitting(tmp_path) -> None:
    history = _train(range(5, 105, 5), start=1.0, slope=0.01) + [{"step": s, "eval_loss": 1 + s / 100} for s in (20, 40, 60, 80)]
    curve = training_curve(_state(tmp_path, history))
    assert not curve.eval_rising and not curve.loss_decreased
    with pytest.raises(AssertionError, match="training loss did not decrease"):
        assert_training_converged(tmp_path)


def test_the_fixture_path_and_checkpoint_folders(bpe_model, tmp_path) -> None:
    assert training_curve(bpe_model).path == bpe_model.path / "trainer_state.json"
    for step in (5, 50, 10):
        (tmp_path / f"checkpoint-{step}").mkdir()
        _state(tmp_path / f"checkpoint-{step}", _train(range(1, step + 1)) + [{"step": step, "eval_loss": 1.0}])
    assert training_curve(tmp_path).path.parent.name == "checkpoint-50"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        ("{broken", "not a trainer_state.json with a log_history list"),
        (json.dumps({"log_history": [{"step": 1, "loss": 1.0}]}), "no 'eval_loss' entries: train with an eval dataset"),
        (json.dumps({"log_history": [{"step": 1, "eval_loss": 1.0}]}), "no training 'loss' entries"),
        (json.dumps({"global_step": 3}), "not a trainer_state.json"),
    ],
)
def test_bad_logs_name_the_file_and_the_fix(tmp_path, content, message) -> None:
    path = tmp_path / "trainer_state.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match=message):
        training_curve(path)
