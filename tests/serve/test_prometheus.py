"""The shipped alert rules in a real Prometheus (Debian's 2.42, installed by scripts/setup-heavy.sh):
``promtool check rules`` and ``promtool test rules``, then end to end: Prometheus scrapes
``infercore serve`` on loopback; stationary traffic raises no alert, shifted traffic fires the
drift alert, wrong-label feedback fires the accuracy alert, each read back through Prometheus's
HTTP API. The test copy of the rules differs from the shipped ones only in ``for:`` (seconds, not
minutes)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from infercore.monitor import Profile
from tests import onnx_models as m

pytestmark = pytest.mark.prometheus
httpx = pytest.importorskip("httpx")
yaml = pytest.importorskip("yaml")
pytest.importorskip("scipy")

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None or PROMTOOL is None,
    reason="Debian's prometheus package is not installed (scripts/setup-heavy.sh installs it as root)",
)


@needs_prometheus
def test_promtool_checks_and_unit_tests_the_rules():
    out = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert out.returncode == 0 and "SUCCESS: 6 rules found" in out.stdout, out.stdout + out.stderr
    tests = RULES.with_name("alerts_test.yml")
    out = subprocess.run([PROMTOOL, "test", "rules", str(tests)], capture_output=True, text=True, cwd=tests.parent)
    assert out.returncode == 0 and "SUCCESS" in out.stdout, out.stdout + out.stderr


def test_every_rule_has_for_severity_and_a_runbook_section():
    rules = yaml.safe_load(RULES.read_text())["groups"][0]["rules"]
    doc = (ROOT / "docs" / "monitoring.md").read_text()
    assert {r["alert"] for r in rules} >= {"InfercoreHighLatencyP99", "InfercoreHighErrorRate", "InfercoreQueueFull",
                                           "InfercoreDataDrift", "InfercoreAccuracyDrop"}
    for r in rules:
        assert r["for"] and r["labels"]["severity"] in ("info", "warning", "critical"), r["alert"]
        anchor = r["annotations"]["runbook_url"].split("#")[1]
        assert f'<a id="{anchor}"></a>' in doc, f"{r['alert']}: docs/monitoring.md has no anchor {anchor}"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait(cond, what: str, timeout: float, procs=()) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(f"a process exited ({p.args[0]}: {p.returncode}) while waiting for {what}")
        try:
            value = cond()
        except httpx.HTTPError:
            value = None
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _alerts(prom: str) -> dict[str, str]:
    """alertname -> state (pending/firing) from Prometheus' /api/v1/alerts."""
    data = httpx.get(f"{prom}/api/v1/alerts", timeout=5).json()
    assert data["status"] == "success"
    return {a["labels"]["alertname"]: a["state"] for a in data["data"]["alerts"]}


@needs_prometheus
@pytest.mark.timeout(300)
def test_alerts_fire_in_prometheus_end_to_end(tmp_path):
    # a classifier with a profile of its reference data (labels: its own predictions)
    repo = tmp_path / "repo"
    (repo / "clf" / "1").mkdir(parents=True)
    path, w = m.mlp(repo / "clf" / "1" / "model.onnx", d_in=4, d_out=3)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4000, 4)).astype(np.float32)
    Profile.build(path, (x, m.mlp_numpy(x, w)[0].argmax(1)), classifier="logits").save(repo / "clf" / "profile.json")
    (repo / "clf" / "config.yaml").write_text(
        "threads: 1\nbatching: {max_batch_size: 64, max_queue_delay_ms: 1}\n"
        "monitoring: {profile: profile.json, sample_rate: 1.0, window: 200}\n")
    # the shipped rules with short `for:` durations
    rules = yaml.safe_load(RULES.read_text())
    for rule in rules["groups"][0]["rules"]:
        rule["for"] = "3s"
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    http, metrics, prom_port = _port(), _port(), _port()
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(tmp_path / "rules.yml")],
        "scrape_configs": [{"job_name": "infercore", "static_configs": [{"targets": [f"127.0.0.1:{metrics}"]}]}],
    }))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(tmp_path / "serve.log", "w") as serve_log, open(tmp_path / "prometheus.log", "w") as prom_log:
        serve = subprocess.Popen(
            [sys.executable, "-m", "infercore.cli", "serve", str(repo), "--host", "127.0.0.1", "--http-port", str(http),
             "--grpc-port", "off", "--metrics-port", str(metrics)],
            stdout=subprocess.DEVNULL, stderr=serve_log, env=env)
        prom = subprocess.Popen(
            [PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=prom_log)
        procs = (serve, prom)
        api = f"http://127.0.0.1:{prom_port}"
        url = f"http://127.0.0.1:{http}/v2/models/clf"
        try:
            _wait(lambda: httpx.get(f"{url}/ready", timeout=2).status_code == 200, "the server", 120, procs)
            _wait(lambda: httpx.get(f"{api}/-/ready", timeout=2).status_code == 200, "Prometheus", 60, procs)

            def infer(batch: np.ndarray, rid: str | None = None) -> dict:
                body = {"inputs": [{"name": "x", "shape": list(batch.shape), "datatype": "FP32",
                                    "data": batch.ravel().tolist()}], "outputs": [{"name": "logits"}]}
                if rid:
                    body["id"] = rid
                r = httpx.post(f"{url}/infer", json=body, timeout=10)
                assert r.status_code == 200, r.text
                return r.json()

            def query(expr: str) -> list:
                return httpx.get(f"{api}/api/v1/query", params={"query": expr}, timeout=5).json()["data"]["result"]

            _wait(lambda: query('up{job="infercore"} == 1'), "the scrape target to be up", 60, procs)
            # stationary traffic: the monitor tests windows, Prometheus sees drift 0, no alert
            for _ in range(16):
                infer(rng.standard_normal((50, 4)).astype(np.float32))
            _wait(lambda: [r for r in query('infercore_drift_windows_total{tensor="x"}') if r] and
                  int(httpx.get(f"{url}/monitor", timeout=5).json()["versions"]["1"]["monitor"]["tensors"]["x"]["windows"]) >= 3,
                  "stationary windows to be tested", 60, procs)
            time.sleep(6)  # two scrapes and several rule evaluations past the `for:` of 3 s
            assert [r["value"][1] for r in query('infercore_drift{tensor="x"}')] == ["0"]
            assert "InfercoreDataDrift" not in _alerts(api) and "InfercoreAccuracyDrop" not in _alerts(api)
            # shifted traffic: feature 0 moves by one standard deviation
            for _ in range(16):
                batch = rng.standard_normal((50, 4)).astype(np.float32)
                batch[:, 0] += 1.0
                infer(batch)
            _wait(lambda: _alerts(api).get("InfercoreDataDrift") == "firing", "the drift alert to fire", 90, procs)
            # wrong labels: every prediction is labelled with another class
            assert "InfercoreAccuracyDrop" not in _alerts(api)
            for i in range(40):
                batch = rng.standard_normal((1, 4)).astype(np.float32)
                out = infer(batch, f"req-{i}")
                wrong = (int(np.argmax(out["outputs"][0]["data"])) + 1) % 3
                r = httpx.post(f"{url}/feedback", json={"id": f"req-{i}", "label": wrong}, timeout=10)
                assert r.status_code == 200 and r.json()["matched"] == 1, r.text
            _wait(lambda: _alerts(api).get("InfercoreAccuracyDrop") == "firing", "the accuracy alert to fire", 90, procs)
            acc = query('infercore_quality{metric="accuracy"}')
            assert acc and float(acc[0]["value"][1]) == 0.0
        finally:
            for p in procs:
                _stop(p)
