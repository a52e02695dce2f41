"""What monitoring costs ``infercore serve``: requests/s and p99 at 32 clients with monitoring on
(sample_rate 1.0) against off, in paired rounds of the same run.

    python benchmarks/monitor_overhead.py [--rounds 8] [--duration 5] [--clients 32] [--json results/monitor_overhead.json]

Model: PP-OCR's text direction classifier (``infercore.testing.models.ppocr_cls``, x [1, 3, 48, 192],
about 1 ms: the server's own overhead decides), configured as benchmarks/serve.py configures it.
Two servers run side by side on loopback, identical but for ``monitoring:`` (a profile of 512
inputs like the ones sent, the classifier output named, sample_rate 1.0, window 1000); the idle
one costs nothing. Each round loads one then the other (the order alternates) with the same V2
binary request, which carries an ``id`` so the prediction store is exercised too. The ratios
on/off of each round, and their medians, cancel this shared machine's drift. The monitor's own
counters (samples taken, processed, dropped on a full queue) are read back at the end.

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


def start(path: Path, work: Path, monitoring: bool) -> tuple[subprocess.Popen, int]:
    repo = work / ("repo-on" if monitoring else "repo-off")
    shutil.rmtree(repo, ignore_errors=True)
    (repo / MODEL / "1").mkdir(parents=True)
    (repo / MODEL / "1" / "model.onnx").symlink_to(path)
    cores = os.cpu_count() or 2
    config = f"threads: 1\ninstances: {cores}\nbatching: {{max_batch_size: 32, max_queue_delay_ms: 2}}\n"
    if monitoring:
        shutil.copy(work / "profile.json", repo / MODEL / "profile.json")
        config += "monitoring: {profile: profile.json, sample_rate: 1.0, window: 1000}\n"
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
        servers = {"off": start(path, work, False), "on": start(path, work, True)}
        try:
            urls = {k: f"http://127.0.0.1:{port}/v2/models/{MODEL}/infer" for k, (_, port) in servers.items()}
            for url in urls.values():
                load(url, body, headers, 8, 2.0, work)  # warm up
            rows = []
            for r in range(args.rounds):
                order = ["off", "on"] if r % 2 == 0 else ["on", "off"]
                res = {}
                for k in order:
                    time.sleep(1.0)  # the server answers what it accepted before the load stopped
                    pid = servers[k][0].pid
                    c0, t0 = cpu_seconds(pid), time.perf_counter()
                    res[k] = load(urls[k], body, headers, args.clients, args.duration, work)
                    served = res[k]["rps"] * (time.perf_counter() - t0)
                    res[k]["cpu_us_per_request"] = (cpu_seconds(pid) - c0) / max(served, 1) * 1e6
                row = {"off": res["off"], "on": res["on"], "rps_ratio": res["on"]["rps"] / res["off"]["rps"],
                       "p99_ratio": (res["on"]["p99_ms"] or 0) / (res["off"]["p99_ms"] or 1),
                       "cpu_ratio": res["on"]["cpu_us_per_request"] / res["off"]["cpu_us_per_request"]}
                rows.append(row)
                print(f"  round {r + 1} ({'/'.join(order)}): off {res['off']['rps']:7.1f} req/s p99 "
                      f"{res['off']['p99_ms']:6.2f} ms | on {res['on']['rps']:7.1f} req/s p99 {res['on']['p99_ms']:6.2f} ms"
                      f" | rps x{row['rps_ratio']:.3f}, p99 x{row['p99_ratio']:.3f}, server CPU per request "
                      f"x{row['cpu_ratio']:.3f}")
            port_on = servers["on"][1]
            state = httpx.get(f"http://127.0.0.1:{port_on}/v2/models/{MODEL}/monitor").json()["versions"]["1"]["monitor"]
            report["rounds"] = rows
            report["median_rps_ratio"] = float(np.median([r["rps_ratio"] for r in rows]))
            report["median_p99_ratio"] = float(np.median([r["p99_ratio"] for r in rows]))
            report["median_cpu_per_request_ratio"] = float(np.median([r["cpu_ratio"] for r in rows]))
            report["monitor_worker_cpu_seconds"] = state["worker_cpu_seconds"]
            report["monitor_samples"] = state["samples"]
            report["drift_windows_tested"] = {k: v["windows"] for k, v in state["tensors"].items()}
        finally:
            for proc, _ in servers.values():
                stop(proc)
    s = report["monitor_samples"]
    print(f"median of the paired ratios: requests/s x{report['median_rps_ratio']:.3f} "
          f"({(report['median_rps_ratio'] - 1) * 100:+.1f}%), p99 x{report['median_p99_ratio']:.3f} "
          f"({(report['median_p99_ratio'] - 1) * 100:+.1f}%), server CPU per request x"
          f"{report['median_cpu_per_request_ratio']:.3f}")
    print(f"monitor: {s['sampled']} samples taken, {s['processed']} processed, {s['dropped']} dropped "
          f"(queue full); worker CPU {report['monitor_worker_cpu_seconds']:.1f} s; windows tested per tensor: "
          f"{report['drift_windows_tested']}")
    print(f"wrote {write_json(args.json, report)}")


if __name__ == "__main__":
    main()
