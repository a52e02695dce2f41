"""Tensor and backend descriptions shared by every layer."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

__all__ = [
    "PRECISIONS",
    "BackendInfo",
    "Quantization",
    "TensorSpec",
    "format_shape",
    "is_symbol",
    "normalize_precision",
    "with_onnx_dim_names",
]

log = logging.getLogger(__name__)

_PLACEHOLDER_DIM_NAME = re.compile(r"\?*|unk__\d+|-?\d+")  # what exporters write for "unknown"


def is_symbol(dim_name: str | None) -> bool:
    """Whether a dimension name is a real symbol (``batch``, ``sequence``), one size wherever it
    appears, rather than a placeholder exporters write for any unknown dimension: None, ``?``,
    onnxruntime's ``unk__12``, a number."""
    return dim_name is not None and not _PLACEHOLDER_DIM_NAME.fullmatch(dim_name)

Dim = int | None

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
"""The precisions a backend may be asked for, from the strictest to the loosest."""
_PRECISION_ALIASES = {"f32": "fp32", "float32": "fp32", "f16": "fp16", "float16": "fp16", "bfloat16": "bf16"}


def normalize_precision(value: str | None, parameter: str = "precision") -> str | None:
    """``"float16"`` -> ``"fp16"``; one of ``PRECISIONS`` or None, else ``ArgumentError``."""
    from .errors import ArgumentError

    if value is None:
        return None
    name = _PRECISION_ALIASES.get(value.strip().lower(), value.strip().lower()) if isinstance(value, str) else None
    if name not in PRECISIONS:
        raise ArgumentError(
            parameter, f"expected one of {', '.join(PRECISIONS)} (or None: the model as saved), got {value!r}"
        )
    return name


@dataclass(frozen=True)
class Quantization:
    """Affine quantization of an integer tensor: ``real = scale * (q - zero_point)``.

    ``scale``/``zero_point`` are scalars for per-tensor quantization and 1-d arrays along
    ``axis`` for per-channel quantization.
    """

    scale: float | tuple[float, ...]
    zero_point: int | tuple[int, ...]
    axis: int | None = None

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        scale = np.asarray(self.scale, dtype=np.float32)
        zero = np.asarray(self.zero_point, dtype=np.float32)
        if self.axis is not None and scale.ndim == 1:
            shape = [1] * q.ndim
            shape[self.axis] = -1
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        out: np.ndarray = (q.astype(np.float32) - zero) * scale
        return out

    def quantize(self, x: np.ndarray, dtype: np.dtype) -> np.ndarray:
        info = np.iinfo(dtype)
        scale = np.asarray(self.scale, dtype=np.float32)
        zero = np.asarray(self.zero_point, dtype=np.float32)
        if self.axis is not None and scale.ndim == 1:
            shape = [1] * x.ndim
            shape[self.axis] = -1
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        out: np.ndarray = np.clip(np.rint(x / scale + zero), info.min, info.max).astype(dtype)
        return out


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a model.

    ``shape`` has ``None`` for a dynamic dimension; ``dim_names`` keeps the model's symbolic name
    for it (``"batch"``, ``"sequence"``) or ``None``. ``dtype`` is a numpy dtype (``object`` for
    string tensors). ``quantization`` is set for quantized integer tensors (LiteRT).
    """

    name: str
    dtype: np.dtype
    shape: tuple[Dim, ...]
    dim_names: tuple[str | None, ...] = ()
    quantization: Quantization | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", np.dtype(self.dtype))
        object.__setattr__(self, "shape", tuple(None if d is None or d < 0 else int(d) for d in self.shape))
        names = tuple(self.dim_names) if self.dim_names else (None,) * len(self.shape)
        if len(names) != len(self.shape):
            raise ValueError(f"dim_names {names} do not match shape {self.shape}")
        object.__setattr__(self, "dim_names", names)

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_static(self) -> bool:
        return None not in self.shape

    def accepts(self, shape: Sequence[int]) -> bool:
        """Whether a concrete shape fits this spec (same rank, fixed dimensions equal)."""
        if len(shape) != len(self.shape):
            return False
        return all(d is None or d == s for d, s in zip(self.shape, shape, strict=True))

    def concrete(self, fill: int = 1) -> tuple[int, ...]:
        """This shape with every dynamic dimension replaced by ``fill``."""
        return tuple(fill if d is None else d for d in self.shape)

    def __str__(self) -> str:
        return f"{self.name}: {self.dtype} {format_shape(self.shape, self.dim_names)}"


def format_shape(shape: Sequence[Dim], dim_names: Sequence[str | None] = ()) -> str:
    names = list(dim_names) or [None] * len(shape)
    parts = [str(d) if d is not None else (n or "?") for d, n in zip(shape, names, strict=False)]
    return "[" + ", ".join(parts) + "]"


def with_onnx_dim_names(specs: Sequence[TensorSpec], path: Path | None) -> tuple[TensorSpec, ...]:
    """``specs`` with the symbolic names (``dim_param``) of their dynamic dimensions filled in from
    an ONNX file's graph inputs and outputs, for a backend that reports none (OpenVINO's ports,
    TensorRT engines): what ONNX Runtime reports for the same file. A spec that already has names,
    another file type, an unreadable file or no ``onnx`` package (backend extras do not all need
    it) leaves the specs as they are."""
    specs = tuple(specs)
    if (
        path is None
        or path.suffix.lower() != ".onnx"
        or all(s.is_static or any(n is not None for n in s.dim_names) for s in specs)
    ):
        return specs
    try:
        import onnx
    except ImportError:
        return specs
    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as e:  # the backend read it; the names are a nicety
        log.debug("onnx could not read %s for its dimension names: %s", path, e)
        return specs
    found: dict[str, tuple[str | None, ...]] = {}
    for vi in (*graph.input, *graph.output):
        t = vi.type.tensor_type
        if t.HasField("shape"):
            found[vi.name] = tuple(None if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim)
    out = []
    for s in specs:
        names = found.get(s.name)
        if names is not None and len(names) == s.rank and not any(n is not None for n in s.dim_names):
            s = replace(s, dim_names=tuple(n if d is None else None for d, n in zip(s.shape, names, strict=True)))
        out.append(s)
    return tuple(out)


@dataclass(frozen=True)
class BackendInfo:
    """What ``ic.available_backends()`` says about one registered backend."""

    name: str
    available: bool
    reason: str | None = None
    version: str | None = None
    devices: tuple[str, ...] = ()
    suffixes: tuple[str, ...] = ()
    extra: str | None = None
    priority: int = 0
    plugin: str = "builtin"
    details: dict[str, str] = field(default_factory=dict)
