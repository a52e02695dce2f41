"""The TensorRT backend against the strict fake (each test runs on TensorRT 10.x and 11.x)."""

from __future__ import annotations

import shutil
import sys
import threading
from pathlib import Path
from types import ModuleType

import fake_cuda
import fake_tensorrt
import models
import numpy as np
import pytest

import infercore as ic
from conftest import reset_gpu
from infercore.backends.tensorrt import TensorRTFactory
from infercore.errors import (
    BackendError,
    BackendRuntimeError,
    BackendUnavailableError,
    EngineClosedError,
    InputSpecError,
    ModelLoadError,
)

pytest.importorskip("onnxruntime")


def _load(path: Path, **kw: object) -> ic.Engine:
    kw.setdefault("device", "cuda")
    return ic.load(path, backend="tensorrt", **kw)  # type: ignore[arg-type]


def _feeds(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(n)
    return {
        "a": rng.standard_normal((n, 4)).astype(np.float32),
        "b": rng.standard_normal((n, 4)).astype(np.float32),
    }


# -- probe and devices ---------------------------------------------------------------------------
def test_probe_without_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt raises ImportError
    info = TensorRTFactory().probe()
    assert not info.available
    assert 'pip install "infercore[tensorrt]"' in (info.reason or "")


def test_probe_with_gpu(fake_trt: ModuleType) -> None:
    info = TensorRTFactory().probe()
    assert info.available, info.reason
    assert info.devices == ("cuda:0",)
    assert "sm_90" in info.details["gpu"]


def test_no_driver_and_no_gpu_say_which(fake_trt: ModuleType, tmp_path: Path, cache_dir: Path) -> None:
    path = models.add_mul(tmp_path / "m.onnx")
    reset_gpu(driver=0)
    info = TensorRTFactory().probe()
    assert not info.available and "no NVIDIA driver" in (info.reason or "")
    with pytest.raises(BackendUnavailableError, match="no NVIDIA driver"):
        _load(path)
    reset_gpu(gpus=[])
    with pytest.raises(BackendUnavailableError, match="no CUDA GPU is visible"):
        _load(path)
    reset_gpu()
    with pytest.raises(BackendUnavailableError, match=r"cuda:3 asked for, but this machine has 1"):
        _load(path, device="cuda:3")


def test_cpu_device_is_refused(fake_trt: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="NVIDIA GPUs only"):
        _load(models.add_mul(tmp_path / "m.onnx"), device="cpu")


def test_unknown_option_suggests(fake_trt: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="did you mean 'workspace'"):
        _load(models.add_mul(tmp_path / "m.onnx"), options={"workspce": 1 << 20})


# -- specs, run, bind --------------------------------------------------------------------------------
def test_specs_and_run_against_numpy(fake_trt: ModuleType, tmp_path: Path, cache_dir: Path) -> None:
    with _load(models.add_mul(tmp_path / "m.onnx")) as eng:
        assert [(s.name, s.dtype, s.shape) for s in eng.inputs] == [
            ("a", np.float32, (None, 4)),
            ("b", np.float32, (None, 4)),
        ]
        assert [s.name for s in eng.outputs] == ["sum", "prod"]
        assert eng.metadata["tensorrt"] == fake_trt.__version__
        assert eng.metadata["profile:a"] == "min (1, 4), opt (1, 4), max (64, 4)"
        for n in (1, 3, 64, 3):
            f = _feeds(n)
            out = eng.run(f)
            np.testing.assert_array_equal(out["sum"], f["a"] + f["b"])
            np.testing.assert_array_equal(out["prod"], f["a"] * f["b"])
        assert list(eng.run(_feeds(2), outputs=["prod"])) == ["prod"]


def test_int32_static_model(fake_trt: ModuleType, tmp_path: Path, cache_dir: Path) -> None:
    with _load(models.int_plus_one(tmp_path / "i.onnx")) as eng:
        assert eng.inputs[0].shape == (2, 3) and eng.inputs[0].dtype == np.int32
        x = np.arange(6, dtype=np.int32).reshape(2, 3)
        np.testing.assert_array_equal(eng.run(x)["y"], x + 1)
        with pytest.raises(InputSpecError, match="expected dtype int32"):
            eng.run(x.astype(np.int64))


def test_bound_path_is_pinned_and_matches_run(fake_trt: ModuleType, tmp_path: Path, cache_dir: Path) -> None:
    from infercore.backends.tensorrt import cuda

    bufs = {n: cuda.pinned_empty((5, 4), np.float32) for n in ("a", "b")}
    with _load(models.add_mul(tmp_path / "m.onnx")) as eng, eng.bind(bufs) as io:
        assert io.inputs["a"] is bufs["a"]  # the caller's pinned array, used in place
        for buf in (*io.inputs.values(), *io.outputs.values()):
            assert fake_cuda.STATE.is_pinned(buf.ctypes.data, buf.nbytes)
        before = dict(fake_cuda.STATE.counters)
        out_buf = io.outputs["sum"]
        for seed in range(3):
            f = {k: v[:5] for k, v in _feeds(5 + seed).items()}
            bufs["a"][...] = f["a"]
            bufs["b"][...] = f["b"]
            io.run()
            assert io.outputs["sum"] is out_buf  # reused, never reallocated
            np.testing.assert_array_equal(io.outputs["sum"], f["a"] + f["b"])
            np.testing.assert_array_equal(io.outputs["prod"], eng.run(f)["prod"])
        c = fake_cuda.STATE.counters
        assert c["h2d_pageable"] == before["h2d_pageable"] and c["d2h_pageable"] == before["d2h_pageable"]
        assert c["h2d_pinned"] - before["h2d_pinned"] == 2 * 6  # 2 inputs per run, bound and run() paths
        assert eng.stats.bound_runs == 3


def test_bound_shapes_and_caller_arrays_are_page_locked(
    fake_trt: ModuleType, tmp_path: Path, cache_dir: Path
) -> None:
    big = {n: np.zeros((64, 4096 // 16), np.float32)[:, :4].copy() for n in ("a", "b")}  # separate pages
    with _load(models.add_mul(tmp_path / "m.onnx")) as eng:
        with eng.bind(big, outputs={"sum": np.zeros((64, 4), np.float32)}) as io:
            assert fake_cuda.STATE.registered  # cudaHostRegister'ed in place
            f = _feeds(64)
            big["a"][...] = f["a"]  # written after bind: still seen, the array is used in place
            big["b"][...] = f["b"]
            io.run()
            np.testing.assert_array_equal(io.outputs["sum"], f["a"] + f["b"])
        assert not fake_cuda.STATE.registered  # unregistered on close
        with eng.bind({"a": (3, 4), "b": (3, 4)}) as io:  # small arrays may share a page: still correct
            f = _feeds(3)
            io.inputs["a"][...] = f["a"]
            io.inputs["b"][...] = f["b"]
            io.run()
            np.testing.assert_array_equal(io.outputs["prod"], f["a"] * f["b"])


def test_cuda_graph_replays(fake_trt: ModuleType, tmp_path: Path, cache_dir: Path) -> None:
    from infercore.backends.tensorrt import cuda

    path = models.add_mul(tmp_path / "m.onnx")
    bufs = {n: cuda.pinned_empty((2, 4), np.float32) for n in ("a", "b")}
    with _load(path, options={"cuda_graph": True}) as eng, eng.bind(bufs) as io:
        launches = fake_cuda.STATE.counters["graph_launches"]
        for k in range(3):
            io.inputs["a"][...] = k
            io.inputs["b"][...] = 2.0
            io.run()
            np.testing.assert_array_equal(io.outputs["sum"], np.full((2, 4), k + 2.0, np.float32))
        assert fake_cuda.STATE.counters["graph_launches"] == launches + 3


def test_device_arrays_are_taken_without_copies(
    fake_trt: ModuleType, tmp_path: Path, cache_dir: Path
) -> None:
    class FakeDeviceArray:  # what cupy/torch expose, over the fake GPU's memory
        def __init__(self, data: np.ndarray) -> None:
            self.shape, self.dtype = data.shape, data.dtype
            self.ptr = fake_cuda.cudaMalloc(data.nbytes)[1]
            fake_cuda.STATE.find_device(self.ptr, data.nbytes)[...] = data.view(np.uint8).reshape(-1)
            self.__cuda_array_interface__ = {
                "shape": data.shape,
                "typestr": data.dtype.str,
                "data": (self.ptr, False),
                "version": 3,
                "strides": None,
            }

        def get(self) -> np.ndarray:
            n = int(np.prod(self.shape)) * self.dtype.itemsize
            return fake_cuda.STATE.find_device(self.ptr, n).view(self.dtype).reshape(self.shape).copy()

    f = {k: v[:3] for k, v in _feeds(3).items()}
    with _load(models.add_mul(tmp_path / "m.onnx")) as eng:
        backend = eng._backend
        a, b = FakeDeviceArray(f["a"]), FakeDeviceArray(f["b"])
        out = FakeDeviceArray(np.zeros((3, 4), np.float32))
        before = dict(fake_cuda.STATE.counters)
        binding = backend.bind({"a": a, "b": b}, {"sum": out})  # type: ignore[union-attr]
        binding.run()
        np.testing.assert_array_equal(out.get(), f["a"] + f["b"])
        np.testing.assert_array_equal(binding.outputs["prod"], f["a"] * f["b"])
        c = fake_cuda.STATE.counters
        assert c["h2d_pinned"] == before["h2d_pinned"] and c["h2d_pageable"] == before["h2d_pageable"]
        assert c["d2h_pinned"] == before["d2h_pinned"] + 1  # prod only
        binding.close()
        # the public API takes them the same way: Engine.bind passes device arrays through
        out2 = FakeDeviceArray(np.zeros((3, 4), np.float32))
        before = dict(fake_cuda.STATE.counters)
        with eng.bind({"a": a, "b": b}, outputs={"sum": out2}) as io:
            io.run()
            np.testing.assert_array_equal(out2.get(), f["a"] + f["b"])
            np.testing.assert_array_equal(io.outputs["prod"], f["a"] * f["b"])
        c = fake_cuda.STATE.counters
        assert c["h2d_pinned"] == before["h2d_pinned"] and c["h2d_pageable"] == before["h2d_pageable"]


def test_threads_each_get_a_context(fake_trt: ModuleType, tmp_path: Path, cache_dir: Path) -> None:
    errors: list[BaseException] = []
    with _load(models.add_mul(tmp_path / "m.onnx")) as eng:

        def work(seed: int) -> None:
            try:
                for i in range(20):
                    f = _feeds(1 + (seed + i) % 4)
                    np.testing.assert_array_equal(eng.run(f)["sum"], f["a"] + f["b"])
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=work, args=(s,)) for s in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors, errors[0]


# -- errors ------------------------------------------------------------------------------------------
def test_shape_outside_profile(fake_trt: ModuleType, tmp_path: Path, cache_dir: Path) -> None:
    path = models.add_mul(tmp_path / "m.onnx")
    with _load(
        path, options={"profiles": {"a": [(2, 4), (4, 4), (8, 4)], "b": [(2, 4), (4, 4), (8, 4)]}}
    ) as eng:
        assert eng.run(_feeds(8))["sum"].shape == (8, 4)
        with pytest.raises(InputSpecError, match=r"dimension 0 is 9, the profile allows 2\.\.8") as e:
            eng.run(_feeds(9))
        assert e.value.tensor == "a" and "min (2, 4), opt (4, 4), max (8, 4)" in str(e.value)
        with pytest.raises(InputSpecError, match="outside the engine's optimization profile"):
            eng.bind({"a": (1, 4), "b": (1, 4)})


def test_parser_errors_are_carried(fake_trt: ModuleType, tmp_path: Path, cache_dir: Path) -> None:
    with pytest.raises(ModelLoadError) as e:
        _load(models.unsupported(tmp_path / "u.onnx"))
    msg = str(e.value)
    assert (
        "No importer registered for op: FancyOp" in msg and "fancy_node" in msg and "UNSUPPORTED_NODE" in msg
    )


def test_build_failure_carries_the_log(fake_trt: ModuleType, tmp_path: Path, cache_dir: Path) -> None:
    bad = {"a": [(4, 4), (2, 4), (8, 4)]}  # opt < min
    with pytest.raises(ModelLoadError, match="invalid optimization profile"):
        _load(models.add_mul(tmp_path / "m.onnx"), options={"profiles": bad})


def test_execute_failure_is_translated(fake_trt: ModuleType, tmp_path: Path, cache_dir: Path) -> None:
    with _load(models.add_mul(tmp_path / "m.onnx")) as eng, eng.bind({"a": (1, 4), "b": (1, 4)}) as io:
        io._binding._context.set_tensor_address("prod", 0)  # type: ignore[union-attr]
        with pytest.raises(
            BackendRuntimeError, match="Neither address or allocator is set for I/O tensor prod"
        ):
            io.run()


def test_close(fake_trt: ModuleType, tmp_path: Path, cache_dir: Path) -> None:
    eng = _load(models.add_mul(tmp_path / "m.onnx"))
    io = eng.bind({"a": (2, 4), "b": (2, 4)})
    eng.run(_feeds(3))
    assert fake_cuda.STATE.device
    eng.close()
    eng.close()
    with pytest.raises(EngineClosedError):
        io.run()
    with pytest.raises(EngineClosedError):
        eng.run(_feeds(1))
    assert not fake_cuda.STATE.device  # every device buffer freed


# -- precision ----------------------------------------------------------------------------------------
def test_fp16(fake_trt: ModuleType, tmp_path: Path, cache_dir: Path) -> None:
    path = models.add_mul(tmp_path / "m.onnx")
    if fake_trt.__version__.startswith("11."):
        with pytest.raises(BackendError, match="no FP16 builder flag"):
            _load(path, precision="fp16")
    else:
        with _load(path, precision="fp16") as eng:
            assert fake_tensorrt.BUILDS[-1]["precision"] == "fp16"
            f = _feeds(2)
            np.testing.assert_allclose(eng.run(f)["sum"], f["a"] + f["b"])


def test_int8(fake_trt: ModuleType, tmp_path: Path, cache_dir: Path) -> None:
    plain = models.add_mul(tmp_path / "m.onnx")
    calib = [_feeds(1) for _ in range(3)]
    if fake_trt.__version__.startswith("11."):
        with pytest.raises(BackendError, match=r"QuantizeLinear/DequantizeLinear.*ic\.calibrate"):
            _load(plain, precision="int8")
        with pytest.raises(BackendError, match="no INT8 calibrator"):
            _load(plain, precision="int8", options={"calibration_data": calib})
    else:
        with pytest.raises(BackendError, match="needs calibration data on TensorRT 10"):
            _load(plain, precision="int8")
        with _load(plain, precision="int8", options={"calibration_data": calib}) as eng:
            assert fake_tensorrt.BUILDS[-1]["precision"] == "int8-calibrated-3"
            assert eng.run(_feeds(2))["sum"].shape == (2, 4)
    with _load(models.qdq(tmp_path / "q.onnx"), precision="int8") as eng:
        assert fake_tensorrt.BUILDS[-1]["precision"] == "int8-qdq"
        x = np.array([[1.0, -2.0, 0.5, 3.0]], np.float32)
        np.testing.assert_allclose(eng.run(x)["y"], 2 * x)


# -- engine cache ----------------------------------------------------------------------------------------
def test_engine_cache_hits_and_invalidation(
    fake_trt: ModuleType, tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = models.add_mul(tmp_path / "m.onnx")
    _load(path).close()
    assert len(fake_tensorrt.BUILDS) == 1
    engines = list(cache_dir.glob("*.engine"))
    assert len(engines) == 1 and engines[0].with_name(engines[0].name + ".json").exists()
    assert list(cache_dir.glob("timing-*.cache"))
    _load(path).close()
    assert len(fake_tensorrt.BUILDS) == 1  # cache hit
    _load(path, options={"workspace": 1 << 20}).close()
    assert len(fake_tensorrt.BUILDS) == 2 and fake_tensorrt.BUILDS[-1]["workspace"] == 1 << 20
    _load(path, options={"rebuild": True}).close()
    assert len(fake_tensorrt.BUILDS) == 3
    # a stale engine file (edited after its sidecar was written) is rebuilt, not deserialized
    engines[0].write_bytes(engines[0].read_bytes() + b"junk")
    _load(path).close()
    assert len(fake_tensorrt.BUILDS) == 4
    # another GPU: a new key, a new build; the engine never meets the wrong device
    fake_cuda.STATE.gpus[0] = fake_cuda.FakeGPU(name="NVIDIA Fake L4", major=8, minor=9)
    with _load(path) as eng:
        assert "sm_89" in eng.metadata["gpu"]
    assert len(fake_tensorrt.BUILDS) == 5
    # the model changed: rebuilt
    models.int_plus_one(path)
    with _load(path) as eng:
        assert eng.inputs[0].name == "x"
    assert len(fake_tensorrt.BUILDS) == 6


def test_cached_engine_from_another_tensorrt_is_rebuilt(
    fake_trt: ModuleType, tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import conftest

    path = models.add_mul(tmp_path / "m.onnx")
    _load(path).close()
    other = "10.0.1" if fake_trt.__version__.startswith("11.") else "11.4.0.106"
    conftest.install(monkeypatch, other)
    with _load(path) as eng:  # different version: different key, built anew for this one
        assert eng.metadata["tensorrt"] == other
    assert len(fake_tensorrt.BUILDS) == 2


def test_engine_file_with_sidecar_is_checked(
    fake_trt: ModuleType, tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import conftest

    _load(models.add_mul(tmp_path / "m.onnx")).close()
    built = next(cache_dir.glob("*.engine"))
    plan = tmp_path / "model.plan"
    shutil.copy(built, plan)
    shutil.copy(built.with_name(built.name + ".json"), tmp_path / "model.plan.json")
    with ic.load(plan, device="cuda") as eng:  # picked by suffix
        assert eng.backend_name == "tensorrt"
        f = _feeds(2)
        np.testing.assert_array_equal(eng.run(f)["prod"], f["a"] * f["b"])
    with pytest.raises(BackendError, match="built engine"):
        _load(plan, precision="fp16")
    fake_cuda.STATE.gpus[0] = fake_cuda.FakeGPU(name="NVIDIA Fake A100", major=8, minor=0)
    with pytest.raises(
        ModelLoadError, match=r"refused.*compute_capability '9.0' \(built\) vs '8.0' \(here\)"
    ):
        _load(plan)
    reset_gpu()
    other = "10.0.1" if fake_trt.__version__.startswith("11.") else "11.4.0.106"
    conftest.install(monkeypatch, other)
    with pytest.raises(ModelLoadError, match=f"tensorrt '{fake_trt.__version__}' \\(built\\) vs '{other}'"):
        _load(plan)
    # without a sidecar, TensorRT's own check refuses it and its message is carried
    (tmp_path / "model.plan.json").unlink()
    with pytest.raises(ModelLoadError, match="Version tag does not match"):
        _load(plan)


# -- the fake is strict ---------------------------------------------------------------------------------
def test_fake_is_strict(fake_trt: ModuleType, tmp_path: Path, cache_dir: Path) -> None:
    trt = fake_trt
    with _load(models.add_mul(tmp_path / "m.onnx")) as eng:
        engine = eng._backend._engine  # type: ignore[union-attr]
        with pytest.raises(AttributeError):
            _ = engine.get_binding_index  # the pre-10 binding API does not exist
        ctx = engine.create_execution_context()
        with pytest.raises(AttributeError):
            ctx.anything = 1
        stream = fake_cuda.cudaStreamCreateWithFlags(1)[1]
        assert ctx.execute_async_v3(int(stream)) is False  # shapes not set
        assert ctx.set_input_shape("a", (2, 4)) and ctx.set_input_shape("b", (2, 4))
        assert ctx.execute_async_v3(int(stream)) is False  # addresses not set
        assert not ctx.set_input_shape("a", (65, 4))  # outside the profile
        ptrs = {n: fake_cuda.cudaMalloc(32)[1] for n in ("a", "b", "sum", "prod")}
        for n, p in ptrs.items():
            assert ctx.set_tensor_address(n, p)
        host = np.zeros((2, 4), np.float32)
        fake_cuda.STATE.find_device(ptrs["a"], 32)[...] = (
            np.ones((2, 4), np.float32).view(np.uint8).reshape(-1)
        )
        fake_cuda.STATE.find_device(ptrs["b"], 32)[...] = (
            np.ones((2, 4), np.float32).view(np.uint8).reshape(-1)
        )
        assert ctx.execute_async_v3(int(stream))
        kind = fake_cuda.cudaMemcpyKind.cudaMemcpyDeviceToHost
        pinned = fake_cuda.cudaMallocHost(32)[1]
        fake_cuda.cudaMemcpyAsync(pinned, ptrs["sum"], 32, kind, stream)
        host = fake_cuda._host_view(pinned, 32).view(np.float32).reshape(2, 4)
        assert not (host == 2).all()  # before the stream is synchronized: not there yet
        fake_cuda.cudaStreamSynchronize(stream)
        assert (host == 2).all()
        assert not hasattr(trt, "IInt8EntropyCalibrator2") or trt.__version__.startswith("10.")
