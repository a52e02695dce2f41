"""Reference backend: a pure-numpy interpreter for a handful of ONNX operators.

It needs no runtime, only the ``onnx`` package to read the file, so the layers above the Engine
can be tested anywhere and the conformance kit has an oracle that shares no code with any
runtime. It is slow on purpose-free grounds (plain numpy, float64 nowhere), and refuses any
operator it does not implement, naming it.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import (
    BackendError,
    BackendRuntimeError,
    BackendUnavailableError,
    InputSpecError,
    ModelLoadError,
)
from ..optional import require
from ..specs import BackendInfo, TensorSpec

EXTRA = "onnx"


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    out: np.ndarray = e / e.sum(axis=axis, keepdims=True)
    return out


def _reshape(x: np.ndarray, shape: np.ndarray, allowzero: int = 0) -> np.ndarray:
    target = [int(d) for d in shape]
    if not allowzero:
        target = [x.shape[i] if d == 0 else d for i, d in enumerate(target)]
    return x.reshape(target)


def _gemm(a: np.ndarray, b: np.ndarray, c: np.ndarray | None = None, *, alpha: float = 1.0,
          beta: float = 1.0, transA: int = 0, transB: int = 0) -> np.ndarray:
    a = a.T if transA else a
    b = b.T if transB else b
    y = (alpha * (a @ b)).astype(a.dtype)
    if c is not None:
        y = y + (beta * c).astype(a.dtype)
    return y


def _int_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """ONNX integer Div truncates toward zero (C semantics: -7 / 2 = -3), where numpy's // floors
    (-4). ``a - fmod(a, b)`` is an exact multiple of ``b``, so the floor division of it is exact."""
    out: np.ndarray = np.floor_divide(a - np.fmod(a, b), b)
    return out


def _op(fn: Callable[..., np.ndarray], attrs: Sequence[str] = ()) -> Callable[[list[Any], dict[str, Any]], np.ndarray]:
    def run(args: list[Any], at: dict[str, Any]) -> np.ndarray:
        return fn(*args, **{k: at[k] for k in attrs if k in at})

    return run


_OPS: dict[str, Callable[[list[Any], dict[str, Any]], np.ndarray]] = {
    "Add": lambda a, _: np.add(a[0], a[1]),
    "Sub": lambda a, _: np.subtract(a[0], a[1]),
    "Mul": lambda a, _: np.multiply(a[0], a[1]),
    "Div": lambda a, _: np.divide(a[0], a[1]) if a[0].dtype.kind == "f" else _int_div(a[0], a[1]),
    "MatMul": lambda a, _: np.matmul(a[0], a[1]),
    "Gemm": lambda a, at: _gemm(*a, **at),
    "Relu": lambda a, _: np.maximum(a[0], np.zeros((), a[0].dtype)),
    "Sigmoid": lambda a, _: (1 / (1 + np.exp(-a[0]))).astype(a[0].dtype),
    "Tanh": lambda a, _: np.tanh(a[0]),
    "Softmax": lambda a, at: _softmax(a[0], at.get("axis", -1)),
    "Reshape": lambda a, at: _reshape(a[0], a[1], at.get("allowzero", 0)),
    "Transpose": lambda a, at: np.transpose(a[0], at.get("perm")),
    "Identity": lambda a, _: a[0].copy(),
}


class ReferenceFactory:
    """Registered as ``reference`` (lowest priority for ``.onnx``: never picked unless asked)."""

    extra = EXTRA

    def probe(self) -> BackendInfo:
        try:
            require("onnx", EXTRA)
        except BackendUnavailableError as e:
            return BackendInfo("reference", False, reason=str(e), extra=EXTRA)
        return BackendInfo(
            "reference", True, version=f"numpy {np.__version__}, onnx {importlib.metadata.version('onnx')}",
            devices=("cpu",), extra=EXTRA, details={"ops": ", ".join(sorted(_OPS))},
        )

    def open(self, path: Path, *, device: str, precision: str | None, threads: int | None,
             options: Mapping[str, Any]) -> ReferenceBackend:
        onnx = require("onnx", EXTRA)
        if device.lower() not in ("cpu", "cpu:0"):
            raise BackendError(f"reference: runs on 'cpu' only, not {device!r}")
        if precision not in (None, "fp32"):
            raise BackendError(f"reference: runs the model as saved; precision={precision!r} is not supported")
        if options:
            raise BackendError(f"reference: takes no options, got {', '.join(options)}")
        try:
            model = onnx.load(str(path))
        except Exception as e:
            raise ModelLoadError(f"onnx could not read {path}: {e}", path=str(path)) from e
        if not model.graph.output:  # protobuf reads an empty file (or stray bytes) as an empty model
            size = path.stat().st_size
            raise ModelLoadError(
                f"reference: {path} ({size} bytes) holds no ONNX graph (no outputs): an empty or "
                "truncated file, or not an ONNX model",
                path=str(path),
            )
        return ReferenceBackend(model, path)


def _value_spec(vi: Any) -> TensorSpec:
    from onnx import helper

    t = vi.type.tensor_type
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type))
    dims: list[int | None] = []
    names: list[str | None] = []
    for d in t.shape.dim:
        if d.HasField("dim_value"):
            dims.append(d.dim_value)
            names.append(None)
        else:
            dims.append(None)
            names.append(d.dim_param or None)
    return TensorSpec(vi.name, dtype, tuple(dims), tuple(names))


class ReferenceBackend:
    name = "reference"
    device = "cpu"

    def __init__(self, model: Any, path: Path) -> None:
        from onnx import numpy_helper

        g = model.graph
        unknown = sorted({n.op_type for n in g.node if n.domain not in ("", "ai.onnx") or n.op_type not in _OPS})
        if unknown:
            raise ModelLoadError(
                f"reference backend cannot run {path.name}: no numpy implementation of {', '.join(unknown)} "
                f"(it implements {', '.join(sorted(_OPS))})",
                path=str(path),
            )
        self.path = path
        self._init = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        self._nodes = [(n.op_type, list(n.input), list(n.output), _attrs(n)) for n in g.node]
        self.inputs = tuple(_value_spec(v) for v in g.input if v.name not in self._init)
        self.outputs = tuple(_value_spec(v) for v in g.output)
        self.metadata = {p.key: p.value for p in model.metadata_props}
        self._closed = False

    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        if self._closed:
            raise BackendRuntimeError("reference: backend is closed")
        env: dict[str, Any] = {**self._init, **feeds, "": None}
        for op, ins, outs, at in self._nodes:
            try:
                env[outs[0]] = _OPS[op]([env[i] for i in ins], at)
            except Exception as e:
                raise BackendRuntimeError(f"reference: {op} failed: {e}") from e
        return {name: np.array(env[name], copy=True) for name in outputs}

    def bind(self, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> ReferenceBinding:
        return ReferenceBinding(self, inputs, outputs)

    def close(self) -> None:
        self._closed = True


class ReferenceBinding:
    """Not zero-copy (numpy allocates its results); copies results into the bound outputs.

    Binding runs the model once, on whatever the inputs hold, to learn the output shapes: an
    array the caller binds for an output must have that shape (``InputSpecError``), and is
    never replaced by another (a later run that changes the shape raises)."""

    def __init__(self, backend: ReferenceBackend, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> None:
        self._backend = backend
        self._names = tuple(s.name for s in backend.outputs)
        self.inputs = inputs
        first = backend.run(inputs, self._names)
        for name, given in outputs.items():
            if given.shape != first[name].shape:
                raise InputSpecError(
                    f"output {name!r}: for these input shapes it has shape {first[name].shape}, "
                    f"got an array of shape {given.shape}",
                    tensor=name,
                )
        self._given = frozenset(outputs)
        self.outputs = {n: outputs.get(n, first[n]) for n in self._names}

    def run(self) -> None:
        result = self._backend.run(self.inputs, self._names)
        for name, value in result.items():
            buf = self.outputs[name]
            if buf.shape == value.shape:
                np.copyto(buf, value)
            elif name in self._given:
                raise InputSpecError(
                    f"output {name!r}: reference computed shape {value.shape} for this run, but the array "
                    f"bound for it has shape {buf.shape}; bind without it and read io.outputs[{name!r}]",
                    tensor=name,
                )
            else:
                self.outputs[name] = value

    def close(self) -> None:
        self.outputs = {}
