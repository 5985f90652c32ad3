"""perplexity(..., windows="lm-eval") against lm-evaluation-harness itself, on both demo families.

For each demo family (byte: GPT-2 style, EOS as prefix, no BOS; bpe: Llama style, BOS), on texts
longer than the model's context: lm-eval's ``HFLM.loglikelihood_rolling`` with ``add_bos_token=False``
vs ``perplexity(..., windows="lm-eval")`` (worst per-text relative error of the NLL), and, for
contrast, the sliding rule with ``stride=max_length - 1`` (which is *not* lm-eval's rule) and the
tokens lm-eval scores with its default ``add_bos_token`` (which doubles the BOS of a BOS-adding
tokenizer).

    pip install lm-eval   # heavy: not part of the test extras
    python bench/perplexity_lm_eval.py [--texts 12]
"""

from __future__ import annotations

import argparse
import math


def long_texts(tokenizer, context: int, count: int) -> list[str]:
    from pytest_ftmodel import texts_of
    from pytest_ftmodel.demo import demo_data

    pool = texts_of(demo_data()["train"])
    texts, current = [], ""
    for text in pool:
        current = f"{current}\n\n{text}" if current else text
        goal = context * (1.2 + 0.7 * (len(texts) % 4))  # 1.2 to 3.3 contexts
        if len(tokenizer(current, add_special_tokens=False).input_ids) > goal:
            texts.append(current)
            current = ""
            if len(texts) == count:
                break
    return texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=12)
    args = parser.parse_args()

    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from pytest_ftmodel import load_model, perplexity
    from pytest_ftmodel.demo import build_demo

    for family in ("byte", "bpe"):
        path = build_demo(family).finetuned
        model = load_model(path, device="cpu")
        context = model.context_length
        texts = long_texts(model.tokenizer, context, args.texts)
        lengths = [len(model.tokenizer(t, add_special_tokens=False).input_ids) for t in texts]
        requests = [Instance("loglikelihood_rolling", {}, (t,), i) for i, t in enumerate(texts)]

        lm = HFLM(pretrained=str(path), add_bos_token=False, device="cpu", batch_size=1, max_length=context)
        theirs = lm.loglikelihood_rolling(requests, disable_tqdm=True)
        ours = perplexity(model, texts, windows="lm-eval")
        errors = [abs(s.nll + ll) / abs(ll) for s, ll in zip(ours.per_text, theirs)]
        their_ppl = math.exp(-sum(theirs) / sum(len(lm.tok_encode(t)) for t in texts))

        sliding = perplexity(model, texts, stride=context - 1)
        gaps = [abs(s.nll + ll) / abs(ll) for s, ll in zip(sliding.per_text, theirs)]

        default = HFLM(pretrained=str(path), device="cpu", batch_size=1, max_length=context)
        encoded = [default.tok_encode(t) for t in texts]
        default_tokens = sum(map(len, encoded))
        tok = model.tokenizer
        doubled = sum(ids[:1] == [tok.bos_token_id] for ids in encoded if tok.bos_token_id is not None)
        appended = sum(ids[-1:] == [tok.eos_token_id] for ids in encoded)

        print(f"{family}: {len(texts)} texts of {min(lengths)}-{max(lengths)} tokens, context {context}")
        print(f"  windows='lm-eval' vs lm-eval (add_bos_token=False): worst per-text relative NLL error {max(errors):.2e}")
        print(f"  corpus perplexity: ours {ours.perplexity:.6f}, lm-eval {their_ppl:.6f}; scored tokens {ours.n_tokens}")
        print(
            f"  sliding stride=max_length-1 vs lm-eval: per-text NLL differs by up to {max(gaps):.2%}, "
            f"corpus perplexity by {abs(sliding.perplexity / their_ppl - 1):.2%}"
        )
        print(
            f"  lm-eval default add_bos_token: {default_tokens} tokens scored vs {ours.n_tokens} (add_bos_token=False): "
            f"{doubled} texts with a second BOS scored, {appended} with the tokenizer's appended EOS scored"
        )


if __name__ == "__main__":
    main()
