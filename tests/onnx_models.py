"""Tiny ONNX models built with onnx.helper for unit tests (written to tmp_path, never committed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def save(path: Path, nodes, inputs, outputs, initializers=(), opset: int = 17, metadata=None) -> Path:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="infercore-tests")
    model.ir_version = 9
    for k, v in (metadata or {}).items():
        p = model.metadata_props.add()
        p.key, p.value = k, v
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def vi(name: str, elem: int, shape: Sequence[int | str | None] | None):
    return helper.make_tensor_value_info(name, elem, shape)


def embedding(path: Path, vocab: int = 10, dim: int = 4) -> tuple[Path, np.ndarray]:
    """y = table[ids]: ids int64 [batch, seq] -> float32 [batch, seq, dim] (a Gather, as a text
    model's first layer: an id past the vocabulary is ONNX Runtime's INVALID_ARGUMENT)."""
    table = np.arange(vocab * dim, dtype=np.float32).reshape(vocab, dim)
    save(path, [helper.make_node("Gather", ["table", "ids"], ["y"], axis=0)],
         [vi("ids", TensorProto.INT64, ["batch", "seq"])], [vi("y", TensorProto.FLOAT, ["batch", "seq", dim])],
         [numpy_helper.from_array(table, "table")])
    return path, table


def add_bias(path: Path, n: int = 16, batch: int | str = "batch") -> tuple[Path, np.ndarray]:
    """y = x + b, x float32 [batch, n]."""
    b = np.arange(n, dtype=np.float32).reshape(1, n)
    save(path, [helper.make_node("Add", ["x", "b"], ["y"])],
         [vi("x", TensorProto.FLOAT, [batch, n])], [vi("y", TensorProto.FLOAT, [batch, n])],
         [numpy_helper.from_array(b, "b")], metadata={"author": "tests"})
    return path, b


def mlp(path: Path, d_in: int = 8, d_hidden: int = 16, d_out: int = 4, seed: int = 0) -> tuple[Path, dict]:
    """softmax(relu(x @ W1 + b1) @ W2 + b2) with Gemm, MatMul, Relu, Add, Softmax: x float32 [batch, d_in]."""
    rng = np.random.default_rng(seed)
    w = {
        "W1": rng.standard_normal((d_in, d_hidden)).astype(np.float32),
        "b1": rng.standard_normal(d_hidden).astype(np.float32),
        "W2": rng.standard_normal((d_hidden, d_out)).astype(np.float32),
        "b2": rng.standard_normal(d_out).astype(np.float32),
    }
    nodes = [
        helper.make_node("Gemm", ["x", "W1", "b1"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("MatMul", ["r", "W2"], ["m"]),
        helper.make_node("Add", ["m", "b2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
    ]
    save(path, nodes, [vi("x", TensorProto.FLOAT, ["batch", d_in])],
         [vi("logits", TensorProto.FLOAT, ["batch", d_out]), vi("probs", TensorProto.FLOAT, ["batch", d_out])],
         [numpy_helper.from_array(v, k) for k, v in w.items()])
    return path, w


def mlp_numpy(x: np.ndarray, w: dict) -> tuple[np.ndarray, np.ndarray]:
    h = np.maximum(x @ w["W1"] + w["b1"], 0)
    logits = h @ w["W2"] + w["b2"]
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return logits, e / e.sum(-1, keepdims=True)


def identity(path: Path, elem: int, shape=("n",)) -> Path:
    return save(path, [helper.make_node("Identity", ["x"], ["y"])], [vi("x", elem, list(shape))],
                [vi("y", elem, list(shape))])


def two_inputs(path: Path) -> Path:
    """z = a * b, both float32 [batch, 4]; w = Sigmoid(a) too."""
    return save(path, [helper.make_node("Mul", ["a", "b"], ["z"]), helper.make_node("Sigmoid", ["a"], ["w"])],
                [vi("a", TensorProto.FLOAT, ["batch", 4]), vi("b", TensorProto.FLOAT, ["batch", 4])],
                [vi("z", TensorProto.FLOAT, ["batch", 4]), vi("w", TensorProto.FLOAT, ["batch", 4])])


def nonzero(path: Path) -> Path:
    """Data-dependent output shape: y = NonZero(x), int64 [1, k]."""
    return save(path, [helper.make_node("NonZero", ["x"], ["y"])], [vi("x", TensorProto.FLOAT, [6])],
                [vi("y", TensorProto.INT64, [1, None])])


def scalar_input(path: Path) -> Path:
    """y = x * s with a 0-d int64-free float scalar s."""
    return save(path, [helper.make_node("Mul", ["x", "s"], ["y"])],
                [vi("x", TensorProto.FLOAT, [3]), vi("s", TensorProto.FLOAT, [])], [vi("y", TensorProto.FLOAT, [3])])


def transpose_reshape(path: Path) -> Path:
    shape = numpy_helper.from_array(np.array([0, -1], np.int64), "shape")
    return save(path, [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 1]),
                       helper.make_node("Reshape", ["t", "shape"], ["y"])],
                [vi("x", TensorProto.FLOAT, ["batch", 2, 3])], [vi("y", TensorProto.FLOAT, ["batch", 6])], [shape])
