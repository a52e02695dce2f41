"""Scale-out on Ray Serve: requests/s and p50/p99 against concurrency, MiniLM at sequence 128, in one
run, beside ``infercore serve`` and plain Ray Serve.

    python benchmarks/scale.py [--duration 5] [--rounds 3] [--clients 1,8,32,64] [--no-pin] [--json results/scale.json]

Servers (all answer V2 binary tensors except plain Ray Serve, which takes the JSON its docs' pattern
takes):
  infercore-serve   ``infercore serve`` (one process; 2 one-thread engine instances, infercore's Batcher)
  ray-ic-1          ``ic_deployment(MiniLM, num_replicas=1)``: one replica of 1 CPU (one one-thread engine)
  ray-ic-2          the same with 2 replicas of 1 CPU each
  ray-ic-servebatch the same 2 replicas with Ray's ``@serve.batch`` in place of infercore's Batcher
                    (same REST routes and decoders): the batcher choice, measured
  ray-plain         plain Ray Serve as its batching docs write it: ``@serve.deployment(num_replicas=2,
                    ray_actor_options={"num_cpus": 1})`` with an ``@serve.batch`` method running an
                    ``onnxruntime.InferenceSession(path)``, ``await request.json()`` in, a JSON list out;
                    the runtime's and Ray's defaults otherwise (ONNX Runtime: a thread per core)
  ray-plain-tuned   the same, hand-set to what infercore sets by itself: 1 intra-op thread for the
                    replica's 1 CPU, 128 ongoing requests, Ray's per-request log line off
Every batcher takes batches of up to 4 and waits up to 2 ms (the settings benchmarks/serve.py found
best for MiniLM here); infercore's deployments and the tuned plain one take up to 128 ongoing requests per replica.

A local Ray cluster laid out as production clusters often are (``testing.raycluster``, three
``ray start`` on loopback): a head node with no CPUs for replicas (the GCS, Serve's controller and
its HTTP proxy) and two worker nodes (5 logical CPUs each, so that every deployment stays up at
once; the machine's 2 cores do the work). Every deployment has ``max_replicas_per_node=1``: a
2-replica deployment has one replica on each worker, as two machines of one CPU would. Each worker
node is pinned to a core of its own (worker 1 to the first, worker 2 to the second; ``--no-pin``
leaves them free): Ray's ``num_cpus`` is a count for its scheduler, not a limit, and unpinned, the
one replica of "1 CPU" ran its engine on one core and the rest of its process (Ray's request
handling, the REST decoding: 1.1 cores in all at 32 clients) on the other, which no node of one CPU
has. The head node (Serve's proxy), ``infercore serve`` and the load generator are not pinned. Each node
(and ``infercore serve``) runs in a session of its own, as when started from its own shell; Linux's
autogroup scheduling (``/proc/sys/kernel/sched_autogroup_enabled``) gives each session an equal
share of the cores when the machine is busy, as separate machines would have their own, so on this
shared machine a replica on another node adds CPU where one on the same node would add none.
The head node's HTTP proxy has infercore's ``ReplicaFailover`` installed, as docs/scale-out.md
recommends, and Ray's per-request access log is off in the proxy. Load: ``wrk``
(``apt-get install wrk``), else the asyncio/httpx generator of benchmarks/serve.py; closed loop, one
request per client at a time.

The machine is shared and its speed drifts: every measurement is repeated in ``--rounds`` rounds;
within a round each client count is measured on every server back to back, in an order that rotates
from round to round. The tables show medians over rounds; the targets are checked on the median of
the per-round ratios (ray-ic-2 against ray-ic-1 and against ray-plain at 32 clients).

Targets (issue 19): ray-ic-2 >= 1.5x ray-ic-1 at 32 clients; ray-ic-2 >= 1.25x ray-plain at 32
clients with a lower p99.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serve as serve_bench  # benchmarks/serve.py: the wrk driver, V2 bodies, infercore serve
from _common import machine, write_json

CLIENTS = [1, 8, 32, 64]
BATCH = {"max_batch_size": 4, "max_queue_delay_ms": 2}
MAX_ONGOING = 128  # infercore.integrations.ray.DEFAULT_MAX_ONGOING_REQUESTS, and the tuned plain's
SERVERS = ["infercore-serve", "ray-ic-1", "ray-ic-2", "ray-ic-servebatch", "ray-plain", "ray-plain-tuned"]


# -- plain Ray Serve, as Ray's docs write it ------------------------------------------------------------
def plain_deployment(model: str, replicas: int, *, tuned: bool = False) -> Any:
    """Ray's batching pattern around an ``onnxruntime.InferenceSession``. As a user writes it
    (``tuned=False``): the runtime's and Ray's defaults (ONNX Runtime's threads: one per core;
    ``max_ongoing_requests`` 5). ``tuned=True``: hand-set to what infercore sets itself, one
    runtime thread for the replica's one CPU and 32 ongoing requests."""
    from ray import serve
    from starlette.requests import Request

    options: dict[str, Any] = {
        "num_replicas": replicas,
        "ray_actor_options": {"num_cpus": 1},
        "max_replicas_per_node": 1,  # one per node, as every deployment here
    }
    if tuned:
        options["max_ongoing_requests"] = MAX_ONGOING
        options["logging_config"] = {"enable_access_log": False}

    @serve.deployment(**options)
    class PlainEmbedder:
        def __init__(self, path: str, threads: int | None) -> None:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            if threads:
                opts.intra_op_num_threads = threads
            self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])

        @serve.batch(
            max_batch_size=BATCH["max_batch_size"], batch_wait_timeout_s=BATCH["max_queue_delay_ms"] / 1e3
        )
        async def embed(self, items: list[dict[str, list[int]]]) -> list[list[float]]:
            feeds = {k: np.asarray([item[k] for item in items], dtype=np.int64) for k in items[0]}
            return self.session.run(None, feeds)[0].tolist()

        async def __call__(self, request: Request) -> list[float]:
            return await self.embed(await request.json())

    return PlainEmbedder.bind(model, 1 if tuned else None)


# -- infercore's deployment with Ray's @serve.batch in place of its Batcher -----------------------------
class ServeBatchRunner:
    """A model runner (what ModelRepository's batcher_factory makes) batching with ``@serve.batch``."""

    def __init__(
        self, factory: Any, *, max_batch_size: int, max_queue_delay: float, instances: int, **_: Any
    ):
        import asyncio

        from ray import serve

        self.engines = [factory() for _ in range(instances)]
        self.free: asyncio.Queue[Any] | None = None
        self.run_batch = serve.batch(
            max_batch_size=max_batch_size,
            batch_wait_timeout_s=max_queue_delay,
            max_concurrent_batches=instances,
        )(self._run)

    async def _run(self, items: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        import asyncio

        if self.free is None:
            self.free = asyncio.Queue()
            for e in self.engines:
                self.free.put_nowait(e)
        sizes = [len(next(iter(item.values()))) for item in items]
        # one shape per batch: @serve.batch does not group requests by shape (MiniLM here: all [1, 128])
        feeds = {k: np.concatenate([item[k] for item in items]) for k in items[0]}
        engine = await self.free.get()
        try:
            out = await asyncio.to_thread(engine.run, feeds)
        finally:
            self.free.put_nowait(engine)
        bounds = np.cumsum([0, *sizes])
        return [{k: v[a:b] for k, v in out.items()} for a, b in itertools.pairwise(bounds)]

    async def infer(self, feeds: dict[str, np.ndarray], *, timeout: float | None, priority: int) -> Any:
        return await self.run_batch(feeds)

    def close(self, drain: bool = True, timeout: float | None = None) -> None:
        for e in self.engines:
            e.close()


def servebatch_deployment(model: str, replicas: int) -> Any:
    from ray import serve

    @serve.deployment(
        num_replicas=replicas,
        ray_actor_options={"num_cpus": 1},
        max_ongoing_requests=MAX_ONGOING,
        max_replicas_per_node=1,
        logging_config={"enable_access_log": False},
    )
    @serve.ingress()
    class ServeBatchReplica:
        def __init__(self, path: str) -> None:
            from infercore.serve.layout import repository_for
            from infercore.serve.repository import ModelRepository
            from infercore.serve.service import InferenceService

            self.served = repository_for(path, "minilm")
            repo = ModelRepository(self.served.root, batcher_factory=ServeBatchRunner)
            repo.load("minilm", {"threads": 1, "instances": 1, "batching": BATCH})
            self.service = InferenceService(repo)

        def __serve_build_asgi_app__(self) -> Any:
            from infercore.serve.rest import create_app

            return create_app(self.service)

    return ServeBatchReplica.bind(model)


# -- the run -----------------------------------------------------------------------------------------
def deploy_all(model: Path, http_port: int, servers: list[str]) -> dict[str, str]:
    """Every Ray deployment, each its own application under its own route prefix: server -> URL."""
    from ray import serve

    from infercore.integrations.ray import ic_deployment

    # the proxy's line per request off for every server (Ray's global logging config)
    serve.start(
        proxy_location="HeadOnly",
        http_options={"host": "127.0.0.1", "port": http_port},
        logging_config={"enable_access_log": False},
    )
    apps = {
        "ray-ic-1": lambda: ic_deployment(
            model, model_name="minilm", num_replicas=1, batching=BATCH, name="ic1"
        ),
        "ray-ic-2": lambda: ic_deployment(
            model, model_name="minilm", num_replicas=2, batching=BATCH, name="ic2"
        ),
        "ray-ic-servebatch": lambda: servebatch_deployment(str(model), 2),
        "ray-plain": lambda: plain_deployment(str(model), 2),
        "ray-plain-tuned": lambda: plain_deployment(str(model), 2, tuned=True),
    }
    urls = {}
    for name, make in apps.items():
        if name not in servers:
            continue
        app = make()
        t0 = time.perf_counter()
        serve.run(app, name=name, route_prefix=f"/{name}")
        print(f"  deployed {name} in {time.perf_counter() - t0:.1f} s", flush=True)
        path = "" if name.startswith("ray-plain") else "/v2/models/minilm/infer"
        urls[name] = f"http://127.0.0.1:{http_port}/{name}{path}"
    return urls


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per measurement (default 5)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    ap.add_argument("--clients", default=",".join(map(str, CLIENTS)))
    ap.add_argument("--servers", default=",".join(SERVERS))
    ap.add_argument(
        "--quick", action="store_true", help="1 round of 2 s at 1 and 32 clients: indicative only"
    )
    ap.add_argument(
        "--no-pin", action="store_true", help="leave the worker nodes unpinned (default: one core each)"
    )
    ap.add_argument("--json", default="results/scale.json")
    args = ap.parse_args()
    if args.quick:
        args.duration, args.rounds, args.clients = 2.0, 1, "1,32"
    clients = [int(c) for c in args.clients.split(",")]
    servers = args.servers.split(",")
    try:
        import ray
    except ImportError:
        print('scale.py needs Ray Serve: pip install "infercore[ray]"', file=sys.stderr)
        return 2
    from infercore.testing.raycluster import LocalRayCluster, free_port, ray_env

    model, feeds = serve_bench.model_inputs("minilm")
    v2_body, v2_headers = serve_bench.v2_binary_body(feeds)
    # plain Ray Serve takes one item as JSON lists: {"input_ids": [...128 ints], ...}
    plain_body = json.dumps({k: v[0].tolist() for k, v in feeds.items()}).encode()
    plain_headers = {"Content-Type": "application/json"}
    loadgen = "wrk (1 thread, Lua body)" if serve_bench.shutil.which("wrk") else "asyncio/httpx generator"
    report: dict[str, Any] = {
        "machine": machine(),
        "load_average_start": os.getloadavg(),
        "sched_autogroup": _autogroup(),
        "ray": ray.__version__,
        "loadgen": loadgen,
        "duration_s": args.duration,
        "rounds": args.rounds,
        "batching": BATCH,
        "max_ongoing_requests": MAX_ONGOING,
        "pinned_workers": not args.no_pin,
        "servers": servers,
        "samples": {s: {str(c): [] for c in clients} for s in servers},
    }
    print(f"load generator: {loadgen}; load average {os.getloadavg()}", flush=True)
    os.environ.update(ray_env())
    callback = {"RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": "infercore.integrations.ray:proxy_middlewares"}
    with (
        tempfile.TemporaryDirectory(prefix="infercore-bench-scale-") as tmp,
        LocalRayCluster(nodes=3, cpus_per_node=5, head_cpus=0, env=callback, pin_workers=not args.no_pin) as cluster,
    ):
        if cluster.pinned:
            print(f"worker nodes pinned to cores {cluster.pinned}", flush=True)
        work = Path(tmp)
        ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
        proc = None
        try:
            urls: dict[str, str] = {}
            if any(s.startswith("ray-") for s in servers):
                urls.update(deploy_all(model, free_port(), servers))
            if "infercore-serve" in servers:
                proc, port = serve_bench.start_infercore("minilm", model, work, new_session=True)
                urls["infercore-serve"] = f"http://127.0.0.1:{port}/v2/models/minilm/infer"
            bodies = {
                s: (plain_body, plain_headers) if s.startswith("ray-plain") else (v2_body, v2_headers)
                for s in servers
            }
            for s in servers:  # warm up: every replica has run a batch or two
                serve_bench.load(urls[s], *bodies[s], 16, 2.0, work)
            for r in range(args.rounds):
                order = servers[r % len(servers) :] + servers[: r % len(servers)]
                for c in clients:
                    for s in order:
                        time.sleep(1.0)  # what the last server accepted after wrk stopped is answered
                        res = serve_bench.load(urls[s], *bodies[s], c, args.duration, work)
                        res["load_average"] = os.getloadavg()[0]
                        report["samples"][s][str(c)].append(res)
                        print(
                            f"  round {r + 1} c={c:3d} {s:18s} {res['rps']:7.1f} req/s  p50 {res['p50_ms'] or 0:7.1f} ms"
                            f"  p99 {res['p99_ms'] or 0:7.1f} ms  errors {res['errors']}",
                            flush=True,
                        )
        finally:
            if proc is not None:
                serve_bench.stop(proc)
            from ray import serve

            serve.shutdown()
            ray.shutdown()
    report["load_average_end"] = os.getloadavg()
    report["table"] = table(report, servers, clients)
    report["checks"] = checks(report)
    print_table(report, servers, clients)
    for k, v in report["checks"].items():
        print(f"{k}: {v}")
    print(f"wrote {write_json(args.json, report)}")
    return 0


def _autogroup() -> str | None:
    try:
        return Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip()
    except OSError:
        return None


def _median(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return float(statistics.median(values)) if values else None


def table(report: dict[str, Any], servers: list[str], clients: list[int]) -> dict[str, Any]:
    return {
        s: {
            str(c): {
                "rps": _median(report["samples"][s][str(c)], "rps"),
                "p50_ms": _median(report["samples"][s][str(c)], "p50_ms"),
                "p99_ms": _median(report["samples"][s][str(c)], "p99_ms"),
                "errors": sum(r["errors"] for r in report["samples"][s][str(c)]),
            }
            for c in clients
        }
        for s in servers
    }


def _paired(report: dict[str, Any], a: str, b: str, key: str, c: int = 32) -> list[float]:
    sa, sb = report["samples"].get(a, {}).get(str(c), []), report["samples"].get(b, {}).get(str(c), [])
    return [x[key] / y[key] for x, y in zip(sa, sb, strict=False) if x.get(key) and y.get(key)]


def checks(report: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    scale = _paired(report, "ray-ic-2", "ray-ic-1", "rps")
    if scale:
        out["ray_ic_2_vs_1_rps_at_32"] = {
            "rounds": [round(x, 3) for x in scale],
            "median": round(statistics.median(scale), 3),
            "target": 1.5,
        }
    plain = _paired(report, "ray-ic-2", "ray-plain", "rps")
    if plain:
        p99 = _paired(report, "ray-ic-2", "ray-plain", "p99_ms")
        out["ray_ic_2_vs_plain_rps_at_32"] = {
            "rounds": [round(x, 3) for x in plain],
            "median": round(statistics.median(plain), 3),
            "target": 1.25,
        }
        out["ray_ic_2_vs_plain_p99_at_32"] = {
            "rounds": [round(x, 3) for x in p99],
            "median": round(statistics.median(p99), 3),
            "target": "< 1",
        }
    tuned = _paired(report, "ray-ic-2", "ray-plain-tuned", "rps")
    if tuned:
        p99 = _paired(report, "ray-ic-2", "ray-plain-tuned", "p99_ms")
        out["ray_ic_2_vs_plain_tuned_rps_at_32"] = {
            "rounds": [round(x, 3) for x in tuned],
            "median": round(statistics.median(tuned), 3),
        }
        out["ray_ic_2_vs_plain_tuned_p99_at_32"] = {
            "rounds": [round(x, 3) for x in p99],
            "median": round(statistics.median(p99), 3),
        }
    sb = _paired(report, "ray-ic-2", "ray-ic-servebatch", "rps")
    if sb:
        p99 = _paired(report, "ray-ic-2", "ray-ic-servebatch", "p99_ms")
        out["infercore_batcher_vs_serve_batch_rps_at_32"] = {
            "rounds": [round(x, 3) for x in sb],
            "median": round(statistics.median(sb), 3),
        }
        out["infercore_batcher_vs_serve_batch_p99_at_32"] = {
            "rounds": [round(x, 3) for x in p99],
            "median": round(statistics.median(p99), 3),
        }
    ours = _paired(report, "ray-ic-2", "infercore-serve", "rps")
    if ours:
        out["ray_ic_2_vs_infercore_serve_rps_at_32"] = {
            "rounds": [round(x, 3) for x in ours],
            "median": round(statistics.median(ours), 3),
        }
    return out


def print_table(report: dict[str, Any], servers: list[str], clients: list[int]) -> None:
    print(
        f"\nMiniLM s128, medians of {report['rounds']} rounds of {report['duration_s']:.0f} s ({report['loadgen']})"
    )
    print(f"{'server':18s} " + " ".join(f"{'c=' + str(c):>26s}" for c in clients))
    for s in servers:
        cells = []
        for c in clients:
            t = report["table"][s][str(c)]
            cells.append(f"{t['rps'] or 0:7.1f}/s {t['p50_ms'] or 0:6.0f}/{t['p99_ms'] or 0:5.0f} ms")
        print(f"{s:18s} " + " ".join(f"{x:>26s}" for x in cells))
    print("(req/s  p50/p99)")


if __name__ == "__main__":
    sys.exit(main())
