"""Requests that used to break the server or be answered wrongly: out-of-range numbers and
parameters, non-finite outputs, clients that go away, reloads mid-body, drains shorter than a
second, unbounded metric labels, and what the fuzzer (test_fuzz.py) found: JSON nested thousands
of levels deep, lone UTF-16 surrogates, empty tensors with enormous dimensions, gRPC bytes that are
no message. Each checked through real clients (httpx, tritonclient, grpc)."""

from __future__ import annotations

import json
import math
import socket
import struct
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.onnx_models import embedding

from .conftest import _save, affine, affine_model, running, strings_model

httpx = pytest.importorskip("httpx")
grpc = pytest.importorskip("grpc")
httpclient = pytest.importorskip("tritonclient.http")
grpcclient = pytest.importorskip("tritonclient.grpc")
InferenceServerException = pytest.importorskip("tritonclient.utils").InferenceServerException

_TYPES = {
    "INT8": TensorProto.INT8,
    "UINT8": TensorProto.UINT8,
    "INT64": TensorProto.INT64,
    "UINT64": TensorProto.UINT64,
    "FP16": TensorProto.FLOAT16,
    "FP32": TensorProto.FLOAT,
}


@pytest.fixture(scope="module")
def hrepo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``affine`` as in conftest, ``id_<type>`` (Identity, [N, 3]) per datatype, ``emb`` (a Gather
    of a 10-row table: tests/onnx_models.embedding), ``strings``
    (BYTES Identity, unbatched), ``bcast`` (x [N, n] + a 4-vector: a run fails unless n is 1 or 4)
    and ``held``: a batcher that waits 30 s for a batch of 64 that never fills, so requests stay
    queued."""
    root = tmp_path_factory.mktemp("hrepo")
    affine_model(root / "affine" / "1" / "model.onnx", 3.0)
    for name, tp in _TYPES.items():
        x = helper.make_tensor_value_info("x", tp, ["N", 3])
        y = helper.make_tensor_value_info("y", tp, ["N", 3])
        graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], f"id_{name}", [x], [y])
        _save(graph, root / f"id_{name.lower()}" / "1" / "model.onnx")
    affine_model(root / "held" / "1" / "model.onnx", 2.0)
    (root / "emb" / "1").mkdir(parents=True)
    embedding(root / "emb" / "1" / "model.onnx")
    (root / "emb" / "config.yaml").write_text("threads: 1\nbatching: {max_batch_size: 8, max_queue_delay_ms: 50}\n")
    strings_model(root / "strings" / "1" / "model.onnx")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "n"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "n"])
    four = numpy_helper.from_array(np.ones(4, np.float32), "four")
    graph = helper.make_graph([helper.make_node("Add", ["x", "four"], ["y"])], "bcast", [x], [y], [four])
    _save(graph, root / "bcast" / "1" / "model.onnx")
    (root / "bcast" / "config.yaml").write_text("threads: 1\n")
    (root / "strings" / "config.yaml").write_text("batching: false\nthreads: 1\n")
    (root / "held" / "config.yaml").write_text(
        "threads: 1\nbatching: {max_batch_size: 64, max_queue_delay_ms: 30000}\n"
    )
    return root


@pytest.fixture(scope="module")
def hserver(hrepo: Path) -> Iterator:
    with running(hrepo, token="s3cret") as s:
        yield s


AUTH = {"Authorization": "Bearer s3cret"}  # copied for tritonclient.http, which adds to the dict
GAUTH = {"authorization": "Bearer s3cret"}  # gRPC metadata keys are lowercase


def _url(server, path: str) -> str:
    return f"http://127.0.0.1:{server.ports['http']}{path}"


def _post(server, model: str, body: dict) -> httpx.Response:
    return httpx.post(_url(server, f"/v2/models/{model}/infer"), json=body, headers=AUTH, timeout=30)


def _x(x: np.ndarray, datatype: str = "FP32", **extra) -> dict:
    return {
        "inputs": [{"name": "x", "shape": list(x.shape), "datatype": datatype, "data": x.ravel().tolist()}],
        **extra,
    }


def _ok_affine(server) -> None:
    x = np.arange(4, dtype=np.float32).reshape(1, 4)
    r = _post(server, "affine", _x(x))
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(np.array(r.json()["outputs"][0]["data"]), affine(x, 3.0)["y"].ravel())


def _grpc_infer(server, request) -> object:
    channel = grpc.insecure_channel(f"127.0.0.1:{server.ports['grpc']}")
    from infercore.serve.grpc_service import messages as pb

    call = channel.unary_unary(
        "/inference.GRPCInferenceService/ModelInfer",
        request_serializer=pb.ModelInferRequest.SerializeToString,
        response_deserializer=pb.ModelInferResponse.FromString,
    )
    try:
        return call(request, metadata=[("authorization", "Bearer s3cret")], timeout=30)
    finally:
        channel.close()


# -- 1. a huge timeout parameter ------------------------------------------------------------------
@pytest.mark.parametrize("timeout", [1e20, 86_400_000_001, -1])
def test_out_of_range_timeout_is_400_and_the_batcher_lives(hserver, timeout):
    from infercore.serve.service import MAX_TIMEOUT_US

    x = np.ones((1, 4), np.float32)
    r = _post(hserver, "affine", _x(x, parameters={"timeout": timeout}))
    assert r.status_code == 400, r.text
    assert "'timeout'" in r.json()["error"] and str(MAX_TIMEOUT_US) in r.json()["error"]
    assert repr(timeout) in r.json()["error"]
    _ok_affine(hserver)  # the model's batcher still answers


def test_values_the_runtime_refuses_are_400_and_their_batch_is_answered(hserver):
    """A token id past the vocabulary fails the batch it is in: the runtime's INVALID_ARGUMENT is
    the client's error (400), and the requests batched with it are run again and answered."""
    table = np.arange(40, dtype=np.float32).reshape(10, 4)
    ids = [np.array([[i, (i + 1) % 10, 2]], np.int64) for i in range(3)] + [np.array([[1, 10, 0]], np.int64)]

    def body(x: np.ndarray) -> dict:
        return {"inputs": [{"name": "ids", "shape": list(x.shape), "datatype": "INT64", "data": x.ravel().tolist()}]}

    with ThreadPoolExecutor(4) as pool:  # within the 50 ms window: one batch
        answers = list(pool.map(lambda x: _post(hserver, "emb", body(x)), ids))
    for x, r in zip(ids[:3], answers[:3], strict=True):
        assert r.status_code == 200, r.text
        np.testing.assert_array_equal(np.array(r.json()["outputs"][0]["data"]), table[x].ravel())
    assert answers[3].status_code == 400, answers[3].text
    assert "refused the inputs" in answers[3].json()["error"] and "out of data bounds" in answers[3].json()["error"]


def test_a_runtime_failure_names_the_inputs_it_was_given(hserver):
    """The runtime's message names its node ("Add node ... 3 by 4"), not the input; the answer
    (500: ONNX Runtime reports it as a failure, not an invalid argument) says what was sent."""
    r = _post(hserver, "bcast", _x(np.ones((1, 3), np.float32)))
    assert r.status_code == 500, r.text
    msg = r.json()["error"]
    assert "failed on inputs x FP32 [1, 3]" in msg and "3 by 4" in msg, msg
    ok = _post(hserver, "bcast", _x(np.ones((1, 4), np.float32)))  # the model serves on
    assert ok.status_code == 200 and ok.json()["outputs"][0]["data"] == [2.0] * 4


def test_an_empty_inputs_list_names_the_missing_input(hserver):
    from infercore.serve.grpc_service import messages as pb

    r = _post(hserver, "affine", {"inputs": []})
    assert r.status_code == 400 and "missing input(s) 'x'" in r.json()["error"], r.text
    with pytest.raises(grpc.RpcError) as e:
        _grpc_infer(hserver, pb.ModelInferRequest(model_name="affine"))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "missing input(s) 'x'" in e.value.details()
    assert _post(hserver, "affine", {"inputs": {}}).status_code == 400  # not a list at all


def test_out_of_range_grpc_timeout_is_invalid_argument(hserver):
    g = grpcclient.InferenceServerClient(f"127.0.0.1:{hserver.ports['grpc']}")
    inp = grpcclient.InferInput("x", [1, 4], "FP32")
    inp.set_data_from_numpy(np.ones((1, 4), np.float32))
    with pytest.raises(InferenceServerException) as e:
        g.infer("affine", [inp], timeout=10**18, headers=GAUTH)  # microseconds, as int64_param
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT" and "'timeout'" in e.value.message()
    got = g.infer("affine", [inp], timeout=5_000_000, headers=GAUTH).as_numpy("y")
    np.testing.assert_array_equal(got, affine(np.ones((1, 4), np.float32), 3.0)["y"])
    _ok_affine(hserver)


# -- 2 and 8. numbers a datatype cannot hold; UINT64 beyond int64 ---------------------------------
@pytest.mark.parametrize(
    ("datatype", "values", "bad"),
    [
        ("INT8", [300, 1, 2], 300),
        ("INT8", [-200, 1, 2], -200),
        ("UINT8", [-1, 1, 2], -1),
        ("UINT8", [256, 1, 2], 256),
        ("INT64", [2**63, 1, 2], 2**63),
        ("UINT64", [2**64, 1, 2], 2**64),
        ("UINT64", [-1, 2**64 - 1, 2], -1),
    ],
)
def test_json_integers_out_of_range_are_400(hserver, datatype, values, bad):
    info = np.iinfo(np.dtype(datatype.lower()))
    body = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": datatype, "data": values}]}
    r = _post(hserver, f"id_{datatype.lower()}", body)
    assert r.status_code == 400, r.text
    msg = r.json()["error"]
    assert "'x'" in msg and str(bad) in msg and f"[{info.min}, {info.max}]" in msg and datatype in msg


@pytest.mark.parametrize(
    ("datatype", "values"), [("INT64", [True, 2, 3]), ("INT8", [False, True, True]), ("FP32", [1.5, True, 0.5])]
)
def test_json_true_false_for_a_number_is_400(hserver, datatype, values):
    """JSON true/false is not a number (numpy would read it as 1/0; Triton refuses it too)."""
    body = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": datatype, "data": values}]}
    r = _post(hserver, f"id_{datatype.lower()}", body)
    assert r.status_code == 400, r.text
    msg = r.json()["error"]
    assert "'x'" in msg and datatype in msg and "true/false" in msg


@pytest.mark.parametrize(("datatype", "value"), [("FP32", 1e300), ("FP16", 1e10), ("FP16", -70000.0)])
def test_json_floats_too_large_for_the_type_are_400(hserver, datatype, value):
    body = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": datatype, "data": [value, 1.0, 2.0]}]}
    r = _post(hserver, f"id_{datatype.lower()}", body)
    assert r.status_code == 400, r.text
    msg = r.json()["error"]
    assert "'x'" in msg and repr(value) in msg and datatype in msg
    assert f"{float(np.finfo(np.dtype(datatype.replace('FP', 'float'))).max):.6g}" in msg


@pytest.mark.parametrize(
    ("datatype", "values"),
    [
        ("UINT64", [2**64 - 1, 1, 2**63]),
        ("INT64", [-(2**63), 2**63 - 1, 0]),
        ("INT8", [-128, 127, 0]),
        ("FP16", [65504.0, -65504.0, 0.5]),
    ],
)
def test_json_values_at_the_limits_round_trip(hserver, datatype, values):
    """The edges of each range are accepted and come back exactly (tritonclient, JSON both ways)."""
    want = np.array([values], dtype=np.dtype(datatype.lower().replace("fp", "float")))
    c = httpclient.InferenceServerClient(f"127.0.0.1:{hserver.ports['http']}")
    inp = httpclient.InferInput("x", [1, 3], datatype)
    inp.set_data_from_numpy(want, binary_data=False)
    res = c.infer(
        f"id_{datatype.lower()}",
        [inp],
        outputs=[httpclient.InferRequestedOutput("y", binary_data=False)],
        headers=dict(AUTH),
    )
    got = res.as_numpy("y")
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    ("datatype", "field", "values", "bad"),
    [
        ("INT8", "int_contents", [300, 1, 2], 300),
        ("INT8", "int_contents", [-129, 1, 2], -129),
        ("UINT8", "uint_contents", [256, 1, 2], 256),
    ],
)
def test_grpc_typed_contents_out_of_range_are_invalid_argument(hserver, datatype, field, values, bad):
    from infercore.serve.grpc_service import messages as pb

    info = np.iinfo(np.dtype(datatype.lower()))
    t = pb.ModelInferRequest.InferInputTensor(name="x", datatype=datatype, shape=[1, 3])
    getattr(t.contents, field).extend(values)
    with pytest.raises(grpc.RpcError) as e:
        _grpc_infer(hserver, pb.ModelInferRequest(model_name=f"id_{datatype.lower()}", inputs=[t]))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert str(bad) in e.value.details() and f"[{info.min}, {info.max}]" in e.value.details()
    ok = pb.ModelInferRequest.InferInputTensor(name="x", datatype=datatype, shape=[1, 3])
    getattr(ok.contents, field).extend([info.max, info.min, 7])
    r = _grpc_infer(hserver, pb.ModelInferRequest(model_name=f"id_{datatype.lower()}", inputs=[ok]))
    got = np.frombuffer(r.raw_output_contents[0], dtype=np.dtype(datatype.lower()))
    np.testing.assert_array_equal(got, np.array([info.max, info.min, 7], dtype=datatype.lower()))


def test_json_input_takes_the_nan_and_infinity_tritonclient_sends(hserver):
    """tritonclient's JSON (rapidjson) writes NaN/Infinity tokens, and Triton reads them."""
    x = np.array([[np.nan, np.inf, -np.inf]], np.float32)
    c = httpclient.InferenceServerClient(f"127.0.0.1:{hserver.ports['http']}")
    inp = httpclient.InferInput("x", [1, 3], "FP32")
    inp.set_data_from_numpy(x, binary_data=False)
    res = c.infer("id_fp32", [inp], headers=dict(AUTH))
    np.testing.assert_array_equal(res.as_numpy("y"), x)
    body = b'{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "INT64", "data": [1, NaN, 2]}]}'
    r = httpx.post(_url(hserver, "/v2/models/id_int64/infer"), content=body, headers=AUTH)
    assert r.status_code == 400 and "'x'" in r.json()["error"]
    r = httpx.post(_url(hserver, "/v2/models/id_fp32/infer"), content=b'{"inputs": [', headers=AUTH)
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]


# -- 3. infinities and NaN in JSON outputs --------------------------------------------------------
def test_json_output_keeps_inf_and_nan(hserver):
    x = np.array([[np.inf, -np.inf, np.nan]], np.float32)
    c = httpclient.InferenceServerClient(f"127.0.0.1:{hserver.ports['http']}")
    inp = httpclient.InferInput("x", [1, 3], "FP32")
    inp.set_data_from_numpy(x)  # binary in: JSON cannot carry them in
    res = c.infer(
        "id_fp32",
        [inp],
        outputs=[httpclient.InferRequestedOutput("y", binary_data=False)],
        headers=dict(AUTH),
    )
    np.testing.assert_array_equal(res.as_numpy("y"), x)  # equal_nan for floats
    # the body is the tokens Triton writes, which Python's json module reads too
    header = json.dumps(
        {
            "inputs": [
                {"name": "x", "shape": [1, 3], "datatype": "FP32", "parameters": {"binary_data_size": 12}}
            ]
        }
    ).encode()
    r = httpx.post(
        _url(hserver, "/v2/models/id_fp32/infer"),
        content=header + np.array([0.1, np.inf, np.nan], np.float32).tobytes(),
        headers={**AUTH, "Inference-Header-Content-Length": str(len(header))},
    )
    assert r.status_code == 200, r.text
    assert b"null" not in r.content and b"Infinity" in r.content and b"NaN" in r.content
    got = np.array(json.loads(r.content)["outputs"][0]["data"], np.float32)
    np.testing.assert_array_equal(got, np.array([0.1, np.inf, np.nan], np.float32))


# -- 4. a reload while the body is still arriving -------------------------------------------------
def _raw_request(server, model: str, body: bytes, headers: dict[str, str]) -> bytes:
    head = f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return (head + "\r\n").encode()


def _read_response(s: socket.socket) -> tuple[int, bytes]:
    out = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        out += d
    status = int(out.split(b" ", 2)[1])
    return status, out.split(b"\r\n\r\n", 1)[1]


def test_reload_while_the_body_arrives_serves_the_new_version(hserver):
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    body = json.dumps(_x(x)).encode()
    headers = {**AUTH, "Connection": "close", "Content-Type": "application/json"}
    with socket.create_connection(("127.0.0.1", hserver.ports["http"]), timeout=30) as s:
        s.sendall(_raw_request(hserver, "affine", body, headers) + body[:10])
        time.sleep(0.3)
        r = httpx.post(_url(hserver, "/v2/repository/models/affine/load"), headers=AUTH, timeout=60)
        assert r.status_code == 200, r.text
        s.sendall(body[10:])
        status, payload = _read_response(s)
    assert status == 200, payload
    y = np.array(json.loads(payload)["outputs"][0]["data"], np.float32)
    np.testing.assert_allclose(y, affine(x, 3.0)["y"].ravel())


# -- 5. classification over gRPC -------------------------------------------------------------------
def test_grpc_classification_is_refused_like_rest(hserver):
    x = np.ones((1, 4), np.float32)
    g = grpcclient.InferenceServerClient(f"127.0.0.1:{hserver.ports['grpc']}")
    inp = grpcclient.InferInput("x", [1, 4], "FP32")
    inp.set_data_from_numpy(x)
    with pytest.raises(InferenceServerException) as e:
        g.infer("affine", [inp], outputs=[grpcclient.InferRequestedOutput("y", class_count=2)], headers=GAUTH)
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "classification" in e.value.message() and "'y'" in e.value.message()
    c = httpclient.InferenceServerClient(f"127.0.0.1:{hserver.ports['http']}")
    hinp = httpclient.InferInput("x", [1, 4], "FP32")
    hinp.set_data_from_numpy(x)
    with pytest.raises(InferenceServerException, match="classification"):
        c.infer(
            "affine",
            [hinp],
            outputs=[httpclient.InferRequestedOutput("y", class_count=2)],
            headers=dict(AUTH),
        )


# -- 6. metric labels from names clients make up ---------------------------------------------------
def test_unknown_model_names_share_one_metrics_label(hserver):
    x = np.ones((1, 4), np.float32)
    for i in range(20):
        assert _post(hserver, f"made-up-{i}", _x(x)).status_code == 400
    assert _post(hserver, "affine", _x(np.ones((1, 5), np.float32))).status_code == 400
    text = httpx.get(f"http://127.0.0.1:{hserver.ports['metrics']}/metrics").text
    assert "made-up" not in text
    failures = [ln for ln in text.splitlines() if ln.startswith("infercore_request_failure_total{")]
    assert any('model="_unknown"' in ln and float(ln.rsplit(" ", 1)[1]) >= 20 for ln in failures), failures
    assert any('model="affine"' in ln for ln in failures)  # a served model keeps its name


# -- 7. a drain shorter than a second, and the CLI's check ----------------------------------------
def test_drain_timeout_below_a_second_bounds_the_drain(hrepo):
    """A request that cannot finish (its batch never fills): the drain gives up after 0.5 s and
    the request is answered with a JSON 503, not left hanging nor given uvicorn's plain 500."""
    x = np.ones((1, 4), np.float32)
    with running(hrepo, models=["held"], drain_timeout=0.5, token="s3cret") as server:
        answer: list[httpx.Response] = []
        t = threading.Thread(target=lambda: answer.append(_post(server, "held", _x(x))))
        t.start()
        runner = server.repo.get("held").runner
        for _ in range(500):
            if runner.metrics.queue_depth == 1:
                break
            time.sleep(0.01)
        assert runner.metrics.queue_depth == 1
        started = time.monotonic()  # leaving the block stops the server: SIGTERM's drain
    took = time.monotonic() - started
    t.join(30)
    assert took < 10, took
    (r,) = answer
    assert r.status_code == 503, r.text
    assert "drain_timeout" in r.json()["error"]


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "soon"])
def test_cli_refuses_a_bad_drain_timeout(value, capsys):
    import argparse

    from infercore.cli.serve import add_parser

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", ".", "--drain-timeout", value])
    assert "--drain-timeout" in capsys.readouterr().err
    ok = parser.parse_args(["serve", ".", "--drain-timeout", "0.5"])
    assert ok.drain_timeout == 0.5


def test_server_refuses_a_negative_drain_timeout(hrepo):
    from infercore.serve.server import InferenceServer, ServeOptions

    with pytest.raises(ValueError, match="drain_timeout"):
        InferenceServer(hrepo, ServeOptions(drain_timeout=-1))
    with pytest.raises(ValueError, match="drain_timeout"):
        InferenceServer(hrepo, ServeOptions(drain_timeout=math.nan))


# -- 9. client errors that were 500s ---------------------------------------------------------------
def test_huge_bytes_count_with_a_tiny_body_is_400(hserver):
    count = 10**12
    raw = struct.pack("<I", 1) + b"a"
    header = json.dumps(
        {
            "inputs": [
                {"name": "x", "shape": [count], "datatype": "BYTES", "parameters": {"binary_data_size": 5}}
            ]
        }
    ).encode()
    r = httpx.post(
        _url(hserver, "/v2/models/affine/infer"),
        content=header + raw,
        headers={**AUTH, "Inference-Header-Content-Length": str(len(header))},
    )
    assert r.status_code == 400, r.text
    assert str(count) in r.json()["error"] and "'x'" in r.json()["error"]


def test_shape_with_too_many_dimensions_is_400(hserver):
    from infercore.serve.tensors import MAX_RANK

    shape = [1] * 65
    body = {"inputs": [{"name": "x", "shape": shape, "datatype": "FP32", "data": [1.0]}]}
    r = _post(hserver, "affine", body)
    assert r.status_code == 400, r.text
    assert "65 dimensions" in r.json()["error"] and str(MAX_RANK) in r.json()["error"]


@pytest.mark.parametrize(("body", "says"), [(b"[1]", "ready"), (b'{"ready": "yes"}', "'yes'")])
def test_repository_index_with_a_bad_body_is_400(hserver, body, says):
    r = httpx.post(_url(hserver, "/v2/repository/index"), content=body, headers=AUTH)
    assert r.status_code == 400, r.text
    assert says in r.json()["error"]
    r = httpx.post(_url(hserver, "/v2/repository/index"), json={"ready": True}, headers=AUTH)
    assert (
        r.status_code == 200
        and {"name": "affine", "version": "1", "state": "READY", "reason": ""} in r.json()
    )


def _metric(server, name: str, **labels: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{server.ports['metrics']}/metrics").text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_truncated_body_then_disconnect_is_a_cancellation_not_an_error(hserver, caplog):
    x = np.ones((1, 4), np.float32)
    body = json.dumps(_x(x)).encode()
    before = _metric(hserver, "infercore_request_cancelled_total", model="affine", protocol="http")
    failed = _metric(hserver, "infercore_request_failure_total", model="affine", reason="ServeError")
    with caplog.at_level("WARNING", logger="infercore.serve"):
        with socket.create_connection(("127.0.0.1", hserver.ports["http"])) as s:
            s.sendall(_raw_request(hserver, "affine", body, AUTH) + body[:20])
            time.sleep(0.2)
        for _ in range(200):
            if (
                _metric(hserver, "infercore_request_cancelled_total", model="affine", protocol="http")
                > before
            ):
                break
            time.sleep(0.02)
    assert (
        _metric(hserver, "infercore_request_cancelled_total", model="affine", protocol="http") == before + 1
    )
    assert _metric(hserver, "infercore_request_failure_total", model="affine", reason="ServeError") == failed
    assert not [r for r in caplog.records if "unexpected" in r.getMessage()]


# -- 10. an HTTP client that goes away takes its request out of the queue --------------------------
def test_http_disconnect_cancels_the_queued_request(hserver):
    runner = hserver.repo.get("held").runner
    cancelled = runner.metrics.cancelled
    body = json.dumps(_x(np.ones((1, 4), np.float32))).encode()
    with socket.create_connection(("127.0.0.1", hserver.ports["http"])) as s:
        s.sendall(_raw_request(hserver, "held", body, AUTH) + body)
        for _ in range(500):
            if runner.metrics.queue_depth == 1:
                break
            time.sleep(0.01)
        assert runner.metrics.queue_depth == 1
    for _ in range(500):  # the batcher holds it for 30 s unless the disconnect reaches it
        if runner.metrics.cancelled == cancelled + 1:
            break
        time.sleep(0.01)
    assert runner.metrics.cancelled == cancelled + 1 and runner.metrics.queue_depth == 0


# -- 11. the outputs list -------------------------------------------------------------------------
def test_empty_outputs_list_means_every_output(hserver):
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    r = _post(hserver, "affine", _x(x, outputs=[]))
    assert r.status_code == 200, r.text
    got = {o["name"]: np.array(o["data"]).reshape(o["shape"]) for o in r.json()["outputs"]}
    want = affine(x, 3.0)
    assert sorted(got) == sorted(want)
    for name in want:
        np.testing.assert_allclose(got[name], want[name])


def test_an_output_requested_twice_is_400(hserver):
    r = _post(hserver, "affine", _x(np.ones((1, 4), np.float32), outputs=[{"name": "y"}, {"name": "y"}]))
    assert r.status_code == 400, r.text
    assert "'y'" in r.json()["error"] and "twice" in r.json()["error"]


# -- 12. auth details and a busy gRPC port --------------------------------------------------------
def test_bearer_scheme_is_case_insensitive_and_401_names_it(hserver):
    body = _x(np.ones((1, 4), np.float32))
    url = _url(hserver, "/v2/models/affine/infer")
    for scheme in ("Bearer", "bearer", "BEARER", "bEaReR"):
        r = httpx.post(url, json=body, headers={"Authorization": f"{scheme} s3cret"})
        assert r.status_code == 200, (scheme, r.text)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic czNjcmV0"}):
        r = httpx.post(url, json=body, headers=headers)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", headers
    r = httpx.post(_url(hserver, "/v2/repository/index"))
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"


def test_grpc_port_in_use_is_a_clear_oserror(hrepo):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    try:
        with (
            pytest.raises(OSError, match=f"gRPC on 127.0.0.1:{port}"),
            running(hrepo, models=["affine"], http_port=None, metrics_port=None, grpc_port=port),
        ):
            pass
    finally:
        busy.close()


def test_a_model_that_fails_to_load_at_start_is_a_clean_cli_error(tmp_path, capsys):
    from infercore.cli import main

    (tmp_path / "broken" / "1").mkdir(parents=True)
    (tmp_path / "broken" / "1" / "model.onnx").write_bytes(b"not an onnx model")
    code = main(["serve", str(tmp_path), "--http-port", "0", "--grpc-port", "off", "--metrics-port", "off"])
    err = capsys.readouterr().err
    assert code == 2  # an error, as for every command
    assert "infercore serve: error: model 'broken'" in err and "unexpected" not in err


# -- 13. found by fuzzing the decoders (test_fuzz.py) --------------------------------------------
def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


_ONE_X = '"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]'


@pytest.mark.parametrize(
    ("path", "body", "says"),
    [
        # deeper than orjson's 1024 levels: Python's json, the fallback for NaN, overflowed its stack
        ("/v2/models/affine/infer", _nested(5000), "request body is not valid JSON: depth limit"),
        ("/v2/models/affine/infer", '{"inputs": ' + _nested(3000) + "}", "not valid JSON: depth limit"),
        ("/v2/repository/index", _nested(5000), "not valid JSON: depth limit"),
        # 1000 levels parse, then the error message's repr() of the value overflowed
        ("/v2/models/affine/infer", '{"id": ' + _nested(1000) + ", " + _ONE_X + "}", "'id' must be a string, got [[[["),
        ("/v2/models/affine/infer", '{"parameters": {"timeout": ' + _nested(1000) + "}, " + _ONE_X + "}", "'timeout'"),
        ("/v2/repository/index", '{"ready": ' + _nested(1000) + "}", "'ready' must be true or false"),
        ("/v2/repository/index", _nested(1000), 'a repository index request body is {"ready"'),
    ],
    ids=["body-5000", "inputs-3000", "index-5000", "id-1000", "timeout-1000", "ready-1000", "index-1000"],
)
def test_json_nested_thousands_of_levels_deep_is_400(hserver, path, body, says):
    r = httpx.post(_url(hserver, path), content=body.encode(), headers=AUTH, timeout=30)
    assert r.status_code == 400, r.text
    assert says in r.json()["error"] and len(r.json()["error"]) < 400  # the echo is cut short
    _ok_affine(hserver)


def test_a_binary_request_whose_json_header_is_nested_too_deep_is_400(hserver):
    header = ('{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "parameters": '
              '{"binary_data_size": 16, "z": ' + _nested(3000) + "}}]}").encode()  # fmt: skip
    r = httpx.post(
        _url(hserver, "/v2/models/affine/infer"),
        content=header + np.ones(4, np.float32).tobytes(),
        headers={**AUTH, "Inference-Header-Content-Length": str(len(header))},
    )
    assert r.status_code == 400, r.text
    assert "the JSON header is not valid JSON: depth limit" in r.json()["error"]


def test_a_lone_surrogate_id_is_400_not_an_unencodable_answer(hserver):
    # valid JSON, but a string no UTF-8 encoder takes: echoing it back made orjson raise (500)
    body = '{"id": "req-\\ud800", ' + _ONE_X + "}"
    r = httpx.post(_url(hserver, "/v2/models/affine/infer"), content=body.encode(), headers=AUTH)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "'id' is not valid Unicode text: surrogates not allowed at character 4"
    _ok_affine(hserver)


def test_a_lone_surrogate_in_bytes_data_is_400_naming_the_element(hserver):
    body = '{"inputs": [{"name": "s", "datatype": "BYTES", "shape": [2], "data": ["ok", "a\\udc00"]}]}'
    r = httpx.post(_url(hserver, "/v2/models/strings/infer"), content=body.encode(), headers=AUTH)
    assert r.status_code == 400, r.text  # was 500: the runtime failed to encode it
    assert r.json()["error"].startswith("tensor 's': BYTES element 1 is not valid Unicode text")
    s = np.array(["ok", "é€𝄞"], dtype=object)  # valid text beyond ASCII still goes through
    r = _post(hserver, "strings", {"inputs": [{"name": "s", "datatype": "BYTES", "shape": [2], "data": s.tolist()}]})
    assert r.status_code == 200 and r.json()["outputs"][0]["data"] == s.tolist(), r.text


def test_a_lone_surrogate_echoed_in_an_error_is_escaped(hserver):
    body = '{"inputs": [{"name": "\\ud800", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}'
    r = httpx.post(_url(hserver, "/v2/models/affine/infer"), content=body.encode(), headers=AUTH)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "model 'affine' has no input '\\ud800'; its inputs are: x"
    r = httpx.post(
        _url(hserver, "/v2/repository/models/affine/load"),
        content=b'{"parameters": {"config": "{\\"threads\\": \\"\\ud800\\"}"}}',
        headers=AUTH,
    )
    assert r.status_code == 400, r.text  # was 500: str.encode() of the config raised
    assert r.json()["error"].startswith("parameter 'config' is not valid JSON text")


def test_every_serve_error_message_can_be_encoded():
    import orjson

    from infercore.errors import BadRequest, ServeError

    for e in (BadRequest("no input '\ud800x'"), ServeError("a\udfff\ud800")):
        assert orjson.loads(orjson.dumps({"error": e.message}))["error"] == e.message
    assert BadRequest("no input '\ud800x'").message == "no input '\\ud800x'"
    assert BadRequest("é€𝄞").message == "é€𝄞"  # valid text is left alone


def test_a_request_id_beyond_printable_ascii_is_escaped_in_the_header(hserver):
    rid = "é€\r\nX-Injected: 1"
    bad = {"id": rid, "inputs": [{"name": "nope", "datatype": "FP32", "shape": [1], "data": [1]}]}
    r = _post(hserver, "affine", bad)  # was a plain-text 500: the header could not be encoded
    assert r.status_code == 400, r.text
    assert r.headers["x-request-id"] == "\\xe9\\u20ac\\r\\nX-Injected: 1"
    assert "x-injected" not in r.headers
    r = _post(hserver, "affine", _x(np.ones((1, 4), np.float32), id=rid))
    assert r.status_code == 200 and r.json()["id"] == rid  # the body echoes it as sent


@pytest.mark.parametrize("shape", [[0, 2**62, 2**62], [2**62, 0, 2**62], [0, 2**63 - 1, 16]])
def test_an_empty_tensor_with_enormous_dimensions_is_400(hserver, shape):
    # no element, so every size check passed; numpy then refused the shape itself (500)
    says = f"tensor 'x': shape {shape} declares more elements than an array can hold"
    r = _post(hserver, "affine", {"inputs": [{"name": "x", "datatype": "FP32", "shape": shape, "data": []}]})
    assert r.status_code == 400 and r.json()["error"] == says, r.text
    header = json.dumps(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": shape, "parameters": {"binary_data_size": 0}}]}
    ).encode()
    r = httpx.post(
        _url(hserver, "/v2/models/affine/infer"),
        content=header,
        headers={**AUTH, "Inference-Header-Content-Length": str(len(header))},
    )
    assert r.status_code == 400 and r.json()["error"] == says, r.text
    from infercore.serve.grpc_service import messages as pb

    T = pb.ModelInferRequest.InferInputTensor
    request = pb.ModelInferRequest(
        model_name="affine", inputs=[T(name="x", datatype="FP32", shape=shape)], raw_input_contents=[b""]
    )
    with pytest.raises(grpc.RpcError) as e:
        _grpc_infer(hserver, request)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and e.value.details() == says


@pytest.mark.parametrize(
    "raw",
    [b"\x0a\x06aff", b"\x0a\x02\xff\xfe", b"\xff" * 8, b"\x2a\x80"],
    ids=["truncated", "string-not-utf8", "junk", "bad-length"],
)
def test_grpc_bytes_that_are_no_message_are_invalid_argument(hserver, raw):
    # grpc answers UNKNOWN ("Unexpected DecodeError") when the deserializer raises
    before = _metric(hserver, "infercore_request_failure_total", protocol="grpc", reason="BadRequest")
    with grpc.insecure_channel(f"127.0.0.1:{hserver.ports['grpc']}") as channel:
        for method in ("ModelInfer", "ModelMetadata"):
            call = channel.unary_unary(f"/inference.GRPCInferenceService/{method}")
            with pytest.raises(grpc.RpcError) as e:
                call(raw, metadata=[("authorization", "Bearer s3cret")], timeout=30)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value.details()
            assert f"not a valid inference.{method}Request" in e.value.details()
    after = _metric(hserver, "infercore_request_failure_total", protocol="grpc", reason="BadRequest")
    assert after == before + 1  # the ModelInfer call is counted, under the unknown-model label


def test_a_small_request_declaring_an_enormous_shape_allocates_none_of_it(hserver):
    from infercore.serve.grpc_service import messages as pb

    huge = [2**26, 4]  # 1 GiB of FP32, 2 GiB of BYTES offsets, if it were allocated
    T = pb.ModelInferRequest.InferInputTensor

    def rest_json() -> tuple[int, str]:
        r = _post(hserver, "affine", {"inputs": [{"name": "x", "datatype": "FP32", "shape": huge, "data": [1.0] * 4}]})
        return r.status_code, r.json()["error"]

    def rest_binary(datatype: str, blob: bytes) -> Callable[[], tuple[int, str]]:
        def send() -> tuple[int, str]:
            t = {"name": "x", "datatype": datatype, "shape": huge, "parameters": {"binary_data_size": len(blob)}}
            header = json.dumps({"inputs": [t]}).encode()
            r = httpx.post(
                _url(hserver, "/v2/models/affine/infer"),
                content=header + blob,
                headers={**AUTH, "Inference-Header-Content-Length": str(len(header))},
            )
            return r.status_code, r.json()["error"]

        return send

    def grpc_call(t: object, raw: list[bytes]) -> Callable[[], tuple[int, str]]:
        def send() -> tuple[int, str]:
            with pytest.raises(grpc.RpcError) as e:
                _grpc_infer(hserver, pb.ModelInferRequest(model_name="affine", inputs=[t], raw_input_contents=raw))
            return (400 if e.value.code() == grpc.StatusCode.INVALID_ARGUMENT else 500), e.value.details()

        return send

    sends = [
        rest_json,
        rest_binary("FP32", np.ones(4, np.float32).tobytes()),
        rest_binary("BYTES", struct.pack("<I", 1) + b"a"),
        grpc_call(T(name="x", datatype="FP32", shape=huge), [np.ones(4, np.float32).tobytes()]),
        grpc_call(T(name="x", datatype="BYTES", shape=huge), [struct.pack("<I", 1) + b"a"]),
        grpc_call(T(name="x", datatype="FP32", shape=huge, contents=pb.InferTensorContents(fp32_contents=[1.0])), []),
        grpc_call(T(name="x", datatype="BYTES", shape=huge, contents=pb.InferTensorContents(bytes_contents=[b"a"])), []),
    ]
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        a = np.empty(huge, np.float32)  # the meter sees numpy's allocations, so its silence below means something
        assert tracemalloc.get_traced_memory()[1] >= a.nbytes
        del a
        for send in sends:
            tracemalloc.reset_peak()
            start = tracemalloc.get_traced_memory()[0]
            status, error = send()
            peak = tracemalloc.get_traced_memory()[1] - start
            assert status == 400 and ("tensor 'x'" in error or "input 'x'" in error), error
            assert peak < 16 << 20, f"{send}: {peak} bytes at the peak for a refused request: {error}"
    finally:
        tracemalloc.stop()
