"""``eos=True``: record perplexity scores the end-of-sequence token that supervised fine-tuning trains
on, so that its mean NLL is a real ``Trainer``'s ``eval_loss`` on the same records."""

from __future__ import annotations

import math

import pytest

from pytest_ftmodel import assert_perplexity_below, load_model, perplexity
from pytest_ftmodel.errors import DataError

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

RECORDS = [
    {"instruction": "Classify the sentiment: The film was wonderful.", "output": "positive"},
    {"instruction": "Classify the sentiment: The soup was cold and bland.", "output": "negative"},
    {"instruction": "Summarise: The meeting moved to Tuesday at noon.", "output": "Meeting now Tuesday noon."},
    {"instruction": "Translate to French: good morning", "output": "bonjour"},
    {"instruction": "Add 2 and 3.", "output": "5"},
    {"instruction": "Name a colour of the sky.", "output": "blue, on a clear day"},
]


def _tokenizer(style: str):
    """A small byte-level BPE tokenizer: GPT-2 style (adds nothing, EOS ends a text) or Llama style
    (adds a BOS itself)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>"] if style == "gpt2" else ["<unk>", "<s>", "</s>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [f"{r['instruction']}\n{r['output']}" for r in RECORDS] * 4
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    if style == "gpt2":
        return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="</s>")


def _sft_example(tokenizer, record: dict[str, str]) -> dict[str, list[int]]:
    """A record as TRL's SFT trainer prepares prompt/completion data: the completion gets the EOS text
    appended (``add_eos``), prompt and prompt + completion are tokenized with the tokenizer's own
    special tokens, and the prompt's tokens are masked out of the loss (``completion_only_loss``)."""
    prompt, completion = record["instruction"], "\n" + record["output"] + tokenizer.eos_token
    prompt_ids = tokenizer(prompt).input_ids
    ids = tokenizer(prompt + completion).input_ids
    assert ids[: len(prompt_ids)] == prompt_ids
    return {"input_ids": ids, "labels": [-100] * len(prompt_ids) + ids[len(prompt_ids):]}


def _collate(pad_id: int):
    def collate(examples: list[dict[str, list[int]]]) -> dict[str, object]:
        width = max(len(e["input_ids"]) for e in examples)
        pad = [width - len(e["input_ids"]) for e in examples]
        return {
            "input_ids": torch.tensor([e["input_ids"] + [pad_id] * p for e, p in zip(examples, pad)]),
            "attention_mask": torch.tensor([[1] * len(e["input_ids"]) + [0] * p for e, p in zip(examples, pad)]),
            "labels": torch.tensor([e["labels"] + [-100] * p for e, p in zip(examples, pad)]),
        }

    return collate


def _trained(tmp_path, style: str) -> tuple[str, float]:
    """A tiny model fine-tuned a few steps with transformers' Trainer on RECORDS, saved with its
    tokenizer; and the Trainer's eval_loss on the same records (one evaluation batch, so the loss is
    the mean over every unmasked token)."""
    from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

    tokenizer = _tokenizer(style)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=128, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    data = [_sft_example(tokenizer, r) for r in RECORDS]
    args = TrainingArguments(
        output_dir=str(tmp_path / "run"), max_steps=6, per_device_train_batch_size=3, per_device_eval_batch_size=len(data),
        learning_rate=5e-3, report_to=[], save_strategy="no", logging_strategy="no", use_cpu=True, seed=0,
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=data, eval_dataset=data, data_collator=_collate(tokenizer.pad_token_id))
    trainer.train()
    eval_loss = trainer.evaluate()["eval_loss"]
    out = tmp_path / "final"
    trainer.save_model(str(out))
    tokenizer.save_pretrained(str(out))
    return str(out), float(eval_loss)


@pytest.mark.parametrize("style", ["gpt2", "llama"])
def test_record_nll_with_eos_is_the_trainers_eval_loss(tmp_path, style) -> None:
    path, eval_loss = _trained(tmp_path, style)
    m = load_model(path, device="cpu")
    with_eos = perplexity(m, RECORDS, eos=True, cache=None)
    assert with_eos.mean_nll == pytest.approx(eval_loss, rel=1e-5)
    # without it, one token per record fewer is scored, and the figure is not the Trainer's
    without = perplexity(m, RECORDS, cache=None)
    assert with_eos.n_tokens == without.n_tokens + len(RECORDS)
    assert abs(without.mean_nll - eval_loss) > 1e-3
    assert math.isclose(with_eos.perplexity, math.exp(eval_loss), rel_tol=1e-5)


def test_eos_is_scored_once_and_enters_the_cache_key(bpe_model, tmp_path) -> None:
    from pytest_ftmodel.cache import GenerationCache

    tok = bpe_model.tokenizer
    cache = GenerationCache(tmp_path / "cache")
    plain = perplexity(bpe_model, ["a short text"], cache=cache)
    eos = perplexity(bpe_model, ["a short text"], eos=True, cache=cache)
    assert eos.n_tokens == plain.n_tokens + 1 and eos.nll > plain.nll  # a cached plain score is not reused
    # a text that already ends with the EOS keeps the one
    ended = perplexity(bpe_model, [("Add 2 and 3.", "\n5" + tok.eos_token)], eos=True, cache=None)
    assert ended.n_tokens == perplexity(bpe_model, [("Add 2 and 3.", "\n5" + tok.eos_token)], cache=None).n_tokens


def test_eos_is_a_baseline_setting_only_when_on(bpe_model, private_record) -> None:
    assert_perplexity_below(bpe_model, RECORDS[:2], 1e9, cache=None)
    assert_perplexity_below(bpe_model, RECORDS[:2], 1e9, eos=True, cache=None)
    off, on = private_record.ordered()
    assert "eos" not in off.settings and on.settings["eos"] is True


def test_eos_with_lm_eval_windows_is_one_line(bpe_model) -> None:
    with pytest.raises(DataError, match=r"eos=True does not apply to windows='lm-eval'"):
        perplexity(bpe_model, ["some text"], windows="lm-eval", eos=True, cache=None)
