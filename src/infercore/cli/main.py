"""The ``infercore`` command line.

Each subcommand lives in ``infercore.cli.<name>`` with ``add_parser(subparsers)`` that
registers it and sets ``func(args) -> int``. Errors print one line and exit non-zero; the
traceback only with ``--debug`` (before or after the command name).

Exit status, every command: 0 success; 1 the command failed (a model or data file that cannot be
read or does not fit, a runtime error); 2 a usage error: argparse's own (an unknown option, a bad
value) and those found later (``UsageError``, an ``ArgumentError`` of the library, shown with the
flag's name in place of the parameter's, an unknown backend name). A command may set
``error_status`` to report failures with another code: ``compare`` exits 2 on any failure, like
``diff``, so that 1 always means "the backends disagree".
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
import traceback
from collections.abc import Sequence

from .. import __version__
from ..errors import ArgumentError, InfercoreError, UnknownBackendError, UsageError

COMMANDS = ("backends", "inspect", "run", "compare", "bench", "quantize", "serve")
EXIT_ERROR, EXIT_USAGE = 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="infercore", description="Run deep-learning models the same way on every inference runtime."
    )
    parser.add_argument("--version", action="version", version=f"infercore {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"{__package__}.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"{__package__}.{name}":
                continue  # a command not shipped in this build
            raise
        module.add_parser(sub)
        # also accepted after the command; SUPPRESS keeps a --debug given before it
        sub.choices[name].add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks and debug logs"
        )
    return parser


def flag_for(parser: argparse.ArgumentParser, parameter: str, overrides: dict[str, str] | None = None) -> str:
    """The flag of ``parser`` that sets the library parameter ``parameter`` (``threads`` ->
    ``--threads``, ``shapes`` -> ``--shape``): a command's own ``param_flags`` first, else the option
    whose destination is the parameter's name (or its singular); the parameter itself otherwise."""
    if overrides and parameter in overrides:
        return overrides[parameter]
    for dest in (parameter, parameter.removesuffix("s")):
        for action in parser._actions:
            if action.dest == dest and action.option_strings:
                return max(action.option_strings, key=len)
            if action.dest == dest and not action.option_strings:
                return action.metavar if isinstance(action.metavar, str) else dest.upper()
    return parameter


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    failed: int = getattr(args, "error_status", EXIT_ERROR)
    try:
        code: int = args.func(args)
        return code
    except KeyboardInterrupt:
        print("infercore: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `infercore ... | head`: the reader left; not an error of ours
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
    except Exception as e:
        if args.debug:  # the traceback, then the same exit status as without --debug
            traceback.print_exc()
        if isinstance(e, ArgumentError):
            sub = parser._subparsers._group_actions[0].choices[args.command]  # type: ignore[union-attr,index]
            flag = flag_for(sub, e.parameter, getattr(args, "param_flags", None))
            print(f"infercore {args.command}: error: {flag}: {e.reason}", file=sys.stderr)
            return EXIT_USAGE
        if isinstance(e, (UsageError, UnknownBackendError)):
            print(f"infercore {args.command}: error: {e}", file=sys.stderr)
            return EXIT_USAGE
        if isinstance(e, (InfercoreError, OSError, ValueError)):
            print(f"infercore {args.command}: error: {e}", file=sys.stderr)
            return failed
        # a bug, or an error nobody translated: still one line, the traceback on request
        message = " ".join(str(e).split())
        hint = "" if args.debug else " (run with --debug for the traceback)"
        print(f"infercore {args.command}: unexpected error: {type(e).__name__}: {message}{hint}", file=sys.stderr)
        return failed


if __name__ == "__main__":
    sys.exit(main())
