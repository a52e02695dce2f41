"""Tiny ONNX models for the TensorRT tests (built with onnx.helper)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def add_mul(path: Path, batch: int | str = "batch") -> Path:
    """sum = a + b, prod = a * b over float32 [batch, 4]."""
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [batch, 4])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [batch, 4])
    s = helper.make_tensor_value_info("sum", TensorProto.FLOAT, [batch, 4])
    p = helper.make_tensor_value_info("prod", TensorProto.FLOAT, [batch, 4])
    nodes = [
        helper.make_node("Add", ["a", "b"], ["sum"], name="add0"),
        helper.make_node("Mul", ["a", "b"], ["prod"], name="mul0"),
    ]
    return _save(helper.make_graph(nodes, "add_mul", [a, b], [s, p]), path)


def int_plus_one(path: Path) -> Path:
    """y = x + 1 over int32 [2, 3] (static)."""
    x = helper.make_tensor_value_info("x", TensorProto.INT32, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.INT32, [2, 3])
    one = numpy_helper.from_array(np.ones((1,), np.int32), "one")
    node = helper.make_node("Add", ["x", "one"], ["y"], name="add1")
    return _save(helper.make_graph([node], "int_plus_one", [x], [y], initializer=[one]), path)


def unsupported(path: Path) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    node = helper.make_node("FancyOp", ["x"], ["y"], name="fancy_node", domain="com.example")
    graph = helper.make_graph([node], "unsupported", [x], [y])
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]
    )
    model.ir_version = 8
    onnx.save(model, path)
    return path


def qdq(path: Path) -> Path:
    """y = DQ(Q(x)) + x over float32 [1, 4]: an explicitly quantized graph."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    scale = numpy_helper.from_array(np.array(0.5, np.float32), "scale")
    zero = numpy_helper.from_array(np.array(0, np.int8), "zero")
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["q"], name="q"),
        helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["dq"], name="dq"),
        helper.make_node("Add", ["dq", "x"], ["y"], name="add"),
    ]
    return _save(helper.make_graph(nodes, "qdq", [x], [y], initializer=[scale, zero]), path)
