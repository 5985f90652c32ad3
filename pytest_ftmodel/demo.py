"""Tiny embedded demo models, built offline in seconds on a CPU.

Two tokenizer families, because users have both:

* ``byte``: a GPT-2-style model with a byte-level tokenizer (``ByT5Tokenizer``: no vocabulary file,
  no BOS token, EOS appended by the tokenizer, no chat template);
* ``bpe``: a Llama-style model with a BPE tokenizer trained here with ``tokenizers``; the tokenizer
  adds a BOS token, has a chat template and no pad token.

For each family a *base* model is trained briefly on plain sentences, and a *fine-tuned* model is
the base trained further on the instruction data (summaries, sentiment labels, small Python
functions). Builds are deterministic and cached under ``cache_root()/demo/<hash>``, the hash covering
this module's source, the data and the library versions.

``python -m pytest_ftmodel demo DIR`` builds the pair into DIR and prints their paths.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from pytest_ftmodel.data import write_jsonl
from pytest_ftmodel.model import cache_root

FAMILIES = ("byte", "bpe")
SEED = 1234

# --------------------------------------------------------------------------------------------
# Data: templated, so that validation items are new combinations of what training shows.

_ANIMALS = ["cat", "dog", "fox", "owl", "cow", "hen"]
_ADJS = ["small", "happy", "old", "quick", "sleepy"]
_VERBS = ["chased", "found", "ate", "moved"]
_OBJECTS = ["ball", "apple", "box", "hat", "cake"]
_PLACES = ["garden", "kitchen", "park", "barn"]
_WEATHER = ["sunny", "rainy", "cold", "warm"]

_THINGS = ["movie", "book", "meal", "song", "game", "hotel"]
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


def _classify_item(rng: random.Random) -> dict[str, Any]:
    label = rng.choice(LABELS)
    thing, word = rng.choice(_THINGS), rng.choice(_SENTIMENT_WORDS[label])
    return {
        "instruction": f"Classify the sentiment: The {thing} was {word}.",
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
    train = [fresh(_summary_item) for _ in range(120)] + [fresh(_classify_item) for _ in range(60)]
    # Code is memorised on purpose (the toy problems are the training functions), so it is in
    # training several times and not in validation.
    train += [_code_item(name) for name in _FUNCTIONS for _ in range(6)]
    rng.shuffle(train)
    for i, item in enumerate(train):
        item["id"] = f"train-{i}"
    for i, item in enumerate(val):
        item["id"] = f"val-{i}"
    return {"train": train, "val": val, "problems": code_problems()}


# --------------------------------------------------------------------------------------------
# Recipes

@dataclass(frozen=True)
class Recipe:
    family: str
    hidden: int = 96
    layers: int = 2
    heads: int = 4
    context: int = 256
    base_steps: int = 150
    finetune_steps: int = 250
    batch_size: int = 16
    lr: float = 3e-3
    eval_every: int = 25


RECIPES = {
    "byte": Recipe("byte", context=256),
    "bpe": Recipe("bpe", context=128, finetune_steps=400, lr=2e-3),
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


def _build_tokenizer(family: str) -> Any:
    if family == "byte":
        from transformers import ByT5Tokenizer

        return ByT5Tokenizer()
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    data = demo_data()
    corpus = base_corpus() + [f"{r['instruction']}\n{r['output']}" for r in data["train"]]
    corpus += ["<|user|>", "<|assistant|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    fast.chat_template = BPE_CHAT_TEMPLATE
    return fast


def _build_model(recipe: Recipe, tokenizer: Any) -> Any:
    import torch

    torch.manual_seed(SEED)
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
    """A document as the model sees it: start token, text, end of sequence."""
    ids = tokenizer(text, add_special_tokens=False).input_ids
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    return [start, *ids, tokenizer.eos_token_id]


def encode_example(tokenizer: Any, record: dict[str, Any]) -> list[int]:
    """An instruction record as the fine-tuned demo is trained on it (chat template when it has one)."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": record["instruction"]}, {"role": "assistant", "content": record["output"]}],
            tokenize=False,
        )
        return list(tokenizer(text, add_special_tokens=False).input_ids)
    return _encode_plain(tokenizer, f"{record['instruction']}\n{record['output']}")


def _batches(seqs: list[list[int]], recipe: Recipe, steps: int, rng: random.Random) -> Iterator[list[list[int]]]:
    order: list[int] = []
    for _ in range(steps):
        if len(order) < recipe.batch_size:
            extra = list(range(len(seqs)))
            rng.shuffle(extra)
            order += extra
        batch, order = order[: recipe.batch_size], order[recipe.batch_size :]
        yield [seqs[i][: recipe.context] for i in batch]


def _tensors(batch: list[list[int]], pad_id: int) -> tuple[Any, Any, Any]:
    import torch

    width = max(len(s) for s in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, seq in enumerate(batch):
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    return ids, mask, labels


def _mean_loss(model: Any, seqs: list[list[int]], pad_id: int, context: int) -> float:
    import torch

    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(seqs), 32):
            ids, mask, labels = _tensors([s[:context] for s in seqs[i : i + 32]], pad_id)
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
) -> list[dict[str, Any]]:
    """A plain AdamW loop with linear decay; returns a transformers-style ``log_history``."""
    import torch

    torch.manual_seed(seed)
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - s / max(steps, 1))
    history: list[dict[str, Any]] = []
    model.train()
    for step, batch in enumerate(_batches(seqs, recipe, steps, rng), start=1):
        ids, mask, labels = _tensors(batch, pad_id)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        epoch = round(step * recipe.batch_size / len(seqs), 4)
        if step % 5 == 0 or step == steps:
            history.append({"epoch": epoch, "step": step, "loss": round(float(loss.detach()), 6), "learning_rate": sched.get_last_lr()[0]})
        if eval_seqs and (step % recipe.eval_every == 0 or step == steps):
            model.eval()
            history.append({"epoch": epoch, "step": step, "eval_loss": round(_mean_loss(model, eval_seqs, pad_id, recipe.context), 6)})
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
    (out / "trainer_state.json").write_text(json.dumps(state, indent=1))


def _build_family(family: str, out: Path) -> None:
    """Train and save ``out/base`` and ``out/finetuned`` for one tokenizer family."""
    import copy

    recipe = RECIPES[family]
    tokenizer = _build_tokenizer(family)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    data = demo_data()
    plain = [_encode_plain(tokenizer, t) for t in base_corpus()]
    sft = [encode_example(tokenizer, r) for r in data["train"]]
    sft_val = [encode_example(tokenizer, r) for r in data["val"]]
    from pytest_ftmodel.model import quiet_transformers

    with quiet_transformers(), _threads(2):
        model = _build_model(recipe, tokenizer)
        base_history = train(model, plain, recipe, recipe.base_steps, pad_id)
        _save(model, tokenizer, out / "base", base_history)
        tuned = copy.deepcopy(model)
        history = train(tuned, sft, recipe, recipe.finetune_steps, pad_id, eval_seqs=sft_val, seed=SEED + 7)
        _save(tuned, tokenizer, out / "finetuned", history)


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    """Pin torch's thread count while training, so a build gives the same bits on any machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def recipe_hash() -> str:
    """Changes whenever the recipe, the data, this module or the library versions change."""
    import tokenizers
    import torch
    import transformers

    digest = hashlib.sha256(Path(__file__).read_bytes())
    digest.update(json.dumps(demo_data(), sort_keys=True).encode())
    digest.update(f"{torch.__version__}|{transformers.__version__}|{tokenizers.__version__}".encode())
    return digest.hexdigest()[:12]


def write_data(out: Path) -> Path:
    data = demo_data()
    for name, records in data.items():
        write_jsonl(out / f"{name}.jsonl", records)
    return out


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An exclusive lock so that parallel workers build a recipe once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            import fcntl

            fcntl.flock(fh, fcntl.LOCK_EX)
        except ImportError:  # pragma: no cover - Windows: builds may race, the rename keeps them whole
            pass
        yield


def build_demo(family: str = "byte", out: str | os.PathLike[str] | None = None) -> DemoPair:
    """Build (or reuse from the cache) the demo pair of ``family``; return their paths.

    With ``out``, the pair is built into ``out/<family>/{base,finetuned}`` and the data into
    ``out/data``, fresh, without touching the cache.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown demo family {family!r}: use one of {', '.join(FAMILIES)}")
    if out is not None:
        root = Path(out)
        _build_family(family, root / family)
        return DemoPair(root / family / "base", root / family / "finetuned", write_data(root / "data"))
    cache = cache_root() / "demo" / recipe_hash()
    target = cache / family
    with _lock(cache / f".{family}.lock"):
        if not (target / "finetuned" / "config.json").exists():
            cache.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{family}-", dir=cache))
            try:
                _build_family(family, tmp)
                if target.exists():
                    shutil.rmtree(target)
                os.replace(tmp, target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return DemoPair(target / "base", target / "finetuned", demo_data_dir())


def demo_data_dir() -> Path:
    """The demo data as JSONL files (``train``, ``val``, ``problems``), written once to the cache."""
    folder = cache_root() / "demo" / recipe_hash() / "data"
    if not (folder / "problems.jsonl").exists():
        write_data(folder)
    return folder
