"""Profiles: features against numpy, what a real model's profile holds, the JSON round trip, and
refusals that name the problem."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

import infercore as ic
from infercore.monitor import Featurizer, Profile
from infercore.monitor.features import Workspace
from infercore.specs import TensorSpec
from tests import onnx_models as m

pytest.importorskip("onnxruntime")
pytest.importorskip("scipy")


def test_subpackage_is_reached_as_an_attribute_and_import_stays_light():
    import subprocess
    import sys

    code = ("import sys, infercore as ic; ic.monitor.Profile; ic.monitor.Monitor; "
            "print('scipy' in sys.modules, 'infercore.monitor' in sys.modules)")
    assert subprocess.check_output([sys.executable, "-c", code], text=True).split() == ["False", "True"]
    code = "import sys, infercore; print('infercore.monitor' in sys.modules)"
    assert subprocess.check_output([sys.executable, "-c", code], text=True).strip() == "False"


def test_layouts_and_features_against_numpy():
    rng = np.random.default_rng(0)
    # tabular: every element
    x = rng.standard_normal((5, 4)).astype(np.float32)
    fz = Featurizer.for_tensor(TensorSpec("x", np.float32, (None, 4)), x)
    assert fz.layout == "elements" and fz.names[1] == "x[1]"
    np.testing.assert_array_equal(fz(x), x.astype(np.float64))
    # NCHW image: mean, std, texture per channel (the texture along the width)
    img = rng.random((3, 3, 20, 50), dtype=np.float32)
    fz = Featurizer.for_tensor(TensorSpec("img", np.float32, (None, 3, 20, 50)), img)
    assert fz.layout == "channels" and fz.channel_axis == 0 and len(fz.names) == 9
    got = fz(img).reshape(3, 3, 3)
    np.testing.assert_allclose(got[..., 0], img.mean(axis=(2, 3)), rtol=1e-5)
    np.testing.assert_allclose(got[..., 1], img.std(axis=(2, 3)), rtol=1e-4)
    np.testing.assert_allclose(got[..., 2], np.abs(np.diff(img, axis=3)).mean(axis=(2, 3)), rtol=1e-5)
    # a large image is read from every k-th row: at most 1,024 values per channel (48 x 192: every 10th row)
    big = rng.random((2, 3, 48, 192), dtype=np.float32)
    fz = Featurizer.for_tensor(TensorSpec("x", np.float32, (None, 3, None, None)), big)
    rows = big[:, :, ::10]
    got = fz(big).reshape(2, 3, 3)
    np.testing.assert_allclose(got[..., 0], rows.mean(axis=(2, 3)), rtol=1e-5)
    np.testing.assert_allclose(got[..., 2], np.abs(np.diff(rows, axis=3)).mean(axis=(2, 3)), rtol=1e-5)
    np.testing.assert_array_equal(fz.of_samples(np.concatenate([fz.thin(big[:1]), fz.thin(big[1:])])), fz(big))
    # NHWC: the channel axis is the last one
    nhwc = rng.random((2, 30, 30, 3), dtype=np.float32)
    fz = Featurizer.for_tensor(TensorSpec("im", np.float32, (1, 30, 30, 3)), nhwc[:1])
    assert fz.layout == "channels" and fz.channel_axis == 2
    np.testing.assert_allclose(fz(nhwc)[:, 0], nhwc[..., 0].mean(axis=(1, 2)), rtol=1e-5)
    # token ids of a dynamic length: a summary
    ids = rng.integers(0, 30000, (4, 17))
    fz = Featurizer.for_tensor(TensorSpec("input_ids", np.int64, (None, None)), ids)
    assert fz.layout == "summary" and fz.names[:4] == ("input_ids:mean", "input_ids:std", "input_ids:min", "input_ids:max")
    np.testing.assert_allclose(fz(ids)[:, 0], ids.mean(axis=1))
    # a state tensor whose batch axis is not the first ([2, batch, 128]) is one sample
    state = rng.random((2, 1, 128), dtype=np.float32)
    fz = Featurizer.for_tensor(TensorSpec("state", np.float32, (2, None, 128), ("n", "batch", None)), state)
    assert not fz.batched and fz.layout == "channels" and fz.size == 6
    np.testing.assert_allclose(fz(state)[0, 0::3], state.mean(axis=(1, 2)), rtol=1e-5)
    np.testing.assert_array_equal(fz.of_samples(fz.thin(fz.samples(state))), fz(state))
    # a 0-d input is one sample of one feature
    fz = Featurizer.for_tensor(TensorSpec("sr", np.int64, ()), np.array(16000))
    assert fz.layout == "scalar" and fz(np.array(16000)).tolist() == [[16000.0]]


def test_kept_and_gathered_samples_give_the_features_of_the_whole_batch():
    rng = np.random.default_rng(1)
    big = rng.random((2, 3, 48, 192), dtype=np.float32)
    fz = Featurizer.for_tensor(TensorSpec("x", np.float32, (None, 3, None, None)), big)
    a, b = big[:1], big[1:]
    kept = [fz.keep(a), fz.keep(b)]
    # the rows the features read (every 10th), copied: the request's buffer is not held
    assert kept[0].shape == (1, 3, 5, 192) and not np.shares_memory(kept[0], big)
    np.testing.assert_array_equal(kept[0], a[:, :, ::10])
    work = Workspace()
    for _ in range(2):  # the second pass reuses the scratch arrays of the first
        batch = fz.gather(kept, work)
        np.testing.assert_array_equal(fz.of_samples(batch, work), fz(big))
    assert work.nbytes() > 0
    np.testing.assert_array_equal(fz.of_samples(fz.gather([a, b])), fz(big))  # unthinned arrays too
    assert fz.gather([a, rng.random((1, 3, 40, 192), dtype=np.float32)]) is None  # sample shapes differ
    # nothing to thin (a small image, a table): the array itself, not a copy
    small = rng.random((1, 3, 8, 8), dtype=np.float32)
    fz_small = Featurizer.for_tensor(TensorSpec("s", np.float32, (None, 3, 8, 8)), small)
    assert fz_small.keep(small) is small


def test_the_monitor_does_not_hold_a_requests_image(tmp_path):
    import weakref

    from onnx import TensorProto

    rng = np.random.default_rng(2)
    ref = rng.random((64, 3, 48, 192), dtype=np.float32)
    path = m.identity(tmp_path / "image.onnx", TensorProto.FLOAT, ("n", 3, 48, 192))
    profile = Profile.build(path, ref, batch_size=16)
    with ic.monitor.Monitor(profile, window=20, tensors=["x"]) as mon:
        gate = threading.Event()
        real = mon._process
        mon._process = lambda samples: (gate.wait(30), real(samples))  # the worker holds on
        x = rng.random((1, 3, 48, 192), dtype=np.float32)
        alive = weakref.ref(x)
        mon.observe({"x": x})
        del x
        assert alive() is None  # what waits in the queue is a copy of the rows the features read
        gate.set()
        mon.flush()
        assert mon.state()["tensors"]["x"]["samples"] == 1


def test_the_worker_process_reads_tensors_with_no_batch_axis_as_the_thread_does(tmp_path):
    from infercore.monitor.worker import supported

    if supported():
        pytest.skip(f"no worker process here: {supported()}")
    from onnx import TensorProto, helper

    # x [batch, 3] and a 0-d s: the batch's rows are samples, s is one sample per request
    path = m.save(tmp_path / "scaled.onnx", [helper.make_node("Mul", ["x", "s"], ["y"])],
                  [m.vi("x", TensorProto.FLOAT, ["batch", 3]), m.vi("s", TensorProto.FLOAT, [])],
                  [m.vi("y", TensorProto.FLOAT, ["batch", 3])])
    rng = np.random.default_rng(3)
    data = [{"x": rng.standard_normal((2, 3)).astype(np.float32), "s": np.array(rng.standard_normal(), np.float32)}
            for _ in range(200)]
    profile = Profile.build(path, data)
    assert not profile.tensors["s"].featurizer.batched and profile.tensors["x"].featurizer.batched
    states = {}
    for worker in ("thread", "process"):
        with ic.monitor.Monitor(profile, window=50, worker=worker, queue_size=1000) as mon:
            r = np.random.default_rng(4)
            for i in range(300):
                x = r.standard_normal((2, 3)).astype(np.float32)
                s = np.array(r.standard_normal() + (1.0 if i >= 150 else 0.0), np.float32)
                mon.observe({"x": x, "s": s}, {"y": x * s})
                if i % 40 == 39:
                    mon.flush()
            mon.flush()
            states[worker] = mon.state()
            for t in states[worker]["tensors"].values():
                t.pop("updated")
    assert states["process"]["samples"]["processed"] == states["thread"]["samples"]["processed"] == 300
    assert states["process"]["tensors"] == states["thread"]["tensors"] and states["process"]["tensors"]["s"]["drift"]


def test_profile_of_a_real_model_with_labels(tmp_path):
    path, w = m.mlp(tmp_path / "mlp.onnx", d_in=4, d_out=3)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((600, 4)).astype(np.float32)
    logits, probs = m.mlp_numpy(x, w)
    labels = logits.argmax(1)
    labels[:60] = (labels[:60] + 1) % 3  # 90% right
    p = Profile.build(path, (x, labels), batch_size=64)
    assert p.samples == 600 and set(p.tensors) == {"x", "logits", "probs"}
    xs = p.tensors["x"].stats
    np.testing.assert_allclose(xs.mean, x.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(xs.quantiles[:, 100], np.median(x, axis=0), rtol=1e-5)
    clf = p.tensors["probs"].classes
    assert clf is not None and clf.probabilities and clf.classes == 3
    np.testing.assert_array_equal(clf.counts, np.bincount(probs.argmax(1), minlength=3))
    assert p.tensors["logits"].classes is not None and not p.tensors["logits"].classes.probabilities
    assert p.quality["accuracy"] == pytest.approx(0.9)
    assert p.classifier is not None and p.classifier.name == p.quality["output"]
    assert p.tensors["x"].screen is not None and p.tensors["x"].screen.whiten is not None
    # JSON round trip keeps everything the tests use
    p.save(tmp_path / "p.json")
    q = Profile.load(tmp_path / "p.json")
    np.testing.assert_array_equal(q.tensors["x"].stats.quantiles, xs.quantiles)
    assert q.tensors["x"].featurizer == p.tensors["x"].featurizer and q.quality == p.quality
    raw = json.loads((tmp_path / "p.json").read_text())
    assert raw["format"] == "infercore.profile" and raw["version"] == 1


def test_profile_files_that_cannot_be_used(tmp_path):
    with pytest.raises(ic.ProfileError, match="profile not found"):
        Profile.load(tmp_path / "nope.json")
    (tmp_path / "a.json").write_text("{not json")
    with pytest.raises(ic.ProfileError, match="cannot read"):
        Profile.load(tmp_path / "a.json")
    (tmp_path / "b.json").write_text(json.dumps({"format": "infercore.profile", "version": 99, "tensors": {}}))
    with pytest.raises(ic.ProfileError, match="version 99; this infercore reads version 1"):
        Profile.load(tmp_path / "b.json")
    p = Profile.from_arrays({"z": np.zeros((50, 2), np.float32)})
    with pytest.raises(ic.ProfileError, match="tensor 'z', which the model has not"):
        p.check([TensorSpec("x", np.float32, (None, 2))], [])
    with pytest.raises(ic.ProfileError, match="dtype is float32, the model's float64"):
        p.check([TensorSpec("z", np.float64, (None, 2))], [])


def test_bad_arguments_name_the_parameter(tmp_path):
    path, _ = m.mlp(tmp_path / "mlp.onnx", d_in=4, d_out=3)
    x = np.zeros((20, 4), np.float32)
    with pytest.raises(ic.ArgumentError, match="classifier: the model has no output 'nope'"):
        Profile.build(path, x, classifier="nope")
    with pytest.raises(ic.ArgumentError, match="max_samples"):
        Profile.build(path, x, max_samples=1)
    with pytest.raises(ic.InputSpecError, match="input 'x'"):
        Profile.build(path, np.zeros((20, 5), np.float32))
