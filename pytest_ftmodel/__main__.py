"""Command line of pytest-ftmodel.

  demo DIR      put the shipped demo base, fine-tuned and regressed models into DIR (--rebuild: train them)
  review SHEET  score the items of an evaluation sheet, in the terminal or (--web) in the browser
  ab SHEET      judge the blinded A/B comparisons of an A/B sheet, in the terminal or the browser

Every answer is saved the moment it is given, so stopping at any time loses nothing."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import Any, Callable, Sequence


def _demo(args: argparse.Namespace) -> int:
    from pytest_ftmodel.demo import FAMILIES, SEED, build_demo

    if args.seed is not None and not args.rebuild:
        print("pytest-ftmodel demo: --seed sets the training seed of a rebuild: add --rebuild", file=sys.stderr)
        return 2
    families = FAMILIES if args.family == "all" else (args.family,)
    for family in families:
        try:
            pair = build_demo(family, args.dir, rebuild=args.rebuild, seed=SEED if args.seed is None else args.seed)
        except OSError as exc:  # a link planted in DIR (refused), no room, no rights: one line
            print(f"pytest-ftmodel demo: {exc.filename or args.dir}: {exc.strerror or exc}", file=sys.stderr)
            return 1
        print(f"{family}/base:      {pair.base}")
        print(f"{family}/finetuned: {pair.finetuned}")
        print(f"{family}/regressed: {pair.regressed}  (under-trained: worse per item, above every bar)")
    print(f"data:           {pair.data}")
    print(f"\nrun: pytest example_suite --model {args.dir}/{families[0]}/finetuned --base-model {args.dir}/{families[0]}/base")
    return 0


class _Quit(Exception):
    pass


class _Back(Exception):
    pass


def shown(text: Any) -> str:
    """Untrusted text made safe for a terminal: control characters (ANSI escapes included) and bidi
    overrides become visible escapes instead of acting on the terminal."""
    from pytest_ftmodel.escaping import visible

    return visible(text)


def _ask(question: str, valid: Callable[[str], bool], hint: str, *, back: tuple[str, ...] = ("b", "back", "p")) -> str:
    """Ask until the answer is valid; 'q' (or end of input) quits, 's' skips, ``back`` goes back."""
    while True:
        try:
            answer = input(question).strip()
        except EOFError:
            raise _Quit from None
        low = answer.lower()
        if low in ("q", "quit"):
            raise _Quit
        if low in back:
            raise _Back
        if low in ("s", "skip") or valid(answer):
            return answer
        print(f"  {hint}")


def _show_item(item: dict[str, Any], where: str, **answers: str) -> None:
    """An item as a reviewer sees it: prompt, expected output, then the answers (label=field)."""
    print(f"\n=== {where}: {shown(item['id'])} ===")
    for label, field in {"prompt": "prompt", "expected": "expected", **answers}.items():
        if item.get(field) is not None:
            print(f"--- {label} ---\n{shown(str(item[field]).rstrip()) or '(empty)'}")


def _walk(
    n_items: int,
    todo: Callable[[int], bool],
    visit: Callable[[int], None],
) -> None:
    """Visit items in order, starting at the first one left to do; ``visit`` raises _Back to go to the
    previous item (visited whether done or not, to change it). Skipped items are not offered again in
    this session. (What was saved is counted by the callers: a Ctrl-C or q ends this walk half-way.)"""
    skipped: set[int] = set()

    def next_todo(after: int) -> int | None:
        order = list(range(after + 1, n_items)) + list(range(0, after + 1))
        return next((i for i in order if todo(i) and i not in skipped), None)

    current = next_todo(-1)
    while current is not None:
        try:
            visit(current)
        except _Back:
            if current == 0:
                print("  this is the first item")
            current = max(current - 1, 0)
            continue
        except _Skip:
            skipped.add(current)
        current = next_todo(current)


class _Skip(Exception):
    pass


def _reviewer(args: argparse.Namespace) -> str:
    from pytest_ftmodel.human import check_name

    name = args.judge
    if not name:
        try:
            name = getpass.getuser()
        except Exception:  # no login name (some containers): ask for one instead of guessing
            raise SystemExit("error: no login name to record your scores under: pass --judge NAME") from None
    return check_name(name)


def _review(args: argparse.Namespace) -> int:
    from pytest_ftmodel.human import EVAL_FORMAT, is_scored, read_sheet, set_review

    if args.web:
        return _web(args, "review")
    reviewer = _reviewer(args)
    sheet = read_sheet(args.sheet, EVAL_FORMAT)
    if any(it["reviews"].get(reviewer, {}).get("kind") == "auto" for it in sheet["items"]):
        # its scores are not a person's to see or change (as on the review page)
        raise SystemExit(f"error: '{shown(reviewer)}' is an automated judge of this sheet; review under your own name (--judge NAME)")
    criteria, n = sheet["criteria"], len(sheet["items"])
    ids = [it["id"] for it in sheet["items"]]
    mine: dict[Any, dict[str, Any]] = {
        it["id"]: it["reviews"][reviewer] for it in sheet["items"] if reviewer in it["reviews"]
    }
    saved: set[Any] = set()  # items given a score or a note in this session, counted however it ends

    def left() -> int:
        return sum(not _complete(mine.get(i)) for i in ids)

    def _complete(review: dict[str, Any] | None) -> bool:
        return review is not None and all(review["scores"].get(c) is not None for c in criteria)

    if not n or not left():
        print(f"nothing left: all {n} items of {args.sheet} are scored by {reviewer}.")
        return 0
    print(
        f"{reviewer}: {n - left()} of {n} items scored, {left()} left in {args.sheet}.\n"
        "Scores 1-5 (enter keeps a score shown in brackets); b goes back, s skips an item, q quits. Saved after every answer."
    )

    def visit(index: int) -> None:
        item = sheet["items"][index]
        _show_item(item, f"item {index + 1} of {n} ({left()} left)", answer="generated")
        review = mine.get(item["id"])
        if review is not None:
            given = ", ".join(f"{c} {review['scores'].get(c) or '-'}" for c in criteria)
            print(f"--- your scores so far: {given}" + (f"; notes: {shown(review['notes'])}" if review["notes"] else ""))
        for criterion in criteria:
            current = None if review is None else review["scores"].get(criterion)
            prompt = f"{criterion} (1-5){f' [{current}]' if current else ''}: "
            has_score = current is not None
            answer = _ask(prompt, lambda a: a in ("1", "2", "3", "4", "5") or (a == "" and has_score),
                          "enter a whole number 1-5, b to go back, s to skip this item, q to quit")
            if answer.lower() in ("s", "skip"):
                raise _Skip
            if answer:
                review = mine[item["id"]] = set_review(args.sheet, item["id"], reviewer, scores={criterion: int(answer)})
                saved.add(item["id"])
        assert review is not None
        kept = f" [{shown(review['notes'])}]" if review["notes"] else ""
        notes = _ask(f"notes (enter for {'no change' if kept else 'none'}){kept}: ", lambda a: True, "")
        if notes and notes.lower() not in ("s", "skip"):
            mine[item["id"]] = set_review(args.sheet, item["id"], reviewer, notes=notes)
            saved.add(item["id"])

    try:
        _walk(n, lambda i: not _complete(mine.get(ids[i])), visit)
    except (_Quit, KeyboardInterrupt):
        print("\nstopped; every answer given so far is saved.")
    remaining = left()
    partly = sum(not _complete(mine.get(i)) for i in saved)
    print(f"{len(saved)} item(s) reviewed in this session" + (f" ({partly} in part)" if partly else "")
          + f"; {remaining} await review by {reviewer}." + ("" if remaining else " Nothing left."))
    return 0


def _ab(args: argparse.Namespace) -> int:
    from pytest_ftmodel.human import AB_FORMAT, read_sheet, set_judgement

    if args.web:
        return _web(args, "ab")
    judge = _reviewer(args)
    sheet = read_sheet(args.sheet, AB_FORMAT)
    n = len(sheet["items"])
    mine = {it["id"]: j for it in sheet["items"] for j in it["judgements"] if j["judge"] == judge}
    ids = [it["id"] for it in sheet["items"]]
    saved: set[Any] = set()  # comparisons given a choice or a reason in this session, however it ends

    def left() -> int:
        return sum(i not in mine for i in ids)

    if not n or not left():
        print(f"nothing left: all {n} comparisons of {args.sheet} are judged by {judge}.")
        return 0
    print(
        f"{judge}: {n - left()} of {n} comparisons judged, {left()} left in {args.sheet}.\n"
        "A, B or t (tie), then an optional reason; p goes back to the previous item, s skips, q quits. Saved after every answer."
    )

    def visit(index: int) -> None:
        item = sheet["items"][index]
        _show_item(item, f"item {index + 1} of {n} ({left()} left)", A="A", B="B")
        previous = mine.get(item["id"])
        if previous is not None:
            print(f"--- your choice so far: {previous['choice']}" + (f"; reason: {shown(previous['reason'])}" if previous["reason"] else ""))
        shown_choice = f" [{previous['choice']}]" if previous else ""
        choice = _ask(f"better answer (A/B/t){shown_choice}: ",
                      lambda a: a.lower() in ("a", "b", "t", "tie") or (a == "" and previous is not None),
                      "enter A, B or t for a tie; p goes back, s skips, q quits", back=("p", "back"))
        if choice.lower() in ("s", "skip"):
            raise _Skip
        if choice:  # saved before the reason is asked, so stopping at the reason prompt keeps it
            mine[item["id"]] = set_judgement(args.sheet, item["id"], judge, choice={"a": "A", "b": "B"}.get(choice.lower(), "tie"))
            saved.add(item["id"])
        reason = _ask("reason (enter for none): ", lambda a: True, "", back=())
        if reason and reason.lower() not in ("s", "skip"):
            mine[item["id"]] = set_judgement(args.sheet, item["id"], judge, reason=reason)
            saved.add(item["id"])

    try:
        _walk(n, lambda i: ids[i] not in mine, visit)
    except (_Quit, KeyboardInterrupt):
        print("\nstopped; every answer given so far is saved.")
    remaining = left()
    print(f"{len(saved)} comparison(s) judged in this session; {remaining} await {judge}." + ("" if remaining else " Nothing left."))
    return 0


def _web(args: argparse.Namespace, kind: str) -> int:
    from pytest_ftmodel.review_web import serve_until_interrupted

    return serve_until_interrupted(
        args.sheet, kind, host=args.host, port=args.port, reviewer=args.judge or "", open_browser=not args.no_browser
    )


def _prog() -> str:
    """The program name as it was invoked: ``pytest-ftmodel`` or ``python -m pytest_ftmodel``."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return "python -m pytest_ftmodel" if name in ("", "__main__.py", "-c", "-m") else name


def _web_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--web", action="store_true", help="review in the browser: serve a local page and print its address (default: in the terminal)")
    parser.add_argument("--host", default="127.0.0.1", help="address the page listens on; anything but loopback is reachable by others (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port of the page (default: a free one)")
    parser.add_argument("--no-browser", action="store_true", help="only print the page's address, do not open a browser (default: open one)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=_prog(), description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo", help="put the shipped demo base, fine-tuned and regressed models into DIR and print their paths"
    )
    demo.add_argument("dir", metavar="DIR", help="folder to put them in (created if missing)")
    demo.add_argument("--family", choices=("byte", "bpe", "all"), default="all", help="tokenizer family (default: all)")
    demo.add_argument(
        "--rebuild", action="store_true",
        help="train the models again with the installed libraries instead of copying the shipped ones (seconds of CPU)",
    )
    demo.add_argument("--seed", type=int, default=None, metavar="N", help="training seed of a rebuild (default: the shipped models')")
    demo.set_defaults(func=_demo)
    review = sub.add_parser("review", help="score the items of an evaluation sheet (1-5 per criterion, notes)")
    review.add_argument("sheet", metavar="SHEET", help="the evaluation sheet (JSON) written by evaluation_sheet()")
    review.add_argument("--judge", metavar="NAME", default=None, help="who is scoring; each reviewer's scores are kept apart (default: your login name)")
    _web_options(review)
    review.set_defaults(func=_review)
    ab = sub.add_parser("ab", help="judge the blinded A/B comparisons of an A/B sheet")
    ab.add_argument("sheet", metavar="SHEET", help="the A/B sheet (JSON) written by ab_sheet()")
    ab.add_argument("--judge", metavar="NAME", default=None, help="who is judging; several people may judge one sheet (default: your login name)")
    _web_options(ab)
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
