"""Coverage of the intervals of the answer gates, by simulation (tables printed).

Run from the repository root: ``python bench/answer_intervals.py [--reps 400]``.

* ``bleu`` / ``chrf``: a population of 3,000 (answer, reference) pairs made from the demo's templates
  with words swapped at random; its corpus score (sacrebleu on all of it) is the truth. Samples of
  ``n`` pairs are drawn, the interval is :func:`pytest_ftmodel.metrics.reference.bootstrap_corpus_interval`
  (percentile bootstrap, 1,000 resamples); the table gives how often it covers the truth.
* ``length ratio``: per item, model and base answer lengths drawn from negative binomials whose means
  differ by a factor (true geometric mean of ``(m + 1) / (b + 1)`` computed on 2,000,000 items); the
  interval is :func:`pytest_ftmodel.metrics.form.geometric_ratio` (t-interval of the mean log ratio).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

WORDS = ["cat", "dog", "fox", "owl", "cow", "hen", "ball", "apple", "box", "hat", "cake", "garden", "kitchen", "park", "barn",
         "chased", "found", "ate", "moved", "small", "happy", "old", "quick", "sleepy"]


def population(size: int, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    answers, refs = [], []
    for _ in range(size):
        ref = f"The {rng.choice(WORDS[:6])} {rng.choice(WORDS[15:19])} the {rng.choice(WORDS[6:11])} in the {rng.choice(WORDS[11:15])}."
        words = ref.split()
        for i in range(len(words)):
            if rng.random() < 0.3:
                words[i] = rng.choice(WORDS)
        answers.append(" ".join(words[: rng.randint(3, len(words))]))
        refs.append(ref)
    return answers, refs


def sacre_table(reps: int, sizes: list[int]) -> None:
    import numpy as np
    from sacrebleu.metrics import BLEU, CHRF

    from pytest_ftmodel.metrics.reference import bootstrap_corpus_interval

    answers, refs = population(3000)
    for name, scorer in (("bleu", BLEU()), ("chrf", CHRF())):
        stats = np.asarray(scorer._extract_corpus_statistics(answers, [refs]), dtype=np.float64)
        truth = scorer._compute_score_from_stats([int(v) for v in stats.sum(axis=0)]).score
        print(f"\n{name}: population corpus score {truth:.2f}; {reps} samples per n")
        print(f"{'n':>5} {'coverage':>9} {'below':>7} {'above':>7} {'mean width':>11}")
        rng = np.random.default_rng(1)
        for n in sizes:
            below = above = 0
            widths = []
            for r in range(reps):
                pick = rng.integers(0, len(answers), n)
                low, high = bootstrap_corpus_interval(scorer, stats[pick], samples=1000, seed=r)
                below += truth < low
                above += truth > high
                widths.append(high - low)
            print(f"{n:5d} {1 - (below + above) / reps:9.3f} {below / reps:7.3f} {above / reps:7.3f} {np.mean(widths):11.2f}")


def length_table(reps: int, sizes: list[int]) -> None:
    import numpy as np

    from pytest_ftmodel.metrics.form import geometric_ratio

    rng = np.random.default_rng(2)
    print(f"\nlength ratio: lengths ~ negative binomial (dispersion 2); {reps} samples per n")
    print(f"{'base mean':>9} {'factor':>7} {'truth':>7} {'n':>5} {'coverage':>9}")
    for base_mean, factor in ((20, 1.0), (20, 2.0), (3, 1.5), (60, 0.5)):
        def draw(size: int) -> np.ndarray:
            m = rng.negative_binomial(2, 2 / (2 + base_mean * factor), size)
            b = rng.negative_binomial(2, 2 / (2 + base_mean), size)
            return (m + 1) / (b + 1)

        truth = float(np.exp(np.log(draw(2_000_000)).mean()))
        for n in sizes:
            hits = 0
            for _ in range(reps):
                _ratio, (low, high) = geometric_ratio(list(draw(n)))
                hits += low <= truth <= high
            print(f"{base_mean:9d} {factor:7.2f} {truth:7.3f} {n:5d} {hits / reps:9.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=400)
    options = parser.parse_args()
    start = time.perf_counter()
    length_table(max(options.reps, 1000), [5, 10, 30, 100])
    sacre_table(options.reps, [10, 30, 100])
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
