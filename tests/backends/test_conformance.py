"""Every built-in backend passes the conformance kit (``infercore.testing.conformance``).

``openvino-tflite`` is OpenVINO reading ``.tflite`` files; a target is skipped only when its
runtime package is not installed. ``TestThirdPartyPlugin`` uses the kit the way a plugin author
would: a backend registered through the plugin hook, its own model factory, a declared dtype gap.
"""

from __future__ import annotations

import types
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import infercore as ic
from infercore.specs import BackendInfo
from infercore.testing.conformance import (
    BackendConformance,
    BackendUnderTest,
    ModelCase,
    build_onnx,
    builtin_target,
    mlp_case,
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


# -- the kit catches the bugs it claims to catch -------------------------------------------------
class _BuggyBackend:
    """The reference backend with one deliberate bug (``bug``; ``""``: none)."""

    name = "buggy"

    def __init__(self, inner: Any, bug: str) -> None:
        self._inner, self._bug = inner, bug
        self.device, self.metadata = inner.device, inner.metadata
        self.inputs, self.outputs = inner.inputs, inner.outputs
        self._buffers: dict[tuple[str, tuple[int, ...]], np.ndarray] = {}

    def run(self, feeds: Any, outputs: Sequence[str]) -> dict[str, np.ndarray]:
        if self._bug == "ignore_outputs":  # every output, in the model's order
            return self._inner.run(feeds, [s.name for s in self.outputs])
        result = self._inner.run(feeds, outputs)
        if self._bug == "reuse_buffers":  # views of buffers the next run overwrites
            for name, value in result.items():
                buffer = self._buffers.setdefault((name, value.shape), np.empty_like(value))
                buffer[...] = value
                result[name] = buffer[...]
        return result

    def bind(self, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> Any:
        binding = self._inner.bind(inputs, outputs)
        return _StaleAfterFirstRun(self._inner, binding) if self._bug == "stale_bound_output" else binding

    def close(self) -> None:
        self._inner.close()


class _StaleAfterFirstRun:
    """Writes the caller's output arrays at the first run, then puts new arrays in their place."""

    def __init__(self, backend: Any, binding: Any) -> None:
        self._backend, self._binding, self._ran = backend, binding, False
        self.inputs, self.outputs = binding.inputs, binding.outputs

    def run(self) -> None:
        if not self._ran:
            self._binding.run()
            self._ran = True
            return
        self.outputs.update(self._backend.run(self.inputs, list(self.outputs)))

    def close(self) -> None:
        self._binding.close()


class _BuggyFactory:
    def __init__(self, bug: str) -> None:
        self.bug = bug

    def probe(self) -> BackendInfo:
        return BackendInfo("buggy", True, version="1.0")

    def open(
        self, path: Path, *, device: str, precision: str | None, threads: int | None, options: Any
    ) -> Any:
        if self.bug == "raw_load_error" and path.read_bytes()[:4] == b"this":
            raise ValueError("cannot parse this file")  # not an infercore error: the Engine wraps it
        if self.bug == "opens_anything" and path.read_bytes()[:4] == b"this":
            return _BuggyBackend(_Unreadable(), self.bug)  # fails only at the first run
        from infercore.backends.reference import ReferenceFactory

        inner = ReferenceFactory().open(
            path, device=device, precision=precision, threads=threads, options=options
        )
        return _BuggyBackend(inner, self.bug)


class _Unreadable:
    """What a lazily loading backend holds for a file it has not read yet."""

    device = "cpu"
    metadata: dict[str, str] = {}
    inputs, outputs = mlp_case().inputs, mlp_case().outputs

    def run(self, feeds: Any, outputs: Sequence[str]) -> dict[str, np.ndarray]:
        raise ic.BackendRuntimeError("the model file was never readable")

    def close(self) -> None:
        pass


def _buggy_target(bug: str) -> BackendUnderTest:
    plugin = types.ModuleType(f"infercore_buggy_{bug or 'none'}")

    @ic.hookimpl
    def register_backends(register: Any) -> None:
        register("buggy", _BuggyFactory(bug), suffixes=(".buggy",))

    plugin.register_backends = register_backends  # type: ignore[attr-defined]
    ic.registry.add_plugin(plugin)  # removed after the test by tests/conftest.py
    return BackendUnderTest("buggy", model_factory=_buggy_models)


def _buggy_models(case: ModelCase, directory: Path) -> Path:
    path = build_onnx(case, directory)
    return path.rename(path.with_suffix(".buggy"))


ENGINE_CHECKS = [
    ("reuse_buffers", "test_run_returns_arrays_the_caller_owns"),
    ("ignore_outputs", "test_run_returns_the_outputs_asked_for"),
    ("stale_bound_output", "test_bind_uses_caller_arrays"),
]


@pytest.mark.parametrize(("bug", "check"), ENGINE_CHECKS)
def test_the_kit_catches(bug: str, check: str, tmp_path: Path) -> None:
    target = _buggy_target(bug)
    path = target.build(mlp_case(), tmp_path)
    with target.load(path) as engine, pytest.raises(AssertionError):
        getattr(BackendConformance(), check)(engine)


@pytest.mark.parametrize("check", sorted({c for _, c in ENGINE_CHECKS}))
def test_the_same_checks_pass_without_the_bug(check: str, tmp_path: Path) -> None:
    target = _buggy_target("")
    with target.load(target.build(mlp_case(), tmp_path)) as engine:
        getattr(BackendConformance(), check)(engine)


@pytest.mark.parametrize(
    ("bug", "caught"), [("opens_anything", True), ("raw_load_error", False), ("", False)]
)
def test_the_kit_catches_a_garbage_file_that_loads(bug: str, caught: bool, tmp_path: Path) -> None:
    """A backend that accepts a garbage file fails the check; one whose open() lets a raw
    exception through passes it, since the Engine turns that into ModelLoadError."""
    target = _buggy_target(bug)
    case = mlp_case()
    (tmp_path / "model").mkdir()
    mlp = (case, target.build(case, tmp_path / "model"))
    check = BackendConformance().test_garbage_file_raises_model_load_error
    if caught:
        with pytest.raises(pytest.fail.Exception, match="ModelLoadError"):
            check(target, mlp, tmp_path)
    else:
        check(target, mlp, tmp_path)
