"""Engine API over the ORT and reference backends, against numpy."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import infercore as ic
from tests import onnx_models as m

pytest.importorskip("onnxruntime")

BACKENDS = ["ort", "reference"]


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture
def mlp(tmp_path):
    return m.mlp(tmp_path / "mlp.onnx")


def test_specs_keep_dynamic_dims_and_symbolic_names(tmp_path, backend):
    path, _ = m.add_bias(tmp_path / "add.onnx")
    with ic.load(path, backend=backend) as eng:
        (x,) = eng.inputs
        assert x == ic.TensorSpec("x", np.dtype(np.float32), (None, 16), ("batch", None))
        assert eng.outputs[0].shape == (None, 16)
        assert eng.metadata["author"] == "tests"
        assert eng.backend_name == backend


def test_run_matches_numpy(mlp, backend):
    path, w = mlp
    x = np.random.default_rng(1).standard_normal((5, 8)).astype(np.float32)
    logits, probs = m.mlp_numpy(x, w)
    with ic.load(path, backend=backend) as eng:
        out = eng.run({"x": x})
        assert list(out) == ["logits", "probs"]
        np.testing.assert_allclose(out["logits"], logits, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(out["probs"], probs, rtol=1e-5, atol=1e-6)
        # single-input shorthand, __call__, and output selection
        np.testing.assert_array_equal(eng(x)["probs"], out["probs"])
        only = eng.run(x, outputs=["probs"])
        assert list(only) == ["probs"]


def test_run_outputs_are_caller_owned(mlp, backend):
    path, _ = mlp
    x = np.ones((2, 8), np.float32)
    with ic.load(path, backend=backend) as eng:
        a = eng.run(x)["probs"]
        keep = a.copy()
        a[...] = -1  # writing into our result must not change the next one
        b = eng.run(x)["probs"]
        np.testing.assert_array_equal(b, keep)
        assert not np.shares_memory(a, b)


def test_dynamic_batch_sizes(mlp, backend):
    path, w = mlp
    with ic.load(path, backend=backend) as eng:
        for n in (1, 3, 17):
            x = np.random.default_rng(n).standard_normal((n, 8)).astype(np.float32)
            np.testing.assert_allclose(eng.run(x)["logits"], m.mlp_numpy(x, w)[0], rtol=1e-5, atol=1e-5)


def test_bind_zero_copy_path(mlp, backend):
    path, w = mlp
    x = np.random.default_rng(2).standard_normal((4, 8)).astype(np.float32)
    with ic.load(path, backend=backend) as eng, eng.bind({"x": (4, 8)}) as io:
        buf = io.inputs["x"]
        assert buf.flags.c_contiguous and buf.flags.writeable and buf.ctypes.data % 64 == 0
        io.inputs["x"][...] = x
        io.run()
        y = io.outputs["probs"]
        np.testing.assert_allclose(y, m.mlp_numpy(x, w)[1], rtol=1e-5, atol=1e-6)
        # the same buffers are reused: new inputs, same output array object
        io.inputs["x"][...] = 2 * x
        io.run()
        assert io.outputs["probs"] is y
        np.testing.assert_allclose(y, m.mlp_numpy(2 * x, w)[1], rtol=1e-5, atol=1e-6)
        assert eng.stats.bound_runs == 2


def test_bind_in_place_on_caller_arrays(mlp, backend):
    path, w = mlp
    x = np.random.default_rng(3).standard_normal((2, 8)).astype(np.float32)
    out = np.zeros((2, 4), np.float32)
    with ic.load(path, backend=backend) as eng, eng.bind({"x": x}, outputs={"probs": out}) as io:
        assert io.inputs["x"] is x
        io.run()
        np.testing.assert_allclose(out, m.mlp_numpy(x, w)[1], rtol=1e-5, atol=1e-6)
        x[...] = 0  # the runtime reads the caller's array in place
        io.run()
        np.testing.assert_allclose(out, m.mlp_numpy(x, w)[1], rtol=1e-5, atol=1e-6)


def test_bound_results_equal_run(mlp, backend):
    path, _ = mlp
    x = np.random.default_rng(4).standard_normal((3, 8)).astype(np.float32)
    with ic.load(path, backend=backend) as eng:
        expected = eng.run(x)
        with eng.bind({"x": x.shape}) as io:
            io.inputs["x"][...] = x
            io.run()
            for name in expected:
                np.testing.assert_array_equal(io.outputs[name], expected[name])


def test_multi_input_and_python_lists(tmp_path, backend):
    path = m.two_inputs(tmp_path / "two.onnx")
    a = np.arange(8, dtype=np.float32).reshape(2, 4)
    with ic.load(path, backend=backend) as eng:
        out = eng.run({"a": a, "b": [[2.0] * 4] * 2})  # a list has no dtype: it takes the model's
        np.testing.assert_allclose(out["z"], a * 2)
        np.testing.assert_allclose(out["w"], 1 / (1 + np.exp(-a)), rtol=1e-6)
        with pytest.raises(ic.InputSpecError, match="2 inputs"):
            eng.run(a)


def test_transpose_reshape(tmp_path, backend):
    path = m.transpose_reshape(tmp_path / "tr.onnx")
    x = np.arange(12, dtype=np.float32).reshape(2, 2, 3)
    with ic.load(path, backend=backend) as eng:
        np.testing.assert_array_equal(eng.run(x)["y"], x.transpose(0, 2, 1).reshape(2, 6))


def test_non_contiguous_input_is_accepted_by_run(mlp, backend):
    path, w = mlp
    x = np.random.default_rng(5).standard_normal((8, 6)).astype(np.float32).T  # (6, 8), F-ordered
    assert not x.flags.c_contiguous
    with ic.load(path, backend=backend) as eng:
        np.testing.assert_allclose(eng.run(x)["logits"], m.mlp_numpy(x, w)[0], rtol=1e-5, atol=1e-5)


def test_concurrent_runs_are_correct(mlp, backend):
    path, w = mlp
    errors: list[BaseException] = []
    with ic.load(path, backend=backend) as eng:

        def worker(seed: int) -> None:
            rng = np.random.default_rng(seed)
            try:
                for _ in range(30):
                    x = rng.standard_normal((seed % 3 + 1, 8)).astype(np.float32)
                    np.testing.assert_allclose(eng.run(x)["logits"], m.mlp_numpy(x, w)[0], rtol=1e-5, atol=1e-5)
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors, errors[0]


def test_stats(mlp, backend):
    path, _ = mlp
    with ic.load(path, backend=backend) as eng:
        assert eng.stats.runs == 0 and eng.stats.p50_ms is None
        for _ in range(16):
            eng.run(np.ones((1, 8), np.float32))
        with pytest.raises(ic.InputSpecError):
            eng.run(np.ones((1, 9), np.float32))
        s = eng.stats
        assert s.runs == 16 and s.bound_runs == 0
        assert s.window == 2  # every 8th call is timed
        assert 0 < s.p50_ms <= s.p99_ms <= s.max_ms
        # validation errors happen before the backend: not counted as backend errors
        assert s.errors == 0


def test_close_is_idempotent_and_stops_everything(mlp, backend):
    path, _ = mlp
    eng = ic.load(path, backend=backend)
    io = eng.bind({"x": (1, 8)})
    eng.close()
    eng.close()
    assert eng.closed
    with pytest.raises(ic.EngineClosedError):
        eng.run(np.ones((1, 8), np.float32))
    with pytest.raises(ic.EngineClosedError):
        io.run()
    with pytest.raises(ic.EngineClosedError):
        eng.bind({"x": (1, 8)})


def test_scalar_input_stays_scalar(tmp_path):
    path = m.scalar_input(tmp_path / "s.onnx")
    with ic.load(path) as eng:
        assert eng.input("s").shape == ()
        out = eng.run({"x": np.array([1, 2, 3], np.float32), "s": np.array(2.0, np.float32)})
        np.testing.assert_array_equal(out["y"], [2, 4, 6])
        out = eng.run({"x": np.array([1, 2, 3], np.float32), "s": 3.0})  # a Python float is fine
        np.testing.assert_array_equal(out["y"], [3, 6, 9])
        with eng.bind({"x": (3,), "s": ()}) as io:
            io.inputs["x"][...] = [1, 1, 1]
            io.inputs["s"][...] = 5
            io.run()
            np.testing.assert_array_equal(io.outputs["y"], [5, 5, 5])


def test_repr_names_backend_and_specs(mlp):
    path, _ = mlp
    with ic.load(path) as eng:
        r = repr(eng)
        assert "ort" in r and "x: float32 [batch, 8]" in r


def test_stats_count_every_concurrent_run(mlp, backend):
    # the count was read before the backend call and written after it: 8 threads lost most runs
    path, _ = mlp
    x = np.ones((2, 8), np.float32)
    with ic.load(path, backend=backend, threads=1) as eng:

        def runs() -> None:
            for _ in range(25):
                eng.run(x)

        def bound_runs() -> None:
            with eng.bind({"x": x.shape}) as io:
                for _ in range(25):
                    io.run()

        for target in (runs, bound_runs):
            threads = [threading.Thread(target=target) for _ in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        s = eng.stats
        assert (s.runs, s.bound_runs, s.errors) == (200, 200, 0)
        assert 0 < s.window <= 400  # about one call in eight, timed


@pytest.mark.parametrize("elem", [m.TensorProto.INT32, m.TensorProto.INT64, m.TensorProto.INT8])
def test_integer_div_truncates_toward_zero(tmp_path, backend, elem):
    # the reference backend used numpy's // (floor): -7 / 2 gave -4 where ONNX (and ORT) give -3
    path = m.save(tmp_path / "div.onnx", [m.helper.make_node("Div", ["a", "b"], ["y"])],
                  [m.vi("a", elem, ["n"]), m.vi("b", elem, ["n"])], [m.vi("y", elem, ["n"])])
    dtype = m.helper.tensor_dtype_to_np_dtype(elem)
    a = np.array([-7, 7, -7, 7, -6, 0, -1, 100], dtype)
    b = np.array([2, -2, -2, 2, 3, -5, 7, -7], dtype)
    want = [int(x / y) for x, y in zip(a.tolist(), b.tolist(), strict=True)]  # C division: truncation
    with ic.load(path, backend=backend) as eng:
        assert eng.run({"a": a, "b": b})["y"].tolist() == want


@pytest.mark.parametrize("rows", [1, 3])
def test_bound_output_array_of_the_wrong_shape_is_refused(mlp, backend, rows):
    # bound for batch 2, given a batch-3 array: the runtime wrote elsewhere and the array stayed zeros
    path, w = mlp
    out = np.zeros((rows, 4), np.float32)
    x = np.random.default_rng(6).standard_normal((2, 8)).astype(np.float32)
    message = rf"output 'probs'.*shape \(2, 4\).*shape \({rows}, 4\)"
    with ic.load(path, backend=backend) as eng:
        with pytest.raises(ic.InputSpecError, match=message) as e, eng.bind({"x": x}, outputs={"probs": out}) as io:
            io.run()  # refused at bind, or at the first run
        assert e.value.tensor == "probs"
        assert not out.any()
        # the right shape is written in place, as numpy computes it
        good = np.zeros((2, 4), np.float32)
        with eng.bind({"x": x}, outputs={"probs": good}) as io:
            io.run()
            assert io.outputs["probs"] is good
            np.testing.assert_allclose(good, m.mlp_numpy(x, w)[1], rtol=1e-5, atol=1e-6)
