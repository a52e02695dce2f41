"""The ``infercore`` command line: ``main`` (the entry point) and one module per command.

Each command module has ``add_parser(subparsers)``, which registers the command and sets
``func(args) -> int``. The conventions every command follows are in docs/cli.md.
"""

from __future__ import annotations

from .main import main

__all__ = ["main"]
