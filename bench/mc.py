"""Multiple-choice scoring speed: mc_accuracy against lm-evaluation-harness's HF backend and a naive
per-choice loop, on the same demo model and items, in one run (each at its best batch size).

Items are 4-choice questions over the demo vocabulary with a two-shot prompt (prompts of 40-60
tokens, choices of 1-4 tokens, as in ARC-style tasks). lm-eval gets the same requests
(``loglikelihood`` with context = prompt, continuation = " " + choice) and ``add_bos_token`` set as
the tokenizer does itself (bpe: BOS; byte: none). Throughput in items per second; the best of
``--repeats`` runs for each.

    OMP_NUM_THREADS=1 python bench/mc.py [--items 180] [--phrases] [--device cpu|cuda] [--dtype float32|bfloat16]
"""

from __future__ import annotations

import argparse
import os
import random
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

ANIMALS = ["cat", "dog", "fox", "owl", "cow", "hen"]
ADJS = ["small", "happy", "old", "quick", "sleepy"]
VERBS = ["chased", "found", "ate", "moved"]
OBJECTS = ["ball", "apple", "box", "hat", "cake"]
PLACES = ["garden", "kitchen", "park", "barn"]
WEATHER = ["sunny", "rainy", "cold", "warm"]


def bench_items(n: int, seed: int = 0, phrases: bool = False) -> list[dict]:
    """``phrases``: every choice is several tokens long (" garden. It was a sunny day."), so that no
    two choices feed the same ids and nothing is shared between them."""
    rng = random.Random(seed)

    def sentence() -> tuple[str, str]:
        place = rng.choice(PLACES)
        return (
            f"The {rng.choice(ADJS)} {rng.choice(ANIMALS)} {rng.choice(VERBS)} the {rng.choice(OBJECTS)} in the",
            place,
        )

    items = []
    for _ in range(n):
        shots = " ".join(f"{p} {a}. It was a {rng.choice(WEATHER)} day." for p, a in (sentence(), sentence()))
        prompt, answer = sentence()
        wrong = rng.sample([w for w in ANIMALS + OBJECTS + WEATHER], 3)
        if phrases:
            weather = rng.choice(WEATHER)
            answer = f"{answer}. It was a {weather} day."
            wrong = [f"{w}. It was a {weather} day." for w in wrong]
        choices = [answer, *wrong]
        rng.shuffle(choices)
        items.append({"prompt": f"{shots} {prompt}", "choices": choices, "answer": choices.index(answer)})
    return items


def best_of(repeats: int, run) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = run()
        best = min(best, time.perf_counter() - start)
    return best, out


def naive(model, items) -> list[list[float]]:
    """One forward per choice on the whole text, full-vocabulary log-softmax at every position."""
    import torch

    tok = model.tokenizer
    out = []
    with torch.inference_mode():
        for item in items:
            lls = []
            for c in item["choices"]:
                ctx = tok(item["prompt"]).input_ids
                cont = tok(" " + c, add_special_tokens=False).input_ids
                ids = torch.tensor([ctx + cont], device=model.device)
                logp = torch.log_softmax(model.model(ids).logits.float(), dim=-1)[0]
                lls.append(sum(float(logp[len(ctx) + k - 1, t]) for k, t in enumerate(cont)))
            out.append(lls)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=180)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--families", default="byte,bpe")
    parser.add_argument("--phrases", action="store_true", help="multi-token choices: no forward pass is shared")
    args = parser.parse_args()

    import torch
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from pytest_ftmodel import load_model
    from pytest_ftmodel.demo import build_demo
    from pytest_ftmodel.metrics.mc import mc_accuracy

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    items = bench_items(args.items, phrases=args.phrases)
    n_choices = sum(len(it["choices"]) for it in items)
    print(f"{args.items} items, {n_choices} choices ({'phrases' if args.phrases else 'words'}), device {args.device}, {args.dtype}, {torch.get_num_threads()} thread(s)")
    print(f"{'family':<7}{'tool':<28}{'batch':>6}{'items/s':>10}{'vs lm-eval':>12}")
    for family in args.families.split(","):
        path = str(build_demo(family).finetuned)
        model = load_model(path, device=args.device, dtype=args.dtype)
        rows = []
        ours = {}
        for size in (None, 8, 32, 128):
            t, res = best_of(args.repeats, lambda: mc_accuracy(model, items, batch_size=size, cache=None))
            ours[size] = (t, res)
        size, (t_ours, res) = min(ours.items(), key=lambda kv: kv[1][0])
        rows.append(("mc_accuracy", "auto" if size is None else size, t_ours))

        bos = model.tokenizer.bos_token_id is not None and model.tokenizer("x").input_ids[:1] == [model.tokenizer.bos_token_id]
        requests = [
            Instance("loglikelihood", {}, (it["prompt"], " " + c), k)
            for k, it in enumerate(items)
            for c in it["choices"]
        ]
        theirs = {}
        for size in (1, 8, 32, 64):
            lm = HFLM(pretrained=path, add_bos_token=bos, device=args.device, dtype=args.dtype, batch_size=size)
            theirs[size] = best_of(args.repeats, lambda: lm.loglikelihood(requests, disable_tqdm=True))
        size_l, (t_lm, got) = min(theirs.items(), key=lambda kv: kv[1][0])
        rows.append(("lm-eval HFLM.loglikelihood", size_l, t_lm))

        t_naive, _ = best_of(1, lambda: naive(model, items))
        rows.append(("naive per-choice loop", 1, t_naive))
        for name, size, t in rows:
            print(f"{family:<7}{name:<28}{str(size):>6}{args.items / t:>10.1f}{t_lm / t:>11.2f}x")
        flat = [ll for it in res.items for ll in it.loglik]
        worst = max(abs(a - b[0]) / abs(b[0]) for a, b in zip(flat, got))
        print(f"{family:<7}worst relative difference of a choice's log-likelihood vs lm-eval: {worst:.2e}")


if __name__ == "__main__":
    main()
