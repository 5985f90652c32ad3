"""pass@k of generated code, every sample run in the sandbox.

Problem formats: HumanEval (``task_id``, ``prompt``, ``test``, ``entry_point``; the program is
prompt + completion + test + ``check(entry_point)``) and the short form (``prompt``, ``test_code``;
the program is completion + test_code).

Judging is split wherever the problem allows (``pytest_ftmodel.sandbox.split``): the candidate's
module runs in its own sandboxed process and the tests in another, calling it with plain data only,
so no answer can reach or tamper with its tests. Other problems run as one program ("in-process").
"""

from __future__ import annotations

import math
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Sequence

from pytest_ftmodel.errors import DataError
from pytest_ftmodel.metrics.stats import beta_interval
from pytest_ftmodel.progress import progress

HUMANEVAL_KEYS = ("task_id", "prompt", "test", "entry_point")
SHORT_KEYS = ("prompt", "test_code")
HUMANEVAL_STOPS = ["\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#"]
_FENCE = re.compile(r"```[ \t]*(?:python|py)?[ \t]*\n(.*?)(?:```|$)", re.DOTALL)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of Chen et al. (2021): ``1 - C(n-c, k) / C(n, k)``, as a stable product."""
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def problem_kind(problem: dict[str, Any]) -> str:
    if all(k in problem for k in HUMANEVAL_KEYS):
        return "humaneval"
    if all(k in problem for k in SHORT_KEYS):
        return "short"
    present = ", ".join(map(repr, problem)) or "none"
    raise DataError(
        f"not a code problem: need {', '.join(HUMANEVAL_KEYS)} (HumanEval) or {', '.join(SHORT_KEYS)} (short form); "
        f"present: {present}"
    )


def check_problems(problems: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    items = list(problems)
    if not items:
        raise DataError("no code problems: a pass@k gate needs at least one")
    for i, p in enumerate(items):
        if not isinstance(p, dict):
            raise DataError(f"problem {i} is {type(p).__name__}, not a record")
        try:
            problem_kind(p)
        except DataError as exc:
            raise DataError(f"problem {i}: {exc}") from None
    return items


def load_problems(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read code problems from JSONL; a malformed line names its line number and missing fields."""
    from pytest_ftmodel.data import load_jsonl

    records = load_jsonl(path)
    for lineno, record in enumerate(records, start=1):
        try:
            problem_kind(record)
        except DataError as exc:
            raise DataError(f"{path}: record {lineno}: {exc}") from None
    return records


def extract_code(completion: str) -> str:
    """The code in an answer: the first fenced block when the answer has one, else the answer."""
    match = _FENCE.search(completion)
    return match.group(1) if match else completion


def build_program(problem: dict[str, Any], completion: str) -> str:
    """The whole program (candidate and tests in one), as in-process judging runs it."""
    code = extract_code(completion)
    if problem_kind(problem) == "humaneval":
        return f"{problem['prompt']}{code}\n\n{problem['test']}\n\ncheck({problem['entry_point']})\n"
    return f"{code}\n\n{problem['test_code']}\n"


def judging_plan(problem: dict[str, Any]) -> Any:
    """How every answer to ``problem`` is judged: a split plan where the problem allows one, else
    the reason it needs in-process judging (a str). A function of the problem alone, never of an
    answer, so no answer can choose to be judged where it could tamper with its tests."""
    from pytest_ftmodel.sandbox.split import plan_humaneval, plan_short

    if problem_kind(problem) == "humaneval":
        return plan_humaneval(str(problem["prompt"]), str(problem["test"]), str(problem["entry_point"]))
    return plan_short(str(problem["test_code"]))


@dataclass(frozen=True)
class Job:
    """One sample's run: split (``plan`` set, ``program`` the candidate's module) or in-process
    (``program`` the whole program, ``reason`` why the problem needs it)."""

    program: str
    plan: Any = None  # pytest_ftmodel.sandbox.split.SplitPlan
    reason: str = ""


def build_job(problem: dict[str, Any], completion: str, plan: Any = None) -> Job:
    """How a sample is judged, by the problem's plan (:func:`judging_plan`, computed here unless given)."""
    from pytest_ftmodel.sandbox.split import candidate_module

    plan = judging_plan(problem) if plan is None else plan
    if isinstance(plan, str):
        return Job(build_program(problem, completion), None, plan)
    code = extract_code(completion)
    module = candidate_module(str(problem["prompt"]), code) if problem_kind(problem) == "humaneval" else f"{code}\n"
    return Job(module, plan)


@dataclass(frozen=True)
class Sample:
    completion: str
    status: str
    stderr: str
    verdict: str = "in-process"  # "split" (tests in a process of their own) or "in-process"


@dataclass(frozen=True)
class ProblemResult:
    task_id: str
    samples: tuple[Sample, ...]
    prompt: str = ""
    test: str = ""  # the problem's test code: with task_id and prompt, its identity for baselines
    in_process: str = ""  # why this problem's samples were judged in-process; "" where they were split

    @property
    def n(self) -> int:
        return len(self.samples)

    @property
    def correct(self) -> int:
        return sum(s.status == "passed" for s in self.samples)


@dataclass(frozen=True)
class CodeResult:
    """pass@k for every asked k (mean of the unbiased estimator over problems), with 95% intervals."""

    pass_at: dict[int, float]
    intervals: dict[int, tuple[float, float]]
    problems: tuple[ProblemResult, ...]
    n: int
    isolation: Any

    def failing(self) -> list[ProblemResult]:
        return [p for p in self.problems if p.correct < p.n]

    @property
    def verdicts(self) -> dict[str, int]:
        """How many samples were judged each way ("split", "in-process")."""
        counts: dict[str, int] = {}
        for problem in self.problems:
            for sample in problem.samples:
                counts[sample.verdict] = counts.get(sample.verdict, 0) + 1
        return counts

    @property
    def in_process(self) -> dict[str, str]:
        """task_id -> why its samples were judged in-process, for every problem judged that way."""
        return {p.task_id: p.in_process for p in self.problems if p.in_process}

    def judged(self) -> str:
        """How the samples were judged, and why any in-process: "8 split" or "7 split, 1 in-process
        (demo/counter: its tests call Counter, named as a class)"."""
        counts = ", ".join(f"{c} {v}" for v, c in sorted(self.verdicts.items(), key=lambda kv: kv[0] != "split"))
        why = "; ".join(f"{task}: {reason}" for task, reason in self.in_process.items())
        return f"{counts} ({why})" if why else counts


def run_programs(programs: Sequence[Any], *, timeout: float, workers: int | None, isolation: str) -> list[Any]:
    """Run jobs in the sandbox in parallel, results in input order: a program (str) in-process, a
    :class:`Job` (:func:`build_job`) as its plan says."""
    from pytest_ftmodel.sandbox import run_sandboxed, run_split

    def run(job: Any) -> Any:
        if isinstance(job, str) or job.plan is None:
            return run_sandboxed(job if isinstance(job, str) else job.program, timeout=timeout, isolation=isolation)
        plan = job.plan
        return run_split(job.program, plan.tests, plan.names, preamble=plan.preamble, timeout=timeout, isolation=isolation)

    # two per core by default: a split run's two processes mostly wait on each other
    with ThreadPoolExecutor(max_workers=workers or 2 * (os.cpu_count() or 1)) as pool, progress("running programs", len(programs)) as bar:
        return list(bar.track(pool.map(run, programs)))


def evaluate_code(
    model: Any,
    problems: Sequence[dict[str, Any]],
    *,
    n: int = 1,
    k: Sequence[int] = (1,),
    temperature: float = 0.8,
    top_p: float = 0.95,
    timeout: float = 10.0,
    max_new_tokens: int = 256,
    seed: int = 0,
    workers: int | None = None,
    isolation: str | None = None,
    judging: str | None = None,
    stop: Sequence[str] | None = None,
    **generate_kwargs: Any,
) -> CodeResult:
    """Generate ``n`` samples per problem (greedy when ``n == 1``, seeded sampling otherwise), run
    each in the sandbox, and estimate pass@k for every ``k <= n``.

    ``judging``: "auto" (split wherever the problem allows, in-process where its tests need the
    candidate's objects) or "split-only" (raise :class:`~pytest_ftmodel.sandbox.split.JudgingRefused`,
    before generating, when any problem would be judged in-process); default ``--sandbox-judging``."""
    from pytest_ftmodel.generation import generate
    from pytest_ftmodel.sandbox import default_isolation
    from pytest_ftmodel.sandbox.split import check_judging, default_judging

    items = check_problems(problems)
    ks = sorted(set(int(x) for x in k))
    if not ks or ks[0] < 1 or ks[-1] > n:
        raise DataError(f"every k must be between 1 and n={n} (got k={list(k)}): raise n or lower k")
    isolation = isolation or default_isolation()
    plans = [judging_plan(p) for p in items]
    if check_judging(judging or default_judging()) == "split-only":
        _refuse_in_process(items, plans)
    by_stops: dict[tuple[str, ...], list[int]] = {}
    for i, p in enumerate(items):
        stops = tuple(stop) if stop is not None else tuple(HUMANEVAL_STOPS if problem_kind(p) == "humaneval" else ())
        by_stops.setdefault(stops, []).append(i)
    completions: list[list[str]] = [[] for _ in items]
    for stops, indices in by_stops.items():
        answers: list[Any] = generate(  # n may be 1 at run time: one string per prompt then
            model,
            [str(items[i]["prompt"]) for i in indices],
            max_new_tokens=max_new_tokens,
            temperature=0.0 if n == 1 else temperature,
            top_p=top_p,
            n=n,
            seed=seed,
            stop=list(stops) or None,
            **generate_kwargs,
        )
        for i, answer in zip(indices, answers):
            completions[i] = [answer] if n == 1 else list(answer)
    programs = [build_job(items[i], c, plans[i]) for i in range(len(items)) for c in completions[i]]
    runs = run_programs(programs, timeout=timeout, workers=workers, isolation=isolation)
    results = []
    for i, problem in enumerate(items):
        mine = runs[i * n : (i + 1) * n]
        samples = tuple(Sample(c, r.status, r.stderr, r.verdict) for c, r in zip(completions[i], mine))
        test = problem.get("test", problem.get("test_code", ""))
        reason = plans[i] if isinstance(plans[i], str) else ""
        results.append(ProblemResult(_task_id(problem, i), samples, str(problem["prompt"]), str(test), reason))
    pass_at = {kk: sum(pass_at_k(n, p.correct, kk) for p in results) / len(results) for kk in ks}
    correct = [p.correct for p in results]
    intervals = {kk: passk_interval(correct, n, kk) for kk in ks}
    return CodeResult(pass_at, intervals, tuple(results), n, runs[0].isolation if runs else None)


def _task_id(problem: dict[str, Any], index: int) -> str:
    return str(problem.get("task_id", f"problem-{index}"))


def _refuse_in_process(items: Sequence[dict[str, Any]], plans: Sequence[Any]) -> None:
    from pytest_ftmodel.sandbox.split import JudgingRefused

    refused = [f"{_task_id(p, i)} ({plan})" for i, (p, plan) in enumerate(zip(items, plans)) if isinstance(plan, str)]
    if refused:
        shown = "; ".join(refused[:3]) + (f"; and {len(refused) - 3} more" if len(refused) > 3 else "")
        raise JudgingRefused(
            f"{len(refused)} of {len(items)} problems would be judged in-process, where an answer can tamper with "
            f"its tests, and --sandbox-judging=split-only refuses that: {shown}; make their tests call the "
            "candidate's functions for plain data, drop them, or use --sandbox-judging=auto"
        )


def passk_interval(correct: Any, n: int, k: int, *, level: float = 0.95) -> Any:
    """95% interval of pass@k from per-problem counts of correct samples out of ``n``.

    Each problem's unbiased estimate lies in [0, 1] and averages to the population's pass@k, so the
    figure is a mean of bounded values: the beta (Clopper-Pearson) interval at the fractional count
    ``sum(estimates)`` of ``problems`` (see :mod:`pytest_ftmodel.metrics.stats`), exact Clopper-Pearson
    when ``n == 1``. Never ``[1, 1]`` for 8 of 8. ``correct`` may be an array ``(..., problems)``;
    a 1-D list gives a pair of floats.
    """
    import numpy as np

    counts = np.asarray(correct, dtype=np.int64)
    table = np.array([pass_at_k(n, c, k) for c in range(n + 1)])
    low, high = beta_interval(table[counts].sum(axis=-1), counts.shape[-1], level=level)
    return (float(low), float(high)) if counts.ndim == 1 else (low, high)
