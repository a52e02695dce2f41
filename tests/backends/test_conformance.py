"""Every built-in backend passes the conformance kit (``infercore.testing.conformance``).

``openvino-tflite`` is OpenVINO reading ``.tflite`` files; a target is skipped only when its
runtime package is not installed. ``TestThirdPartyPlugin`` uses the kit the way a plugin author
would: a backend registered through the plugin hook, its own model factory, a declared dtype gap.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import infercore as ic
from infercore.specs import BackendInfo
from infercore.testing.conformance import (
    BackendConformance,
    BackendUnderTest,
    ModelCase,
    build_onnx,
    builtin_target,
)

TARGETS = ["ort", "openvino", "openvino-tflite", "litert", "reference"]


class TestBuiltinBackends(BackendConformance):
    @pytest.fixture(params=TARGETS)
    def target(self, request: pytest.FixtureRequest) -> BackendUnderTest:
        return builtin_target(request.param)


# -- a third-party plugin, as its author would test it -------------------------------------------
class _NumpyFactory:
    """A "third-party" backend: the reference interpreter under another name, refusing float16."""

    def probe(self) -> BackendInfo:
        return BackendInfo("numpyplugin", True, version="1.0")

    def open(
        self, path: Path, *, device: str, precision: str | None, threads: int | None, options: Any
    ) -> Any:
        from infercore.backends.reference import ReferenceFactory

        backend = ReferenceFactory().open(
            path, device=device, precision=precision, threads=threads, options=options
        )
        if any(s.dtype.name == "float16" for s in backend.inputs):
            raise ic.ModelLoadError("numpyplugin does not run float16 models", path=str(path))
        backend.name = "numpyplugin"
        return backend


class _Plugin:
    @ic.hookimpl
    def register_backends(self, register: Any) -> None:
        register("numpyplugin", _NumpyFactory(), suffixes=(".npx",), priority=0)


def _npx_models(case: ModelCase, directory: Path) -> Path:
    """The plugin's own file format (here: ONNX under another suffix)."""
    path = build_onnx(case, directory)
    return path.rename(path.with_suffix(".npx"))


class TestThirdPartyPlugin(BackendConformance):
    @pytest.fixture
    def target(self) -> Iterator[BackendUnderTest]:
        plugin = _Plugin()
        ic.registry.add_plugin(plugin, "numpyplugin")
        yield BackendUnderTest("numpyplugin", model_factory=_npx_models, unsupported_dtypes=("float16",))
        ic.registry.remove_plugin(plugin)
