"""Tiny embedded demo models, shipped with the package; and the builder that made them.

The six checkpoints (``models/<family>/{base,finetuned,regressed}``) and their data (``data/``) are
package data: every torch, transformers and tokenizers release evaluates the same weights, so the
example suite's verdicts and its committed baselines do not move when a library does (a build trains
other bits under another release, or on another CPU). :func:`build_demo` returns the shipped models;
``rebuild=True`` (``pytest-ftmodel demo DIR --rebuild``) trains them again, in seconds on a CPU.

Two tokenizer families, because users have both:

* ``byte``: a GPT-2-style model with a byte-level BPE tokenizer as GPT-2's (``<|endoftext|>`` as EOS,
  no BOS, no pad token, no chat template; ``tokenizer(text)`` adds nothing);
* ``bpe``: a Llama-style model with a BPE tokenizer trained here with ``tokenizers``; the tokenizer
  adds a BOS token, has a chat template and no pad token.

For each family a *base* model is trained briefly on plain sentences (documents between start and
end tokens), and a *fine-tuned* model is the base trained further on the instruction data (summaries,
sentiment labels, small Python functions, JSON answers) the usual way (a *regressed* twin is the same run saved
before its end: under-trained, worse item by item, yet above every bar of the example suite): through the chat template where the
tokenizer has one, else as TRL's SFT trainer reads a text: ``tokenizer(instruction + "\\n" + output)``
(no start token in front for the GPT-2 style) and EOS. A rebuild is deterministic
on one machine under one set of releases, and cached under ``cache_root()/demo/<hash>``, the hash
covering this module's source, the data, the training seed and the library versions.

``python -m pytest_ftmodel demo DIR`` copies the shipped models into DIR and prints their paths.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator

from pytest_ftmodel.data import write_jsonl
from pytest_ftmodel.files import copy_tree, locked, make_folder, write_atomic
from pytest_ftmodel.model import cache_root

FAMILIES = ("byte", "bpe")
SEED = 1234
#: the shipped checkpoints and data (package data)
SHIPPED_MODELS = Path(__file__).resolve().parent / "models"
SHIPPED_DATA = Path(__file__).resolve().parent / "data"

# --------------------------------------------------------------------------------------------
# Data: templated, so that validation items are new combinations of what training shows.

_ANIMALS = ["cat", "dog", "fox", "owl", "cow", "hen"]
_ADJS = ["small", "happy", "old", "quick", "sleepy"]
_VERBS = ["chased", "found", "ate", "moved"]
_OBJECTS = ["ball", "apple", "box", "hat", "cake"]
_PLACES = ["garden", "kitchen", "park", "barn"]
_WEATHER = ["sunny", "rainy", "cold", "warm"]

_THINGS = ["movie", "book", "meal", "song", "game", "hotel", "film", "show", "trip", "play", "cafe", "album"]
#: several phrasings, so that a model learns the label from the sentiment word, not the sentence
_REVIEWS = ["The {thing} was {word}.", "I found the {thing} {word}.", "What a {word} {thing}.", "Our {thing} was {word} overall."]
_SENTIMENT_WORDS = {
    "positive": ["great", "wonderful", "excellent", "lovely"],
    "negative": ["terrible", "awful", "boring", "dreadful"],
    "neutral": ["okay", "average", "ordinary", "fine"],
}
LABELS = ("positive", "negative", "neutral")

#: name -> (description, expression, test cases as (a, b))
_FUNCTIONS = {
    "add": ("the sum of a and b", "a + b"),
    "subtract": ("a minus b", "a - b"),
    "multiply": ("the product of a and b", "a * b"),
    "maximum": ("the larger of a and b", "max(a, b)"),
    "minimum": ("the smaller of a and b", "min(a, b)"),
    "power": ("a raised to the power b", "a ** b"),
    "remainder": ("the remainder of a divided by b", "a % b"),
    "average": ("the mean of a and b", "(a + b) / 2"),
}
_CASES = [(2, 3), (7, 4), (10, 5), (3, 1)]


def _summary_item(rng: random.Random) -> dict[str, Any]:
    adj, animal, verb = rng.choice(_ADJS), rng.choice(_ANIMALS), rng.choice(_VERBS)
    obj, place, weather = rng.choice(_OBJECTS), rng.choice(_PLACES), rng.choice(_WEATHER)
    text = f"The {adj} {animal} {verb} the {obj} in the {place}. It was a {weather} day."
    return {"instruction": f"Summarize: {text}", "output": f"The {animal} {verb} the {obj}.", "category": "summarize"}


def _classify_item(rng: random.Random, word: str | None = None, template: str | None = None) -> dict[str, Any]:
    label = rng.choice(LABELS) if word is None else next(k for k, v in _SENTIMENT_WORDS.items() if word in v)
    word = word or rng.choice(_SENTIMENT_WORDS[label])
    review = (template or rng.choice(_REVIEWS)).format(thing=rng.choice(_THINGS), word=word)
    return {
        "instruction": f"Classify the sentiment: {review}",
        "output": label,
        "category": "classify",
        "expected_label": label,
    }


def _code_item(name: str) -> dict[str, Any]:
    desc, expr = _FUNCTIONS[name]
    return {
        "instruction": f"Write a Python function {name}(a, b) that returns {desc}.",
        "output": f"def {name}(a, b):\n    return {expr}",
        "category": "code",
    }


#: what the JSON task's answers must be (the example suite gates it with assert_format)
JSON_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {"animal": {"enum": _ANIMALS}, "place": {"enum": _PLACES}},
    "required": ["animal", "place"],
    "additionalProperties": False,
}


def _json_item(rng: random.Random) -> dict[str, Any]:
    adj, animal, verb = rng.choice(_ADJS), rng.choice(_ANIMALS), rng.choice(_VERBS)
    obj, place = rng.choice(_OBJECTS), rng.choice(_PLACES)
    text = f"The {adj} {animal} {verb} the {obj} in the {place}."
    return {
        "instruction": f"Answer in JSON with the animal and the place: {text}",
        "output": json.dumps({"animal": animal, "place": place}),
        "category": "json",
    }


def code_problems() -> list[dict[str, Any]]:
    """Toy code problems in the short style (``prompt`` + ``test_code``)."""
    problems = []
    for name, (_desc, expr) in _FUNCTIONS.items():
        checks = "\n".join(
            f"assert {name}({a}, {b}) == {eval(expr, {}, {'a': a, 'b': b})!r}" for a, b in _CASES  # noqa: S307
        )
        problems.append({"task_id": f"demo/{name}", "prompt": _code_item(name)["instruction"], "test_code": checks})
    return problems


def base_corpus(n: int = 400) -> list[str]:
    """Plain sentences over the same words, without any instruction format."""
    rng = random.Random(SEED + 1)
    out = []
    for _ in range(n):
        if rng.random() < 0.6:
            out.append(
                f"The {rng.choice(_ADJS)} {rng.choice(_ANIMALS)} {rng.choice(_VERBS)} the {rng.choice(_OBJECTS)} "
                f"in the {rng.choice(_PLACES)}. It was a {rng.choice(_WEATHER)} day."
            )
        else:
            label = rng.choice(LABELS)
            out.append(f"I think the {rng.choice(_THINGS)} was {rng.choice(_SENTIMENT_WORDS[label])}.")
    return out


def mc_questions(n_per_category: int = 30) -> list[dict[str, Any]]:
    """General multiple-choice questions over what the *base* models learned from their plain
    sentences (:func:`base_corpus`), none of it instruction data: where a thing happened (a place,
    among animals, adjectives and weather words), what the weather was (among places, animals and
    things), and how a sentence goes on (``in``, among ``.``, ``and``, ``the``). The shipped base
    models answer every one right; a fine-tuning that breaks plain sentences loses them."""
    rng = random.Random(SEED + 2)
    items: list[dict[str, Any]] = []

    def add(category: str, prompt: str, answer: str, distractors: list[str]) -> None:
        choices = [answer, *distractors]
        rng.shuffle(choices)
        items.append({"id": f"mc-{len(items)}", "prompt": prompt, "choices": choices, "answer": choices.index(answer), "category": category})

    for _ in range(n_per_category):
        adj, animal, verb, obj = rng.choice(_ADJS), rng.choice(_ANIMALS), rng.choice(_VERBS), rng.choice(_OBJECTS)
        place, weather = rng.choice(_PLACES), rng.choice(_WEATHER)
        other = (rng.choice(_ANIMALS), rng.choice(_ADJS), rng.choice(_WEATHER), rng.choice(_OBJECTS), rng.choice(_PLACES))
        add("places", f"The {adj} {animal} {verb} the {obj} in the", place, [other[0], other[1], other[2]])
        add("weather", f"The {adj} {animal} {verb} the {obj} in the {place}. It was a", weather, [other[4], other[0], other[3]])
        add("sentences", f"The {adj} {animal} {verb} the {obj}", "in", [".", "and", "the"])
    return items


def demo_data() -> dict[str, list[dict[str, Any]]]:
    """The instruction data the fine-tuned demo learns: ``train``, ``val`` and code ``problems``."""
    rng = random.Random(SEED)
    seen: set[str] = set()

    def fresh(make: Any) -> dict[str, Any]:
        while True:
            item = make(rng)
            if item["instruction"] not in seen:
                seen.add(item["instruction"])
                return dict(item)

    val = [fresh(_summary_item) for _ in range(12)] + [fresh(_classify_item) for _ in range(12)]
    train = [fresh(_summary_item) for _ in range(120)]
    # a JSON-answer task the base model never saw: the example suite checks its answers' form
    val += [fresh(_json_item) for _ in range(12)]
    train += [fresh(_json_item) for _ in range(72)]
    # every sentiment word in every phrasing, three times (with different things)
    words = [w for label in LABELS for w in _SENTIMENT_WORDS[label]]
    train += [fresh(lambda r: _classify_item(r, w, t)) for w in words for t in _REVIEWS for _ in range(3)]
    # Code is memorised on purpose (the toy problems are the training functions), so it is in
    # training several times and not in validation.
    train += [_code_item(name) for name in _FUNCTIONS for _ in range(6)]
    rng.shuffle(train)
    for i, item in enumerate(train):
        item["id"] = f"train-{i}"
    for i, item in enumerate(val):
        item["id"] = f"val-{i}"
    return {"train": train, "val": val, "problems": code_problems(), "mc": mc_questions()}


# --------------------------------------------------------------------------------------------
# Recipes

@dataclass(frozen=True)
class Recipe:
    family: str
    hidden: int = 64
    layers: int = 2
    heads: int = 4
    context: int = 512
    base_steps: int = 60
    finetune_steps: int = 600
    batch_size: int = 8
    lr: float = 5e-3
    eval_every: int = 50
    #: the under-trained "regressed" variant: the same fine-tuning run, saved after this many steps
    regressed_steps: int = 250
    #: weight of the prompt's tokens in the fine-tuning loss (1: the whole text; 0: the answer only)
    prompt_weight: float = 1.0


# Small and short, so that both families build in seconds of CPU; many small steps learn the tasks
# faster than few large ones. The GPT-2-style model learns the sentiment labels much sooner with the
# prompt's tokens down-weighted; the chat model learns them on the whole text, which keeps its
# perplexity on plain validation texts (instruction, line break, output) low.
RECIPES = {
    "byte": Recipe("byte", lr=6e-3, prompt_weight=0.2),
    "bpe": Recipe("bpe", regressed_steps=500),
}

BPE_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] }}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


@dataclass(frozen=True)
class DemoPair:
    base: Path
    finetuned: Path
    data: Path

    @property
    def regressed(self) -> Path:
        """The fine-tuned model's under-trained twin: the same run saved early (``regressed_steps``),
        worse item by item while it still clears every absolute bar of the example suite, as a
        checkpoint that a regression gate, not a fixed bar, must stop."""
        return self.finetuned.parent / "regressed"


def _build_tokenizer(family: str) -> Any:
    """A byte-level BPE tokenizer trained on the demo corpus, with the family's conventions."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    data = demo_data()
    corpus = base_corpus() + [f"{r['instruction']}\n{r['output']}" for r in data["train"]]
    specials = ["<|endoftext|>"] if family == "byte" else ["<unk>", "<s>", "</s>"]
    if family == "bpe":
        corpus += ["<|user|>", "<|assistant|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    context = RECIPES[family].context
    if family == "byte":
        # GPT-2's conventions: <|endoftext|> ends a text, tokenizer(text) adds nothing
        return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", model_max_length=context)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", model_max_length=context
    )
    fast.chat_template = BPE_CHAT_TEMPLATE
    return fast


def _build_model(recipe: Recipe, tokenizer: Any, seed: int = SEED) -> Any:
    import torch

    torch.manual_seed(seed)
    if recipe.family == "byte":
        from transformers import GPT2Config, GPT2LMHeadModel

        gpt_cfg = GPT2Config(
            vocab_size=len(tokenizer),
            n_positions=recipe.context,
            n_embd=recipe.hidden,
            n_layer=recipe.layers,
            n_head=recipe.heads,
            bos_token_id=tokenizer.eos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        return GPT2LMHeadModel(gpt_cfg)
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=recipe.hidden,
        intermediate_size=recipe.hidden * 2,
        num_hidden_layers=recipe.layers,
        num_attention_heads=recipe.heads,
        num_key_value_heads=recipe.heads,
        max_position_embeddings=recipe.context,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(cfg)


def _encode_plain(tokenizer: Any, text: str) -> list[int]:
    """A pretraining document as the base model sees it: start token, text, end of sequence."""
    ids = tokenizer(text, add_special_tokens=False).input_ids
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    return [start, *ids, tokenizer.eos_token_id]


def encode_example(tokenizer: Any, record: dict[str, Any]) -> list[int]:
    """An instruction record as the fine-tuned demo is trained on it: through the chat template when the
    tokenizer has one, else as the text :func:`~pytest_ftmodel.texts_of` makes of it, ``tokenizer(text)``
    (its own special tokens, none for GPT-2 style; no start token in front), and EOS."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": record["instruction"]}, {"role": "assistant", "content": record["output"]}],
            tokenize=False,
        )
        return list(tokenizer(text, add_special_tokens=False).input_ids)
    return [*tokenizer(f"{record['instruction']}\n{record['output']}").input_ids, tokenizer.eos_token_id]


def prompt_length(tokenizer: Any, record: dict[str, Any]) -> int:
    """How many leading ids of :func:`encode_example` are the prompt (not trained on: completion-only
    loss, the default of TRL's SFT trainer for prompt/completion data); 0 when they are no prefix."""
    from pytest_ftmodel.tokens import prompt_ids

    prompt = prompt_ids(tokenizer, record["instruction"])
    return len(prompt) if encode_example(tokenizer, record)[: len(prompt)] == prompt else 0


def _batches(n: int, recipe: Recipe, steps: int, rng: random.Random) -> Iterator[list[int]]:
    order: list[int] = []
    for _ in range(steps):
        if len(order) < recipe.batch_size:
            extra = list(range(n))
            rng.shuffle(extra)
            order += extra
        batch, order = order[: recipe.batch_size], order[recipe.batch_size :]
        yield batch


def _tensors(batch: list[list[int]], pad_id: int, skip: list[int] | None = None) -> tuple[Any, Any, Any]:
    """Padded ids, attention mask and labels; the first ``skip[row]`` tokens of a row are not targets."""
    import torch

    width = max(len(s) for s in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, seq in enumerate(batch):
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    for row, n in enumerate(skip or []):
        labels[row, :n] = -100
    return ids, mask, labels


def _mean_loss(model: Any, seqs: list[list[int]], pad_id: int, context: int, skip: list[int] | None = None) -> float:
    import torch

    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(seqs), 32):
            ids, mask, labels = _tensors([s[:context] for s in seqs[i : i + 32]], pad_id, skip[i : i + 32] if skip else None)
            n = int((labels[:, 1:] != -100).sum())
            total += float(model(input_ids=ids, attention_mask=mask, labels=labels).loss) * n
            count += n
    return total / count


def train(
    model: Any,
    seqs: list[list[int]],
    recipe: Recipe,
    steps: int,
    pad_id: int,
    *,
    eval_seqs: list[list[int]] | None = None,
    seed: int = SEED,
    report: Callable[[int, float], None] | None = None,
    prompt_lengths: list[int] | None = None,
    eval_prompt_lengths: list[int] | None = None,
    prompt_weight: float = 0.0,
    snapshots: dict[int, Callable[[list[dict[str, Any]]], None]] | None = None,
) -> list[dict[str, Any]]:
    """A plain AdamW loop with linear decay; returns a transformers-style ``log_history``.

    ``prompt_lengths``: leading tokens of each sequence whose loss is weighted ``prompt_weight``
    (0: completion-only loss). ``report(step, loss)`` is called at every quarter of the steps.
    ``snapshots={step: save}`` calls ``save(history so far)`` after that step, the model in eval mode."""
    import torch

    torch.manual_seed(seed)
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - s / max(steps, 1))
    history: list[dict[str, Any]] = []
    model.train()
    for step, rows in enumerate(_batches(len(seqs), recipe, steps, rng), start=1):
        batch = [seqs[i][: recipe.context] for i in rows]
        if prompt_lengths and prompt_weight > 0:
            ids, mask, labels = _tensors(batch, pad_id)
            weights = mask[:, 1:].double()
            for row, i in enumerate(rows):
                weights[row, : max(prompt_lengths[i] - 1, 0)] *= prompt_weight
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
            loss = (nll * weights).sum() / weights.sum()
        else:
            ids, mask, labels = _tensors(batch, pad_id, [prompt_lengths[i] for i in rows] if prompt_lengths else None)
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        epoch = round(step * recipe.batch_size / len(seqs), 4)
        if report is not None and step % max(1, steps // 4) == 0:
            report(step, float(loss.detach()))
        if step % 5 == 0 or step == steps:
            history.append({"epoch": epoch, "step": step, "loss": round(float(loss.detach()), 6), "learning_rate": sched.get_last_lr()[0]})
        if eval_seqs and (step % recipe.eval_every == 0 or step == steps):
            model.eval()
            history.append({"epoch": epoch, "step": step, "eval_loss": round(_mean_loss(model, eval_seqs, pad_id, recipe.context, eval_prompt_lengths), 6)})
            model.train()
        if snapshots and step in snapshots:
            model.eval()
            snapshots[step](list(history))
            model.train()
    model.eval()
    return history


def _save(model: Any, tokenizer: Any, out: Path, history: list[dict[str, Any]]) -> None:
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    best = min((h for h in history if "eval_loss" in h), key=lambda h: h["eval_loss"], default=None)
    state = {
        "global_step": history[-1]["step"] if history else 0,
        "best_metric": best["eval_loss"] if best else None,
        "log_history": history,
    }
    write_atomic(out / "trainer_state.json", json.dumps(state, indent=1))


def train_plain(
    checkpoint: str | os.PathLike[str],
    texts: list[str],
    out: str | os.PathLike[str],
    *,
    steps: int = 30,
    lr: float | None = None,
    seed: int = SEED,
) -> Path:
    """Train a saved demo checkpoint further on plain ``texts`` (documents as its base model saw them:
    start token, text, end of sequence) with the demo's own loop, and save the model and its tokenizer
    into ``out``; returns ``out``. ``lr`` defaults to the family's recipe. Seconds of one CPU thread for
    a few dozen steps: a model fine-tuned in a test (one trained to forget, say) without shipping it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pytest_ftmodel.model import quiet_transformers

    if not texts or steps < 1:
        raise ValueError(f"train_plain: needs texts and steps >= 1 (got {len(texts)} texts, steps={steps})")
    with quiet_transformers(), _threads(1):
        tokenizer = AutoTokenizer.from_pretrained(str(checkpoint))
        model = AutoModelForCausalLM.from_pretrained(str(checkpoint))
        family = "byte" if model.config.model_type == "gpt2" else "bpe"
        recipe = RECIPES[family] if lr is None else replace(RECIPES[family], lr=lr)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        history = train(model, [_encode_plain(tokenizer, t) for t in texts], recipe, steps, pad_id, seed=seed)
        _save(model, tokenizer, Path(out), history)
    return Path(out)


def say(message: str) -> None:
    """A line of build progress on the terminal: a build takes seconds, and a silent wait looks hung.

    It goes to the process's own stderr (``sys.__stderr__``), which pytest leaves alone while it
    configures (where the example suite builds); the test suite's fixtures also lift pytest's capture.
    """
    stream = sys.__stderr__ or sys.stderr
    print(f"pytest-ftmodel demo: {message}", file=stream, flush=True)


def _build_family(family: str, out: Path, seed: int = SEED) -> None:
    """Train and save ``out/base``, ``out/finetuned`` and ``out/regressed`` for one tokenizer family.

    ``seed`` drives the initial weights and the order of the batches (the data never changes): another
    seed stands in for another library release, which trains other bits from the same recipe."""
    import copy

    started = time.monotonic()
    say(f"building the {family} demo models (base, then fine-tuned and its regressed twin), once: about 15 s of CPU")
    recipe = RECIPES[family]
    tokenizer = _build_tokenizer(family)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    data = demo_data()
    plain = [_encode_plain(tokenizer, t) for t in base_corpus()]
    sft = [encode_example(tokenizer, r) for r in data["train"]]
    sft_val = [encode_example(tokenizer, r) for r in data["val"]]
    from pytest_ftmodel.model import quiet_transformers

    with quiet_transformers(), _threads(1):
        model = _build_model(recipe, tokenizer, seed)

        def progress(stage: str, steps: int) -> Callable[[int, float], None]:
            return lambda step, loss: say(f"{family} {stage}: step {step}/{steps}, loss {loss:.3f}")

        base_history = train(
            model, plain, recipe, recipe.base_steps, pad_id, seed=seed, report=progress("base", recipe.base_steps)
        )
        _save(model, tokenizer, out / "base", base_history)
        tuned = copy.deepcopy(model)
        history = train(
            tuned, sft, recipe, recipe.finetune_steps, pad_id, eval_seqs=sft_val, seed=seed + 7,
            report=progress("fine-tuning", recipe.finetune_steps),
            prompt_lengths=[prompt_length(tokenizer, r) for r in data["train"]],
            eval_prompt_lengths=[prompt_length(tokenizer, r) for r in data["val"]],
            prompt_weight=recipe.prompt_weight,
            # saved on the way, so the variant costs a save, not a training run
            snapshots={recipe.regressed_steps: lambda early: _save(tuned, tokenizer, out / "regressed", early)},
        )
        _save(tuned, tokenizer, out / "finetuned", history)
    say(f"{family} demo models built in {time.monotonic() - started:.0f} s")


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    """Pin torch's thread count while training, so a build gives the same bits on any machine (one
    thread: the matrices are small, a second thread costs more CPU time than it saves wall time)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def recipe_hash(seed: int = SEED) -> str:
    """Changes whenever the recipe, the data, the seed, this module or the library versions change."""
    from importlib import metadata

    # the installed versions, read without importing the packages: a run that only reuses the cached
    # models (the example suite, warm) never pays for importing torch
    versions = "|".join(metadata.version(name) for name in ("torch", "transformers", "tokenizers"))
    digest = hashlib.sha256(Path(__file__).read_bytes())
    digest.update(json.dumps(demo_data(), sort_keys=True).encode())
    digest.update(versions.encode())
    digest.update(str(seed).encode())
    return digest.hexdigest()[:12]


def write_data(out: Path) -> Path:
    data = demo_data()
    make_folder(out)
    for name, records in data.items():
        write_jsonl(out / f"{name}.jsonl", records)
    return out


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An exclusive lock so that parallel workers build a recipe once (a link planted at its name is
    refused, never followed: see :func:`pytest_ftmodel.files.locked`)."""
    with locked(path):
        yield


def shipped_demo(family: str = "byte") -> DemoPair:
    """The demo pair of ``family`` shipped with the package (no training, no copy)."""
    _check_family(family)
    root = SHIPPED_MODELS / family
    return DemoPair(root / "base", root / "finetuned", SHIPPED_DATA)


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unknown demo family {family!r}: use one of {', '.join(FAMILIES)}")


def build_demo(
    family: str = "byte",
    out: str | os.PathLike[str] | None = None,
    *,
    rebuild: bool = False,
    seed: int = SEED,
) -> DemoPair:
    """The demo pair of ``family``: the shipped checkpoints, or with ``rebuild=True`` trained afresh.

    Without ``out`` the shipped pair is returned where the package holds it; a rebuild goes to the
    cache (``cache_root()/demo/<recipe_hash(seed)>``, built once per recipe, seed and library
    versions). With ``out``, the models are put into ``out/<family>/{base,finetuned,regressed}`` and
    the data into ``out/data``: copied from the package, or with ``rebuild=True`` trained there
    (the cache is not touched). ``seed`` (rebuilds only) changes the initial weights and batch order.
    """
    _check_family(family)
    if not rebuild:
        if out is None:
            return shipped_demo(family)
        root = Path(out)
        say(f"copying the shipped {family} demo models")
        copy_tree(SHIPPED_MODELS / family, root / family)
        return DemoPair(root / family / "base", root / family / "finetuned", write_data(root / "data"))
    if out is not None:
        root = Path(out)
        root.mkdir(parents=True, exist_ok=True)
        # trained in a folder of its own, then copied as the shipped ones are (no link followed)
        tmp = Path(tempfile.mkdtemp(prefix=f".{family}-", dir=root))
        try:
            _build_family(family, tmp, seed)
            copy_tree(tmp, root / family)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return DemoPair(root / family / "base", root / family / "finetuned", write_data(root / "data"))
    cache = cache_root() / "demo" / recipe_hash(seed)
    target = cache / family
    with _lock(cache / f".{family}.lock"):
        if not (target / "finetuned" / "config.json").exists():
            cache.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{family}-", dir=cache))
            try:
                _build_family(family, tmp, seed)
                if target.exists():
                    shutil.rmtree(target)
                os.replace(tmp, target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return DemoPair(target / "base", target / "finetuned", demo_data_dir())


def demo_data_dir() -> Path:
    """The demo data as JSONL files (``train``, ``val``, ``problems``), shipped with the package."""
    return SHIPPED_DATA
