"""The runtime: one deserialized engine, its execution contexts, bindings, ``run`` and ``close``.

``bind`` owns one execution context and one stream: inputs and outputs live in pinned host arrays,
one ``cudaMemcpyAsync`` per tensor each way around ``execute_async_v3``, optionally replayed as a
CUDA graph. ``run`` keeps one such binding per thread and shape, so each thread has its own
execution context.
"""

from __future__ import annotations

import collections
import logging
import threading
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ...errors import BackendError, BackendRuntimeError, EngineClosedError, InputSpecError
from ...specs import TensorSpec, format_shape
from . import cuda
from .specs import discover_specs

log = logging.getLogger(__name__)

_RUN_BINDINGS_PER_THREAD = 4  # shapes remembered by run() per thread


class TensorRTBackend:
    """One deserialized engine on one GPU.

    Memory model: every binding owns one execution context, and TensorRT gives each context its own
    activation memory (``createExecutionContext``'s default ``kSTATIC`` strategy), plus device
    buffers and pinned host arrays for its I/O. ``run()`` keeps, per thread, the bindings of the 4
    most recent input shapes: older ones are closed when a fifth shape arrives, and the bindings of
    threads that have exited are closed when any thread next needs a new one. ``close()`` waits for
    runs in flight and then releases everything.
    """

    name = "tensorrt"
    accepts_device_arrays = True  # Engine.bind passes torch/cupy/DLPack arrays through, bound in place

    def __init__(
        self,
        trt: ModuleType,
        runtime: Any,
        engine: Any,
        logger: Any,
        gpu: cuda.DeviceInfo,
        path: Path,
        cuda_graph: bool,
    ) -> None:
        self._trt = trt
        self._runtime = runtime
        self._engine: Any = engine
        self._logger = logger
        self.gpu = gpu
        self.path = path
        self.device = f"cuda:{gpu.index}"
        self._cuda_graph = cuda_graph
        self.inputs, self.outputs, self.profiles = discover_specs(trt, engine)
        self._lock = threading.Lock()  # guards _closed, _bindings and _per_thread
        self._closed = False
        self._bindings: weakref.WeakSet[TensorRTBinding] = weakref.WeakSet()  # every live binding
        self._per_thread: dict[int, collections.OrderedDict[tuple[Any, ...], TensorRTBinding]] = {}
        self.metadata = {
            "tensorrt": str(trt.__version__),
            "gpu": f"{gpu.name} ({gpu.sm})",
            "cuda_graph": "on" if cuda_graph else "off",
            **{f"profile:{k}": str(v) for k, v in self.profiles.items()},
        }

    def check_profile(self, shapes: Mapping[str, Sequence[int]]) -> None:
        """Raise ``InputSpecError`` for a shape outside optimization profile 0 (the Engine knows only None)."""
        for name, profile in self.profiles.items():
            shape = tuple(int(d) for d in shapes[name])
            if not profile.contains(shape):
                spec = next(s for s in self.inputs if s.name == name)
                bad = [
                    f"dimension {i} is {s}, the profile allows {lo}..{hi}"
                    for i, (lo, s, hi) in enumerate(zip(profile.min, shape, profile.max, strict=True))
                    if not lo <= s <= hi
                ]
                raise InputSpecError(
                    f"input {name!r}: shape {shape} is outside the engine's optimization profile for "
                    f"{format_shape(spec.shape, spec.dim_names)} ({profile}): {'; '.join(bad)}. Rebuild with "
                    "options={'profiles': {name: (min, opt, max)}} to cover it",
                    tensor=name,
                )

    def _closed_error(self) -> EngineClosedError:
        return EngineClosedError(f"tensorrt: the engine for {self.path.name} is closed")

    # -- run ---------------------------------------------------------------------------------------------
    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        if self._closed:
            raise self._closed_error()
        key = tuple(feeds[s.name].shape for s in self.inputs)
        cache = self._per_thread.get(threading.get_ident())
        binding = cache.get(key) if cache is not None else None
        if binding is None:
            binding = self._new_run_binding(key, feeds)
        elif cache is not None:
            cache.move_to_end(key)
        return binding.run_feeds(feeds, outputs)

    def _new_run_binding(self, key: tuple[Any, ...], feeds: Mapping[str, np.ndarray]) -> TensorRTBinding:
        self.check_profile({n: a.shape for n, a in feeds.items()})
        threading.current_thread()  # registers a thread started outside threading, so it counts as alive
        me = threading.get_ident()
        with self._lock:
            if self._closed:
                raise self._closed_error()
            alive = {t.ident for t in threading.enumerate()}
            stale = [
                b
                for ident in [i for i in self._per_thread if i not in alive]
                for b in self._per_thread.pop(ident).values()
            ]
            binding = TensorRTBinding(self, {n: a.shape for n, a in feeds.items()}, {}, cuda_graph=False)
            self._bindings.add(binding)
            cache = self._per_thread.setdefault(me, collections.OrderedDict())
            cache[key] = binding
            while len(cache) > _RUN_BINDINGS_PER_THREAD:
                stale.append(cache.popitem(last=False)[1])
            for b in stale:
                self._bindings.discard(b)
        for b in stale:  # outside the lock; none is running: their threads are gone, or it is this one
            b.close()
        return binding

    # -- bind --------------------------------------------------------------------------------------------
    def allocate(self, shape: Sequence[int], dtype: np.dtype) -> np.ndarray:
        """A pinned host array for a bound input (what ``io.inputs`` should be)."""
        return cuda.pinned_empty(shape, dtype)

    def bind(self, inputs: dict[str, Any], outputs: dict[str, Any]) -> TensorRTBinding:
        if self._closed:
            raise self._closed_error()
        inputs = {n: cuda.as_device_array(v, n) if cuda.is_device_array(v) else v for n, v in inputs.items()}
        outputs = {
            n: cuda.as_device_array(v, n) if cuda.is_device_array(v) else v for n, v in outputs.items()
        }
        self.check_profile({n: v.shape if hasattr(v, "shape") else v for n, v in inputs.items()})
        with self._lock:
            if self._closed:
                raise self._closed_error()
            binding = TensorRTBinding(self, inputs, outputs, cuda_graph=self._cuda_graph)
            self._bindings.add(binding)
        return binding

    def close(self) -> None:
        """Release every binding (each waits for its run in flight), then the engine; idempotent.

        A binding that fails to close (a sticky CUDA error) does not stop the others or the engine
        from being released; the first such error is raised at the end.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            bindings = list(self._bindings)
            self._bindings = weakref.WeakSet()
            self._per_thread.clear()
        errors: list[BaseException] = []
        try:
            for b in bindings:
                try:
                    b.close()
                except Exception as e:
                    errors.append(e)
        finally:
            self._engine = None  # after every context: TensorRT destroys contexts before their engine
            self._runtime = None
        for other in errors[1:]:
            log.error("tensorrt: another binding also failed to close: %s", other)
        if errors:
            raise errors[0]


class _Tensor:
    """One bound tensor: the array the user sees, and where it lives on the device."""

    __slots__ = ("device", "host", "nbytes", "owned", "ptr")

    def __init__(self, host: np.ndarray | None, device: cuda.DeviceBuffer | cuda.DeviceArray) -> None:
        self.host = host  # None: the tensor is a caller's device array, never copied
        self.device = device
        self.ptr = int(device.ptr)
        self.nbytes = int(device.nbytes)


_ALIGNMENT = 256  # NvInferRuntime.h, setTensorAddress: "The pointer must have at least 256-byte alignment."


class TensorRTBinding:
    """One execution context and one stream bound to fixed shapes.

    Host-side tensors are the arrays bound (the caller's, used in place), page-locked with
    ``cudaHostRegister`` unless already pinned; outputs not given are pinned arrays allocated here.
    An array CUDA cannot lock (its page is already locked, e.g. by a small neighbouring array) stays
    pageable: its copies are synchronous but still correct, a warning names it, and ``cuda_graph``
    is then skipped for the binding (``self.cuda_graph`` says whether a graph is replayed). A device
    array given by the caller is used by pointer with no copy; every ``run`` first orders the
    binding's stream after the array's producer. ``run`` queues one H2D copy per host input,
    ``execute_async_v3``, one D2H copy per host output, and waits for the stream. ``close`` waits
    for a run in flight (one lock per binding) and makes later runs raise ``EngineClosedError``.
    """

    def __init__(
        self,
        backend: TensorRTBackend,
        inputs: Mapping[str, Any],
        outputs: Mapping[str, Any],
        *,
        cuda_graph: bool,
    ) -> None:
        self._backend = backend
        self._index = backend.gpu.index
        self._lock = threading.Lock()
        self._stream: cuda.Stream | None = None
        self._event: cuda.Event | None = None
        self._context: Any = None
        self._graph: cuda.GraphExec | None = None
        self._tensors: list[_Tensor] = []
        self._registered: list[np.ndarray] = []
        self._h2d: list[tuple[int, np.ndarray]] = []
        self._d2h: list[tuple[np.ndarray, int]] = []
        self._device_arrays: list[cuda.DeviceArray] = []
        self.inputs: dict[str, Any] = {}
        self.outputs: dict[str, Any] = {}
        self.cuda_graph = False
        self.pageable: tuple[str, ...] = ()
        try:
            with cuda.device_scope(self._index):
                self._setup(inputs, outputs, cuda_graph)
        except BaseException:
            try:
                self._release()  # a failed bind leaves nothing locked or allocated behind
            except Exception as e:
                log.debug("tensorrt: cleanup after a failed bind also failed: %s", e)
            raise

    def _setup(self, inputs: Mapping[str, Any], outputs: Mapping[str, Any], cuda_graph: bool) -> None:
        backend = self._backend
        self._stream = cuda.Stream()
        self._context = backend._engine.create_execution_context()
        if self._context is None:
            raise BackendRuntimeError(
                f"tensorrt: could not create an execution context: {backend._logger.take() or 'out of GPU memory?'}"
            )
        ctx = self._context
        for spec in backend.inputs:
            value = inputs[spec.name]
            shape = tuple(int(d) for d in (value.shape if hasattr(value, "shape") else value))
            if not ctx.set_input_shape(spec.name, shape):
                raise InputSpecError(
                    f"input {spec.name!r}: TensorRT refused shape {shape}: {backend._logger.take()}",
                    tensor=spec.name,
                )
            t = self._attach(spec, value, shape, is_input=True)
            if t.host is not None:
                self._h2d.append((t.ptr, t.host))
                self.inputs[spec.name] = t.host
            else:
                self.inputs[spec.name] = _user_object(value)
        for spec in backend.outputs:
            shape = tuple(int(d) for d in ctx.get_tensor_shape(spec.name))
            if any(d < 0 for d in shape):
                raise BackendError(
                    f"tensorrt: output {spec.name!r} has a data-dependent shape {shape}; such outputs need an "
                    "output allocator, which infercore does not support yet"
                )
            value = outputs.get(spec.name)
            t = self._attach(spec, value if value is not None else shape, shape, is_input=False)
            if t.host is not None:
                self._d2h.append((t.host, t.ptr))
                self.outputs[spec.name] = t.host
            else:
                self.outputs[spec.name] = _user_object(value)
        for spec, t in zip((*backend.inputs, *backend.outputs), self._tensors, strict=True):
            if not ctx.set_tensor_address(spec.name, t.ptr):
                raise BackendRuntimeError(
                    f"tensorrt: set_tensor_address({spec.name!r}, {t.ptr:#x}) failed: {backend._logger.take()}"
                )
        if self._device_arrays:
            self._event = cuda.Event(timing=False)
        names = [s.name for s in (*backend.inputs, *backend.outputs)]
        self.pageable = tuple(
            n
            for n, t in zip(names, self._tensors, strict=True)
            if t.host is not None and not cuda.is_pinned(t.host)
        )
        if cuda_graph and self.pageable:
            log.warning(
                "tensorrt: cuda_graph skipped for this binding: %s could not be page-locked (a CUDA graph "
                "cannot capture pageable copies); bind pinned arrays (eng.bind with shapes allocates them)",
                ", ".join(repr(n) for n in self.pageable),
            )
        elif cuda_graph:
            self._enqueue()  # TensorRT finishes deferred setup on the first enqueue, outside capture
            self._stream.synchronize()
            self._graph = cuda.capture_graph(self._stream, self._enqueue)
            self.cuda_graph = True

    def _attach(self, spec: TensorSpec, value: Any, shape: tuple[int, ...], *, is_input: bool) -> _Tensor:
        role = "input" if is_input else "output"
        if isinstance(value, cuda.DeviceArray) or cuda.is_device_array(value):
            arr = value if isinstance(value, cuda.DeviceArray) else cuda.as_device_array(value, spec.name)
            if arr.dtype != spec.dtype or arr.shape != shape:
                raise InputSpecError(
                    f"{role} {spec.name!r}: the device array is {arr.dtype} {arr.shape}, "
                    f"the engine needs {spec.dtype} {shape}",
                    tensor=spec.name,
                )
            if arr.device >= 0 and arr.device != self._index:
                raise InputSpecError(
                    f"{role} {spec.name!r}: the device array is on cuda:{arr.device}, the engine runs on "
                    f"cuda:{self._index}: move it there first (torch: x.to('cuda:{self._index}'))",
                    tensor=spec.name,
                )
            if arr.ptr % _ALIGNMENT:
                raise InputSpecError(
                    f"{role} {spec.name!r}: the device array's address {arr.ptr:#x} is not {_ALIGNMENT}-byte "
                    f"aligned, which TensorRT requires: pass a fresh allocation (x.clone()), not an offset view",
                    tensor=spec.name,
                )
            self._device_arrays.append(arr)
            assert self._stream is not None
            cuda.order_after(arr, self._stream)
            t = _Tensor(None, arr)
        else:
            host = value if isinstance(value, np.ndarray) else None
            if host is None:  # not given: ours, pinned
                host = cuda.pinned_empty(shape, spec.dtype)
            else:
                if host.shape != shape or host.dtype != spec.dtype:
                    raise InputSpecError(
                        f"{role} {spec.name!r}: the array bound is {host.dtype} {host.shape}, TensorRT "
                        f"{'reads' if is_input else 'computes'} {spec.dtype} {shape} for these input shapes",
                        tensor=spec.name,
                    )
                if not host.flags.c_contiguous or (not is_input and not host.flags.writeable):
                    raise InputSpecError(
                        f"{role} {spec.name!r}: the array bound must be C-contiguous"
                        f"{'' if is_input else ' and writable'}; pass np.ascontiguousarray(x)",
                        tensor=spec.name,
                    )
                if not cuda.is_pinned(host):  # the caller's array, used in place: page-lock it if CUDA can
                    if cuda.register(host):
                        self._registered.append(host)
                    elif host.nbytes:
                        log.warning(
                            "tensorrt: %s %r stays pageable (a page it lies on is already locked, e.g. by a "
                            "neighbouring array): its copies are synchronous; bind a pinned array to avoid it",
                            role,
                            spec.name,
                        )
            nbytes = int(np.prod(shape, dtype=np.int64)) * spec.dtype.itemsize
            t = _Tensor(host, cuda.DeviceBuffer(nbytes))
        self._tensors.append(t)
        return t

    def _enqueue(self) -> None:
        stream = self._stream
        assert stream is not None
        for dst, src in self._h2d:
            cuda.memcpy_htod_async(dst, src, stream)
        if not self._context.execute_async_v3(int(stream)):
            raise BackendRuntimeError(
                f"tensorrt: execute_async_v3 failed on {self._backend.path.name}: "
                f"{self._backend._logger.take() or 'no message'}"
            )
        for dst_host, src_ptr in self._d2h:
            cuda.memcpy_dtoh_async(dst_host, src_ptr, stream)

    def _run_locked(self) -> None:
        stream = self._stream
        if self._context is None or stream is None:
            raise EngineClosedError("tensorrt: this binding is closed (or its engine is)")
        with cuda.device_scope(self._index):
            for arr in self._device_arrays:  # the producer may have written since the last run
                cuda.order_after(arr, stream, self._event)
            if self._graph is not None:
                self._graph.launch(stream)
            else:
                self._enqueue()
            stream.synchronize()

    def run(self) -> None:
        with self._lock:
            self._run_locked()

    def run_feeds(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        """Copy ``feeds`` in, run, and return copies of ``outputs`` (what ``TensorRTBackend.run`` does)."""
        with self._lock:
            if self._context is None:
                raise EngineClosedError("tensorrt: this binding is closed (or its engine is)")
            for name, array in feeds.items():
                np.copyto(self.inputs[name], array, casting="no")
            self._run_locked()
            return {name: np.array(self.outputs[name], copy=True) for name in outputs}

    def close(self) -> None:
        """Wait for a run in flight, then release the context, stream and buffers; idempotent."""
        with self._lock:
            self._release()

    def _release(self) -> None:
        stream, self._stream = self._stream, None
        if stream is None and self._context is None:
            return
        first: BaseException | None = None
        try:
            with cuda.device_scope(self._index):
                if stream is not None:
                    stream.synchronize()  # no copy or kernel may still touch what is freed below
        except Exception as e:
            first = e
        graph, self._graph = self._graph, None
        if graph is not None:
            graph.destroy()
        self._context = None  # the context goes before the engine (TensorRTBackend.close)
        for t in self._tensors:
            if isinstance(t.device, cuda.DeviceBuffer):
                t.device.free()
        self._tensors.clear()
        for host in self._registered:
            cuda.unregister(host)
        self._registered.clear()
        self._h2d.clear()
        self._d2h.clear()
        self._device_arrays.clear()
        if self._event is not None:
            self._event.destroy()
            self._event = None
        if stream is not None:
            stream.destroy()
        # Drop our references; a BoundIO keeps its own view of the arrays for as long as it lives.
        self.inputs, self.outputs = {}, {}
        if first is not None:
            raise first

    def __del__(self) -> None:
        try:
            if self._stream is not None and not self._lock.locked():
                self.close()  # e.g. registered host memory of a binding dropped without close()
        except Exception:
            pass


def _user_object(value: Any) -> Any:
    """What the caller bound: the producer's object behind a parsed device array."""
    if isinstance(value, cuda.DeviceArray):
        return value.owner[0] if value.dlpack else value.owner
    return value
