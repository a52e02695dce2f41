"""One module per runtime. None of them imports its runtime at import time: ``infercore.optional.require``
does it on first use and turns a missing package into an error that names the extra to install."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from ..errors import BackendError

__all__ = ["check_options"]


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
