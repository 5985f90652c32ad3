"""Perplexity throughput: the naive per-text recipe vs perplexity(), in one run.

The naive recipe is the one most tutorials give: one text at a time, truncated to the context,
`outputs.loss * n_tokens` summed. It is also wrong (it counts one token per text that was never
predicted, and drops whatever truncation cut). perplexity() scores every token exactly once.

    python bench/perplexity.py [--texts 200] [--device cpu|cuda] [--dtype float32|bfloat16] [--stride N] [--rounds 3]
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import tempfile
import time

from _common import build_model, matmul_flops, sync


def make_texts(n: int, seed: int = 0) -> list[str]:
    words = "the cat dog fox owl sat ran ate found chased ball apple box hat cake in on garden park kitchen barn happy old quick sleepy sunny rainy day was it".split()
    rng = random.Random(seed)
    texts = []
    for i in range(n):
        # mostly short and medium texts, one in ten longer than the context
        length = rng.randint(400, 900) if i % 10 == 0 else rng.randint(10, 220)
        texts.append(" ".join(rng.choice(words) for _ in range(length)) + ".")
    return texts


def naive(model, texts: list[str]) -> tuple[float, int]:
    import torch

    tok, net = model.tokenizer, model.model
    nll, count = 0.0, 0
    with torch.no_grad():
        for text in texts:
            enc = tok(text, return_tensors="pt", truncation=True, max_length=model.context_length).to(model.device)
            out = net(**enc, labels=enc.input_ids)
            n = enc.input_ids.shape[1]
            nll += float(out.loss) * n
            count += n
    return nll, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=200)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--stride", type=int, default=None, help="window stride (default: perplexity()'s)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating timing rounds; medians are printed")
    args = parser.parse_args()

    import torch

    from pytest_ftmodel import load_model, perplexity
    from pytest_ftmodel.metrics.perplexity import default_stride, windows
    from pytest_ftmodel.tokens import token_sequence

    with tempfile.TemporaryDirectory() as tmp:
        params = build_model(tmp, args.context)
        model = load_model(tmp, device=args.device, dtype=args.dtype)
        texts = make_texts(args.texts)
        lengths = [len(token_sequence(model.tokenizer, t)) - 1 for t in texts]
        longer = sum(n + 1 > args.context for n in lengths)
        print(f"model: {params / 1e6:.1f}M parameters, context {args.context}, device {model.device}, dtype {model.dtype}")
        print(f"data:  {len(texts)} texts, {sum(lengths)} tokens, {min(lengths)}..{max(lengths)} per text, {longer} longer than the context")
        peak = matmul_flops(model.device, getattr(torch, args.dtype))
        print(f"matmul peak measured: {peak / 1e9:.1f} GFLOP/s")

        naive(model, texts[:3])  # warm-up both paths
        perplexity(model, texts[:3])

        def timed(fn, subset):
            model.memo.clear()
            sync(model.device)
            start = time.perf_counter()
            out = fn(model, subset)
            sync(model.device)
            return out, time.perf_counter() - start

        within = [t for t, n in zip(texts, lengths) if n + 1 <= args.context]
        for label, subset in (("all texts", texts), ("texts within the context", within)):
            # alternate the two sides and take medians: this machine's speed drifts by several % between runs
            naive_runs, our_runs = [], []
            for _ in range(args.rounds):
                (n_nll, n_count), t_naive = timed(naive, subset)
                result, t_ours = timed(lambda m, t: perplexity(m, t, stride=args.stride), subset)
                naive_runs.append(t_naive)
                our_runs.append(t_ours)
            t_naive, t_ours = statistics.median(naive_runs), statistics.median(our_runs)
            ratios = sorted((result.n_tokens / o) / (n_count / n) for n, o in zip(naive_runs, our_runs))
            stride = args.stride or default_stride(args.context)
            fed = sum(e - b for n in result.per_text for b, e, _ in windows(n.n_tokens + 1, args.context, stride))
            ours_tps, naive_tps = result.n_tokens / t_ours, n_count / t_naive
            print(f"\n[{label}: {len(subset)} texts, median of {args.rounds} alternating rounds]")
            print(f"naive loop:   {naive_tps:8.0f} tokens/s  {n_count} tokens counted (truncated, loss*n), {t_naive:.2f}s, ppl {math.exp(n_nll / n_count):.3f}")
            print(f"perplexity(): {ours_tps:8.0f} tokens/s  {result.n_tokens} tokens scored ({fed} fed through windows, stride {stride}), {t_ours:.2f}s, ppl {result.perplexity:.3f}")
            print(f"ratio perplexity()/naive: {ours_tps / naive_tps:.2f}x tokens/s (rounds: {', '.join(f'{r:.2f}' for r in ratios)}); "
                  f"forward work {fed / n_count:.2f}x the naive loop's")
            print(f"share of matmul peak (2 x params x tokens): perplexity() {2 * params * ours_tps / peak:.0%} scored, "
                  f"{2 * params * fed / t_ours / peak:.0%} fed; naive {2 * params * naive_tps / peak:.0%}")


if __name__ == "__main__":
    main()
