"""ic.convert from Keras 3 / TensorFlow and from TFLite (heavy: needs TensorFlow and tf2onnx).

Each converted model is checked here again, independently of the report: against Keras/TF itself
and the raw runtimes, and INT8 accuracy on scikit-learn's digits against known labels.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import infercore as ic
from infercore.cli import main

pytestmark = pytest.mark.tensorflow
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
pytest.importorskip("tf2onnx")
pytest.importorskip("onnxslim")


def live_mobilenet():
    """MobileNetV2 with ``weights=None`` and logits out. Its freshly initialised BatchNorm layers
    (gamma 1, variance 1, and zero-initialised projection outputs) give ~1e-10 everywhere, which
    compares as "nearly zero": their statistics are randomised so the outputs mean something."""
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3), alpha=0.35, classifier_activation=None)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape).astype(np.float32),
                               rng.normal(0, 0.1, beta.shape).astype(np.float32),
                               rng.normal(0, 0.1, mean.shape).astype(np.float32),
                               rng.uniform(0.5, 1.5, var.shape).astype(np.float32)])  # fmt: skip
    return model


@pytest.fixture(scope="module")
def mobilenet():
    return live_mobilenet()


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).uniform(-1, 1, (5, 96, 96, 3)).astype(np.float32)


def test_keras_application_to_onnx_tflite_and_ir(mobilenet, images, tmp_path):
    ref = mobilenet(images, training=False).numpy()
    assert ref.std() > 1e-3  # a live network, not one that outputs ~0
    for out in ("mnv2.onnx", "mnv2.tflite", "mnv2.xml"):
        res = ic.convert(mobilenet, output=tmp_path / out)
        rep = res.report
        assert rep.passed and rep.source.framework == "keras" and rep.sets >= 16, out
        assert all(c.max_abs <= 1e-4 * max(1.0, float(np.abs(ref).max())) for c in rep.checks), out
        for backend in rep.backends:  # every backend that reads it, independently of the report
            with ic.load(res.artifact_path, backend) as eng:
                got = eng.run({eng.inputs[0].name: images})[eng.outputs[0].name]
                if not (out.endswith(".tflite") and backend == "openvino"):  # OpenVINO reads no TFLite metadata
                    assert eng.metadata["infercore.verification"].startswith("passed"), (out, backend)
            assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max(), (out, backend)
    onnx_rep = ic.convert(mobilenet, output=tmp_path / "again.onnx").report
    assert onnx_rep.exporter == "tf2onnx.convert.from_function" and onnx_rep.checker == "passed"
    assert (tmp_path / "mnv2.bin").stat().st_size >= 4 * 0.95 * onnx_rep.parameters  # fp32 weights in the IR


def test_keras_file_and_saved_model_through_the_cli(mobilenet, images, tmp_path, capsys):
    mobilenet.save(tmp_path / "m.keras")
    assert main(["convert", str(tmp_path / "m.keras"), "-o", str(tmp_path / "k.onnx"), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["passed"] and rep["source"]["kind"] == "keras.Model"
    mobilenet.export(str(tmp_path / "sm"), format="tf_saved_model", verbose=False)
    assert main(["convert", str(tmp_path / "sm"), "-o", str(tmp_path / "sm.tflite")]) == 0
    assert "VERIFIED" in capsys.readouterr().out
    ref = mobilenet(images, training=False).numpy()
    from infercore.backends.litert import raw_session

    got = next(iter(raw_session(tmp_path / "sm.tflite").run({"serving_default_keras_tensor:0": images}).values()))
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()


def test_tf_function_to_onnx_with_dynamic_axes(tmp_path):
    w = tf.Variable(np.random.default_rng(2).standard_normal((8, 4)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, None, 8], tf.float32, name="tokens")])
    def pooled(x):
        return {"mean": tf.reduce_mean(tf.tanh(x @ w), axis=1)}

    res = ic.convert(pooled, "onnx", dynamic={"tokens": {0: "batch", 1: "sequence"}}, output=tmp_path / "f.onnx")
    rep = res.report
    assert rep.passed and len(rep.shapes) == 4  # two batch sizes x two sequence lengths
    c = tf.constant(np.ones((8, 4), np.float32))
    captures = tf.function(lambda x: x @ c, input_signature=[tf.TensorSpec([None, 8], tf.float32, name="x")])
    with pytest.raises(ic.ConversionError, match=r"tf\.Variable"):
        ic.convert(captures, "onnx", output=tmp_path / "c.onnx")
    assert not (tmp_path / "c.onnx").exists()
    x = np.random.default_rng(3).standard_normal((2, 7, 8)).astype(np.float32)
    with ic.load(res.artifact_path) as eng:
        assert [d for d in eng.inputs[0].dim_names[:2]] == ["batch", "sequence"]
        got = eng.run({"tokens": x})["output"]
    np.testing.assert_allclose(got, pooled(x)["mean"].numpy(), rtol=1e-5, atol=1e-6)


def test_digits_keras_to_tflite_float_and_full_int8_with_accuracy(tmp_path):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[..., None]
    y = d.target
    order = np.random.default_rng(0).permutation(len(x))
    train, test = order[:1300], order[1300:]
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 1), name="image"), keras.layers.Conv2D(16, 3, activation="relu", padding="same"),
                              keras.layers.Flatten(), keras.layers.Dense(10, name="logits")])  # fmt: skip
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[train], y[train], epochs=8, verbose=0)
    keras_acc = float((model.predict(x[test], verbose=0).argmax(1) == y[test]).mean())
    assert keras_acc > 0.9

    f32 = ic.convert(model, output=tmp_path / "digits.tflite", data={"image": x[test[:64]]})
    i8 = ic.convert(model, output=tmp_path / "digits.int8.tflite", precision="int8", data={"image": x[train]})
    assert f32.report.tolerance == "fp32" and i8.report.tolerance == "int8" and i8.report.passed
    assert set(i8.report.backends) >= {"litert"}
    from infercore.backends.litert import raw_session

    s = raw_session(i8.artifact_path)
    assert s.inputs[0].dtype == np.int8 and s.outputs[0].dtype == np.int8  # full integer, edge to edge
    with ic.load(i8.artifact_path, "litert", options={"dequantize": True}) as eng:
        logits = eng.run({eng.inputs[0].name: x[test]})[eng.outputs[0].name]
    int8_acc = float((logits.argmax(1) == y[test]).mean())
    assert int8_acc >= keras_acc - 0.02  # measured here: equal to Keras'
    with ic.load(f32.artifact_path) as eng:
        f32_logits = eng.run({eng.inputs[0].name: x[test]})[eng.outputs[0].name]
    np.testing.assert_allclose(f32_logits, model.predict(x[test], verbose=0), rtol=1e-4, atol=1e-4)
    assert (tmp_path / "digits.int8.tflite").stat().st_size < (tmp_path / "digits.tflite").stat().st_size
    with pytest.raises(ic.ArgumentError, match="data"):
        ic.convert(model, output=tmp_path / "no.tflite", precision="int8")


@pytest.mark.parametrize("name", ["face_detection_short_range", "palm_detection_lite"])
def test_mediapipe_tflite_to_onnx_agrees_with_litert(name, tmp_path):
    from infercore.backends.litert import raw_session
    from infercore.testing import models

    src = models.mediapipe(name)
    res = ic.convert(src, output=tmp_path / f"{name}.onnx")
    rep = res.report
    assert rep.passed and rep.source.framework == "tflite" and rep.exporter == "tf2onnx.convert.from_tflite"
    lite = raw_session(src)
    spec = lite.inputs[0]
    x = np.random.default_rng(4).uniform(-1, 1, spec.shape).astype(np.float32)
    ref = lite.run({spec.name: x})
    with ic.load(res.artifact_path, "ort") as eng:
        got = eng.run({eng.inputs[0].name: x})
    assert set(got) == set(ref)  # outputs keep LiteRT's names
    for k, r in ref.items():
        assert np.abs(got[k] - r).max() <= 1e-4 * max(1.0, float(np.abs(r).max())), k
    ir = ic.convert(src, output=tmp_path / f"{name}.xml")
    assert ir.report.passed
