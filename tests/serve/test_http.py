"""Raw HTTP against the REST front: the binary extension byte by byte, bad requests, limits, auth,
overload, metrics and logs."""

from __future__ import annotations

import json
import logging
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from .conftest import affine, affine_model, running

httpx = pytest.importorskip("httpx")


def _url(server, path: str) -> str:
    return f"http://127.0.0.1:{server.ports['http']}{path}"


def _x_request(x: np.ndarray, **extra) -> dict:
    return {
        "inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}],
        **extra,
    }


def test_json_request_nested_data_and_parameters(server):
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    body = {
        "id": "n1",
        "parameters": {"priority": 1, "timeout": 5_000_000},
        "inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": x.tolist()}],
        "outputs": [{"name": "y"}],
    }
    r = httpx.post(_url(server, "/v2/models/affine/versions/2/infer"), json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["id"] == "n1" and out["model_name"] == "affine" and out["model_version"] == "2"
    (y,) = out["outputs"]
    assert y["name"] == "y" and y["datatype"] == "FP32" and y["shape"] == [2, 4]
    np.testing.assert_allclose(np.array(y["data"], np.float32).reshape(2, 4), affine(x, 3.0)["y"])


def test_binary_request_and_response_bytes(server):
    """The binary extension by hand: JSON header, then raw little-endian tensors; output in binary."""
    x = np.random.default_rng(4).standard_normal((3, 4)).astype(np.float32)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": [3, 4],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    r = httpx.post(
        _url(server, "/v2/models/affine/infer"),
        content=header + x.astype("<f4").tobytes(),
        headers={
            "Inference-Header-Content-Length": str(len(header)),
            "Content-Type": "application/octet-stream",
        },
    )
    assert r.status_code == 200, r.text
    n = int(r.headers["Inference-Header-Content-Length"])
    head = json.loads(r.content[:n])
    blobs = r.content[n:]
    want = affine(x, 3.0)
    pos = 0
    for o in head["outputs"]:
        size = o["parameters"]["binary_data_size"]
        dtype = {"FP32": "<f4", "INT64": "<i8"}[o["datatype"]]
        got = np.frombuffer(blobs[pos : pos + size], dtype=dtype).reshape(o["shape"])
        np.testing.assert_allclose(got, want[o["name"]], rtol=1e-6)
        pos += size
    assert pos == len(blobs)


def test_bytes_binary_framing(server):
    """BYTES in binary: each element a 4-byte little-endian length, then its bytes."""
    items = [b"abc", "ünï".encode(), b""]
    raw = b"".join(struct.pack("<I", len(b)) + b for b in items)
    header = json.dumps(
        {
            "inputs": [
                {"name": "s", "shape": [3], "datatype": "BYTES", "parameters": {"binary_data_size": len(raw)}}
            ],
            "outputs": [{"name": "out", "parameters": {"binary_data": True}}],
        }
    ).encode()
    r = httpx.post(
        _url(server, "/v2/models/strings/infer"),
        content=header + raw,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert r.status_code == 200, r.text
    n = int(r.headers["Inference-Header-Content-Length"])
    assert r.content[n:] == raw


BAD = [
    (
        "unknown model",
        "/v2/models/nope/infer",
        _x_request(np.zeros((1, 4), np.float32)),
        "unknown model 'nope'",
    ),
    (
        "unknown version",
        "/v2/models/affine/versions/9/infer",
        _x_request(np.zeros((1, 4), np.float32)),
        "no ready version '9'",
    ),
    ("wrong shape", "/v2/models/affine/infer", _x_request(np.zeros((1, 5), np.float32)), "takes shape"),
    (
        "wrong dtype",
        "/v2/models/affine/infer",
        {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "INT64", "data": [1, 2, 3, 4]}]},
        "takes FP32",
    ),
    (
        "size mismatch",
        "/v2/models/affine/infer",
        {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3]}]},
        "needs 4 elements",
    ),
    (
        "unknown input",
        "/v2/models/affine/infer",
        {"inputs": [{"name": "q", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]},
        "no input 'q'",
    ),
    ("no inputs", "/v2/models/affine/infer", {"inputs": []}, "missing input(s) 'x'"),
    ("inputs not a list", "/v2/models/affine/infer", {"inputs": {}}, "no 'inputs'"),
    (
        "unknown datatype",
        "/v2/models/affine/infer",
        {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP128", "data": [1, 2, 3, 4]}]},
        "unknown datatype",
    ),
    (
        "strings as numbers",
        "/v2/models/affine/infer",
        {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": ["a", "b", "c", "d"]}]},
        "numbers",
    ),
    (
        "negative dim",
        "/v2/models/affine/infer",
        {"inputs": [{"name": "x", "shape": [-1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]},
        "non-negative",
    ),
    (
        "unknown output",
        "/v2/models/affine/infer",
        _x_request(np.zeros((1, 4), np.float32), outputs=[{"name": "zz"}]),
        "no output 'zz'",
    ),
    (
        "bad priority",
        "/v2/models/affine/infer",
        _x_request(np.zeros((1, 4), np.float32), parameters={"priority": 7}),
        "priority",
    ),
]


@pytest.mark.parametrize(("path", "body", "says"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_request_is_400_with_a_clear_message(server, path, body, says):
    r = httpx.post(_url(server, path), json=body)
    assert r.status_code == 400, r.text
    assert says in r.json()["error"]


@pytest.mark.parametrize(
    ("content", "headers", "says"),
    [
        (b'{"inputs": [', {}, "not valid JSON"),
        (b"[1, 2]", {}, "JSON object"),
        (b'{"inputs": []}', {"Inference-Header-Content-Length": "999"}, "does not fit"),
        (b'{"inputs": []}', {"Inference-Header-Content-Length": "x"}, "does not fit"),
    ],
    ids=["truncated JSON", "not an object", "header length past the body", "header length not a number"],
)
def test_malformed_bodies_are_400(server, content, headers, says):
    r = httpx.post(_url(server, "/v2/models/affine/infer"), content=content, headers=headers)
    assert r.status_code == 400, r.text
    assert says in r.json()["error"]


@pytest.mark.parametrize("given", [15, 17, 40])
def test_binary_lengths_that_do_not_match_are_400(server, given):
    """binary_data_size that disagrees with the shape, or with the bytes actually sent."""
    x = np.zeros((1, 4), np.float32)
    header = json.dumps(
        {
            "inputs": [
                {"name": "x", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": given}}
            ]
        }
    ).encode()
    r = httpx.post(
        _url(server, "/v2/models/affine/infer"),
        content=header + x.tobytes() + b"\0",
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert r.status_code == 400, r.text
    assert "binary" in r.json()["error"] or "bytes" in r.json()["error"]


def test_bad_bytes_framing_is_400(server):
    raw = struct.pack("<I", 100) + b"short"
    header = json.dumps(
        {
            "inputs": [
                {"name": "s", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": len(raw)}}
            ]
        }
    ).encode()
    r = httpx.post(
        _url(server, "/v2/models/strings/infer"),
        content=header + raw,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert r.status_code == 400 and "claims 100 bytes" in r.json()["error"]


def test_unknown_endpoint_and_method(server):
    assert httpx.get(_url(server, "/v2/nothing")).status_code == 404
    assert httpx.get(_url(server, "/v2/models/affine/infer")).status_code == 405


def test_oversized_body_is_refused_before_it_is_read(repo: Path):
    with running(repo, max_body=4096, grpc_port=None) as server:
        big = np.zeros((300, 4), np.float32)
        r = httpx.post(_url(server, "/v2/models/affine/infer"), json=_x_request(big))
        assert r.status_code == 413 and "4096" in r.json()["error"]

        def chunks():  # no Content-Length: streamed, refused once 4096 bytes have come
            for _ in range(100):
                yield b" " * 1024

        r = httpx.post(_url(server, "/v2/models/affine/infer"), content=chunks())
        assert r.status_code == 413
        small = _x_request(np.ones((1, 4), np.float32))
        assert httpx.post(_url(server, "/v2/models/affine/infer"), json=small).status_code == 200


def test_bearer_token_auth(repo: Path):
    grpcclient = pytest.importorskip("tritonclient.grpc")
    from tritonclient.utils import InferenceServerException

    with running(repo, token="s3cret", models=["affine"]) as server:
        body = _x_request(np.ones((1, 4), np.float32))
        url = _url(server, "/v2/models/affine/infer")
        assert httpx.post(url, json=body).status_code == 401
        assert httpx.post(url, json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.post(url, json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert httpx.post(_url(server, "/v2/repository/index")).status_code == 401
        assert httpx.post(_url(server, "/v2/repository/models/affine/unload")).status_code == 401
        assert httpx.get(_url(server, "/v2/health/ready")).status_code == 200  # health stays open
        assert httpx.get(_url(server, "/v2/models/affine")).status_code == 200
        g = grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}")
        inp = grpcclient.InferInput("x", [1, 4], "FP32")
        inp.set_data_from_numpy(np.ones((1, 4), np.float32))
        with pytest.raises(InferenceServerException) as e:
            g.infer("affine", [inp])
        assert e.value.status() == "StatusCode.UNAUTHENTICATED"
        assert g.infer("affine", [inp], headers={"authorization": "Bearer s3cret"}).as_numpy("y")[0, 0] == 4.0


def test_overload_is_503_at_once_and_nothing_is_lost(tmp_path: Path):
    """A queue of 2 that waits for a batch of 64: the 2 accepted requests are answered (200), the
    rest are refused with 503 (gRPC UNAVAILABLE) before any accepted one is answered."""
    grpcclient = pytest.importorskip("tritonclient.grpc")
    from tritonclient.utils import InferenceServerException

    affine_model(tmp_path / "held" / "1" / "model.onnx", 2.0)
    (tmp_path / "held" / "config.yaml").write_text(
        "threads: 1\nbatching: {max_batch_size: 64, max_queue_size: 2, max_queue_delay_ms: 1000}\n"
    )
    x = np.random.default_rng(5).standard_normal((1, 4)).astype(np.float32)
    want = affine(x, 2.0)["y"]
    with running(tmp_path) as server:
        url = _url(server, "/v2/models/held/infer")

        def post(_: int) -> tuple[int, float, np.ndarray | None]:
            r = httpx.post(url, json=_x_request(x), timeout=60)
            data = np.array(r.json()["outputs"][0]["data"], np.float32) if r.status_code == 200 else None
            return r.status_code, time.monotonic(), data

        with ThreadPoolExecutor(12) as pool:
            results = list(pool.map(post, range(12)))
        codes = [c for c, _, _ in results]
        assert sorted(codes) == [200] * 2 + [503] * 10, codes
        assert max(t for c, t, _ in results if c == 503) < min(t for c, t, _ in results if c == 200)
        for code, _, y in results:
            if code == 200:
                np.testing.assert_allclose(y, want.ravel(), rtol=1e-6)
        g = grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}")

        def grpc_call(_: int) -> str:
            inp = grpcclient.InferInput("x", [1, 4], "FP32")
            inp.set_data_from_numpy(x)
            try:
                np.testing.assert_allclose(g.infer("held", [inp]).as_numpy("y"), want, rtol=1e-6)
                return "OK"
            except InferenceServerException as e:
                return str(e.status())

        with ThreadPoolExecutor(12) as pool:
            statuses = list(pool.map(grpc_call, range(12)))
        assert sorted(statuses) == ["OK"] * 2 + ["StatusCode.UNAVAILABLE"] * 10, statuses
        runner = server.repo.get("held").runner
        for _ in range(500):  # a batch's counters land just after its futures resolve
            if runner.metrics.succeeded == 4:
                break
            time.sleep(0.01)
        m = runner.metrics
        assert (m.submitted, m.succeeded, m.rejected) == (4, 4, 20)


def test_metrics_per_model_and_version(server):
    httpx.post(_url(server, "/v2/models/affine/infer"), json=_x_request(np.ones((2, 4), np.float32)))
    httpx.post(_url(server, "/v2/models/affine/infer"), json=_x_request(np.ones((2, 5), np.float32)))
    text = httpx.get(f"http://127.0.0.1:{server.ports['metrics']}/metrics").text
    assert 'infercore_request_success_total{model="affine",protocol="http",version="2"}' in text
    assert (
        'infercore_request_failure_total{model="affine",protocol="http",reason="BadRequest",version="2"}'
        in text
    )
    assert (
        'infercore_request_duration_seconds_bucket{le="0.01",model="affine",protocol="http",version="2"}'
        in text
    )
    assert 'infercore_batch_size_count{model="affine",version="2"}' in text
    assert 'infercore_queue_duration_seconds{model="affine",quantile="0.99",version="2"}' in text
    assert 'infercore_compute_duration_seconds{model="affine",quantile="0.5",version="2"}' in text


def test_access_log_is_json_with_request_id(server, caplog):
    from infercore.serve.logs import JsonFormatter

    with caplog.at_level(logging.INFO, logger="infercore.serve.access"):
        r = httpx.post(
            _url(server, "/v2/models/affine/infer"),
            json=_x_request(np.ones((1, 4), np.float32), id="trace-42"),
        )
        assert r.status_code == 200
    (rec,) = [r for r in caplog.records if getattr(r, "request_id", None) == "trace-42"]
    line = json.loads(JsonFormatter().format(rec))
    assert line["request_id"] == "trace-42" and line["model"] == "affine" and line["status"] == 200
    assert line["version"] == "2" and line["protocol"] == "http" and line["duration_ms"] > 0
