"""``infercore.integrations.ray`` on a real Ray cluster started here: a head node and a worker node
(``ray start``, one CPU each, loopback), two replicas of one CPU, so one lands on each node.

Through Ray's HTTP proxy: Triton's HTTP client (binary and JSON tensors, BYTES), KServe's REST
client (in a child process), MiniLM against ONNX Runtime itself; through a DeploymentHandle: numpy
in and out, infercore's errors. A replica SIGKILLed under load is replaced by Ray and no request
is lost. The ``deploy/ray`` config files deploy the same application with ``serve deploy``.

The cluster is stopped at the end whatever happens, by killing the processes it started (not
``ray stop``, which would stop every Ray cluster on this shared machine). The whole module takes
about two to three minutes on two cores.
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]

if importlib.util.find_spec("ray") is None:  # found, not imported: the quick pass collects this too
    pytest.skip("Ray Serve is not installed: pip install 'infercore[ray]'", allow_module_level=True)
httpclient = pytest.importorskip("tritonclient.http")
yaml = pytest.importorskip("yaml")

from infercore.errors import BadRequest  # noqa: E402
from infercore.integrations.ray import ic_deployment  # noqa: E402
from infercore.testing import models  # noqa: E402
from infercore.testing.raycluster import LocalRayCluster, free_port, ray_env  # noqa: E402

from ..serve.conftest import affine, affine_model, strings_model  # noqa: E402

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "ray"
CALLBACK = "infercore.integrations.ray:proxy_middlewares"
APP = "ic"


# -- the cluster, the repository, the application --------------------------------------------------
@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalRayCluster]:
    import ray
    from ray import serve

    saved = dict(os.environ)
    os.environ.update(ray_env())  # this process is the driver
    c = LocalRayCluster(
        nodes=2,
        cpus_per_node=1,
        dashboard=True,
        env={"RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": CALLBACK},
        pin_workers=True,  # the worker node on one core, as a node of one CPU
    )
    try:
        c.start()
        ray.init(address=c.address, logging_level="ERROR", log_to_driver=False)
        yield c
    finally:
        try:
            if ray.is_initialized():
                serve.shutdown()
                ray.shutdown()
        finally:
            c.stop()
            os.environ.clear()
            os.environ.update(saved)
    assert not c.processes()


@pytest.fixture(scope="module")
def port(cluster: LocalRayCluster) -> int:
    from ray import serve

    p = free_port()
    # one proxy, on the head: both nodes share 127.0.0.1, so a proxy per node could not bind twice
    serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": p})
    return p


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ray-repo")
    affine_model(root / "affine" / "1" / "model.onnx", 2.0)
    affine_model(root / "affine" / "2" / "model.onnx", 3.0)
    (root / "affine" / "config.yaml").write_text("batching: {max_batch_size: 8, max_queue_delay_ms: 1}\n")
    strings_model(root / "strings" / "1" / "model.onnx")
    (root / "strings" / "config.yaml").write_text("batching: false\n")
    (root / "minilm" / "1").mkdir(parents=True)
    (root / "minilm" / "1" / "model.onnx").symlink_to(models.minilm())
    (root / "minilm" / "config.yaml").write_text("batching: {max_batch_size: 4, max_queue_delay_ms: 2}\n")
    return root


@pytest.fixture(scope="module")
def handle(port: int, repo: Path) -> Any:
    from ray import serve

    return serve.run(ic_deployment(repo, num_replicas=2), name=APP, route_prefix="/")


def _replicas(cluster: LocalRayCluster, app: str = APP) -> list[Any]:
    from ray.util.state import list_actors

    alive = list_actors(address=cluster.dashboard_url, filters=[("state", "=", "ALIVE")], detail=True)
    return [a for a in alive if a.class_name.startswith(f"ServeReplica:{app}:")]


# -- two nodes -------------------------------------------------------------------------------------
def test_replicas_run_on_two_nodes_with_one_thread_each(cluster, handle):
    replicas = _replicas(cluster)
    assert len(replicas) == 2
    assert len({a.node_id for a in replicas}) == 2, "both replicas on one node"
    seen: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + 60
    while len(seen) < 2 and time.monotonic() < deadline:  # the router picks a replica per call
        d = handle.describe.remote().result()
        seen[d["pid"]] = d
    assert {d["pid"] for d in seen.values()} == {a.pid for a in replicas}
    assert {d["node_id"] for d in seen.values()} == {a.node_id for a in replicas}
    for d in seen.values():
        assert (d["cpus"], d["threads"]) == (1.0, 1)  # num_cpus 1 -> one one-thread engine instance
        assert set(d["models"]) == {"affine", "minilm", "strings"}
    # the worker node's replica inherited its node's one core; the head's is free
    import psutil

    (core,) = cluster.pinned.values()
    cores = sorted(len(psutil.Process(a.pid).cpu_affinity()) for a in replicas)
    affinities = [psutil.Process(a.pid).cpu_affinity() for a in replicas]
    assert [core] in affinities and cores == sorted([1, len(os.sched_getaffinity(0))])


# -- V2 REST through Ray's proxy -----------------------------------------------------------------
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_http(port, handle, binary):
    c = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
    assert c.is_server_live() and c.is_server_ready() and c.is_model_ready("affine")
    assert not c.is_model_ready("affine", "1") and not c.is_model_ready("nope")
    meta = c.get_model_metadata("affine")
    assert meta["versions"] == ["2"] and meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    inp = httpclient.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    outs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("y", "idx")]
    res = c.infer("affine", [inp], outputs=outs, request_id="r-1")
    want = affine(x, 3.0)
    np.testing.assert_allclose(res.as_numpy("y"), want["y"], rtol=1e-6)
    np.testing.assert_array_equal(res.as_numpy("idx"), want["idx"])
    assert res.get_response()["id"] == "r-1" and res.get_response()["model_version"] == "2"
    s = np.array(["héllo".encode(), b"", b"world"], dtype=object)
    inp = httpclient.InferInput("s", [3], "BYTES")
    inp.set_data_from_numpy(s, binary_data=binary)
    got = c.infer("strings", [inp], outputs=[httpclient.InferRequestedOutput("out", binary_data=binary)])
    assert [v if isinstance(v, bytes) else v.encode() for v in got.as_numpy("out").tolist()] == s.tolist()


def test_errors_through_the_proxy_are_the_servers_own(port, handle):
    from tritonclient.utils import InferenceServerException

    c = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
    inp = httpclient.InferInput("x", [2, 5], "FP32")
    inp.set_data_from_numpy(np.ones((2, 5), np.float32))
    with pytest.raises(InferenceServerException, match=r"takes shape \[N, 4\].*\[2, 5\]"):
        c.infer("affine", [inp])
    with pytest.raises(InferenceServerException, match="redeploy"):  # one replica must not load alone
        c.unload_model("affine")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", "/v2/models/affine/infer", body=b"{not json", headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    assert r.status == 400 and "not valid JSON" in json.loads(r.read())["error"]


def test_minilm_through_the_proxy_matches_onnxruntime(port, handle):
    from infercore.backends.ort import raw_session

    feeds = _minilm_feeds(3)
    ref = raw_session(models.minilm(), threads=1)
    try:
        want = ref.run(feeds)["embedding"]
    finally:
        ref.close()
    c = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
    inputs = []
    for name, v in feeds.items():
        inp = httpclient.InferInput(name, list(v.shape), "INT64")
        inp.set_data_from_numpy(v)
        inputs.append(inp)
    got = c.infer("minilm", inputs).as_numpy("embedding")
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_kserve_rest_client(port, handle):
    import importlib.util

    if importlib.util.find_spec("kserve") is None:
        pytest.skip("kserve is not installed: pip install 'infercore[kserve]'")
    from ..serve.test_kserve_clients import check_kserve_answers, kserve_clients

    x = np.random.default_rng(1).standard_normal((6, 4)).astype(np.float32)
    check_kserve_answers(kserve_clients(port, None, x), x, grpc=False)


# -- the handle ----------------------------------------------------------------------------------
def test_deployment_handle(handle):
    x = np.random.default_rng(2).standard_normal((3, 4)).astype(np.float32)
    out = handle.infer.remote({"x": x}, "affine").result()
    np.testing.assert_allclose(out["y"], affine(x, 3.0)["y"], rtol=1e-6)
    assert set(out) == {"y", "idx"}  # (read-only arrays: Ray deserializes numpy without a copy)
    only = handle.infer.remote(x, "affine", version=2, outputs=["idx"]).result()  # a lone array
    assert set(only) == {"idx"}
    with pytest.raises(BadRequest, match="takes FP32, the request sent FP64"):
        handle.infer.remote({"x": x.astype(np.float64)}, "affine").result()
    with pytest.raises(BadRequest, match="serves 3 models"):
        handle.infer.remote({"x": x}).result()
    with pytest.raises(BadRequest, match="unknown model 'nope'"):
        handle.infer.remote({"x": x}, "nope").result()


# -- a replica killed under load --------------------------------------------------------------------
def _minilm_feeds(batch: int = 1) -> dict[str, np.ndarray]:
    ids = (np.arange(128, dtype=np.int64)[None] * 7 + np.arange(batch)[:, None] * 13) % 30000 + 1000
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}


class Load:
    """Closed-loop clients posting one MiniLM request each (V2 binary), retrying what a client
    retries: 503, and a connection reset or refused. Every request ends in a checked answer."""

    RETRIABLE = (ConnectionError, http.client.RemoteDisconnected, http.client.BadStatusLine)

    def __init__(self, port: int, clients: int, want: np.ndarray) -> None:
        feeds = _minilm_feeds()
        header = {
            "inputs": [
                {"name": k, "shape": list(v.shape), "datatype": "INT64", "parameters": {"binary_data_size": v.nbytes}}
                for k, v in feeds.items()
            ],
            "parameters": {"binary_data_output": True},
        }
        head = json.dumps(header).encode()
        self.body = head + b"".join(v.tobytes() for v in feeds.values())
        self.headers = {"Inference-Header-Content-Length": str(len(head)), "Content-Type": "application/octet-stream"}
        self.port, self.want = port, want
        self.counts: Counter[str] = Counter()
        self.wrong: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(120)

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counts[key] += n

    def _client(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        while not self._stop.is_set():
            self._count("requests")
            while True:  # until this request is answered
                try:
                    conn.request("POST", "/v2/models/minilm/infer", body=self.body, headers=self.headers)
                    r = conn.getresponse()
                    data = r.read()
                except self.RETRIABLE as e:
                    self._count(f"retried: {type(e).__name__}")
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                    time.sleep(0.1)
                    continue
                if r.status == 503:
                    self._count("retried: 503")
                    time.sleep(float(r.getheader("retry-after") or 0.1))
                    continue
                break
            self._count("replayed by the proxy", int(r.getheader("x-infercore-replayed") or 0))
            if r.status != 200:
                self._count(f"failed: {r.status}")
                with self._lock:
                    self.wrong.append(f"{r.status}: {data[:300]!r}")
                continue
            n = int(r.getheader("Inference-Header-Content-Length"))
            got = np.frombuffer(data[n:], np.float32).reshape(self.want.shape)
            if np.abs(got - self.want).max() > 1e-4:
                with self._lock:
                    self.wrong.append(f"wrong answer, max error {np.abs(got - self.want).max()}")
            self._count("answered")
        conn.close()


def test_a_replica_killed_under_load_is_replaced_and_no_request_is_lost(cluster, port, handle):
    import ray
    from ray import serve

    from infercore.backends.ort import raw_session

    ref = raw_session(models.minilm(), threads=1)
    try:
        want = ref.run(_minilm_feeds())["embedding"]
    finally:
        ref.close()
    before = {a.pid: a for a in _replicas(cluster)}
    with Load(port, clients=8, want=want) as load:
        # kill the replica once it holds requests (in its batcher's queue or running)
        victim, ongoing = None, 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for a in before.values():
                replica = ray.get_actor(a.name, namespace="serve")
                ongoing = ray.get(replica.get_num_ongoing_requests.remote())
                if ongoing >= 3:
                    victim = a
                    break
            if victim is not None:
                break
            time.sleep(0.05)
        assert victim is not None, "no replica ever held 3 requests"
        os.kill(victim.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        # Ray starts a replica in its place; the load goes on until it answers too
        replaced = None
        while time.monotonic() - killed_at < 120:
            now = {a.pid: a for a in _replicas(cluster)}
            fresh = [a for pid, a in now.items() if pid not in before]
            status = serve.status().applications[APP].deployments["infercore"]
            if len(now) == 2 and fresh and status.replica_states.get("RUNNING") == 2:
                replaced = fresh[0]
                break
            time.sleep(0.5)
        time.sleep(3)  # requests reach the new replica as well
    counts = load.counts
    summary = f"killed pid {victim.pid} holding {ongoing} requests; {dict(counts)}"
    print(summary)
    assert replaced is not None, f"Ray did not replace the killed replica: {summary}"
    assert victim.pid not in {a.pid for a in _replicas(cluster)}
    assert len({a.node_id for a in _replicas(cluster)}) == 2  # again one per node
    assert not load.wrong, f"{load.wrong[:5]} ({summary})"
    assert counts["answered"] == counts["requests"] > 0, summary
    assert not [k for k in counts if k.startswith("failed")], summary
    # the kill hit requests in flight: the proxy sent them again (or a client retried them)
    assert counts["replayed by the proxy"] + sum(v for k, v in counts.items() if k.startswith("retried")) >= 1


# -- the config files ------------------------------------------------------------------------------
def _config(name: str, repo: Path, port: int) -> dict[str, Any]:
    config = yaml.safe_load((DEPLOY / name).read_text())
    config["proxy_location"] = "HeadOnly"
    config["http_options"] = {"host": "127.0.0.1", "port": port}
    for app in config["applications"]:
        app["args"]["model"] = str(repo / "affine")  # one model's versions...
        app["args"]["model_name"] = "affine"  # ...which a directory is only when a model name says so
    return config


@pytest.mark.parametrize("name", ["infercore.yaml", "autoscaling.yaml"])
def test_config_files_are_valid_serve_deploy_configs(name, repo):
    from ray.serve import Application
    from ray.serve.schema import ServeDeploySchema

    from infercore.errors import ArgumentError
    from infercore.integrations.ray import build_app

    config = ServeDeploySchema.model_validate(yaml.safe_load((DEPLOY / name).read_text()))
    (app,) = config.applications
    assert app.import_path == "infercore.integrations.ray:build_app"
    (dep,) = app.deployments
    assert dep.name == "infercore" and dep.ray_actor_options.num_cpus == 1
    assert isinstance(build_app({**app.args, "model": str(repo)}), Application)
    with pytest.raises(ArgumentError, match="unknown application arg"):
        build_app({"model": str(repo), "replicas": 2})
    with pytest.raises(ArgumentError, match="'model'"):
        build_app({})


def test_ic_deployment_refuses_bad_arguments(tmp_path):
    from infercore.errors import ArgumentError

    with pytest.raises(ArgumentError, match="not both"):
        ic_deployment(tmp_path, num_replicas=2, autoscaling_config={"max_replicas": 2})
    with pytest.raises(ArgumentError) as e:
        ic_deployment(tmp_path, num_cpus=0)
    assert e.value.parameter == "num_cpus"
    with pytest.raises(ArgumentError, match="max_batch_size"):
        ic_deployment(tmp_path, batching={"max_batch_size": -1})
    with pytest.raises(ArgumentError, match="unknown key"):
        ic_deployment(tmp_path, batching={"max_batch": 4})
    with pytest.raises(ArgumentError) as e:
        ic_deployment(tmp_path, max_replicas_per_node=0)
    assert e.value.parameter == "max_replicas_per_node"
    with pytest.raises(ArgumentError, match="list of model names"):
        ic_deployment(tmp_path, models="affine")


def test_serve_deploy_runs_the_config_file(cluster, port, handle, repo, tmp_path):
    """Last in this module: the config replaces the application deployed from Python."""
    from ray import serve

    serve.delete(APP)
    config = tmp_path / "infercore.yaml"
    config.write_text(yaml.safe_dump(_config("autoscaling.yaml", repo, port)))
    env = ray_env()
    out = subprocess.run(
        [str(Path(sys.executable).with_name("serve")), "deploy", str(config), "--address", cluster.dashboard_url],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    deadline = time.monotonic() + 120
    status = None
    while time.monotonic() < deadline:
        apps = serve.status().applications
        status = apps.get("infercore")
        if status is not None and status.status == "RUNNING":
            break
        assert status is None or status.status != "DEPLOY_FAILED", status
        time.sleep(1)
    assert status is not None and status.status == "RUNNING", status
    assert status.deployments["infercore"].replica_states == {"RUNNING": 1}  # min_replicas
    c = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
    x = np.random.default_rng(4).standard_normal((2, 4)).astype(np.float32)
    inp = httpclient.InferInput("x", [2, 4], "FP32")
    inp.set_data_from_numpy(x)
    res = c.infer("affine", [inp])
    np.testing.assert_allclose(res.as_numpy("y"), affine(x, 3.0)["y"], rtol=1e-6)
    (replica,) = _replicas(cluster, "infercore")
    assert replica.required_resources.get("CPU") == 1.0
