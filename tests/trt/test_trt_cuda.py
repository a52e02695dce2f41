"""The CUDA buffer layer (``infercore.backends.tensorrt.cuda``) against the fake cuda-python runtime."""

from __future__ import annotations

import ctypes
from types import ModuleType

import fake_cuda
import numpy as np
import pytest

from infercore.backends.tensorrt import cuda
from infercore.errors import InputSpecError


def test_pinned_arrays_and_async_copies(fake_trt: ModuleType) -> None:
    host = cuda.pinned_empty((3, 5), np.float32)
    assert host.shape == (3, 5) and host.flags.c_contiguous and cuda.is_pinned(host)
    assert not cuda.is_pinned(np.zeros(4))
    host[...] = np.arange(15, dtype=np.float32).reshape(3, 5)
    back = cuda.pinned_empty((3, 5), np.float32)
    back[...] = 0
    dev, stream = cuda.DeviceBuffer(host.nbytes), cuda.Stream()
    cuda.memcpy_htod_async(dev.ptr, host, stream)
    cuda.memcpy_dtoh_async(back, dev.ptr, stream)
    assert not back.any()  # queued, not done
    stream.synchronize()
    np.testing.assert_array_equal(back, host)
    dev.free()
    dev.free()  # idempotent
    assert not fake_cuda.STATE.device


def test_pinned_memory_lives_as_long_as_its_arrays(fake_trt: ModuleType) -> None:
    view = cuda.pinned_empty((4,), np.int32)[1:]
    assert len(fake_cuda.STATE.pinned) == 1
    del view
    import gc

    gc.collect()
    assert not fake_cuda.STATE.pinned


def test_events_and_graphs(fake_trt: ModuleType) -> None:
    stream, start, end = cuda.Stream(), cuda.Event(), cuda.Event()
    host = cuda.pinned_empty((4,), np.float32)
    out = cuda.pinned_empty((4,), np.float32)
    dev = cuda.DeviceBuffer(16)

    def work() -> None:
        cuda.memcpy_htod_async(dev.ptr, host, stream)
        cuda.memcpy_dtoh_async(out, dev.ptr, stream)

    graph = cuda.capture_graph(stream, work)
    for k in range(3):
        host[...] = k
        start.record(stream)
        graph.launch(stream)
        end.record(stream)
        end.synchronize()
        np.testing.assert_array_equal(out, np.full(4, k, np.float32))
        assert end.elapsed_ms(start) > 0
    graph.destroy()


def test_cuda_array_interface(fake_trt: ModuleType) -> None:
    ptr = fake_cuda.cudaMalloc(64)[1]
    cai = {"shape": (4, 4), "typestr": "<f4", "data": (ptr, False), "version": 3, "strides": None}
    obj = type("A", (), {"__cuda_array_interface__": cai})()
    assert cuda.is_device_array(obj) and not cuda.is_device_array(np.zeros(3))
    arr = cuda.as_device_array(obj, "x")
    assert (arr.ptr, arr.shape, arr.dtype, arr.nbytes, arr.device) == (ptr, (4, 4), np.float32, 64, 0)
    cai_t = dict(cai, strides=(4, 16))  # a transposed view
    with pytest.raises(InputSpecError, match=r"x.contiguous\(\)"):
        cuda.as_device_array(type("B", (), {"__cuda_array_interface__": cai_t})(), "x")


def test_dlpack(fake_trt: ModuleType) -> None:
    ptr = fake_cuda.cudaMalloc(24)[1]
    shape = (ctypes.c_int64 * 2)(2, 3)
    managed = cuda._DLTensor(ptr, cuda._DLDevice(2, 0), 2, cuda._DLDataType(0, 32, 1), shape, None, 0)
    new = ctypes.pythonapi.PyCapsule_New
    new.restype, new.argtypes = ctypes.py_object, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
    capsule = new(ctypes.addressof(managed), b"dltensor", None)

    class Producer:
        def __dlpack__(self, stream: int | None = None) -> object:
            return capsule

        def __dlpack_device__(self) -> tuple[int, int]:
            return (2, 0)

    p = Producer()
    assert cuda.is_device_array(p)
    arr = cuda.as_device_array(p, "ids")
    assert (arr.ptr, arr.shape, arr.dtype) == (ptr, (2, 3), np.int32)


def test_errors_carry_cuda_messages(fake_trt: ModuleType) -> None:
    with pytest.raises(
        cuda.CudaError, match="cudaSetDevice failed: cudaErrorInvalidDevice: invalid device ordinal"
    ) as e:
        cuda.set_device(5)
    assert e.value.code == "cudaErrorInvalidDevice"
