"""Tiny ONNX models in a model repository, and a server on loopback ephemeral ports."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("grpc")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from infercore.serve.server import InferenceServer, ServeOptions, ServerThread  # noqa: E402


def affine_model(path: Path, scale: float) -> Path:
    """x float32 [N, 4] -> y = x * scale + 1 (float32 [N, 4]), idx = argmax(x, 1) (int64 [N])."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    idx = helper.make_tensor_value_info("idx", TensorProto.INT64, ["N"])
    nodes = [
        helper.make_node("Mul", ["x", "scale"], ["t"]),
        helper.make_node("Add", ["t", "one"], ["y"]),
        helper.make_node("ArgMax", ["x"], ["idx"], axis=1, keepdims=0),
    ]
    inits = [
        numpy_helper.from_array(np.array(scale, np.float32), "scale"),
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
    ]
    graph = helper.make_graph(nodes, "affine", [x], [y, idx], inits)
    return _save(graph, path)


def strings_model(path: Path) -> Path:
    """s string [N] -> out string [N] (Identity): the BYTES datatype end to end."""
    s = helper.make_tensor_value_info("s", TensorProto.STRING, ["N"])
    out = helper.make_tensor_value_info("out", TensorProto.STRING, ["N"])
    graph = helper.make_graph([helper.make_node("Identity", ["s"], ["out"])], "strings", [s], [out])
    return _save(graph, path)


def _save(graph: Any, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="session")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``affine`` (versions 1: x*2+1, 2: x*3+1; serves the latest), ``strings`` (BYTES, unbatched)."""
    root = tmp_path_factory.mktemp("repo")
    affine_model(root / "affine" / "1" / "model.onnx", 2.0)
    affine_model(root / "affine" / "2" / "model.onnx", 3.0)
    (root / "affine" / "config.yaml").write_text(
        "threads: 1\nbatching:\n  max_batch_size: 8\n  max_queue_delay_ms: 1\nversion_policy: {latest: 1}\n"
    )
    strings_model(root / "strings" / "1" / "model.onnx")
    (root / "strings" / "config.yaml").write_text("batching: false\nthreads: 1\n")
    return root


@contextlib.contextmanager
def running(repo: Path, **options: Any) -> Iterator[InferenceServer]:
    settings: dict[str, Any] = {
        "host": "127.0.0.1",
        "http_port": 0,
        "grpc_port": 0,
        "metrics_port": 0,
        "drain_timeout": 10,
    }
    opts = ServeOptions(**{**settings, **options})
    thread = ServerThread(InferenceServer(repo, opts))
    with thread as server:
        yield server


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[InferenceServer]:
    with running(repo) as s:
        yield s


def affine(x: np.ndarray, scale: float) -> dict[str, np.ndarray]:
    return {"y": x * np.float32(scale) + np.float32(1), "idx": np.argmax(x, axis=1).astype(np.int64)}
