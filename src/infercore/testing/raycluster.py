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
``serve deploy`` need it). ``pin_workers=True`` confines each worker node (``ray start`` and every
process below it: raylet, replicas) to one core of this process's CPUs, in turn, as a node of one
CPU has one: Ray's ``num_cpus`` is a count for its scheduler, and a replica's process otherwise
runs its threads on every core of the machine.
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
    """``nodes`` Ray nodes of ``cpus_per_node`` CPUs each on 127.0.0.1 (the head: ``head_cpus``,
    if given); see the module docstring.

    Each node's processes run in a session of their own, as on separate machines started from
    their own shells: where Linux's autogroup scheduling is on (the default on desktop and many
    server kernels), a busy machine gives each node an equal share of its cores."""

    def __init__(
        self,
        nodes: int = 2,
        cpus_per_node: int = 1,
        *,
        head_cpus: int | None = None,
        dashboard: bool = False,
        object_store_mb: int = 100,
        start_timeout: float = 120.0,
        env: dict[str, str] | None = None,
        pin_workers: bool = False,
    ) -> None:
        if nodes < 1:
            raise ValueError(f"nodes must be >= 1, got {nodes}")
        self.nodes = nodes
        self.cpus_per_node = cpus_per_node
        # the head's CPUs for tasks and replicas; 0: a head that only runs Ray's own processes (the
        # GCS, Serve's controller and HTTP proxy), as production clusters are often laid out
        self.head_cpus = cpus_per_node if head_cpus is None else head_cpus
        self.dashboard = dashboard
        self.object_store_mb = object_store_mb
        self.start_timeout = start_timeout
        self.env = ray_env(**(env or {}))
        self.pin_workers = pin_workers
        self.pinned: dict[str, int] = {}  # "worker1" -> its core, with pin_workers
        self.address = ""
        self.dashboard_url = ""
        self.temp_dir: Path | None = None
        self._procs: list[subprocess.Popen[bytes]] = []
        self._logs: dict[int, Path] = {}
        self._groups: list[int] = []  # the process groups of the nodes started, failed ones too
        self._started = 0.0
        self._ray = str(Path(sys.executable).with_name("ray"))

    # -- start ----------------------------------------------------------------------------------
    def start(self) -> LocalRayCluster:
        self._started = time.time()
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
            self._start_node(head, "head", self.head_cpus)
            exited = self._wait_for_nodes(1)
            if exited is not None:
                raise self._exit_error(exited)
            for i in range(1, self.nodes):
                for attempt in range(1, 4):
                    proc = self._start_node(
                        ["--address", self.address], f"worker{i}.{attempt}", self.cpus_per_node, core=i - 1
                    )
                    exited = self._wait_for_nodes(i + 1)
                    if exited is None:
                        break
                    # on a busy machine the GCS can miss a joining node's deadline: start it again
                    if attempt == 3 or exited is not proc:
                        raise self._exit_error(exited)
                    self._procs.remove(proc)
                    self._kill_group(proc.pid)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_node(
        self, role: list[str], name: str, cpus: float, core: int | None = None
    ) -> subprocess.Popen[bytes]:
        assert self.temp_dir is not None
        cmd = [self._ray, "start", "--block", *role, "--node-ip-address", "127.0.0.1"]
        cmd += ["--num-cpus", str(int(cpus)), "--num-gpus", "0"]  # ray start takes whole CPUs
        cmd += ["--object-store-memory", str(self.object_store_mb << 20), "--disable-usage-stats"]
        cmd += ["--dashboard-agent-listen-port", str(free_port())]
        cmd += ["--dashboard-agent-grpc-port", str(free_port())]
        cmd += ["--runtime-env-agent-port", str(free_port())]
        cmd += ["--metrics-export-port", str(free_port())]
        cmd += ["--node-manager-port", str(free_port()), "--object-manager-port", str(free_port())]
        if self.pin_workers and core is not None:
            allowed = sorted(os.sched_getaffinity(0))
            cpu = allowed[core % len(allowed)]
            self.pinned[name.split(".")[0]] = cpu  # a node started again keeps its core
            # set in the child before it runs Ray: everything the node starts inherits it
            pin = f"import os, sys; os.sched_setaffinity(0, {{{cpu}}}); os.execv(sys.argv[1], sys.argv[1:])"
            cmd = [sys.executable, "-c", pin, *cmd]
        log = self.temp_dir / f"{name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
            )
        self._procs.append(proc)
        self._logs[proc.pid] = log
        self._groups.append(proc.pid)  # a new session: its process group is its pid
        return proc

    def _exit_error(self, proc: subprocess.Popen[bytes]) -> RuntimeError:
        return RuntimeError(f"ray start exited with {proc.returncode}: {self._tail(self._logs[proc.pid])}")

    def _wait_for_nodes(self, n: int) -> subprocess.Popen[bytes] | None:
        """Until ``n`` nodes are alive (asked of the GCS by a short-lived ``ray status``); a node's
        ``ray start`` that exited meanwhile is returned instead."""
        deadline = time.monotonic() + self.start_timeout
        while True:
            for proc in self._procs:
                if proc.poll() is not None:
                    return proc
            status = subprocess.run(
                [self._ray, "status", "--address", self.address],
                capture_output=True,
                text=True,
                env=self.env,
                timeout=60,
            )
            if status.returncode == 0 and _alive_nodes(status.stdout) >= n:
                return None
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
        for group in self._groups:  # what left its parent (an orphan of a node that failed to start)
            self._kill_group(group)
        for proc in self._procs:
            with contextlib.suppress(Exception):
                proc.wait(5)
        self._procs.clear()
        self._groups.clear()
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            self.temp_dir = None

    def _kill_group(self, group: int) -> None:
        """SIGKILL the processes of process group ``group`` that started after this cluster did
        (a recycled group id is someone else's: its processes are older or not ours to kill)."""
        import psutil

        for p in psutil.process_iter(["pid", "create_time"]):
            try:
                if os.getpgid(p.pid) == group and p.info["create_time"] >= self._started - 1:
                    p.kill()
            except (psutil.Error, ProcessLookupError, PermissionError):
                pass

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
