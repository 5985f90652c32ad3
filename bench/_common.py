"""Helpers shared by the benchmarks: a ~20M-parameter model with random weights, timing."""

from __future__ import annotations

import time


def matmul_flops(device: str, dtype, n: int = 2048, reps: int = 10) -> float:
    import torch

    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - start)


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def build_model(out: str, context: int):
    """A ~20M-parameter Llama-style model with random weights and the demo BPE tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from pytest_ftmodel.demo import _build_tokenizer

    tokenizer = _build_tokenizer("bpe")
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=512, intermediate_size=1376, num_hidden_layers=6,
        num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=context,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return sum(p.numel() for p in model.parameters())
