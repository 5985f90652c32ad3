"""Generation throughput: one prompt at a time vs generate() batched vs generate() with a warm cache.

64 prompts of mixed length, 48 new tokens each, greedy, on a ~20M-parameter model, in one run.

    python bench/generation.py [--prompts 64] [--new-tokens 48] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from _common import build_model, sync


def make_prompts(n: int, seed: int = 1) -> list[str]:
    words = "summarize the report about a cat dog fox owl that ran ate found chased ball apple box in garden park kitchen".split()
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(4, 120))) for _ in range(n)]


def one_at_a_time(model, prompts: list[str], new_tokens: int) -> list[str]:
    """The usual loop: tokenize one prompt, model.generate, decode."""
    import torch

    out = []
    tok = model.tokenizer
    with torch.no_grad():
        for p in prompts:
            enc = tok(p, return_tensors="pt").to(model.device)
            ids = model.model.generate(**enc, max_new_tokens=new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
            out.append(tok.decode(ids[0, enc.input_ids.shape[1] :], skip_special_tokens=True))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    from pytest_ftmodel import GenerationCache, generate, load_model
    from pytest_ftmodel.model import quiet_transformers

    with quiet_transformers(), tempfile.TemporaryDirectory() as tmp:
        params = build_model(tmp + "/model", 512)
        model = load_model(tmp + "/model", device=args.device)
        prompts = make_prompts(args.prompts)
        print(f"model: {params / 1e6:.1f}M parameters, device {model.device}; {len(prompts)} prompts, {args.new_tokens} new tokens each")
        one_at_a_time(model, prompts[:2], 4)  # warm-up
        generate(model, prompts[:2], max_new_tokens=4, cache=None, chat=False)

        def timed(fn):
            sync(model.device)
            start = time.perf_counter()
            out = fn()
            sync(model.device)
            return out, time.perf_counter() - start

        _, t_loop = timed(lambda: one_at_a_time(model, prompts, args.new_tokens))
        batched, t_batch = timed(lambda: generate(model, prompts, max_new_tokens=args.new_tokens, cache=None, chat=False))
        cache = GenerationCache(Path(tmp) / "cache")
        generate(model, prompts, max_new_tokens=args.new_tokens, cache=cache, chat=False)  # fills the cache
        warm, t_warm = timed(lambda: generate(model, prompts, max_new_tokens=args.new_tokens, cache=cache, chat=False))
        assert warm == batched and cache.hits == len(prompts)
        print(f"one prompt at a time: {t_loop:7.2f}s  {len(prompts) / t_loop:7.1f} prompts/s")
        print(f"generate() batched:   {t_batch:7.2f}s  {len(prompts) / t_batch:7.1f} prompts/s  ratio {t_loop / t_batch:.1f}x")
        print(f"generate() warm cache:{t_warm:7.3f}s  {len(prompts) / t_warm:7.0f} prompts/s  ratio {t_loop / t_warm:.0f}x")


if __name__ == "__main__":
    main()
