"""KServe's own V2 clients (``kserve.InferenceRESTClient`` and ``InferenceGRPCClient``, kserve 0.21)
against ``infercore serve``: the interoperability KServe users rely on.

The clients run in a child process: kserve and Triton's client both register the V2 messages
(``inference.*``) in protobuf's default descriptor pool from different files, so one process
cannot import both (``duplicate symbol 'inference.ServerLiveRequest'``); infercore's own server
keeps its messages in a private pool and is not part of that clash.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from .conftest import affine

if importlib.util.find_spec("kserve") is None:  # found, not imported: see the module docstring
    pytest.skip("kserve is not installed: pip install 'infercore[kserve]'", allow_module_level=True)

CLIENT = textwrap.dedent(
    """
    import asyncio, json, sys
    import grpc, httpx, numpy as np
    from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig
    from kserve.protocol.infer_type import RequestedOutput

    http_port, grpc_port = sys.argv[1], sys.argv[2]
    base = f"http://127.0.0.1:{http_port}"
    x = np.asarray(json.loads(sys.argv[3]), np.float32)

    def request(binary, **kw):
        inp = InferInput("x", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=binary)
        return InferRequest(model_name="affine", infer_inputs=[inp], **kw)

    def outputs(res):
        return {o.name: o.as_numpy().tolist() for o in res.outputs}

    async def main():
        out = {}
        async with InferenceRESTClient(RESTConfig(protocol="v2", timeout=30)) as c:
            out["rest_health"] = [await c.is_server_live(base), await c.is_server_ready(base),
                                  await c.is_model_ready(base, "affine"), await c.is_model_ready(base, "nope")]
            for binary in (True, False):
                res = await c.infer(base, request(binary, request_id=f"ks-{binary}"), model_name="affine")
                out[f"rest_{binary}"] = {"outputs": outputs(res), "id": res.id, "version": str(res.model_version)}
            only = await c.infer(base, request(True, request_outputs=[RequestedOutput("idx")]), model_name="affine")
            out["rest_only"] = [o.name for o in only.outputs]
            try:
                wrong = InferInput("x", [2, 5], "FP32")
                wrong.set_data_from_numpy(np.ones((2, 5), np.float32))
                await c.infer(base, InferRequest("affine", [wrong]), model_name="affine")
            except httpx.HTTPStatusError as e:
                out["rest_error"] = [e.response.status_code, e.response.text]
        if grpc_port == "-":  # a REST-only server (Ray Serve's HTTP proxy)
            print(json.dumps(out))
            return
        g = InferenceGRPCClient(f"127.0.0.1:{grpc_port}", timeout=30)
        try:
            out["grpc_health"] = [await g.is_server_live(), await g.is_server_ready(), await g.is_model_ready("affine")]
            res = await g.infer(request(True, request_id="g-1"))
            out["grpc"] = {"outputs": outputs(res), "id": res.id}
            try:
                await g.infer(InferRequest("nope", [InferInput("x", [1, 4], "FP32", [0.0] * 4)]))
            except grpc.RpcError as e:
                out["grpc_error"] = e.code().name
        finally:
            await g.close()
        print(json.dumps(out))

    asyncio.run(main())
    """
)


def kserve_clients(http_port: int, grpc_port: int | None, x: np.ndarray) -> dict:
    """What KServe's clients got from a server serving ``affine`` (x * 3 + 1), run in a child
    process; ``grpc_port`` None: REST only."""
    proc = subprocess.run(
        [sys.executable, "-c", CLIENT, str(http_port), str(grpc_port or "-"), json.dumps(x.tolist())],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def check_kserve_answers(out: dict, x: np.ndarray, *, grpc: bool = True) -> None:
    want = affine(x, 3.0)
    assert out["rest_health"] == [True, True, True, False]
    for key in ("rest_True", "rest_False", "grpc") if grpc else ("rest_True", "rest_False"):
        got = out[key]["outputs"]
        np.testing.assert_allclose(np.asarray(got["y"], np.float32), want["y"], rtol=1e-6, err_msg=key)
        np.testing.assert_array_equal(np.asarray(got["idx"]), want["idx"], err_msg=key)
    assert out["rest_True"]["id"] == "ks-True"  # (kserve 0.21 does not parse model_version from REST)
    assert out["rest_only"] == ["idx"]
    status, text = out["rest_error"]
    assert status == 400 and "shape" in text
    if grpc:
        assert out["grpc_health"] == [True, True, True]
        assert out["grpc"]["id"] == "g-1"
        assert out["grpc_error"] in ("NOT_FOUND", "INVALID_ARGUMENT")


def test_kserve_rest_and_grpc_clients(server) -> None:
    x = np.random.default_rng(1).standard_normal((6, 4)).astype(np.float32)
    check_kserve_answers(kserve_clients(server.ports["http"], server.ports["grpc"], x), x)
