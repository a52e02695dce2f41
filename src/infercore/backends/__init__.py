"""One module per runtime. None of them imports its runtime at import time; ``require`` does it
on first use and turns a missing package into an error that names the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import BackendUnavailableError

__all__ = ["require"]


def require(module: str, extra: str, *, package: str | None = None) -> ModuleType:
    """Import an optional runtime, or raise ``BackendUnavailableError`` naming its pip extra."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        what = package or module.split(".")[0]
        raise BackendUnavailableError(
            f'{what} is not installed (import {module!r} failed: {e}): pip install "infercore[{extra}]"'
        ) from e
