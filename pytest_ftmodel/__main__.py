"""Command line: ``demo DIR`` builds the demo models; ``review SHEET`` and ``ab SHEET`` walk a person
through the unscored items of a sheet, saving after every answer."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, Sequence


def _demo(args: argparse.Namespace) -> int:
    from pytest_ftmodel.demo import FAMILIES, build_demo

    families = FAMILIES if args.family == "all" else (args.family,)
    for family in families:
        pair = build_demo(family, args.dir)
        print(f"{family}/base:      {pair.base}")
        print(f"{family}/finetuned: {pair.finetuned}")
    print(f"data:           {pair.data}")
    print(f"\nrun: pytest example_suite --model {args.dir}/{families[0]}/finetuned --base-model {args.dir}/{families[0]}/base")
    return 0


class _Quit(Exception):
    pass


def _ask(question: str, valid: Callable[[str], bool], hint: str) -> str:
    """Ask until the answer is valid; 'q' (or end of input) quits, 's' skips."""
    while True:
        try:
            answer = input(question).strip()
        except EOFError:
            raise _Quit from None
        low = answer.lower()
        if low in ("q", "quit"):
            raise _Quit
        if low in ("s", "skip") or valid(answer):
            return answer
        print(f"  {hint}")


def _show_item(item: dict[str, Any], **answers: str) -> None:
    """An item as a reviewer sees it: prompt, expected output, then the answers (label=field)."""
    print(f"\n=== {item['id']} ===")
    for label, field in {"prompt": "prompt", "expected": "expected", **answers}.items():
        if item.get(field) is not None:
            print(f"--- {label} ---\n{str(item[field]).rstrip() or '(empty)'}")


def _review(args: argparse.Namespace) -> int:
    from pytest_ftmodel.human import EVAL_FORMAT, is_scored, read_sheet, write_atomic

    sheet = read_sheet(args.sheet, EVAL_FORMAT)
    todo = [it for it in sheet["items"] if not is_scored(it)]
    print(f"{len(todo)} of {len(sheet['items'])} items await review in {args.sheet}. Scores 1-5; s skips an item, q quits (saved after every answer).")
    done = 0
    try:
        for item in todo:
            _show_item(item, answer="generated")
            skipped = False
            for criterion, value in item["scores"].items():
                if value is not None:
                    continue
                answer = _ask(f"{criterion} (1-5): ", lambda a: a in ("1", "2", "3", "4", "5"), "enter a whole number 1-5, s to skip this item, q to quit")
                if answer.lower() in ("s", "skip"):
                    skipped = True
                    break
                item["scores"][criterion] = int(answer)
                if args.judge:
                    item["reviewer"] = args.judge
                write_atomic(args.sheet, sheet)
            if skipped:
                continue
            notes = _ask("notes (enter for none): ", lambda a: True, "")
            if notes.lower() not in ("s", "skip") and notes:
                item["notes"] = notes
                write_atomic(args.sheet, sheet)
            done += 1
    except (_Quit, KeyboardInterrupt):
        print("\nstopped; every answer given so far is saved.")
    left = sum(not is_scored(it) for it in sheet["items"])
    print(f"{done} item(s) scored in this session; {left} await review.")
    return 0


def _ab(args: argparse.Namespace) -> int:
    from pytest_ftmodel.human import AB_FORMAT, read_sheet, write_atomic

    sheet = read_sheet(args.sheet, AB_FORMAT)
    todo = [it for it in sheet["items"] if not any(j["judge"] == args.judge for j in it["judgements"])]
    print(f"{len(todo)} of {len(sheet['items'])} comparisons await {args.judge} in {args.sheet}. A, B or t (tie); s skips, q quits.")
    done = 0
    try:
        for item in todo:
            _show_item(item, A="A", B="B")
            choice = _ask("better answer (A/B/t): ", lambda a: a.lower() in ("a", "b", "t", "tie"), "enter A, B or t for a tie; s to skip, q to quit")
            if choice.lower() in ("s", "skip"):
                continue
            choice = {"a": "A", "b": "B"}.get(choice.lower(), "tie")
            reason = _ask("reason (enter for none): ", lambda a: True, "")
            item["judgements"].append({"judge": args.judge, "choice": choice, "reason": "" if reason.lower() in ("s", "skip") else reason})
            write_atomic(args.sheet, sheet)
            done += 1
    except (_Quit, KeyboardInterrupt):
        print("\nstopped; every answer given so far is saved.")
    print(f"{done} comparison(s) judged in this session.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pytest_ftmodel", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="build the tiny demo base and fine-tuned models into DIR and print their paths")
    demo.add_argument("dir", metavar="DIR", help="folder to build into (created if missing)")
    demo.add_argument("--family", choices=("byte", "bpe", "all"), default="all", help="tokenizer family (default: all)")
    demo.set_defaults(func=_demo)
    review = sub.add_parser("review", help="score the unscored items of an evaluation sheet (1-5 per criterion, notes)")
    review.add_argument("sheet", metavar="SHEET", help="the evaluation sheet (JSON) written by evaluation_sheet()")
    review.add_argument("--judge", metavar="NAME", default=None, help="who is scoring (recorded per item)")
    review.set_defaults(func=_review)
    ab = sub.add_parser("ab", help="judge the blinded A/B comparisons of an A/B sheet")
    ab.add_argument("sheet", metavar="SHEET", help="the A/B sheet (JSON) written by ab_sheet()")
    ab.add_argument("--judge", metavar="NAME", required=True, help="who is judging (several judges may judge one sheet)")
    ab.set_defaults(func=_ab)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from pytest_ftmodel.errors import FTModelError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except FTModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
