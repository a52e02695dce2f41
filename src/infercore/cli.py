"""The ``infercore`` command line.

Each subcommand lives in ``infercore.commands.<name>`` with ``add_parser(subparsers)`` that
registers it and sets ``func(args) -> int``. Errors print one clear line and exit non-zero; the
traceback only with ``--debug``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from . import __version__
from .errors import InfercoreError

COMMANDS = ("backends", "inspect", "run", "compare", "bench", "quantize", "serve")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="infercore", description="Run deep-learning models the same way on every inference runtime."
    )
    parser.add_argument("--version", action="version", version=f"infercore {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"{__package__}.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"{__package__}.commands.{name}":
                continue  # a command not shipped in this build
            raise
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        code: int = args.func(args)
        return code
    except KeyboardInterrupt:
        print("infercore: interrupted", file=sys.stderr)
        return 130
    except (InfercoreError, OSError, ValueError) as e:
        if args.debug:
            raise
        print(f"infercore {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
