"""Optional dependencies, imported on first use.

``import infercore`` imports numpy and pluggy only. Everything else (a runtime, onnx, Pillow,
tokenizers, matplotlib, the server's web stack) is imported by ``require`` where it is needed, and
a missing one becomes a ``BackendUnavailableError`` (also an ``ImportError``) that names the pip
extra installing it. ``missing`` answers the same question without raising, so that a command can
refuse before any work starts.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterable
from types import ModuleType

from .errors import BackendUnavailableError

__all__ = ["install_hint", "missing", "require"]


def install_hint(extra: str) -> str:
    return f'pip install "infercore[{extra}]"'


def require(module: str, extra: str, *, package: str | None = None) -> ModuleType:
    """Import an optional dependency, or raise ``BackendUnavailableError`` naming its pip extra."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        what = package or module.split(".")[0]
        raise BackendUnavailableError(
            f"{what} is not installed (import {module!r} failed: {e}): {install_hint(extra)}"
        ) from e


def missing(modules: Iterable[str]) -> list[str]:
    """The top-level modules of ``modules`` that cannot be found, without importing any of them."""
    out = []
    for m in modules:
        try:
            found = importlib.util.find_spec(m) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            out.append(m)
    return out
