"""Triton's own V2 clients (HTTP binary and JSON, gRPC) against ``infercore serve``, in-process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from .conftest import affine, running

httpclient = pytest.importorskip("tritonclient.http")
grpcclient = pytest.importorskip("tritonclient.grpc")
InferenceServerException = pytest.importorskip("tritonclient.utils").InferenceServerException


def test_http_health_metadata_and_index(server):
    c = httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}")
    assert c.is_server_live() and c.is_server_ready()
    assert c.is_model_ready("affine") and c.is_model_ready("affine", "2")
    assert not c.is_model_ready("affine", "1")  # latest 1: version 1 is on disk, not served
    assert not c.is_model_ready("nope")
    meta = c.get_server_metadata()
    assert meta["name"] == "infercore" and "binary_tensor_data" in meta["extensions"]
    m = c.get_model_metadata("affine")
    assert m["versions"] == ["2"] and m["platform"] == "infercore_ort"
    assert m["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert {o["name"]: o["datatype"] for o in m["outputs"]} == {"y": "FP32", "idx": "INT64"}
    index = {(r["name"], r["version"]): r["state"] for r in c.get_model_repository_index()}
    assert index == {("affine", "2"): "READY", ("strings", "1"): "READY"}


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_http_infer(server, binary):
    c = httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}")
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    inp = httpclient.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    outs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("y", "idx")]
    res = c.infer("affine", [inp], outputs=outs, request_id="req-7")
    want = affine(x, 3.0)
    np.testing.assert_allclose(res.as_numpy("y"), want["y"], rtol=1e-6)
    np.testing.assert_array_equal(res.as_numpy("idx"), want["idx"])
    body = res.get_response()
    assert body["id"] == "req-7" and body["model_version"] == "2"
    # a requested subset of the outputs, and an explicit version
    only = c.infer(
        "affine", [inp], model_version="2", outputs=[httpclient.InferRequestedOutput("idx", binary)]
    )
    assert [o["name"] for o in only.get_response()["outputs"]] == ["idx"]


def test_http_bytes_both_ways(server):
    c = httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}")
    s = np.array(["héllo".encode(), b"", b"world"], dtype=object)
    for binary in (True, False):
        inp = httpclient.InferInput("s", [3], "BYTES")
        inp.set_data_from_numpy(s, binary_data=binary)
        res = c.infer("strings", [inp], outputs=[httpclient.InferRequestedOutput("out", binary_data=binary)])
        got = res.as_numpy("out")
        assert [v if isinstance(v, bytes) else v.encode() for v in got.tolist()] == s.tolist()


def test_grpc_metadata_and_infer(server):
    c = grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}")
    assert c.is_server_live() and c.is_server_ready() and c.is_model_ready("affine")
    assert not c.is_model_ready("affine", "1")
    assert c.get_server_metadata().name == "infercore"
    m = c.get_model_metadata("affine")
    assert list(m.versions) == ["2"] and list(m.inputs[0].shape) == [-1, 4]
    x = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    inp = grpcclient.InferInput("x", [3, 4], "FP32")
    inp.set_data_from_numpy(x)
    res = c.infer("affine", [inp], request_id="g-1")
    want = affine(x, 3.0)
    np.testing.assert_allclose(res.as_numpy("y"), want["y"], rtol=1e-6)
    np.testing.assert_array_equal(res.as_numpy("idx"), want["idx"])
    assert res.get_response().id == "g-1"
    s = np.array([b"ab", "ü".encode()], dtype=object)
    inp = grpcclient.InferInput("s", [2], "BYTES")
    inp.set_data_from_numpy(s)
    assert c.infer("strings", [inp]).as_numpy("out").tolist() == s.tolist()
    index = c.get_model_repository_index()
    assert {(m.name, m.version) for m in index.models} == {("affine", "2"), ("strings", "1")}


def test_grpc_bad_request_is_invalid_argument(server):
    c = grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}")
    inp = grpcclient.InferInput("x", [2, 5], "FP32")
    inp.set_data_from_numpy(np.zeros((2, 5), np.float32))
    with pytest.raises(InferenceServerException) as e:
        c.infer("affine", [inp])
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT" and "shape" in e.value.message()
    with pytest.raises(InferenceServerException) as e:
        c.infer("nope", [inp])
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT" and "unknown model 'nope'" in e.value.message()


def test_load_unload_and_rollback(repo: Path, tmp_path: Path):
    """Reload with an older version selected (rollback), unload, load again: through both clients."""
    with running(repo, models=["affine"]) as server:
        c = httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}")
        g = grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}")
        x = np.ones((1, 4), np.float32)

        def y() -> float:
            inp = httpclient.InferInput("x", [1, 4], "FP32")
            inp.set_data_from_numpy(x)
            return float(c.infer("affine", [inp]).as_numpy("y")[0, 0])

        assert y() == 4.0  # version 2: x * 3 + 1
        assert not c.is_model_ready("strings")  # not loaded at start (--model affine)
        c.load_model("affine", config='{"version_policy": {"specific": [1]}}')
        assert y() == 3.0 and c.is_model_ready("affine", "1") and not c.is_model_ready("affine", "2")
        g.load_model("affine", config='{"version_policy": "all"}')
        assert g.get_model_metadata("affine").versions == ["1", "2"] and y() == 4.0
        c.unload_model("affine")
        assert not c.is_model_ready("affine")
        with pytest.raises(InferenceServerException, match="unknown model"):
            y()
        g.load_model("strings")
        c.load_model("affine")
        assert y() == 4.0 and c.is_model_ready("strings")
        with pytest.raises(InferenceServerException, match="no model 'missing'"):
            c.load_model("missing")
        with pytest.raises(InferenceServerException, match="version_policy"):
            c.load_model("affine", config='{"version_policy": {"newest": 1}}')
        assert y() == 4.0  # a failed load leaves the served versions alone


def test_real_model_ppocr_cls_matches_ort(tmp_path: Path):
    """PP-OCR's direction classifier served over HTTP (binary) and gRPC equals direct ONNX Runtime."""
    ort = pytest.importorskip("onnxruntime")
    from infercore.testing import models

    try:
        src = models.ppocr_cls()
    except models.ModelUnavailable as e:
        pytest.skip(f"PP-OCR cls not available here: {e}")
    (tmp_path / "cls" / "1").mkdir(parents=True)
    (tmp_path / "cls" / "1" / "model.onnx").symlink_to(src)
    (tmp_path / "cls" / "config.yaml").write_text(
        "threads: 1\nbatching: {max_batch_size: 8, max_queue_delay_ms: 1}\n"
    )
    x = np.random.default_rng(3).random((2, 3, 48, 192), dtype=np.float32)
    sess = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
    want = sess.run(None, {"x": x})[0]
    with running(tmp_path) as server:
        c = httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}")
        inp = httpclient.InferInput("x", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        out_name = c.get_model_metadata("cls")["outputs"][0]["name"]
        got = c.infer("cls", [inp]).as_numpy(out_name)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        g = grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}")
        ginp = grpcclient.InferInput("x", list(x.shape), "FP32")
        ginp.set_data_from_numpy(x)
        np.testing.assert_allclose(g.infer("cls", [ginp]).as_numpy(out_name), want, rtol=1e-5, atol=1e-6)
