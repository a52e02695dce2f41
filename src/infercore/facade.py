"""A tool module that doubles as its function: ``ic.compare(...)`` and ``ic.convert(...)``.

The function ``ic.compare`` and the module ``infercore.compare`` share a name, and Python's import
system binds a submodule to its package's attribute: once anything imports ``infercore.compare``
(the CLI does), ``ic.compare`` is the module. Making that module callable as its function keeps
``ic.compare(...)`` working whichever import came first, and ``import infercore.compare as c`` /
``from infercore.compare import Tolerance`` keep finding the module.
"""

from __future__ import annotations

import sys
import types
from typing import Any

__all__ = ["callable_module"]


class _CallableModule(types.ModuleType):
    """A module whose call is its function of the same name (see the module docstring)."""

    __function__: str

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(self, self.__function__)(*args, **kwargs)


def callable_module(module_name: str, function: str) -> None:
    """Make the loaded module ``module_name`` callable as its function ``function``."""
    module = sys.modules[module_name]
    module.__class__ = _CallableModule
    module.__function__ = function  # type: ignore[attr-defined]
