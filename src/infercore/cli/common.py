"""What several commands share: the input flags and how their values are read."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputSpecError, UsageError
from ..inputs import load_arrays

__all__ = ["add_input_flags", "parse_shape", "read_values"]


def parse_shape(text: str) -> tuple[str, tuple[int, ...] | int]:
    """``x=1x3x224x224`` (an input's shape), ``sequence=128`` (a dimension's size, or a rank-1
    input's shape: both fit), ``sr=`` (a 0-d input)."""
    name, sep, dims = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=1x3x224x224 or DIM=128, got {text!r}")
    try:
        parts = [int(d) for d in dims.lower().replace(",", "x").split("x") if d.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 1x3x224x224 in {text!r}") from None
    if any(d < 0 for d in parts):
        raise argparse.ArgumentTypeError(f"expected sizes >= 0 in {text!r}")
    if len(parts) == 1 and "x" not in dims.lower():
        return name.strip(), parts[0]
    return name.strip(), tuple(parts)


def add_input_flags(p: argparse.ArgumentParser, *, values: bool = True) -> None:
    """``--inputs FILE``, ``-i/--input NAME=VALUE``, ``-s/--shape``, ``--seed``."""
    p.add_argument(
        "--inputs",
        type=Path,
        default=None,
        metavar="DATA",
        help="real inputs: a .npz (arrays named after the inputs), a .npy (a single-input model) or a "
        "directory of them; inputs not given are generated",
    )
    if values:
        p.add_argument(
            "--input",
            "-i",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help="one input: a number that fills the tensor (sr=16000, attention_mask=1) or a .npy file",
        )
    p.add_argument(
        "--shape",
        "-s",
        type=parse_shape,
        action="append",
        default=[],
        metavar="NAME=AxBxC",
        help="an input's shape (x=1x3x224x224, a 0-d input: sr=) or a dynamic dimension's size "
        "(sequence=128); repeatable. Unsized dynamic dimensions: batch 1, others 64",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the generated inputs (default 0)")


def _value(name: str, text: str) -> Any:
    if text.endswith(".npy"):
        a = load_arrays(text, tensor=name)
        if not isinstance(a, np.ndarray):
            raise InputSpecError(f"--input {name}={text}: expected one array (.npy), the file holds {list(a)}")
        return a
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    raise UsageError(f"--input {name}={text}: expected a number, true/false or a .npy file, got {text!r}")


def read_values(items: list[str]) -> dict[str, Any]:
    """``-i NAME=VALUE`` flags as a dict name -> number or array."""
    out: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"--input takes NAME=VALUE, got {item!r}")
        out[name] = _value(name, value)
    return out
