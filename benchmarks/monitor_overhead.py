"""What monitoring costs ``infercore serve``: requests/s and p99 at 32 clients with monitoring on
(sample_rate 1.0) against off, in paired rounds of the same run, for each place the monitor's
analysis can run (``worker: process``, serve's default on x86-64 Linux, and ``worker: thread``).

    python benchmarks/monitor_overhead.py [--rounds 8] [--duration 5] [--clients 32] [--workers process,thread]
                                          [--json results/monitor_overhead.json]

Model: PP-OCR's text direction classifier (``infercore.testing.models.ppocr_cls``, x [1, 3, 48, 192],
about 1 ms: the server's own overhead decides), configured as benchmarks/serve.py configures it.
Servers run side by side on loopback, identical but for ``monitoring:`` (off; or a profile of 512
inputs like the ones sent, the classifier output named, sample_rate 1.0, window 1000, and the
worker); the idle ones cost nothing (a worker process polls its ring 50 times a second). Each
round loads each server in turn (the order rotates) with the same V2 binary request, which
carries an ``id`` so the prediction store is exercised too. The ratios on/off of each round, and
their medians, cancel this shared machine's drift. Server CPU is the server process's own (from
/proc); a worker process's CPU is reported beside it. The monitors' counters (samples taken,
processed, dropped) are read back at the end.

Targets (issue 20): requests/s falls by <= 3% and p99 rises by <= 5%.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, write_json
from infercore.monitor import Profile
from infercore.testing import models
from serve import PY, free_port, load, stop, v2_binary_body, wait_http

MODEL = "cls"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start(path: Path, work: Path, worker: str | None) -> tuple[subprocess.Popen, int]:
    """A server with monitoring off (``worker`` None) or on with that worker."""
    monitoring = worker is not None
    repo = work / f"repo-{worker or 'off'}"
    shutil.rmtree(repo, ignore_errors=True)
    (repo / MODEL / "1").mkdir(parents=True)
    (repo / MODEL / "1" / "model.onnx").symlink_to(path)
    cores = os.cpu_count() or 2
    config = f"threads: 1\ninstances: {cores}\nbatching: {{max_batch_size: 32, max_queue_delay_ms: 2}}\n"
    if monitoring:
        shutil.copy(work / "profile.json", repo / MODEL / "profile.json")
        config += f"monitoring: {{profile: profile.json, sample_rate: 1.0, window: 1000, worker: {worker}}}\n"
    (repo / MODEL / "config.yaml").write_text(config)
    port = free_port()
    cmd = [PY, "-m", "infercore.cli", "serve", str(repo), "--host", "127.0.0.1", "--http-port", str(port),
           "--grpc-port", "off", "--metrics-port", "off"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{port}/v2/models/{MODEL}/ready", proc)
    return proc, port


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per load (default 5)")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--workers", default="process,thread", help="monitored variants (default process,thread)")
    ap.add_argument("--json", default="results/monitor_overhead.json")
    ap.add_argument("--quick", action="store_true", help="2 rounds of 2 s: indicative only")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.duration = 2, 2.0
    import httpx

    path = models.ppocr_cls()
    rng = np.random.default_rng(0)
    x = rng.random((1, 3, 48, 192), dtype=np.float32)
    report: dict[str, Any] = {"machine": machine(), "model": "ppocr_cls", "clients": args.clients,
                              "duration_s": args.duration,
                              "loadgen": "wrk" if shutil.which("wrk") else "asyncio/httpx process"}
    with tempfile.TemporaryDirectory(prefix="infercore-bench-monitor-") as tmp:
        work = Path(tmp)
        reference = rng.random((512, 3, 48, 192), dtype=np.float32)
        Profile.build(path, reference, batch_size=32, classifier="save_infer_model/scale_0.tmp_1").save(
            work / "profile.json")
        body, headers = v2_binary_body({"x": x})
        head_len = int(headers["Inference-Header-Content-Length"])
        header = json.loads(body[:head_len])
        header["id"] = "bench-request"
        head = json.dumps(header).encode()
        body = head + body[head_len:]
        headers = {**headers, "Inference-Header-Content-Length": str(len(head))}
        workers = [w for w in args.workers.split(",") if w]
        servers = {"off": start(path, work, None), **{w: start(path, work, w) for w in workers}}
        try:
            urls = {k: f"http://127.0.0.1:{port}/v2/models/{MODEL}/infer" for k, (_, port) in servers.items()}
            for url in urls.values():
                load(url, body, headers, 8, 2.0, work)  # warm up
            names = list(servers)
            rows = []
            for r in range(args.rounds):
                order = names[r % len(names):] + names[: r % len(names)]
                res = {}
                for k in order:
                    time.sleep(1.0)  # the server answers what it accepted before the load stopped
                    pid = servers[k][0].pid
                    before = _worker_cpu(servers[k][1]) if k != "off" else 0.0
                    c0, t0 = cpu_seconds(pid), time.perf_counter()
                    res[k] = load(urls[k], body, headers, args.clients, args.duration, work)
                    served = res[k]["rps"] * (time.perf_counter() - t0)
                    res[k]["cpu_us_per_request"] = (cpu_seconds(pid) - c0) / max(served, 1) * 1e6
                    if k == "process":
                        res[k]["worker_cpu_us_per_request"] = (_worker_cpu(servers[k][1]) - before) / max(served, 1) * 1e6
                row: dict[str, Any] = {"order": order, **res}
                line = [f"  round {r + 1}: off {res['off']['rps']:7.1f} req/s p99 {res['off']['p99_ms']:6.2f} ms"]
                for w in workers:
                    row[w + "_ratios"] = {
                        "rps": res[w]["rps"] / res["off"]["rps"],
                        "p99": (res[w]["p99_ms"] or 0) / (res["off"]["p99_ms"] or 1),
                        "cpu": res[w]["cpu_us_per_request"] / res["off"]["cpu_us_per_request"]}
                    q = row[w + "_ratios"]
                    line.append(f"{w} {res[w]['rps']:7.1f} req/s p99 {res[w]['p99_ms']:6.2f} ms (rps x{q['rps']:.3f}, "
                                f"p99 x{q['p99']:.3f}, CPU/req x{q['cpu']:.3f})")
                rows.append(row)
                print(" | ".join(line))
            report["rounds"] = rows
            report["variants"] = {}
            for w in workers:
                port = servers[w][1]
                state = httpx.get(f"http://127.0.0.1:{port}/v2/models/{MODEL}/monitor").json()["versions"]["1"]["monitor"]
                v: dict[str, Any] = {
                    "median_rps_ratio": float(np.median([r[w + "_ratios"]["rps"] for r in rows])),
                    "median_p99_ratio": float(np.median([r[w + "_ratios"]["p99"] for r in rows])),
                    "median_cpu_per_request_ratio": float(np.median([r[w + "_ratios"]["cpu"] for r in rows])),
                    "monitor_worker_cpu_seconds": state["worker_cpu_seconds"],
                    "monitor_samples": state["samples"],
                    "drift_windows_tested": {k: t["windows"] for k, t in state["tensors"].items()},
                }
                if w == "process":
                    v["median_worker_cpu_us_per_request"] = float(np.median([r["process"]["worker_cpu_us_per_request"]
                                                                             for r in rows]))
                report["variants"][w] = v
        finally:
            for proc, _ in servers.values():
                stop(proc)
    for w, v in report["variants"].items():
        s = v["monitor_samples"]
        print(f"worker {w}: median of the paired ratios: requests/s x{v['median_rps_ratio']:.3f} "
              f"({(v['median_rps_ratio'] - 1) * 100:+.1f}%), p99 x{v['median_p99_ratio']:.3f} "
              f"({(v['median_p99_ratio'] - 1) * 100:+.1f}%), server CPU per request x{v['median_cpu_per_request_ratio']:.3f}"
              + (f", worker process {v['median_worker_cpu_us_per_request']:.0f} us CPU per request"
                 if "median_worker_cpu_us_per_request" in v else ""))
        print(f"  monitor: {s['sampled']} samples taken, {s['processed']} processed, {s['dropped']} dropped; worker CPU "
              f"{v['monitor_worker_cpu_seconds']:.1f} s; windows tested per tensor: {v['drift_windows_tested']}")
    print(f"wrote {write_json(args.json, report)}")


def _worker_cpu(port: int) -> float:
    import httpx

    state = httpx.get(f"http://127.0.0.1:{port}/v2/models/{MODEL}/monitor").json()["versions"]["1"]["monitor"]
    return float(state["worker_cpu_seconds"])


if __name__ == "__main__":
    main()
