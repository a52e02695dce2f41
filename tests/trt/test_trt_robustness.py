"""The TensorRT backend under concurrency, several GPUs, device arrays and bad input (strict fake, 10.x and 11.x).

Each test checks results against numpy, or the fake GPU's own state (what is allocated, locked, on
which device), never against the backend's own view of itself.
"""

from __future__ import annotations

import ctypes
import gc
import sys
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import fake_cuda
import fake_tensorrt
import models
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import infercore as ic
from conftest import reset_gpu
from infercore.backends.tensorrt import _make_logger, cuda
from infercore.backends.tensorrt.builder import EngineBuilder
from infercore.errors import BackendError, EngineClosedError, InputSpecError, ModelLoadError

pytest.importorskip("onnxruntime")


def _load(path: Path, **kw: Any) -> ic.Engine:
    kw.setdefault("device", "cuda")
    return ic.load(path, backend="tensorrt", **kw)


def _feeds(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal((n, 4)).astype(np.float32) for k in ("a", "b")}


def _live_streams() -> int:
    return sum(1 for k, s in fake_cuda.STATE.streams.items() if k > 0 and not s.destroyed)


class _DeviceArray:
    """What cupy/torch expose over the fake GPU's memory; ``cai`` extra keys (e.g. stream) merged in."""

    def __init__(self, shape: tuple[int, ...], **cai: Any) -> None:
        self.shape = shape
        self.buf = cuda.DeviceBuffer(int(np.prod(shape)) * 4)
        self.__cuda_array_interface__ = {
            "shape": shape,
            "typestr": "<f4",
            "data": (self.buf.ptr, False),
            "strides": None,
            **cai,
        }

    def write_async(self, value: float, stream: int, keep: list[Any]) -> None:
        """An asynchronous write on the producer's stream (torch ``x.fill_``, ``x.copy_``)."""
        src = cuda.pinned_empty(self.shape, np.float32)
        src[...] = value
        keep.append(src)
        rt = cuda.runtime()
        kind = rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        assert rt.cudaMemcpyAsync(self.buf.ptr, src.ctypes.data, src.nbytes, kind, stream)[0] == 0


# -- 1. close() while other threads run ------------------------------------------------------------
def test_close_waits_for_a_run_in_flight(fake_trt: ModuleType, tmp_path: Path, cache_dir: Path) -> None:
    eng = _load(models.add_mul(tmp_path / "m.onnx"))
    io = eng.bind({"a": (2, 4), "b": (2, 4)})
    binding: Any = io._binding
    started, release = threading.Event(), threading.Event()
    enqueue = binding._enqueue

    def slow_enqueue() -> None:  # the run is inside TensorRT when close() is called
        started.set()
        release.wait(5)
        enqueue()

    binding._enqueue = slow_enqueue
    f = _feeds(2)
    io.inputs["a"][...] = f["a"]
    io.inputs["b"][...] = f["b"]
    out = io.outputs["sum"]
    runner = threading.Thread(target=io.run)
    runner.start()
    assert started.wait(5)
    closer = threading.Thread(target=eng.close)
    closer.start()
    time.sleep(0.1)
    assert closer.is_alive()  # close() waits: nothing is freed under the running copy
    release.set()
    runner.join(5)
    closer.join(5)
    assert not closer.is_alive()
    np.testing.assert_array_equal(out, f["a"] + f["b"])
    assert fake_cuda.STATE.sticky is None
    assert not fake_cuda.STATE.device and _live_streams() == 0
    with pytest.raises(EngineClosedError):
        binding.run()  # a caller that still holds the binding gets a clean error, no CUDA call


def test_close_during_concurrent_runs_is_clean(fake_trt: ModuleType, tmp_path: Path, cache_dir: Path) -> None:
    path = models.add_mul(tmp_path / "m.onnx")
    for _ in range(5):
        eng = _load(path)
        backend: Any = eng._backend
        f = _feeds(2)
        want = f["a"] + f["b"]
        errors: list[BaseException] = []
        stop = threading.Event()

        def loop(
            backend: Any = backend, f: Any = f, want: Any = want, stop: Any = stop, errors: Any = errors
        ) -> None:
            while not stop.is_set():
                try:  # the backend directly: Engine.run reads its backend once, then races close()
                    np.testing.assert_array_equal(backend.run(f, ["sum"])["sum"], want)
                except EngineClosedError:
                    return
                except BaseException as e:
                    errors.append(e)
                    return

        threads = [threading.Thread(target=loop) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(0.02)
        eng.close()
        stop.set()
        for t in threads:
            t.join(5)
        assert not errors, errors
        assert fake_cuda.STATE.sticky is None
        assert not fake_cuda.STATE.device and _live_streams() == 0
        reset_gpu()


def test_backend_close_releases_everything_when_one_binding_fails(
    fake_trt: ModuleType, tmp_path: Path, cache_dir: Path
) -> None:
    eng = _load(models.add_mul(tmp_path / "m.onnx"))
    backend: Any = eng._backend
    first = backend.bind({"a": (2, 4), "b": (2, 4)}, {})
    second = backend.bind({"a": (3, 4), "b": (3, 4)}, {})
    close = first.close

    def broken() -> None:
        close()
        raise cuda.CudaError("CUDA cudaStreamSynchronize failed: boom", code="cudaErrorIllegalAddress")

    first.close = broken
    with pytest.raises(cuda.CudaError, match="boom"):
        backend.close()
    assert second._context is None and backend._engine is None
    assert not fake_cuda.STATE.device and _live_streams() == 0


# -- 2. device arrays are ordered after their producer at every run --------------------------------
def test_device_inputs_wait_for_their_producer_every_run(
    fake_trt: ModuleType, tmp_path: Path, cache_dir: Path
) -> None:
    producer = cuda.Stream()
    keep: list[Any] = []
    a, b = (
        _DeviceArray((2, 4), version=3, stream=int(producer)),
        _DeviceArray((2, 4), version=2),
    )  # b: like torch
    with _load(models.add_mul(tmp_path / "m.onnx")) as eng:
        io = eng._backend.bind({"a": a, "b": b}, {})  # type: ignore[union-attr]
        for k in (1.0, 10.0, 100.0):
            a.write_async(k, int(producer), keep)  # a: on the producer's own stream
            b.write_async(2 * k, 0, keep)  # b: torch's default, the legacy default stream
            io.run()
            np.testing.assert_array_equal(io.outputs["sum"], np.full((2, 4), 3 * k, np.float32))
        io.close()


def test_fake_takes_the_default_stream_handles(fake_trt: ModuleType) -> None:
    ev = cuda.Event(timing=False)
    for handle in (1, 2):  # cudaStreamLegacy, cudaStreamPerThread: valid handles on a real GPU
        ev.record(handle)
        ev.synchronize()
    ptr = fake_cuda.cudaMalloc(64)[1]
    cai = {"shape": (4, 4), "typestr": "<f4", "data": (ptr, False), "version": 3, "strides": None}
    for given, producer in ((1, 1), (2, 2), (None, None)):
        obj = type("A", (), {"__cuda_array_interface__": dict(cai, stream=given)})()
        assert cuda.as_device_array(obj, "x", cuda.Stream()).stream == producer
    v2 = type("A", (), {"__cuda_array_interface__": dict(cai, version=2)})()
    assert cuda.as_device_array(v2, "x").stream == cuda.LEGACY_STREAM  # no "stream": the legacy default


# -- 3. output arrays are checked against the shape TensorRT computes ------------------------------
@pytest.mark.parametrize("rows", [1, 5])
def test_bound_output_of_the_wrong_shape_is_refused(
    fake_trt: ModuleType, tmp_path: Path, cache_dir: Path, rows: int
) -> None:
    with _load(models.add_mul(tmp_path / "m.onnx")) as eng:
        out = np.zeros((rows, 4), np.float32)
        with pytest.raises(InputSpecError, match=rf"output 'sum'.*\({rows}, 4\).*computes float32 \(2, 4\)"):
            eng.bind({"a": (2, 4), "b": (2, 4)}, outputs={"sum": out})
        assert not fake_cuda.STATE.device and not fake_cuda.STATE.registered  # nothing left behind
        good = np.zeros((2, 4), np.float32)
        with eng.bind({"a": (2, 4), "b": (2, 4)}, outputs={"sum": good}) as io:
            f = _feeds(2)
            io.inputs["a"][...] = f["a"]
            io.inputs["b"][...] = f["b"]
            io.run()
            np.testing.assert_array_equal(good, f["a"] + f["b"])


# -- 4. run() keeps bounded state ----------------------------------------------------------------------
def test_run_state_is_bounded_and_released(fake_trt: ModuleType, tmp_path: Path, cache_dir: Path) -> None:
    eng = _load(models.add_mul(tmp_path / "m.onnx"))
    for n in range(1, 41):  # 40 shapes on one thread: 4 bindings kept
        f = _feeds(n)
        np.testing.assert_array_equal(eng.run(f)["sum"], f["a"] + f["b"])
    gc.collect()
    assert _live_streams() == 4
    assert len(fake_cuda.STATE.pinned) <= 4 * 4  # 4 bindings x 4 tensors
    assert len(fake_cuda.STATE.device) <= 4 * 4

    def work() -> None:
        eng.run(_feeds(3))

    for _ in range(20):  # short-lived threads: their bindings go when the next thread needs one
        t = threading.Thread(target=work)
        t.start()
        t.join()
    gc.collect()
    assert _live_streams() <= 4 + 1
    assert len(fake_cuda.STATE.pinned) <= 5 * 4
    eng.close()
    gc.collect()
    assert not fake_cuda.STATE.pinned and not fake_cuda.STATE.device and _live_streams() == 0


# -- 5, 6. the device is per thread; arrays on another GPU are refused ----------------------------------
def test_runs_from_any_thread_use_the_engines_gpu(
    fake_trt: ModuleType, tmp_path: Path, cache_dir: Path
) -> None:
    reset_gpu(gpus=[fake_cuda.FakeGPU(), fake_cuda.FakeGPU()])
    e0 = _load(models.add_mul(tmp_path / "m0.onnx"), device="cuda:0")
    e1 = _load(models.add_mul(tmp_path / "m1.onnx"), device="cuda:1")
    f = _feeds(3)
    want = f["a"] + f["b"]
    np.testing.assert_array_equal(e0.run(f)["sum"], want)  # after e1 loaded on cuda:1 on this thread
    results: list[Any] = []
    t = threading.Thread(target=lambda: results.append(e1.run(f)["sum"]))  # a thread that never set a device
    t.start()
    t.join()
    np.testing.assert_array_equal(results[0], want)
    np.testing.assert_array_equal(e1.run(f)["sum"], want)
    assert fake_cuda.STATE.sticky is None
    assert fake_cuda.STATE.current == 0  # the caller's current device is left as it was
    on_1 = [p for p, d in fake_cuda.STATE.device_of.items() if d == 1]
    assert on_1  # e1's buffers live on its GPU
    e0.close()
    e1.close()


def test_device_array_on_another_gpu_is_refused(
    fake_trt: ModuleType, tmp_path: Path, cache_dir: Path
) -> None:
    reset_gpu(gpus=[fake_cuda.FakeGPU(), fake_cuda.FakeGPU()])
    with _load(models.add_mul(tmp_path / "m.onnx"), device="cuda:1") as eng:
        a, b = _DeviceArray((2, 4), version=3, stream=None), _DeviceArray((2, 4), version=3, stream=None)
        with pytest.raises(
            InputSpecError, match=r"input 'a': the device array is on cuda:0, the engine runs on cuda:1"
        ):
            eng._backend.bind({"a": a, "b": b}, {})  # type: ignore[union-attr]


# -- minor: device arrays without .shape; misaligned pointers -------------------------------------------
def test_device_array_without_shape_and_misaligned(
    fake_trt: ModuleType, tmp_path: Path, cache_dir: Path
) -> None:
    with _load(models.add_mul(tmp_path / "m.onnx")) as eng:
        backend: Any = eng._backend
        base = cuda.DeviceBuffer(1024)

        def cai(ptr: int) -> Any:
            d = {"shape": (2, 4), "typestr": "<f4", "data": (ptr, False), "version": 3, "stream": None}
            return type("NoShape", (), {"__cuda_array_interface__": d})()  # no .shape attribute

        io = backend.bind({"a": cai(base.ptr), "b": cai(base.ptr + 256)}, {})
        io.close()
        with pytest.raises(InputSpecError, match=r"input 'b'.*not 256-byte aligned"):
            backend.bind({"a": cai(base.ptr), "b": cai(base.ptr + 32)}, {})
        ctx = backend._engine.create_execution_context()
        assert ctx.set_tensor_address("a", base.ptr) and not ctx.set_tensor_address("a", base.ptr + 32)


# -- 7. INT8 calibration data (TensorRT 10) --------------------------------------------------------------
_PROFILE = {"a": [(1, 4), (2, 4), (8, 4)], "b": [(1, 4), (2, 4), (8, 4)]}


def _calibrate(path: Path, feeds: Any) -> ic.Engine:
    return _load(path, precision="int8", options={"calibration_data": feeds, "profiles": _PROFILE})


def test_calibration_feeds_are_checked(fake_trt10: ModuleType, tmp_path: Path, cache_dir: Path) -> None:
    path = models.add_mul(tmp_path / "m.onnx")
    rng = np.random.default_rng(0)
    cases = [
        ({"a": np.ones((2, 4), np.int64), "b": np.ones((2, 4), np.int64)}, r"\['a'\] is int64.*float32"),
        (
            {"a": np.ones((8, 4), np.float32), "b": np.ones((8, 4), np.float32)},
            r"shape \(8, 4\).*opt shape \(2, 4\)",
        ),
        (
            {"a": np.ones((1, 4), np.float32), "b": np.ones((1, 4), np.float32)},
            r"shape \(1, 4\).*opt shape \(2, 4\)",
        ),
        ({"a": np.ones(8, np.float32), "b": np.ones(8, np.float32)}, r"shape \(8,\)"),
        ({"a": np.ones((2, 4), np.float32)}, r"missing \['b'\]"),
    ]
    for feeds, match in cases:
        with pytest.raises(InputSpecError, match=match):
            _calibrate(path, [_feeds(2), feeds])
    assert not fake_tensorrt.BUILDS
    f64 = {"a": rng.random((2, 4)), "b": rng.random((2, 4))}  # float64 is cast, not reinterpreted
    with _calibrate(path, [f64, _feeds(2)]) as eng:
        assert fake_tensorrt.BUILDS[-1]["precision"] == "int8-calibrated-2"
        f32 = {k: v.astype(np.float32) for k, v in f64.items()}
        np.testing.assert_array_equal(eng.run(f32)["sum"], f32["a"] + f32["b"])


def test_calibration_error_is_raised_not_swallowed(
    fake_trt10: ModuleType, tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = sys.modules["cuda.bindings.runtime"]
    real, calls = rt.cudaMemcpy, []

    def failing(dst: int, src: int, count: int, kind: Any) -> tuple[Any, ...]:
        calls.append(count)
        if len(calls) == 3:  # batch 1, input a
            return (fake_cuda.cudaError_t.cudaErrorIllegalAddress,)
        return real(dst, src, count, kind)  # type: ignore[no-any-return]

    monkeypatch.setattr(rt, "cudaMemcpy", failing)
    with pytest.raises(ModelLoadError, match=r"calibration_data\[1\] of 3.*cudaErrorIllegalAddress"):
        _calibrate(models.add_mul(tmp_path / "m.onnx"), [_feeds(2, s) for s in range(3)])
    assert fake_tensorrt.BUILDS[-1]["precision"] == "int8-calibrated-1"  # what TensorRT did build
    assert not list(cache_dir.glob("*.engine"))  # refused: not returned, not cached


def test_fake_swallows_get_batch_exceptions_like_pyint8(
    fake_trt10: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:

    class Broken(fake_trt10.IInt8EntropyCalibrator2):  # type: ignore[name-defined,misc]
        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str]) -> list[int] | None:
            raise ValueError("bad batch")

        def read_calibration_cache(self) -> bytes | None:
            return None

        def write_calibration_cache(self, cache: Any) -> None:
            pass

    net = fake_trt10.Builder(fake_trt10.Logger()).create_network(0)
    assert fake_tensorrt._calibrate(Broken(), net, None, fake_trt10.Logger()) == 0
    assert "Exception caught in get_batch(): bad batch" in capsys.readouterr().err


# -- 8. external data is part of the cache key ------------------------------------------------------------
def test_external_data_changes_the_cache_key(fake_trt: ModuleType, tmp_path: Path, cache_dir: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    w = numpy_helper.from_array(np.full((1, 4), 1.0, np.float32), "w")
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g", [x], [y], initializer=[w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "m.onnx"
    onnx.save(model, path, save_as_external_data=True, location="m.onnx.data", size_threshold=0)
    gpu = cuda.device_info(0)

    def key() -> str:
        return EngineBuilder(fake_trt, _make_logger(fake_trt), gpu, path, None, {}).key()[0]

    before = key()
    assert key() == before
    (tmp_path / "m.onnx.data").write_bytes(np.full((1, 4), 5.0, np.float32).tobytes())  # new weights
    assert key() != before


# -- 9. a failed bind leaves nothing behind ----------------------------------------------------------------
def test_failed_bind_unlocks_the_callers_arrays(
    fake_trt: ModuleType, tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _load(models.add_mul(tmp_path / "m.onnx")) as eng:
        rt = sys.modules["cuda.bindings.runtime"]
        real, n = rt.cudaMalloc, [0]

        def oom(size: int) -> tuple[Any, ...]:
            n[0] += 1
            if n[0] == 3:  # the first output's buffer
                return (fake_cuda.cudaError_t.cudaErrorMemoryAllocation, None)
            return real(size)  # type: ignore[no-any-return]

        monkeypatch.setattr(rt, "cudaMalloc", oom)
        big = {k: np.zeros((64, 4096 // 16), np.float32)[:, :4].copy() for k in ("a", "b")}  # own pages
        with pytest.raises(Exception, match="out of memory"):
            eng.bind(big)
        assert not fake_cuda.STATE.registered  # cudaHostUnregister'ed
        assert not fake_cuda.STATE.device and _live_streams() == 0


# -- 11. precision and strongly_typed -------------------------------------------------------------------------
def _fp16_weights(path: Path) -> Path:
    """y = x + Cast(w16): an ONNX model whose weights are float16."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    w = numpy_helper.from_array(np.full((1, 4), 0.5, np.float16), "w")
    nodes = [
        helper.make_node("Cast", ["w"], ["wf"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["x", "wf"], ["y"]),
    ]
    model = helper.make_model(
        helper.make_graph(nodes, "g", [x], [y], initializer=[w]), opset_imports=[helper.make_opsetid("", 17)]
    )
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_fp16_strongly_typed_never_builds_fp32_silently(
    fake_trt: ModuleType, tmp_path: Path, cache_dir: Path
) -> None:
    fp32 = models.add_mul(tmp_path / "m.onnx")
    v11 = fake_trt.__version__.startswith("11.")
    with pytest.raises(BackendError, match=r"m.onnx has no fp16 tensors.*ic.convert_fp16") as e:
        _load(fp32, precision="fp16", options={"strongly_typed": True})
    assert "options={'strongly_typed': True}" not in str(e.value)  # never advises what just failed
    if v11:
        with pytest.raises(BackendError, match="no fp16 tensors"):
            _load(fp32, precision="fp16")
        with pytest.raises(BackendError, match="strongly_typed=False cannot give fp16"):
            _load(fp32, precision="fp16", options={"strongly_typed": False})
    assert not fake_tensorrt.BUILDS
    x = np.array([[1.0, 2.0, 3.0, 4.0]], np.float32)
    with _load(_fp16_weights(tmp_path / "h.onnx"), precision="fp16", options={"strongly_typed": True}) as eng:
        assert fake_tensorrt.BUILDS[-1]["precision"] == "fp16-typed"
        assert eng.precision == "fp16"
        np.testing.assert_array_equal(eng.run(x)["y"], x + 0.5)


# -- 12. bind() uses the caller's array in place; an unlockable one is reported ---------------------------
def test_pageable_array_is_reported_and_graph_skip_is_visible(
    fake_trt: ModuleType, tmp_path: Path, cache_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with _load(models.add_mul(tmp_path / "m.onnx"), options={"cuda_graph": True}) as eng:
        assert eng.metadata["cuda_graph"] == "on"
        pair = np.zeros(16, np.float32)  # two small arrays on one page: the second cannot be locked
        a, b = pair[:8].reshape(2, 4), pair[8:].reshape(2, 4)
        with caplog.at_level("WARNING", logger="infercore.backends.tensorrt"), eng.bind({"a": a, "b": b}) as io:
            binding: Any = io._binding
            assert io.inputs["a"] is a  # used in place, not copied
            assert binding.pageable == ("b",) and not binding.cuda_graph
            a[...] = 1.0
            b[...] = 2.0
            io.run()
            np.testing.assert_array_equal(io.outputs["sum"], np.full((2, 4), 3.0, np.float32))
        assert "'b' stays pageable" in caplog.text and "cuda_graph skipped" in caplog.text
        bufs = {n: eng._backend.allocate((2, 4), np.dtype(np.float32)) for n in ("a", "b")}  # type: ignore[union-attr]
        with eng.bind(bufs) as io:
            assert io._binding.cuda_graph  # type: ignore[union-attr]


def test_dlpack_input_orders_the_stream_every_run(
    fake_trt: ModuleType, tmp_path: Path, cache_dir: Path
) -> None:
    keep: list[Any] = []
    asked: list[int | None] = []

    def producer(shape: tuple[int, ...]) -> Any:
        buf = cuda.DeviceBuffer(int(np.prod(shape)) * 4)
        dims = (ctypes.c_int64 * len(shape))(*shape)
        t = cuda._DLTensor(
            buf.ptr, cuda._DLDevice(2, 0), len(shape), cuda._DLDataType(2, 32, 1), dims, None, 0
        )
        new = ctypes.pythonapi.PyCapsule_New
        new.restype, new.argtypes = ctypes.py_object, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
        cap = new(ctypes.addressof(t), b"dltensor", None)
        keep.extend([buf, t, dims, cap])

        class P:
            def __dlpack__(self, stream: int | None = None) -> Any:
                asked.append(stream)
                return cap

            def __dlpack_device__(self) -> tuple[int, int]:
                return (2, 0)

        return P()

    with _load(models.add_mul(tmp_path / "m.onnx")) as eng:
        io = eng._backend.bind({"a": producer((2, 4)), "b": producer((2, 4))}, {})  # type: ignore[union-attr]
        before = len(asked)
        io.run()
        io.run()
        stream = int(io._stream)
        assert asked[before:] == [stream] * 4  # each run asks the producer to order our stream
        io.close()
