"""Checks of public arguments, with one error type: ``ArgumentError`` naming the parameter.

Every layer uses these, so that ``ic.load(threads=0)``, ``Batcher(max_batch_size=0)`` and
``benchmark(duration=-1)`` fail the same way, and the CLI can put the flag's name in place of the
parameter's.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any, TypeVar

from .errors import ArgumentError

__all__ = ["check_choice", "check_int", "check_number", "check_timeout"]

T = TypeVar("T")


def check_int(parameter: str, value: Any, *, minimum: int = 1, optional: bool = False) -> int | None:
    """``value`` as an int ``>= minimum`` (bools refused); ``None`` passes when ``optional``."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            import numpy as np

            ok = isinstance(value, np.integer)
        except ImportError:  # pragma: no cover - numpy is a dependency
            ok = False
        if not ok:
            raise ArgumentError(parameter, _expected_int(minimum, optional, value))
        value = int(value)
    if value < minimum:
        raise ArgumentError(parameter, _expected_int(minimum, optional, value))
    return int(value)


def _expected_int(minimum: int, optional: bool, value: Any) -> str:
    what = {1: "a positive integer", 0: "a non-negative integer"}.get(minimum, f"an integer >= {minimum}")
    return f"expected {what}{' or None' if optional else ''}, got {value!r}"


def check_number(
    parameter: str,
    value: Any,
    *,
    minimum: float = 0.0,
    inclusive: bool = True,
    maximum: float | None = None,
    optional: bool = False,
) -> float | None:
    """``value`` as a finite float within ``[minimum, maximum]`` (``(minimum, ...`` when not
    ``inclusive``); ``None`` passes when ``optional``."""
    if value is None and optional:
        return None
    low = "[" if inclusive else "("
    high = f"{maximum:g}]" if maximum is not None else "inf)"
    wanted = (
        f"expected a finite number in {low}{minimum:g}, {high}{' or None' if optional else ''}, got {value!r}"
    )
    if isinstance(value, bool):
        raise ArgumentError(parameter, wanted)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ArgumentError(parameter, wanted) from None
    if not math.isfinite(number) or number < minimum or (number == minimum and not inclusive):
        raise ArgumentError(parameter, wanted)
    if maximum is not None and number > maximum:
        raise ArgumentError(parameter, wanted)
    return number


def check_choice(parameter: str, value: T, choices: Collection[T], *, optional: bool = False) -> T:
    """``value`` when it is one of ``choices`` (or ``None`` when ``optional``)."""
    if value is None and optional:
        return value
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise ArgumentError(
            parameter, f"expected one of {listed}{' or None' if optional else ''}, got {value!r}"
        )
    return value


def check_timeout(value: Any, *, zero: bool = False, parameter: str = "timeout") -> float | None:
    """A timeout in seconds, > 0 (>= 0 with ``zero``), or None for none (``inf`` means none too)."""
    if value is None:
        return None
    wanted = f"expected seconds {'>= 0' if zero else '> 0'} (or None: no limit), got {value!r}"
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise ArgumentError(parameter, wanted) from None
    if isinstance(value, bool) or not (t > 0 or (zero and t == 0)):  # also NaN
        raise ArgumentError(parameter, wanted)
    return None if t == math.inf else t
