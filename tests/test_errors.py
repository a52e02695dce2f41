"""Every bad input gets a clear error naming the tensor, the expected and the given."""

from __future__ import annotations

import re

import numpy as np
import pytest

import infercore as ic
from tests import onnx_models as m

pytest.importorskip("onnxruntime")


@pytest.fixture(params=["ort", "reference"])
def eng(request, tmp_path):
    path, _ = m.mlp(tmp_path / "mlp.onnx")
    with ic.load(path, backend=request.param) as e:
        yield e


def test_error_tree():
    assert issubclass(ic.BackendUnavailableError, ic.BackendError) and issubclass(ic.BackendUnavailableError, ImportError)
    assert issubclass(ic.UnknownBackendError, KeyError) and issubclass(ic.BackendRuntimeError, ic.BackendError)
    assert issubclass(ic.InputSpecError, ValueError) and issubclass(ic.ModelLoadError, ic.InfercoreError)
    assert issubclass(ic.QueueFullError, ic.BatchingError) and issubclass(ic.DeadlineExceededError, TimeoutError)
    assert issubclass(ic.CalibrationError, ic.InfercoreError)


def test_missing_input(tmp_path):
    path = m.two_inputs(tmp_path / "two.onnx")
    with ic.load(path) as eng, pytest.raises(ic.InputSpecError, match=r"missing input\(s\) 'b'") as e:
        eng.run({"a": np.ones((1, 4), np.float32)})
    assert e.value.tensor == "b"


def test_extra_and_misnamed_input(eng):
    x = np.ones((1, 8), np.float32)
    with pytest.raises(ic.InputSpecError, match=r"unknown input\(s\) 'y'.*x: float32 \[batch, 8\]"):
        eng.run({"x": x, "y": x})
    with pytest.raises(ic.InputSpecError, match=r"missing input\(s\) 'x'; unknown input\(s\) 'X'"):
        eng.run({"X": x})


def test_wrong_dtype_says_which_cast(eng):
    with pytest.raises(ic.InputSpecError, match=r"'x': expected dtype float32, got float64.*x\.astype\(np\.float32\)"):
        eng.run(np.ones((1, 8)))  # no silent float64 -> float32
    with pytest.raises(ic.InputSpecError, match="got int64"):
        eng.run(np.ones((1, 8), np.int64))


def test_python_floats_never_become_ints(tmp_path):
    path = m.identity(tmp_path / "i.onnx", m.TensorProto.INT64)
    with ic.load(path) as eng, pytest.raises(ic.InputSpecError, match="expected dtype int64, got float64"):
        eng.run([1.5, 2.0])


def test_wrong_rank_and_dimension(eng):
    with pytest.raises(ic.InputSpecError, match=r"rank 1 where the model takes rank 2"):
        eng.run(np.ones(8, np.float32))
    with pytest.raises(ic.InputSpecError, match=r"expected shape \[batch, 8\], got \(2, 7\): dimension 1 must be 8, got 7"):
        eng.run(np.ones((2, 7), np.float32))


def test_ragged_list(eng):
    with pytest.raises(ic.InputSpecError, match="'x'"):
        eng.run([[1.0, 2.0], [3.0]])


def test_unknown_output(eng):
    with pytest.raises(ic.InputSpecError, match=r"no output 'nope'; its outputs are: logits, probs"):
        eng.run(np.ones((1, 8), np.float32), outputs=["nope"])


def test_bind_rejects_non_contiguous_read_only_and_wrong_dtype(eng):
    base = np.ones((8, 4), np.float32)
    with pytest.raises(ic.InputSpecError, match=r"'x'.*C-contiguous"):
        eng.bind({"x": base.T})  # (4, 8) view with swapped strides
    ro = np.ones((1, 8), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ic.InputSpecError, match=r"'x'.*read-only"):
        eng.bind({"x": ro})
    with pytest.raises(ic.InputSpecError, match=r"'x': expected dtype float32, got float64"):
        eng.bind({"x": np.ones((1, 8))})
    with pytest.raises(ic.InputSpecError, match=r"dimension 1 must be 8"):
        eng.bind({"x": (1, 9)})
    with pytest.raises(ic.InputSpecError, match=r"output 'probs'.*C-contiguous"):
        eng.bind({"x": (2, 8)}, outputs={"probs": np.ones((4, 2), np.float32).T})


def test_bound_buffers_cannot_be_replaced(eng):
    with eng.bind({"x": (1, 8)}) as io:
        with pytest.raises(TypeError, match=r"io\.inputs\['x'\]\[\.\.\.\] = value"):
            io.inputs["x"] = np.ones((1, 8), np.float32)
        with pytest.raises(KeyError, match="no bound input named 'y'"):
            io.inputs["y"]


def test_missing_and_corrupt_model_files(tmp_path):
    with pytest.raises(ic.ModelLoadError, match="not found") as e:
        ic.load(tmp_path / "nope.onnx")
    assert e.value.path.endswith("nope.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00 not a protobuf at all \xff" * 10)
    for backend in ("ort", "reference"):
        with pytest.raises(ic.ModelLoadError, match=r"bad\.onnx") as e:
            ic.load(bad, backend=backend)
        assert e.value.__cause__ is not None
    with pytest.raises(ic.ModelLoadError, match="directory"):
        ic.load(tmp_path)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")  # protobuf reads it as an empty model: the reference backend opened it
    for backend in ("ort", "reference"):
        with pytest.raises(ic.ModelLoadError, match=r"empty\.onnx") as e:
            ic.load(empty, backend=backend)
        assert e.value.path.endswith("empty.onnx")


def test_unknown_backend_and_suffix(tmp_path):
    path, _ = m.add_bias(tmp_path / "a.onnx")
    with pytest.raises(ic.UnknownBackendError, match=r"no backend named 'ortt'; did you mean 'ort'\?"):
        ic.load(path, backend="ortt")
    other = tmp_path / "model.pt"
    other.write_bytes(b"x")
    with pytest.raises(ic.UnknownBackendError, match=r"no backend reads 'model\.pt'"):
        ic.load(other)


def test_reference_refuses_unknown_ops(tmp_path):
    path = m.nonzero(tmp_path / "nz.onnx")
    with pytest.raises(ic.ModelLoadError, match="no numpy implementation of NonZero"):
        ic.load(path, backend="reference")


def test_bad_arguments_to_load(tmp_path):
    # one argument error type everywhere (ArgumentError, a ValueError); threads=True was taken as 1 thread
    path, _ = m.add_bias(tmp_path / "a.onnx")
    for precision in ("fp8", 16, ""):
        with pytest.raises(ic.ArgumentError, match=rf"^precision: expected one of fp32, fp16, bf16, int8.*got {precision!r}"):
            ic.load(path, precision=precision)
    for threads in (0, -1, True, 1.5, "2"):
        with pytest.raises(ic.ArgumentError, match=rf"^threads: expected a positive integer or None, got {threads!r}"):
            ic.load(path, threads=threads)
    with ic.load(path, precision="Float32", threads=1) as eng:
        assert eng.precision == "fp32"


def test_bind_refuses_shapes_that_are_not_sizes(eng):
    # (2.7, 8) was bound as (2, 8); a negative size gave an empty reason
    for shape, bad in (((2.7, 8), "2.7"), ((True, 8), "True"), ((np.float32(2), 8), "np.float32(2.0)")):
        with pytest.raises(ic.InputSpecError, match=rf"input 'x': bind\(\) takes a shape.*dimension {re.escape(bad)} is not an int"):
            eng.bind({"x": shape})
    with pytest.raises(ic.InputSpecError, match=r"input 'x': bind\(\) takes a shape.*got 5"):
        eng.bind({"x": 5})
    with pytest.raises(ic.InputSpecError, match=r"got \(-1, 8\): dimension 0 is -1, and a size cannot be negative"):
        eng.bind({"x": (-1, 8)})
    with eng.bind({"x": (np.int64(3), 8)}) as io:  # numpy ints are sizes
        assert io.inputs["x"].shape == (3, 8)


def test_bind_too_big_to_allocate_names_the_tensor_and_bytes(eng):
    # a raw numpy MemoryError (or a wrapped np.prod and a reshape error) came out of bind()
    for rows, nbytes in ((2**45, 2**45 * 32), (2**62, 2**62 * 32)):  # past any address space
        with pytest.raises(ic.InputSpecError, match=rf"input 'x': cannot allocate a buffer of shape \({rows}, 8\) \({nbytes:,} bytes of float32\)"):
            eng.bind({"x": (rows, 8)})


def test_empty_outputs_list_is_refused_everywhere(eng):
    # ORT raised BackendRuntimeError, the other backends returned {}
    x = np.ones((1, 8), np.float32)
    for empty in ([], ()):
        with pytest.raises(ic.InputSpecError, match=r"asks for no output; pass None.*logits, probs"):
            eng.run(x, outputs=empty)
    assert list(eng.run(x, outputs=None)) == ["logits", "probs"]


@pytest.mark.parametrize("backend", ["ort", "reference"])
@pytest.mark.parametrize(
    ("elem", "values", "message"),
    [
        (m.TensorProto.INT32, [2**40, 1], r"'x': value 1099511627776 is out of range for int32 \(-2147483648 to 2147483647\)"),
        (m.TensorProto.INT32, [1, 2**31], r"value 2147483648 is out of range for int32"),
        (m.TensorProto.INT32, [-(2**31) - 1], r"value -2147483649 is out of range for int32"),
        (m.TensorProto.UINT8, [256, 3], r"value 256 is out of range for uint8 \(0 to 255\)"),
        (m.TensorProto.UINT8, [-1], r"value -1 is out of range for uint8"),
        (m.TensorProto.FLOAT16, [70000.0, 0.0], r"'x': value 70000\.0 overflows float16 \(largest finite magnitude 65504\.0\)"),
        (m.TensorProto.FLOAT16, [70000], r"value 70000 overflows float16"),
        (m.TensorProto.FLOAT, [1e300], r"value 1e\+300 overflows float32"),
        (m.TensorProto.INT64, [True, False], r"'x': expected int64 values, got Python bools"),
        (m.TensorProto.FLOAT, [True], r"'x': expected float32 values, got Python bools"),
    ],
)
def test_python_values_that_do_not_fit_the_dtype_are_refused(tmp_path, backend, elem, values, message):
    # they were cast with astype(): 2**40 became 0 in int32, 70000 became inf in float16
    path = m.identity(tmp_path / "i.onnx", elem)
    with ic.load(path, backend=backend) as eng, pytest.raises(ic.InputSpecError, match=message) as e:
        eng.run(values)
    assert e.value.tensor == "x"


@pytest.mark.parametrize(
    ("elem", "values"),
    [
        (m.TensorProto.INT32, [2**31 - 1, -(2**31), 0]),
        (m.TensorProto.UINT8, [0, 255]),
        (m.TensorProto.FLOAT16, [65504.0, -65504, 1e-3]),
        (m.TensorProto.FLOAT, [3e38, float("inf"), -float("inf")]),  # inf given is inf meant
        (m.TensorProto.BOOL, [True, False]),
    ],
)
def test_python_values_in_range_keep_their_value(tmp_path, elem, values):
    path = m.identity(tmp_path / "i.onnx", elem)
    dtype = m.helper.tensor_dtype_to_np_dtype(elem)
    with ic.load(path) as eng:
        out = eng.run(values)["y"]
    assert out.dtype == dtype
    np.testing.assert_array_equal(out.astype(np.float64), np.array(values, np.float64).astype(dtype))
    assert [float(v) for v in out] == pytest.approx([float(v) for v in values], rel=1e-3)


@pytest.mark.parametrize("as_list", [False, True])
def test_bytes_for_a_string_input_are_read_as_utf8(tmp_path, as_list):
    # a |S array became the text "b'a'" (astype(object) keeps bytes, ORT stringifies them)
    path = m.identity(tmp_path / "s.onnx", m.TensorProto.STRING)
    given = [b"a", "é".encode(), b""]
    with ic.load(path) as eng:
        out = eng.run(given if as_list else np.array(given))["y"]
        assert out.tolist() == [b.decode("utf-8") for b in given]
        with pytest.raises(ic.InputSpecError, match=r"input 'x' is a string tensor.*element \(1,\) \(b'\\xff'\) is not UTF-8"):
            eng.run(np.array([b"a", b"\xff"]))


def test_inputs_sharing_a_symbolic_dimension_must_agree(tmp_path):
    # a [batch, 4] and b [batch, 4]: batch 2 against batch 1 was accepted and broadcast
    path = m.two_inputs(tmp_path / "two.onnx")
    ort = pytest.importorskip("onnxruntime")
    a, b = np.ones((2, 4), np.float32), np.ones((1, 4), np.float32)
    raw = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"a": a, "b": b})
    assert raw[0].shape == (2, 4)  # the runtime itself broadcasts and says nothing
    for backend in ("ort", "reference"):
        with ic.load(path, backend=backend) as eng:
            message = (r"inputs 'a' and 'b' share the dimension 'batch' \(axis 0 of 'a', axis 0 of 'b'\), "
                       r"which has one size: got batch=2 in 'a' \(2, 4\) but batch=1 in 'b' \(1, 4\)")
            with pytest.raises(ic.InputSpecError, match=message) as e:
                eng.run({"a": a, "b": b})
            assert e.value.tensor == "b"
            with pytest.raises(ic.InputSpecError, match=message):
                eng.bind({"a": (2, 4), "b": (1, 4)})
            with pytest.raises(ic.InputSpecError, match="share the dimension 'batch'"):
                eng.bind({"a": a, "b": b})
            np.testing.assert_array_equal(eng.run({"a": a, "b": 3 * a})["z"], 3 * a)


def test_placeholder_dimension_names_are_not_cross_checked(tmp_path):
    # exporters write "?" or unk__N for every unknown dimension: those are not one size
    nodes = [m.helper.make_node("Identity", ["a"], ["y"]), m.helper.make_node("Identity", ["b"], ["z"])]
    shape_a, shape_b = ["?", "unk__1", 3, "7"], ["?", "unk__1", 3, "7"]
    path = m.save(tmp_path / "p.onnx", nodes,
                  [m.vi("a", m.TensorProto.FLOAT, shape_a), m.vi("b", m.TensorProto.FLOAT, shape_b)],
                  [m.vi("y", m.TensorProto.FLOAT, shape_a), m.vi("z", m.TensorProto.FLOAT, shape_b)])
    a, b = np.zeros((1, 2, 3, 4), np.float32), np.ones((5, 6, 3, 7), np.float32)
    with ic.load(path) as eng:
        out = eng.run({"a": a, "b": b})
        np.testing.assert_array_equal(out["y"], a)
        np.testing.assert_array_equal(out["z"], b)
