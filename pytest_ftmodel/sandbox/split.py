"""Which problems can be judged split, and how: the candidate's module on one side, the tests on
the other, and the names the tests call across (found from the tests' source, never by running it).

A problem splits when every name its tests take from the candidate is a function they call (or
hand to a function they call, as HumanEval's ``check(candidate)`` does). Tests that use the
candidate's classes, constants or module state need the candidate's objects: those problems are
judged in-process, and the reason is given."""

from __future__ import annotations

import ast
import builtins
from dataclasses import dataclass


@dataclass(frozen=True)
class SplitPlan:
    candidate: str  # the candidate's module
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
        return set()  # it fails to load either way: split judging reports that
    return {n.name for n in ast.iter_child_nodes(tree) if isinstance(n, ast.ClassDef)}


def plan_humaneval(prompt: str, code: str, test: str, entry_point: str) -> SplitPlan | str:
    """A HumanEval problem's split, or why it cannot split."""
    candidate = f"{prompt}{code}\n"
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
    if entry_point in _defined_classes(candidate):
        return f"{entry_point} is a class"
    return SplitPlan(candidate, tests, (entry_point,), prompt if free else "")


def plan_short(code: str, test_code: str) -> SplitPlan | str:
    """A short-form problem's split (the tests call the candidate's top-level functions), or why not."""
    try:
        tree, free = _free_names(test_code)
    except (SyntaxError, ValueError) as exc:
        return f"its tests do not parse alone ({exc.__class__.__name__})"
    if not free:
        return "its tests call nothing of the candidate's"
    not_called = _called_only(tree, free)
    if not_called:
        return f"its tests use {', '.join(sorted(not_called))} other than by calling"
    classes = free & _defined_classes(code)
    if classes:
        return f"the candidate defines {', '.join(sorted(classes))} as a class"
    return SplitPlan(f"{code}\n", f"{test_code}\n", tuple(sorted(free)))
