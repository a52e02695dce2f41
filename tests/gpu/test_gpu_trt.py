"""The CUDA buffer layer and the TensorRT backend on a real NVIDIA GPU.

Skipped, with the reason, where cuda-python, a driver or a GPU is missing; the backend tests also
need tensorrt. The bandwidth check is the issue's acceptance test: the bound path must move data at
>= 80% of what raw ``cudaMemcpyAsync`` from pinned memory reaches in the same run.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("cuda.bindings.runtime", reason="cuda-python is not installed")

from infercore.backends.tensorrt import cuda
from infercore.errors import BackendUnavailableError

try:
    GPU = cuda.device_info(0)
except BackendUnavailableError as e:
    pytest.skip(f"no usable NVIDIA GPU: {e}", allow_module_level=True)

pytestmark = pytest.mark.gpu


def test_pinned_roundtrip_and_events() -> None:
    host = cuda.pinned_empty((1 << 20,), np.float32)
    assert cuda.is_pinned(host) and not cuda.is_pinned(np.zeros(16))
    host[...] = np.arange(host.size, dtype=np.float32)
    back = cuda.pinned_empty(host.shape, host.dtype)
    dev, stream, t0, t1 = cuda.DeviceBuffer(host.nbytes), cuda.Stream(), cuda.Event(), cuda.Event()
    t0.record(stream)
    cuda.memcpy_htod_async(dev.ptr, host, stream)
    cuda.memcpy_dtoh_async(back, dev.ptr, stream)
    t1.record(stream)
    stream.synchronize()
    np.testing.assert_array_equal(back, host)
    assert t1.elapsed_ms(t0) > 0


def test_cuda_graph_replays_copies() -> None:
    host, back = cuda.pinned_empty((256,), np.int32), cuda.pinned_empty((256,), np.int32)
    dev, stream = cuda.DeviceBuffer(host.nbytes), cuda.Stream()

    def work() -> None:
        cuda.memcpy_htod_async(dev.ptr, host, stream)
        cuda.memcpy_dtoh_async(back, dev.ptr, stream)

    graph = cuda.capture_graph(stream, work)
    for k in range(3):
        host[...] = k
        graph.launch(stream)
        stream.synchronize()
        assert (back == k).all()


@pytest.mark.parametrize("lib", ["torch", "cupy"])
def test_device_arrays_by_pointer(lib: str) -> None:
    if lib == "torch":
        torch = pytest.importorskip("torch")
        if not torch.cuda.is_available():
            pytest.skip("this torch build has no CUDA")
        x = torch.arange(12, dtype=torch.float32, device="cuda").reshape(3, 4)
        ptr, back = x.data_ptr(), lambda: x.cpu().numpy()
        with pytest.raises(Exception, match="contiguous"):
            cuda.as_device_array(x.t(), "x")
    else:
        cp = pytest.importorskip("cupy")
        x = cp.arange(12, dtype=cp.float32).reshape(3, 4)
        ptr, back = x.data.ptr, lambda: cp.asnumpy(x)
    arr = cuda.as_device_array(x, "x")
    assert (arr.ptr, arr.shape, arr.dtype) == (ptr, (3, 4), np.float32)
    dl = cuda._from_dlpack(x, "x", None)
    assert dl.ptr == ptr and dl.shape == (3, 4)
    host = cuda.pinned_empty((3, 4), np.float32)
    stream = cuda.Stream()
    cuda.memcpy_dtoh_async(host, arr.ptr, stream)
    stream.synchronize()
    np.testing.assert_array_equal(host, back())


def _identity(path: Path, n: int) -> Path:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [n])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [n])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def _median_ms(fn: Any, stream: cuda.Stream, reps: int = 10) -> float:
    t0, t1, times = cuda.Event(), cuda.Event(), []
    fn()
    for _ in range(reps):
        t0.record(stream)
        fn()
        t1.record(stream)
        t1.synchronize()
        times.append(t1.elapsed_ms(t0))
    return statistics.median(times)


def test_backend_and_bound_bandwidth(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("tensorrt", reason="tensorrt is not installed")
    import infercore as ic

    monkeypatch.setenv("INFERCORE_CACHE", str(tmp_path / "cache"))
    n = 16 << 20  # 64 MiB each way
    with ic.load(_identity(tmp_path / "id.onnx", n), backend="tensorrt", device="cuda") as eng:
        x = np.random.default_rng(0).standard_normal(n).astype(np.float32)
        np.testing.assert_array_equal(eng.run(x)["y"], x)
        with eng.bind({"x": (n,)}) as io:
            io.inputs["x"][...] = x
            binding = io._binding
            assert cuda.is_pinned(io.inputs["x"]) and cuda.is_pinned(io.outputs["y"])
            bound_ms = _median_ms(binding._enqueue, binding._stream)  # type: ignore[union-attr]
            io.run()
            np.testing.assert_array_equal(io.outputs["y"], x)
        # the binding's stream is destroyed with it: time the raw copies on a stream of their own
        stream = cuda.Stream()
        src, dst = cuda.pinned_empty((n,), np.float32), cuda.pinned_empty((n,), np.float32)
        dev = cuda.DeviceBuffer(src.nbytes)

        def raw() -> None:
            cuda.memcpy_htod_async(dev.ptr, src, stream)
            cuda.memcpy_dtoh_async(dst, dev.ptr, stream)

        raw_ms = _median_ms(raw, stream)
    gbps = lambda ms: 2 * 4 * n / ms / 1e6  # noqa: E731
    print(f"\nbound {gbps(bound_ms):.1f} GB/s, raw cudaMemcpyAsync {gbps(raw_ms):.1f} GB/s on {GPU.name}")
    assert raw_ms / bound_ms >= 0.8, f"bound path at {raw_ms / bound_ms:.0%} of raw pinned copy bandwidth"
