"""The `avis` command line: one subcommand per module in `avis.cli`.

Each subcommand module defines `register(subparsers) -> None`, which adds its parser and sets
`func` (a callable taking the parsed `argparse.Namespace` and returning an exit code).
Heavy imports (torch, PyAV) happen inside the handlers so that `avis --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from avis.errors import AvisError
from avis.runtime import enable_huge_page_allocations

# Order is the order shown by `avis --help`.
# Each helper module appends its line here.
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "avis.cli.synth",
    "avis.cli.data",
    "avis.cli.extract_audio",
    "avis.cli.predict",
    "avis.cli.demo",
    "avis.cli.convert",
    "avis.cli.eval",
    "avis.cli.train",
    "avis.cli.ablate_audio",
    "avis.cli.serve",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="avis",
        description="Audio-visual instance segmentation: find, segment, classify and track "
        "every sounding object in a video.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    enable_huge_page_allocations()  # before the handler's first tensor (see avis.runtime)
    try:
        return int(args.func(args) or 0)
    except AvisError as err:
        print(f"avis {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
