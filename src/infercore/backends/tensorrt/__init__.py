"""TensorRT backend (TensorRT 10 and 11), on the name-based I/O API only.

Spec discovery walks ``num_io_tensors`` / ``get_tensor_name`` / ``get_tensor_mode`` /
``get_tensor_dtype`` / ``get_tensor_shape``; dynamic dimensions come back as ``None`` and their
bounds from optimization profile 0. ``open`` loads a ``.engine``/``.plan`` or builds one from ONNX
(cached on disk, keyed by model hash, TensorRT version, GPU and build options, with a JSON sidecar
checked before any deserialization). ``bind`` owns one execution context and one stream: inputs
and outputs live in pinned host arrays, one ``cudaMemcpyAsync`` per tensor each way around
``execute_async_v3``, optionally replayed as a CUDA graph. ``run`` keeps one such binding per
thread and shape, so each thread has its own execution context.

The package reads bottom-up: ``cuda`` (the CUDA runtime through cuda-python), ``specs`` (engine
I/O tensors as ``TensorSpec``s), ``cache`` (cache key, on-disk layout, sidecar checks),
``calibrator`` (TensorRT 10's INT8 calibrator), ``builder`` (ONNX to a serialized engine),
``runtime`` (the backend and its bindings), and here the factory the registry opens.
"""

from __future__ import annotations

import collections
import importlib.metadata
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from ...errors import BackendError, BackendUnavailableError, ModelLoadError
from ...optional import require
from ...specs import BackendInfo
from .. import check_options, runtimes_quiet
from . import cuda
from .builder import EngineBuilder
from .cache import load_engine_file
from .runtime import TensorRTBackend, TensorRTBinding

__all__ = ["TensorRTBackend", "TensorRTBinding", "TensorRTFactory"]

log = logging.getLogger(__name__)

EXTRA = "tensorrt"

_OPTIONS = {
    "workspace": "int bytes: builder workspace limit (MemoryPoolType.WORKSPACE)",
    "profiles": "dict input -> (min, opt, max) shapes for the optimization profile",
    "dynamic_dims": "(min, opt, max) used for every dynamic dimension without a profile (default (1, 1, 64))",
    "cache_dir": "directory for built engines and timing caches (default ~/.cache/infercore/tensorrt)",
    "rebuild": "bool: build even if a cached engine matches",
    "timing_cache": "bool: reuse and update the on-disk timing cache (default True)",
    "builder_optimization_level": "int 0-5",
    "strongly_typed": "bool: build a strongly typed network (types from the ONNX, default for int8 on 11)",
    "calibration_data": "iterable of feeds dicts: INT8 calibration on TensorRT 10",
    "cuda_graph": "bool: replay bound runs as a CUDA graph (fixed shapes)",
}


def _trt() -> ModuleType:
    return require("tensorrt", EXTRA)


# -- logger ----------------------------------------------------------------------------------------
def _make_logger(trt: ModuleType) -> Any:
    """A TensorRT logger that forwards to ``logging`` and keeps the recent errors for our messages."""

    class _Logger(trt.ILogger):  # type: ignore[name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: collections.deque[str] = collections.deque(maxlen=16)

        def log(self, severity: Any, msg: str) -> None:
            # quiet runtimes (the CLI without --debug): everything at DEBUG; errors still reach
            # the caller, inside the exception that take() fills
            quiet = runtimes_quiet()
            if severity in (trt.ILogger.Severity.ERROR, trt.ILogger.Severity.INTERNAL_ERROR):
                self.errors.append(msg)
                log.log(logging.DEBUG if quiet else logging.ERROR, "tensorrt: %s", msg)
            elif severity == trt.ILogger.Severity.WARNING:
                log.log(logging.DEBUG if quiet else logging.WARNING, "tensorrt: %s", msg)
            else:
                log.debug("tensorrt: %s", msg)

        def take(self) -> str:
            text = "; ".join(self.errors)
            self.errors.clear()
            return text

    return _Logger()


# -- device ------------------------------------------------------------------------------------------
def _device_index(device: str) -> int:
    d = device.strip().lower()
    m = re.fullmatch(r"(cuda|gpu)(?::(\d+))?", d)
    if m:
        return int(m.group(2) or 0)
    if d in ("cpu", "cpu:0"):
        raise BackendError(
            "tensorrt runs on NVIDIA GPUs only: pass device='cuda' (or 'cuda:N'); "
            "for the CPU use backend='ort' or 'openvino'"
        )
    raise BackendError(f"tensorrt: unknown device {device!r}; use 'cuda' or 'cuda:N'")


# -- factory --------------------------------------------------------------------------------------------
class TensorRTFactory:
    """Registered as ``tensorrt``; opens ``.engine``/``.plan`` files and builds from ``.onnx``."""

    extra = EXTRA

    def probe(self) -> BackendInfo:
        try:
            trt = _trt()
            cuda.runtime()
        except BackendUnavailableError as e:
            return BackendInfo("tensorrt", False, reason=str(e), extra=EXTRA)
        try:
            gpu = cuda.device_info(0)
        except BackendUnavailableError as e:
            return BackendInfo("tensorrt", False, reason=str(e), version=str(trt.__version__), extra=EXTRA)
        try:
            count = cuda.runtime().cudaGetDeviceCount()[1]
        except Exception:
            count = 1
        return BackendInfo(
            "tensorrt",
            True,
            version=_dist_version(trt),
            devices=tuple(f"cuda:{i}" for i in range(count)),
            extra=EXTRA,
            details={"gpu": f"{gpu.name} ({gpu.sm})"},
        )

    def open(
        self,
        path: Path,
        *,
        device: str,
        precision: str | None,
        threads: int | None,
        options: Mapping[str, Any],
    ) -> TensorRTBackend:
        _check_options(options)
        index = _device_index(device)
        trt = _trt()
        gpu = cuda.device_info(index)
        with cuda.device_scope(index):  # build and deserialize on that GPU; the thread's own comes back
            return self._open(trt, gpu, path, precision, options)

    def _open(
        self,
        trt: ModuleType,
        gpu: cuda.DeviceInfo,
        path: Path,
        precision: str | None,
        options: Mapping[str, Any],
    ) -> TensorRTBackend:
        logger = _make_logger(trt)
        suffix = path.suffix.lower()
        if suffix in (".engine", ".plan", ".trt"):
            if precision is not None:
                raise BackendError(
                    f"tensorrt: {path.name} is a built engine and runs in the precision it was built with; "
                    "precision= applies when building from an .onnx file"
                )
            blob = load_engine_file(path, trt, gpu)
        elif suffix == ".onnx":
            blob = EngineBuilder(trt, logger, gpu, path, precision, options).cached_or_build()
        else:
            raise ModelLoadError(
                f"tensorrt opens .engine/.plan or .onnx files, not {path.name}", path=str(path)
            )
        runtime = trt.Runtime(logger)
        engine = runtime.deserialize_cuda_engine(blob)
        if engine is None:
            raise ModelLoadError(
                f"TensorRT {trt.__version__} could not deserialize {path.name}: {logger.take() or 'no message'}",
                path=str(path),
            )
        return TensorRTBackend(
            trt, runtime, engine, logger, gpu, path, bool(options.get("cuda_graph", False))
        )


def _dist_version(trt: ModuleType) -> str:
    for dist in ("tensorrt", "tensorrt-cu12", "tensorrt-cu13"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return str(trt.__version__)


def _check_options(options: Mapping[str, Any]) -> None:
    check_options("tensorrt", options, _OPTIONS)
