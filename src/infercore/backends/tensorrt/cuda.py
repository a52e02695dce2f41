"""The CUDA part of the buffer layer, through cuda-python (``cuda.bindings.runtime``).

Device memory, streams, events and CUDA graphs, plus host staging in pinned (page-locked) memory
exposed as plain numpy arrays: a write into such an array lands where ``cudaMemcpyAsync`` reads,
so moving it to the device is one asynchronous copy with no pageable bounce buffer. Device arrays
from cupy, torch, pycuda or anything else that speaks ``__cuda_array_interface__`` or DLPack are
taken by pointer, without a copy.

cuda-python ≥ 12.3 is imported as ``cuda.bindings.runtime``; older releases as ``cuda.cudart``.
Every call returns a tuple ``(cudaError_t, *results)``; ``_check`` turns a failure into
``CudaError`` (a ``BackendRuntimeError``) carrying CUDA's own message.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from ...errors import BackendRuntimeError, BackendUnavailableError, CudaError, InputSpecError

__all__ = [
    "CudaError",
    "DeviceArray",
    "DeviceBuffer",
    "DeviceInfo",
    "Event",
    "GraphExec",
    "Stream",
    "as_device_array",
    "capture_graph",
    "device_info",
    "device_scope",
    "is_pinned",
    "memcpy_dtoh_async",
    "memcpy_htod_async",
    "order_after",
    "pinned_empty",
    "register",
    "runtime",
    "unregister",
]

EXTRA = "tensorrt"
LEGACY_STREAM = 1  # cudaStreamLegacy: the legacy default stream, as a handle any call takes

_lock = threading.Lock()
_rt: ModuleType | None = None


def runtime() -> ModuleType:
    """The CUDA runtime bindings module, imported once."""
    global _rt
    if _rt is None:
        with _lock:
            if _rt is None:
                _rt = _import_runtime()
    return _rt


def _import_runtime() -> ModuleType:
    try:
        return importlib.import_module("cuda.bindings.runtime")
    except ImportError as first:
        try:
            return importlib.import_module("cuda.cudart")
        except ImportError:
            raise BackendUnavailableError(
                f"cuda-python is not installed (import 'cuda.bindings.runtime' failed: {first}): "
                f'pip install "infercore[{EXTRA}]"'
            ) from first


def _reset_runtime() -> None:
    """Forget the imported module (tests swap fakes in and out)."""
    global _rt
    _rt = None


def _error_name(rt: ModuleType, err: Any) -> str:
    return str(getattr(err, "name", err))


def _check(rt: ModuleType, result: Any, what: str) -> Any:
    """Unpack ``(err, *values)``: raise ``CudaError`` on failure, else return the value(s)."""
    err = result[0]
    if err != rt.cudaError_t.cudaSuccess:
        msg = rt.cudaGetErrorString(err)[1]
        text = msg.decode() if isinstance(msg, bytes) else str(msg)
        raise CudaError(f"CUDA {what} failed: {_error_name(rt, err)}: {text}", code=_error_name(rt, err))
    if len(result) == 1:
        return None
    return result[1] if len(result) == 2 else result[1:]


# -- devices ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class DeviceInfo:
    """One GPU as the runtime sees it; ``compute_capability`` is ``(major, minor)``."""

    index: int
    name: str
    compute_capability: tuple[int, int]
    total_memory: int
    driver_version: int
    runtime_version: int

    @property
    def sm(self) -> str:
        return f"sm_{self.compute_capability[0]}{self.compute_capability[1]}"


def device_info(index: int = 0) -> DeviceInfo:
    """Describe GPU ``index``, or raise ``BackendUnavailableError`` saying what is missing:
    the cuda-python package, the NVIDIA driver, any GPU, or this GPU."""
    rt = runtime()
    err, driver = rt.cudaDriverGetVersion()
    no_driver = rt.cudaError_t.cudaErrorInsufficientDriver
    if err == no_driver or (err == rt.cudaError_t.cudaSuccess and driver == 0):
        raise BackendUnavailableError(
            "no NVIDIA driver found (libcuda could not be loaded): TensorRT needs an NVIDIA GPU with its "
            "driver installed (nvidia-smi should list the GPU)"
        )
    err, count = rt.cudaGetDeviceCount()
    if err == no_driver:
        raise BackendUnavailableError(
            f"the NVIDIA driver ({_version(driver)}) is older than this CUDA runtime needs: update the driver"
        )
    if err == rt.cudaError_t.cudaErrorNoDevice or (err == rt.cudaError_t.cudaSuccess and count == 0):
        raise BackendUnavailableError(
            f"the NVIDIA driver ({_version(driver)}) is installed but no CUDA GPU is visible "
            "(check nvidia-smi and CUDA_VISIBLE_DEVICES)"
        )
    _check(rt, (err, count), "cudaGetDeviceCount")
    if not 0 <= index < count:
        raise BackendUnavailableError(
            f"cuda:{index} asked for, but this machine has {count} CUDA GPU(s): cuda:0 .. cuda:{count - 1}"
        )
    prop = _check(rt, rt.cudaGetDeviceProperties(index), "cudaGetDeviceProperties")
    name = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
    rt_version = _check(rt, rt.cudaRuntimeGetVersion(), "cudaRuntimeGetVersion")
    return DeviceInfo(
        index,
        name.rstrip("\x00").strip(),
        (int(prop.major), int(prop.minor)),
        int(prop.totalGlobalMem),
        int(driver),
        int(rt_version),
    )


def _version(v: int) -> str:
    return f"CUDA {v // 1000}.{(v % 1000) // 10}"


def set_device(index: int) -> None:
    """Make GPU ``index`` current for the calling host thread (CUDA keeps one per thread)."""
    rt = runtime()
    _check(rt, rt.cudaSetDevice(index), "cudaSetDevice")


@contextlib.contextmanager
def device_scope(index: int) -> Iterator[None]:
    """Make GPU ``index`` current on this thread for the block, then restore the thread's previous one.

    CUDA's current device is per host thread: a thread that never called ``cudaSetDevice`` works
    on GPU 0, whatever another thread chose.
    """
    rt = runtime()
    err, prev = rt.cudaGetDevice()
    known = err == rt.cudaError_t.cudaSuccess
    switch = not known or int(prev) != index
    if switch:
        set_device(index)
    try:
        yield
    finally:
        if switch and known:
            rt.cudaSetDevice(int(prev))


# -- memory ----------------------------------------------------------------------------------
class DeviceBuffer:
    """``nbytes`` of device memory from ``cudaMalloc``; freed by ``free()`` or when collected."""

    __slots__ = ("__weakref__", "_rt", "nbytes", "ptr")

    def __init__(self, nbytes: int) -> None:
        rt = runtime()
        self._rt: ModuleType | None = rt
        self.nbytes = int(nbytes)
        self.ptr: int = int(_check(rt, rt.cudaMalloc(max(self.nbytes, 1)), f"cudaMalloc({self.nbytes})"))

    def free(self) -> None:
        rt, self._rt = self._rt, None
        if rt is not None and self.ptr:
            rt.cudaFree(self.ptr)
        self.ptr = 0

    def __del__(self) -> None:
        try:
            self.free()
        except Exception:
            pass


class _PinnedBlock:
    """Owns page-locked host memory; numpy arrays made from it keep it alive through ``.base``."""

    def __init__(self, nbytes: int) -> None:
        rt = runtime()
        self._rt: ModuleType | None = rt
        self.nbytes = max(int(nbytes), 1)
        self.ptr = int(_check(rt, rt.cudaMallocHost(self.nbytes), f"cudaMallocHost({self.nbytes})"))
        self.__array_interface__ = {
            "data": (self.ptr, False),
            "shape": (self.nbytes,),
            "typestr": "|u1",
            "version": 3,
        }

    def __del__(self) -> None:
        rt, self._rt = self._rt, None
        if rt is not None:
            try:
                rt.cudaFreeHost(self.ptr)
            except Exception:
                pass


def pinned_empty(shape: Sequence[int], dtype: np.dtype | type) -> np.ndarray:
    """An uninitialised C-contiguous numpy array in page-locked host memory.

    The memory is freed when the last array viewing it is collected, never while one is alive.
    """
    dtype = np.dtype(dtype)
    shape = tuple(int(d) for d in shape)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.asarray(_PinnedBlock(nbytes))
    return raw[:nbytes].view(dtype).reshape(shape)


def is_pinned(array: np.ndarray) -> bool:
    """Whether ``array``'s memory is page-locked host memory CUDA knows (so async copies stay async)."""
    rt = runtime()
    err, attrs = rt.cudaPointerGetAttributes(array.ctypes.data)
    if err != rt.cudaError_t.cudaSuccess:
        return False
    return bool(attrs.type == rt.cudaMemoryType.cudaMemoryTypeHost)


def register(array: np.ndarray) -> bool:
    """Page-lock ``array``'s memory in place (``cudaHostRegister``), so async copies read it directly.

    Returns False, leaving the array pageable, where CUDA refuses: CUDA locks whole pages and a page
    can be locked once, so a small array sharing a page with another locked buffer stays pageable.
    Call ``unregister`` before the array is freed.
    """
    rt = runtime()
    if array.nbytes == 0:
        return False
    err = rt.cudaHostRegister(array.ctypes.data, array.nbytes, rt.cudaHostRegisterDefault)[0]
    return bool(err == rt.cudaError_t.cudaSuccess)


def unregister(array: np.ndarray) -> None:
    rt = runtime()
    rt.cudaHostUnregister(array.ctypes.data)


# -- streams, events, copies -------------------------------------------------------------------
class Stream:
    """A non-blocking CUDA stream (it never waits for the legacy default stream by itself).

    ``int(stream)`` is the handle TensorRT takes.
    """

    __slots__ = ("_rt", "handle")

    def __init__(self) -> None:
        rt = runtime()
        self._rt: ModuleType | None = rt
        self.handle: Any = _check(
            rt, rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking), "cudaStreamCreate"
        )

    def __int__(self) -> int:
        return int(self.handle)

    def synchronize(self) -> None:
        rt = self._rt
        if rt is None:
            raise BackendRuntimeError("the CUDA stream is destroyed")
        _check(rt, rt.cudaStreamSynchronize(self.handle), "cudaStreamSynchronize")

    def wait(self, event: Event) -> None:
        rt = self._rt
        assert rt is not None
        _check(rt, rt.cudaStreamWaitEvent(self.handle, event.handle, 0), "cudaStreamWaitEvent")

    def destroy(self) -> None:
        rt, self._rt = self._rt, None
        if rt is not None:
            rt.cudaStreamDestroy(self.handle)

    def __del__(self) -> None:
        try:
            self.destroy()
        except Exception:
            pass


class Event:
    """A CUDA event, with timing unless ``timing=False``."""

    __slots__ = ("_rt", "handle")

    def __init__(self, timing: bool = True) -> None:
        rt = runtime()
        self._rt: ModuleType | None = rt
        flags = rt.cudaEventDefault if timing else rt.cudaEventDisableTiming
        self.handle: Any = _check(rt, rt.cudaEventCreateWithFlags(flags), "cudaEventCreate")

    def record(self, stream: Stream | int) -> None:
        rt = self._rt
        assert rt is not None
        handle = stream.handle if isinstance(stream, Stream) else stream
        _check(rt, rt.cudaEventRecord(self.handle, handle), "cudaEventRecord")

    def synchronize(self) -> None:
        rt = self._rt
        assert rt is not None
        _check(rt, rt.cudaEventSynchronize(self.handle), "cudaEventSynchronize")

    def elapsed_ms(self, since: Event) -> float:
        """Milliseconds from ``since`` to this event (both recorded and complete)."""
        rt = self._rt
        assert rt is not None
        return float(_check(rt, rt.cudaEventElapsedTime(since.handle, self.handle), "cudaEventElapsedTime"))

    def destroy(self) -> None:
        rt, self._rt = self._rt, None
        if rt is not None:
            rt.cudaEventDestroy(self.handle)

    def __del__(self) -> None:
        try:
            self.destroy()
        except Exception:
            pass


def memcpy_htod_async(dst: int, src: np.ndarray, stream: Stream) -> None:
    """Queue a host→device copy of all of ``src`` (async only when ``src`` is pinned)."""
    rt = runtime()
    kind = rt.cudaMemcpyKind.cudaMemcpyHostToDevice
    _check(
        rt, rt.cudaMemcpyAsync(dst, src.ctypes.data, src.nbytes, kind, stream.handle), "cudaMemcpyAsync H2D"
    )


def memcpy_dtoh_async(dst: np.ndarray, src: int, stream: Stream) -> None:
    """Queue a device→host copy filling all of ``dst`` (valid after the stream is synchronized)."""
    rt = runtime()
    kind = rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
    _check(
        rt, rt.cudaMemcpyAsync(dst.ctypes.data, src, dst.nbytes, kind, stream.handle), "cudaMemcpyAsync D2H"
    )


# -- CUDA graphs -------------------------------------------------------------------------------
class GraphExec:
    """An instantiated CUDA graph: ``launch(stream)`` replays everything captured."""

    __slots__ = ("_graph", "_rt", "handle")

    def __init__(self, rt: ModuleType, graph: Any, handle: Any) -> None:
        self._rt: ModuleType | None = rt
        self._graph = graph
        self.handle = handle

    def launch(self, stream: Stream) -> None:
        rt = self._rt
        if rt is None:
            raise BackendRuntimeError("the CUDA graph is destroyed")
        _check(rt, rt.cudaGraphLaunch(self.handle, stream.handle), "cudaGraphLaunch")

    def destroy(self) -> None:
        rt, self._rt = self._rt, None
        if rt is not None:
            rt.cudaGraphExecDestroy(self.handle)
            rt.cudaGraphDestroy(self._graph)

    def __del__(self) -> None:
        try:
            self.destroy()
        except Exception:
            pass


def capture_graph(stream: Stream, work: Callable[[], None]) -> GraphExec:
    """Capture what ``work()`` queues on ``stream`` into a graph and instantiate it."""
    rt = runtime()
    mode = rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
    _check(rt, rt.cudaStreamBeginCapture(stream.handle, mode), "cudaStreamBeginCapture")
    try:
        work()
    except BaseException:
        err, graph = rt.cudaStreamEndCapture(stream.handle)
        if err == rt.cudaError_t.cudaSuccess and graph is not None:
            rt.cudaGraphDestroy(graph)
        raise
    graph = _check(rt, rt.cudaStreamEndCapture(stream.handle), "cudaStreamEndCapture")
    try:
        handle = _check(rt, rt.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
    except CudaError:
        rt.cudaGraphDestroy(graph)
        raise
    return GraphExec(rt, graph, handle)


# -- device arrays from other libraries ----------------------------------------------------------
@dataclass(frozen=True)
class DeviceArray:
    """A device-resident array seen by pointer: ``owner`` keeps the producer's memory alive.

    ``stream`` is the producer's stream a consumer must order itself after before reading
    (``LEGACY_STREAM`` when a CUDA array interface names none, None when it says no
    synchronization is needed); ``dlpack`` says the producer orders a consumer's stream itself
    when asked through ``__dlpack__(stream=...)``.
    """

    ptr: int
    shape: tuple[int, ...]
    dtype: np.dtype
    device: int
    owner: Any
    stream: int | None = None
    dlpack: bool = False

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


_KDL_CUDA, _KDL_CUDA_MANAGED = 2, 13
_DL_CODES = {0: "i", 1: "u", 2: "f", 6: "b"}  # kDLInt, kDLUInt, kDLFloat, kDLBool


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("device", _DLDevice),
        ("ndim", ctypes.c_int32),
        ("dtype", _DLDataType),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("strides", ctypes.POINTER(ctypes.c_int64)),
        ("byte_offset", ctypes.c_uint64),
    ]


def is_device_array(obj: object) -> bool:
    """Whether ``obj`` looks like a GPU array (CUDA array interface or a CUDA DLPack device)."""
    if hasattr(obj, "__cuda_array_interface__"):
        return True
    dev = getattr(obj, "__dlpack_device__", None)
    if dev is None or isinstance(obj, np.ndarray):
        return False
    try:
        return int(dev()[0]) in (_KDL_CUDA, _KDL_CUDA_MANAGED)
    except Exception:
        return False


def as_device_array(obj: Any, name: str = "", stream: Stream | None = None) -> DeviceArray:
    """See a cupy/torch/pycuda/... device array by pointer, without copying it.

    Only C-contiguous arrays are accepted (TensorRT reads linear memory). With ``stream``, that
    stream is ordered after the producer's work queued so far (see ``order_after``, which a
    consumer calls again before every later use).
    """
    cai = getattr(obj, "__cuda_array_interface__", None)
    if cai is not None:
        return _from_cai(obj, cai, name, stream)
    if hasattr(obj, "__dlpack__"):
        return _from_dlpack(obj, name, stream)
    raise InputSpecError(
        f"{name!r}: {type(obj).__name__} is neither a numpy array nor a device array "
        "(__cuda_array_interface__ or __dlpack__)",
        tensor=name or None,
    )


def _contiguity_error(name: str, shape: tuple[int, ...], strides: Any) -> InputSpecError:
    return InputSpecError(
        f"{name!r}: the device array has strides {strides} for shape {shape}; TensorRT reads C-contiguous "
        "memory: pass x.contiguous() (torch) or cupy.ascontiguousarray(x)",
        tensor=name or None,
    )


def _from_cai(obj: Any, cai: dict[str, Any], name: str, stream: Stream | None) -> DeviceArray:
    shape = tuple(int(d) for d in cai["shape"])
    dtype = np.dtype(cai["typestr"])
    strides = cai.get("strides")
    if strides is not None and tuple(strides) != _c_strides(shape, dtype.itemsize):
        raise _contiguity_error(name, shape, strides)
    ptr = int(cai["data"][0])
    # CUDA array interface v3: "stream" None means no synchronization is needed, 1 the legacy and 2
    # the per-thread default stream, any other integer a cudaStream_t (0 is disallowed, read as the
    # legacy stream). A producer that gives no "stream" at all (version 2, which torch still exports)
    # wrote on its current stream, by default the legacy default stream: order after that one.
    if "stream" not in cai:
        producer: int | None = LEGACY_STREAM
    elif cai["stream"] is None:
        producer = None
    else:
        producer = int(cai["stream"]) or LEGACY_STREAM
    arr = DeviceArray(ptr, shape, dtype, _pointer_device(ptr), obj, stream=producer)
    if stream is not None:
        order_after(arr, stream)
    return arr


def order_after(array: DeviceArray, stream: Stream, event: Event | None = None) -> None:
    """Queue on ``stream`` a wait for the work ``array``'s producer has queued so far.

    Call it before every use: a wait covers only what the producer queued before it. ``event``
    (reused, timing off) saves creating one per call.
    """
    if array.dlpack:
        owner = array.owner[0]
        try:  # DLPack: the producer makes our stream wait for its current stream
            owner.__dlpack__(stream=int(stream))
            return
        except TypeError:  # a producer that takes no stream: assume the legacy default stream
            producer: int | None = LEGACY_STREAM
    else:
        producer = array.stream
    if producer is None:
        return
    ev = event if event is not None else Event(timing=False)
    ev.record(producer)
    stream.wait(ev)


def _c_strides(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    out, acc = [], itemsize
    for d in reversed(shape):
        out.append(acc)
        acc *= max(d, 1)
    return tuple(reversed(out))


def _pointer_device(ptr: int) -> int:
    rt = runtime()
    err, attrs = rt.cudaPointerGetAttributes(ptr)
    if err != rt.cudaError_t.cudaSuccess:
        return -1
    return int(attrs.device)


def _from_dlpack(obj: Any, name: str, stream: Stream | None) -> DeviceArray:
    try:
        capsule = obj.__dlpack__(stream=int(stream) if stream is not None else None)
    except TypeError:
        capsule = obj.__dlpack__()
    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype = ctypes.c_void_p
    get.argtypes = [ctypes.py_object, ctypes.c_char_p]
    addr = get(capsule, b"dltensor")
    t = _DLTensor.from_address(addr)  # DLManagedTensor starts with its DLTensor
    if t.device.device_type not in (_KDL_CUDA, _KDL_CUDA_MANAGED):
        raise InputSpecError(
            f"{name!r}: the DLPack tensor lives on device type {t.device.device_type}, not CUDA",
            tensor=name or None,
        )
    kind = _DL_CODES.get(t.dtype.code)
    if kind is None or t.dtype.lanes != 1:
        raise InputSpecError(
            f"{name!r}: DLPack dtype code {t.dtype.code} has no numpy equivalent", tensor=name or None
        )
    dtype = np.dtype("bool") if kind == "b" else np.dtype(f"{kind}{t.dtype.bits // 8}")
    shape = tuple(int(t.shape[i]) for i in range(t.ndim))
    if t.strides:
        strides = tuple(int(t.strides[i]) * dtype.itemsize for i in range(t.ndim))
        if strides != _c_strides(shape, dtype.itemsize):
            raise _contiguity_error(name, shape, strides)
    ptr = int(t.data or 0) + int(t.byte_offset)
    # The capsule is kept unconsumed: its destructor calls the producer's deleter when we drop it.
    return DeviceArray(ptr, shape, dtype, int(t.device.device_id), (obj, capsule), dlpack=True)
