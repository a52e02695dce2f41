"""The ONNX Runtime backend against raw onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

import infercore as ic
from tests import onnx_models as m

ort = pytest.importorskip("onnxruntime")

DTYPES = [
    (TensorProto.FLOAT, np.float32), (TensorProto.DOUBLE, np.float64), (TensorProto.FLOAT16, np.float16),
    (TensorProto.INT8, np.int8), (TensorProto.INT16, np.int16), (TensorProto.INT32, np.int32),
    (TensorProto.INT64, np.int64), (TensorProto.UINT8, np.uint8), (TensorProto.UINT16, np.uint16),
    (TensorProto.UINT32, np.uint32), (TensorProto.UINT64, np.uint64), (TensorProto.BOOL, np.bool_),
]


@pytest.mark.parametrize(("elem", "dtype"), DTYPES, ids=[np.dtype(d).name for _, d in DTYPES])
def test_every_numeric_dtype_run_and_bind(tmp_path, elem, dtype):
    path = m.identity(tmp_path / "id.onnx", elem)
    x = (np.arange(6) % 2 == 0) if dtype is np.bool_ else np.arange(6).astype(dtype)
    with ic.load(path) as eng:
        assert eng.inputs[0].dtype == np.dtype(dtype)
        out = eng.run(x)["y"]
        assert out.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(out, x)
        with eng.bind({"x": x.shape}) as io:
            io.inputs["x"][...] = x
            io.run()
            np.testing.assert_array_equal(io.outputs["y"], x)


def test_bfloat16_through_ml_dtypes(tmp_path):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    path = m.identity(tmp_path / "bf.onnx", TensorProto.BFLOAT16)
    x = np.array([1.5, -2.0, 3.25, 0.0], dtype=ml_dtypes.bfloat16)
    with ic.load(path) as eng:
        assert eng.inputs[0].dtype == np.dtype(ml_dtypes.bfloat16)
        out = eng.run(x)["y"]
        assert out.dtype == x.dtype
        np.testing.assert_array_equal(out.astype(np.float32), x.astype(np.float32))
        with eng.bind({"x": (4,)}) as io:
            io.inputs["x"][...] = x
            io.run()
            np.testing.assert_array_equal(io.outputs["y"].astype(np.float32), x.astype(np.float32))


def test_strings_run_but_cannot_bind(tmp_path):
    path = m.identity(tmp_path / "s.onnx", TensorProto.STRING)
    with ic.load(path) as eng:
        assert eng.inputs[0].dtype == np.dtype(object)
        out = eng.run(np.array(["a", "bc"]))["y"]
        assert out.tolist() == ["a", "bc"]
        with pytest.raises(ic.InputSpecError, match="string tensor"):
            eng.bind({"x": (2,)})


def test_string_tensors_take_text_only(tmp_path):
    """ORT would turn 1.5, True or None into text: infercore refuses anything but str (and UTF-8
    bytes, decoded) rather than let the runtime stringify it."""
    path = m.identity(tmp_path / "s.onnx", TensorProto.STRING)
    with ic.load(path) as eng:
        assert eng.run(["a", "é"])["y"].tolist() == ["a", "é"]
        assert eng.run(np.array(["a", b"bc"], dtype=object))["y"].tolist() == ["a", "bc"]
        text = np.array(["ab", "cd"], dtype=np.dtypes.StringDType())  # numpy 2's variable-width strings
        assert eng.run(text)["y"].tolist() == ["ab", "cd"]
        for bad, what in (([1.5, True], "float64"), ([1, 2], "int64"),
                          (["a", None], "NoneType"), (np.array([1, "a"], dtype=object), "int 1")):  # fmt: skip
            with pytest.raises(ic.InputSpecError, match=f"(?s)'x'.*{what}"):
                eng.run(bad)


def test_bit_exact_against_raw_onnxruntime(tmp_path):
    path, _ = m.mlp(tmp_path / "mlp.onnx", d_in=32, d_hidden=64, d_out=10)
    x = np.random.default_rng(0).standard_normal((7, 32)).astype(np.float32)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    raw = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, {"x": x})
    with ic.load(path, threads=1) as eng:
        out = eng.run(x)
        np.testing.assert_array_equal(out["logits"], raw[0])
        np.testing.assert_array_equal(out["probs"], raw[1])
        with eng.bind({"x": x.shape}) as io:
            io.inputs["x"][...] = x
            io.run()
            np.testing.assert_array_equal(io.outputs["probs"], raw[1])


def test_data_dependent_output_falls_back_and_stays_right(tmp_path):
    path = m.nonzero(tmp_path / "nz.onnx")
    with ic.load(path) as eng, eng.bind({"x": (6,)}) as io:
        for x in ([1, 0, 2, 0, 0, 3], [0, 0, 0, 0, 0, 1], [1, 1, 1, 1, 1, 1], [0] * 6):
            io.inputs["x"][...] = x
            io.run()
            np.testing.assert_array_equal(io.outputs["y"], np.array(np.nonzero(x)))
            np.testing.assert_array_equal(eng.run(np.array(x, np.float32))["y"], np.array(np.nonzero(x)))


def test_data_dependent_output_never_leaves_the_callers_array(tmp_path):
    # it fell back to a runtime-allocated array: io.outputs["y"] was no longer the caller's
    path = m.nonzero(tmp_path / "nz.onnx")
    y = np.full((1, 3), -1, np.int64)
    with ic.load(path) as eng, eng.bind({"x": (6,)}, outputs={"y": y}) as io:
        io.inputs["x"][...] = [1, 0, 2, 0, 0, 3]
        io.run()
        assert io.outputs["y"] is y
        np.testing.assert_array_equal(y, np.array(np.nonzero(io.inputs["x"])))
        io.inputs["x"][...] = [1, 1, 0, 0, 0, 0]
        with pytest.raises(ic.InputSpecError, match=r"output 'y': onnxruntime computed shape \(1, 2\) for this "
                           r"run, but the array bound for it has shape \(1, 3\)"):
            io.run()
        assert io.outputs["y"] is y


def test_wrongly_declared_output_shape_is_survived(tmp_path):
    """Real models declare wrong output shapes; the runtime's shape wins."""
    path = m.save(tmp_path / "lie.onnx", [helper.make_node("Identity", ["x"], ["y"])],
                  [m.vi("x", TensorProto.FLOAT, ["n"])], [m.vi("y", TensorProto.FLOAT, [2])])
    with ic.load(path) as eng, eng.bind({"x": (5,)}) as io:
        io.inputs["x"][...] = np.arange(5)
        io.run()
        np.testing.assert_array_equal(io.outputs["y"], np.arange(5, dtype=np.float32))


def test_wrongly_declared_output_rank_is_survived_on_every_run(tmp_path):
    """ddddocr's OCR model declares [1, seqlen] and produces [T, 1, C]: ORT refuses any bound array
    of another rank than declared, so that output stays runtime-allocated, run after run."""
    path = m.save(tmp_path / "rank.onnx", [helper.make_node("Identity", ["x"], ["y"])],
                  [m.vi("x", TensorProto.FLOAT, ["a", 3])], [m.vi("y", TensorProto.FLOAT, ["n"])])
    with ic.load(path) as eng, eng.bind({"x": (2, 3)}) as io:
        for k in range(3):
            x = np.arange(6, dtype=np.float32).reshape(2, 3) * (k + 1)
            io.inputs["x"][...] = x
            io.run()
            np.testing.assert_array_equal(io.outputs["y"], x)


def test_several_wrongly_declared_outputs_are_survived_quietly(tmp_path, capfd):
    """Split declares [2] and [4] but the data asks for [4, 2]: each bound output falls back in
    turn, and the expected failures are not printed as onnxruntime ERRORs."""
    f, i64 = TensorProto.FLOAT, TensorProto.INT64
    path = m.save(
        tmp_path / "split.onnx",
        [helper.make_node("Split", ["x", "split"], ["a", "b"], axis=0)],
        [m.vi("x", f, [6]), m.vi("split", i64, [2])],
        [m.vi("a", f, [2]), m.vi("b", f, [4])],
        opset=13,
    )
    x, split = np.arange(6, dtype=np.float32), np.array([4, 2], np.int64)
    with ic.load(path) as eng, eng.bind({"x": (6,), "split": (2,)}) as io:
        io.inputs["x"][...], io.inputs["split"][...] = x, split
        for _ in range(2):
            io.run()
            np.testing.assert_array_equal(io.outputs["a"], x[:4])
            np.testing.assert_array_equal(io.outputs["b"], x[4:])
    assert "ExecuteKernel" not in capfd.readouterr().err


def test_unmapped_tensor_type_is_named_plainly(tmp_path):
    path = m.save(
        tmp_path / "f8.onnx",
        [helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT8E4M3FN)],
        [m.vi("x", TensorProto.FLOAT, [2])],
        [m.vi("y", TensorProto.FLOAT8E4M3FN, [2])],
        opset=19,
    )
    with pytest.raises(ic.ModelLoadError, match=r"'y' has type tensor\(float8e4m3fn\).*supported: ") as e:
        ic.load(path, "ort")
    assert "sequences" not in str(e.value)


def test_session_options_are_validated_and_applied(tmp_path):
    path, w = m.mlp(tmp_path / "mlp.onnx")
    x = np.ones((2, 8), np.float32)
    with ic.load(path, options={"graph_optimization_level": "disable", "intra_op_num_threads": 1,
                                "session_config": {"session.intra_op.allow_spinning": "0"},
                                "free_dimension_overrides": {"batch": 2}}) as eng:
        np.testing.assert_allclose(eng.run(x)["logits"], m.mlp_numpy(x, w)[0], rtol=1e-5, atol=1e-5)
    with pytest.raises(ic.BackendError, match=r"unknown option\(s\) 'graph_optimisation_level' \(did you mean 'graph_optimization_level'\?\)"):
        ic.load(path, options={"graph_optimisation_level": "all"})
    with pytest.raises(ic.BackendError, match="graph_optimization_level='fast' is invalid") as e:
        ic.load(path, options={"graph_optimization_level": "fast"})
    assert str(e.value).count("disable, basic") == 1  # the valid values, said once
    for bad in (5, -1):
        with pytest.raises(ic.BackendError, match=f"log_severity_level={bad} is invalid: out of range; expected int 0-4"):
            ic.load(path, options={"log_severity_level": bad})
    with pytest.raises(ic.BackendError, match="intra_op_num_threads='2' is invalid"):
        ic.load(path, options={"intra_op_num_threads": "2"})


def test_cuda_without_provider_names_the_package(tmp_path):
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    path, _ = m.add_bias(tmp_path / "a.onnx")
    with pytest.raises(ic.BackendUnavailableError, match="onnxruntime-gpu"):
        ic.load(path, device="cuda:0")
    with pytest.raises(ic.BackendError, match="unknown device 'npu'"):
        ic.load(path, device="npu")


def test_providers_option_takes_only_providers_this_onnxruntime_has(tmp_path):
    # an unknown name loaded silently on the CPU (ORT warns and skips it)
    path, b = m.add_bias(tmp_path / "a.onnx")
    have = ", ".join(ort.get_available_providers())
    with pytest.raises(ic.BackendError, match=rf"unknown execution provider 'NopeExecutionProvider'.*has {have}$"):
        ic.load(path, options={"providers": ["NopeExecutionProvider", "CPUExecutionProvider"]})
    missing = [p for p in ort.get_all_providers() if p not in ort.get_available_providers()]
    if missing:
        with pytest.raises(ic.BackendUnavailableError, match=rf"provider '{missing[0]}' is not in this onnxruntime"):
            ic.load(path, options={"providers": [missing[0]]})
    for bad in ("CPUExecutionProvider", []):
        with pytest.raises(ic.BackendError, match=r"option providers=.* is invalid"):
            ic.load(path, options={"providers": bad})
    for good in (["CPUExecutionProvider"], [("CPUExecutionProvider", {})]):
        with ic.load(path, options={"providers": good}) as eng:
            assert eng.metadata["providers"] == "CPUExecutionProvider"
            np.testing.assert_array_equal(eng.run(np.zeros((1, 16), np.float32))["y"], b)


def test_precision_other_than_model_is_refused(tmp_path):
    path, _ = m.add_bias(tmp_path / "a.onnx")
    with pytest.raises(ic.BackendError, match=r"ic\.calibrate"):
        ic.load(path, precision="int8")


def test_runtime_failure_keeps_cause(tmp_path):
    """A shape the declared spec allows but the graph cannot compute: ORT's error, translated."""
    path = m.save(tmp_path / "mm.onnx", [helper.make_node("MatMul", ["a", "b"], ["y"])],
                  [m.vi("a", TensorProto.FLOAT, ["n", "k"]), m.vi("b", TensorProto.FLOAT, ["k2", "m"])],
                  [m.vi("y", TensorProto.FLOAT, ["n", "m"])])
    with ic.load(path) as eng:
        with pytest.raises(ic.BackendRuntimeError, match=r"onnxruntime failed running mm\.onnx") as e:
            eng.run({"a": np.ones((2, 3), np.float32), "b": np.ones((4, 2), np.float32)})
        assert e.value.__cause__ is not None
        assert eng.stats.errors == 1


def test_metadata_and_probe():
    info = ic.available_backends()["ort"]
    assert info.available and info.version == ort.__version__ and "cpu" in info.devices


def test_share_weights_sessions_read_one_copy_and_answer_as_raw_onnxruntime(tmp_path):
    path, _ = m.mlp(tmp_path / "mlp.onnx", d_in=64, d_hidden=256)
    x = np.random.default_rng(1).standard_normal((5, 64)).astype(np.float32)
    raw = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    a = ic.load(path, threads=2, options={"share_weights": True})
    b = ic.load(path, threads=1, options={"share_weights": True})
    plain = ic.load(path, threads=1)
    try:
        shared_a = a._backend._sess._infercore_shared_weights
        assert shared_a is b._backend._sess._infercore_shared_weights  # one copy for both sessions
        assert {arr.nbytes >= 1024 for arr in shared_a.arrays.values()} == {True}
        assert shared_a.arrays  # the weight matrices are among them
        assert getattr(plain._backend._sess, "_infercore_shared_weights", None) is None
        for eng in (a, b):
            out = eng.run(x)
            np.testing.assert_array_equal(out["logits"], raw[0])
            np.testing.assert_array_equal(out["probs"], raw[1])
    finally:
        for eng in (a, b, plain):
            eng.close()


def test_share_weights_must_be_a_bool(tmp_path):
    path, _ = m.mlp(tmp_path / "mlp.onnx")
    with pytest.raises(ic.BackendError, match="share_weights=1 is invalid"):
        ic.load(path, options={"share_weights": 1})


def test_values_the_runtime_refuses_are_the_callers_error(tmp_path):
    """ONNX Runtime's INVALID_ARGUMENT (a token id past the vocabulary) is a RuntimeInputError: an
    InputSpecError the server answers 400; run() and the bound path alike."""
    path, table = m.embedding(tmp_path / "emb.onnx")
    with ic.load(path, "ort") as eng:
        ids = np.array([[1, 9, 0]], np.int64)
        np.testing.assert_array_equal(eng.run({"ids": ids})["y"], table[ids])
        bad = np.array([[1, 10, 0]], np.int64)
        with pytest.raises(ic.RuntimeInputError, match=r"refused the inputs of emb\.onnx.*out of data bounds") as info:
            eng.run({"ids": bad})
        assert isinstance(info.value, ic.InputSpecError) and isinstance(info.value, ic.BackendRuntimeError)
        assert type(info.value.__cause__).__name__ == "InvalidArgument"
        io = eng.bind({"ids": bad.shape})
        io.inputs["ids"][...] = bad
        with pytest.raises(ic.RuntimeInputError):
            io.run()
        io.inputs["ids"][...] = ids
        io.run()
        np.testing.assert_array_equal(io.outputs["y"], table[ids])
