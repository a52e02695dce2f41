"""One module per runtime. None of them imports its runtime at import time; ``require`` does it
on first use and turns a missing package into an error that names the extra to install."""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from ..errors import BackendError, BackendUnavailableError

__all__ = ["check_options", "require"]


def require(module: str, extra: str, *, package: str | None = None) -> ModuleType:
    """Import an optional runtime, or raise ``BackendUnavailableError`` naming its pip extra."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        what = package or module.split(".")[0]
        raise BackendUnavailableError(
            f'{what} is not installed (import {module!r} failed: {e}): pip install "infercore[{extra}]"'
        ) from e


def check_options(backend: str, options: Mapping[str, Any], valid: Mapping[str, str]) -> None:
    """Refuse unknown option keys, suggesting the closest valid one and listing them all.

    ``valid`` maps each option name to a short description of what it takes.
    """
    unknown = [k for k in options if k not in valid]
    if not unknown:
        return
    hints = []
    for k in unknown:
        close = difflib.get_close_matches(str(k), list(valid), n=1)
        hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    listed = "; ".join(f"{k}: {v}" for k, v in valid.items())
    raise BackendError(f"{backend}: unknown option(s) {', '.join(hints)}. Valid options: {listed}")
