"""What every source adapter gives ``convert``: the model's inputs and outputs, a way to run it in
its own framework (the reference the converted model is checked against), and the ways to build
each target from it, tried in order."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..specs import Quantization, TensorSpec, format_shape

__all__ = ["Builder", "Candidate", "Options", "Source", "weights_digest"]

Feeds = dict[str, np.ndarray]


@dataclass
class Candidate:
    """A converted model written in the scratch directory, not yet verified.

    ``input_map``/``output_map``: the source's tensor name -> the converted model's, where they
    differ (a TFLite file names its tensors ``serving_default_x:0``); names not in a map are the same
    or matched by position."""

    path: Path
    exporter: str
    input_map: dict[str, str] = field(default_factory=dict)
    output_map: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    opset: int | None = None
    # affine quantization of integer inputs/outputs of the converted model, by its tensor name: a
    # full-integer .tflite takes and gives int8, compared in the source's float values
    quantization: dict[str, Quantization] = field(default_factory=dict)


@dataclass(frozen=True)
class Builder:
    """One way to produce the target: ``build(path)`` writes the model at ``path`` (its final file
    name, in a scratch directory) and says what it wrote."""

    exporter: str
    build: Callable[[Path], Candidate]


@dataclass(frozen=True)
class Options:
    """The caller's conversion options, checked, as every adapter reads them."""

    target: str  # "onnx" | "openvino" | "tflite"
    precision: str  # "fp32" | "fp16" | "int8"
    opset: int | None
    dynamic: Mapping[str, Mapping[int, str]]
    input_names: tuple[str, ...] | None
    output_names: tuple[str, ...] | None
    exporter: str | None
    data: tuple[Feeds, ...]  # the caller's data=, by source input name (int8 calibration reads it)
    scratch: Path  # a private directory for intermediate files (a SavedModel, an ONNX on the way to IR)


@dataclass
class Source:
    """A model in its own framework.

    ``inputs``: specs of its inputs (``None`` for a dynamic dimension, with its name when known);
    ``outputs``: output names, in order; ``run(feeds)`` -> outputs by name, computed by the source
    framework itself; ``builders(options)`` -> the ways to build ``options.target``, best first."""

    framework: str
    version: str
    kind: str
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[str, ...]
    sha256: str
    run: Callable[[Feeds], dict[str, np.ndarray]]
    builders: Callable[[Options], list[Builder]]
    targets: tuple[str, ...]
    close: Callable[[], None] = lambda: None

    def describe_inputs(self) -> tuple[str, ...]:
        return tuple(f"{s.name}: {s.dtype} {format_shape(s.shape, s.dim_names)}" for s in self.inputs)


def weights_digest(arrays: Iterable[tuple[str, Any]]) -> str:
    """sha256 over (name, dtype, shape, bytes) of each weight, in the order given."""
    h = hashlib.sha256()
    for name, a in arrays:
        arr = np.ascontiguousarray(np.asarray(a))
        h.update(f"{name}|{arr.dtype.str}|{arr.shape}|".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def name_outputs(values: Sequence[Any], names: Sequence[str]) -> dict[str, np.ndarray]:
    """Positional outputs named, as float/int numpy arrays."""
    return {n: np.asarray(v) for n, v in zip(names, values, strict=True)}


def default_output_names(n: int) -> tuple[str, ...]:
    return ("output",) if n == 1 else tuple(f"output_{i}" for i in range(n))
