"""LiteRT backend: tiny .tflite models written from the TFLite schema (no TensorFlow), checked
against numpy; real MediaPipe models checked against OpenVINO (which reads .tflite itself) and the
raw interpreter; a real quantized model (microWakeWord, int8 in, uint8 out) checked against the
raw interpreter and its own scale and zero point."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is not installed")

from ai_edge_litert import schema_py_generated as fb
from ai_edge_litert.interpreter import Interpreter
from ai_edge_litert.tools.flatbuffer_utils import convert_object_to_bytearray

import infercore as ic
from infercore.errors import (
    BackendError,
    BackendUnavailableError,
    EngineClosedError,
    ModelLoadError,
)
from infercore.specs import Quantization
from infercore.testing import models
from infercore.testing.conformance import build_tflite, mlp_case

N = 16
C = np.arange(N, dtype=np.float32)  # the constant the Add models add
XQ = Quantization(0.5, -3)  # the quantized model's input
YQ = Quantization(0.25, 10)  # and output
QC = np.linspace(-1, 1, 8).astype(np.float32)


# -- tiny models, written straight from the flatbuffer schema -----------------------------------
def _tensor(name, shape, ttype=fb.TensorType.FLOAT32, buffer=0, signature=None, q=None):
    t = fb.TensorT()
    t.name, t.shape, t.type, t.buffer = name, list(shape), ttype, buffer
    if signature is not None:
        t.shapeSignature = list(signature)
    if q is not None:
        t.quantization = fb.QuantizationParametersT()
        t.quantization.scale, t.quantization.zeroPoint = [q.scale], [q.zero_point]
    return t


def _op(code, inputs, outputs, add=False):
    o = fb.OperatorT()
    o.opcodeIndex, o.inputs, o.outputs = code, inputs, outputs
    if add:
        o.builtinOptionsType, o.builtinOptions = fb.BuiltinOptions.AddOptions, fb.AddOptionsT()
    return o


def _write(path, tensors, ops, codes, inputs, outputs, buffers):
    sg = fb.SubGraphT()
    sg.tensors, sg.operators, sg.inputs, sg.outputs = tensors, ops, inputs, outputs
    m = fb.ModelT()
    m.version, m.subgraphs, m.description = 3, [sg], "infercore test model"
    m.operatorCodes = []
    for c in codes:
        oc = fb.OperatorCodeT()
        if isinstance(c, str):
            oc.builtinCode = oc.deprecatedBuiltinCode = fb.BuiltinOperator.CUSTOM
            oc.customCode = c
        else:
            oc.builtinCode = oc.deprecatedBuiltinCode = c
        oc.version = 1
        m.operatorCodes.append(oc)
    m.buffers = []
    for data in buffers:
        b = fb.BufferT()
        if data is not None:
            b.data = np.frombuffer(data.tobytes(), np.uint8)
        m.buffers.append(b)
    path.write_bytes(bytes(convert_object_to_bytearray(m)))
    return path


def add_model(path, dynamic=False):
    """y = x + C, x float32 [1, 16] or [batch, 16]."""
    sig = [-1, N] if dynamic else None
    tensors = [
        _tensor("x", [1, N], signature=sig),
        _tensor("c", [N], buffer=1),
        _tensor("y", [1, N], signature=sig),
    ]
    return _write(
        path, tensors, [_op(0, [0, 1], [2], add=True)], [fb.BuiltinOperator.ADD], [0], [2], [None, C]
    )


def quant_model(path):
    """xq int8 -> DEQUANTIZE -> + QC -> QUANTIZE -> yq uint8."""
    tensors = [
        _tensor("xq", [1, 8], fb.TensorType.INT8, q=XQ),
        _tensor("xf", [1, 8]),
        _tensor("c", [8], buffer=1),
        _tensor("yf", [1, 8]),
        _tensor("yq", [1, 8], fb.TensorType.UINT8, q=YQ),
    ]
    ops = [_op(0, [0], [1]), _op(1, [1, 2], [3], add=True), _op(2, [3], [4])]
    codes = [fb.BuiltinOperator.DEQUANTIZE, fb.BuiltinOperator.ADD, fb.BuiltinOperator.QUANTIZE]
    return _write(path, tensors, ops, codes, [0], [4], [None, QC])


def quant_reference(xq):
    """What quant_model computes, in numpy."""
    y = (xq.astype(np.float32) - XQ.zero_point) * XQ.scale + QC
    return np.clip(np.rint(y / YQ.scale + YQ.zero_point), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tflite")
    custom = _write(
        d / "custom.tflite",
        [_tensor("x", [1, 4]), _tensor("y", [1, 4])],
        [_op(0, [0], [1])],
        ["MyMissingOp"],
        [0],
        [1],
        [None],
    )
    return {
        "add": add_model(d / "add.tflite"),
        "dyn": add_model(d / "dyn.tflite", dynamic=True),
        "quant": quant_model(d / "quant.tflite"),
        "custom": custom,
    }


def _cosine(a, b):
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# -- specs and run -----------------------------------------------------------------------------
def test_probe_reports_runtime():
    info = ic.available_backends()["litert"]
    assert info.available, info.reason
    assert info.devices == ("cpu",)
    assert info.version


def test_specs_and_metadata(tiny):
    with ic.load(tiny["add"]) as eng:
        assert eng.backend_name == "litert"
        (x,), (y,) = eng.inputs, eng.outputs
        assert (x.name, x.dtype, x.shape, x.quantization) == ("x", np.float32, (1, N), None)
        assert (y.name, y.dtype, y.shape) == ("y", np.float32, (1, N))
        assert eng.metadata["description"] == "infercore test model"
        assert eng.metadata["runtime"].startswith("ai-edge-litert")


def test_run_matches_numpy_and_returns_owned_arrays(tiny):
    with ic.load(tiny["add"]) as eng:
        x = np.random.default_rng(0).random((1, N), dtype=np.float32)
        first = eng.run(x)["y"]
        np.testing.assert_array_equal(first, x + C)
        kept = first.copy()
        eng.run(x * 10)
        np.testing.assert_array_equal(first, kept)  # not a view into the interpreter
        first[...] = 0  # and writable


def test_bound_equals_run_and_reuses_buffers(tiny):
    with ic.load(tiny["add"]) as eng, eng.bind({"x": (1, N)}) as io:
        out = io.outputs["y"]
        for seed in range(3):
            x = np.random.default_rng(seed).random((1, N), dtype=np.float32)
            io.inputs["x"][...] = x
            io.run()
            assert io.outputs["y"] is out
            np.testing.assert_array_equal(out, eng.run(x)["y"])


def test_bind_into_caller_arrays(tiny):
    with ic.load(tiny["add"]) as eng:
        x = np.full((1, N), 2, np.float32)
        y = np.zeros((1, N), np.float32)
        with eng.bind({"x": x}, outputs={"y": y}) as io:
            io.run()
            assert io.outputs["y"] is y
        np.testing.assert_array_equal(y, x + C)


def test_dynamic_batch_resizes_per_shape(tiny):
    with ic.load(tiny["dyn"], options={"shape_cache": 2}) as eng:
        assert eng.inputs[0].shape == (None, N)
        assert eng.outputs[0].shape == (None, N)
        rng = np.random.default_rng(1)
        for batch in (3, 5, 3, 1, 7, 5):  # more shapes than the cache holds: evicts and resizes
            x = rng.random((batch, N), dtype=np.float32)
            np.testing.assert_array_equal(eng.run(x)["y"], x + C)
        with eng.bind({"x": (4, N)}) as io:
            io.inputs["x"][...] = 1
            io.run()
            assert io.outputs["y"].shape == (4, N)
            np.testing.assert_array_equal(io.outputs["y"], np.ones((4, N), np.float32) + C)


def where_model(path):
    """idx = WHERE(x): the coordinates of x's nonzero elements, x float32 [1, 8] -> int64 [n, 2],
    n decided by the data."""
    tensors = [_tensor("x", [1, 8]), _tensor("idx", [1, 2], fb.TensorType.INT64, signature=[-1, 2])]
    return _write(path, tensors, [_op(0, [0], [1])], [fb.BuiltinOperator.WHERE], [0], [1], [None])


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    """Two inputs, two outputs, dynamic batch (shape signature -1): the bound path's checked outputs."""
    case = mlp_case()
    return case, build_tflite(case, tmp_path_factory.mktemp("mlp"))


def test_bound_outputs_are_this_runs_values(mlp):
    """Inputs written through io.inputs reach the model, and every output read after io.run() is
    that run's, in the same reused arrays; checked against numpy and the raw interpreter."""
    case, path = mlp
    raw = Interpreter(str(path))
    raw.resize_tensor_input(raw.get_input_details()[0]["index"], [3, 8])
    raw.resize_tensor_input(raw.get_input_details()[1]["index"], [3, 4])
    raw.allocate_tensors()
    with ic.load(path) as eng, eng.bind({"x": (3, 8), "s": (3, 4)}) as io:
        kept = dict(io.outputs)
        for seed in range(5):
            feeds = case.feeds(3, seed=seed)
            for name, value in feeds.items():
                io.inputs[name][...] = value
            io.run()
            want = case.reference(feeds)
            for d in raw.get_input_details():
                raw.set_tensor(d["index"], feeds[d["name"]])
            raw.invoke()
            for d in raw.get_output_details():
                name = d["name"]
                assert io.outputs[name] is kept[name]
                np.testing.assert_allclose(io.outputs[name], want[name], rtol=1e-5, atol=1e-6)
                np.testing.assert_array_equal(io.outputs[name], raw.get_tensor(d["index"]))


def test_bound_multi_output_into_caller_arrays(mlp):
    case, path = mlp
    feeds = case.feeds(2, seed=7)
    y, p = np.full((2, 4), np.nan, np.float32), np.full((2, 4), np.nan, np.float32)
    with ic.load(path) as eng, eng.bind(feeds, outputs={"y": y, "p": p}) as io:
        io.run()
        assert io.outputs["y"] is y and io.outputs["p"] is p
    want = case.reference(feeds)
    np.testing.assert_allclose(y, want["y"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p, want["p"], rtol=1e-5, atol=1e-6)


def test_bound_data_dependent_output_follows_the_data(tmp_path):
    """WHERE's output shape changes with the data: io.outputs gets a new array when it does (and
    keeps its array when it does not), always holding this run's values."""
    with ic.load(where_model(tmp_path / "where.tflite")) as eng, eng.bind({"x": (1, 8)}) as io:
        previous = None
        for row in ([1, 0, 0, 2, 0, 0, 0, 3], [0, 5, 0, 0, 6, 0, 7, 0], [1] * 8, [0, 1] + [0] * 6, [1] * 8):
            x = np.array([row], np.float32)
            io.inputs["x"][...] = x
            io.run()
            got = io.outputs["idx"]
            np.testing.assert_array_equal(got, np.argwhere(x))
            np.testing.assert_array_equal(got, eng.run(x)["idx"])
            if previous is not None and previous.shape == got.shape:
                assert got is previous  # same shape: written in place
            previous = got


def test_bindings_on_threads_each_run_their_own_inputs(mlp):
    """One binding per thread, each writing new inputs before every run: no thread sees another's
    inputs or outputs."""
    case, path = mlp
    errors: list[BaseException] = []
    with ic.load(path) as eng:

        def worker(seed):
            batch = 1 + seed % 3
            try:
                with eng.bind({"x": (batch, 8), "s": (batch, 4)}) as io:
                    for i in range(100):
                        feeds = case.feeds(batch, seed=1000 * seed + i)
                        for name, value in feeds.items():
                            io.inputs[name][...] = value
                        io.run()
                        want = case.reference(feeds)
                        for name in ("y", "p"):
                            np.testing.assert_allclose(io.outputs[name], want[name], rtol=1e-5, atol=1e-6)
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert eng.stats.bound_runs == 400
    assert not errors, errors[0]


def test_dynamic_model_matches_openvino(tiny):
    ov = pytest.importorskip("openvino")
    x = np.random.default_rng(2).random((6, N), dtype=np.float32)
    compiled = ov.Core().compile_model(str(tiny["dyn"]), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    want = np.asarray(compiled(x)[0])
    with ic.load(tiny["dyn"]) as eng:
        np.testing.assert_allclose(eng.run(x)["y"], want, rtol=1e-6)


def test_concurrent_runs_from_four_threads(tiny):
    eng = ic.load(tiny["dyn"])
    errors: list[BaseException] = []

    def worker(seed):
        rng = np.random.default_rng(seed)
        try:
            for _ in range(50):
                x = rng.random((int(rng.integers(1, 5)), N), dtype=np.float32)
                np.testing.assert_array_equal(eng.run(x)["y"], x + C)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    eng.close()
    assert not errors, errors[0]


# -- quantized tensors -------------------------------------------------------------------------
def test_quantized_specs_and_run(tiny):
    with ic.load(tiny["quant"]) as eng:
        (x,), (y,) = eng.inputs, eng.outputs
        assert (x.dtype, x.quantization) == (np.int8, XQ)
        assert (y.dtype, y.quantization) == (np.uint8, YQ)
        xq = np.array([[-128, -3, 0, 2, 5, 10, 100, 127]], np.int8)
        np.testing.assert_array_equal(eng.run(xq)["yq"], quant_reference(xq))


def test_dequantize_option(tiny):
    xq = np.array([[-128, -3, 0, 2, 5, 10, 100, 127]], np.int8)
    with ic.load(tiny["quant"], options={"dequantize": True}) as eng:
        (x,), (y,) = eng.inputs, eng.outputs
        assert (x.dtype, x.quantization) == (np.float32, XQ)  # float in, float out, scale kept
        assert (y.dtype, y.quantization) == (np.float32, YQ)
        xf = (xq.astype(np.float32) - XQ.zero_point) * XQ.scale
        want = (quant_reference(xq).astype(np.float32) - YQ.zero_point) * YQ.scale
        got = eng.run(xf)["yq"]
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, want)
        with eng.bind({"xq": (1, 8)}) as io:
            io.inputs["xq"][...] = xf
            io.run()
            np.testing.assert_array_equal(io.outputs["yq"], want)


def test_precision_int8_only_for_quantized_models(tiny):
    ic.load(tiny["quant"], precision="int8").close()
    with pytest.raises(BackendError, match="no quantized tensors"):
        ic.load(tiny["add"], precision="int8")
    with pytest.raises(BackendError, match="precision it was saved in"):
        ic.load(tiny["add"], precision="fp16")


# -- errors and options ------------------------------------------------------------------------
def test_missing_custom_op_is_a_load_error_naming_it(tiny):
    with pytest.raises(ModelLoadError, match="custom op 'MyMissingOp'"):
        ic.load(tiny["custom"])


def test_not_a_tflite_file(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer at all" * 4)
    with pytest.raises(ModelLoadError, match=r"bad\.tflite"):
        ic.load(bad)


def test_unknown_option_lists_valid_ones(tiny):
    with pytest.raises(BackendError, match=r"'xnnpak' \(did you mean 'xnnpack'\?\).*Valid options: xnnpack"):
        ic.load(tiny["add"], options={"xnnpak": False})
    with pytest.raises(BackendError, match="shape_cache"):
        ic.load(tiny["add"], options={"shape_cache": 0})


def test_without_xnnpack_same_results(tiny):
    x = np.random.default_rng(3).random((1, N), dtype=np.float32)
    with ic.load(tiny["add"], options={"xnnpack": False}, threads=1) as eng:
        np.testing.assert_array_equal(eng.run(x)["y"], x + C)


def test_missing_delegate_library(tiny, tmp_path):
    with pytest.raises(BackendUnavailableError, match="delegate library"):
        ic.load(tiny["add"], options={"delegate": str(tmp_path / "libnothere.so")})


def test_device_other_than_cpu(tiny):
    with pytest.raises(BackendError, match="delegate"):
        ic.load(tiny["add"], device="cuda:0", backend="litert")


def test_closed_engine(tiny):
    eng = ic.load(tiny["add"])
    io = eng.bind({"x": (1, N)})
    eng.close()
    eng.close()  # idempotent
    with pytest.raises(EngineClosedError):
        eng.run(np.zeros((1, N), np.float32))
    with pytest.raises(EngineClosedError):
        io.run()


# -- real models -------------------------------------------------------------------------------
def _mediapipe(name):
    try:
        return models.mediapipe(name)
    except models.ModelUnavailable as e:
        pytest.skip(f"mediapipe model not available here: {e}")


@pytest.mark.parametrize("name", ["hand_landmark_lite", "palm_detection_lite"])
def test_mediapipe_matches_openvino_and_raw(name):
    ov = pytest.importorskip("openvino")
    path = _mediapipe(name)
    with ic.load(path, threads=2) as eng:
        spec = eng.inputs[0]
        x = np.random.default_rng(4).random(spec.shape, dtype=np.float32)
        got = eng.run(x)
        compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        ov_out = compiled(x)
        for out in compiled.outputs:
            want = np.asarray(ov_out[out])
            mine = got[out.get_any_name()]
            assert mine.shape == want.shape
            tol = 1e-5 * max(float(np.abs(want).max()), 1.0)
            if want.size > 1:
                assert _cosine(mine, want) >= 0.9999, out.get_any_name()
            np.testing.assert_allclose(mine, want, rtol=1e-3, atol=tol)
        raw = Interpreter(model_path=str(path), num_threads=2)
        raw.allocate_tensors()
        raw.set_tensor(raw.get_input_details()[0]["index"], x)
        raw.invoke()
        with eng.bind({spec.name: x}) as io:
            io.run()
            for d in raw.get_output_details():
                np.testing.assert_array_equal(got[d["name"]], raw.get_tensor(d["index"]))
                np.testing.assert_array_equal(io.outputs[d["name"]], got[d["name"]])


def test_mediapipe_concurrent_runs():
    path = _mediapipe("hand_landmark_lite")
    rng = np.random.default_rng(5)
    xs = [rng.random((1, 224, 224, 3), dtype=np.float32) for _ in range(4)]
    with ic.load(path) as eng:
        want = [eng.run(x) for x in xs]
        got: dict[int, list[dict[str, np.ndarray]]] = {}

        def worker(i):
            got[i] = [eng.run(xs[i]) for _ in range(3)]

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for i in range(4):
        for result in got[i]:
            for name, value in want[i].items():
                np.testing.assert_array_equal(result[name], value)


def test_mediapipe_custom_op_model_refused():
    path = _mediapipe("face_landmark_with_attention")
    with pytest.raises(ModelLoadError, match="custom op 'Landmarks2TransformMatrix'"):
        ic.load(path)


def _wakeword(name="hey_mycroft"):
    """A microWakeWord streaming model from the pymicro-wakeword wheel: int8 [1, 3, 40] -> uint8 [1, 1]."""
    return models.micro_wakeword(name)  # fetched from the package index: a failure is a failure


def _feature_stream(steps=40):
    rng = np.random.default_rng(1)
    base = rng.integers(-128, 60, size=(1, 1, 40))
    return [
        np.clip(base + rng.integers(-20, 20, size=(1, 3, 40)), -128, 127).astype(np.int8)
        for _ in range(steps)
    ]


def test_real_quantized_model():
    """A stateful streaming model: each call's output depends on the calls before it."""
    path = _wakeword()
    stream = _feature_stream()
    raw = Interpreter(model_path=str(path))
    raw.allocate_tensors()
    i, o = raw.get_input_details()[0], raw.get_output_details()[0]
    want = []
    for x in stream:
        raw.set_tensor(i["index"], x)
        raw.invoke()
        want.append(raw.get_tensor(o["index"]))
    assert len({int(w[0, 0]) for w in want}) > 1  # the stream makes the model say something

    with ic.load(path, precision="int8") as eng:
        (x_spec,), (y_spec,) = eng.inputs, eng.outputs
        assert x_spec.dtype == np.int8 and y_spec.dtype == np.uint8
        assert x_spec.quantization == Quantization(float(i["quantization"][0]), int(i["quantization"][1]))
        assert y_spec.quantization == Quantization(float(o["quantization"][0]), int(o["quantization"][1]))
        got = [eng.run(x)[y_spec.name] for x in stream]  # one thread: one interpreter, state carried
        np.testing.assert_array_equal(np.concatenate(got), np.concatenate(want))
        with eng.bind({x_spec.name: (1, 3, 40)}) as io:  # its own interpreter, its own state
            for x, w in zip(stream, want, strict=True):
                io.inputs[x_spec.name][...] = x
                io.run()
                np.testing.assert_array_equal(io.outputs[y_spec.name], w)

    with ic.load(path, options={"dequantize": True}) as eng:
        (x_spec,), (y_spec,) = eng.inputs, eng.outputs
        assert x_spec.dtype == np.float32 and y_spec.dtype == np.float32
        xq, yq = x_spec.quantization, y_spec.quantization
        assert xq is not None and yq is not None
        for x, w in zip(stream, want, strict=True):
            xf = (x.astype(np.float32) - xq.zero_point) * np.float32(xq.scale)
            got_f = eng.run(xf)[y_spec.name]
            np.testing.assert_allclose(got_f, (w.astype(np.float32) - yq.zero_point) * yq.scale, rtol=1e-6)
            assert 0.0 <= float(got_f[0, 0]) <= 1.0  # a probability


def test_model_path_is_path_object(tiny):
    with ic.load(Path(tiny["add"])) as eng:
        assert eng.path == Path(tiny["add"])


def test_dynamic_model_whose_placeholder_shape_cannot_allocate_loads_and_matches_raw():
    """openWakeWord's melspectrogram stores its [-1, -1] input as [1, 1], shorter than its STFT
    window: allocating at that shape fails, but raw LiteRT runs it once resized, and so must we."""
    path = models.open_wakeword("melspectrogram")
    from ai_edge_litert.interpreter import Interpreter

    x = (np.sin(np.arange(1280) / 7.0) * 3000).astype(np.float32)[None]
    raw = Interpreter(model_path=str(path))
    d = raw.get_input_details()[0]
    raw.resize_tensor_input(d["index"], list(x.shape), strict=True)
    raw.allocate_tensors()
    raw.set_tensor(d["index"], x)
    raw.invoke()
    want = raw.get_tensor(raw.get_output_details()[0]["index"])
    with ic.load(path, "litert") as eng:
        assert eng.inputs[0].shape == (None, None)
        out = eng.outputs[0].name
        np.testing.assert_allclose(eng.run(x)[out], want, rtol=1e-5, atol=1e-4)
        with eng.bind({eng.inputs[0].name: x.shape}) as io:
            io.inputs[eng.inputs[0].name][...] = x
            io.run()
            np.testing.assert_allclose(io.outputs[out], want, rtol=1e-5, atol=1e-4)
