"""INT8 calibration and FP16 conversion: data handling and report on tiny models, then the real case,
a CNN trained on scikit-learn's digits, checked against the held-out labels and raw ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import infercore as ic
from infercore.cli import main
from infercore.errors import ArgumentError, CalibrationError, InputSpecError, ModelLoadError
from infercore.inputs import read_data
from infercore.quantize import (
    CalibrationDropError,
    CalibrationReport,
    calibrate,
    calibration_batches,
    convert_fp16,
)
from infercore.specs import TensorSpec

from .onnx_models import mlp, mlp_numpy


def load_data(path):
    data = read_data(path)
    return list(data.items), data.labels


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    """Calibration artifacts in a fresh cache per test (models fetched earlier stay where they are)."""
    monkeypatch.setenv("INFERCORE_CACHE", str(tmp_path_factory.mktemp("cache")))


def conv_net(path: Path, opset: int = 11, seed: int = 0) -> Path:
    """Conv(1->8, 3x3) -> Relu -> Flatten -> Gemm(->4): x float32 [batch, 1, 6, 6], at an old opset."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 1, 3, 3)).astype(np.float32), "W"),
        numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "B"),
        numpy_helper.from_array(rng.standard_normal((4, 8 * 16)).astype(np.float32) / 10, "G"),
        numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "g"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "W", "B"], ["c"], kernel_shape=[3, 3], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Flatten", ["r"], ["f"], axis=1, name="flatten"),
        helper.make_node("Gemm", ["f", "G", "g"], ["y"], transB=1, name="gemm"),
    ]
    graph = helper.make_graph(
        nodes,
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def raw_run(path: Path | str, x: np.ndarray, output: int = 0) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, {sess.get_inputs()[0].name: x})[output])


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    return float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).mean())


X_SPEC = (TensorSpec("x", np.float32, (None, 8)),)


# -- data ------------------------------------------------------------------------------------------
def test_batches_from_an_array_dataset_are_cut_along_axis_0():
    x = np.arange(50 * 8, dtype=np.float32).reshape(50, 8)
    batches = list(calibration_batches(x, X_SPEC, batch_size=None))
    assert [b["x"].shape[0] for b in batches] == [32, 18]
    np.testing.assert_array_equal(np.concatenate([b["x"] for b in batches]), x)
    assert [b["x"].shape[0] for b in calibration_batches(x, X_SPEC, batch_size=20)] == [20, 20, 10]


def test_batch_size_recuts_a_stream_and_drops_the_short_tail():
    stream = (np.full((n, 8), i, np.float32) for i, n in enumerate([3, 5, 4, 2]))
    batches = list(calibration_batches(stream, X_SPEC, batch_size=4, exact=True))
    assert [b["x"].shape for b in batches] == [(4, 8)] * 3  # 14 rows -> 3 full batches, 2 dropped
    np.testing.assert_array_equal(batches[0]["x"][:, 0], [0, 0, 0, 1])


def test_batches_from_a_directory_in_natural_order_with_labels(tmp_path):
    for i in (10, 2, 1):  # natural order: 1, 2, 10
        np.save(tmp_path / f"batch{i}.npy", np.full((2, 8), i, np.float32))
    np.savez(tmp_path / "batch11.npz", x=np.full((1, 8), 11, np.float32))
    np.save(tmp_path / "labels.npy", np.arange(7))
    items, labels = load_data(tmp_path)
    batches = list(calibration_batches(tmp_path, X_SPEC))
    assert [int(b["x"][0, 0]) for b in batches] == [1, 2, 10, 11]
    assert len(items) == 4
    np.testing.assert_array_equal(labels, np.arange(7))


def test_feeds_are_checked_against_the_model_and_never_change_kind():
    with pytest.raises(InputSpecError, match=r"int64 cannot become the model's float32.*astype\(np.float32\)"):
        list(calibration_batches([np.zeros((2, 8), np.int64)], X_SPEC))
    with pytest.raises(InputSpecError, match=r"float64 values up to 1e\+300 overflow the model's float32"):
        list(calibration_batches([np.full((2, 8), 1e300)], X_SPEC))
    same = list(calibration_batches([np.full((2, 8), 0.5)], X_SPEC))  # float64 that float32 holds exactly
    assert same[0]["x"].dtype == np.float32 and (same[0]["x"] == 0.5).all()
    with pytest.raises(InputSpecError, match="missing input"):
        list(calibration_batches([{"y": np.zeros((2, 8), np.float32)}], X_SPEC))
    with pytest.raises(InputSpecError, match="shape"):
        list(calibration_batches([np.zeros((2, 9), np.float32)], X_SPEC))


def test_a_sample_without_batch_axis_and_a_transform():
    got = list(calibration_batches([[1.0] * 8], X_SPEC, transform=lambda v: np.asarray(v, np.float32) * 2))
    assert got[0]["x"].shape == (1, 8)
    assert got[0]["x"][0, 0] == 2.0


# -- ONNX Runtime / TensorRT Q/DQ on tiny models ----------------------------------------------------
def test_static_int8_on_a_tiny_mlp_tracks_numpy(tmp_path):
    path, w = mlp(tmp_path / "mlp.onnx", d_in=8, d_hidden=32, d_out=4)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((256, 8)).astype(np.float32)
    res = calibrate(path, x[:192], eval_data=x[192:], timing_s=0, output=tmp_path / "mlp.int8.onnx")
    assert res.artifact_path == tmp_path / "mlp.int8.onnx" and res.artifact_path.exists()
    ops = {n.op_type for n in onnx.load(str(res.artifact_path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    got = raw_run(res.artifact_path, x[192:])
    want, _ = mlp_numpy(x[192:], w)
    assert cosine(got, want) > 0.99
    r = res.report
    assert r.metric == "cosine" and r.eval_samples == 64 and r.eval_source == "eval_data"
    assert r.cosine_mean == pytest.approx(cosine(got, raw_run(path, x[192:])), abs=1e-6)
    assert r.speedup is None and r.passed


def test_report_without_eval_data_uses_held_back_batches(tmp_path):
    path, _ = mlp(tmp_path / "mlp.onnx")
    x = np.random.default_rng(2).standard_normal((100, 8)).astype(np.float32)
    r = calibrate(path, x, batch_size=10, timing_s=0).report
    assert r.eval_source == "held-back calibration samples"
    assert r.calibration_samples == 80 and r.eval_samples == 20
    d = r.to_dict()
    assert d["eval_samples"] == 20 and isinstance(d["notes"], list)
    assert "held-back" in str(r)


def test_cache_hit_returns_the_same_artifact(tmp_path):
    path, _ = mlp(tmp_path / "mlp.onnx")
    x = np.random.default_rng(3).standard_normal((64, 8)).astype(np.float32)
    first = calibrate(path, x, timing_s=0)
    second = calibrate(path, x, timing_s=0)
    third = calibrate(path, x, timing_s=0, per_channel=False)
    assert not first.report.cached and second.report.cached and not third.report.cached
    assert first.artifact_path == second.artifact_path != third.artifact_path


def test_opset_is_upgraded_for_per_channel_and_ops_can_be_excluded(tmp_path):
    path = conv_net(tmp_path / "conv.onnx", opset=11)
    x = np.random.default_rng(4).random((96, 1, 6, 6), dtype=np.float32)
    res = calibrate(path, x, exclude_ops=["Gemm"], timing_s=0)
    model = onnx.load(str(res.artifact_path))
    assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 13
    assert any("opset upgraded from 11" in n for n in res.report.notes)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    gemm = next(n for n in model.graph.node if n.op_type == "Gemm")
    w_dq = producers[conv.input[1]]
    assert w_dq.op_type == "DequantizeLinear" and inits[w_dq.input[1]].shape == (8,)  # per channel
    assert inits[gemm.input[1]].dtype == np.float32  # excluded: its weights stay in float


def test_tensorrt_target_is_symmetric_int8_with_float_bias(tmp_path):
    path = conv_net(tmp_path / "conv.onnx", opset=13)
    x = np.random.default_rng(5).random((64, 1, 6, 6), dtype=np.float32)
    res = calibrate(path, x, target="tensorrt", timing_s=0)
    model = onnx.load(str(res.artifact_path))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq
    for n in qdq:
        zp = inits[n.input[2]]
        assert zp.dtype == np.int8 and not zp.any(), n.name  # zero point 0, int8
    for n in qdq:
        if n.op_type == "DequantizeLinear" and n.input[0] in inits:
            assert inits[n.input[0]].dtype == np.int8  # no int32 bias DQ: TensorRT refuses it
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    assert conv.input[2] in inits and inits[conv.input[2]].dtype == np.float32
    assert res.report.cosine_mean > 0.99


def test_options_are_validated(tmp_path):
    path, _ = mlp(tmp_path / "mlp.onnx")
    x = np.zeros((4, 8), np.float32)
    with pytest.raises(ValueError, match="target"):
        calibrate(path, x, target="tflite")
    with pytest.raises(ValueError, match="dynamic"):
        calibrate(path, x, target="tensorrt", dynamic=True)
    with pytest.raises(ValueError, match=r"must end in \.xml"):
        calibrate(path, x, target="openvino", output=tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="metric"):
        calibrate(path, x, metric="f2", timing_s=0)
    with pytest.raises(CalibrationError, match="empty"):
        calibrate(path, [], timing_s=0)


def test_fp16_keeps_io_types_and_reports_parity(tmp_path):
    path, w = mlp(tmp_path / "mlp.onnx")
    x = np.random.default_rng(6).standard_normal((32, 8)).astype(np.float32)
    res = convert_fp16(path, data=x, timing_s=0, output=tmp_path / "mlp.fp16.onnx")
    sess = ort.InferenceSession(str(res.artifact_path), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].type == "tensor(float)"
    inits = onnx.load(str(res.artifact_path)).graph.initializer
    assert {t.data_type for t in inits} == {TensorProto.FLOAT16}
    got = sess.run(["logits"], {"x": x})[0]
    np.testing.assert_allclose(got, mlp_numpy(x, w)[0], rtol=1e-2, atol=1e-2)
    assert res.report.kind == "fp16" and res.report.cosine_mean > 0.9999


# -- the real case: a CNN trained on scikit-learn's digits ----------------------------------------------
@pytest.fixture(scope="module")
def digits_case():
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    from infercore.testing.digits import digits_cnn

    return digits_cnn()  # trained once into the model cache (seconds), like the packaged models


def raw_accuracy(path: Path | str, x: np.ndarray, y: np.ndarray) -> float:
    return float((raw_run(path, x).argmax(1) == y).mean())


@pytest.mark.slow
def test_fp16_ppocr_det_on_a_text_image_stays_close_because_the_graph_is_folded_first(tmp_path, monkeypatch):
    """PP-OCRv4 det keeps BatchNormalization variances up to 9.8e7, past float16's 65504: converted
    as it is, the probability map collapses (cosine 0.876); folded into the Convs first, it holds."""
    from infercore.testing import models

    path = models.ppocr_det()
    monkeypatch.setenv("INFERCORE_CACHE", str(tmp_path / "cache"))
    img = models.text_image(height=96, width=640).astype(np.float32) / 255.0
    x = ((img - 0.5) / 0.5).transpose(2, 0, 1)[None].astype(np.float32)
    ort = pytest.importorskip("onnxruntime")
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    results = {}
    for fold in (True, False):
        res = convert_fp16(path, data=x, fold=fold, timing_s=0)
        got = ort.InferenceSession(str(res.artifact_path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        a, b = got.ravel().astype(np.float64), want.ravel().astype(np.float64)
        results[fold] = (float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)), res.report.cosine_mean)
    assert results[True][0] > 0.9995 and results[True][1] == pytest.approx(results[True][0], abs=1e-4)
    assert results[False][0] < 0.95  # what folding prevents


@pytest.mark.slow
def test_digits_int8_on_ort_keeps_accuracy_within_one_point(digits_case, tmp_path):
    c = digits_case
    assert c.fp32_accuracy > 0.95
    res = calibrate(
        c.path, c.batches(c.x_train[:512]), eval_data=(c.x_test, c.y_test), metric="accuracy",
        max_drop=0.01, timing_s=0.3, output=tmp_path / "digits.int8.onnx",
    )  # fmt: skip
    r = res.report
    # the report's numbers are the raw runtime's, on the held-out labels
    assert r.fp32_score == pytest.approx(raw_accuracy(c.path, c.x_test, c.y_test))
    assert r.quantized_score == pytest.approx(raw_accuracy(res.artifact_path, c.x_test, c.y_test))
    assert r.quantized_score >= c.fp32_accuracy - 0.01
    assert r.eval_samples == len(c.y_test) and r.speedup is not None and r.backend == "ort"
    top3 = calibrate(
        c.path, c.batches(c.x_train[:512]), eval_data=(c.x_test, c.y_test), metric="top3", timing_s=0
    )
    assert top3.report.quantized_score >= r.quantized_score


@pytest.mark.slow
def test_max_drop_catches_a_real_collapse(digits_case, tmp_path):
    c = digits_case
    # a real preprocessing bug: calibration images normalized twice (/16 again), so activation
    # ranges come out 16x too narrow and int8 saturates
    with pytest.raises(CalibrationError) as info:
        calibrate(
            c.path, c.x_train[:256] / 16, eval_data={"image": c.x_test, "labels": c.y_test},
            max_drop=0.01, timing_s=0, output=tmp_path / "bad.onnx",
        )  # fmt: skip
    err = info.value
    assert isinstance(err, CalibrationDropError)
    assert err.report.drop > 0.2 and not err.report.passed
    assert err.report.quantized_score == pytest.approx(raw_accuracy(err.artifact_path, c.x_test, c.y_test))
    assert "max_drop" in str(err) and not (tmp_path / "bad.onnx").exists()


@pytest.mark.slow
def test_digits_on_openvino_with_nncf(digits_case, tmp_path):
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    c = digits_case
    res = calibrate(
        c.path, c.x_train[:256], target="openvino", eval_data=list(zip(c.batches(c.x_test), np.split(
            c.y_test, range(64, len(c.y_test), 64)), strict=True)), timing_s=0, output=tmp_path / "d.xml",
    )  # fmt: skip
    assert res.artifact_path.suffix == ".xml" and res.artifact_path.with_suffix(".bin").exists()
    r = res.report
    assert r.metric == "accuracy" and r.quantized_score >= c.fp32_accuracy - 0.01
    import openvino as ov

    compiled = ov.Core().compile_model(str(res.artifact_path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    raw = float((np.asarray(compiled(c.x_test)[0]).argmax(1) == c.y_test).mean())
    assert r.quantized_score == pytest.approx(raw)


@pytest.mark.slow
def test_cli_quantize_with_eval_dir_and_max_drop(digits_case, tmp_path, capsys):
    c = digits_case
    cal, ev = tmp_path / "cal", tmp_path / "eval"
    cal.mkdir()
    ev.mkdir()
    for i in range(4):
        np.save(cal / f"{i}.npy", c.x_train[i * 64 : (i + 1) * 64])
    for i, start in enumerate(range(0, len(c.x_test), 128)):
        np.save(ev / f"{i}.npy", c.x_test[start : start + 128])
    np.save(ev / "labels.npy", c.y_test)
    out = tmp_path / "d.int8.onnx"
    argv = [
        "quantize",
        str(c.path),
        "--data",
        str(cal),
        "--eval",
        str(ev),
        "--max-drop",
        "0.01",
        "--timing",
        "0",
    ]
    assert main([*argv, "-o", str(out), "--json"]) == 0
    import json

    report = json.loads(capsys.readouterr().out)
    assert report["metric"] == "accuracy" and report["passed"] and out.exists()
    assert report["quantized_score"] == pytest.approx(raw_accuracy(out, c.x_test, c.y_test))
    np.savez(tmp_path / "bad.npz", image=c.x_train[:256] / 16)
    bad = tmp_path / "bad.int8.onnx"
    assert main(["quantize", str(c.path), "--data", str(tmp_path / "bad.npz"), "--eval", str(ev),
                 "--max-drop", "0.01", "--timing", "0", "--output", str(bad)]) == 1  # fmt: skip
    assert "FAILED" in capsys.readouterr().out and not bad.exists()


def test_report_str_is_readable():
    r = CalibrationReport(
        kind="int8", target="ort", mode="static Q/DQ", method="minmax", preset=None, per_channel=True,
        metric="accuracy", output="logits", fp32_score=0.975, quantized_score=0.97, drop=0.005, max_drop=0.01,
        passed=True, cosine_mean=0.9999, cosine_min=0.998, eval_samples=449, eval_source="eval_data",
        calibration_samples=512, backend="ort", speed_batch=64, fp32_ms=4.0, quantized_ms=1.6, speedup=2.5,
        model="/m/digits.onnx", artifact="/m/digits.int8.onnx",
    )  # fmt: skip
    text = str(r)
    assert "fp32 97.50%" in text and "int8 97.00%" in text and "+0.50 pt" in text and "2.50x" in text


def test_cache_entries_are_built_aside_and_published_or_removed(tmp_path):
    from infercore.quantize.cache import building as _building

    entry = tmp_path / "abc"
    with _building(entry, "abc", "fp16 conversion of m.onnx") as tmp:
        (tmp / "meta.json").write_text("{}")
        assert not entry.exists()  # nothing half-built is visible under the entry's name
    assert (entry / "meta.json").read_text() == "{}"
    wrapped = pytest.raises(CalibrationError, match=r"fp16 conversion of m\.onnx failed: ValueError: bad")
    with wrapped, _building(entry, "abc", "fp16 conversion of m.onnx"):
        raise ValueError("bad")  # a runtime's failure is wrapped, with what failed
    with pytest.raises(InputSpecError, match="own"), _building(entry, "abc", "x"):
        raise InputSpecError("own")  # infercore's own errors pass through as they are
    assert list(tmp_path.iterdir()) == []  # the failed builds left nothing behind


# -- op selection: never an empty list (ONNX Runtime reads it as "every op"), never a float model ------
def op_counts(path: Path | str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for n in onnx.load(str(path)).graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return counts


@pytest.mark.parametrize(
    "include, exclude",
    [(["Conv"], ["Conv"]), (None, ["Conv", "Relu", "Flatten", "Gemm"])],
    ids=["include-minus-exclude", "exclude-every-op"],
)
def test_a_selection_that_leaves_no_op_type_is_refused(tmp_path, include, exclude):
    path = conv_net(tmp_path / "conv.onnx", opset=13)
    model_ops = sorted(op_counts(path))  # the reference: the model's own op types
    x = np.random.default_rng(7).random((32, 1, 6, 6), dtype=np.float32)
    out = tmp_path / "none.int8.onnx"
    with pytest.raises(ArgumentError, match="leaves no op types to quantize") as info:
        calibrate(path, x, include_ops=include, exclude_ops=exclude, timing_s=0, output=out)
    assert ", ".join(model_ops) in str(info.value)
    assert not out.exists()


def test_include_ops_are_checked_against_the_model(tmp_path):
    path = conv_net(tmp_path / "conv.onnx", opset=13)
    x = np.random.default_rng(8).random((32, 1, 6, 6), dtype=np.float32)
    with pytest.raises(
        ArgumentError, match=r"include_ops: \['NotAnOp'\] not in conv\.onnx.*Conv, Flatten, Gemm, Relu"
    ):
        calibrate(path, x, include_ops=["NotAnOp"], timing_s=0)
    with pytest.raises(ArgumentError, match=r"exclude_ops: .*did you mean 'Gemm'"):
        calibrate(path, x, exclude_ops=["gemm"], timing_s=0)  # a typo would quantize what it meant to keep
    # an op type ONNX Runtime does not quantize alone gives a float model: refused, not reported as INT8
    with pytest.raises(CalibrationError, match=r"nothing was quantized in conv\.onnx.*\['Relu'\]"):
        calibrate(path, x, include_ops=["Relu"], timing_s=0)
    # a real selection quantizes exactly what it names
    res = calibrate(path, x, include_ops=["Gemm"], exclude_ops=["Softmax"], timing_s=0)
    model = onnx.load(str(res.artifact_path))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    gemm = next(n for n in model.graph.node if n.op_type == "Gemm")
    producers = {o: n for n in model.graph.node for o in n.output}
    assert inits[conv.input[1]].dtype == np.float32  # not selected: float weights
    assert producers[gemm.input[1]].op_type == "DequantizeLinear"
    assert any("exclude_ops ['Softmax'] not in the model" in n for n in res.report.notes)


# -- unreadable files: infercore errors naming the file, never a raw traceback ----------------------
def test_unreadable_data_files_are_named(tmp_path):
    (tmp_path / "empty.npy").write_bytes(b"")
    (tmp_path / "empty.npz").write_bytes(b"")
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not a zip")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.savez(tmp_path / "nothing.npz")
    for name, why in [("empty.npy", r"is empty \(0 bytes\)"), ("empty.npz", r"is empty \(0 bytes\)"),
                      ("junk.npz", "cannot read .* as a .npy/.npz file"), ("obj.npy", "allow_pickle"),
                      ("nothing.npz", "holds no arrays")]:  # fmt: skip
        with pytest.raises(InputSpecError, match=why) as info:
            load_data(tmp_path / name)
        assert str(tmp_path / name) in str(info.value)
    batches = tmp_path / "batches"
    batches.mkdir()
    np.save(batches / "0.npy", np.zeros((2, 8), np.float32))
    (batches / "1.npy").write_bytes(b"\x93NUMPY truncated")
    with pytest.raises(InputSpecError, match=r"cannot read .*1\.npy as a \.npy/\.npz file"):
        load_data(batches)


def test_unreadable_models_are_named(tmp_path, capsys):
    data = np.zeros((4, 8), np.float32)
    (tmp_path / "junk.onnx").write_bytes(b"hello world not onnx" * 10)
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(ModelLoadError, match=r"junk\.onnx: not a readable ONNX model \(DecodeError"):
        calibrate(tmp_path / "junk.onnx", data)
    with pytest.raises(ModelLoadError, match=r"empty\.onnx: not an ONNX model"):
        convert_fp16(tmp_path / "empty.onnx")
    np.save(tmp_path / "d.npy", data)
    (tmp_path / "e.npz").write_bytes(b"")
    path, _ = mlp(tmp_path / "mlp.onnx")
    assert main(["quantize", str(tmp_path / "junk.onnx"), "--data", str(tmp_path / "d.npy")]) == 2
    assert main(["quantize", str(path), "--data", str(tmp_path / "e.npz")]) == 2
    err = capsys.readouterr().err
    assert "junk.onnx: not a readable ONNX model" in err and "e.npz is empty (0 bytes)" in err


# -- .npz arr_0: np.savez(path, x) names a lone array arr_0 -------------------------------------------
def test_a_lone_arr_0_feeds_the_single_input(tmp_path):
    x = np.random.default_rng(9).standard_normal((40, 8)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x)  # positional: stored as arr_0
    got = list(calibration_batches(tmp_path / "calib.npz", X_SPEC, batch_size=16))
    np.testing.assert_array_equal(np.concatenate([b["x"] for b in got]), x)
    d = tmp_path / "dir"
    d.mkdir()
    np.savez(d / "0.npz", x[:16])
    np.savez(d / "1.npz", x[16:])
    np.testing.assert_array_equal(np.concatenate([b["x"] for b in calibration_batches(d, X_SPEC)]), x)
    np.savez(tmp_path / "labelled.npz", x, labels=np.arange(40))
    _, labels = load_data(tmp_path / "labelled.npz")
    np.testing.assert_array_equal(labels, np.arange(40))
    path, _ = mlp(tmp_path / "mlp.onnx")
    out = tmp_path / "mlp.int8.onnx"
    assert (
        main(
            ["quantize", str(path), "--data", str(tmp_path / "calib.npz"), "--timing", "0", "-o", str(out)]
        )
        == 0
    )
    assert "QuantizeLinear" in op_counts(out)


# -- FP16 without data: generated inputs that fit the model, or an error that says they were generated --
def needs_multiples_of_32(path: Path) -> Path:
    """x [batch, 1, H, W] -> MaxPool 32/32 -> Resize x32 -> + x: runs only when H and W are multiples of 32."""
    scales = numpy_helper.from_array(np.array([1, 1, 32, 32], np.float32), "scales")
    nodes = [
        helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[32, 32], strides=[32, 32]),
        helper.make_node("Resize", ["p", "", "scales"], ["u"], mode="nearest"),
        helper.make_node("Add", ["u", "x"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "m32", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1, "H", "W"])], [scales],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def reflect_pad(path: Path, pad: int, rank: int = 2) -> Path:
    """x [batch, n] (rank 3: [batch, n, m]) -> reflect Pad of `pad` each side of every dynamic
    dimension but the batch: runs only when n > pad (like Silero VAD's STFT)."""
    dims = ["batch", "n", "m"][:rank]
    pads = numpy_helper.from_array(np.array(([0] + [pad] * (rank - 1)) * 2, np.int64), "pads")
    graph = helper.make_graph(
        [helper.make_node("Pad", ["x", "pads"], ["y"], mode="reflect")], "pad",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch"] + [None] * (rank - 1))], [pads],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_fp16_without_data_generates_inputs_the_model_runs_on(tmp_path):
    res = convert_fp16(needs_multiples_of_32(tmp_path / "m32.onnx"), timing_s=0)
    assert res.report.eval_source == "generated inputs" and res.report.eval_samples == 1
    assert any("x (1, 1, 64, 64) float32" in n for n in res.report.notes)
    x = np.random.default_rng(0).standard_normal((1, 1, 64, 64)).astype(np.float32)
    assert cosine(raw_run(res.artifact_path, x), raw_run(tmp_path / "m32.onnx", x)) > 0.9999
    short = reflect_pad(tmp_path / "pad100.onnx", 100)  # needs n > 100: a signal's 512 samples run
    assert any("x (1, 512) float32" in n for n in convert_fp16(short, timing_s=0).report.notes)
    wide = reflect_pad(tmp_path / "pad100x.onnx", 100, rank=3)  # not a signal: 64 tried first fails, 512 runs
    assert any("x (1, 512, 512) float32" in n for n in convert_fp16(wide, timing_s=0).report.notes)


def test_fp16_on_a_model_generated_inputs_cannot_run_says_so(tmp_path):
    path = reflect_pad(tmp_path / "pad1000.onnx", 1000)
    with pytest.raises(CalibrationError) as info:
        convert_fp16(path, timing_s=0)
    msg = str(info.value)
    assert "generated inputs" in msg and "x (1, 512) float32" in msg
    assert "data=" in msg and "--data" not in msg  # the library names parameters, the CLI flags
    x = np.random.default_rng(1).standard_normal((2, 1200)).astype(np.float32)
    res = convert_fp16(path, data=x, timing_s=0)  # real data of the size it needs: converted
    np.testing.assert_allclose(
        raw_run(res.artifact_path, x), np.pad(x, ((0, 0), (1000, 1000)), mode="reflect"), atol=2e-3
    )


# -- bad eval/calibration data and options: named up front ------------------------------------------
def test_labels_must_be_class_indices_for_accuracy(tmp_path):
    path, w = mlp(tmp_path / "mlp.onnx")
    rng = np.random.default_rng(10)
    x = rng.standard_normal((64, 8)).astype(np.float32)
    y = rng.integers(0, 4, 64)
    with pytest.raises(CalibrationError, match=r"shape \(64, 4\).*shape \(64,\).*labels\.argmax\(1\)"):
        calibrate(path, x, eval_data=(x, np.eye(4)[y]), timing_s=0)  # one-hot
    with pytest.raises(CalibrationError, match="non-integer"):
        calibrate(path, x, eval_data=(x, y + 0.5), timing_s=0)
    with pytest.raises(CalibrationError, match=r"labels run from -1 to -1, but the output has 4 classes"):
        calibrate(path, x, eval_data=(x, -np.ones(64, np.int64)), timing_s=0)  # every sample wrong
    with pytest.raises(CalibrationError, match=r"run from 100 to 103"):
        calibrate(path, x, eval_data=(x, y + 100), timing_s=0)
    with pytest.raises(CalibrationError, match="booleans"):
        calibrate(path, x, eval_data=(x, y > 1), timing_s=0)
    r = calibrate(path, x, eval_data=(x, y[:, None]), timing_s=0).report  # a column of labels is fine
    want = float((mlp_numpy(x, w)[0].argmax(1) == y).mean())
    assert r.fp32_score == pytest.approx(want)


def test_a_0d_input_stays_0d_in_calibration_batches():
    """Silero VAD's sample rate is a 0-d int64: np.ascontiguousarray made it (1,), and every
    calibrate/convert_fp16 with real data was refused ("expected shape [], got (1,)")."""
    specs = (TensorSpec("x", np.float32, (None, 8)), TensorSpec("sr", np.int64, ()))
    feeds = {"x": np.zeros((4, 8), np.float32), "sr": np.array(16000)}
    batches = list(calibration_batches(feeds, specs, batch_size=2))
    assert batches and all(b["sr"].shape == () and b["sr"] == 16000 for b in batches)


def test_labels_npz_in_a_data_directory_is_refused_not_ignored(tmp_path):
    d = tmp_path / "eval"
    d.mkdir()
    np.save(d / "0.npy", np.zeros((4, 8), np.float32))
    np.savez(d / "labels.npz", labels=np.zeros(4, np.int64))
    with pytest.raises(InputSpecError, match=r"labels\.npz.*go in labels\.npy"):
        load_data(d)


def test_non_finite_calibration_data_is_named(tmp_path):
    path, _ = mlp(tmp_path / "mlp.onnx")
    x = np.random.default_rng(11).standard_normal((64, 8)).astype(np.float32)
    x[40, 3], x[41, 0] = np.nan, np.inf
    with pytest.raises(InputSpecError, match=r"calibration data batch 1, input 'x': 1 NaN and 1 inf of 256"):
        calibrate(path, x, timing_s=0)
    clean = x[:32]
    with pytest.raises(InputSpecError, match=r"eval_data batch 0, input 'x': 1 NaN"):
        calibrate(path, clean, eval_data=x[32:], timing_s=0)


def test_batch_size_and_metric_are_checked_before_any_work(tmp_path, monkeypatch):
    path, _ = mlp(tmp_path / "mlp.onnx")
    x = np.zeros((16, 8), np.float32)
    cache = tmp_path / "cache"
    monkeypatch.setenv("INFERCORE_CACHE", str(cache))
    for bad in (0, -1, 2.5):
        with pytest.raises(ic.ArgumentError, match=f"batch_size: expected a positive integer.*got {bad}"):
            calibrate(path, x, batch_size=bad, timing_s=0)
        with pytest.raises(ValueError, match="batch_size"):
            list(calibration_batches(x, X_SPEC, batch_size=bad))
        with pytest.raises(ValueError, match="batch_size"):
            convert_fp16(path, data=x, batch_size=bad, timing_s=0)
    with pytest.raises(ValueError, match=r"'top0': top-k needs k >= 1"):
        calibrate(path, x, eval_data=(x, np.zeros(16, np.int64)), metric="top0", timing_s=0)
    assert not cache.exists() or not any((cache / "calibration").iterdir())  # refused before quantizing


def test_a_metric_that_fails_or_returns_nan_is_named(tmp_path):
    path, _ = mlp(tmp_path / "mlp.onnx")
    x = np.random.default_rng(12).standard_normal((32, 8)).astype(np.float32)
    y = np.zeros(32, np.int64)

    def always_nan(outputs, labels):
        return float("nan")

    with pytest.raises(
        CalibrationError, match=r"metric 'always_nan' returned nan on the fp32 outputs \(shape \(32, 4\)\)"
    ):
        calibrate(path, x, eval_data=(x, y), metric=always_nan, max_drop=0.1, timing_s=0)
    with pytest.raises(CalibrationError, match=r"metric '<lambda>' failed.*ZeroDivisionError") as info:
        calibrate(path, x, eval_data=(x, y), metric=lambda o, lab: 1 / 0, timing_s=0)
    assert isinstance(info.value.__cause__, ZeroDivisionError)


def test_output_parent_directories_are_created(tmp_path):
    path, _ = mlp(tmp_path / "mlp.onnx")
    x = np.random.default_rng(13).standard_normal((32, 8)).astype(np.float32)
    out = tmp_path / "new" / "dir" / "mlp.int8.onnx"
    res = calibrate(path, x, timing_s=0, output=out)
    assert res.artifact_path == out and "QuantizeLinear" in op_counts(out)


def _dynamic_int8(tmp_path: Path) -> Path:
    """The tiny MLP quantized by onnxruntime itself (DynamicQuantizeLinear, MatMulInteger), like
    ddddocr's common_old.onnx."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, _ = mlp(tmp_path / "mlp.onnx")
    out = tmp_path / "mlp.dyn-int8.onnx"
    quantize_dynamic(str(src), str(out), weight_type=QuantType.QInt8)
    return out


def test_an_already_quantized_model_is_refused_with_its_ops(tmp_path):
    """ONNX Runtime's quantizer failed on it with KeyError: '..._scale', and the FP16 converter wrote
    a model onnxruntime could not load (float16 into DynamicQuantizeLinear)."""
    path = _dynamic_int8(tmp_path)
    x = np.random.default_rng(0).standard_normal((16, 8)).astype(np.float32)
    with pytest.raises(CalibrationError, match=r"mlp.dyn-int8.onnx is already quantized \(it has .*"
                       r"DynamicQuantizeLinear.*\): INT8 calibration needs the float32 model"):  # fmt: skip
        calibrate(path, {"x": x}, timing_s=0, cache=False)
    with pytest.raises(CalibrationError, match=r"already quantized.*FP16 conversion needs the float32 model"):
        convert_fp16(path, timing_s=0, cache=False)


def test_per_channel_falls_back_to_per_tensor_on_a_2d_bias(tmp_path):
    """magika (tf2onnx) adds a [1, N] bias after a MatMul: onnxruntime's per-channel path indexes it
    as 1-d and raised 'The truth value of an array ... is ambiguous'."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 4)).astype(np.float32)
    b = rng.standard_normal((1, 4)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["y"])], "bias2d",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )  # fmt: skip
    path = tmp_path / "bias2d.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    x = rng.standard_normal((64, 8)).astype(np.float32)
    res = calibrate(path, {"x": x}, timing_s=0, cache=False)
    assert res.report.per_channel is False
    assert any("per-tensor weights used" in n for n in res.report.notes)
    got = raw_run(res.artifact_path, x[:8])
    assert cosine(got, x[:8] @ w + b) > 0.99  # a working INT8 model, against numpy


def test_ops_only_inside_control_flow_are_named_as_the_reason(tmp_path):
    """Silero VAD op18 'ifless' keeps every Conv inside an If: nothing was quantized, and the error
    told the user to pick include_ops among op types it had."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32), "w")
    branch = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])]
    then = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "then", [], branch)
    other = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["z"]), helper.make_node("Neg", ["z"], ["y"])],
                              "else", [], branch)  # fmt: skip
    graph = helper.make_graph(
        [helper.make_node("Equal", ["sr", "rate"], ["cond"]),
         helper.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=other)], "iff",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8]),
         helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [w, numpy_helper.from_array(np.array(16000, np.int64), "rate")],
    )  # fmt: skip
    path = tmp_path / "iff.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    x = rng.standard_normal((16, 8)).astype(np.float32)
    with pytest.raises(CalibrationError, match=r"its MatMul ops sit only inside the subgraphs of If nodes"):
        calibrate(path, {"x": x, "sr": np.array(16000)}, timing_s=0, cache=False)


def test_calibration_data_the_model_refuses_is_named_as_the_cause(tmp_path):
    """Silero VAD with a state of the wrong batch said only 'ort quantization of silero_vad.onnx
    failed: Fail: ... LSTM ...', not that the calibration data was what the model refused."""
    path = reflect_pad(tmp_path / "pad1000.onnx", 1000)
    x = np.random.default_rng(0).standard_normal((4, 600)).astype(np.float32)  # needs n > 1000
    with pytest.raises(CalibrationError, match=r"pad1000.onnx failed on the calibration data \(first batch: "
                       r"x \(\d, 600\) float32\): .*Pad.*Give data of the shapes the model runs on"):  # fmt: skip
        calibrate(path, x, timing_s=0, cache=False)
