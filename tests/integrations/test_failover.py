"""``ReplicaFailover``, the ASGI middleware infercore installs in Ray Serve's HTTP proxy, driven here
over the ASGI interface by an app that behaves as Ray's proxy does when a replica dies before it
answers: it returns without starting a response. The real proxy and a real SIGKILLed replica are
in ``test_ray.py`` (marked ``ray``); no Ray is needed here.

Also: ``infercore.integrations.ray`` imports nothing of Ray, and names the extra when Ray is absent.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import pytest

pytest.importorskip("starlette")

from infercore.integrations.ray import ReplicaFailover, proxy_middlewares


class Proxy:
    """Dies (answers nothing) ``deaths`` times, then echoes the body it received."""

    def __init__(self, deaths: int) -> None:
        self.deaths = deaths
        self.calls = 0
        self.bodies: list[bytes] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.calls += 1
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        self.bodies.append(body)
        if self.calls <= self.deaths:
            return  # the replica died: Ray's proxy sends nothing for it
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"echo:" + body})


def call(app: Any, method: str, path: str, chunks: list[bytes]) -> tuple[int, dict[str, str], bytes]:
    messages = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await asyncio.sleep(3600)  # the client stays connected
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": []}
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    headers = {k.decode(): v.decode() for k, v in start.get("headers", [])}
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], headers, body


INFER = "/v2/models/minilm/infer"


def test_an_inference_whose_replica_died_is_sent_again_whole():
    inner = Proxy(deaths=2)
    status, headers, body = call(ReplicaFailover(inner, backoff=0), "POST", INFER, [b"ab", b"cd", b"ef"])
    assert (status, body) == (200, b"echo:abcdef")
    assert inner.calls == 3 and inner.bodies == [b"abcdef"] * 3  # every send got the whole body
    assert headers["x-infercore-replayed"] == "2"


class HungUpProxy:
    """As Ray's proxy when the client hangs up mid-inference: it reads the body, sees the
    disconnect, and returns without an answer (as it does for a dead replica)."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.calls += 1
        while (await receive()).get("more_body"):
            pass
        assert (await receive())["type"] == "http.disconnect"


def test_a_client_that_hung_up_is_not_taken_for_a_dead_replica():
    inner = HungUpProxy()
    messages = [{"type": "http.request", "body": b"x", "more_body": False}, {"type": "http.disconnect"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if len(messages) > 1 else messages[0]  # disconnected stays disconnected

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": INFER, "headers": []}
    asyncio.run(ReplicaFailover(inner, backoff=0)(scope, receive, send))
    assert inner.calls == 1  # not run again for nobody
    assert sent == []  # and no 503 written to a closed connection


def test_a_versioned_inference_behind_a_route_prefix_is_replayed_too():
    inner = Proxy(deaths=1)
    path = "/minilm-app/v2/models/minilm/versions/3/infer"
    assert call(ReplicaFailover(inner, backoff=0), "POST", path, [b"x"])[0] == 200
    assert inner.calls == 2


def test_after_the_retries_the_answer_is_a_retriable_503():
    inner = Proxy(deaths=10)
    status, headers, body = call(ReplicaFailover(inner, retries=2, backoff=0), "POST", INFER, [b"x"])
    assert status == 503 and headers["retry-after"] == "1"
    assert "died before it answered, 3 times" in json.loads(body)["error"]
    assert inner.calls == 3


def test_a_body_too_large_to_keep_is_not_sent_twice():
    inner = Proxy(deaths=1)
    status, _, body = call(ReplicaFailover(inner, max_body=3, backoff=0), "POST", INFER, [b"ab", b"cd", b"e"])
    assert status == 503 and "is not kept" in json.loads(body)["error"]
    assert inner.calls == 1 and inner.bodies == [b"abcde"]  # the first send still got all of it


def test_requests_that_must_not_run_twice_pass_through():
    for method, path in [
        ("POST", "/v2/repository/models/minilm/load"),
        ("POST", "/v2/repository/models/minilm/unload"),
        ("POST", "/other-app/predict"),
        ("GET", "/other-app/predict"),
    ]:
        inner = Proxy(deaths=0)
        assert call(ReplicaFailover(inner, backoff=0), method, path, [b"q"])[0] == 200
        assert inner.calls == 1
        dying = Proxy(deaths=1)
        with pytest.raises(StopIteration):  # no response at all: the proxy's own 500, unchanged
            call(ReplicaFailover(dying, backoff=0), method, path, [b"q"])
        assert dying.calls == 1


def test_health_and_metadata_gets_are_replayed():
    inner = Proxy(deaths=1)
    assert call(ReplicaFailover(inner, backoff=0), "GET", "/v2/health/ready", [b""])[0] == 200
    assert inner.calls == 2


def test_proxy_callback_returns_starlette_middleware():
    from starlette.middleware import Middleware

    (mw,) = proxy_middlewares()
    assert isinstance(mw, Middleware) and mw.cls is ReplicaFailover


def test_the_module_imports_no_ray_and_names_the_extra_without_it():
    code = (
        "import sys; sys.modules['ray'] = None\n"  # as if Ray were not installed
        "import infercore.integrations.ray as r\n"
        "assert not any(m == 'ray' or m.startswith('ray.') for m in sys.modules if sys.modules[m])\n"
        "try:\n"
        "    r.ic_deployment('.')\n"
        "except ImportError as e:\n"
        "    print(type(e).__name__, e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("BackendUnavailableError") and 'pip install "infercore[ray]"' in out.stdout
