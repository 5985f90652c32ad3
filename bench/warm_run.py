"""The example suite run cold, warm (everything cached), and with the cache off, in one run.

Run from the repository root: ``python bench/warm_run.py [--family byte] [--repeats 3]``. Each run
is ``python -m pytest example_suite --model <demo fine-tuned> --base-model <demo base>`` in a fresh
process; the figures are pytest's own time (what it prints after "in") and the wall time, the median
of ``--repeats`` runs. "cold" starts from an empty cache directory; "warm" re-runs with every answer,
score and metric result cached (no model loaded, no metric library imported); "no cache" is the naive
way (``--ftmodel-no-cache``: the model runs every time). Rows with ``-p no:hypothesispytest`` show what
hypothesis' own pytest plugin costs where it is installed (it imports hypothesis at the end of every
session, about 1 s on 2 cores), which is not ours to remove.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)


def run(args: list[str]) -> tuple[float, float]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", *args], cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    found = re.findall(r" in ([0-9.]+)s", done.stdout)
    if done.returncode != 0 or not found:
        raise SystemExit(f"the example suite did not pass:\n{done.stdout[-3000:]}\n{done.stderr[-2000:]}")
    return float(found[-1]), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="byte", choices=("byte", "bpe"))
    parser.add_argument("--repeats", type=int, default=3)
    options = parser.parse_args()

    from pytest_ftmodel import demo

    pair = demo.build_demo(options.family)
    base = ["example_suite", f"--model={pair.finetuned}", f"--base-model={pair.base}", "-q", "-p", "no:cacheprovider"]
    rows: list[tuple[str, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        cold_times = []
        for i in range(options.repeats):
            cold_times.append(run([*base, f"--ftmodel-cache-dir={tmp}/cold{i}"]))
        rows.append(("cold (empty cache)", statistics.median(t for t, _ in cold_times), statistics.median(w for _, w in cold_times)))
        warm_dir = f"{tmp}/cold0"
        for label, extra in (("warm", []), ("warm, -p no:hypothesispytest", ["-p", "no:hypothesispytest"])):
            times = [run([*base, f"--ftmodel-cache-dir={warm_dir}", *extra]) for _ in range(options.repeats)]
            rows.append((label, statistics.median(t for t, _ in times), statistics.median(w for _, w in times)))
        times = [run([*base, "--ftmodel-no-cache"]) for _ in range(options.repeats)]
        rows.append(("no cache (the naive way)", statistics.median(t for t, _ in times), statistics.median(w for _, w in times)))
    print(f"example suite, {options.family} demo, median of {options.repeats} runs, {os.cpu_count()} cores")
    print(f"{'run':<32}{'pytest s':>10}{'wall s':>10}{'no cache / this':>18}")
    naive = rows[-1][1]
    for label, seconds, wall in rows:
        print(f"{label:<32}{seconds:>10.2f}{wall:>10.2f}{naive / seconds:>17.1f}x")


if __name__ == "__main__":
    main()
