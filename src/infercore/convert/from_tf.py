"""Keras 3 and TensorFlow sources: a Keras model (or ``.keras`` file), a SavedModel directory or a
``tf.function``, to ONNX through tf2onnx, to ``.tflite`` through TensorFlow's converter (float,
fp16 weights, or full-integer INT8 calibrated on ``data=``) and to OpenVINO IR through
``openvino.convert_model``.

tf2onnx 1.17's ``from_keras`` fails on Keras 3 models (``KeyError: 'keras_tensor'``); every TF
source goes through one ``tf.function`` with a positional input signature and
``tf2onnx.convert.from_function`` instead. ``.tflite`` and IR are built from a SavedModel whose
``serving_default`` signature returns the outputs by name (the SavedModel itself for that source,
one written to a scratch directory for the others).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ArgumentError, BackendUnavailableError, ConversionError
from ..modelfiles import sha256_files
from ..optional import require
from ..specs import TensorSpec
from .source import Builder, Candidate, Options, Source, default_output_names, weights_digest
from .to_onnx import finish_onnx
from .to_openvino import convert_ir

__all__ = ["EXTRA", "is_tf_model", "open_tf", "read_tf_path"]

log = logging.getLogger(__name__)

EXTRA = "convert-tf"
INT8_SAMPLES = 500  # representative samples for full-integer calibration (TensorFlow suggests 100-500)


def _tf() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return require("tensorflow", EXTRA)


def is_tf_model(model: Any) -> bool:
    """A Keras model, a tf.function or a loaded SavedModel, without importing TensorFlow."""
    import sys

    keras = sys.modules.get("keras")
    tf = sys.modules.get("tensorflow")
    if keras is not None and isinstance(model, keras.Model):
        return True
    if tf is not None:
        return isinstance(model, (tf.types.experimental.PolymorphicFunction, tf.types.experimental.ConcreteFunction))
    return False


def read_tf_path(path: Path) -> Any:
    """A ``.keras``/``.h5`` file as a Keras model; a SavedModel directory as the path itself."""
    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise ConversionError(f"{path} is a directory without saved_model.pb: not a SavedModel")
        return path
    _tf()
    keras = require("keras", EXTRA)
    try:
        return keras.models.load_model(str(path), compile=False)
    except Exception as e:
        raise ConversionError(f"keras could not load {path}: {type(e).__name__}: {e}") from e


def _flatten(out: Any, order: Sequence[str] | None = None) -> list[Any]:
    if isinstance(out, Mapping):
        keys = [k for k in order if k in out] if order and set(order) == set(out) else list(out)
        return [t for k in keys for t in _flatten(out[k])]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in _flatten(v)]
    return [out]


def _np(t: Any) -> np.ndarray:
    return np.asarray(t.numpy() if hasattr(t, "numpy") else t)


class _TF:
    """A TF source reduced to what the builders need."""

    def __init__(self, kind: str, name: str, specs: list[TensorSpec], outs: list[str],
                 call: Callable[[list[Any]], list[Any]], sha256: str, saved_model: Path | None = None) -> None:  # fmt: skip
        self.kind, self.name, self.specs, self.outs, self.call = kind, name, specs, outs, call
        self.sha256 = sha256
        self.saved_model = saved_model  # the source's own SavedModel directory, if it is one
        self.variables: list[Any] = []  # what a SavedModel written for it must track
        self.keep: Any = None  # the object that owns the variables (kept alive with the source)

    def signature(self) -> list[Any]:
        tf = _tf()
        return [tf.TensorSpec(s.shape, tf.as_dtype(s.dtype), name=s.name) for s in self.specs]

    def function(self) -> Any:
        """A tf.function with a positional input signature returning the outputs as a list."""
        tf = _tf()
        call = self.call
        return tf.function(lambda *xs: call(list(xs)), input_signature=self.signature())

    def write_saved_model(self, scratch: Path) -> Path:
        """A SavedModel whose serving_default returns the outputs by name."""
        if self.saved_model is not None:
            return self.saved_model
        tf = _tf()
        out_dir = scratch / "saved_model"
        if (out_dir / "saved_model.pb").exists():
            return out_dir
        call, outs = self.call, self.outs

        def serve(*xs: Any) -> dict[str, Any]:
            return dict(zip(outs, call(list(xs)), strict=True))

        module = tf.Module()
        fn = tf.function(serve, input_signature=self.signature())
        module.serve = fn
        # the variables are tracked by the module itself, as Keras' own export does: a Keras 3
        # model hung on a tf.Module leaves them out of the object graph, and TensorFlow's TFLite
        # converter then keeps them as resource variables (VAR_HANDLE) that read garbage
        module.tracked_variables = [getattr(v, "value", v) for v in self.variables]
        tf.saved_model.save(module, str(out_dir), signatures={"serving_default": fn.get_concrete_function()})
        return out_dir


def _dtype(d: Any) -> np.dtype:
    tf = _tf()
    return np.dtype(tf.as_dtype(d).as_numpy_dtype)


def _apply_dynamic(specs: list[TensorSpec], dynamic: Mapping[str, Mapping[int, str]]) -> list[TensorSpec]:
    names = [s.name for s in specs]
    out = []
    for key in dynamic:
        if key not in names:
            raise ArgumentError("dynamic", f"{key!r} is not an input; the inputs are {names}")
    for s in specs:
        axes = {a % max(s.rank, 1): n for a, n in dynamic.get(s.name, {}).items()}
        shape = tuple(None if i in axes else d for i, d in enumerate(s.shape))
        dims = tuple(axes.get(i, s.dim_names[i]) for i in range(s.rank))
        out.append(TensorSpec(s.name, s.dtype, shape, dims))
    return out


def _keras(model: Any, input_names: Sequence[str] | None, output_names: Sequence[str] | None,
           dynamic: Mapping[str, Mapping[int, str]], name: str | None) -> _TF:  # fmt: skip
    tf = _tf()
    inputs = list(model.inputs or [])
    if not inputs:
        raise ConversionError("the Keras model has no defined inputs: build it (call it once, or use keras.Input)")
    names = list(input_names) if input_names is not None else [str(i.name).split(":")[0] for i in inputs]
    if len(names) != len(inputs):
        raise ArgumentError("input_names", f"{len(names)} names {names} for the model's {len(inputs)} inputs")
    specs = [TensorSpec(n, _dtype(i.dtype), tuple(i.shape)) for n, i in zip(names, inputs, strict=True)]
    specs = _apply_dynamic(specs, dynamic)
    model_outs = list(getattr(model, "output_names", None) or [])
    n_out = len(model.outputs or [])
    outs = list(output_names) if output_names is not None else (model_outs if len(model_outs) == n_out else list(default_output_names(n_out)))
    if len(outs) != n_out:
        raise ArgumentError("output_names", f"{len(outs)} names {outs} for the model's {n_out} outputs")

    def call(xs: list[Any]) -> list[Any]:
        arg = xs[0] if len(xs) == 1 else list(xs)
        return _flatten(model(arg, training=False), model_outs)

    digest = weights_digest((getattr(w, "path", None) or w.name, _np(w)) for w in model.weights)
    tfm = _TF("keras.Model", name or model.name, specs, outs, call, digest)
    tfm.variables, tfm.keep = list(model.variables), model
    del tf
    return tfm


def _function(fn: Any, example_inputs: Any, input_names: Sequence[str] | None,
              output_names: Sequence[str] | None, dynamic: Mapping[str, Mapping[int, str]], name: str | None) -> _TF:  # fmt: skip
    tf = _tf()
    signature = getattr(fn, "input_signature", None)
    if signature:
        flat = tf.nest.flatten(signature)
        names = list(input_names) if input_names is not None else [s.name or f"input_{i}" for i, s in enumerate(flat)]
        specs = [TensorSpec(n, _dtype(s.dtype), tuple(s.shape)) for n, s in zip(names, flat, strict=True)]
    elif example_inputs is not None:
        items = list(example_inputs) if isinstance(example_inputs, (list, tuple)) else [example_inputs]
        arrays = [_np(x) for x in items]
        names = list(input_names) if input_names is not None else [f"input_{i}" for i in range(len(arrays))]
        specs = [TensorSpec(n, a.dtype, a.shape) for n, a in zip(names, arrays, strict=True)]
    else:
        raise ArgumentError("example_inputs", "a tf.function without input_signature needs example inputs")
    specs = _apply_dynamic(specs, dynamic)
    first = _flatten(fn(*[tf.zeros([1 if d is None else d for d in s.shape], tf.as_dtype(s.dtype)) for s in specs]))
    outs = list(output_names) if output_names is not None else list(default_output_names(len(first)))
    if len(outs) != len(first):
        raise ArgumentError("output_names", f"{len(outs)} names {outs} for the function's {len(first)} outputs")

    def call(xs: list[Any]) -> list[Any]:
        return _flatten(fn(*xs))

    variables = []
    with contextlib.suppress(Exception):
        variables = list(fn.get_concrete_function(*[tf.TensorSpec(s.shape, tf.as_dtype(s.dtype)) for s in specs]).variables)
    digest = weights_digest((v.name, _np(v)) for v in variables)
    tfm = _TF("tf.function", str(name or getattr(fn, "__name__", "tf.function")), specs, outs, call, digest)
    tfm.variables, tfm.keep = variables, fn
    return tfm


def _saved_model(path: Path, input_names: Sequence[str] | None, output_names: Sequence[str] | None,
                 dynamic: Mapping[str, Mapping[int, str]]) -> _TF:  # fmt: skip
    tf = _tf()
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as e:
        raise ConversionError(f"TensorFlow could not load the SavedModel {path}: {type(e).__name__}: {e}") from e
    sigs = dict(loaded.signatures)
    if "serving_default" not in sigs and len(sigs) != 1:
        raise ConversionError(f"{path} has no serving_default signature; its signatures: {sorted(sigs) or 'none'}")
    sig = sigs.get("serving_default") or next(iter(sigs.values()))
    kw = sig.structured_input_signature[1]
    keys = list(kw)
    if input_names is not None and list(input_names) != keys:
        raise ArgumentError("input_names", f"a SavedModel's inputs are named by its signature: {keys}")
    specs = _apply_dynamic([TensorSpec(k, _dtype(kw[k].dtype), tuple(kw[k].shape)) for k in keys], dynamic)
    sig_outs = sorted(sig.structured_outputs) if isinstance(sig.structured_outputs, Mapping) else []
    if not sig_outs:
        raise ConversionError(f"{path}: the signature's outputs are not named")
    if output_names is not None and list(output_names) != sig_outs:
        raise ArgumentError("output_names", f"a SavedModel's outputs are named by its signature: {sig_outs}")

    def call(xs: list[Any]) -> list[Any]:
        got = sig(**dict(zip(keys, xs, strict=True)))
        return [got[k] for k in sig_outs]

    files = sorted(f for f in path.rglob("*") if f.is_file())
    tfm = _TF("SavedModel", str(path), specs, sig_outs, call, sha256_files(files), saved_model=path)
    tfm.keep = loaded
    return tfm


def open_tf(model: Any, example_inputs: Any, *, input_names: Sequence[str] | None,
            output_names: Sequence[str] | None, dynamic: Mapping[str, Mapping[int, str]],
            name: str | None = None, sha256: str | None = None) -> Source:  # fmt: skip
    tf = _tf()
    keras = require("keras", EXTRA)
    if isinstance(model, Path):
        src = _saved_model(model, input_names, output_names, dynamic)
        framework = "tensorflow"
    elif isinstance(model, keras.Model):
        src = _keras(model, input_names, output_names, dynamic, name)
        framework = "keras"
    else:
        src = _function(model, example_inputs, input_names, output_names, dynamic, name)
        framework = "tensorflow"
    if sha256 is not None:
        src.sha256 = sha256
    version = f"tensorflow {tf.__version__}" + (f", keras {keras.__version__}" if framework == "keras" else "")

    def run(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        xs = [tf.convert_to_tensor(feeds[s.name]) for s in src.specs]
        return {o: _np(t) for o, t in zip(src.outs, src.call(xs), strict=True)}

    def builders(opts: Options) -> list[Builder]:
        if opts.target == "onnx":
            return [Builder("tf2onnx.convert.from_function", _to_onnx(src, opts))]
        if opts.target == "tflite":
            return [Builder("tf.lite.TFLiteConverter.from_saved_model", _to_tflite(src, opts))]
        return [Builder("openvino.convert_model (SavedModel)", _to_ir(src, opts))]

    return Source(
        framework=framework,
        version=version,
        kind=src.kind,
        name=src.name,
        inputs=tuple(src.specs),
        outputs=tuple(src.outs),
        sha256=src.sha256,
        run=run,
        builders=builders,
        targets=("onnx", "tflite", "openvino"),
    )


def _to_onnx(src: _TF, opts: Options) -> Callable[[Path], Candidate]:
    def build(path: Path) -> Candidate:
        tf2onnx = require("tf2onnx", EXTRA)
        tf = _tf()
        opset = opts.opset or 17
        fn = src.function()
        captured = [t for t in fn.get_concrete_function().inputs[len(src.specs) :] if t.dtype != tf.resource]
        if captured:
            raise ConversionError(
                f"the function captures {len(captured)} tensor(s) from outside it (an eager constant or numpy "
                "array), which tf2onnx would turn into extra model inputs: hold them in tf.Variable"
            )
        with contextlib.redirect_stdout(io.StringIO()):
            tf2onnx.convert.from_function(fn, input_signature=src.signature(), opset=opset, output_path=str(path))
        dynamic = {s.name: {i: n for i, n in enumerate(s.dim_names) if n} for s in src.specs}
        finish_onnx(path, input_names=[s.name for s in src.specs], output_names=src.outs,
                    dynamic={k: v for k, v in dynamic.items() if v})  # fmt: skip
        return Candidate(path, "tf2onnx.convert.from_function", opset=opset)

    return build


def _signature_maps(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """The .tflite's tensor names for the serving signature's input and output keys."""
    try:
        interpreter = require("ai_edge_litert.interpreter", "litert", package="ai-edge-litert")
    except BackendUnavailableError:
        interpreter = require("tflite_runtime.interpreter", "litert", package="tflite-runtime")
    interp = interpreter.Interpreter(str(path))
    try:
        runner = interp.get_signature_runner("serving_default")
    except ValueError:
        return {}, {}
    ins = {k: interp.get_tensor_details()[v["index"]]["name"] for k, v in runner.get_input_details().items()}
    outs = {k: interp.get_tensor_details()[v["index"]]["name"] for k, v in runner.get_output_details().items()}
    return ins, outs


def _to_tflite(src: _TF, opts: Options) -> Callable[[Path], Candidate]:
    def build(path: Path) -> Candidate:
        tf = _tf()
        saved = src.write_saved_model(opts.scratch)
        conv = tf.lite.TFLiteConverter.from_saved_model(str(saved), signature_keys=["serving_default"])
        notes = []
        if opts.precision == "fp16":
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.target_spec.supported_types = [tf.float16]
        elif opts.precision == "int8":
            samples = _representative(src, opts.data)
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.representative_dataset = lambda: iter(samples)
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            if all(s.dtype == np.float32 for s in src.specs):
                conv.inference_input_type = tf.int8
            conv.inference_output_type = tf.int8
            notes.append(f"full-integer INT8 calibrated on {len(samples)} samples of data=")
        try:
            blob = conv.convert()
        except Exception as e:
            raise ConversionError(f"TensorFlow's TFLite converter failed: {type(e).__name__}: {' '.join(str(e).split())[:600]}") from e
        path.write_bytes(blob)
        ins, outs = _signature_maps(path)
        return Candidate(path, "tf.lite.TFLiteConverter.from_saved_model", input_map=ins, output_map=outs,
                         notes=notes, quantization=_quantization(path))  # fmt: skip

    return build


def _quantization(path: Path) -> dict[str, Any]:
    """The scale and zero point of each quantized input and output, as LiteRT reads them."""
    from ..backends.litert import raw_session

    session = raw_session(path)
    try:
        return {s.name: s.quantization for s in (*session.inputs, *session.outputs) if s.quantization is not None}
    finally:
        session.close()


def _representative(src: _TF, data: Sequence[Mapping[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    if not data:
        raise ArgumentError("data", "precision='int8' calibrates on the caller's data: give data= (representative inputs)")
    samples: list[dict[str, np.ndarray]] = []
    for feeds in data:
        rows = min(int(np.shape(v)[0]) for v in feeds.values() if np.ndim(v)) if feeds else 0
        for r in range(rows):
            samples.append({s.name: np.ascontiguousarray(feeds[s.name][r : r + 1]).astype(s.dtype) for s in src.specs})
            if len(samples) >= INT8_SAMPLES:
                return samples
    return samples


def _to_ir(src: _TF, opts: Options) -> Callable[[Path], Candidate]:
    def build(path: Path) -> Candidate:
        saved = src.write_saved_model(opts.scratch)
        convert_ir(str(saved), path, opts.precision)
        return Candidate(path, "openvino.convert_model (SavedModel)")

    return build
