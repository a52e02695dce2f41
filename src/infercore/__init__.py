"""infercore: one fast Engine API over ONNX Runtime, OpenVINO, LiteRT and TensorRT.

    import infercore as ic
    eng = ic.load("model.onnx")
    out = eng.run({"x": x})

``import infercore`` imports numpy and pluggy only; each runtime is imported when first used.
"""

from __future__ import annotations

import importlib as _importlib

from .engine import BoundIO, Engine, EngineStats, load
from .errors import (
    ArgumentError,
    BackendError,
    BackendRuntimeError,
    BackendUnavailableError,
    BatcherClosedError,
    BatchingError,
    BenchmarkWarning,
    CalibrationDropError,
    CalibrationError,
    ConversionError,
    ConversionMismatchError,
    DeadlineExceededError,
    EngineClosedError,
    InfercoreError,
    InputSpecError,
    InputsRejectedError,
    ModelLoadError,
    MonitorWorkerError,
    OptimizeDropError,
    OptimizeError,
    ProfileError,
    PruningError,
    QueueFullError,
    RuntimeInputError,
    SignatureError,
    UnknownBackendError,
    UsageError,
)
from .plugins import hookimpl, registry
from .specs import BackendInfo, Quantization, TensorSpec

# The one place the version is written: pyproject.toml reads it (setuptools, statically), so it
# stays a plain string literal.
__version__ = "0.1.0.dev0"

# The layers above the Engine load on first use, so ``import infercore`` stays numpy + pluggy.
_LAZY = {
    "BenchmarkReport": "bench",
    "BenchmarkResult": "bench",
    "Batcher": "batching",
    "BatcherMetrics": "batching",
    "CalibrationReport": "quantize",
    "CalibrationResult": "quantize",
    "CompareReport": "compare",
    "ConversionReport": "convert",
    "ConversionResult": "convert",
    "DistillReport": "optimize",
    "DistillResult": "optimize",
    "OptimizeReport": "optimize",
    "OptimizeResult": "optimize",
    "PruneReport": "optimize",
    "PruneResult": "optimize",
    "Verifier": "signing",
    "benchmark": "bench",
    "calibrate": "quantize",
    "calibration_batches": "quantize",
    "compare": "compare",
    "convert": "convert",
    "convert_fp16": "quantize",
    "distill": "optimize",
    "optimize": "optimize",
    "prune": "optimize",
    "sign": "signing",
    "verify": "signing",
}


# subpackages reached as attributes (``ic.monitor.Profile``), imported on first use
_SUBPACKAGES = ("monitor",)


def __getattr__(name: str) -> object:
    if name in _SUBPACKAGES:
        return _importlib.import_module(f".{name}", __name__)
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'infercore' has no attribute {name!r}")
    loaded = _importlib.import_module(f".{module}", __name__)
    # ic.compare is the module infercore.compare, callable as its function: the import system binds
    # the name to the module anyway, and `import infercore.compare as c` must find the module
    value = loaded if name == module else getattr(loaded, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | set(_SUBPACKAGES))


def available_backends() -> dict[str, BackendInfo]:
    """Every registered backend, best first, with whether it works here and why not."""
    return registry.available()


__all__ = [
    "ArgumentError",
    "BackendError",
    "BackendInfo",
    "BackendRuntimeError",
    "BackendUnavailableError",
    "Batcher",
    "BatcherClosedError",
    "BatcherMetrics",
    "BatchingError",
    "BenchmarkReport",
    "BenchmarkResult",
    "BenchmarkWarning",
    "BoundIO",
    "CalibrationDropError",
    "CalibrationError",
    "CalibrationReport",
    "CalibrationResult",
    "CompareReport",
    "ConversionError",
    "ConversionMismatchError",
    "ConversionReport",
    "ConversionResult",
    "DeadlineExceededError",
    "DistillReport",
    "DistillResult",
    "Engine",
    "EngineClosedError",
    "EngineStats",
    "InfercoreError",
    "InputSpecError",
    "InputsRejectedError",
    "ModelLoadError",
    "MonitorWorkerError",
    "OptimizeDropError",
    "OptimizeError",
    "OptimizeReport",
    "OptimizeResult",
    "ProfileError",
    "PruneReport",
    "PruneResult",
    "PruningError",
    "Quantization",
    "QueueFullError",
    "RuntimeInputError",
    "SignatureError",
    "TensorSpec",
    "UnknownBackendError",
    "UsageError",
    "Verifier",
    "__version__",
    "available_backends",
    "benchmark",
    "calibrate",
    "calibration_batches",
    "compare",
    "convert",
    "convert_fp16",
    "distill",
    "hookimpl",
    "load",
    "monitor",
    "optimize",
    "prune",
    "registry",
    "sign",
    "verify",
]
