"""infercore: one fast Engine API over ONNX Runtime, OpenVINO, LiteRT and TensorRT.

    import infercore as ic
    eng = ic.load("model.onnx")
    out = eng.run({"x": x})

``import infercore`` imports numpy and pluggy only; each runtime is imported when first used.
"""

from __future__ import annotations

from .engine import BoundIO, Engine, EngineStats, load
from .errors import (
    BackendError,
    BackendRuntimeError,
    BackendUnavailableError,
    BatchingError,
    CalibrationError,
    DeadlineExceededError,
    EngineClosedError,
    InfercoreError,
    InputSpecError,
    ModelLoadError,
    QueueFullError,
    UnknownBackendError,
)
from .plugins import hookimpl, registry
from .specs import BackendInfo, Quantization, TensorSpec

__version__ = "0.1.0.dev0"


def available_backends() -> dict[str, BackendInfo]:
    """Every registered backend, best first, with whether it works here and why not."""
    return registry.available()


__all__ = [
    "BackendError",
    "BackendInfo",
    "BackendRuntimeError",
    "BackendUnavailableError",
    "BatchingError",
    "BoundIO",
    "CalibrationError",
    "DeadlineExceededError",
    "Engine",
    "EngineClosedError",
    "EngineStats",
    "InfercoreError",
    "InputSpecError",
    "ModelLoadError",
    "Quantization",
    "QueueFullError",
    "TensorSpec",
    "UnknownBackendError",
    "__version__",
    "available_backends",
    "hookimpl",
    "load",
    "registry",
]
