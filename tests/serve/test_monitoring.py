"""Monitoring in the server: feedback, the monitor endpoint, screening (flag and reject, REST and
gRPC), Prometheus metrics, config errors, and the dashboard's page and data."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest

from infercore.monitor import Profile
from tests import onnx_models as m

from .conftest import running

httpx = pytest.importorskip("httpx")
pytest.importorskip("scipy")


@pytest.fixture(scope="module")
def mrepo(tmp_path_factory):
    """``clf`` (an MLP classifier x [N, 4] -> logits, probs [N, 3]) with a profile, a small
    window and screening that rejects; ``flagged`` the same model flagging; ``plain`` no monitoring."""
    root = tmp_path_factory.mktemp("mrepo")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3000, 4)).astype(np.float32)
    for name in ("clf", "flagged", "plain"):
        (root / name / "1").mkdir(parents=True)
        _, w = m.mlp(root / name / "1" / "model.onnx", d_in=4, d_out=3)
    logits, _ = m.mlp_numpy(x, w)
    Profile.build(root / "clf" / "1" / "model.onnx", (x, logits.argmax(1)), classifier="logits").save(
        root / "clf" / "profile.json")
    (root / "flagged" / "1" / "profile.json").write_bytes((root / "clf" / "profile.json").read_bytes())
    (root / "clf" / "config.yaml").write_text(
        "threads: 1\nbatching: {max_batch_size: 64, max_queue_delay_ms: 1}\n"
        "monitoring: {profile: profile.json, sample_rate: 1.0, window: 200}\n"
        "screen: {action: reject, threshold: 6}\n")
    (root / "flagged" / "config.yaml").write_text(
        "threads: 1\nmonitoring: {profile: profile.json, window: 200}\nscreen: {action: flag, threshold: 6}\n")
    (root / "plain" / "config.yaml").write_text("threads: 1\n")
    return root, w


@pytest.fixture(scope="module")
def srv(mrepo):
    with running(mrepo[0]) as s:
        yield s


def _url(server, path):
    return f"http://127.0.0.1:{server.ports['http']}{path}"


def _infer(server, model, x, rid=None):
    body = {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}],
            "outputs": [{"name": "logits"}]}
    if rid:
        body["id"] = rid
    return httpx.post(_url(server, f"/v2/models/{model}/infer"), json=body)


def _wait(cond, what, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_feedback_by_request_id(srv, mrepo):
    _, w = mrepo
    x = np.random.default_rng(1).standard_normal((1, 4)).astype(np.float32)
    r = _infer(srv, "clf", x, "fb-1")
    assert r.status_code == 200 and r.json()["id"] == "fb-1"
    predicted = int(np.argmax(r.json()["outputs"][0]["data"]))
    assert predicted == int(m.mlp_numpy(x, w)[0].argmax())
    ok = httpx.post(_url(srv, "/v2/models/clf/feedback"), json={"id": "fb-1", "label": predicted})
    assert ok.status_code == 200 and ok.json()["matched"] == 1
    again = httpx.post(_url(srv, "/v2/models/clf/versions/1/feedback"), json={"id": "fb-1", "label": predicted})
    assert again.status_code == 404 and "fb-1" in again.json()["error"]
    _infer(srv, "clf", np.zeros((2, 4), np.float32), "fb-2")
    bad = httpx.post(_url(srv, "/v2/models/clf/feedback"), json={"id": "fb-2", "label": 1})
    assert bad.status_code == 400 and "2 class indices" in bad.json()["error"]
    out_of_range = httpx.post(_url(srv, "/v2/models/clf/feedback"), json={"id": "fb-2", "label": [0, 7]})
    assert out_of_range.status_code == 400 and "0 to 2" in out_of_range.json()["error"]
    batch = httpx.post(_url(srv, "/v2/models/clf/feedback"),
                       json={"feedback": [{"id": "fb-2", "label": [0, 1]}, {"id": "gone", "label": 0}]})
    assert batch.json() == {"matched": 1, "unknown": ["gone"], "unknown_count": 1}
    plain = httpx.post(_url(srv, "/v2/models/plain/feedback"), json={"id": "x", "label": 0})
    assert plain.status_code == 400 and "no monitoring" in plain.json()["error"]
    malformed = httpx.post(_url(srv, "/v2/models/clf/feedback"), json={"label": 0})
    assert malformed.status_code == 400 and "'id'" in malformed.json()["error"]
    state = _wait(lambda: (s := httpx.get(_url(srv, "/v2/models/clf/monitor")).json())["versions"]["1"]["monitor"]
                  ["quality"]["labels_total"] >= 3 and s, "the labels to be processed")
    q = state["versions"]["1"]["monitor"]["quality"]
    assert q["feedback"]["matched"] == 2 and q["metrics"]["accuracy"] is not None


def test_drift_is_reported_and_exported(srv):
    rng = np.random.default_rng(2)
    for _ in range(6):
        assert _infer(srv, "clf", rng.standard_normal((50, 4)).astype(np.float32)).status_code == 200
    for _ in range(8):
        x = rng.standard_normal((50, 4)).astype(np.float32)
        x[:, 1] += 1.5
        assert _infer(srv, "clf", x).status_code == 200
    state = _wait(lambda: (s := httpx.get(_url(srv, "/v2/models/clf/versions/1/monitor")).json())
                  ["versions"]["1"]["monitor"]["tensors"]["x"]["drift"] and s, "drift")
    t = state["versions"]["1"]["monitor"]["tensors"]["x"]
    assert t["top"][0]["feature"] == "x[1]" or "x[1]" in t["sequential"]["features"]
    text = httpx.get(f"http://127.0.0.1:{srv.ports['metrics']}/metrics").text
    assert re.search(r'^infercore_drift\{model="clf",tensor="x",version="1"\} 1\.0$', text, re.M)
    assert re.search(r'^infercore_drift_score\{model="clf",tensor="x",test="psi",version="1"\} [0-9.]+$', text, re.M)
    assert re.search(r'^infercore_monitor_samples_total\{model="clf",version="1"\} [1-9]', text, re.M)
    assert 'infercore_monitor_dropped_samples_total{model="clf",version="1"} 0.0' in text
    assert re.search(r'^infercore_screened_total\{action="passed",model="clf",version="1"\} [1-9]', text, re.M)
    assert "process_cpu_seconds_total" in text


def test_screening_rejects_and_flags(srv):
    far = np.full((1, 4), 25.0, np.float32)
    r = _infer(srv, "clf", far)
    assert r.status_code == 400 and "input screening" in r.json()["error"] and "tensor 'x'" in r.json()["error"]
    r = _infer(srv, "flagged", far)
    assert r.status_code == 200 and r.json()["parameters"]["screen_flagged"] is True
    assert r.json()["parameters"]["screen_score"] >= 6
    ok = _infer(srv, "flagged", np.zeros((1, 4), np.float32))
    assert ok.status_code == 200 and "parameters" not in ok.json()
    grpcclient = pytest.importorskip("tritonclient.grpc")
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{srv.ports['grpc']}")
    inp = grpcclient.InferInput("x", [1, 4], "FP32")
    inp.set_data_from_numpy(far)
    resp = client.infer("flagged", [inp]).get_response()
    assert resp.parameters["screen_flagged"].bool_param is True
    with pytest.raises(Exception, match="input screening"):
        client.infer("clf", [inp])
    text = httpx.get(f"http://127.0.0.1:{srv.ports['metrics']}/metrics").text
    assert re.search(r'^infercore_screened_total\{action="rejected",model="clf",version="1"\} [2-9]', text, re.M)
    assert re.search(r'^infercore_screened_total\{action="flagged",model="flagged",version="1"\} [2-9]', text, re.M)


def test_config_errors_name_the_key(tmp_path):
    from infercore.serve.repository import ModelConfig

    with pytest.raises(ValueError, match=r"monitoring: unknown key.*sample_rat"):
        ModelConfig.from_dict({"monitoring": {"profile": "p.json", "sample_rat": 1}})
    with pytest.raises(ValueError, match=r"monitoring\.window must be an int"):
        ModelConfig.from_dict({"monitoring": {"profile": "p.json", "window": "big"}})
    with pytest.raises(ValueError, match="needs profile"):
        ModelConfig.from_dict({"monitoring": {"window": 100}})
    with pytest.raises(ValueError, match=r"screen\.action must be flag or reject"):
        ModelConfig.from_dict({"screen": {"action": "drop"}})
    with pytest.raises(ValueError, match=r"monitoring\.worker must be process or thread, got 'fork'"):
        ModelConfig.from_dict({"monitoring": {"profile": "p.json", "worker": "fork"}})
    from infercore.monitor.worker import supported

    default = dict(ModelConfig.from_dict({"monitoring": {"profile": "p.json"}}).monitoring.settings)["worker"]
    assert default == ("thread" if supported() else "process")
    (tmp_path / "a" / "1").mkdir(parents=True)
    m.mlp(tmp_path / "a" / "1" / "model.onnx", d_in=4, d_out=3)
    (tmp_path / "a" / "config.yaml").write_text("monitoring: {profile: missing.json}\n")
    from infercore.errors import BadRequest
    from infercore.serve.repository import ModelRepository

    repo = ModelRepository(tmp_path)
    with pytest.raises(BadRequest, match=r"profile 'missing\.json' not found"):
        repo.load("a")
    Profile.from_arrays({"z": np.zeros((50, 4), np.float32)}).save(tmp_path / "a" / "other.json")
    (tmp_path / "a" / "config.yaml").write_text("monitoring: {profile: other.json}\n")
    with pytest.raises(BadRequest, match="tensor 'z', which the model has not"):
        repo.load("a")
    repo.close()


def test_dashboard_page_and_data(srv):
    page = httpx.get(_url(srv, "/dashboard"))
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    # nothing is fetched from outside: no external scripts, styles or fonts
    assert not re.search(r'(src|href)\s*=\s*["\']?(https?:)?//', page.text)
    assert "<script>" in page.text and "dashboard/data" in page.text
    before = httpx.get(_url(srv, "/dashboard/data")).json()
    for _ in range(3):
        _infer(srv, "plain", np.zeros((1, 4), np.float32))
    after = httpx.get(_url(srv, "/dashboard/data")).json()

    def row(d, model):
        return next(r for r in d["models"] if r["model"] == model and r["version"] == "1")

    assert row(after, "plain")["requests"]["success"] - row(before, "plain")["requests"]["success"] == 3
    assert row(after, "plain")["latency"]["buckets"][-1][0] == "+Inf"
    assert "drift" in row(after, "clf") and "x" in row(after, "clf")["drift"]
    assert after["process"]["process_resident_memory_bytes"] > 0


def test_grafana_and_alert_queries_name_metrics_the_server_exports(srv):
    """Every metric a shipped Grafana panel or alert rule queries is one this server exposes."""
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    _infer(srv, "clf", np.zeros((1, 4), np.float32), "g-1")
    httpx.post(_url(srv, "/v2/models/clf/feedback"), json={"id": "g-1", "label": 0})
    _infer(srv, "clf", np.full((1, 4), 30.0, np.float32))  # a rejected request: a failure series
    exposed = set(re.findall(r"^([a-z_]+)[{ ]", httpx.get(f"http://127.0.0.1:{srv.ports['metrics']}/metrics").text, re.M))
    dashboard = json.loads((root / "deploy" / "grafana" / "infercore.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += re.findall(r"expr: \|?\s*([^\n]+(?:\n {12}[^\n]+)*)", (root / "deploy" / "prometheus" / "alerts.yml").read_text())
    wanted = {name for e in exprs for name in re.findall(r"\b((?:infercore|process)_[a-z_]+)", e)}
    assert wanted and not wanted - exposed, sorted(wanted - exposed)
