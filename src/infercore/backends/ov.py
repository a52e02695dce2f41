"""OpenVINO backend.

Reads OpenVINO IR (``.xml`` + ``.bin``), ONNX and TFLite files. Spec discovery from the compiled
model's ports (dynamic dimensions stay dynamic); ``run`` takes an idle ``InferRequest`` from a
pool (one request per concurrent caller, never shared between threads), sets the caller's arrays
as shared input tensors, infers and copies the requested outputs out; ``bind`` gives a binding
its own request with shared ``ov.Tensor``s over our aligned arrays set once, and its ``run`` is
``infer()`` with no arguments. ``run_many`` is the throughput mode, on an ``AsyncInferQueue``.

Measured facts this file is built around (OpenVINO 2026.4, this CPU):

- The CPU default inference precision is bf16, which changes results (cosine 0.935 on MediaPipe
  pose): ``precision=None`` pins ``INFERENCE_PRECISION_HINT=f32``; ``"bf16"``/``"fp16"`` opt in.
  A CPU without fp16 arithmetic runs bf16 when asked for fp16; ``metadata["inference_precision"]``
  says what was compiled.
- Per call on a 1x16 Add model: the Python ``InferRequest.infer`` wrapper costs ~2x the C++ one
  (it builds an ``OVDict`` and copies every output); the bound path calls the C++ ``infer`` with
  ``share_outputs=True`` and so returns nothing it has to copy.
- The CPU plugin keeps a zero-copy input's raw pointer past its request: dropping a request and
  its shared input array, then running another shape on the compiled model, segfaults. Requests
  and output arrays may go; input memory lives as long as the compiled model, and a closed
  binding's input buffers are reused by later bindings (``OpenVINOBackend.allocate``).
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import math
import os
import re
import sys
import threading
import weakref
from collections import OrderedDict
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
)
from ..optional import require
from ..specs import BackendInfo, TensorSpec, with_onnx_dim_names
from . import check_options

log = logging.getLogger(__name__)

EXTRA = "openvino"

# OpenVINO element type name -> numpy dtype. ``Type.to_dtype()`` is not used: it maps bf16 to
# float16 and the 4-bit types to uint8, both silently wrong for a buffer.
_OV_DTYPES: dict[str, str] = {
    "f32": "float32",
    "f64": "float64",
    "f16": "float16",
    "i8": "int8",
    "i16": "int16",
    "i32": "int32",
    "i64": "int64",
    "u8": "uint8",
    "u16": "uint16",
    "u32": "uint32",
    "u64": "uint64",
    "boolean": "bool",
}
_PRECISION_HINTS = {None: "f32", "fp32": "f32", "bf16": "bf16", "fp16": "f16"}
_PERFORMANCE_HINTS = {
    "latency": "LATENCY",
    "throughput": "THROUGHPUT",
    "cumulative_throughput": "CUMULATIVE_THROUGHPUT",
}
_EXECUTION_MODES = {"performance": "PERFORMANCE", "accuracy": "ACCURACY"}
_VIRTUAL_DEVICES = ("AUTO", "MULTI", "HETERO", "BATCH")
_OPTIONS = {
    "cache_dir": "directory where OpenVINO caches compiled models (CACHE_DIR); later loads skip compiling",
    "performance_hint": "'latency' (default), 'throughput' or 'cumulative_throughput' (PERFORMANCE_HINT)",
    "num_requests": "int >= 1: PERFORMANCE_HINT_NUM_REQUESTS, and the default size of run_many's queue",
    "num_streams": "int >= 1 or 'auto' (NUM_STREAMS)",
    "execution_mode": "'performance' or 'accuracy' (EXECUTION_MODE_HINT)",
    "reshape": "dict input name -> shape (ints; -1 or None for a dynamic dimension), applied before compiling",
    "config": "dict of raw OpenVINO properties for compile_model; overrides everything above",
}


def _ov() -> Any:
    return require("openvino", EXTRA)


def _cause(e: BaseException) -> str:
    """OpenVINO's messages are C++ traces ("Exception from src/...cpp:84:", "Check '...' failed at
    ..."): keep the lines a user can act on, the failed operators first."""
    lines: list[str] = []
    failed = None
    for raw in str(e).splitlines():
        line = re.sub(
            r"^(?:FrontEnd API failed with \w+:?|While validating ONNX node '[^']*':)\s*", "", raw.strip()
        )
        line = re.sub(r"^Check '.*' failed at \S+:\s*", "", line).removeprefix("-- ").strip()
        if not line or line.startswith("Exception from ") or line in ("Summary:", *lines):
            continue
        if line.startswith("Conversion is failed for:"):
            failed = line.removeprefix("Conversion is failed for:").strip()
        elif not line.startswith("Model wasn't fully converted"):
            lines.append(line)
    text = "; ".join(lines).replace(" with a message:; ", ": ") or type(e).__name__
    if failed:
        text = f"operators OpenVINO could not convert: {failed} ({text})"
    return text if len(text) <= 800 else text[:800] + "..."


def _numpy_dtype(element_type: Any, name: str, path: Path) -> np.dtype:
    type_name = element_type.get_type_name()
    if type_name == "string":
        raise ModelLoadError(
            f"openvino: tensor {name!r} of {path.name} is a string tensor; infercore's openvino backend passes "
            "numeric tensors only: use backend='ort' for models with string inputs or outputs",
            path=str(path),
        )
    try:
        return np.dtype(_OV_DTYPES[type_name])
    except KeyError:
        raise ModelLoadError(
            f"openvino: tensor {name!r} of {path.name} has element type {type_name}, which infercore does not "
            f"map to a numpy array (supported: {', '.join(_OV_DTYPES)})",
            path=str(path),
        ) from None


def _port_name(port: Any, is_input: bool) -> str:
    """The graph's own name for a model input or output.

    A port can carry several tensor names (an ONNX Identity's input and output merge), and
    ``get_any_name()`` may pick an internal one. The Parameter's friendly name is the graph input's
    name; a Result's is its output's with a ``/sink_port_N`` suffix. Read them from the model as
    read, not as compiled: compilation folds more names together.
    """
    try:
        names = port.get_names()
        node = port.get_node().get_friendly_name()
        if not is_input:
            node = node.rsplit("/sink_port_", 1)[0]
        if node in names:
            return str(node)
        if len(names) > 1:
            return str(sorted(names)[0])  # deterministic, unlike get_any_name()
        return str(port.get_any_name())
    except RuntimeError:  # a port with no tensor name (rare in IR): its node's name is all there is
        return str(port.get_node().get_friendly_name())


def _spec(port: Any, name: str, path: Path) -> TensorSpec:
    pshape = port.get_partial_shape()
    if pshape.rank.is_dynamic:
        raise ModelLoadError(
            f"openvino: tensor {name!r} of {path.name} has a dynamic rank; infercore needs a known rank: "
            "pass options={'reshape': {name: [...]}} to fix it",
            path=str(path),
        )
    dims = tuple(d.get_length() if d.is_static else None for d in pshape)
    return TensorSpec(name, _numpy_dtype(port.get_element_type(), name, path), dims)


def _device(device: str, core: Any) -> str:
    """infercore's ``cpu`` and OpenVINO's names, case-insensitive: CPU, GPU, GPU.1 (or gpu:1), AUTO[:...]."""
    d = device.strip().upper()
    available = list(core.available_devices)
    head, sep, rest = d.partition(":")
    if head in _VIRTUAL_DEVICES:
        return head + sep + rest
    if sep and rest.isdigit():  # cpu:0, gpu:1 -> CPU, GPU.1
        d = head if head == "CPU" and rest == "0" else f"{head}.{rest}"
    if d in available or any(a.startswith(d + ".") for a in available):
        return d
    listed = ", ".join(available) or "none"
    if d.split(".")[0] in ("CPU", "GPU", "NPU"):
        raise BackendUnavailableError(
            f"openvino: device {device!r} is not available here; OpenVINO sees: {listed} "
            "(GPU and NPU need Intel's drivers installed)"
        )
    raise BackendError(
        f"openvino: unknown device {device!r}; available here: {listed}, plus AUTO (or AUTO:GPU,CPU)"
    )


def _check_options(options: Mapping[str, Any]) -> None:
    check_options("openvino", options, _OPTIONS)


def _positive_int(key: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise BackendError(f"openvino: option {key}={value!r} is invalid; expected {_OPTIONS[key]}")
    return value


def _choice(key: str, value: Any, choices: Mapping[str, str]) -> str:
    hint = choices.get(str(value).lower())
    if hint is None:
        raise BackendError(f"openvino: option {key}={value!r} is invalid; expected {_OPTIONS[key]}")
    return hint


def _process_cpus() -> int:
    """The CPUs this process may run on (its affinity; all of them where that is unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def _compile_config(precision: str | None, threads: int | None, options: Mapping[str, Any]) -> dict[str, Any]:
    if precision not in _PRECISION_HINTS:
        raise BackendError(
            f"openvino: precision={precision!r} is not a hint OpenVINO takes; an int8 model is made by "
            "quantizing (ic.calibrate(..., backend='openvino') uses NNCF), and a quantized IR or Q/DQ ONNX "
            "runs in int8 with precision=None"
        )
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": _PRECISION_HINTS[precision]}
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = threads
        if threads < _process_cpus():
            # OpenVINO pins each compiled model's threads from the same first core: two engines of
            # one thread each, run at once from two threads, shared one core (MiniLM, 2 cores:
            # 299-309 items/s together, as one alone; unpinned 587-592). An engine that leaves
            # cores to others lets the OS place it; a `config` option still wins.
            config["ENABLE_CPU_PINNING"] = False
    for key, value in options.items():
        if key == "cache_dir":
            if not isinstance(value, (str, os.PathLike)):
                raise BackendError(
                    f"openvino: option cache_dir={value!r} is invalid; expected {_OPTIONS[key]}"
                )
            try:
                Path(value).mkdir(parents=True, exist_ok=True)
            except OSError as e:  # a file in the way (FileExistsError), no permission, ...
                raise BackendError(
                    f"openvino: option cache_dir={str(value)!r} cannot be used as a directory: "
                    f"{e.strerror or e}; expected {_OPTIONS[key]}"
                ) from e
            config["CACHE_DIR"] = str(value)
        elif key == "performance_hint":
            config["PERFORMANCE_HINT"] = _choice(key, value, _PERFORMANCE_HINTS)
        elif key == "execution_mode":
            config["EXECUTION_MODE_HINT"] = _choice(key, value, _EXECUTION_MODES)
        elif key == "num_requests":
            config["PERFORMANCE_HINT_NUM_REQUESTS"] = _positive_int(key, value)
        elif key == "num_streams":
            if isinstance(value, str) and value.lower() == "auto":
                config["NUM_STREAMS"] = "AUTO"
            else:
                config["NUM_STREAMS"] = _positive_int(key, value)
        elif key == "config":
            if not isinstance(value, Mapping):
                raise BackendError(f"openvino: option config={value!r} is invalid; expected {_OPTIONS[key]}")
            config.update({str(k): v for k, v in value.items()})
    return config


def _reshape(ov: Any, model: Any, shapes: Any, path: Path) -> None:
    if not isinstance(shapes, Mapping):
        raise BackendError(f"openvino: option reshape={shapes!r} is invalid; expected {_OPTIONS['reshape']}")
    names = {n for port in model.inputs for n in port.get_names()}
    target = {}
    for name, shape in shapes.items():
        if name not in names:
            raise BackendError(
                f"openvino: option reshape names input {name!r}, which {path.name} does not have; "
                f"its inputs are: {', '.join(sorted(names))}"
            )
        try:
            target[name] = ov.PartialShape([-1 if d is None else int(d) for d in shape])
        except (TypeError, ValueError) as e:
            raise BackendError(
                f"openvino: reshape shape for {name!r} must be a list of ints or None, got {shape!r}"
            ) from e
    try:
        model.reshape(target)
    except Exception as e:
        raise ModelLoadError(f"openvino could not reshape {path}: {_cause(e)}", path=str(path)) from e


def _flatten_rt_info(info: Any, prefix: str = "") -> dict[str, str]:
    """``Model.get_rt_info()`` as flat strings; an ONNX model's metadata_props sit under "framework"."""
    out: dict[str, str] = {}
    for key in info.keys():  # noqa: SIM118 -- RTMap is not iterable
        value = info[key]
        if isinstance(value, Mapping) or hasattr(value, "keys"):
            sub = _flatten_rt_info(value, f"{prefix}{key}.")
            if prefix == "" and key == "framework":
                out.update({k.removeprefix("framework."): v for k, v in sub.items()})
            else:
                out.update(sub)
            continue
        try:
            text = value.astype(str)
        except Exception:
            text = str(value)
        out[f"{prefix}{key}"] = text
    return out


class OpenVINOFactory:
    """Registered as ``openvino``; reads ``.xml`` (IR), ``.onnx`` and ``.tflite`` files."""

    extra = EXTRA

    def __init__(self) -> None:
        self._core: Any = None
        self._lock = threading.Lock()

    def _get_core(self) -> Any:
        """One ``ov.Core`` for every model (OpenVINO's advice: plugins load once per Core)."""
        with self._lock:
            if self._core is None:
                self._core = _ov().Core()
            return self._core

    def probe(self) -> BackendInfo:
        try:
            ov = _ov()
        except BackendUnavailableError as e:
            return BackendInfo("openvino", False, reason=str(e), extra=EXTRA)
        core = self._get_core()
        devices = list(core.available_devices)
        try:
            dist = importlib.metadata.version("openvino")
        except importlib.metadata.PackageNotFoundError:
            dist = str(ov.__version__)
        details = {"build": str(ov.get_version())}
        for dev in devices:
            try:
                details[dev] = str(core.get_property(dev, "FULL_DEVICE_NAME"))
            except Exception:
                pass
        return BackendInfo(
            "openvino", True, version=dist, devices=(*devices, "AUTO"), extra=EXTRA, details=details
        )

    def open(
        self,
        path: Path,
        *,
        device: str,
        precision: str | None,
        threads: int | None,
        options: Mapping[str, Any],
    ) -> OpenVINOBackend:
        ov = _ov()
        core = self._get_core()
        _check_options(options)
        config = _compile_config(precision, threads, options)
        dev = _device(device, core)
        try:
            model = core.read_model(str(path))
        except Exception as e:
            why = _cause(e)
            weights = path.with_suffix(".bin")
            if path.suffix.lower() == ".xml" and not weights.exists():
                why = f"{why} (an IR needs its weights file beside it, and there is no {weights.name})"
            elif path.suffix.lower() == ".tflite" and "RESOURCE" in why:
                why = f"{why} (a stateful TFLite model with resource variables: use backend='litert')"
            raise ModelLoadError(f"openvino could not read {path}: {why}", path=str(path)) from e
        if "reshape" in options:
            _reshape(ov, model, options["reshape"], path)
        try:
            compiled = core.compile_model(model, dev, config)
        except Exception as e:
            raise ModelLoadError(
                f"openvino could not compile {path} for {dev} with {config}: {_cause(e)}", path=str(path)
            ) from e
        num_requests = options.get("num_requests")
        return OpenVINOBackend(ov, model, compiled, dev, path, precision, num_requests)


class OpenVINOBackend:
    """A compiled model. ``run`` is thread-safe (an idle request per call, from a pool); ``bind``
    gives each binding its own request; ``run_many`` runs many feeds on an ``AsyncInferQueue``."""

    name = "openvino"

    def __init__(
        self,
        ov: Any,
        model: Any,
        compiled: Any,
        device: str,
        path: Path,
        precision: str | None,
        num_requests: int | None,
    ) -> None:
        self._ov = ov
        self._model = model  # kept to learn, per bound shape, which outputs the data can resize
        self._compiled: Any = compiled
        self.device = device
        self.path = path
        # names from the model as read (compiled ports merge names); types and shapes as compiled
        self.inputs = tuple(
            _spec(p, _port_name(m, True), path) for p, m in zip(compiled.inputs, model.inputs, strict=True)
        )
        self.outputs = tuple(
            _spec(p, _port_name(m, False), path) for p, m in zip(compiled.outputs, model.outputs, strict=True)
        )
        # OpenVINO's ports drop dimension names: an ONNX file's own, as ONNX Runtime reports them
        named = with_onnx_dim_names((*self.inputs, *self.outputs), path)
        self.inputs, self.outputs = named[: len(self.inputs)], named[len(self.inputs) :]
        self._in_index = {s.name: i for i, s in enumerate(self.inputs)}
        self._out_index = {s.name: i for i, s in enumerate(self.outputs)}
        self._passthrough = self._outputs_read_from_inputs(compiled)
        self._num_requests = num_requests
        # ``_idle`` holds [request, last feeds] pairs free for run(); ``_keep`` the live bindings'
        # requests and arrays. The CPU plugin keeps a zero-copy input's raw pointer past its request
        # (measured on 2026.4: drop a request and its input array, run another shape: segfault), so
        # memory once bound as an input is never freed before close: a closed binding's buffers
        # infercore allocated go to ``_free`` for later bindings to reuse (bounded by the largest
        # set bound at once), and callers' own arrays to ``_graveyard``.
        self._idle: list[list[Any]] = []
        self._keep: dict[int, list[Any]] = {}
        self._graveyard: list[Any] = []
        self._free: list[np.ndarray] = []  # aligned byte buffers no live binding uses
        # id(input array allocate() made) -> (its byte buffer, a weak reference to the array): an
        # array that dies unbound (Engine.bind refused the call) gives its buffer back by itself
        self._owned: dict[int, tuple[np.ndarray, weakref.ref[np.ndarray]]] = {}
        self._pool_lock = threading.RLock()  # an array dying under it calls back into the pool
        self._fixed_cache: OrderedDict[tuple[tuple[int, ...], ...], dict[str, tuple[int, ...]]] = OrderedDict()
        self._queue: Any = None
        self._queue_lock = threading.Lock()
        self._infer: Callable[..., Any] = ov._pyopenvino.InferRequest.infer  # the C++ infer, no OVDict
        self.metadata = self._metadata(ov, model, compiled, precision)
        try:  # runs that execute at once; more concurrent requests wait for a free stream
            self.concurrency: int | None = int(compiled.get_property("NUM_STREAMS"))
        except Exception:  # AUTO answers for few properties
            self.concurrency = None

    def _outputs_read_from_inputs(self, compiled: Any) -> frozenset[str]:
        """Outputs the compiled graph takes straight from an input. The CPU plugin does not write
        those into a preset output tensor (seen with a float64 0-d Einsum), so a binding copies
        them out instead of binding them in place."""
        try:
            results = compiled.get_runtime_model().get_results()
            ports = [set(p.get_names()) for p in compiled.outputs]
            if len(results) != len(self.outputs):
                return frozenset()
            found = set()
            for i, result in enumerate(results):
                if str(result.input_value(0).get_node().get_rt_info()["layerType"].astype(str)) != "Input":
                    continue
                # results come in output order; the Result's name ("y/sink_port_0") confirms it
                base = result.get_friendly_name().rsplit("/sink_port_", 1)[0]
                j = next((k for k, names in enumerate(ports) if base in names), i)
                found.add(self.outputs[j].name)
            return frozenset(found)
        except Exception:  # devices without an execution graph to read: nothing known
            return frozenset()

    def _metadata(self, ov: Any, model: Any, compiled: Any, precision: str | None) -> dict[str, str]:
        md = _flatten_rt_info(model.get_rt_info())
        md["openvino_version"] = str(ov.get_version())
        for key, prop in (
            ("inference_precision", "INFERENCE_PRECISION_HINT"),
            ("execution_devices", "EXECUTION_DEVICES"),
        ):
            try:
                value = compiled.get_property(prop)
            except Exception:  # AUTO answers for few properties
                continue
            md[key] = value.get_type_name() if hasattr(value, "get_type_name") else ", ".join(value)
        got = md.get("inference_precision")
        want = _PRECISION_HINTS.get(precision)
        if got is not None and want is not None and got != want:
            log.warning(
                "openvino: asked for %s inference on %s, OpenVINO compiled %s", want, self.device, got
            )
        return md

    def _outputs_fixed_by(self, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
        """Outputs whose shape OpenVINO's shape inference fixes once the inputs have these shapes."""
        try:
            model = self._model.clone()
            model.reshape({model.input(self._in_index[n]): self._ov.PartialShape(list(s)) for n, s in shapes.items()})
            fixed = {}
            for i, s in enumerate(self.outputs):
                shape = model.output(i).get_partial_shape()
                if shape.is_static:
                    fixed[s.name] = tuple(int(d) for d in shape.to_shape())
            return fixed
        except Exception as e:  # shape inference refused: size by a run and watch every dynamic output
            log.debug("openvino: static reshape for %s failed: %s", dict(shapes), _cause(e))
            return {}

    # -- run -------------------------------------------------------------------------------------
    def _compiled_or_raise(self) -> Any:
        compiled = self._compiled
        if compiled is None:
            raise BackendRuntimeError("openvino: model is closed")
        return compiled

    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        compiled = self._compiled_or_raise()
        try:
            slot = self._idle.pop()  # list.pop/append are atomic: no lock on the hot path
        except IndexError:
            slot = [compiled.create_infer_request(), None]
        request = slot[0]
        tensor = self._ov.Tensor
        index = self._in_index
        slot[1] = feeds  # the arrays behind the request's shared tensors live until its next use
        try:
            for name, a in feeds.items():
                # shared where numpy allows it (a read-only array would be refused: copy it in)
                request.set_input_tensor(index[name], tensor(a, shared_memory=a.flags.writeable))
            self._infer(request, {}, True, False)
            get = request.get_output_tensor
            result = {name: get(self._out_index[name]).data.copy() for name in outputs}
        except Exception as e:
            raise BackendRuntimeError(f"openvino failed running {self.path.name}: {_cause(e)}") from e
        finally:
            self._idle.append(slot)
        return result

    def run_many(
        self,
        feeds: Sequence[Mapping[str, np.ndarray]],
        outputs: Sequence[str],
        *,
        jobs: int | None = None,
    ) -> list[dict[str, np.ndarray]]:
        """Run many validated feeds at once on an ``AsyncInferQueue``; results in feed order.

        The throughput mode: requests overlap on the device's streams, so open the model with
        ``options={"performance_hint": "throughput"}`` for it to pay. ``jobs`` (the queue size) defaults
        to ``num_requests`` or OpenVINO's ``OPTIMAL_NUMBER_OF_INFER_REQUESTS``; the queue is made on
        first use and reused. Inputs are copied into the requests' own tensors (a request keeps no
        pointer into the caller's arrays). One ``run_many`` at a time; ``run`` may go on beside it.
        """
        compiled = self._compiled_or_raise()
        if not feeds:
            return []
        results: list[dict[str, np.ndarray] | None] = [None] * len(feeds)
        out_index = [(name, self._out_index[name]) for name in outputs]

        def done(request: Any, i: int) -> None:
            get = request.get_output_tensor
            results[i] = {name: get(j).data.copy() for name, j in out_index}

        with self._queue_lock:
            queue = self._async_queue(compiled, jobs)
            queue.set_callback(done)
            try:
                for i, feed in enumerate(feeds):
                    queue.start_async({self._in_index[n]: a for n, a in feed.items()}, i, share_inputs=False)
                queue.wait_all()
            except Exception as e:
                raise BackendRuntimeError(
                    f"openvino failed running {self.path.name} (run_many): {_cause(e)}"
                ) from e
        missing = [i for i, r in enumerate(results) if r is None]
        if missing:
            raise BackendRuntimeError(
                f"openvino: run_many on {self.path.name} produced no result for feed(s) {missing[:10]}"
            )
        return [r for r in results if r is not None]

    def _async_queue(self, compiled: Any, jobs: int | None) -> Any:
        if jobs is not None and (not isinstance(jobs, int) or jobs < 1):
            raise BackendError(f"openvino: run_many jobs must be a positive int, got {jobs!r}")
        if self._queue is None or (jobs is not None and len(self._queue) != jobs):
            if self._queue is not None:
                self._graveyard.append(self._queue)  # its requests shared callers' arrays: until close
            n = jobs or self._num_requests or int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
            self._queue = self._ov.AsyncInferQueue(compiled, max(1, n))
        return self._queue

    # -- bind ------------------------------------------------------------------------------------
    def allocate(self, shape: Sequence[int], dtype: np.dtype) -> np.ndarray:
        """A zeroed input buffer for ``Engine.bind``, on memory a closed binding left if any fits."""
        shape = tuple(int(d) for d in shape)
        nbytes = math.prod(shape) * np.dtype(dtype).itemsize
        with self._pool_lock:
            fits = [b for b in self._free if b.nbytes >= nbytes]
            buf = min(fits, key=lambda b: b.nbytes) if fits else None
            if buf is not None:
                self._free = [b for b in self._free if b is not buf]
        if buf is None:  # size classes (powers of two from 4 KiB) so freed buffers fit later shapes
            buf = aligned_empty((max(4096, 1 << (max(nbytes, 1) - 1).bit_length()),), np.uint8)
        arr = buf[:nbytes].view(dtype).reshape(shape)
        arr[...] = 0
        key = id(arr)

        def died(_: object, key: int = key) -> None:  # never bound, or bound and never released
            with self._pool_lock:
                entry = self._owned.pop(key, None)
                if entry is not None and entry[0] is buf and self._compiled is not None:
                    self._free.append(buf)

        with self._pool_lock:
            self._owned[key] = (buf, weakref.ref(arr, died))
        return arr

    def bind(self, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> OpenVINOBinding:
        compiled = self._compiled_or_raise()
        request = compiled.create_infer_request()
        keep: list[Any] = [request]
        self._keep[id(keep)] = keep  # until the binding closes
        try:
            return OpenVINOBinding(self, request, keep, inputs, outputs)
        except BaseException:
            self._release(keep, inputs)
            raise

    def _release(self, keep: list[Any], inputs: dict[str, np.ndarray]) -> None:
        """A closed binding: the request goes, then its outputs; its inputs' memory stays (see
        ``_free``): buffers infercore made are reused once nobody else holds them."""
        self._keep.pop(id(keep), None)
        keep[0] = None  # the request first, before any array its tensors point at
        keep.clear()
        while inputs:
            _, arr = inputs.popitem()
            with self._pool_lock:
                entry = self._owned.get(id(arr))
                buf = entry[0] if entry is not None and entry[1]() is arr else None
                if buf is None:  # a caller's own array: OpenVINO may still point at it
                    self._graveyard.append(arr)
                    del arr
                    continue
                del self._owned[id(arr)]
                # Views of arr (io.inputs["x"][1]) reference the memory's owner, not arr: the buffer
                # is free only if nothing but buf (and this check) refers to that owner.
                owner = buf.base if buf.base is not None else buf
                del arr
                if sys.getrefcount(owner) <= (3 if owner is not buf else 4):
                    self._free.append(buf)
                else:
                    self._graveyard.append(buf)

    def _outputs_fixed_by_cached(self, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
        key = tuple(tuple(shapes[s.name]) for s in self.inputs)
        fixed = self._fixed_cache.get(key)
        if fixed is None:
            fixed = self._outputs_fixed_by(shapes)  # a reshaped clone: ~10 ms, once per shape
            self._fixed_cache[key] = fixed
            if len(self._fixed_cache) > 256:
                self._fixed_cache.popitem(last=False)
        return fixed

    def close(self) -> None:
        with self._queue_lock:
            self._queue = None
        self._idle.clear()
        for keep in list(self._keep.values()):
            keep[0] = None
        self._keep.clear()
        self._compiled = None
        self._model = None
        self._graveyard.clear()
        self._free.clear()
        self._owned.clear()


class OpenVINOBinding:
    """One request, with shared ``ov.Tensor``s over aligned arrays set once; ``run`` is ``infer()``.

    Outputs whose shape the bound input shapes fix (static ones, and dynamic ones that OpenVINO's
    shape inference resolves) are preallocated and set as the request's output tensors, so the
    runtime writes into ``outputs`` in place. Data-dependent outputs (NonZero, a Range from input
    values) are left to the runtime and copied out after each run: a preset tensor of the wrong
    size is not always refused (with one inference thread OpenVINO 2026 keeps the old shape and
    writes out of bounds), and sizing by a probing run would run the model on data the caller
    has not written yet. Outputs the graph takes straight from an input are copied out too.
    """

    def __init__(
        self,
        backend: OpenVINOBackend,
        request: Any,
        keep: list[Any],
        inputs: dict[str, np.ndarray],
        outputs: dict[str, np.ndarray],
    ) -> None:
        self._backend = backend
        self._ov = backend._ov
        self._request: Any = request
        self._keep = keep  # held by the backend: every array behind this request's shared tensors
        self._index = backend._out_index
        self.inputs = inputs
        self.outputs: dict[str, np.ndarray] = {}
        self._copied: list[tuple[str, int, np.ndarray | None]] = []  # (name, index, caller's array)
        fixed = backend._outputs_fixed_by_cached({k: v.shape for k, v in inputs.items()})
        for spec in backend.outputs:
            shape = spec.concrete() if spec.is_static else fixed.get(spec.name)
            given = outputs.get(spec.name)
            if given is not None and shape is not None and given.shape != shape:
                raise InputSpecError(
                    f"output {spec.name!r}: for these input shapes it has shape {shape}, "
                    f"got an array of shape {given.shape}",
                    tensor=spec.name,
                )
            if shape is None or spec.name in backend._passthrough:
                self._copied.append((spec.name, self._index[spec.name], given))
                self.outputs[spec.name] = given if given is not None else np.empty((0,) * spec.rank, spec.dtype)
                continue
            self.outputs[spec.name] = given if given is not None else aligned_empty(shape, spec.dtype)
        try:
            for name, arr in inputs.items():
                self._keep.append(arr)
                request.set_input_tensor(backend._in_index[name], self._ov.Tensor(arr, shared_memory=True))
            copied = {c[0] for c in self._copied}
            for name, arr in self.outputs.items():
                if name not in copied:
                    self._keep.append(arr)
                    request.set_output_tensor(self._index[name], self._ov.Tensor(arr, shared_memory=True))
        except Exception as e:
            raise BackendRuntimeError(f"openvino: bind() on {backend.path.name} failed: {_cause(e)}") from e
        self._run: Callable[[], Any] = functools.partial(backend._infer, request, {}, True, False)

    def run(self) -> None:
        try:
            self._run()
        except Exception as e:
            if self._backend._compiled is None:
                raise BackendRuntimeError("openvino: model is closed") from e
            raise BackendRuntimeError(f"openvino failed running {self._backend.path.name}: {_cause(e)}") from e
        if self._copied:
            get = self._request.get_output_tensor
            for name, index, target in self._copied:
                data = get(index).data
                if target is None:
                    self.outputs[name] = data.copy()
                elif data.shape != target.shape:
                    raise InputSpecError(
                        f"output {name!r}: openvino computed shape {tuple(data.shape)} for this run, but the "
                        f"array bound for it has shape {target.shape}: it is data-dependent; bind without it "
                        f"and read io.outputs[{name!r}]",
                        tensor=name,
                    )
                else:
                    np.copyto(target, data)

    def close(self) -> None:
        self._run = _closed
        if self._request is not None:
            self._request = None
            self._backend._release(self._keep, self.inputs)


def _closed() -> None:
    raise BackendRuntimeError("openvino: binding is closed")


# -- the raw runtime, with nothing of infercore in between ------------------------------------------
class RawOpenVINOSession:
    """``InferRequest.infer`` on the CPU with the f32 precision hint (this CPU's default is bf16):
    see ``infercore.protocol.RawSession``."""

    def __init__(self, path: Path, *, threads: int | None = None) -> None:
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self._compiled = _ov().Core().compile_model(str(path), "CPU", config)
        self._request = self._compiled.create_infer_request()
        self.inputs = tuple(self._spec(p) for p in self._compiled.inputs)
        self.outputs = tuple(self._spec(p) for p in self._compiled.outputs)
        self._in_names = [s.name for s in self.inputs]

    @staticmethod
    def _spec(port: Any) -> TensorSpec:
        shape = tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
        return TensorSpec(port.get_any_name(), port.get_element_type().to_dtype(), shape)

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        result = self._request.infer({i: feeds[n] for i, n in enumerate(self._in_names)})
        return {port.get_any_name(): np.array(value, copy=True) for port, value in result.items()}

    def close(self) -> None:
        self._request = None
        self._compiled = None


def raw_session(path: Path, *, threads: int | None = None) -> RawOpenVINOSession:
    return RawOpenVINOSession(Path(path), threads=threads)
