"""lm-evaluation-harness's multiple-choice task files as items for :func:`~pytest_ftmodel.metrics.mc.mc_accuracy`.

The task is read through lm-eval's own task code (its ``TaskManager``, ``doc_to_text``,
``doc_to_choice``, ``doc_to_target``, ``target_delimiter``, description and few-shot examples as the
task configures them), never re-implemented: the prompt of an item is exactly the context lm-eval
builds, and each choice the continuation it scores (its ``target_delimiter`` kept per item).
Needs the ``lm-eval`` extra (``pip install "pytest-ftmodel[lm-eval]"``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pytest_ftmodel.errors import DataError


def _lm_eval() -> Any:
    try:
        import lm_eval.tasks as tasks
    except ImportError:
        raise DataError('mc_items() reads lm-eval task files and needs lm-eval: pip install "pytest-ftmodel[lm-eval]"') from None
    return tasks


def _load_task(task: str | os.PathLike[str]) -> Any:
    tasks = _lm_eval()
    path = Path(task)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise DataError(f"task file {str(path)!r} does not exist: give a task YAML's path or a registered task name")
        from lm_eval.tasks._yaml_loader import load_yaml

        config = load_yaml(path, resolve_func=False)
        name = config.get("task")
        if not isinstance(name, str):
            raise DataError(f"task file {str(path)!r} names no 'task': add `task: <name>` to it")
        # the file's own folder only: indexing the thousands of built-in task files takes seconds
        manager = tasks.TaskManager(include_path=str(path.resolve().parent), include_defaults=False)
    else:
        name, manager = str(task), tasks.TaskManager()
    try:
        found = dict(manager.load(name)["tasks"])
    except (KeyError, ValueError) as exc:
        raise DataError(f"lm-eval has no task {name!r} ({exc}): give a registered task name or a task YAML's path") from None
    if len(found) != 1:
        raise DataError(f"{name!r} is a group of {len(found)} lm-eval tasks: give one task ({', '.join(sorted(found))[:200]})")
    return next(iter(found.values()))


def mc_items(task: str | os.PathLike[str], *, limit: int | None = None) -> list[dict[str, Any]]:
    """The items of an lm-eval multiple-choice task (a registered name such as ``"arc_easy"``, or a
    path to a task YAML), ``limit`` documents at most, as lm-eval would score them: ``{"prompt":
    lm-eval's context, "choices", "answer": gold index, "target_delimiter", "id", "category": the task}``."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise DataError(f"limit={limit!r}: give a whole number of documents, at least 1, or None for all")
    t = _load_task(task)
    name = str(getattr(t.config, "task", task))
    if t.OUTPUT_TYPE != "multiple_choice":
        raise DataError(f"lm-eval task {name!r} is {t.OUTPUT_TYPE!r}, not multiple_choice: mc_items reads multiple-choice tasks")
    if getattr(t, "multiple_input", False):
        raise DataError(f"lm-eval task {name!r} puts its choices in the context (multiple inputs, as winogrande): not supported")
    t.build_all_requests(limit=limit, rank=0, world_size=1)
    by_doc: dict[int, list[Any]] = {}
    for inst in t.instances:
        by_doc.setdefault(inst.doc_id, []).append(inst)
    delimiter = str(t.config.target_delimiter)
    items = []
    for doc_id in sorted(by_doc):
        group = sorted(by_doc[doc_id], key=lambda inst: inst.idx)
        doc = group[0].doc
        contexts = {inst.arguments[0] for inst in group}
        if len(contexts) != 1:
            raise DataError(f"lm-eval task {name!r}, document {doc_id}: its choices have different contexts; not supported")
        choices = [str(c) for c in t.doc_to_choice(doc)]
        conts = [inst.arguments[1] for inst in group][: len(choices)]
        if conts != [delimiter + c for c in choices]:
            raise DataError(f"lm-eval task {name!r}, document {doc_id}: its requests are not target_delimiter + choice")
        gold = t.doc_to_target(doc)
        if isinstance(gold, list):
            if len(gold) != 1:
                raise DataError(f"lm-eval task {name!r}, document {doc_id} has {len(gold)} gold answers: mc_items takes one")
            gold = gold[0]
        if isinstance(gold, str):
            if gold not in choices:
                raise DataError(f"lm-eval task {name!r}, document {doc_id}: gold {gold!r:.40} is not one of its choices")
            gold = choices.index(gold)
        items.append(
            {
                "prompt": contexts.pop(), "choices": choices, "answer": int(gold), "target_delimiter": delimiter,
                "id": f"{name}/{doc_id}", "category": name,
            }
        )
    if not items:
        raise DataError(f"lm-eval task {name!r} gave no documents: check its dataset and split")
    return items
