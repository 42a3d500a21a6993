"""The `avis` command line: one subcommand per module in `avis.cli`.

Each subcommand module defines `register(subparsers) -> None`, which adds its parser and sets
`func` (a callable taking the parsed `argparse.Namespace` and returning an exit code).
Heavy imports (torch, PyAV) happen inside the handlers so that `avis --help` stays fast.

Errors: an `AvisError` (bad input, bad file, bad weights) and an `OSError` (disk full,
permission denied) are printed as one line, exit code 1; Ctrl-C exits with 130. Any other
exception is a bug in avis: it is printed as one line saying so, and `-v` / `--verbose`
shows its traceback (the exception is re-raised).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from avis import __version__
from avis.cli.args import Parser
from avis.errors import AvisError
from avis.runtime import enable_huge_page_allocations

# Loggers that report progress at INFO level by default (training runs); every other logger
# shows warnings and errors only, unless --verbose.
PROGRESS_LOGGERS = ("avis.train",)
EXIT_INTERRUPTED = 130

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
    "avis.cli.eval_seeds",
    "avis.cli.serve",
)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="avis",
        description="Audio-visual instance segmentation: find, segment, classify and track "
        "every sounding object in a video.",
    )
    parser.add_argument("--version", action="version", version=f"avis {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        for name in PROGRESS_LOGGERS:
            logging.getLogger(name).setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    verbose = bool(getattr(args, "verbose", False))
    _configure_logging(verbose)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    enable_huge_page_allocations()  # before the handler's first tensor (see avis.runtime)
    prefix = f"avis {args.command}"
    try:
        return int(args.func(args) or 0)
    except AvisError as err:
        print(f"{prefix}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\n{prefix}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `avis ... | head`: the reader left; say nothing more
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - python flushes stdout at exit
        return 1
    except OSError as err:  # the file system said no (disk full, permission, ...)
        if verbose:
            raise
        print(f"{prefix}: error: {err}", file=sys.stderr)
        return 1
    except Exception as err:
        if verbose:
            raise
        print(
            f"{prefix}: internal error: {type(err).__name__}: {err}\n"
            "This is a bug in avis: please report it with the traceback that "
            f"`avis --verbose {args.command} ...` prints.",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
