"""FP16 conversion of ONNX models, with the same measured report as INT8 calibration.

    res = ic.convert_fp16("model.onnx", eval_data=(x_test, y_test), max_drop=0.005)
    res.artifact_path          # float16 weights and compute; float32 inputs/outputs kept by default
    print(res.report)          # fp32 vs fp16 score, output cosine, speed ratio on the target backend

Conversion is ONNX Runtime's ``onnxruntime.transformers.float16.convert_float_to_float16`` (ops
ONNX Runtime cannot run in float16 stay in float32 behind Casts), applied to the float32 graph
after ONNX Runtime's basic (portable, ONNX-only) optimizations have folded it: BatchNormalization
into the Conv before it, constants folded. Without that, parameters beyond float16's range are
clamped (PP-OCRv4 det keeps BatchNormalization variances up to 9.8e7: output cosine 0.876 against
0.99998 folded first). On a CPU without native float16 arithmetic the FP16 model is usually
slower: the report says so, measured.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .calibration import (
    EXTRA,
    CalibrationResult,
    Feeds,
    Metric,
    _building,
    _cache_root,
    _check_batch_size,
    _check_finite,
    _deliver,
    _EngineRunner,
    _eval_set,
    _EvalSet,
    _file_hash,
    _measure,
    _metric_name,
    _model_specs,
    _report,
    _versions,
    calibration_batches,
)
from .errors import BackendRuntimeError, CalibrationError, ModelLoadError
from .optional import require
from .specs import TensorSpec

__all__ = ["convert_fp16"]

log = logging.getLogger(__name__)

_TARGETS = ("ort", "tensorrt")


# sizes tried in turn for dynamic dimensions that are not the batch: multiples of 32 (detection
# backbones downsample by 32), the second long enough for audio models' reflect padding
_SYNTHETIC_SIZES = (64, 512)


def _is_batch(spec: TensorSpec, axis: int) -> bool:
    """The first dimension, or one named like a batch (a recurrent state's [layers, batch, hidden])."""
    name = spec.dim_names[axis] or ""
    return axis == 0 or "batch" in name.lower()


def _synthetic(specs: Sequence[TensorSpec], rng: np.random.Generator, size: int) -> Feeds:
    """Inputs within each spec: floats normal(0, 1), integers zeros, booleans true. A dynamic batch
    dimension (named like "batch", else the first) is 1, other dynamic dimensions ``size``."""
    feeds: Feeds = {}
    for s in specs:
        shape = tuple(d if d is not None else (1 if _is_batch(s, i) else size) for i, d in enumerate(s.shape))
        if s.dtype.kind == "f":
            feeds[s.name] = rng.standard_normal(shape).astype(s.dtype)
        elif s.dtype.kind == "b":
            feeds[s.name] = np.ones(shape, dtype=s.dtype)
        else:
            feeds[s.name] = np.zeros(shape, dtype=s.dtype)
    return feeds


def _describe(feeds: Feeds) -> str:
    return ", ".join(f"{k} {tuple(v.shape)} {v.dtype}" for k, v in feeds.items())


def _generated_inputs(src: Path, specs: Sequence[TensorSpec], threads: int | None) -> Feeds:
    """Generated inputs the fp32 model runs on (ONNX Runtime), trying each of ``_SYNTHETIC_SIZES``;
    when it runs on none, say the inputs were generated, with their shapes, and ask for real data."""
    rng = np.random.default_rng(0)
    candidates: list[Feeds] = []
    for size in _SYNTHETIC_SIZES:
        feeds = _synthetic(specs, rng, size)
        if all(_describe(feeds) != _describe(c) for c in candidates):
            candidates.append(feeds)
    runner = _EngineRunner(src, "ort", threads)
    failures: list[str] = []
    try:
        for feeds in candidates:
            try:
                runner.run(feeds)
                return feeds
            except BackendRuntimeError as e:
                failures.append(f"[{_describe(feeds)}]: {e}")
    finally:
        runner.close()
    raise CalibrationError(
        f"no data was given, so the report needs generated inputs (floats normal(0, 1), integers 0), and "
        f"{src.name} does not run on them: " + "; ".join(failures) + ". Pass real inputs with data= or "
        "eval_data= (--data or --eval on the command line)"
    )


def convert_fp16(
    model: str | os.PathLike[str],
    *,
    keep_io_types: bool = True,
    op_block_list: Sequence[str] | None = None,
    fold: bool = True,
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
    ``op_block_list``: op types kept in float32, on top of ONNX Runtime's own list. ``fold``: fold
    the float32 graph with ONNX Runtime's basic optimizations first (see the module). The report is
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
    _check_batch_size(batch_size)
    _metric_name(metric, has_labels=False)  # an unknown metric is refused before converting

    specs = _model_specs(src)
    notes: list[str] = []
    if eval_data is not None:
        evalset = _eval_set(eval_data, specs, batch_size, transform)
    elif data is not None:
        batches = list(calibration_batches(data, specs, batch_size=batch_size, transform=transform))
        evalset = _EvalSet(batches, [None] * len(batches), "data")
    else:
        feeds = _generated_inputs(src, specs, threads)
        evalset = _EvalSet([feeds], [None], "generated inputs")
        notes.append(
            f"measured on generated inputs ({_describe(feeds)}): pass data= or eval_data= for a meaningful number"
        )
    if not evalset.batches:
        raise CalibrationError("eval_data/data is empty")
    if evalset.source != "generated inputs":
        _check_finite(evalset.batches, evalset.source)

    options = {"kind": "fp16", "keep_io_types": keep_io_types, "fold": fold,
               "op_block_list": sorted(op_block_list) if op_block_list is not None else None,
               "versions": _versions("onnxruntime", "onnx")}  # fmt: skip
    key = hashlib.sha256((json.dumps(options, sort_keys=True) + _file_hash(src)).encode()).hexdigest()[:24]
    entry = _cache_root() / key
    artifact = entry / "model.fp16.onnx"
    cached = cache and artifact.exists()
    if not cached:
        with _building(entry, key, f"fp16 conversion of {src.name}") as tmp:
            _convert(src, tmp / artifact.name, keep_io_types, op_block_list, fold, threads)
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


def _convert(
    src: Path,
    out: Path,
    keep_io_types: bool,
    op_block_list: Sequence[str] | None,
    fold: bool = True,
    threads: int | None = None,
) -> None:
    onnx = require("onnx", EXTRA)
    float16 = require("onnxruntime.transformers.float16", EXTRA, package="onnxruntime")
    proto = _folded(src, out.parent / "folded.fp32.onnx", threads) if fold else None
    if proto is None:
        proto = onnx.load(str(src))
    kwargs: dict[str, Any] = {"keep_io_types": keep_io_types}
    if op_block_list is not None:
        kwargs["op_block_list"] = sorted(set(op_block_list) | set(float16.DEFAULT_OP_BLOCK_LIST))
    converted = float16.convert_float_to_float16(proto, **kwargs)
    onnx.save(converted, str(out))


def _folded(src: Path, tmp: Path, threads: int | None) -> Any:
    """The float32 graph after ONNX Runtime's basic optimizations (standard ONNX ops only), or None
    when the model is too large to write back in one file or the runtime cannot optimize it."""
    if src.stat().st_size > 1_800_000_000:  # a protobuf above 2 GB needs external data
        return None
    onnx = require("onnx", EXTRA)
    ort = require("onnxruntime", EXTRA)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.optimized_model_filepath = str(tmp)
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    try:
        ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
        return onnx.load(str(tmp))
    except Exception as e:  # the plain conversion still works: fold is an improvement, not a need
        log.debug("fp16: could not fold %s with onnxruntime (%s); converting it as it is", src.name, e)
        return None
    finally:
        tmp.unlink(missing_ok=True)
