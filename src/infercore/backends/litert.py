"""LiteRT (TensorFlow Lite) backend for ``.tflite`` files.

The runtime is ``ai_edge_litert.interpreter`` (``pip install "infercore[litert]"``), or
``tflite_runtime.interpreter`` when that is what is installed. Spec discovery from the
interpreter's input/output details (``shape_signature`` -1 is a dynamic dimension; int8/uint8
tensors carry their scale and zero point); ``run`` uses one interpreter per thread (an interpreter
is not thread-safe), each keeping a few allocations keyed by input shapes; ``bind`` gets an
interpreter of its own, allocated once for the bound shapes.

The classic ``Interpreter`` is used, not LiteRT 2.x's ``CompiledModel``: measured on ai-edge-litert
2.3.0, ``CompiledModel`` costs several times more per call (write/run/read ~8 µs against ~3 µs for
set_tensor/invoke/get_tensor on a 1x16 Add), and its zero-copy ``TensorBuffer.create_from_host_memory``
makes a rank-1 buffer that the compiled model refuses for any input of rank > 1.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import logging
import re
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..buffers import aligned_empty
from ..errors import (
    BackendError,
    BackendRuntimeError,
    BackendUnavailableError,
    EngineClosedError,
    InputSpecError,
    ModelLoadError,
)
from ..optional import require
from ..specs import BackendInfo, Quantization, TensorSpec
from . import captured_native_stderr, check_options

log = logging.getLogger(__name__)

EXTRA = "litert"

_OPTIONS = {
    "xnnpack": "bool, default True: apply LiteRT's default XNNPACK delegate",
    "delegate": "path of a delegate library (or a list of paths), loaded with load_delegate",
    "delegate_options": "dict of str options for the delegate (or a list of dicts, one per delegate)",
    "dequantize": "bool, default False: quantized inputs/outputs are float32, (de)quantized by infercore",
    "shape_cache": "int >= 1, default 4: allocations per thread kept for different input shapes",
}
_CUSTOM_OP = re.compile(r"unresolved custom op: ([^\s.]+)")


# -- runtime ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Runtime:
    module: Any  # ai_edge_litert.interpreter or tflite_runtime.interpreter
    dist: str
    version: str


@functools.cache
def _runtime() -> _Runtime:
    try:
        mod = require("ai_edge_litert.interpreter", EXTRA, package="ai-edge-litert")
        dist = "ai-edge-litert"
    except BackendUnavailableError as first:
        try:
            mod = require("tflite_runtime.interpreter", EXTRA, package="tflite-runtime")
            dist = "tflite-runtime"
        except BackendUnavailableError:
            raise first from first.__cause__
    try:
        version = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return _Runtime(mod, dist, version)


def _check_options(options: Mapping[str, Any]) -> dict[str, Any]:
    check_options("litert", options, _OPTIONS)
    out = {"xnnpack": True, "delegate": [], "delegate_options": [], "dequantize": False, "shape_cache": 4}
    for key in ("xnnpack", "dequantize"):
        if key in options:
            if not isinstance(options[key], bool):
                raise BackendError(
                    f"litert: option {key}={options[key]!r} is invalid; expected {_OPTIONS[key]}"
                )
            out[key] = options[key]
    if "shape_cache" in options:
        n = options["shape_cache"]
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise BackendError(
                f"litert: option shape_cache={n!r} is invalid; expected {_OPTIONS['shape_cache']}"
            )
        out["shape_cache"] = n
    paths = options.get("delegate") or []
    paths = [paths] if isinstance(paths, str | Path) else list(paths)
    dopts = options.get("delegate_options") or []
    dopts = [dopts] * len(paths) if isinstance(dopts, Mapping) else list(dopts)
    if dopts and len(dopts) != len(paths):
        raise BackendError(
            f"litert: {len(dopts)} delegate_options for {len(paths)} delegate(s); give one dict per delegate"
        )
    out["delegate"] = [str(p) for p in paths]
    out["delegate_options"] = [{str(k): str(v) for k, v in d.items()} for d in dopts] or [{}] * len(paths)
    return out


# -- spec discovery --------------------------------------------------------------------------
def _quantization(detail: Mapping[str, Any], dtype: np.dtype) -> Quantization | None:
    """Scale and zero point of an integer tensor, per tensor or per channel; None if not quantized."""
    if dtype.kind not in "iu":
        return None
    qp = detail.get("quantization_parameters") or {}
    scales = np.asarray(qp.get("scales", ()), dtype=np.float64).ravel()
    zeros = np.asarray(qp.get("zero_points", ()), dtype=np.int64).ravel()
    if scales.size == 0:
        scale, zero = detail.get("quantization", (0.0, 0))
        return Quantization(float(scale), int(zero)) if scale else None
    if scales.size == 1:
        return Quantization(float(scales[0]), int(zeros[0]) if zeros.size else 0)
    if zeros.size != scales.size:
        zeros = np.broadcast_to(zeros[:1] if zeros.size else np.zeros(1, np.int64), scales.shape)
    return Quantization(
        tuple(float(s) for s in scales),
        tuple(int(z) for z in zeros),
        axis=int(qp.get("quantized_dimension", 0)),
    )


def _spec(detail: Mapping[str, Any], dequantize: bool) -> TensorSpec:
    dtype = np.dtype(detail["dtype"])
    shape = [int(d) for d in detail["shape"]]
    signature = detail.get("shape_signature")
    if signature is not None and len(signature) == len(shape):
        shape = [int(d) for d in signature]  # -1 marks a dynamic dimension
    q = _quantization(detail, dtype)
    if dequantize and q is not None:
        dtype = np.dtype(np.float32)
    return TensorSpec(str(detail["name"]), dtype, tuple(shape), quantization=q)


def _model_metadata(path: Path, interpreter: Any, rt: _Runtime) -> dict[str, str]:
    md = {"runtime": f"{rt.dist} {rt.version}"}
    try:
        signatures = interpreter.get_signature_list()
    except Exception:  # older tflite_runtime
        signatures = {}
    if signatures:
        md["signatures"] = json.dumps(signatures, sort_keys=True)
    try:  # the flatbuffer schema ships with ai-edge-litert only; reading the header is lazy and cheap
        from ai_edge_litert import schema_py_generated as schema

        model = schema.Model.GetRootAs(path.read_bytes(), 0)
    except Exception as e:
        log.debug("litert: no model metadata read from %s: %s", path, e)
        return md
    md["schema_version"] = str(model.Version())
    if model.Description():
        md["description"] = model.Description().decode("utf-8", "replace")
    names = []
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        name = (entry.Name() or b"").decode("utf-8", "replace")
        names.append(name)
        if name == "min_runtime_version" or name.startswith("infercore."):  # text (infercore convert's)
            data = model.Buffers(entry.Buffer()).DataAsNumpy()
            if isinstance(data, np.ndarray):
                md[name] = data.tobytes().rstrip(b"\0").decode("utf-8", "replace")
    if names:
        md["metadata_entries"] = ", ".join(names)
    custom = sorted(
        {
            (model.OperatorCodes(i).CustomCode() or b"").decode("utf-8", "replace")
            for i in range(model.OperatorCodesLength())
            if model.OperatorCodes(i).CustomCode()
        }
    )
    if custom:
        md["custom_ops"] = ", ".join(custom)
    return md


# -- open ------------------------------------------------------------------------------------
class LiteRTFactory:
    """Registered as ``litert``; reads ``.tflite`` files."""

    extra = EXTRA

    def probe(self) -> BackendInfo:
        try:
            rt = _runtime()
        except BackendUnavailableError as e:
            return BackendInfo("litert", False, reason=str(e), extra=EXTRA)
        return BackendInfo(
            "litert",
            True,
            version=rt.version,
            devices=("cpu",),
            extra=EXTRA,
            details={"runtime": rt.dist, "module": rt.module.__name__, "default delegate": "XNNPACK"},
        )

    def open(
        self,
        path: Path,
        *,
        device: str,
        precision: str | None,
        threads: int | None,
        options: Mapping[str, Any],
    ) -> LiteRTBackend:
        rt = _runtime()
        if device.strip().lower() not in ("cpu", "cpu:0"):
            raise BackendError(
                f"litert: unknown device {device!r}; LiteRT runs on the CPU (XNNPACK). For an accelerator, "
                "load its delegate: options={'delegate': 'path/to/libdelegate.so'}"
            )
        if precision not in (None, "fp32", "int8"):
            raise BackendError(
                f"litert runs a model in the precision it was saved in; precision={precision!r} needs a "
                "model converted to it (the .tflite's own float16/int8 weights are used as they are)"
            )
        opts = _check_options(options)
        backend = LiteRTBackend(rt, path, threads, opts)
        if precision == "int8" and not backend.is_quantized():
            backend.close()
            raise BackendError(
                f"litert: precision='int8' asked, but {path.name} has no quantized tensors; "
                "quantize the model first, or load it with precision=None"
            )
        return backend


class LiteRTBackend:
    name = "litert"
    device = "cpu"

    def __init__(self, rt: _Runtime, path: Path, threads: int | None, options: Mapping[str, Any]) -> None:
        self._rt = rt
        self.path = path
        self._threads = threads
        self._xnnpack = bool(options["xnnpack"])
        self._delegates: list[tuple[str, dict[str, str]]] = list(
            zip(options["delegate"], options["delegate_options"], strict=True)
        )
        self._dequantize = bool(options["dequantize"])
        self._cache_size = int(options["shape_cache"])
        first = self._new_interpreter()  # also proves the model loads (custom ops fail here)
        in_details = first.get_input_details()
        out_details = first.get_output_details()
        self.inputs = tuple(_spec(d, self._dequantize) for d in in_details)
        self.outputs = tuple(_spec(d, self._dequantize) for d in out_details)
        self._in_index = [int(d["index"]) for d in in_details]
        self._out_index = {s.name: int(d["index"]) for s, d in zip(self.outputs, out_details, strict=True)}
        # quantization applied by infercore (dequantize=True), per input position / output name
        self._in_q = [s.quantization if self._dequantize else None for s in self.inputs]
        self._in_qdtype = [np.dtype(d["dtype"]) for d in in_details]
        self._out_q = {s.name: s.quantization if self._dequantize else None for s in self.outputs}
        self._dynamic = not all(s.is_static for s in self.inputs)
        self.metadata = _model_metadata(path, first, rt)
        self._lock = threading.Lock()
        self._local = threading.local()
        self._slots: weakref.WeakSet[_Slot] = weakref.WeakSet()
        self._closed = False
        if not getattr(first, "infercore_unallocated", False):
            self._slot().put(self._key_of(first), first)

    def is_quantized(self) -> bool:
        """Whether any tensor of the model (inputs, weights, activations) is quantized."""
        interp = self._slot().last or self._new_interpreter()
        return any(_quantization(d, np.dtype(d["dtype"])) is not None for d in interp.get_tensor_details())

    def _new_interpreter(self) -> Any:
        mod = self._rt.module
        resolver = (
            mod.OpResolverType.AUTO if self._xnnpack else mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        )
        delegates = []
        for lib, opts in self._delegates:
            if ("/" in lib or "\\" in lib) and not Path(lib).is_file():  # a bare name is left to dlopen
                raise BackendUnavailableError(f"litert: the delegate library {lib!r} does not exist")
            try:
                delegates.append(mod.load_delegate(lib, opts or None))
            except (ValueError, OSError, RuntimeError) as e:
                raise BackendUnavailableError(
                    f"litert: could not load the delegate library {lib!r}: {e}"
                ) from e
        try:
            interp = mod.Interpreter(
                model_path=str(self.path),
                num_threads=self._threads,
                experimental_delegates=delegates or None,
                experimental_op_resolver_type=resolver,
            )
        except (ValueError, RuntimeError) as e:
            raise _load_error(self.path, e) from e
        try:
            with captured_native_stderr(log, "litert"):  # "INFO: Created TensorFlow Lite XNNPACK delegate"
                interp.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            # A dynamic model's placeholder shape may be too small to run (openWakeWord's
            # melspectrogram: [-1, -1] stored as [1, 1], shorter than its STFT window). Its
            # interpreters are resized and allocated per input shape anyway.
            dynamic = any(-1 in d.get("shape_signature", ()) for d in interp.get_input_details())
            if not dynamic or _CUSTOM_OP.search(str(e)):
                raise _load_error(self.path, e) from e
            log.debug("litert: %s does not allocate at its placeholder shape (%s); sized per run", self.path.name, e)
            interp.infercore_unallocated = True
        return interp

    def _key_of(self, interp: Any) -> tuple[tuple[int, ...], ...]:
        return tuple(tuple(int(v) for v in d["shape"]) for d in interp.get_input_details())

    # -- per-thread interpreters -----------------------------------------------------------------
    def _slot(self) -> _Slot:
        slot: _Slot | None = getattr(self._local, "slot", None)
        if slot is None:
            if self._closed:
                raise EngineClosedError(f"litert: engine for {self.path.name} is closed")
            slot = self._local.slot = _Slot(self._cache_size)
            with self._lock:
                self._slots.add(slot)
        return slot

    def _interpreter(self, feeds: Mapping[str, np.ndarray]) -> Any:
        """This thread's interpreter, allocated for the shapes of ``feeds``."""
        if self._closed:
            raise EngineClosedError(f"litert: engine for {self.path.name} is closed")
        slot = self._slot()
        if not self._dynamic:
            interp = slot.last
            if interp is None:
                interp = self._new_interpreter()
                slot.put((), interp)
            return interp
        key = tuple(feeds[s.name].shape for s in self.inputs)
        interp = slot.get(key)
        if interp is None:
            interp = slot.evict() if slot.full() else self._new_interpreter()
            self._resize(interp, key)
            slot.put(key, interp)
        return interp

    def _resize(self, interp: Any, shapes: Sequence[tuple[int, ...]]) -> None:
        try:
            for index, shape in zip(self._in_index, shapes, strict=True):
                interp.resize_tensor_input(index, list(shape), strict=True)
            with captured_native_stderr(log, "litert"):
                interp.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise BackendRuntimeError(
                f"litert could not resize {self.path.name}'s inputs to {list(shapes)}: {e}"
            ) from e

    # -- run -------------------------------------------------------------------------------------
    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        interp = self._interpreter(feeds)
        try:
            for spec, index, q, qdtype in zip(
                self.inputs, self._in_index, self._in_q, self._in_qdtype, strict=True
            ):
                x = feeds[spec.name]
                interp.set_tensor(index, x if q is None else q.quantize(x, qdtype))
            interp.invoke()
            result = {}
            for name in outputs:
                y = interp.get_tensor(self._out_index[name])  # a copy: the caller owns it
                q = self._out_q[name]
                result[name] = y if q is None else q.dequantize(y)
        except (ValueError, RuntimeError) as e:
            raise BackendRuntimeError(f"litert failed running {self.path.name}: {e}") from e
        return result

    # -- bind ------------------------------------------------------------------------------------
    def bind(self, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> LiteRTBinding:
        if self._closed:
            raise EngineClosedError(f"litert: engine for {self.path.name} is closed")
        for spec in (*self.inputs, *self.outputs):
            if spec.dtype.hasobject:
                raise BackendError(
                    f"litert: tensor {spec.name!r} is a string tensor; bind() cannot bind it, use run()"
                )
        return LiteRTBinding(self, inputs, outputs)

    # -- close -----------------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            self._closed = True
            slots = list(self._slots)
        for slot in slots:
            slot.clear()


def _load_error(path: Path, error: Exception) -> ModelLoadError:
    text = str(error).strip()
    m = _CUSTOM_OP.search(text)
    if m:
        return ModelLoadError(
            f"litert cannot load {path}: it needs the custom op {m.group(1)!r}, which this LiteRT runtime "
            "does not provide. Custom ops must be compiled into the runtime (or a delegate that "
            "implements them); use a model without it, or another backend",
            path=str(path),
        )
    first = text.splitlines()[0] if text else type(error).__name__
    return ModelLoadError(f"litert could not load {path}: {first}", path=str(path))


class _Slot:
    """One thread's interpreters, keyed by input shapes, least recently used first."""

    __slots__ = ("__weakref__", "_cache", "_size", "last")

    def __init__(self, size: int) -> None:
        self._size = size
        self._cache: dict[Any, Any] = {}
        self.last: Any = None

    def get(self, key: Any) -> Any:
        interp = self._cache.pop(key, None)
        if interp is not None:
            self._cache[key] = interp
        return interp

    def put(self, key: Any, interp: Any) -> None:
        self._cache[key] = interp
        self.last = interp

    def full(self) -> bool:
        return len(self._cache) >= self._size

    def evict(self) -> Any:
        key = next(iter(self._cache))
        return self._cache.pop(key)

    def clear(self) -> None:
        self._cache.clear()
        self.last = None


# -- the bound path --------------------------------------------------------------------------
_Setter = Callable[[int, np.ndarray], Any]


class LiteRTBinding:
    """An interpreter of its own, allocated once for the bound input shapes.

    LiteRT owns its tensor memory and forbids holding a view of it across ``invoke()``, so
    ``run()`` copies each bound input in (``SetTensor``), invokes, and copies each output into the
    reused array in ``outputs`` through a fresh ``tensor(i)`` view that is dropped at once (measured:
    cheaper than writing inputs through views, and than ``get_tensor``, which allocates). Where the
    runtime's wrapper is the known one (ai-edge-litert, tflite-runtime) and no external delegate is
    loaded, it calls the wrapper's ``SetTensor``/``Invoke``/``tensor`` directly: the public methods
    add a Python frame each, and ``invoke()`` a reference-count check for held views, together
    ~40% of a ~1.2 µs call on a tiny model; this class never keeps a view, so the check is moot.

    Without (de)quantization by infercore, ``run`` is a function written for this binding at bind
    time (``_straight_run``): one statement per tensor, no loop, no per-call lookups, and a shape
    check only for outputs whose shape signature has a dynamic dimension (their shape may depend
    on the data).
    """

    run: Callable[[], None]

    def __init__(
        self, backend: LiteRTBackend, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray]
    ) -> None:
        self._backend = backend
        interp = backend._new_interpreter()
        if backend._dynamic or backend._key_of(interp) != tuple(inputs[s.name].shape for s in backend.inputs):
            backend._resize(interp, [inputs[s.name].shape for s in backend.inputs])
        self._interp: Any = interp
        self.inputs = inputs
        wrapper: Any = getattr(interp, "_interpreter", None)
        fast = not backend._delegates and all(hasattr(wrapper, a) for a in ("SetTensor", "Invoke", "tensor"))
        if fast:
            self._set: _Setter = wrapper.SetTensor
            self._invoke: Callable[[], Any] = wrapper.Invoke
            self._view: Callable[[int], np.ndarray] = functools.partial(wrapper.tensor, wrapper)
        else:
            self._set = interp.set_tensor
            self._invoke = interp.invoke
            self._view = functools.partial(_public_view, interp)
        # inputs: (tensor index, bound array, quantized staging array, converter) -- the last two
        # only for quantized inputs under dequantize=True
        self._feeds: list[tuple[int, np.ndarray, np.ndarray | None, _Converter | None]] = []
        for spec, index, q, qdtype in zip(
            backend.inputs, backend._in_index, backend._in_q, backend._in_qdtype, strict=True
        ):
            arr = inputs[spec.name]
            if q is None:
                self._feeds.append((index, arr, None, None))
            else:
                self._feeds.append(
                    (index, arr, aligned_empty(arr.shape, qdtype), _Converter(q, arr.ndim, qdtype))
                )
        # outputs: (name, tensor index, shape may change at run time, converter)
        self.outputs: dict[str, np.ndarray] = {}
        self._fetch: list[tuple[str, int, bool, _Converter | None]] = []
        for spec, detail in zip(backend.outputs, interp.get_output_details(), strict=True):
            shape = tuple(int(d) for d in detail["shape"])
            given = outputs.get(spec.name)
            if given is not None and given.shape != shape:
                raise InputSpecError(
                    f"output {spec.name!r}: the model produces shape {shape} for the bound inputs, "
                    f"the array given has shape {given.shape}",
                    tensor=spec.name,
                )
            self.outputs[spec.name] = given if given is not None else aligned_empty(shape, spec.dtype)
            q = backend._out_q[spec.name]
            conv = _Converter(q, len(shape), np.dtype(detail["dtype"])) if q is not None else None
            self._fetch.append((spec.name, int(detail["index"]), not spec.is_static, conv))
        straight = all(c is None for *_, c in self._feeds) and all(c is None for *_, c in self._fetch)
        self._namespace: dict[str, Any] = {}
        if straight:
            self.run = self._straight_run(wrapper if fast else interp, fast)
        else:
            self.run = self._run_general
        log.debug(
            "litert: bound %s (%s API, %s path)",
            backend.path.name,
            "wrapper" if fast else "public",
            "straight" if straight else "general",
        )

    def _straight_run(self, base: Any, fast: bool) -> Callable[[], None]:
        """``run`` for float/int tensors taken as they are: copy in, invoke, copy out.

        Written out for this binding's tensors, so a call executes one statement per tensor and
        nothing else (measured on a 2-input, 2-output tiny model: the same steps as loops over
        the tensors, with their tuple unpacking and attribute reads, cost ~4% of the raw
        interpreter's call more). The generated text is built from this fixed template and
        integers only; every value it uses lives in ``self._namespace``, its globals:

            def run():
                try:
                    set_tensor(i0, a0)
                    invoke()
                    d0[...] = tensor(base, o0)       # an output of fixed shape
                    v = tensor(base, o1)             # one whose shape may depend on the data
                    if v.shape == s1:
                        d1[...] = v
                    else:
                        reshaped(1, v)               # a new array; d1 and s1 follow it
                except (ValueError, RuntimeError) as e:
                    raise BackendRuntimeError(failing + str(e)) from e

        The view ``tensor(base, o)`` is LiteRT's own (``Interpreter.tensor(i)()``): it lives until
        the function returns, never across an ``invoke()``.
        """
        ns = self._namespace
        ns.update(
            set_tensor=self._set,
            invoke=self._invoke,
            tensor=base.tensor if fast else _public_view,
            base=base,
            reshaped=self._reshaped,
            BackendRuntimeError=BackendRuntimeError,
            failing=f"litert failed running {self._backend.path.name}: ",
        )
        lines = ["def run():", "    try:"]
        for k, (index, arr, _, _) in enumerate(self._feeds):
            ns[f"i{k}"], ns[f"a{k}"] = index, arr
            lines.append(f"        set_tensor(i{k}, a{k})")
        lines.append("        invoke()")
        for k, (name, index, dynamic, _) in enumerate(self._fetch):
            ns[f"o{k}"], ns[f"d{k}"] = index, self.outputs[name]
            if dynamic:
                ns[f"s{k}"] = self.outputs[name].shape
                lines += [
                    f"        v = tensor(base, o{k})",
                    f"        if v.shape == s{k}:",
                    f"            d{k}[...] = v",
                    "        else:",
                    f"            reshaped({k}, v)",
                ]
            else:
                lines.append(f"        d{k}[...] = tensor(base, o{k})")
        lines += [
            "    except (ValueError, RuntimeError) as e:",
            "        raise BackendRuntimeError(failing + str(e)) from e",
        ]
        exec("\n".join(lines), ns)  # a fixed template and integers only, see the docstring
        run: Callable[[], None] = ns.pop("run")
        return run

    def _reshaped(self, k: int, src: np.ndarray) -> None:
        """Output ``k`` came out in a shape other than its array's: the data decided it (``WHERE``,
        ``UNIQUE``). Give it a new array, as the protocol allows, and make the next run compare
        against that one."""
        name = self._fetch[k][0]
        dst = aligned_empty(src.shape, self.outputs[name].dtype)
        dst[...] = src
        self.outputs[name] = dst
        self._namespace[f"d{k}"], self._namespace[f"s{k}"] = dst, dst.shape

    def _run_general(self) -> None:
        """With (de)quantization by infercore: staged inputs, converted outputs."""
        set_tensor, view, outs = self._set, self._view, self.outputs
        try:
            for index, arr, staged, conv in self._feeds:
                if conv is None or staged is None:
                    set_tensor(index, arr)
                else:
                    conv.quantize(arr, staged)
                    set_tensor(index, staged)
            self._invoke()
            for name, index, dynamic, conv in self._fetch:
                src = view(index)
                dst = outs[name]
                if dynamic and src.shape != dst.shape:  # no array to reuse: a new one, as the protocol allows
                    outs[name] = dst = aligned_empty(src.shape, dst.dtype)
                if conv is None:
                    dst[...] = src
                else:
                    conv.dequantize(src, dst)
                del src  # never held across invoke()
        except (ValueError, RuntimeError) as e:
            raise BackendRuntimeError(f"litert failed running {self._backend.path.name}: {e}") from e

    def close(self) -> None:
        self.run = _closed
        # a run function still held somewhere raises too, and holds no interpreter or array
        ns = self._namespace
        ns.update(dict.fromkeys(ns.keys() - {"__builtins__", "BackendRuntimeError", "failing"}))
        ns.update(set_tensor=_closed, invoke=_closed, tensor=_closed)
        self._set = self._invoke = self._view = _closed  # drop the wrapper before the interpreter
        self._feeds, self._fetch = [], []
        self._interp = None


def _public_view(interp: Any, index: int) -> np.ndarray:
    view: np.ndarray = interp.tensor(index)()
    return view


def _closed(*_: Any) -> Any:
    raise EngineClosedError(
        "litert: this bound I/O is closed (or its engine is): bind again on an open engine"
    )


class _Converter:
    """The ``Quantization`` arithmetic, done into preallocated arrays for the bound path."""

    __slots__ = ("_hi", "_lo", "_scale", "_scratch", "_zero")

    def __init__(self, q: Quantization, ndim: int, qdtype: np.dtype) -> None:
        scale = np.asarray(q.scale, dtype=np.float32)
        zero = np.asarray(q.zero_point, dtype=np.float32)
        if q.axis is not None and scale.ndim == 1:
            shape = [1] * ndim
            shape[q.axis] = -1
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        self._scale, self._zero = scale, zero
        info = np.iinfo(qdtype)
        self._lo, self._hi = np.float32(info.min), np.float32(info.max)
        self._scratch: np.ndarray | None = None

    def quantize(self, x: np.ndarray, out: np.ndarray) -> None:
        """``out = clip(rint(x / scale + zero_point))``, as ``Quantization.quantize``."""
        t = self._scratch
        if t is None or t.shape != x.shape:
            t = self._scratch = np.empty(x.shape, np.float32)
        np.divide(x, self._scale, out=t)
        np.add(t, self._zero, out=t)
        np.rint(t, out=t)
        np.clip(t, self._lo, self._hi, out=t)
        np.copyto(out, t, casting="unsafe")

    def dequantize(self, q: np.ndarray, out: np.ndarray) -> None:
        """``out = (q - zero_point) * scale`` in float32, as ``Quantization.dequantize``."""
        np.subtract(q, self._zero, out=out)
        np.multiply(out, self._scale, out=out)


# -- the raw runtime, with nothing of infercore in between ------------------------------------------
class RawLiteRTSession:
    """The classic ``Interpreter``: ``resize_tensor_input``/``allocate_tensors``/``set_tensor``/
    ``invoke``/``get_tensor`` per run, outputs copied; see ``infercore.protocol.RawSession``."""

    def __init__(self, path: Path, *, threads: int | None = None) -> None:
        self._interp = _runtime().module.Interpreter(str(path), num_threads=threads)
        self.inputs = tuple(_spec(d, False) for d in self._interp.get_input_details())
        self.outputs = tuple(_spec(d, False) for d in self._interp.get_output_details())
        self._index = {d["name"]: d["index"] for d in self._interp.get_input_details()}

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        interp = self._interp
        for name, a in feeds.items():
            interp.resize_tensor_input(self._index[name], list(a.shape), strict=False)
        interp.allocate_tensors()
        for name, a in feeds.items():
            interp.set_tensor(self._index[name], a)
        interp.invoke()
        return {d["name"]: interp.get_tensor(d["index"]).copy() for d in interp.get_output_details()}

    def close(self) -> None:
        self._interp = None


def raw_session(path: Path, *, threads: int | None = None) -> RawLiteRTSession:
    return RawLiteRTSession(Path(path), threads=threads)
