"""FP16 conversion of ONNX models, with the same measured report as INT8 calibration.

    res = ic.convert_fp16("model.onnx", eval_data=(x_test, y_test), max_drop=0.005)
    res.artifact_path          # float16 weights and compute; float32 inputs/outputs kept by default
    print(res.report)          # fp32 vs fp16 score, output cosine, speed ratio on the target backend

Conversion is ONNX Runtime's ``onnxruntime.transformers.float16.convert_float_to_float16`` (ops
ONNX Runtime cannot run in float16 stay in float32 behind Casts). On a CPU without native float16
arithmetic the FP16 model is usually slower: the report says so, measured.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .backends import require
from .calibration import (
    EXTRA,
    CalibrationResult,
    Feeds,
    Metric,
    _building,
    _cache_root,
    _deliver,
    _eval_set,
    _EvalSet,
    _file_hash,
    _measure,
    _model_specs,
    _report,
    _versions,
    calibration_batches,
)
from .errors import CalibrationError, ModelLoadError
from .specs import TensorSpec

__all__ = ["convert_fp16"]

_TARGETS = ("ort", "tensorrt")


def _synthetic(specs: Sequence[TensorSpec], rng: np.random.Generator) -> Feeds:
    """Inputs within each spec: floats normal(0, 1), integers zeros, booleans true; dynamic dims 1 (batch) or 8."""
    feeds: Feeds = {}
    for s in specs:
        shape = tuple((1 if i == 0 else 8) if d is None else d for i, d in enumerate(s.shape))
        if s.dtype.kind == "f":
            feeds[s.name] = rng.standard_normal(shape).astype(s.dtype)
        elif s.dtype.kind == "b":
            feeds[s.name] = np.ones(shape, dtype=s.dtype)
        else:
            feeds[s.name] = np.zeros(shape, dtype=s.dtype)
    return feeds


def convert_fp16(
    model: str | os.PathLike[str],
    *,
    keep_io_types: bool = True,
    op_block_list: Sequence[str] | None = None,
    output: str | os.PathLike[str] | None = None,
    data: Any = None,
    eval_data: Any = None,
    metric: Metric | None = None,
    max_drop: float | None = None,
    target: str = "ort",
    eval_output: str | None = None,
    batch_size: int | None = None,
    transform: Callable[[Any], Any] | None = None,
    threads: int | None = None,
    timing_s: float = 2.0,
    cache: bool = True,
) -> CalibrationResult:
    """Convert an ONNX model to float16 and measure what it cost.

    ``keep_io_types``: keep float32 inputs and outputs (Casts inside), so callers change nothing.
    ``op_block_list``: op types kept in float32, on top of ONNX Runtime's own list. The report is
    measured on ``eval_data`` (same forms and ``metric`` as ``calibrate``), else on ``data``, else on
    generated inputs (a note says so: give real data for a meaningful number). ``max_drop`` raises
    ``CalibrationDropError`` past the limit. ``target``: ``ort`` or ``tensorrt`` (speed measured
    there when a GPU and TensorRT are present, accuracy on ONNX Runtime otherwise).
    """
    if target not in _TARGETS:
        raise ValueError(f"convert_fp16 targets {', '.join(_TARGETS)}, got {target!r}")
    if max_drop is not None and not (max_drop >= 0):
        raise ValueError(f"max_drop must be a non-negative number, got {max_drop!r}")
    src = Path(model)
    if not src.is_file():
        raise ModelLoadError(f"model file not found: {src}", path=str(src))
    if src.suffix != ".onnx":
        raise ModelLoadError(f"convert_fp16 converts ONNX models; {src.name} is not .onnx", path=str(src))
    if output is not None and Path(output).suffix != ".onnx":
        raise ValueError(f"output must end in .onnx, got {output}")

    specs = _model_specs(src)
    notes: list[str] = []
    if eval_data is not None:
        evalset = _eval_set(eval_data, specs, batch_size, transform)
    elif data is not None:
        batches = list(calibration_batches(data, specs, batch_size=batch_size, transform=transform))
        evalset = _EvalSet(batches, [None] * len(batches), "data")
    else:
        feeds = _synthetic(specs, np.random.default_rng(0))
        evalset = _EvalSet([feeds], [None], "generated inputs")
        notes.append("measured on generated inputs: pass data= or eval_data= for a meaningful number")
    if not evalset.batches:
        raise CalibrationError("eval_data/data is empty")

    options = {"kind": "fp16", "keep_io_types": keep_io_types,
               "op_block_list": sorted(op_block_list) if op_block_list is not None else None,
               "versions": _versions("onnxruntime", "onnx")}  # fmt: skip
    key = hashlib.sha256((json.dumps(options, sort_keys=True) + _file_hash(src)).encode()).hexdigest()[:24]
    entry = _cache_root() / key
    artifact = entry / "model.fp16.onnx"
    cached = cache and artifact.exists()
    if not cached:
        with _building(entry, key, f"fp16 conversion of {src.name}") as tmp:
            _convert(src, tmp / artifact.name, keep_io_types, op_block_list)
            (tmp / "meta.json").write_text(json.dumps({**options, "model": str(src)}, indent=1))

    measured = _measure(
        src, artifact, target=target, evalset=evalset, metric=metric, eval_output=eval_output,
        threads=threads, timing_s=timing_s, notes=notes, precision="fp16",
    )  # fmt: skip
    final = Path(output) if output is not None else artifact
    report = _report(
        measured, kind="fp16", target=target, mode="fp16", method=None, preset=None, per_channel=None,
        max_drop=max_drop, eval_source=evalset.source, calibration_samples=0, model=src,
        artifact=final, cached=cached, notes=notes,
    )  # fmt: skip
    return _deliver(report, artifact, output)


def _convert(src: Path, out: Path, keep_io_types: bool, op_block_list: Sequence[str] | None) -> None:
    onnx = require("onnx", EXTRA)
    float16 = require("onnxruntime.transformers.float16", EXTRA, package="onnxruntime")
    proto = onnx.load(str(src))
    kwargs: dict[str, Any] = {"keep_io_types": keep_io_types}
    if op_block_list is not None:
        kwargs["op_block_list"] = sorted(set(op_block_list) | set(float16.DEFAULT_OP_BLOCK_LIST))
    converted = float16.convert_float_to_float16(proto, **kwargs)
    onnx.save(converted, str(out))
