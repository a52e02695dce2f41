"""The ``infercore`` command line.

Each subcommand lives in ``infercore.cli.<name>`` with ``add_parser(subparsers)`` that registers it
and sets ``func(args) -> int``, and optionally ``preflight(args) -> Preflight``: the files it will
write, the optional modules and the backends it will need for these arguments. ``main`` checks
those before ``func`` runs, so that a command that cannot finish refuses before any work. A module's
``VERDICT`` says what exit status 1 means for it (None: it gives no verdict).

The conventions (docs/cli.md): ``--json`` prints JSON to stdout; ``-o/--output FILE`` writes the
command's main file (``-``: stdout); ``-b/--backends`` (``-b/--backend`` where one runs); errors
name flags, not Python parameters; runtimes' own log lines stay off the console unless ``--debug``.

Exit status, every command:

- 0: ok.
- 1: the command ran and its verdict is negative (compare: a mismatch; bench: ``--strict`` and a
  warning; quantize: the drop exceeds ``--max-drop``). Never an error.
- 2: any error: a usage error (argparse's own, ``UsageError``, a library ``ArgumentError`` shown
  with the flag's name in place of the parameter's, an unknown backend), a file that cannot be
  read or written, a missing extra, a backend or configuration that failed.

Errors print one line (``infercore CMD: error: ...``); ``--debug`` (before or after the command
name) adds the traceback and the runtimes' logs, never another status. Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
import traceback
import warnings
from collections.abc import Sequence

from .. import __version__
from ..errors import ArgumentError, InfercoreError
from .common import EXIT_ERROR, EXIT_OK, EXIT_VERDICT, check_preflight

__all__ = ["COMMANDS", "EXIT_ERROR", "EXIT_OK", "EXIT_VERDICT", "build_parser", "flag_for", "main"]

COMMANDS = (
    "backends", "inspect", "run", "compare", "bench", "quantize", "convert", "optimize", "profile", "serve", "sign",
    "verify",
)
EXIT_INTERRUPTED = 130


def exit_help(verdict: str | None) -> str:
    """The exit status block every ``--help`` ends with."""
    one = f"the command ran and its verdict is negative: {verdict}" if verdict else "not used (no verdict)"
    return (
        "exit status:\n"
        f"  {EXIT_OK}  ok\n"
        f"  {EXIT_VERDICT}  {one}\n"
        f"  {EXIT_ERROR}  error: a bad option, a file that cannot be read or written, a missing extra,\n"
        "     a backend or configuration that failed"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="infercore",
        description="Run deep-learning models the same way on every inference runtime.",
        epilog=exit_help(
            "compare: a mismatch; bench: --strict and a warning; quantize, optimize: drop above --max-drop"
        )
        + "\n\nconventions: docs/cli.md",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"infercore {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and the runtimes' own logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"{__package__}.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"{__package__}.{name}":
                continue  # a command not shipped in this build
            raise
        module.add_parser(sub)
        p = sub.choices[name]
        # also accepted after the command; SUPPRESS keeps a --debug given before it
        p.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS,
            help="show tracebacks and the runtimes' own logs",
        )  # fmt: skip
        p.formatter_class = argparse.RawDescriptionHelpFormatter
        p.epilog = (p.epilog + "\n\n" if p.epilog else "") + exit_help(getattr(module, "VERDICT", None))
    return parser


def flag_for(parser: argparse.ArgumentParser, parameter: str, overrides: dict[str, str] | None = None) -> str:
    """The flag of ``parser`` that sets the library parameter ``parameter`` (``threads`` ->
    ``--threads``, ``shapes`` -> ``--shape``): a command's own ``param_flags`` first, else the option
    whose destination is the parameter's name (or its singular); the parameter itself otherwise."""
    if overrides and parameter in overrides:
        return overrides[parameter]
    for dest in (parameter, parameter.removesuffix("s")):
        for action in parser._actions:
            if action.dest == dest and action.option_strings and action.help != argparse.SUPPRESS:
                return max(action.option_strings, key=len)
            if action.dest == dest and not action.option_strings:
                return action.metavar if isinstance(action.metavar, str) else dest.upper()
    return parameter


def _configure_logging(debug: bool) -> None:
    """Our own warnings on stderr; third-party log records (a runtime's Python logger) and
    warnings only with ``--debug``."""
    if not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        if not debug:
            handler.addFilter(lambda r: r.name == "infercore" or r.name.startswith("infercore."))
        logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, handlers=[handler])
    if not debug:
        warnings.filterwarnings("ignore", module=r"(?!infercore\b)")


def main(argv: Sequence[str] | None = None) -> int:
    from ..backends import quiet_runtimes, runtimes_quiet

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_ERROR
    was_quiet = runtimes_quiet()
    with warnings.catch_warnings():
        _configure_logging(args.debug)
        quiet_runtimes(not args.debug)
        try:
            return _run(parser, args)
        finally:
            quiet_runtimes(was_quiet)


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    try:
        preflight = getattr(args, "preflight", None)
        if preflight is not None:
            check_preflight(preflight(args))
        code: int = args.func(args)
        return code
    except KeyboardInterrupt:
        print("infercore: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `infercore ... | head`: the reader left; not an error of ours
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return EXIT_OK
    except Exception as e:
        if args.debug:  # the traceback, then the same exit status as without --debug
            traceback.print_exc()
        if isinstance(e, ArgumentError):
            sub = parser._subparsers._group_actions[0].choices[args.command]  # type: ignore[union-attr,index]
            flag = flag_for(sub, e.parameter, getattr(args, "param_flags", None))
            print(f"infercore {args.command}: error: {flag}: {e.reason}", file=sys.stderr)
            return EXIT_ERROR
        if isinstance(e, (InfercoreError, OSError, ValueError)):
            message = " ".join(str(e).split())  # one line, whatever the runtime's message held
            print(f"infercore {args.command}: error: {message}", file=sys.stderr)
            return EXIT_ERROR
        # a bug, or an error nobody translated: still one line, the traceback on request
        message = " ".join(str(e).split())
        hint = "" if args.debug else " (run with --debug for the traceback)"
        print(f"infercore {args.command}: unexpected error: {type(e).__name__}: {message}{hint}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
