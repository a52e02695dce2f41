"""The built-in backends, registered through the same hook third-party plugins implement.

Each is registered as a ``LazyFactory`` naming its module, so discovery imports no backend module
and no runtime; the module is imported by the first ``probe()`` or ``open()``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..protocol import Backend, BackendFactory, hookimpl
from ..specs import BackendInfo


class LazyFactory:
    """Stands for ``module.attr()`` until a probe or open needs the real factory."""

    def __init__(self, name: str, module: str, attr: str, extra: str, default_device: str = "cpu") -> None:
        self.name, self.module, self.attr, self.extra = name, module, attr, extra
        self.default_device = default_device
        self._factory: BackendFactory | None = None

    def _load(self) -> BackendFactory:
        if self._factory is None:
            factory: BackendFactory = getattr(importlib.import_module(self.module), self.attr)()
            self._factory = factory
        return self._factory

    def probe(self) -> BackendInfo:
        try:
            factory = self._load()
        except ImportError as e:
            return BackendInfo(self.name, False, reason=f"{self.module} failed to import: {e}", extra=self.extra)
        return factory.probe()

    def open(self, path: Path, *, device: str, precision: str | None, threads: int | None,
             options: Mapping[str, Any]) -> Backend:
        return self._load().open(path, device=device, precision=precision, threads=threads, options=options)


@hookimpl
def register_backends(register: Callable[..., None]) -> None:
    here = __name__.rsplit(".", 1)[0]
    register("ort", LazyFactory("ort", f"{here}.ort", "OrtFactory", "ort"), suffixes=(".onnx", ".ort"), priority=100)
    register("openvino", LazyFactory("openvino", f"{here}.ov", "OpenVINOFactory", "openvino"),
             suffixes=(".xml", ".onnx", ".tflite"), priority=50)
    register("litert", LazyFactory("litert", f"{here}.litert", "LiteRTFactory", "litert"),
             suffixes=(".tflite",), priority=100)
    register("tensorrt", LazyFactory("tensorrt", f"{here}.tensorrt", "TensorRTFactory", "tensorrt", "cuda:0"),
             suffixes=(".engine", ".plan"), priority=100)
    register("reference", LazyFactory("reference", f"{here}.reference", "ReferenceFactory", "onnx"),
             suffixes=(".onnx",), priority=-100)
