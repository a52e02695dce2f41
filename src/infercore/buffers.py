"""Host buffers the runtimes read and write in place.

Every buffer infercore hands to a runtime is a plain numpy array whose data starts on a 64-byte
boundary (a cache line, and what AVX-512 loads like). A backend binds these arrays once per shape;
after that a run moves no Python objects and allocates nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from .errors import InputSpecError
from .specs import TensorSpec, format_shape

__all__ = ["ALIGNMENT", "BufferMap", "aligned_empty", "aligned_zeros", "check_bound_array", "is_aligned"]

ALIGNMENT = 64


def aligned_empty(shape: Sequence[int], dtype: np.dtype | type, align: int = ALIGNMENT) -> np.ndarray:
    """An uninitialised C-contiguous array whose data pointer is a multiple of ``align``."""
    dtype = np.dtype(dtype)
    shape = tuple(int(d) for d in shape)
    if dtype.hasobject:
        return np.empty(shape, dtype)
    nbytes = math.prod(shape) * dtype.itemsize  # Python ints: np.prod would wrap past 2**63
    raw = np.empty(nbytes + align, dtype=np.uint8)
    offset = (-raw.ctypes.data) % align
    return raw[offset : offset + nbytes].view(dtype).reshape(shape)


def aligned_zeros(shape: Sequence[int], dtype: np.dtype | type, align: int = ALIGNMENT) -> np.ndarray:
    out = aligned_empty(shape, dtype, align)
    out[...] = 0
    return out


def is_aligned(array: np.ndarray, align: int = ALIGNMENT) -> bool:
    return array.ctypes.data % align == 0


def check_bound_array(role: str, spec: TensorSpec, array: object) -> np.ndarray:
    """Validate an array a caller wants bound in place: right dtype, C-contiguous, writable."""
    if not isinstance(array, np.ndarray):
        raise InputSpecError(
            f"{role} {spec.name!r}: bind() takes a numpy array or a shape, got {type(array).__name__}",
            tensor=spec.name,
        )
    if array.dtype != spec.dtype:
        raise InputSpecError(
            f"{role} {spec.name!r}: expected dtype {spec.dtype}, got {array.dtype}; "
            f"bind an array made with dtype=np.{spec.dtype.name}",
            tensor=spec.name,
        )
    if not array.flags.c_contiguous:
        raise InputSpecError(
            f"{role} {spec.name!r}: the bound path reads memory in place and needs a C-contiguous array; "
            f"got strides {array.strides} for shape {array.shape}: pass np.ascontiguousarray(a) "
            "or bind a shape and write into io.inputs",
            tensor=spec.name,
        )
    if not array.flags.writeable:
        raise InputSpecError(
            f"{role} {spec.name!r}: the bound array is read-only; bind a writable array (a.copy()) "
            "or bind a shape and write into io.inputs",
            tensor=spec.name,
        )
    if not spec.accepts(array.shape):
        raise InputSpecError(
            f"{role} {spec.name!r}: expected shape {format_shape(spec.shape, spec.dim_names)}, "
            f"got {array.shape}",
            tensor=spec.name,
        )
    return array


class BufferMap(Mapping[str, np.ndarray]):
    """The ``io.inputs`` / ``io.outputs`` mapping: read-only keys, writable buffers.

    Assigning ``io.inputs["x"] = a`` would silently rebind nothing, so it raises and says to write
    into the buffer instead (``io.inputs["x"][...] = a``).
    """

    __slots__ = ("_data", "_role")

    def __init__(self, data: dict[str, np.ndarray], role: str) -> None:
        self._data = data
        self._role = role

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            return self._data[name]
        except KeyError:
            raise KeyError(
                f"no bound {self._role} named {name!r}; bound {self._role}s: {', '.join(self._data)}"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __setitem__(self, name: str, value: object) -> None:
        raise TypeError(
            f"io.{self._role}s[{name!r}] is a buffer the runtime reads in place; write into it with "
            f"io.{self._role}s[{name!r}][...] = value instead of replacing it"
        )

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}: {v.dtype}{list(v.shape)}" for k, v in self._data.items())
        return f"BufferMap({self._role}s: {inner})"
