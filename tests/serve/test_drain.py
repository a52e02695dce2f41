"""``infercore serve`` as a process: SIGTERM drains (every accepted request answered), then exits 0;
a second signal during the drain does not cut it short."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from .conftest import affine, affine_model

httpx = pytest.importorskip("httpx")


def _wait_started(proc: subprocess.Popen, lines: list[dict]) -> dict:
    deadline = time.monotonic() + 60
    assert proc.stderr is not None
    while time.monotonic() < deadline:
        raw = proc.stderr.readline()
        if not raw:
            break
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        lines.append(line)
        if line.get("msg") == "server started":
            return line
    proc.kill()
    raise AssertionError(f"the server did not start: {lines}")


def _submitted(text: str) -> float:
    for line in text.splitlines():
        if line.startswith("infercore_batcher_requests_total") and 'outcome="submitted"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.parametrize(
    "again", [None, signal.SIGTERM, signal.SIGINT], ids=["once", "sigterm-twice", "then-sigint"]
)
def test_sigterm_drains_accepted_requests_then_exits(tmp_path: Path, again: signal.Signals | None):
    # requests wait in the batcher for a batch of 64 that never fills: all are in flight at SIGTERM
    affine_model(tmp_path / "slow" / "1" / "model.onnx", 2.0)
    (tmp_path / "slow" / "config.yaml").write_text(
        "threads: 1\nbatching: {max_batch_size: 64, max_queue_delay_ms: 1500}\n"
    )
    cmd = [
        sys.executable,
        "-m",
        "infercore.cli",
        "serve",
        str(tmp_path),
        "--host",
        "127.0.0.1",
        "--http-port",
        "0",
        "--grpc-port",
        "0",
        "--metrics-port",
        "0",
        "--access-log",
    ]
    proc = subprocess.Popen(
        cmd,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: list[dict] = []
    try:
        started = _wait_started(proc, lines)
        url = f"http://127.0.0.1:{started['ports']['http']}/v2/models/slow/infer"
        x = np.random.default_rng(6).standard_normal((1, 4)).astype(np.float32)
        body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": x.ravel().tolist()}]}
        done_at: list[float] = []
        lock = threading.Lock()

        def post(i: int) -> tuple[int, list[float]]:
            r = httpx.post(url, json={**body, "id": f"d{i}"}, timeout=60)
            with lock:
                done_at.append(time.monotonic())
            return r.status_code, r.json()["outputs"][0]["data"] if r.status_code == 200 else r.text

        n = 12
        with ThreadPoolExecutor(n) as pool:
            futures = [pool.submit(post, i) for i in range(n)]
            # SIGTERM once the server has accepted every request (queued in the batcher or running)
            metrics = f"http://127.0.0.1:{started['ports']['metrics']}/metrics"
            deadline = time.monotonic() + 30
            while _submitted(httpx.get(metrics).text) < n and time.monotonic() < deadline:
                time.sleep(0.01)
            sigterm_at = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            if again is not None:  # GNU timeout and group kills send TERM twice; a user presses Ctrl-C
                time.sleep(0.2)
                proc.send_signal(again)
            results = [f.result(timeout=60) for f in futures]
        for code, data in results:
            assert code == 200, data
            np.testing.assert_allclose(np.array(data, np.float32), affine(x, 2.0)["y"].ravel(), rtol=1e-6)
        assert all(t > sigterm_at for t in done_at), "every request was in flight at SIGTERM"
        assert proc.wait(timeout=60) == 0
        rest = proc.stderr.read() if proc.stderr else ""
        msgs = [json.loads(raw).get("msg") for raw in rest.splitlines() if raw.startswith("{")]
        assert "draining" in msgs and "stopped" in msgs
        assert ("signal received while draining: ignored" in msgs) == (again is not None)
        with pytest.raises(httpx.ConnectError):
            httpx.post(url, json=body, timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
