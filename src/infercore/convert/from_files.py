"""File sources read by an inference runtime: an ``.onnx`` (to simplified ONNX, or to OpenVINO IR)
and a ``.tflite`` (to ONNX through tf2onnx, or to OpenVINO IR). The reference is the format's own
runtime with nothing of infercore in between: ONNX Runtime for ONNX, LiteRT for TFLite
(``raw_session`` of each backend)."""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConversionError
from ..modelfiles import model_files, sha256_files
from ..optional import require
from .source import Builder, Candidate, Options, Source
from .to_onnx import finish_onnx
from .to_openvino import convert_ir

__all__ = ["open_onnx", "open_tflite"]

log = logging.getLogger(__name__)


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _digest(path: Path) -> str:
    return sha256_files(model_files(path))


def _file_source(path: Path, session: Any, framework: str, version: str, builders: Any) -> Source:
    """A model file as a ``Source``: run by its runtime's raw session (the reference), converted to
    ONNX or OpenVINO IR by ``builders(opts)``."""

    def run(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(session.run(dict(feeds)))

    return Source(
        framework=framework,
        version=version,
        kind=f".{framework}",  # .onnx, .tflite
        name=str(path),
        inputs=tuple(session.inputs),
        outputs=tuple(s.name for s in session.outputs),
        sha256=_digest(path),
        run=run,
        builders=builders,
        targets=("onnx", "openvino"),
        close=session.close,
    )


def open_onnx(path: Path) -> Source:
    from ..backends.ort import raw_session

    def builders(opts: Options) -> list[Builder]:
        if opts.target == "onnx":
            return [Builder("copy", _copy_onnx(path))]
        return [Builder("openvino.convert_model (ONNX)", _onnx_to_ir(path, opts))]

    return _file_source(path, raw_session(path), "onnx", f"onnxruntime {_version('onnxruntime')}", builders)


def _copy_onnx(src: Path) -> Any:
    def build(path: Path) -> Candidate:
        onnx = require("onnx", "onnx")
        from .to_onnx import save_onnx

        proto = onnx.load(str(src), load_external_data=True)
        save_onnx(proto, path)  # external data beside the new name, not the old one
        opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
        return Candidate(path, "onnx (as read)", opset=opset)

    return build


def _onnx_to_ir(src: Path, opts: Options) -> Any:
    def build(path: Path) -> Candidate:
        convert_ir(str(src), path, opts.precision)
        return Candidate(path, "openvino.convert_model (ONNX)")

    return build


def open_tflite(path: Path) -> Source:
    from ..backends.litert import raw_session

    session = raw_session(path)

    def builders(opts: Options) -> list[Builder]:
        if opts.target == "onnx":
            return [Builder("tf2onnx.convert.from_tflite", _tflite_to_onnx(path, opts, session))]
        return [Builder("openvino.convert_model (TFLite)", _tflite_to_ir(path, opts))]

    return _file_source(path, session, "tflite", f"litert {_version('ai-edge-litert')}", builders)


def _tflite_to_onnx(src: Path, opts: Options, session: Any) -> Any:
    def build(path: Path) -> Candidate:
        tf2onnx = require("tf2onnx", "convert-tf")
        opset = opts.opset or 17
        log_stream = io.StringIO()
        with contextlib.redirect_stdout(log_stream):
            try:
                tf2onnx.convert.from_tflite(str(src), opset=opset, output_path=str(path))
            except Exception as e:
                raise ConversionError(f"tf2onnx could not convert {src.name}: {type(e).__name__}: {e}") from e
        # tf2onnx names tensors as the .tflite does; keep the runtime's own names for the I/O
        finish_onnx(path, input_names=[s.name for s in session.inputs], output_names=[s.name for s in session.outputs])
        return Candidate(path, "tf2onnx.convert.from_tflite", opset=opset)

    return build


def _tflite_to_ir(src: Path, opts: Options) -> Any:
    def build(path: Path) -> Candidate:
        convert_ir(str(src), path, opts.precision)
        return Candidate(path, "openvino.convert_model (TFLite)")

    return build

