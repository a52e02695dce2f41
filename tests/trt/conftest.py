"""Puts the fake ``tensorrt`` and ``cuda.bindings.runtime`` into ``sys.modules`` for these tests only.

The fakes live here, never under ``src/``: the backend imports ``tensorrt`` and
``cuda.bindings.runtime`` by name and cannot tell it is talking to ``fake_tensorrt``/``fake_cuda``.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fake_cuda
import fake_tensorrt

from infercore.plugins import registry

VERSIONS = ("10.16.1.11", "11.4.0.106")


def install(monkeypatch: pytest.MonkeyPatch, version: str) -> types.ModuleType:
    from infercore.backends.tensorrt import cuda

    trt = fake_tensorrt.build(version)
    rt = fake_cuda.make_module()
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = rt  # type: ignore[attr-defined]
    top = types.ModuleType("cuda")
    top.bindings = bindings  # type: ignore[attr-defined]
    for name, mod in (
        ("tensorrt", trt),
        ("cuda", top),
        ("cuda.bindings", bindings),
        ("cuda.bindings.runtime", rt),
    ):
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.setattr(cuda, "_rt", None)
    registry.reset()  # probes are cached per process
    return trt


def reset_gpu(**state: object) -> None:
    """A fresh fake GPU (``driver=0``: no driver, ``gpus=[]``: none), and no cached probe."""
    fake_cuda.reset(**state)
    registry.reset()


@pytest.fixture(params=VERSIONS)
def fake_trt(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    """The fake TensorRT of one version (each test runs on 10.x and 11.x) and a fresh fake GPU."""
    fake_cuda.reset()
    fake_tensorrt.BUILDS.clear()
    yield install(monkeypatch, request.param)
    reset_gpu()


@pytest.fixture(params=[v for v in VERSIONS if v.startswith("10.")])
def fake_trt10(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    """The fake TensorRT of the 10.x versions only: for the INT8 calibrator, which 11 removed."""
    fake_cuda.reset()
    fake_tensorrt.BUILDS.clear()
    yield install(monkeypatch, request.param)
    reset_gpu()


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("INFERCORE_CACHE", str(d))
    return d / "tensorrt"
