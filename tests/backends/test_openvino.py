"""The OpenVINO backend against numpy, raw onnxruntime, raw OpenVINO and LiteRT."""

from __future__ import annotations

import importlib.metadata
import os
import sys
import threading
import time

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import infercore as ic
from infercore.testing import models
from tests import onnx_models as m

ov = pytest.importorskip("openvino")
ort = pytest.importorskip("onnxruntime")

DTYPES = [
    (TensorProto.FLOAT, np.float32),
    (TensorProto.DOUBLE, np.float64),
    (TensorProto.FLOAT16, np.float16),
    (TensorProto.INT8, np.int8),
    (TensorProto.INT16, np.int16),
    (TensorProto.INT32, np.int32),
    (TensorProto.INT64, np.int64),
    (TensorProto.UINT8, np.uint8),
    (TensorProto.BOOL, np.bool_),
]


def ov_load(path, **kw):
    return ic.load(path, "openvino", **kw)


def ort_run(path, feeds):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds), strict=True))


def matmul(path, seed=0):
    """y = x @ W, x float32 [batch, 8], W [8, 4]."""
    w = np.random.default_rng(seed).standard_normal((8, 4)).astype(np.float32)
    m.save(
        path,
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        [m.vi("x", TensorProto.FLOAT, ["batch", 8])],
        [m.vi("y", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(w, "W")],
    )
    return path, w


def cosine(a, b):
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# -- tiny models: specs, numerics, paths -----------------------------------------------------------
def test_probe_reports_version_and_devices():
    info = ic.available_backends()["openvino"]
    assert info.available, info.reason
    assert info.version == importlib.metadata.version("openvino")
    assert "CPU" in info.devices and "AUTO" in info.devices


def test_dynamic_batch_specs_and_results_match_numpy_and_ort(tmp_path):
    path, w = matmul(tmp_path / "mm.onnx")
    with ov_load(path) as eng:
        assert eng.backend_name == "openvino"
        assert [(s.name, s.dtype, s.shape) for s in eng.inputs] == [("x", np.dtype(np.float32), (None, 8))]
        assert [(s.name, s.shape) for s in eng.outputs] == [("y", (None, 4))]
        assert eng.metadata["inference_precision"] == "f32"
        for batch in (1, 5, 2):
            x = np.random.default_rng(batch).standard_normal((batch, 8)).astype(np.float32)
            y = eng.run(x)["y"]
            assert y.shape == (batch, 4)
            np.testing.assert_allclose(y, x @ w, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(y, ort_run(path, {"x": x})["y"], rtol=1e-6, atol=1e-6)


def test_dimension_names_of_an_onnx_file_agree_with_ort(tmp_path, monkeypatch):
    # OpenVINO's ports drop dim_param: every name came back None (the Batcher pads by these names)
    nodes = [helper.make_node("Add", ["a", "b"], ["y"]), helper.make_node("Shape", ["a"], ["s"])]
    path = m.save(tmp_path / "named.onnx", nodes,
                  [m.vi("a", TensorProto.FLOAT, ["batch", "seq", 4]), m.vi("b", TensorProto.FLOAT, ["batch", None, 4])],
                  [m.vi("y", TensorProto.FLOAT, ["batch", "seq", 4]), m.vi("s", TensorProto.INT64, [3])])
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    raw = {a.name: tuple(d if isinstance(d, str) else None for d in a.shape)
           for a in (*sess.get_inputs(), *sess.get_outputs())}
    assert raw == {"a": ("batch", "seq", None), "b": ("batch", None, None), "y": ("batch", "seq", None),
                   "s": (None,)}
    with ov_load(path) as eng, ic.load(path, "ort") as ref:
        assert {s.name: s.dim_names for s in (*eng.inputs, *eng.outputs)} == raw
        assert eng.inputs == ref.inputs and eng.outputs == ref.outputs
    monkeypatch.setitem(sys.modules, "onnx", None)  # the openvino extra without onnx
    with ov_load(path) as eng:
        assert [s.dim_names for s in eng.inputs] == [(None, None, None)] * 2
        assert [s.shape for s in eng.inputs] == [(None, None, 4)] * 2


def test_onnx_metadata_props_reach_metadata(tmp_path):
    path, b = m.add_bias(tmp_path / "a.onnx")
    with ov_load(path) as eng:
        assert eng.metadata["author"] == "tests"
        assert eng.metadata["execution_devices"] == "CPU"
        np.testing.assert_array_equal(eng.run(np.ones((2, 16), np.float32))["y"], 1 + np.repeat(b, 2, 0))


@pytest.mark.parametrize(("elem", "dtype"), DTYPES, ids=[np.dtype(d).name for _, d in DTYPES])
def test_numeric_dtypes_run_and_bind(tmp_path, elem, dtype):
    path = m.identity(tmp_path / "id.onnx", elem)
    x = (np.arange(6) % 2 == 0) if dtype is np.bool_ else np.arange(6).astype(dtype)
    with ov_load(path) as eng:
        assert eng.inputs[0].dtype == np.dtype(dtype)
        out = eng.run(x)["y"]
        assert out.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(out, x)
        with eng.bind({"x": x.shape}) as io:
            io.inputs["x"][...] = x
            io.run()
            np.testing.assert_array_equal(io.outputs["y"], x)


def test_run_outputs_are_caller_owned_and_subset(tmp_path):
    path = m.two_inputs(tmp_path / "two.onnx")
    a = np.arange(8, dtype=np.float32).reshape(2, 4)
    b = np.full((2, 4), 2, np.float32)
    with ov_load(path) as eng:
        first = eng.run({"a": a, "b": b})
        assert set(first) == {"z", "w"}
        kept = first["z"].copy()
        second = eng.run({"a": a + 1, "b": b}, outputs=["z"])
        assert list(second) == ["z"]
        np.testing.assert_array_equal(first["z"], kept)  # not overwritten by the next run
        np.testing.assert_array_equal(second["z"], (a + 1) * b)
        assert not np.shares_memory(first["z"], second["z"])


def test_read_only_and_scalar_inputs(tmp_path):
    path = m.scalar_input(tmp_path / "s.onnx")
    x = np.array([1, 2, 3], np.float32)
    x.flags.writeable = False
    with ov_load(path) as eng:
        assert eng.input("s").shape == ()
        np.testing.assert_array_equal(eng.run({"x": x, "s": np.float32(3)})["y"], [3, 6, 9])
        with eng.bind({"x": (3,), "s": ()}) as io:
            io.inputs["x"][...] = x
            io.inputs["s"][...] = 2
            io.run()
            np.testing.assert_array_equal(io.outputs["y"], [2, 4, 6])


def test_bound_path_equals_run_and_writes_in_place(tmp_path):
    path, _ = matmul(tmp_path / "mm.onnx")
    x = np.random.default_rng(3).standard_normal((3, 8)).astype(np.float32)
    with ov_load(path) as eng:
        expected = eng.run(x)["y"]
        with eng.bind({"x": (3, 8)}) as io:
            out = io.outputs["y"]
            assert out.shape == (3, 4)
            for scale in (1, 2):
                io.inputs["x"][...] = x * scale
                io.run()
                assert io.outputs["y"] is out  # the runtime wrote into our array
                np.testing.assert_array_equal(out, expected * scale)
        y = np.empty((3, 4), np.float32)
        with eng.bind({"x": x.copy()}, outputs={"y": y}) as io:
            io.run()
            np.testing.assert_array_equal(y, expected)


@pytest.mark.parametrize("threads", [None, 1])
def test_bound_data_dependent_output_is_copied_out(tmp_path, threads):
    """With one inference thread OpenVINO does not refuse a preset output that is too small: it
    keeps the old shape. A data-dependent output must never be bound in place."""
    path = m.nonzero(tmp_path / "nz.onnx")
    with ov_load(path, threads=threads) as eng, eng.bind({"x": (6,)}) as io:
        for x in ([1, 0, 1, 0, 0, 0], [1, 1, 1, 1, 0, 2], [0, 0, 0, 0, 0, 5], [0] * 6):
            io.inputs["x"][...] = x
            io.run()
            np.testing.assert_array_equal(io.outputs["y"], np.array(np.nonzero(x)))


def test_data_dependent_output_of_another_shape_than_the_callers_array(tmp_path):
    # the same error class and wording as ORT and reference (it was a BackendRuntimeError here)
    path = m.nonzero(tmp_path / "nz.onnx")
    y = np.full((1, 3), -1, np.int64)
    with ov_load(path) as eng, eng.bind({"x": (6,)}, outputs={"y": y}) as io:
        io.inputs["x"][...] = [1, 0, 2, 0, 0, 3]
        io.run()
        np.testing.assert_array_equal(y, np.array(np.nonzero(io.inputs["x"])))
        io.inputs["x"][...] = [1, 1, 0, 0, 0, 0]
        with pytest.raises(ic.InputSpecError, match=r"output 'y': openvino computed shape \(1, 2\) for this run, "
                           r"but the array bound for it has shape \(1, 3\)") as e:
            io.run()
        assert e.value.tensor == "y" and io.outputs["y"] is y


def test_bind_never_runs_the_model_on_unwritten_inputs(tmp_path):
    """Range(0, 0, 0) divides by zero inside OpenVINO (SIGFPE): binding must not probe-run the
    model on the zeroed buffers the caller has not written yet."""
    i64 = TensorProto.INT64
    path = m.save(
        tmp_path / "range.onnx",
        [helper.make_node("Range", ["start", "limit", "delta"], ["y"])],
        [m.vi("start", i64, []), m.vi("limit", i64, []), m.vi("delta", i64, [])],
        [m.vi("y", i64, [None])],
    )
    with ov_load(path, threads=1) as eng, eng.bind({"start": (), "limit": (), "delta": ()}) as io:
        for start, limit, delta in ((2, 11, 3), (0, 40, 1), (5, 0, -2)):
            io.inputs["start"][...], io.inputs["limit"][...], io.inputs["delta"][...] = start, limit, delta
            io.run()
            np.testing.assert_array_equal(io.outputs["y"], np.arange(start, limit, delta))


def test_output_taken_straight_from_an_input_is_copied_out(tmp_path):
    """Einsum '->' compiles to input -> output; the CPU plugin then ignores a preset output tensor."""
    path = m.save(
        tmp_path / "einsum.onnx",
        [helper.make_node("Einsum", ["x"], ["y"], equation="->")],
        [m.vi("x", TensorProto.DOUBLE, [])],
        [m.vi("y", TensorProto.DOUBLE, [])],
    )
    with ov_load(path) as eng, eng.bind({"x": ()}) as io:
        for value in (5.0, -7.5):
            io.inputs["x"][...] = value
            io.run()
            assert io.outputs["y"] == value
        y = np.empty((), np.float64)
        with eng.bind({"x": np.array(3.0)}, outputs={"y": y}) as io2:
            io2.run()
            assert y == 3.0  # a caller's array still receives the result


def test_names_are_the_graphs_not_merged_internal_ones(tmp_path):
    """Compiling folds Identity nodes and merges tensor names ({'a_tmp', 'x'}): the specs must
    carry the ONNX graph's input and output names, as ONNX Runtime reports them."""
    f = TensorProto.FLOAT
    path = m.save(
        tmp_path / "names.onnx",
        [
            helper.make_node("Identity", ["x"], ["a_tmp"]),
            helper.make_node("Relu", ["a_tmp"], ["b_tmp"]),
            helper.make_node("Identity", ["b_tmp"], ["y"]),
        ],
        [m.vi("x", f, [2])],
        [m.vi("y", f, [2])],
    )
    compiled = ov.Core().compile_model(str(path), "CPU")
    assert compiled.inputs[0].get_names() == {"a_tmp", "x"}  # the trap this test is about
    with ov_load(path) as eng:
        assert [s.name for s in eng.inputs] == ["x"] and [s.name for s in eng.outputs] == ["y"]
        x = np.array([-1.0, 2.0], np.float32)
        np.testing.assert_array_equal(eng.run({"x": x})["y"], ort_run(path, {"x": x})["y"])


def test_bound_output_of_the_wrong_shape_is_refused(tmp_path):
    path, _ = matmul(tmp_path / "mm.onnx")
    with ov_load(path) as eng, pytest.raises(ic.InputSpecError, match=r"output 'y'.*\(3, 4\).*\(2, 4\)"):
        eng.bind({"x": (3, 8)}, outputs={"y": np.empty((2, 4), np.float32)})  # fits [?, 4], not batch 3


def test_closed_bindings_free_their_request_and_reuse_their_memory(tmp_path):
    """Binding per call (and a Batcher evicting bindings) kept every request and buffer until the
    engine closed: ~490 KB per bind on PP-OCR cls. Requests now go at close; input memory, which
    OpenVINO may still point at, is reused by later bindings instead of being freed or leaked."""
    path, w = matmul(tmp_path / "mm.onnx")
    rng = np.random.default_rng(5)
    with ov_load(path, threads=1) as eng:
        be = eng._backend
        for i in range(200):
            x = rng.standard_normal((1 + i % 4, 8)).astype(np.float32)
            with eng.bind({"x": x.shape}) as io:
                io.inputs["x"][...] = x
                io.run()
                np.testing.assert_allclose(io.outputs["y"], x @ w, rtol=1e-5, atol=1e-5)
        assert not be._keep and not be._graveyard
        assert len(be._free) <= 2  # one size class here, reused: not 200 buffers
        # an input array the caller still holds after close is never handed to another binding
        io = eng.bind({"x": (2, 8)})
        held = io.inputs["x"]
        io.close()
        with eng.bind({"x": (2, 8)}) as io2:
            assert not np.shares_memory(io2.inputs["x"], held)
            held[...] = 99.0  # the caller writing into its stale array changes nothing bound
            x = rng.standard_normal((2, 8)).astype(np.float32)
            io2.inputs["x"][...] = x
            io2.run()
            np.testing.assert_allclose(io2.outputs["y"], x @ w, rtol=1e-5, atol=1e-5)
        # nor is memory a view of it still shows: views point at the memory's owner, not the array
        io = eng.bind({"x": (2, 8)})
        row = io.inputs["x"][1]
        io.close()
        with eng.bind({"x": (2, 8)}) as io2:
            assert not np.shares_memory(io2.inputs["x"], row)
        mine = np.zeros((2, 8), np.float32)
        eng.bind({"x": mine}).close()
        assert any(a is mine for a in be._graveyard)  # a caller's array OpenVINO read stays alive
        # a bind the engine refuses gives back what it allocated
        free = len(be._free)
        for _ in range(20):
            with pytest.raises(ic.InputSpecError):
                eng.bind({"x": (2, 8)}, outputs={"nope": np.zeros(1)})
        assert not be._owned and len(be._free) <= free + 1


def test_concurrent_run_from_four_threads(tmp_path):
    path, w = matmul(tmp_path / "mm.onnx")
    errors: list[BaseException] = []
    with ov_load(path) as eng:

        def work(seed: int) -> None:
            rng = np.random.default_rng(seed)
            try:
                for i in range(60):
                    x = rng.standard_normal((1 + (seed + i) % 4, 8)).astype(np.float32)
                    np.testing.assert_allclose(eng.run(x)["y"], x @ w, rtol=1e-5, atol=1e-5)
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors[0]


def test_run_many_matches_run(tmp_path):
    path, w = matmul(tmp_path / "mm.onnx")
    rng = np.random.default_rng(0)
    feeds = [{"x": rng.standard_normal((1 + i % 3, 8)).astype(np.float32)} for i in range(9)]
    with ov_load(path, options={"performance_hint": "throughput", "num_requests": 2}) as eng:
        backend = eng._backend
        results = backend.run_many(feeds, ["y"])
        assert len(results) == 9
        for feed, res in zip(feeds, results, strict=True):
            np.testing.assert_allclose(res["y"], feed["x"] @ w, rtol=1e-5, atol=1e-6)
        assert backend.run_many([], ["y"]) == []
        again = backend.run_many(feeds[:3], ["y"], jobs=3)
        np.testing.assert_array_equal(again[2]["y"], results[2]["y"])


def test_ir_round_trip(tmp_path):
    path, w = matmul(tmp_path / "mm.onnx")
    xml = tmp_path / "ir" / "mm.xml"
    xml.parent.mkdir()
    # save_model compresses weights to fp16 unless told not to (then results differ at ~1e-4)
    ov.save_model(ov.Core().read_model(str(path)), str(xml), compress_to_fp16=False)
    assert xml.with_suffix(".bin").exists()
    x = np.ones((2, 8), np.float32)
    with ic.load(xml) as eng:  # .xml picks openvino
        assert eng.backend_name == "openvino"
        assert eng.inputs[0].shape == (None, 8)
        np.testing.assert_allclose(eng.run(x)["y"], x @ w, rtol=1e-5, atol=1e-6)


def test_options_threads_reshape_cache_and_config(tmp_path):
    path, w = matmul(tmp_path / "mm.onnx")
    cache = tmp_path / "cache"
    options = {
        "reshape": {"x": [2, 8]},
        "cache_dir": str(cache),
        "num_streams": 1,
        "execution_mode": "accuracy",
    }
    with ov_load(path, threads=1, options=options) as eng:
        assert eng.inputs[0].shape == (2, 8)  # reshaped to static before compiling
        assert eng._backend._compiled.get_property("INFERENCE_NUM_THREADS") == 1
        np.testing.assert_allclose(eng.run(np.ones((2, 8), np.float32))["y"], np.ones((2, 8)) @ w, rtol=1e-5)
    assert any(cache.iterdir())  # a compiled blob was cached
    with ov_load(path, options={"config": {"INFERENCE_PRECISION_HINT": "bf16"}}) as eng:
        assert eng.metadata["inference_precision"] in ("bf16", "f32")  # f32 where the CPU has no bf16


def _matmul_chain(path, n=512, depth=6):
    """y = x @ W1 @ ... @ Wdepth, float32 [batch, n]: enough work per run to keep a core busy."""
    rng = np.random.default_rng(0)
    ws = [(rng.standard_normal((n, n)) / np.sqrt(n)).astype(np.float32) for _ in range(depth)]
    names = ["x", *[f"h{i}" for i in range(1, depth)], "y"]
    m.save(
        path,
        [helper.make_node("MatMul", [names[i], f"W{i}"], [names[i + 1]]) for i in range(depth)],
        [m.vi("x", TensorProto.FLOAT, ["batch", n])],
        [m.vi("y", TensorProto.FLOAT, ["batch", n])],
        [numpy_helper.from_array(w, f"W{i}") for i, w in enumerate(ws)],
    )
    return path


@pytest.mark.skipif(len(getattr(os, "sched_getaffinity", lambda _: range(os.cpu_count() or 1))(0)) < 2,
                    reason="needs 2 CPUs")
def test_narrow_engines_run_side_by_side_on_their_own_cores(tmp_path):
    # OpenVINO pins every compiled model's threads from the same first core: two 1-thread engines
    # run at once from two threads used one core between them. Engines narrower than the process
    # are compiled unpinned; measured here as the process's CPU seconds per second while both run.
    path = _matmul_chain(tmp_path / "chain.onnx")
    x = np.random.default_rng(1).standard_normal((64, 512)).astype(np.float32)
    with ov_load(path) as wide, ov_load(path, threads=1) as a, ov_load(path, threads=1) as b:
        assert wide._backend._compiled.get_property("ENABLE_CPU_PINNING") is not False or sys.platform != "linux"
        assert a._backend._compiled.get_property("ENABLE_CPU_PINNING") is False
        want = wide.run(x)["y"]
        ios = [e.bind({"x": x.shape}) for e in (a, b)]
        for io in ios:
            io.inputs["x"][...] = x
            io.run()
        stop = time.perf_counter() + 1.5
        runs = [0, 0]

        def loop(i):
            while time.perf_counter() < stop:
                ios[i].run()
                runs[i] += 1

        t0, c0 = time.perf_counter(), time.process_time()
        threads = [threading.Thread(target=loop, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        cpu = (time.process_time() - c0) / (time.perf_counter() - t0)
        for io in ios:
            np.testing.assert_allclose(io.outputs["y"], want, rtol=1e-4, atol=1e-4)
            io.close()
    assert min(runs) > 0
    assert cpu > 1.4, f"two 1-thread engines used {cpu:.2f} CPUs between them (pinned to one core?)"
    # the caller's own config still wins
    with ov_load(path, threads=1, options={"config": {"ENABLE_CPU_PINNING": True}}) as pinned:
        assert pinned._backend._compiled.get_property("ENABLE_CPU_PINNING") is True


@pytest.mark.parametrize("device", ["cpu", "CPU", "cpu:0", "AUTO", "auto:cpu"])
def test_device_names(tmp_path, device):
    path, b = m.add_bias(tmp_path / "a.onnx")
    with ov_load(path, device=device) as eng:
        np.testing.assert_array_equal(eng.run(np.zeros((1, 16), np.float32))["y"], b)


# -- errors ----------------------------------------------------------------------------------------
def test_errors_for_options_devices_and_precision(tmp_path):
    path, _ = m.add_bias(tmp_path / "a.onnx")
    with pytest.raises(
        ic.BackendError, match=r"unknown option.*'cache_dri'.*did you mean 'cache_dir'.*Valid options"
    ):
        ov_load(path, options={"cache_dri": "/tmp"})
    with pytest.raises(ic.BackendError, match="performance_hint='fast' is invalid"):
        ov_load(path, options={"performance_hint": "fast"})
    with pytest.raises(ic.BackendError, match="num_requests=0 is invalid"):
        ov_load(path, options={"num_requests": 0})
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("")
    with pytest.raises(ic.BackendError, match=r"cache_dir='.*a-file' cannot be used as a directory"):
        ov_load(path, options={"cache_dir": str(in_the_way)})  # was a raw FileExistsError
    with pytest.raises(ic.BackendError, match="reshape names input 'nope'"):
        ov_load(path, options={"reshape": {"nope": [1, 16]}})
    with pytest.raises(ic.ModelLoadError, match="Unsupported property NOT_A_PROPERTY"):
        ov_load(path, options={"config": {"NOT_A_PROPERTY": 1}})
    with pytest.raises(ic.BackendError, match=r"unknown device 'tpu'.*CPU"):
        ov_load(path, device="tpu")
    if not any(d.startswith("GPU") for d in ov.Core().available_devices):
        with pytest.raises(
            ic.BackendUnavailableError, match=r"device 'GPU' is not available here; OpenVINO sees: CPU"
        ):
            ov_load(path, device="GPU")
    with pytest.raises(ic.BackendError, match="int8 model is made by quantizing"):
        ov_load(path, precision="int8")


def test_string_tensors_are_refused_clearly(tmp_path):
    path = m.identity(tmp_path / "s.onnx", TensorProto.STRING)
    with pytest.raises(ic.ModelLoadError, match=r"'x'.*string tensor.*backend='ort'"):
        ov_load(path)


def test_unreadable_model_is_a_model_load_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ic.ModelLoadError, match=r"openvino could not read .*bad\.onnx") as e:
        ov_load(bad)
    assert e.value.path == str(bad)
    assert e.value.__cause__ is not None


def test_stateful_tflite_points_to_litert():
    path = models.micro_wakeword("okay_nabu")
    with pytest.raises(ic.ModelLoadError, match=r"RESOURCE.*use backend='litert'"):
        ov_load(path)


def test_ir_without_its_weights_says_so(tmp_path):
    path, _ = matmul(tmp_path / "mm.onnx")
    xml = tmp_path / "mm.xml"
    ov.save_model(ov.Core().read_model(str(path)), str(xml), compress_to_fp16=False)
    xml.with_suffix(".bin").unlink()
    with pytest.raises(ic.ModelLoadError, match=r"there is no mm\.bin"):
        ic.load(xml)


def test_fp16_request_reports_what_was_compiled(tmp_path, caplog):
    path, w = matmul(tmp_path / "mm.onnx")
    with ov_load(path, precision="fp16") as eng:
        got = eng.metadata["inference_precision"]
        assert got in ("f16", "bf16", "f32")
        if got != "f16":  # a CPU without fp16 arithmetic: OpenVINO picks another, and we say so
            assert "asked for f16 inference on CPU, OpenVINO compiled" in caplog.text
        x = np.ones((1, 8), np.float32)
        np.testing.assert_allclose(eng.run(x)["y"], x @ w, rtol=2e-2, atol=2e-2)


def test_closed_engine_and_binding(tmp_path):
    path, _ = m.add_bias(tmp_path / "a.onnx")
    eng = ov_load(path)
    io = eng.bind({"x": (1, 16)})
    eng.close()
    eng.close()  # idempotent
    with pytest.raises(ic.EngineClosedError):
        eng.run(np.zeros((1, 16), np.float32))
    with pytest.raises(ic.EngineClosedError):
        eng.bind({"x": (1, 16)})
    with pytest.raises(ic.EngineClosedError):
        io.run()


# -- real models -----------------------------------------------------------------------------------
def _model(fetch, *args):
    try:
        return fetch(*args)
    except models.ModelUnavailable as e:
        pytest.skip(f"model unavailable here: {e}")


def test_silero_if_variant_is_a_clear_model_load_error():
    path = _model(models.silero_vad, "")
    with pytest.raises(
        ic.ModelLoadError, match=r"silero_vad\.onnx: operators OpenVINO could not convert"
    ) as e:
        ov_load(path)
    assert e.value.path == str(path)


def test_silero_ifless_with_scalar_rate_and_state_matches_ort():
    path = _model(models.silero_vad, "ifless")
    rng = np.random.default_rng(0)
    t = np.arange(512 * 6) / 16000
    audio = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    sr = np.array(16000, np.int64)
    with ov_load(path) as eng:
        assert eng.input("sr").shape == ()
        assert eng.input("state").shape == (2, None, 128)
        state_ov = state_ort = np.zeros((2, 1, 128), np.float32)
        for chunk in audio.reshape(6, 1, 512):
            got = eng.run({"input": chunk, "state": state_ov, "sr": sr})
            want_p, want_state = sess.run(None, {"input": chunk, "state": state_ort, "sr": sr})
            np.testing.assert_allclose(got["output"], want_p, atol=1e-6)
            # f32 on both sides; one state element of the first step differs by 1.4e-4 (OpenVINO's
            # activation kernels), everything else by ~1e-6
            np.testing.assert_allclose(got["stateN"], want_state, atol=3e-4)
            assert cosine(got["stateN"], want_state) > 0.999999
            state_ov, state_ort = got["stateN"], want_state
        with eng.bind({"input": (1, 512), "state": (2, 1, 128), "sr": ()}) as io:
            io.inputs["input"][...] = audio[:512]
            io.inputs["sr"][...] = 16000
            io.run()
            np.testing.assert_array_equal(
                io.outputs["output"],
                eng.run({"input": audio[None, :512], "state": np.zeros((2, 1, 128), np.float32), "sr": sr})[
                    "output"
                ],
            )


def test_tflite_hand_landmark_matches_litert_and_bf16_changes_numerics():
    path = _model(models.mediapipe, "hand_landmark_lite")
    x = np.random.default_rng(0).random((1, 224, 224, 3), dtype=np.float32)
    with ov_load(path) as eng:
        assert eng.inputs[0].shape == (1, 224, 224, 3)
        f32 = eng.run(x)
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        Interpreter = None
    if Interpreter is not None:
        interp = Interpreter(model_path=str(path))
        interp.allocate_tensors()
        interp.set_tensor(interp.get_input_details()[0]["index"], x)
        interp.invoke()
        for d in interp.get_output_details():
            want = interp.get_tensor(d["index"])
            np.testing.assert_allclose(f32[d["name"]], want, rtol=1e-3, atol=1e-3)
            assert cosine(f32[d["name"]], want) > 0.99999
    with ov_load(path, precision="bf16") as eng:
        if eng.metadata.get("inference_precision") != "bf16":
            pytest.skip("this CPU has no bf16 arithmetic: OpenVINO runs f32 when asked for bf16")
        bf16 = eng.run(x)
    diff = max(float(np.abs(bf16[k] - f32[k]).max()) for k in f32)
    assert diff > 1e-2, "bf16 opt-in should change results on this model"


@pytest.mark.slow
def test_minilm_f32_default_matches_ort():
    tokenizers = pytest.importorskip("tokenizers")
    path = _model(models.minilm)
    tok = tokenizers.Tokenizer.from_file(str(models.minilm_tokenizer()))
    tok.enable_padding()
    enc = tok.encode_batch(["OpenVINO reads ONNX files.", "The cat sat on the mat by the door."])
    feeds = {
        "input_ids": np.array([e.ids for e in enc], np.int64),
        "attention_mask": np.array([e.attention_mask for e in enc], np.int64),
        "token_type_ids": np.array([e.type_ids for e in enc], np.int64),
    }
    want = ort_run(path, feeds)["embedding"]
    with ov_load(path) as eng:
        assert eng.metadata["inference_precision"] == "f32"
        got = eng.run(feeds)["embedding"]
    assert got.shape == (2, 384)
    assert float(np.abs(got - want).max()) < 1e-6  # measured 1.3e-7 (bf16: 1.3e-3)


def test_ppocr_det_f32_default_matches_ort_on_a_text_image():
    path = _model(models.ppocr_det)
    img = models.text_image().astype(np.float32) / 255.0  # 96 x 640, real text
    mean, std = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
    x = np.ascontiguousarray(((img - mean) / std).transpose(2, 0, 1)[None])
    want = ort_run(path, {"x": x})["sigmoid_0.tmp_0"]
    assert want.max() > 0.5  # the text is found: the comparison is not between two near-zero maps
    with ov_load(path) as eng:
        assert eng.inputs[0].shape == (None, 3, None, None)
        got = eng.run(x)["sigmoid_0.tmp_0"]
        with eng.bind({"x": x}) as io:
            io.run()
            np.testing.assert_array_equal(io.outputs["sigmoid_0.tmp_0"], got)
    assert got.shape == want.shape == (1, 1, 96, 640)
    # f32 on both sides: max abs difference 3e-5 measured here (bf16 would give cosine ~0.994)
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert cosine(got, want) > 0.999999
