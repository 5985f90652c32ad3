"""Command line: ``python -m pytest_ftmodel demo DIR`` (and, later, review commands)."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pytest_ftmodel", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="build the tiny demo base and fine-tuned models into DIR and print their paths")
    demo.add_argument("dir", metavar="DIR", help="folder to build into (created if missing)")
    demo.add_argument("--family", choices=("byte", "bpe", "all"), default="all", help="tokenizer family (default: all)")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
