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

from ..arguments import check_choice, check_int, check_number
from ..errors import ArgumentError, CalibrationError, ModelLoadError
from ..inputs import LabelledBatches, iter_batches, labelled_batches, model_inputs
from ..metrics import Metric, metric_name
from ..optional import require
from .cache import building, cache_root, model_digest, versions
from .calibration import EXTRA, check_finite, refuse_quantized
from .measure import CalibrationResult, build_report, deliver, describe, generated_inputs, measure

__all__ = ["convert_fp16"]

log = logging.getLogger(__name__)

_TARGETS = ("ort", "tensorrt")


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
    check_choice("target", target, _TARGETS)
    check_number("max_drop", max_drop, optional=True)
    src = Path(model)
    if not src.is_file():
        raise ModelLoadError(f"model file not found: {src}", path=str(src))
    if src.suffix != ".onnx":
        raise ModelLoadError(f"convert_fp16 converts ONNX models; {src.name} is not .onnx", path=str(src))
    if output is not None and Path(output).suffix != ".onnx":
        raise ArgumentError("output", f"must end in .onnx, got {output}")
    check_int("batch_size", batch_size, optional=True)
    check_number("timing_s", timing_s)
    metric_name(metric, has_labels=False)  # an unknown metric is refused before converting

    refuse_quantized(src, "FP16 conversion")
    specs = model_inputs(src)
    notes: list[str] = []
    if eval_data is not None:
        evalset = labelled_batches(eval_data, specs, batch_size=batch_size, transform=transform)
    elif data is not None:
        batches = list(iter_batches(data, specs, batch_size=batch_size, transform=transform))
        evalset = LabelledBatches(batches, [None] * len(batches), "data")
    else:
        feeds = generated_inputs(src, threads)
        evalset = LabelledBatches([feeds], [None], "generated inputs")
        notes.append(
            f"measured on generated inputs ({describe(feeds)}): pass data= or eval_data= for a meaningful number"
        )
    if not evalset.batches:
        raise CalibrationError("eval_data/data is empty")
    if evalset.source != "generated inputs":
        check_finite(evalset.batches, evalset.source)

    options = {"kind": "fp16", "keep_io_types": keep_io_types, "fold": fold,
               "op_block_list": sorted(op_block_list) if op_block_list is not None else None,
               "versions": versions("onnxruntime", "onnx")}  # fmt: skip
    key = hashlib.sha256((json.dumps(options, sort_keys=True) + model_digest(src)).encode()).hexdigest()[:24]
    entry = cache_root() / key
    artifact = entry / "model.fp16.onnx"
    cached = cache and artifact.exists()
    if not cached:
        with building(entry, key, f"fp16 conversion of {src.name}") as tmp:
            _convert(src, tmp / artifact.name, keep_io_types, op_block_list, fold, threads)
            (tmp / "meta.json").write_text(json.dumps({**options, "model": str(src)}, indent=1))

    measured = measure(
        src, artifact, target=target, evalset=evalset, metric=metric, eval_output=eval_output,
        threads=threads, timing_s=timing_s, notes=notes, precision="fp16",
    )  # fmt: skip
    final = Path(output) if output is not None else artifact
    report = build_report(
        measured, kind="fp16", target=target, mode="fp16", method=None, preset=None, per_channel=None,
        max_drop=max_drop, eval_source=evalset.source, calibration_samples=0, model=src,
        artifact=final, cached=cached, notes=notes,
    )  # fmt: skip
    return deliver(report, artifact, output)


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
    from ..backends.ort import log_severity

    onnx = require("onnx", EXTRA)
    ort = require("onnxruntime", EXTRA)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.optimized_model_filepath = str(tmp)
    so.log_severity_level = log_severity(ort)
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
