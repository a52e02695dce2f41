"""Spec discovery: a deserialized engine's I/O tensors as ``TensorSpec``s.

Walks ``num_io_tensors`` / ``get_tensor_name`` / ``get_tensor_mode`` / ``get_tensor_dtype`` /
``get_tensor_shape``; dynamic dimensions come back as ``None`` and their bounds from optimization
profile 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from ...errors import BackendUnavailableError, ModelLoadError
from ...specs import TensorSpec


def numpy_dtype(trt: ModuleType, dt: Any, name: str) -> np.dtype:
    table = {
        "FLOAT": "float32",
        "HALF": "float16",
        "INT8": "int8",
        "INT32": "int32",
        "INT64": "int64",
        "BOOL": "bool",
        "UINT8": "uint8",
    }
    key = getattr(dt, "name", str(dt))
    if key == "BF16":
        try:
            import ml_dtypes
        except ImportError as e:
            raise BackendUnavailableError(
                f"tensor {name!r} is bfloat16, which numpy reads through ml_dtypes: pip install ml_dtypes"
            ) from e
        return np.dtype(ml_dtypes.bfloat16)
    if key not in table:
        raise ModelLoadError(
            f"tensor {name!r} has TensorRT type {key}, which has no numpy equivalent for I/O"
        )
    return np.dtype(table[key])


@dataclass(frozen=True)
class _Profile:
    """Optimization profile 0's bounds for one input: ``min``/``opt``/``max`` shapes."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def contains(self, shape: Sequence[int]) -> bool:
        return all(lo <= s <= hi for lo, s, hi in zip(self.min, shape, self.max, strict=True))

    def __str__(self) -> str:
        return f"min {self.min}, opt {self.opt}, max {self.max}"


def discover_specs(
    trt: ModuleType, engine: Any
) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...], dict[str, _Profile]]:
    inputs, outputs, profiles = [], [], {}
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        mode = engine.get_tensor_mode(name)
        dims = tuple(int(d) for d in engine.get_tensor_shape(name))
        spec = TensorSpec(name, numpy_dtype(trt, engine.get_tensor_dtype(name), name), dims)
        if mode == trt.TensorIOMode.INPUT:
            inputs.append(spec)
            if not spec.is_static:
                lo, opt, hi = (tuple(int(d) for d in s) for s in engine.get_tensor_profile_shape(name, 0))
                profiles[name] = _Profile(lo, opt, hi)
        elif mode == trt.TensorIOMode.OUTPUT:
            outputs.append(spec)
    return tuple(inputs), tuple(outputs), profiles
