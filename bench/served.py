"""Served-model throughput: the example suite's generations through ``transformers serve``.

Two comparisons in one run, against one server (the bpe demo's fine-tuned model, on CPU):

1. generate() over HTTP with ``--model-concurrency`` 1 vs 16: the example suite's prompts (the
   validation instructions and the code problems), greedy, 48 new tokens, no cache; the answers
   must be equal both ways.
2. the example suite itself, ``pytest example_suite --model=URL``, serial vs pytest-xdist ``-n 4``:
   the four workers share the one server instead of loading a model each.

    python bench/served.py [--continuous-batching] [--skip-xdist]

Prints seconds, ratios and the machine's load average (the figures are only comparable within a run).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def start_server(checkpoint: Path, continuous_batching: bool) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = "import sys; from transformers.cli.transformers import main; sys.argv[0] = 'transformers'; sys.exit(main())"
    args = [sys.executable, "-c", code, "serve", str(checkpoint), "--device", "cpu", "--host", "127.0.0.1", "--port", str(port)]
    if continuous_batching:
        args.append("--continuous-batching")
    log = tempfile.NamedTemporaryFile(prefix="bench-serve-", suffix=".log", delete=False)
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", HF_HUB_OFFLINE="1")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
    started = time.monotonic()
    while time.monotonic() - started < 300:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                print(f"transformers serve answered after {time.monotonic() - started:.1f} s")
                return proc, f"http://127.0.0.1:{port}/v1"
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"transformers serve did not start; log: {log.name}")


def timed_generation(url: str, tokenizer: Path, prompts: list[str], concurrency: int) -> tuple[float, list[str]]:
    from pytest_ftmodel import generate, load_model

    model = load_model(url, tokenizer=tokenizer, concurrency=concurrency)
    start = time.perf_counter()
    answers = generate(model, prompts, max_new_tokens=48, cache=None)
    return time.perf_counter() - start, answers


def timed_suite(url: str, tokenizer: Path, extra: list[str]) -> tuple[float, str]:
    args = [sys.executable, "-m", "pytest", "example_suite", f"--model={url}", f"--tokenizer={tokenizer}",
            "--ftmodel-no-cache", "-p", "no:randomly", "-p", "no:cacheprovider", "-q", *extra]
    start = time.perf_counter()
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    took = time.perf_counter() - start
    last = [line for line in done.stdout.splitlines() if " in " in line and ("passed" in line or "failed" in line)]
    return took, (last[-1].strip("= ") if last else f"exit {done.returncode}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--continuous-batching", action="store_true", help="start the server with --continuous-batching")
    parser.add_argument("--skip-xdist", action="store_true", help="only the concurrency comparison")
    opts = parser.parse_args()

    from pytest_ftmodel import load_jsonl, load_problems
    from pytest_ftmodel.demo import build_demo

    pair = build_demo("bpe")
    prompts = [item["instruction"] for item in load_jsonl(pair.data / "val.jsonl")]
    prompts += [p["prompt"] for p in load_problems(pair.data / "problems.jsonl")]
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    proc, url = start_server(pair.finetuned, opts.continuous_batching)
    try:
        timed_generation(url, pair.finetuned, prompts[:2], 1)  # warm-up
        t1, a1 = timed_generation(url, pair.finetuned, prompts, 1)
        t16, a16 = timed_generation(url, pair.finetuned, prompts, 16)
        print(f"{len(prompts)} prompts x 48 new tokens, greedy, server {'with' if opts.continuous_batching else 'without'} continuous batching")
        print(f"  concurrency  1: {t1:7.1f} s  ({len(prompts) / t1:.2f} answers/s)")
        print(f"  concurrency 16: {t16:7.1f} s  ({len(prompts) / t16:.2f} answers/s)  speed-up x{t1 / t16:.2f}")
        print(f"  answers equal both ways: {sum(a == b for a, b in zip(a1, a16))} of {len(prompts)}")
        if not opts.skip_xdist:
            ts, outcome_s = timed_suite(url, pair.finetuned, [])
            tx, outcome_x = timed_suite(url, pair.finetuned, ["-n", "4"])
            print("example suite against one server")
            print(f"  serial : {ts:7.1f} s  ({outcome_s})")
            print(f"  -n 4   : {tx:7.1f} s  ({outcome_x})  speed-up x{ts / tx:.2f}")
    finally:
        proc.terminate()
        proc.wait()
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
