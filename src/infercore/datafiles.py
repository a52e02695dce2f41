"""Reading arrays from ``.npy``/``.npz`` files, for every command and API that takes data files.

Read without pickle; a file that cannot be read is an ``InputSpecError`` naming it, never a raw
``EOFError`` or ``BadZipFile``.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np

from .errors import InputSpecError

V = TypeVar("V")

__all__ = ["load_arrays", "name_lone_array"]


def load_arrays(
    path: str | os.PathLike[str], *, tensor: str | None = None
) -> np.ndarray | dict[str, np.ndarray]:
    """The array of a ``.npy`` file, or the named arrays of a ``.npz``, read without pickle.

    A file that is missing, empty, truncated or not in NumPy's format raises ``InputSpecError``
    naming the file (and ``tensor``, the input it was meant for, when given).
    """
    p = Path(path)
    what = f"input {tensor!r}: " if tensor else ""
    if not p.is_file():
        raise InputSpecError(
            f"{what}{p}: {'is not a file' if p.exists() else 'file not found'}; expected a .npy or .npz file",
            tensor=tensor,
        )
    if p.stat().st_size == 0:
        raise InputSpecError(f"{what}{p} is empty (0 bytes); expected a .npy or .npz file", tensor=tensor)
    with open(p, "rb") as f:
        head = f.read(6)
    if head != b"\x93NUMPY" and not head.startswith(b"PK"):  # neither .npy's magic nor a zip (.npz)
        raise InputSpecError(
            f"{what}{p} is not a .npy or .npz file (it starts with {head!r}); save arrays with np.save / np.savez",
            tensor=tensor,
        )
    try:
        data = np.load(p, allow_pickle=False)
        if isinstance(data, np.ndarray):
            return data
        with data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError) as e:
        reason = "truncated" if isinstance(e, EOFError) else str(e).split(". ")[0]
        raise InputSpecError(
            f"{what}cannot read {p} as a .npy/.npz file ({p.stat().st_size} bytes): {reason}", tensor=tensor
        ) from e


def name_lone_array(data: Mapping[str, V], inputs: Sequence[str]) -> dict[str, V]:
    """``np.savez(path, x)`` names a lone array ``arr_0``: for a single-input model it is that
    input's, whatever its name. Anything else is returned as it is."""
    if len(inputs) == 1 and set(data) == {"arr_0"}:
        return {inputs[0]: data["arr_0"]}
    return dict(data)
