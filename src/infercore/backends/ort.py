"""ONNX Runtime backend.

Spec discovery from the session's NodeArgs; ``run`` is ``InferenceSession.run`` (outputs are new
arrays the caller owns); ``bind`` is IOBinding over OrtValues made once on our own aligned arrays.
Both paths pass one ``RunOptions`` made at load: with onnxruntime 1.32 a call given ``None``
builds a default one each time, about 0.7 µs of a 1×16 Add's 2.3 µs bound run. Measured trap
avoided on the bound path: ``run_with_ort_values``.
"""

from __future__ import annotations

import importlib.metadata
import logging
import re
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..buffers import aligned_empty
from ..errors import (
    BackendError,
    BackendRuntimeError,
    BackendUnavailableError,
    InputSpecError,
    ModelLoadError,
    RuntimeInputError,
)
from ..optional import require
from ..specs import BackendInfo, TensorSpec
from . import check_options, runtimes_quiet

log = logging.getLogger(__name__)

EXTRA = "ort"

_ORT_DTYPES: dict[str, str] = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(int8)": "int8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(uint8)": "uint8",
    "tensor(uint16)": "uint16",
    "tensor(uint32)": "uint32",
    "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
    "tensor(string)": "object",
    "tensor(complex64)": "complex64",
    "tensor(complex128)": "complex128",
}
_BFLOAT16 = "tensor(bfloat16)"
_ONNX_BFLOAT16 = 16  # onnx.TensorProto.BFLOAT16

_GRAPH_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
                 "layout": "ORT_ENABLE_LAYOUT", "all": "ORT_ENABLE_ALL"}
_OPTIONS = {
    "graph_optimization_level": "one of " + ", ".join(_GRAPH_LEVELS),
    "intra_op_num_threads": "int >= 0 (0: ORT's default)",
    "inter_op_num_threads": "int >= 0 (0: ORT's default)",
    "execution_mode": "'sequential' or 'parallel'",
    "enable_cpu_mem_arena": "bool",
    "enable_mem_pattern": "bool",
    "enable_mem_reuse": "bool",
    "enable_profiling": "bool",
    "log_severity_level": "int 0-4",
    "optimized_model_filepath": "path to save the optimized model",
    "session_config": "dict of session config entries (add_session_config_entry)",
    "free_dimension_overrides": "dict symbolic dim name -> int",
    "providers": "list of execution provider names (overrides device)",
    "provider_options": "dict of options for the device's execution provider",
    "share_weights": "bool: sessions of the same file opened with it share one copy of its initializers",
}
_SHARE_MIN_BYTES = 1024  # smaller initializers stay the session's own (constants the optimizer folds)


def _ort() -> Any:
    return require("onnxruntime", EXTRA)


_default_severity_set = False


def log_severity(ort: Any) -> int:
    """The session log severity to use: 3 (errors; warnings such as unused initializers of exported
    models only clutter output, and errors reach the caller as exceptions carrying ORT's message),
    or 4 (fatal only) while runtimes are quiet (``infercore.backends.quiet_runtimes``), with ORT's
    process-wide default logger set to match."""
    global _default_severity_set
    if runtimes_quiet():
        ort.set_default_logger_severity(4)
        _default_severity_set = True
        return 4
    if _default_severity_set:  # quiet was switched off again: ORT's own default, warnings
        ort.set_default_logger_severity(2)
        _default_severity_set = False
    return 3


def _numpy_dtype(ort_type: str, name: str) -> np.dtype:
    if ort_type == _BFLOAT16:
        try:
            import ml_dtypes
        except ImportError as e:
            raise BackendUnavailableError(
                f"tensor {name!r} is bfloat16, which numpy reads through ml_dtypes: pip install ml_dtypes"
            ) from e
        return np.dtype(ml_dtypes.bfloat16)
    try:
        return np.dtype(_ORT_DTYPES[ort_type])
    except KeyError:
        why = " (sequences, maps and optionals are not tensors)" if not ort_type.startswith("tensor(") else ""
        raise ModelLoadError(
            f"tensor {name!r} has type {ort_type}, which infercore does not map to a numpy array{why}; "
            f"supported: {', '.join(sorted(_ORT_DTYPES))}, tensor(bfloat16)"
        ) from None


def _spec(arg: Any) -> TensorSpec:
    dims: list[int | None] = []
    names: list[str | None] = []
    shape = arg.shape if isinstance(arg.shape, list) else []
    for d in shape:
        if isinstance(d, int) and d >= 0:
            dims.append(d)
            names.append(None)
        else:
            dims.append(None)
            names.append(d if isinstance(d, str) and d else None)
    return TensorSpec(arg.name, _numpy_dtype(arg.type, arg.name), tuple(dims), tuple(names))


def _device(device: str, ort: Any, provider_options: Mapping[str, Any]) -> tuple[str, list[Any]]:
    d = device.strip().lower()
    if d in ("cpu", "cpu:0"):
        return "cpu", ["CPUExecutionProvider"]
    m = re.fullmatch(r"(cuda|gpu)(?::(\d+))?", d)
    if m:
        index = int(m.group(2) or 0)
        available = ort.get_available_providers()
        if "CUDAExecutionProvider" not in available:
            raise BackendUnavailableError(
                f"device {device!r} needs ONNX Runtime's CUDAExecutionProvider, and this onnxruntime "
                f"has only {', '.join(available)}: pip install onnxruntime-gpu (in place of onnxruntime)"
            )
        opts = {"device_id": index, **provider_options}
        return f"cuda:{index}", [("CUDAExecutionProvider", opts), "CPUExecutionProvider"]
    raise BackendError(f"ort: unknown device {device!r}; use 'cpu' or 'cuda:N'")


def _providers(ort: Any, providers: Any) -> list[Any]:
    """The ``providers`` option: names (or ``(name, options)`` pairs) this onnxruntime has. ORT
    itself skips an unknown name with a warning and runs on the CPU."""
    if isinstance(providers, str) or not isinstance(providers, Sequence) or not providers:
        raise BackendError(f"ort: option providers={providers!r} is invalid; expected {_OPTIONS['providers']}")
    available = ort.get_available_providers()
    for entry in providers:
        name = entry[0] if isinstance(entry, (tuple, list)) and len(entry) == 2 else entry
        if name in available:
            continue
        if isinstance(name, str) and name in ort.get_all_providers():
            raise BackendUnavailableError(
                f"ort: execution provider {name!r} is not in this onnxruntime build; it has "
                f"{', '.join(available)} (another provider needs its own onnxruntime package)"
            )
        raise BackendError(
            f"ort: unknown execution provider {name!r} in option providers; this onnxruntime has "
            f"{', '.join(available)}"
        )
    return list(providers)


def _session_options(ort: Any, threads: int | None, options: Mapping[str, Any]) -> Any:
    check_options("ort", options, _OPTIONS)
    so = ort.SessionOptions()
    so.log_severity_level = log_severity(ort)  # the option log_severity_level overrides it
    if threads is not None:
        so.intra_op_num_threads = threads
    for key, value in options.items():
        try:
            if key == "graph_optimization_level":
                level = _GRAPH_LEVELS.get(str(value).lower())
                if level is None:
                    raise ValueError("not a level")
                so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
            elif key == "execution_mode":
                modes = {"sequential": "ORT_SEQUENTIAL", "parallel": "ORT_PARALLEL"}
                so.execution_mode = getattr(ort.ExecutionMode, modes[str(value).lower()])
            elif key in ("intra_op_num_threads", "inter_op_num_threads", "log_severity_level"):
                if not isinstance(value, int) or isinstance(value, bool):
                    raise ValueError("not an int")
                if key == "log_severity_level" and not 0 <= value <= 4:
                    raise ValueError("out of range")  # ORT asserts on it and falls back noisily
                if key != "log_severity_level" and value < 0:
                    raise ValueError("negative")
                setattr(so, key, value)
            elif key in ("enable_cpu_mem_arena", "enable_mem_pattern", "enable_mem_reuse", "enable_profiling"):
                if not isinstance(value, bool):
                    raise ValueError("not a bool")
                setattr(so, key, value)
            elif key == "optimized_model_filepath":
                so.optimized_model_filepath = str(value)
            elif key == "session_config":
                for k, v in dict(value).items():
                    so.add_session_config_entry(str(k), str(v))
            elif key == "free_dimension_overrides":
                for k, v in dict(value).items():
                    so.add_free_dimension_override_by_name(str(k), int(v))
        except (ValueError, KeyError, TypeError) as e:
            raise BackendError(f"ort: option {key}={value!r} is invalid: {e}; expected {_OPTIONS[key]}") from e
    return so


class OrtFactory:
    """Registered as ``ort``; reads ``.onnx`` and ``.ort`` files."""

    extra = EXTRA

    def probe(self) -> BackendInfo:
        try:
            ort = _ort()
        except BackendUnavailableError as e:
            return BackendInfo("ort", False, reason=str(e), extra=EXTRA)
        providers = ort.get_available_providers()
        devices = ["cpu"] + (["cuda:N"] if "CUDAExecutionProvider" in providers else [])
        try:
            dist = importlib.metadata.version("onnxruntime")
        except importlib.metadata.PackageNotFoundError:
            dist = ort.__version__
        return BackendInfo(
            "ort", True, version=dist, devices=tuple(devices), extra=EXTRA,
            details={"providers": ", ".join(providers)},
        )

    def open(
        self,
        path: Path,
        *,
        device: str,
        precision: str | None,
        threads: int | None,
        options: Mapping[str, Any],
    ) -> OrtBackend:
        ort = _ort()
        if precision not in (None, "fp32"):
            raise BackendError(
                f"ort runs a model in the precision it was saved in; precision={precision!r} needs a converted "
                "model: ic.calibrate(...) for int8, ic.convert_fp16(...) for fp16"
            )
        options = dict(options)
        share = options.pop("share_weights", False)
        if not isinstance(share, bool):
            raise BackendError(f"ort: option share_weights={share!r} is invalid; expected {_OPTIONS['share_weights']}")
        providers_override = options.pop("providers", None)
        provider_options = options.pop("provider_options", {}) or {}
        dev, providers = _device(device, ort, provider_options)
        if providers_override is not None:
            providers = _providers(ort, providers_override)
        so = _session_options(ort, threads, options)
        shared = _shared_weights(ort, path) if share else None
        if shared is not None:
            for name, value in shared.values.items():
                so.add_initializer(name, value)
        try:
            sess = ort.InferenceSession(str(path), sess_options=so, providers=providers)
        except Exception as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelLoadError(f"onnxruntime could not load {path}: {msg}", path=str(path)) from e
        # the session reads these arrays in place: they live as long as the session object does
        sess._infercore_shared_weights = shared
        return OrtBackend(sess, ort, dev, path)


class _SharedWeights:
    """A model file's initializers, read once, as OrtValues over numpy arrays that every session
    given them reads in place (``SessionOptions.add_initializer``) instead of its own copy."""

    __slots__ = ("__weakref__", "arrays", "values")

    def __init__(self, arrays: dict[str, np.ndarray], values: dict[str, Any]) -> None:
        self.arrays = arrays
        self.values = values


_shared: weakref.WeakValueDictionary[tuple[str, int, int], _SharedWeights] = weakref.WeakValueDictionary()
_shared_lock = threading.Lock()


def _shared_weights(ort: Any, path: Path) -> _SharedWeights | None:
    """The shared initializers of ``path`` (read with onnx while no open session holds them), or
    None where onnx cannot read them (the session then reads its own, as without the option)."""
    try:
        st = path.stat()
    except OSError:
        return None  # the load reports the missing file
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _shared_lock:
        found = _shared.get(key)
        if found is not None:
            return found
        try:
            onnx = require("onnx", EXTRA)
            from onnx import numpy_helper

            model = onnx.load(str(path), load_external_data=True)
        except Exception as e:  # not readable by onnx: ORT may still read it, or say why
            log.debug("ort: share_weights: onnx could not read %s (%s); the session reads its own", path, e)
            return None
        arrays: dict[str, np.ndarray] = {}
        values: dict[str, Any] = {}
        for init in model.graph.initializer:
            try:
                arr = numpy_helper.to_array(init)
                if arr.nbytes < _SHARE_MIN_BYTES or arr.dtype.hasobject:
                    continue
                arr = np.ascontiguousarray(arr)
                values[init.name] = ort.OrtValue.ortvalue_from_numpy(arr)
            except Exception as e:  # a dtype numpy or ORT cannot hold: the session reads it itself
                log.debug("ort: share_weights: initializer %r not shared (%s)", init.name, e)
                continue
            arrays[init.name] = arr
        del model
        found = _SharedWeights(arrays, values)
        _shared[key] = found
        return found


class OrtBackend:
    name = "ort"

    def __init__(self, sess: Any, ort: Any, device: str, path: Path) -> None:
        self._sess: Any = sess
        self._ort = ort
        self.device = device
        self.path = path
        self.inputs = tuple(_spec(a) for a in sess.get_inputs())
        self.outputs = tuple(_spec(a) for a in sess.get_outputs())
        self._bf16 = any(a.type == _BFLOAT16 for a in [*sess.get_inputs(), *sess.get_outputs()])
        # The C session's run: InferenceSession.run re-validates the feeds (the Engine already
        # did) and adds checks that cost as much again as a tiny model's whole run.
        self._c_run = sess._sess.run
        self._run_options = ort.RunOptions()
        meta = sess.get_modelmeta()
        md = dict(meta.custom_metadata_map)
        for key in ("producer_name", "graph_name", "domain", "description"):
            value = getattr(meta, key, "")
            if value:
                md.setdefault(key, str(value))
        md.setdefault("model_version", str(meta.version))
        md["providers"] = ", ".join(sess.get_providers())
        self.metadata = md

    # -- run -------------------------------------------------------------------------------------
    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        sess = self._sess
        if sess is None:
            raise BackendRuntimeError("ort: session is closed")
        if self._bf16:
            return self._run_ort_values(feeds, outputs)
        try:
            values = self._c_run(outputs, feeds, self._run_options)
        except Exception as e:
            raise _run_error(self.path.name, e) from e
        return dict(zip(outputs, values))  # noqa: B905 (same length by construction)

    def _run_ort_values(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        """bfloat16 has no numpy type ORT knows: pass such tensors as typed OrtValues."""
        ort = self._ort
        values = {name: _ort_value(ort, a) for name, a in feeds.items()}
        try:
            results = self._sess.run_with_ort_values(list(outputs), values)
        except Exception as e:
            raise _run_error(self.path.name, e) from e
        specs = {s.name: s for s in self.outputs}
        return {name: _from_ort_value(v, specs[name].dtype) for name, v in zip(outputs, results, strict=True)}

    # -- bind ------------------------------------------------------------------------------------
    def bind(self, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> OrtBinding:
        if self._sess is None:
            raise BackendRuntimeError("ort: session is closed")
        for spec in (*self.inputs, *self.outputs):
            if spec.dtype.hasobject:
                raise BackendError(
                    f"ort: tensor {spec.name!r} is a string tensor; IOBinding cannot bind strings, use run()"
                )
        return OrtBinding(self, inputs, outputs)

    def close(self) -> None:
        self._sess = None


def _ort_value(ort: Any, a: np.ndarray) -> Any:
    if a.dtype.name == "bfloat16":
        return ort.OrtValue.ortvalue_from_numpy_with_onnx_type(a.view(np.uint16), _ONNX_BFLOAT16)
    return ort.OrtValue.ortvalue_from_numpy(a)


def _from_ort_value(v: Any, dtype: np.dtype) -> np.ndarray:
    if dtype.name == "bfloat16":  # OrtValue.numpy() refuses bfloat16: copy the raw bits out
        raw = np.frombuffer(_bf16_bytes(v), np.uint16).reshape(v.shape())
        return raw.copy().view(dtype)
    arr: np.ndarray = v.numpy()
    return arr


def _bf16_bytes(v: Any) -> bytes:
    import ctypes

    n = int(np.prod(v.shape(), dtype=np.int64))
    return ctypes.string_at(v.data_ptr(), n * 2)


class OrtBinding:
    """IOBinding over OrtValues made once on aligned numpy arrays.

    Outputs with a fully static shape are bound to preallocated arrays. An output with dynamic
    dimensions is runtime-allocated on the first run, copied once into an aligned array, and that
    array is bound for every later run (so a binding costs no extra inference, which matters to a
    batcher that binds each new batch size). If the runtime later contradicts a bound shape (a
    data-dependent output, or a model that declares the wrong shape), that output falls back to a
    runtime-allocated OrtValue copied out once per run. ``outputs`` is updated in place. An array
    the caller bound (``bind(outputs=...)``) never falls back: the run raises ``InputSpecError``
    naming the output, the shape computed and the shape bound.
    """

    def __init__(self, backend: OrtBackend, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> None:
        ort = backend._ort
        sess = backend._sess
        self._backend = backend
        self._ort = ort
        self._iob = sess.io_binding()
        self._keep: list[Any] = []  # OrtValues must outlive the binding
        self.inputs = inputs
        for name, arr in inputs.items():
            value = _ort_value(ort, arr)
            self._keep.append(value)
            self._iob.bind_ortvalue_input(name, value)
        self._out_specs = {s.name: s for s in backend.outputs}
        self._unsized: list[str] = []  # runtime-allocated until the first run gives their shape
        self._dynamic: list[str] = []  # runtime-allocated on every run (shape changes with the data)
        self._order: list[str] = []  # IOBinding reports outputs in first-bound order
        self.outputs: dict[str, np.ndarray] = {}
        self._given = frozenset(outputs)  # the caller's arrays: written in place or the run fails
        for spec in backend.outputs:
            if spec.name in outputs:
                self._bind_output(spec.name, outputs[spec.name])
            elif spec.is_static:
                self._bind_output(spec.name, aligned_empty(spec.concrete(), spec.dtype))
            else:
                self._iob.bind_output(spec.name, "cpu")
                self._order.append(spec.name)
                self._unsized.append(spec.name)
                self.outputs[spec.name] = np.empty((0,) * spec.rank, spec.dtype)  # until the first run
        self._c_run = sess._sess.run_with_iobinding
        self._c_iob = self._iob._iobinding
        # a bound output the data resizes fails the run it changes in, and the binding retries
        # with that output runtime-allocated: ORT must not log that expected failure as an ERROR
        self._run_options = ort.RunOptions()
        self._run_options.log_severity_level = 4

    def _bind_output(self, name: str, arr: np.ndarray) -> None:
        value = _ort_value(self._ort, arr)
        self._keep.append(value)
        self._iob.bind_ortvalue_output(name, value)
        if name not in self._order:
            self._order.append(name)
        self.outputs[name] = arr

    def run(self) -> None:
        if self._dynamic or self._unsized:
            self._rebind_runtime_allocated()
        while True:
            try:
                self._c_run(self._c_iob, self._run_options)
                break
            except Exception as e:
                # one output at a time is named; each can fall back once, so this ends
                if not self._fallback(e):
                    raise _run_error(self._backend.path.name, e, self._plain_run) from e
                self._rebind_runtime_allocated()
        if self._dynamic or self._unsized:
            self._collect_runtime_allocated()

    def _plain_run(self) -> None:
        """The bound inputs run without the binding: its failures lose ONNX Runtime's status code
        ("Error in execution"), the plain run's keep it (only run to classify a failure)."""
        b = self._backend
        b._c_run([s.name for s in b.outputs], dict(self.inputs), b._run_options)

    def _rebind_runtime_allocated(self) -> None:
        # an output IOBinding allocated last run would be reused as if preallocated
        for name in (*self._unsized, *self._dynamic):
            self._iob.bind_output(name, "cpu")

    def _collect_runtime_allocated(self) -> None:
        produced = dict(zip(self._order, self._iob.get_outputs(), strict=True))
        for name in self._dynamic:
            self.outputs[name] = _from_ort_value(produced[name], self._out_specs[name].dtype)
        for name in self._unsized:
            value = _from_ort_value(produced[name], self._out_specs[name].dtype)
            if not self._out_specs[name].accepts(value.shape):
                # the model declares another rank than it produces: ORT refuses any bound array
                # for it ("Invalid rank for output"), so it stays runtime-allocated
                self._dynamic.append(name)
                self.outputs[name] = value
                continue
            buf = aligned_empty(value.shape, value.dtype)
            buf[...] = value
            self._bind_output(name, buf)  # from the next run on, written in place
        self._unsized.clear()

    def _fallback(self, error: Exception) -> bool:
        """A bound output's shape was contradicted: switch it to runtime allocation."""
        m = re.search(r"provided for output '([^']+)'|Invalid rank for output: (\S+)", str(error))
        name = m and (m.group(1) or m.group(2))
        if not name or name not in self.outputs or name in self._dynamic:
            return False
        if name in self._given:
            computed = re.search(r"computed output shape for this run is \{([-\d,]*)\}", str(error))
            shape = f"shape ({computed.group(1).replace(',', ', ')})" if computed else "another shape"
            raise InputSpecError(
                f"output {name!r}: onnxruntime computed {shape} for this run, but the array bound for it "
                f"has shape {self.outputs[name].shape}; bind an array of the output's shape, or bind without "
                f"it and read io.outputs[{name!r}]",
                tensor=name,
            ) from error
        log.debug("ort: output %r changed shape between runs; it is now runtime-allocated and copied", name)
        self._dynamic.append(name)
        return True

    def close(self) -> None:
        self._keep.clear()
        self._iob = None
        self._c_run = _closed
        self._c_iob = None


def _closed(*_: Any) -> None:
    raise BackendRuntimeError("ort: binding is closed")


# -- the raw runtime, with nothing of infercore in between ------------------------------------------
class RawOrtSession:
    """``onnxruntime.InferenceSession.run`` on the CPU: see ``infercore.protocol.RawSession``."""

    def __init__(self, path: Path, *, threads: int | None = None) -> None:
        ort = _ort()
        so = ort.SessionOptions()
        so.log_severity_level = log_severity(ort)
        if threads:
            so.intra_op_num_threads = threads
        self._sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.inputs = tuple(_spec(a) for a in self._sess.get_inputs())
        self.outputs = tuple(_spec(a) for a in self._sess.get_outputs())
        self._names = [s.name for s in self.outputs]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self._names, self._sess.run(self._names, dict(feeds)), strict=True))

    def close(self) -> None:
        self._sess = None


def raw_session(path: Path, *, threads: int | None = None) -> RawOrtSession:
    return RawOrtSession(Path(path), threads=threads)


def _run_error(name: str, e: Exception, plain: Callable[[], Any] | None = None) -> BackendRuntimeError:
    """ONNX Runtime's error in a run as ours: INVALID_ARGUMENT (the values given: a token id past
    the vocabulary) is the caller's, RuntimeInputError; anything else the runtime's. A bound run's
    error has no status code: ``plain()`` runs the same inputs without the binding to learn it."""
    invalid = type(e).__name__ == "InvalidArgument"  # onnxruntime.capi.onnxruntime_pybind11_state
    if not invalid and plain is not None:
        try:
            plain()
        except Exception as again:
            invalid = type(again).__name__ == "InvalidArgument"
    if invalid:
        return RuntimeInputError(f"onnxruntime refused the inputs of {name}: {e}")
    return BackendRuntimeError(f"onnxruntime failed running {name}: {e}")
