"""Which problems can be judged split, and how: the candidate's module on one side, the tests on
the other, and the names the tests call across (found from the tests' source, never by running it).

The plan is a function of the problem alone (its prompt, tests and entry point), never of an
answer: an answer cannot choose to be judged in-process, where it could tamper with its tests.

A problem splits when every name its tests take from the candidate is a function they call (or
hand to a function they call, as HumanEval's ``check(candidate)`` does) for plain data. Tests that
use the candidate's classes, constants, module state, or the objects its functions return need the
candidate's objects: those problems are judged in-process, and the reason is given."""

from __future__ import annotations

import ast
import builtins
from dataclasses import dataclass

from pytest_ftmodel._stack import SessionStack
from pytest_ftmodel.errors import FTModelError


JUDGING = ("auto", "split-only")


class JudgingRefused(FTModelError, RuntimeError):
    """``split-only`` judging was asked for and a problem needs in-process judging."""


_judging: SessionStack[str] = SessionStack("auto")


def default_judging() -> str:
    """The judging asked for by the running pytest session (``--sandbox-judging``), else "auto"."""
    return _judging.current()


push_judging, pop_judging = _judging.push, _judging.pop


def check_judging(choice: str) -> str:
    if choice not in JUDGING:
        raise ValueError(f"unknown sandbox judging {choice!r}: use {' or '.join(map(repr, JUDGING))}")
    return choice


@dataclass(frozen=True)
class SplitPlan:
    tests: str  # run in the judge's process
    names: tuple[str, ...]  # the candidate's functions the tests call
    preamble: str = ""  # the problem's own text the tests need (e.g. a HumanEval helper), run before them


def _bound_and_loaded(tree: ast.AST) -> tuple[set[str], dict[str, list[ast.Name]]]:
    bound: set[str] = set()
    loaded: dict[str, list[ast.Name]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            if isinstance(node.ctx, ast.Load):
                loaded.setdefault(node.id, []).append(node)
            else:
                bound.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
    return bound, loaded


def _called_only(tree: ast.AST, names: set[str]) -> set[str]:
    """Those of ``names`` used other than as a call's function or a call's argument."""
    allowed: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            for part in (node.func, *node.args, *(k.value for k in node.keywords)):
                if isinstance(part, ast.Name):
                    allowed.add(id(part))
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id in names and id(n) not in allowed}


def _free_names(source: str) -> tuple[ast.AST, set[str]]:
    tree = ast.parse(source)
    bound, loaded = _bound_and_loaded(tree)
    return tree, {n for n in loaded if n not in bound and not hasattr(builtins, n)}


def _defined_classes(source: str) -> set[str]:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return set()
    return {n.name for n in ast.iter_child_nodes(tree) if isinstance(n, ast.ClassDef)}


def _results_used_as_objects(tree: ast.AST, names: set[str]) -> set[str]:
    """Those of ``names`` whose call's result the tests take an attribute of (``Stack().push(1)``,
    or ``s = make(); s.push(1)``): they need the object itself, not a plain copy of it."""

    def called(node: ast.AST) -> str | None:
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in names:
            return node.func.id
        return None

    holders: dict[str, set[str]] = {}  # variable -> the names whose results it held
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AnnAssign, ast.NamedExpr)) and node.value is not None:
            source = called(node.value)
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets if source else ():
                if isinstance(target, ast.Name):
                    holders.setdefault(target.id, set()).add(source)  # type: ignore[arg-type]
        elif isinstance(node, ast.withitem) and isinstance(node.optional_vars, ast.Name):
            source = called(node.context_expr)
            if source:
                holders.setdefault(node.optional_vars.id, set()).add(source)
    used: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            direct = called(node.value)
            if direct:
                used.add(direct)
            elif isinstance(node.value, ast.Name):
                used |= holders.get(node.value.id, set())
    return used


def candidate_module(prompt: str, code: str) -> str:
    """The candidate's module of a HumanEval answer: its prompt and the completion."""
    return f"{prompt}{code}\n"


def plan_humaneval(prompt: str, test: str, entry_point: str) -> SplitPlan | str:
    """A HumanEval problem's split, or why it cannot split: from the problem alone."""
    tests = f"{test}\n\ncheck({entry_point})\n"
    try:
        _, free = _free_names(tests)
        prompt_bound = _bound_and_loaded(ast.parse(prompt))[0]
    except (SyntaxError, ValueError) as exc:
        return f"its tests or prompt do not parse alone ({exc.__class__.__name__})"
    free.discard(entry_point)
    missing = sorted(free - prompt_bound)
    if missing:
        return f"its tests use {', '.join(missing)}, which only the candidate's module defines"
    if entry_point in _defined_classes(prompt):
        return f"its prompt defines {entry_point} as a class"
    return SplitPlan(tests, (entry_point,), prompt if free else "")


def plan_short(test_code: str) -> SplitPlan | str:
    """A short-form problem's split (the tests call the candidate's top-level functions for plain
    data), or why not: from the problem's tests alone."""
    try:
        tree, free = _free_names(test_code)
    except (SyntaxError, ValueError) as exc:
        return f"its tests do not parse alone ({exc.__class__.__name__})"
    if not free:
        return "its tests call nothing of the candidate's"
    not_called = _called_only(tree, free)
    if not_called:
        return f"its tests use {', '.join(sorted(not_called))} other than by calling"
    classes = sorted(n for n in free if n[:1].isupper())  # CapWords: PEP 8's names of classes
    if classes:
        return f"its tests call {', '.join(classes)}, named as a class"
    objects = _results_used_as_objects(tree, free)
    if objects:
        verb = "returns" if len(objects) == 1 else "return"
        return f"its tests take attributes of what {', '.join(sorted(objects))} {verb}"
    return SplitPlan(f"{test_code}\n", tuple(sorted(free)))
