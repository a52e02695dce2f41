"""A real Ray cluster on this machine, for tests and benchmarks: a head node and worker nodes, each
started by ``ray start --block`` in its own process, on loopback, and stopped by killing exactly the
processes this cluster started.

    with LocalRayCluster(nodes=2, cpus_per_node=1) as cluster:
        ray.init(address=cluster.address)
        ...

Every node listens on 127.0.0.1 only, on ports picked free (no Ray default port is taken, so two
clusters on one machine do not collide), with usage stats off, a small object store, and its own
temporary directory. ``ray stop`` is not used to tear down: it stops every Ray process on the
machine, other people's clusters included. ``stop()`` (also on ``__exit__``) ends each node's
``ray start`` and the processes below it (GCS, raylets, workers), SIGTERM then SIGKILL, and removes
the temporary directory. The dashboard stays off unless ``dashboard=True`` (the state API and
``serve deploy`` need it).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["LocalRayCluster", "free_port", "ray_env"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ray_env(**extra: str) -> dict[str, str]:
    """The environment for Ray processes and drivers: usage stats off, no colour, no banner."""
    env = dict(os.environ)
    # RAY_AUTH_MODE: Ray 2.60 turns token authentication on for `ray start` and writes the token to
    # ~/.ray/auth_token; a loopback-only cluster of our own does without it
    env.update(
        RAY_USAGE_STATS_ENABLED="0",
        RAY_AUTH_MODE="disabled",
        RAY_DISABLE_DOCKER_CPU_WARNING="1",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


class LocalRayCluster:
    """``nodes`` Ray nodes of ``cpus_per_node`` CPUs each on 127.0.0.1 (see the module docstring)."""

    def __init__(
        self,
        nodes: int = 2,
        cpus_per_node: float = 1,
        *,
        dashboard: bool = False,
        object_store_mb: int = 100,
        start_timeout: float = 120.0,
        env: dict[str, str] | None = None,
    ) -> None:
        if nodes < 1:
            raise ValueError(f"nodes must be >= 1, got {nodes}")
        self.nodes = nodes
        self.cpus_per_node = cpus_per_node
        self.dashboard = dashboard
        self.object_store_mb = object_store_mb
        self.start_timeout = start_timeout
        self.env = ray_env(**(env or {}))
        self.address = ""
        self.dashboard_url = ""
        self.temp_dir: Path | None = None
        self._procs: list[subprocess.Popen[bytes]] = []
        self._logs: list[Path] = []
        self._ray = str(Path(sys.executable).with_name("ray"))

    # -- start ----------------------------------------------------------------------------------
    def start(self) -> LocalRayCluster:
        # short: Ray puts Unix sockets under it, and their paths are limited to 107 bytes
        self.temp_dir = Path(tempfile.mkdtemp(prefix="icray-", dir="/tmp"))
        try:
            port = free_port()
            self.address = f"127.0.0.1:{port}"
            head = ["--head", "--port", str(port), "--temp-dir", str(self.temp_dir)]
            head += ["--ray-client-server-port", str(free_port())]
            if self.dashboard:
                dport = free_port()
                head += ["--include-dashboard", "true", "--dashboard-host", "127.0.0.1"]
                head += ["--dashboard-port", str(dport)]
                self.dashboard_url = f"http://127.0.0.1:{dport}"
            else:
                head += ["--include-dashboard", "false"]
            self._start_node(head, "head")
            self._wait_for_nodes(1)
            for i in range(1, self.nodes):
                self._start_node(["--address", self.address], f"worker{i}")
            self._wait_for_nodes(self.nodes)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_node(self, role: list[str], name: str) -> None:
        assert self.temp_dir is not None
        cmd = [self._ray, "start", "--block", *role, "--node-ip-address", "127.0.0.1"]
        cmd += ["--num-cpus", str(self.cpus_per_node), "--num-gpus", "0"]
        cmd += ["--object-store-memory", str(self.object_store_mb << 20), "--disable-usage-stats"]
        cmd += ["--dashboard-agent-listen-port", str(free_port())]
        cmd += ["--dashboard-agent-grpc-port", str(free_port())]
        cmd += ["--runtime-env-agent-port", str(free_port())]
        cmd += ["--metrics-export-port", str(free_port())]
        cmd += ["--node-manager-port", str(free_port()), "--object-manager-port", str(free_port())]
        log = self.temp_dir / f"{name}.log"
        self._logs.append(log)
        with open(log, "wb") as out:
            self._procs.append(
                subprocess.Popen(
                    cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
                )
            )

    def _wait_for_nodes(self, n: int) -> None:
        """Until ``n`` nodes are alive (asked of the GCS by a short-lived ``ray status``)."""
        deadline = time.monotonic() + self.start_timeout
        while True:
            for proc, log in zip(self._procs, self._logs, strict=True):
                if proc.poll() is not None:
                    raise RuntimeError(f"ray start exited with {proc.returncode}: {self._tail(log)}")
            status = subprocess.run(
                [self._ray, "status", "--address", self.address],
                capture_output=True,
                text=True,
                env=self.env,
                timeout=60,
            )
            if status.returncode == 0 and _alive_nodes(status.stdout) >= n:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{n} Ray node(s) not up after {self.start_timeout:.0f} s: {status.stdout[-800:]}"
                    f"{status.stderr[-800:]}"
                )
            time.sleep(0.5)

    @staticmethod
    def _tail(log: Path) -> str:
        try:
            return log.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    # -- stop -----------------------------------------------------------------------------------
    def processes(self) -> list[Any]:
        """Every live process this cluster started: each ``ray start`` and all below it."""
        import psutil

        found: dict[int, Any] = {}
        for proc in self._procs:
            try:
                top = psutil.Process(proc.pid)
                for p in [top, *top.children(recursive=True)]:
                    found[p.pid] = p
            except psutil.NoSuchProcess:
                pass
        return list(found.values())

    def stop(self, timeout: float = 15.0) -> None:
        """Kill what this cluster started (SIGTERM, then SIGKILL after ``timeout``); idempotent."""
        import psutil

        procs = self.processes()
        for p in procs:
            with contextlib.suppress(psutil.Error):
                p.send_signal(signal.SIGTERM)
        _, alive = psutil.wait_procs(procs, timeout=timeout)
        # what started meanwhile (a worker forked while the raylet stopped) is below them too
        alive += [p for p in self.processes() if p.pid not in {q.pid for q in alive}]
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(alive, timeout=10)
        for proc in self._procs:
            with contextlib.suppress(Exception):
                proc.wait(5)
        self._procs.clear()
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            self.temp_dir = None

    def __enter__(self) -> LocalRayCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _alive_nodes(status: str) -> int:
    """The number of active nodes in ``ray status`` output (lines under "Active:")."""
    lines = status.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Active:")
    except StopIteration:
        return 0
    n = 0
    for line in lines[start + 1 :]:
        s = line.strip()
        if not s or s.endswith(":"):
            break
        if "node_" in s:
            n += 1
    return n
