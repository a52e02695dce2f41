"""A strict fake of ``cuda.bindings.runtime`` (cuda-python) that runs on host memory.

Same names, parameter names and return convention as the real module (every call returns a tuple
``(cudaError_t, *results)``; checked against ``surface/cuda-bindings-*.json``). Device memory is
numpy buffers keyed by fake pointers in a range no host address uses; pinned host memory is real
host memory (numpy) that the fake remembers. Work queued on a stream runs only when the stream (or
an event on it) is synchronized, in queue order, so reading a copy's destination before
synchronizing sees stale data, as on a GPU. Streams created here are non-blocking (they never wait
for the legacy default stream); handles 0 and 1 (``cudaStreamLegacy``) name the legacy default
stream and 2 (``cudaStreamPerThread``) the calling thread's default stream, as in CUDA. The current
device is per host thread (``cudaSetDevice``), and memory and streams belong to the device that was
current when they were made. Pageable copies behave as CUDA documents: an H2D copy
from pageable memory reads the source at call time; a D2H copy into pageable memory completes
before returning. A bad device pointer sets a sticky ``cudaErrorIllegalAddress``.
"""

from __future__ import annotations

import ctypes
import enum
import functools
import inspect
import itertools
import threading
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

DEVICE_BASE = 0x7F00_0000_0000  # fake device addresses: far from anything malloc returns here


class cudaError_t(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorMemoryAllocation = 2
    cudaErrorInsufficientDriver = 35
    cudaErrorNoDevice = 100
    cudaErrorInvalidDevice = 101
    cudaErrorInvalidResourceHandle = 400
    cudaErrorNotReady = 600
    cudaErrorIllegalAddress = 700
    cudaErrorHostMemoryAlreadyRegistered = 712
    cudaErrorHostMemoryNotRegistered = 713
    cudaErrorStreamCaptureUnsupported = 900
    cudaErrorStreamCaptureInvalidated = 901
    cudaErrorStreamCaptureWrongThread = 908


_MESSAGES = {
    cudaError_t.cudaSuccess: b"no error",
    cudaError_t.cudaErrorInvalidValue: b"invalid argument",
    cudaError_t.cudaErrorMemoryAllocation: b"out of memory",
    cudaError_t.cudaErrorInsufficientDriver: b"CUDA driver version is insufficient for CUDA runtime version",
    cudaError_t.cudaErrorNoDevice: b"no CUDA-capable device is detected",
    cudaError_t.cudaErrorInvalidDevice: b"invalid device ordinal",
    cudaError_t.cudaErrorInvalidResourceHandle: b"invalid resource handle",
    cudaError_t.cudaErrorNotReady: b"device not ready",
    cudaError_t.cudaErrorIllegalAddress: b"an illegal memory access was encountered",
    cudaError_t.cudaErrorHostMemoryAlreadyRegistered: b"part or all of the requested memory range is already mapped",
    cudaError_t.cudaErrorHostMemoryNotRegistered: b"pointer does not correspond to a registered memory region",
    cudaError_t.cudaErrorStreamCaptureUnsupported: b"operation not permitted when stream is capturing",
    cudaError_t.cudaErrorStreamCaptureInvalidated: b"operation failed due to a previous error during capture",
    cudaError_t.cudaErrorStreamCaptureWrongThread: b"operation not permitted on an event last recorded in a capturing stream",
}


class cudaMemcpyKind(enum.IntEnum):
    cudaMemcpyHostToHost = 0
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2
    cudaMemcpyDeviceToDevice = 3
    cudaMemcpyDefault = 4


class cudaMemoryType(enum.IntEnum):
    cudaMemoryTypeUnregistered = 0
    cudaMemoryTypeHost = 1
    cudaMemoryTypeDevice = 2
    cudaMemoryTypeManaged = 3


class cudaStreamCaptureMode(enum.IntEnum):
    cudaStreamCaptureModeGlobal = 0
    cudaStreamCaptureModeThreadLocal = 1
    cudaStreamCaptureModeRelaxed = 2


cudaStreamNonBlocking = 1
cudaEventDefault = 0
cudaEventDisableTiming = 2
cudaHostAllocDefault = 0
cudaHostRegisterDefault = 0
PAGE = 4096


class _Handle:
    __slots__ = ("_ptr",)

    def __init__(self, ptr: int = 0) -> None:
        self._ptr = int(ptr)

    def getPtr(self) -> int:
        return self._ptr

    def __int__(self) -> int:
        return self._ptr

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._ptr:#x}>"


class cudaStream_t(_Handle):
    __slots__ = ()


class cudaEvent_t(_Handle):
    __slots__ = ()


class cudaGraph_t(_Handle):
    __slots__ = ()


class cudaGraphExec_t(_Handle):
    __slots__ = ()


class cudaDeviceProp:
    __slots__ = ("major", "minor", "multiProcessorCount", "name", "totalGlobalMem")

    def __init__(self) -> None:
        self.name = b""
        self.major = 0
        self.minor = 0
        self.totalGlobalMem = 0
        self.multiProcessorCount = 0


class cudaPointerAttributes:
    __slots__ = ("device", "devicePointer", "hostPointer", "type")

    def __init__(self) -> None:
        self.type = cudaMemoryType.cudaMemoryTypeUnregistered
        self.device = -2
        self.devicePointer = 0
        self.hostPointer = 0


@dataclass
class FakeGPU:
    name: str = "NVIDIA Fake H100 80GB HBM3"
    major: int = 9
    minor: int = 0
    memory: int = 80 * 2**30


@dataclass
class _Stream:
    queue: list[Callable[[], None]] = field(default_factory=list)
    capture: list[Callable[[], None]] | None = None
    destroyed: bool = False
    device: int = 0


@dataclass
class State:
    """Everything the fake GPU knows. Tests read the counters and set ``driver``/``gpus``."""

    driver: int = 12080  # cudaDriverGetVersion; 0 means no driver
    gpus: list[FakeGPU] = field(default_factory=lambda: [FakeGPU()])
    current_by_thread: dict[int, int] = field(default_factory=dict)  # cudaSetDevice is per host thread
    device: dict[int, np.ndarray] = field(default_factory=dict)  # ptr -> uint8 buffer
    device_of: dict[int, int] = field(default_factory=dict)  # ptr -> the GPU it was allocated on
    pinned: dict[int, np.ndarray] = field(default_factory=dict)  # ptr -> uint8 host buffer
    registered: dict[int, int] = field(default_factory=dict)  # cudaHostRegister: ptr -> size
    streams: dict[int, _Stream] = field(default_factory=dict)
    events: dict[int, float | None] = field(default_factory=dict)  # ptr -> time once complete
    graphs: dict[int, list[Callable[[], None]]] = field(default_factory=dict)
    execs: dict[int, list[Callable[[], None]]] = field(default_factory=dict)
    sticky: cudaError_t | None = None
    clock: float = 0.0
    counters: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            (
                "h2d_pinned",
                "h2d_pageable",
                "d2h_pinned",
                "d2h_pageable",
                "graph_launches",
                "mallocs",
                "frees",
            ),
            0,
        )
    )

    @property
    def current(self) -> int:
        """The calling thread's current device (0 until it calls cudaSetDevice)."""
        return self.current_by_thread.get(threading.get_ident(), 0)

    def device_of_pointer(self, ptr: int) -> int | None:
        for base, buf in self.device.items():
            if base <= ptr < base + buf.size:
                return self.device_of.get(base, 0)
        return None

    def find_device(self, ptr: int, count: int) -> np.ndarray | None:
        for base, buf in self.device.items():
            if base <= ptr and ptr + count <= base + buf.size:
                return buf[ptr - base : ptr - base + count]
        return None

    def is_pinned(self, ptr: int, count: int) -> bool:
        if any(base <= ptr and ptr + count <= base + buf.size for base, buf in self.pinned.items()):
            return True
        return any(base <= ptr and ptr + count <= base + size for base, size in self.registered.items())


STATE = State()
_ids = itertools.count(1)
_next_device = [DEVICE_BASE]
# "Pinned" host memory is numpy memory owned by STATE.pinned, while numpy arrays made from it
# (infercore's pinned_empty) only point at it. A reset must not free it under such an array that
# outlives its test (a binding, an engine awaiting collection): the test process would then read
# and write freed memory. Real pinned memory lives until cudaFreeHost, so keep it until then.
_retired_pinned: list[dict[int, np.ndarray]] = []


def reset(**kwargs: Any) -> State:
    """A fresh fake GPU (and process state); ``kwargs`` set ``State`` fields (driver=0, gpus=[])."""
    global STATE
    _retired_pinned.append(STATE.pinned)
    STATE = State(**kwargs)
    return STATE


def _ok(*values: Any) -> tuple[Any, ...]:
    return (cudaError_t.cudaSuccess, *values)


def _gate(n: int = 1) -> tuple[Any, ...] | None:
    """The no-driver / no-device / sticky-error answer every call gives, or None to go on."""
    if STATE.driver == 0:
        return (cudaError_t.cudaErrorInsufficientDriver, *([None] * n))
    if not STATE.gpus:
        return (cudaError_t.cudaErrorNoDevice, *([None] * n))
    if STATE.sticky is not None:
        return (STATE.sticky, *([None] * n))
    return None


def _host_view(ptr: int, count: int) -> np.ndarray:
    return np.ctypeslib.as_array((ctypes.c_uint8 * count).from_address(ptr))


def _stream(handle: Any) -> _Stream | None:
    key = int(handle)
    if key in (0, 1):  # the legacy default stream (0, or cudaStreamLegacy)
        return STATE.streams.setdefault(0, _Stream())
    if key == 2:  # cudaStreamPerThread: the calling thread's default stream
        return STATE.streams.setdefault(-threading.get_ident(), _Stream(device=STATE.current))
    s = STATE.streams.get(key)
    return None if s is None or s.destroyed else s


def _enqueue(s: _Stream, op: Callable[[], None]) -> None:
    if s.capture is not None:
        s.capture.append(op)
    else:
        s.queue.append(op)


def _flush(s: _Stream) -> None:
    while s.queue:
        s.queue.pop(0)()


def enqueue_work(stream_handle: int, op: Callable[[], None]) -> bool:
    """Queue ``op`` on a stream (used by the fake TensorRT's ``execute_async_v3``)."""
    s = _stream(stream_handle)
    if s is None:
        return False
    _enqueue(s, op)
    return True


def stream_device(stream_handle: int) -> int | None:
    """The device a stream belongs to (None: no such stream); for the fake TensorRT."""
    s = _stream(stream_handle)
    return None if s is None else s.device


def illegal_address() -> None:
    STATE.sticky = cudaError_t.cudaErrorIllegalAddress


# -- the API ------------------------------------------------------------------------------------
def cudaGetErrorString(error: cudaError_t) -> tuple[Any, ...]:
    return _ok(_MESSAGES.get(cudaError_t(error), b"unknown error"))


def cudaDriverGetVersion() -> tuple[Any, ...]:
    return _ok(STATE.driver)


def cudaRuntimeGetVersion() -> tuple[Any, ...]:
    return _ok(12080)


def cudaGetDeviceCount() -> tuple[Any, ...]:
    if STATE.driver == 0:
        return (cudaError_t.cudaErrorInsufficientDriver, None)
    if not STATE.gpus:
        return (cudaError_t.cudaErrorNoDevice, 0)
    return _ok(len(STATE.gpus))


def cudaGetDeviceProperties(device: int) -> tuple[Any, ...]:
    gate = _gate()
    if gate:
        return gate
    if not 0 <= device < len(STATE.gpus):
        return (cudaError_t.cudaErrorInvalidDevice, None)
    g = STATE.gpus[device]
    prop = cudaDeviceProp()
    prop.name, prop.major, prop.minor, prop.totalGlobalMem = g.name.encode(), g.major, g.minor, g.memory
    return _ok(prop)


def cudaSetDevice(device: int) -> tuple[Any, ...]:
    gate = _gate(0)
    if gate:
        return gate
    if not 0 <= device < len(STATE.gpus):
        return (cudaError_t.cudaErrorInvalidDevice,)
    STATE.current_by_thread[threading.get_ident()] = int(device)
    return _ok()


def cudaGetDevice() -> tuple[Any, ...]:
    if STATE.driver == 0:
        return (cudaError_t.cudaErrorInsufficientDriver, None)
    if not STATE.gpus:
        return (cudaError_t.cudaErrorNoDevice, None)
    return _ok(STATE.current)


def cudaDeviceSynchronize() -> tuple[Any, ...]:
    gate = _gate(0)
    if gate:
        return gate
    for s in list(STATE.streams.values()):
        _flush(s)
    return (STATE.sticky,) if STATE.sticky else _ok()


def cudaMalloc(size: int) -> tuple[Any, ...]:
    gate = _gate()
    if gate:
        return gate
    if size <= 0:
        return (cudaError_t.cudaErrorInvalidValue, None)
    ptr = _next_device[0]
    _next_device[0] += (int(size) + 511) // 256 * 256
    STATE.device[ptr] = np.full(int(size), 0xCD, np.uint8)  # garbage, like fresh device memory
    STATE.device_of[ptr] = STATE.current
    STATE.counters["mallocs"] += 1
    return _ok(ptr)


def cudaFree(devPtr: int) -> tuple[Any, ...]:
    gate = _gate(0)
    if gate:
        return gate
    if int(devPtr) == 0:
        return _ok()
    if STATE.device.pop(int(devPtr), None) is None:
        return (cudaError_t.cudaErrorInvalidValue,)
    STATE.device_of.pop(int(devPtr), None)
    STATE.counters["frees"] += 1
    return _ok()


def cudaMallocHost(size: int) -> tuple[Any, ...]:
    gate = _gate()
    if gate:
        return gate
    buf = np.zeros(int(size) + 64, np.uint8)
    ptr = buf.ctypes.data
    STATE.pinned[ptr] = buf
    return _ok(ptr)


def cudaFreeHost(ptr: int) -> tuple[Any, ...]:
    if STATE.pinned.pop(int(ptr), None) is None:
        for retired in _retired_pinned:  # allocated before a reset: free it now, still an error
            retired.pop(int(ptr), None)
        return (cudaError_t.cudaErrorInvalidValue,)
    return _ok()


def _pages(ptr: int, size: int) -> range:
    return range(ptr // PAGE, (ptr + max(size, 1) - 1) // PAGE + 1)


def cudaHostRegister(ptr: int, size: int, flags: int) -> tuple[Any, ...]:
    """Page-lock existing host memory; CUDA locks whole pages, so a page locked twice is an error."""
    gate = _gate(0)
    if gate:
        return gate
    p, n = int(ptr), int(size)
    if n <= 0 or p == 0:
        return (cudaError_t.cudaErrorInvalidValue,)
    taken = {pg for base, sz in STATE.registered.items() for pg in _pages(base, sz)}
    taken |= {pg for base, buf in STATE.pinned.items() for pg in _pages(base, buf.size)}
    if taken.intersection(_pages(p, n)):
        return (cudaError_t.cudaErrorHostMemoryAlreadyRegistered,)
    STATE.registered[p] = n
    return _ok()


def cudaHostUnregister(ptr: int) -> tuple[Any, ...]:
    if STATE.registered.pop(int(ptr), None) is None:
        return (cudaError_t.cudaErrorHostMemoryNotRegistered,)
    return _ok()


def cudaPointerGetAttributes(ptr: int) -> tuple[Any, ...]:
    gate = _gate()
    if gate:
        return gate
    attrs = cudaPointerAttributes()
    p = int(ptr)
    on = STATE.device_of_pointer(p)
    if on is not None:
        attrs.type, attrs.device, attrs.devicePointer = cudaMemoryType.cudaMemoryTypeDevice, on, p
    elif STATE.is_pinned(p, 1):  # cudaMallocHost or cudaHostRegister
        attrs.type, attrs.device, attrs.hostPointer = cudaMemoryType.cudaMemoryTypeHost, STATE.current, p
    return _ok(attrs)


def cudaStreamCreateWithFlags(flags: int) -> tuple[Any, ...]:
    gate = _gate()
    if gate:
        return gate
    handle = 0x5000 + next(_ids)
    STATE.streams[handle] = _Stream(device=STATE.current)
    return _ok(cudaStream_t(handle))


def cudaStreamDestroy(stream: Any) -> tuple[Any, ...]:
    s = _stream(stream)
    if s is None:
        return (cudaError_t.cudaErrorInvalidResourceHandle,)
    _flush(s)  # pending work completes; the handle is gone
    s.destroyed = True
    return _ok()


def cudaStreamSynchronize(stream: Any) -> tuple[Any, ...]:
    gate = _gate(0)
    if gate:
        return gate
    s = _stream(stream)
    if s is None:
        return (cudaError_t.cudaErrorInvalidResourceHandle,)
    if s.capture is not None:
        return (cudaError_t.cudaErrorStreamCaptureUnsupported,)
    _flush(s)
    return (STATE.sticky,) if STATE.sticky else _ok()


def cudaStreamWaitEvent(stream: Any, event: Any, flags: int) -> tuple[Any, ...]:
    s = _stream(stream)
    if s is None or int(event) not in STATE.events:
        return (cudaError_t.cudaErrorInvalidResourceHandle,)

    def wait() -> None:  # everything recorded before the event is done before we go on
        for other in list(STATE.streams.values()):
            if other is not s:
                _flush(other)

    _enqueue(s, wait)
    return _ok()


def cudaEventCreateWithFlags(flags: int) -> tuple[Any, ...]:
    gate = _gate()
    if gate:
        return gate
    handle = 0x9000 + next(_ids)
    STATE.events[handle] = None
    return _ok(cudaEvent_t(handle))


def cudaEventDestroy(event: Any) -> tuple[Any, ...]:
    if STATE.events.pop(int(event), "gone") == "gone":
        return (cudaError_t.cudaErrorInvalidResourceHandle,)
    return _ok()


def cudaEventRecord(event: Any, stream: Any) -> tuple[Any, ...]:
    key = int(event)
    s = _stream(stream)
    if key not in STATE.events or s is None:
        return (cudaError_t.cudaErrorInvalidResourceHandle,)
    STATE.events[key] = None

    def mark() -> None:
        STATE.clock += 0.001
        STATE.events[key] = STATE.clock

    _enqueue(s, mark)
    return _ok()


def cudaEventSynchronize(event: Any) -> tuple[Any, ...]:
    if int(event) not in STATE.events:
        return (cudaError_t.cudaErrorInvalidResourceHandle,)
    for s in list(STATE.streams.values()):
        _flush(s)
    return _ok()


def cudaEventElapsedTime(start: Any, end: Any) -> tuple[Any, ...]:
    a, b = STATE.events.get(int(start)), STATE.events.get(int(end))
    if a is None or b is None:
        return (cudaError_t.cudaErrorNotReady, None)
    return _ok(float(b - a))


def cudaMemcpy(dst: int, src: int, count: int, kind: cudaMemcpyKind) -> tuple[Any, ...]:
    gate = _gate(0)
    if gate:
        return gate
    for s in list(STATE.streams.values()):
        _flush(s)
    return _copy(int(dst), int(src), int(count), cudaMemcpyKind(kind), None)


def cudaMemcpyAsync(dst: int, src: int, count: int, kind: cudaMemcpyKind, stream: Any) -> tuple[Any, ...]:
    gate = _gate(0)
    if gate:
        return gate
    s = _stream(stream)
    if s is None:
        return (cudaError_t.cudaErrorInvalidResourceHandle,)
    return _copy(int(dst), int(src), int(count), cudaMemcpyKind(kind), s)


def _copy(dst: int, src: int, count: int, kind: cudaMemcpyKind, s: _Stream | None) -> tuple[Any, ...]:
    if kind == cudaMemcpyKind.cudaMemcpyHostToDevice:
        target = STATE.find_device(dst, count)
        if target is None:
            return (cudaError_t.cudaErrorInvalidValue,)
        if STATE.is_pinned(src, count) and s is not None:
            STATE.counters["h2d_pinned"] += 1

            def h2d() -> None:
                t = STATE.find_device(dst, count)
                if t is None:
                    illegal_address()
                else:
                    t[...] = _host_view(src, count)

            _enqueue(s, h2d)
        else:
            if s is not None and s.capture is not None:  # pageable copies are synchronous: not capturable
                return (cudaError_t.cudaErrorStreamCaptureUnsupported,)
            STATE.counters["h2d_pageable"] += 1
            snapshot = _host_view(src, count).copy()  # pageable: staged at call time

            def h2d_staged() -> None:
                t = STATE.find_device(dst, count)
                if t is None:
                    illegal_address()
                else:
                    t[...] = snapshot

            if s is None:
                h2d_staged()
            else:
                _enqueue(s, h2d_staged)
        return _ok()
    if kind == cudaMemcpyKind.cudaMemcpyDeviceToHost:
        if STATE.find_device(src, count) is None:
            return (cudaError_t.cudaErrorInvalidValue,)

        def d2h() -> None:
            source = STATE.find_device(src, count)
            if source is None:
                illegal_address()
            else:
                _host_view(dst, count)[...] = source

        if STATE.is_pinned(dst, count) and s is not None:
            STATE.counters["d2h_pinned"] += 1
            _enqueue(s, d2h)
        else:
            STATE.counters["d2h_pageable"] += 1
            if s is not None:
                if s.capture is not None:
                    return (cudaError_t.cudaErrorStreamCaptureUnsupported,)
                _flush(s)  # pageable destination: the copy completes before the call returns
            d2h()
        return _ok()
    if kind == cudaMemcpyKind.cudaMemcpyDeviceToDevice:
        if STATE.find_device(src, count) is None or STATE.find_device(dst, count) is None:
            return (cudaError_t.cudaErrorInvalidValue,)

        def d2d() -> None:
            a, b = STATE.find_device(src, count), STATE.find_device(dst, count)
            if a is None or b is None:
                illegal_address()
            else:
                b[...] = a

        if s is None:
            d2d()
        else:
            _enqueue(s, d2d)
        return _ok()
    return (cudaError_t.cudaErrorInvalidValue,)


def cudaStreamBeginCapture(stream: Any, mode: cudaStreamCaptureMode) -> tuple[Any, ...]:
    s = _stream(stream)
    if s is None or int(stream) in (0, 1):  # the legacy default stream cannot be captured
        return (cudaError_t.cudaErrorStreamCaptureUnsupported,)
    if s.capture is not None:
        return (cudaError_t.cudaErrorInvalidValue,)
    _flush(s)
    s.capture = []
    return _ok()


def cudaStreamEndCapture(stream: Any) -> tuple[Any, ...]:
    s = _stream(stream)
    if s is None or s.capture is None:
        return (cudaError_t.cudaErrorInvalidValue, None)
    ops, s.capture = s.capture, None
    handle = 0xA000 + next(_ids)
    STATE.graphs[handle] = ops
    return _ok(cudaGraph_t(handle))


def cudaGraphInstantiate(graph: Any, flags: int) -> tuple[Any, ...]:
    ops = STATE.graphs.get(int(graph))
    if ops is None:
        return (cudaError_t.cudaErrorInvalidValue, None)
    handle = 0xB000 + next(_ids)
    STATE.execs[handle] = list(ops)
    return _ok(cudaGraphExec_t(handle))


def cudaGraphLaunch(graphExec: Any, stream: Any) -> tuple[Any, ...]:
    gate = _gate(0)
    if gate:
        return gate
    ops = STATE.execs.get(int(graphExec))
    s = _stream(stream)
    if ops is None or s is None:
        return (cudaError_t.cudaErrorInvalidResourceHandle,)
    STATE.counters["graph_launches"] += 1
    for op in ops:
        _enqueue(s, op)
    return _ok()


def cudaGraphExecDestroy(graphExec: Any) -> tuple[Any, ...]:
    return (
        _ok() if STATE.execs.pop(int(graphExec), None) is not None else (cudaError_t.cudaErrorInvalidValue,)
    )


def cudaGraphDestroy(graph: Any) -> tuple[Any, ...]:
    return _ok() if STATE.graphs.pop(int(graph), None) is not None else (cudaError_t.cudaErrorInvalidValue,)


_LOCK = threading.RLock()  # the real runtime is thread-safe; so is the fake, one call at a time


def _locked(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        with _LOCK:
            return fn(*args, **kwargs)

    return call


for _name, _fn in list(globals().items()):
    if (_name.startswith("cuda") or _name == "enqueue_work") and inspect.isfunction(_fn):
        globals()[_name] = _locked(_fn)
_EXPORTS = [name for name in list(globals()) if name.startswith("cuda")]


def make_module() -> types.ModuleType:
    """A module object holding exactly the fake API (what ``sys.modules`` gets)."""
    mod = types.ModuleType("cuda.bindings.runtime", "fake cuda.bindings.runtime (tests/trt/fake_cuda.py)")
    for name in _EXPORTS:
        setattr(mod, name, globals()[name])
    return mod
