"""The conformance kit's model cases: tiny models with a numpy oracle, built as ONNX with
``onnx.helper`` or as ``.tflite`` straight from the TFLite flatbuffer schema."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from infercore.specs import TensorSpec

__all__ = [
    "BUILDERS",
    "CASES",
    "DTYPES",
    "ModelCase",
    "build_onnx",
    "build_tflite",
    "mlp_case",
    "scale_case",
    "transpose_case",
]

Feeds = Mapping[str, np.ndarray]

DTYPES: tuple[np.dtype, ...] = tuple(
    np.dtype(d) for d in ("float32", "float16", "int32", "int64", "int8", "uint8", "bool")
)


# -- the model cases ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelCase:
    """A tiny model: what it declares (``inputs``/``outputs``) and what numpy says it computes.

    ``kind`` is ``"mlp"``, ``"scale"`` or ``"transpose"``; a ``model_factory`` builds the model
    from these facts. The batch dimension (named ``"batch"``) is dynamic in every case.
    """

    kind: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    weights: Mapping[str, np.ndarray] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.kind if self.kind != "transpose" else f"transpose-{self.inputs[0].dtype}"

    def feeds(self, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
        """Inputs by ``infercore.inputs``' rules: floats N(0, 1); integers in [-100, 100] within
        their dtype (negative values too: a transpose must carry them unchanged)."""
        from infercore.inputs import make_feeds

        ranges = {s.name: (-100.0, 101.0) for s in self.inputs if s.dtype.kind in "iu"}
        feeds, _ = make_feeds(self.inputs, batch=batch, seed=seed, distribution="normal", ranges=ranges)
        return feeds

    def reference(self, feeds: Feeds) -> dict[str, np.ndarray]:
        """What the model computes, in numpy."""
        if self.kind == "mlp":
            h = feeds["x"] @ self.weights["w"] + self.weights["b"] + feeds["s"]
            e = np.exp(h - h.max(axis=-1, keepdims=True))
            return {"y": np.maximum(h, 0), "p": e / e.sum(axis=-1, keepdims=True)}
        if self.kind == "scale":
            return {"y": feeds["x"] * feeds["k"]}
        if self.kind == "transpose":
            return {"y": np.ascontiguousarray(np.transpose(feeds["x"], (0, 2, 1)))}
        raise ValueError(f"unknown case kind {self.kind!r}")


_F32 = np.dtype(np.float32)
_B = ("batch",)


def mlp_case() -> ModelCase:
    """``h = x @ w + b + s``; outputs ``y = relu(h)`` and ``p = softmax(h)``; x [batch, 8], s [batch, 4]."""
    rng = np.random.default_rng(1234)
    w = (rng.standard_normal((8, 4)) / 3).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32) / 10
    return ModelCase(
        "mlp",
        (TensorSpec("x", _F32, (None, 8), (*_B, None)), TensorSpec("s", _F32, (None, 4), (*_B, None))),
        (TensorSpec("y", _F32, (None, 4), (*_B, None)), TensorSpec("p", _F32, (None, 4), (*_B, None))),
        {"w": w, "b": b},
    )


def scale_case() -> ModelCase:
    """``y = x * k`` with ``k`` a 0-d input: scalars must stay scalars end to end."""
    return ModelCase(
        "scale",
        (TensorSpec("x", _F32, (None, 4), (*_B, None)), TensorSpec("k", _F32, ())),
        (TensorSpec("y", _F32, (None, 4), (*_B, None)),),
    )


def transpose_case(dtype: np.dtype | str) -> ModelCase:
    """``y = transpose(x, (0, 2, 1))``, x [batch, 2, 3] of ``dtype``: moves data without arithmetic."""
    dt = np.dtype(dtype)
    return ModelCase(
        "transpose",
        (TensorSpec("x", dt, (None, 2, 3), (*_B, None, None)),),
        (TensorSpec("y", dt, (None, 3, 2), (*_B, None, None)),),
    )


CASES: dict[str, Callable[[], ModelCase]] = {"mlp": mlp_case, "scale": scale_case}


# -- ONNX builder -------------------------------------------------------------------------------
def build_onnx(case: ModelCase, directory: Path) -> Path:
    """Write ``case`` as an ONNX model (opset 17) with ``onnx.helper``."""
    from onnx import helper, numpy_helper, save

    def vi(spec: TensorSpec) -> Any:
        elem = helper.np_dtype_to_tensor_dtype(spec.dtype)
        dims = [n if d is None else d for d, n in zip(spec.shape, spec.dim_names, strict=True)]
        return helper.make_tensor_value_info(spec.name, elem, dims)

    inits = []
    if case.kind == "mlp":
        inits = [
            numpy_helper.from_array(case.weights["w"], "w"),
            numpy_helper.from_array(case.weights["b"], "b"),
        ]
        nodes = [
            helper.make_node("MatMul", ["x", "w"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["xwb"]),
            helper.make_node("Add", ["xwb", "s"], ["h"]),
            helper.make_node("Relu", ["h"], ["y"]),
            helper.make_node("Softmax", ["h"], ["p"], axis=-1),
        ]
    elif case.kind == "scale":
        nodes = [helper.make_node("Mul", ["x", "k"], ["y"])]
    elif case.kind == "transpose":
        nodes = [helper.make_node("Transpose", ["x"], ["y"], perm=[0, 2, 1])]
    else:
        raise ValueError(f"unknown case kind {case.kind!r}")
    graph = helper.make_graph(
        nodes, case.key, [vi(s) for s in case.inputs], [vi(s) for s in case.outputs], inits
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="infercore-conformance"
    )
    model.ir_version = 8
    path = directory / f"{case.key}.onnx"
    save(model, str(path))
    return path


# -- TFLite builder -----------------------------------------------------------------------------
_TFL_TYPES = {"float32": 0, "float16": 1, "int32": 2, "uint8": 3, "int64": 4, "bool": 6, "int8": 9}


def build_tflite(case: ModelCase, directory: Path) -> Path:
    """Write ``case`` as a ``.tflite`` flatbuffer from the TFLite schema (no converter needed).

    Uses the schema module that ships with ai-edge-litert (``schema_py_generated``) and the
    ``flatbuffers`` package. Dynamic dimensions are written as ``shape_signature`` -1.
    """
    from infercore.optional import require

    s = require("ai_edge_litert.schema_py_generated", "litert", package="ai-edge-litert")
    flatbuffers = require("flatbuffers", "litert")

    model = s.ModelT()
    model.version = 3
    model.description = f"infercore conformance {case.key}"
    model.buffers = [s.BufferT()]
    tensors: list[Any] = []
    index: dict[str, int] = {}

    def add_tensor(
        name: str, dtype: np.dtype, shape: Sequence[int | None], data: np.ndarray | None = None
    ) -> int:
        t = s.TensorT()
        t.name = name
        t.type = _TFL_TYPES[np.dtype(dtype).name]
        t.shape = [1 if d is None else int(d) for d in shape]
        t.shapeSignature = [-1 if d is None else int(d) for d in shape]
        t.buffer = 0
        if data is not None:
            buf = s.BufferT()
            buf.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)
            model.buffers.append(buf)
            t.buffer = len(model.buffers) - 1
        tensors.append(t)
        index[name] = len(tensors) - 1
        return index[name]

    codes: list[int] = []

    def add_op(
        code: int, ins: Sequence[str | None], outs: Sequence[str], options_type: int = 0, options: Any = None
    ) -> Any:
        if code not in codes:
            codes.append(code)
        op = s.OperatorT()
        op.opcodeIndex = codes.index(code)
        op.inputs = [-1 if n is None else index[n] for n in ins]
        op.outputs = [index[n] for n in outs]
        if options is not None:
            op.builtinOptionsType = options_type
            op.builtinOptions = options
        return op

    for spec in case.inputs:
        add_tensor(spec.name, spec.dtype, spec.shape)
    ops = []
    op_codes = s.BuiltinOperator
    opts = s.BuiltinOptions
    if case.kind == "mlp":
        add_tensor("w", _F32, (4, 8), case.weights["w"].T)  # FULLY_CONNECTED takes [out, in]
        add_tensor("b", _F32, (4,), case.weights["b"])
        add_tensor("xwb", _F32, (None, 4))
        for spec in case.outputs:
            add_tensor(spec.name, spec.dtype, spec.shape)
        add_tensor("h", _F32, (None, 4))
        fc = s.FullyConnectedOptionsT()
        ops.append(add_op(op_codes.FULLY_CONNECTED, ["x", "w", "b"], ["xwb"], opts.FullyConnectedOptions, fc))
        ops.append(add_op(op_codes.ADD, ["xwb", "s"], ["h"], opts.AddOptions, s.AddOptionsT()))
        ops.append(add_op(op_codes.RELU, ["h"], ["y"]))
        sm = s.SoftmaxOptionsT()
        sm.beta = 1.0
        ops.append(add_op(op_codes.SOFTMAX, ["h"], ["p"], opts.SoftmaxOptions, sm))
    elif case.kind == "scale":
        add_tensor("y", _F32, (None, 4))
        ops.append(add_op(op_codes.MUL, ["x", "k"], ["y"], opts.MulOptions, s.MulOptionsT()))
    elif case.kind == "transpose":
        spec = case.outputs[0]
        add_tensor("y", spec.dtype, spec.shape)
        add_tensor("perm", np.dtype(np.int32), (3,), np.array([0, 2, 1], np.int32))
        ops.append(
            add_op(op_codes.TRANSPOSE, ["x", "perm"], ["y"], opts.TransposeOptions, s.TransposeOptionsT())
        )
    else:
        raise ValueError(f"unknown case kind {case.kind!r}")

    graph = s.SubGraphT()
    graph.tensors = tensors
    graph.inputs = [index[sp.name] for sp in case.inputs]
    graph.outputs = [index[sp.name] for sp in case.outputs]
    graph.operators = ops
    graph.name = "main"
    model.subgraphs = [graph]
    model.operatorCodes = []
    for code in codes:
        oc = s.OperatorCodeT()
        oc.builtinCode = code
        oc.deprecatedBuiltinCode = min(code, 127)
        oc.version = 1
        model.operatorCodes.append(oc)
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path = directory / f"{case.key}.tflite"
    path.write_bytes(bytes(builder.Output()))
    return path


BUILDERS: dict[str, Callable[[ModelCase, Path], Path]] = {"onnx": build_onnx, "tflite": build_tflite}


