"""A Monitor's analysis in a process of its own (``Monitor(..., worker="process")``, what
``infercore serve`` uses where it can): the server's threads then never wait on the GIL for it.

Measured on ``infercore serve`` (benchmarks/monitor_overhead.py, docs/monitoring.md): a worker
*thread* doing this work raised the server's p99 by about 18% at 32 clients on a light model,
because its Python holds the GIL in stretches of milliseconds while requests wait; the same CPU
spent outside the GIL cost the p99 nothing. So the analysis runs in a child process
(``python -m infercore.monitor.worker``), and the request path only copies what
:meth:`.Featurizer.keep` kept into shared memory:

- **a ring** of ``_RING_BYTES`` (8 MiB) of shared memory (a memfd mapped by both processes): one
  record per sample (each tensor's name index, dtype, shape and bytes) or per label batch
  (pickled), and two counters, the bytes written and the bytes read. A record is written whole,
  then the written counter moves; when the ring lacks room the sample is dropped and counted, so a
  slow or stopped worker never blocks a request, and a request costs one copy and no system call.
  The child reads the ring every ``_DRAIN`` seconds (20 ms; sooner while it fills) into a queue of
  ``queue_size`` samples (while it is full, records wait in the ring: a sample is dropped, and
  counted, only by the request path, when the ring has no room).
  The counters rely on x86-64's store order (a record's bytes are visible before the counter that
  covers them, and read before the counter that frees them): elsewhere ``process`` is refused and
  ``infercore serve`` uses a thread.
- **a state slot** after the ring: the child publishes its state (pickled, behind a sequence
  counter) after every pass and every quarter second while it waits, so ``state()`` (``/monitor``,
  ``/metrics``, the dashboard) reads it without waiting on the child.
- **a control connection** (a socket pair): the profile and settings at start, ``flush`` and
  ``stop`` after.

The child runs at ``SCHED_IDLE`` (nice 19 where Linux refuses it): it takes the CPU serving leaves,
and the server's threads preempt it at once; on a server saturated for long it falls behind and
samples are dropped, counted. The child exits when the control connection closes (the parent
stopped, or died). A child that
dies is reported by ``state()["worker"]``, and every later sample is counted as dropped; requests
are never affected. Memory: a second Python process with numpy and scipy (about 60-80 MB resident),
the 8 MiB ring and the 1 MiB state slot.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import mmap
import os
import pickle
import platform
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from ..errors import MonitorWorkerError
from .analysis import BATCH, MAX_WAIT, MIN_BATCH, Analysis
from .profile import Profile

__all__ = ["ProcessLink", "supported"]

log = logging.getLogger("infercore.monitor")

_HEAD = struct.Struct("<IB")  # the record's length after this header, its kind
_SAMPLE, _LABELS, _WRAP = 0, 1, 2  # _WRAP: the rest of the ring is unused, go on from its start
_TENSOR = struct.Struct("<HBB")  # the tensor's index, the dtype string's length, ndim
_LAYOUT = "<HH"  # a sample's layout: its length in bytes, the tensors in it
_RING_BYTES = 8 << 20
_HEADER = 128  # the written counter at 0, the read counter at 64 (their own cache lines)
_STATE_BYTES = 1 << 20  # after the ring: the child's last state, pickled, behind a sequence counter
_DRAIN = 0.02  # seconds between the child's reads of the ring
_START_TIMEOUT = 60.0  # numpy, scipy and the profile on a loaded machine
_PUBLISH = 0.25  # seconds between the child's state updates while it waits


def supported() -> str:
    """Why ``worker="process"`` cannot run here, or "" when it can."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return f"the shared-memory ring relies on x86-64's store order; this machine is {platform.machine()}"
    if not hasattr(os, "memfd_create"):
        return "it needs os.memfd_create (Linux)"
    return ""


def _ring(fd: int) -> tuple[mmap.mmap, np.ndarray, np.ndarray, np.ndarray]:
    m = mmap.mmap(fd, _HEADER + _RING_BYTES + _STATE_BYTES)
    counters = np.frombuffer(m, np.int64, _HEADER // 8)  # [0]: written, [8]: read
    data = np.frombuffer(m, np.uint8, _RING_BYTES, _HEADER)
    slot = np.frombuffer(m, np.uint8, _STATE_BYTES, _HEADER + _RING_BYTES)  # [sequence, length] int64, then bytes
    return m, counters, data, slot


def _publish(slot: np.ndarray, state: dict[str, Any]) -> None:
    """The child's side of a sequence lock: odd while it writes (x86-64 keeps stores in order)."""
    blob = np.frombuffer(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL), np.uint8)
    if blob.size > _STATE_BYTES - 16:
        return  # not expected (a state is a few KB): the parent keeps the last one
    head = slot[:16].view(np.int64)
    head[0] += 1
    slot[16 : 16 + blob.size] = blob
    head[1] = blob.size
    head[0] += 1


def _read_state(slot: np.ndarray) -> dict[str, Any] | None:
    """The parent's side: a consistent copy of the last state published, or None before the first."""
    head = slot[:16].view(np.int64)
    for _ in range(1000):
        seq = int(head[0])
        if seq == 0:
            return None
        if seq % 2:
            time.sleep(0.0001)
            continue
        size = int(head[1])
        blob = slot[16 : 16 + size].tobytes()
        if int(head[0]) == seq:  # x86-64 does not reorder loads with loads
            state: dict[str, Any] = pickle.loads(blob)
            return state
    return None


class ProcessLink:
    """The parent's end: starts the child, writes samples and labels, asks for its state."""

    def __init__(self, profile: Profile, settings: Mapping[str, Any], queue_size: int, name: str = "") -> None:
        self.name = name
        self._names = {n: i for i, n in enumerate(settings["names"])}
        why = supported()
        if why:
            raise MonitorWorkerError(f"a monitor's worker process is not available here: {why}")
        mem_fd = os.memfd_create("infercore-monitor")
        ours, theirs = socket.socketpair()
        try:
            os.ftruncate(mem_fd, _HEADER + _RING_BYTES + _STATE_BYTES)
            self._mmap, self._counters, self._data, self._slot = _ring(mem_fd)
            self._data[:] = 0  # fault the pages in now, not on the request path
            env = dict(os.environ)
            env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
            cmd = [sys.executable, "-m", "infercore.monitor.worker", str(mem_fd), str(theirs.fileno())]
            self._proc = subprocess.Popen(cmd, pass_fds=(mem_fd, theirs.fileno()), env=env, stdin=subprocess.DEVNULL)
        finally:
            os.close(mem_fd)
            theirs.close()
        self._ctl = Connection(ours.detach())
        self._written = 0
        self._records = 0  # records offered: the child's liveness is checked every 256
        self._lock = threading.Lock()  # one writer at a time: records stay whole
        self.broken = ""  # why samples can no longer be sent, once they cannot
        self._last: dict[str, Any] | None = None
        try:
            self._ctl.send({"profile": profile, "settings": dict(settings), "queue_size": queue_size})
            if not self._ctl.poll(_START_TIMEOUT):
                raise MonitorWorkerError(f"the monitor's worker process did not start within {_START_TIMEOUT:.0f} s")
            hello = self._ctl.recv()
        except (OSError, EOFError) as e:
            self._kill()
            raise MonitorWorkerError(f"the monitor's worker process failed to start: {e}") from e
        except BaseException:
            self._kill()
            raise
        if "error" in hello:
            self._kill()
            raise MonitorWorkerError(f"the monitor's worker process failed to start: {hello['error']}")
        self.constants: tuple[int, float, float] = hello["constants"]

    # -- the request path ------------------------------------------------------------------------
    def send_sample(self, kept: Mapping[str, np.ndarray]) -> bool:
        """One record: the tensors' layout (index, dtype, shape each), then their bytes. Requests of
        one shape write the same layout, which the child reads as one strided batch."""
        meta: list[bytes] = []
        blobs: list[Any] = []
        for name, a in kept.items():
            if a.dtype.kind not in "biuf":  # nothing to featurize: the thread worker would skip it too
                continue
            a = np.ascontiguousarray(a)
            code = a.dtype.str.encode()
            meta.append(_TENSOR.pack(self._names[name], len(code), a.ndim) + code + struct.pack(f"<{a.ndim}q", *a.shape))
            blobs.append(a.reshape(-1).view(np.uint8))
        layout = b"".join(meta)
        return self._send(_SAMPLE, [struct.pack(_LAYOUT, len(layout), len(meta)) + layout, *blobs])

    def send_labels(self, item: tuple[np.ndarray, np.ndarray]) -> bool:
        return self._send(_LABELS, [pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)])  # rare: pickled

    def _send(self, kind: int, parts: list[Any]) -> bool:
        size = sum(len(p) for p in parts)  # bytes, and uint8 arrays
        total = _HEAD.size + size
        if total > _RING_BYTES // 4:
            return False  # a sample this large would crowd the ring: not monitored
        with self._lock:
            self._records += 1
            if self._records % 256 == 0 and not self.broken and self._proc.poll() is not None:
                self.broken = f"the worker process exited with code {self._proc.returncode}"
            if self.broken:
                return False
            w = self._written
            # samples leave a quarter of the ring to labels, which are few and count for more
            free = _RING_BYTES - (w - int(self._counters[8])) - (_RING_BYTES // 4 if kind == _SAMPLE else 0)
            off = w % _RING_BYTES
            tail = _RING_BYTES - off
            if total > tail:  # the record does not fit before the end: skip the tail
                if free < tail + total:
                    return False
                if tail >= _HEAD.size:
                    self._data[off : off + _HEAD.size] = np.frombuffer(_HEAD.pack(tail - _HEAD.size, _WRAP), np.uint8)
                w += tail
                off = 0
            elif free < total:
                return False
            data = self._data
            data[off : off + _HEAD.size] = np.frombuffer(_HEAD.pack(size, kind), np.uint8)
            pos = off + _HEAD.size
            for p in parts:
                n = len(p)
                data[pos : pos + n] = p if isinstance(p, np.ndarray) else np.frombuffer(p, np.uint8)
                pos += n
            self._written = w + total
            self._counters[0] = self._written  # after the record's bytes (x86-64 keeps stores in order)
        return True

    # -- reading ---------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """The child's last published state (it publishes after every pass, and every quarter
        second while it waits), read from shared memory: never waits on the child."""
        problem = f"exited with code {self._proc.returncode}" if self._proc.poll() is not None else ""
        if problem and not self.broken:
            with self._lock:  # later samples are dropped and counted, not lost in the ring
                self.broken = self.broken or f"the worker process {problem}"
        st = _read_state(self._slot) or self._last or _empty()
        self._last = st
        st = {**st, "process": {"pid": self._proc.pid, "alive": not problem, **({"problem": problem} if problem else {})}}
        if self.broken:
            st["process"]["problem"] = self.broken
        return st

    def flush(self, samples: int, labels: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with contextlib.suppress(OSError, EOFError):
            self._ctl.send("flush")  # process what is queued now, without waiting for a full batch
        while True:
            st = self.state()
            if not st["process"]["alive"]:
                raise RuntimeError(f"monitor: the worker process {st['process']['problem']}")
            if st["processed"] >= samples and st["labels_done"] >= labels:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"monitor: {samples - st['processed']} samples still queued after {timeout} s")
            time.sleep(0.005)

    def close(self, timeout: float = 10.0) -> None:
        """Stop the child after it processes what the ring holds, and wait for it."""
        with self._lock:
            if not self.broken:
                self.broken = "the monitor is closed"
        with contextlib.suppress(OSError, EOFError):
            self._ctl.send("stop")
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._kill()
        with contextlib.suppress(OSError):
            self._ctl.close()

    def _kill(self) -> None:
        with contextlib.suppress(OSError):
            self._proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(5)


def _empty() -> dict[str, Any]:
    return {"processed": 0, "labels_done": 0, "errors": 0, "tensors": {}, "quality": None, "cpu_seconds": 0.0,
            "queued": 0, "received": 0}


# -- the child -------------------------------------------------------------------------------------
class _Inbox:
    """The child's reading of the ring: batches of samples and labels, for its main loop. Records
    of one layout written one after another are read as one strided view of the ring, copied once:
    a run of requests costs a few numpy calls, not a few per request."""

    def __init__(self, mem_fd: int, names: Sequence[str], batched: Mapping[str, bool], queue_size: int) -> None:
        self._mmap, self._counters, self._data, self.slot = _ring(mem_fd)
        self.names = list(names)
        self.batched = dict(batched)  # whether the tensor's first axis holds samples
        self.queue_size = queue_size
        self.samples: collections.deque[tuple[int, dict[str, np.ndarray]]] = collections.deque()  # (requests, tensors)
        self.queued = 0
        self.labels: collections.deque[tuple[np.ndarray, np.ndarray]] = collections.deque()
        self.received = 0

    def drain(self) -> int:
        """Take the records written so far, as many samples as the queue has room for (the rest
        wait in the ring, so a full queue makes the parent drop and count, once); the bytes read."""
        r = int(self._counters[8])
        w = int(self._counters[0])
        start = r
        data = self._data
        run: tuple[bytes, int, int] | None = None  # (layout, first record's offset, record size)
        count = 0
        room = self.queue_size - self.queued
        while r < w:
            off = r % _RING_BYTES
            tail = _RING_BYTES - off
            kind = _WRAP
            if tail >= _HEAD.size:
                size, kind = _HEAD.unpack(data[off : off + _HEAD.size].tobytes())
            if kind == _WRAP:
                self._take(run, count)
                run, count = None, 0
                r += tail
                continue
            body = off + _HEAD.size
            if kind == _SAMPLE:
                if room <= 0:
                    break
                room -= 1
                self.received += 1
                layout_len, _ = struct.unpack(_LAYOUT, data[body : body + 4].tobytes())
                layout = data[body : body + 4 + layout_len].tobytes()
                if run is not None and layout == run[0] and size == run[2] and off == run[1] + count * (_HEAD.size + size):
                    count += 1
                else:
                    self._take(run, count)
                    run, count = (layout, off, size), 1
            else:
                self._take(run, count)
                run, count = None, 0
                if kind == _LABELS:
                    self.labels.append(pickle.loads(data[body : body + size].tobytes()))
            r += _HEAD.size + size
        self._take(run, count)
        self._counters[8] = r  # after the copies (x86-64 does not move loads past later stores)
        return r - start

    def _take(self, run: tuple[bytes, int, int] | None, count: int) -> None:
        """Copy ``count`` records of one layout out of the ring (those the queue has room for)."""
        if run is None or not count:
            return
        layout, first, size = run
        (_, tensors), pos = struct.unpack_from(_LAYOUT, layout), 4
        at = _HEADER + first + _HEAD.size + len(layout)  # the first tensor's bytes, in the mapping
        stride = _HEAD.size + size
        out: dict[str, np.ndarray] = {}
        whole = True
        for _ in range(tensors):
            index, code_len, ndim = _TENSOR.unpack_from(layout, pos)
            pos += _TENSOR.size
            dtype = _dtype(layout[pos : pos + code_len])
            pos += code_len
            shape = struct.unpack_from(f"<{ndim}q", layout, pos)
            pos += 8 * ndim
            nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            inner = tuple(int(np.prod(shape[i + 1 :], dtype=np.int64)) * dtype.itemsize for i in range(ndim))
            view = np.ndarray((count, *shape), dtype, buffer=self._mmap, offset=at, strides=(stride, *inner))
            name = self.names[index]
            if self.batched.get(name, False) and ndim >= 1:
                out[name] = view.reshape(count * shape[0], *shape[1:]) if count > 1 else view[0].copy()
            else:
                whole = False
                out[name] = view.copy()  # [requests, ...]: split below
            at += nbytes
        # reshape of a strided view copies it; a request's own samples stay together
        out = {k: (v if v.base is None or v.flags.owndata else v.copy()) for k, v in out.items()}
        if whole:
            self.samples.append((count, out))
        else:
            for i in range(count):
                self.samples.append((1, {k: (v[i] if not self.batched.get(k, False) or v.ndim == 0 else
                                             v[i * (v.shape[0] // count) : (i + 1) * (v.shape[0] // count)])
                                         for k, v in out.items()}))
        self.queued += count


@functools.lru_cache(maxsize=64)
def _dtype(code: bytes) -> np.dtype[Any]:
    return np.dtype(code.decode())


def _yield_cpu() -> None:
    """Run on the CPU that serving leaves: SCHED_IDLE where Linux allows it (the server's threads
    preempt it at once), else nice 19."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        with contextlib.suppress(OSError):
            os.nice(19)


def _child(mem_fd: int, ctl_fd: int) -> None:
    _yield_cpu()
    ctl = Connection(ctl_fd)
    init = ctl.recv()
    try:
        settings = init["settings"]
        analysis = Analysis(init["profile"], **settings)
        batched = {n: tw.t.featurizer.batched for n, tw in analysis.windows.items()}
        inbox = _Inbox(mem_fd, settings["names"], batched, int(init["queue_size"]))
    except Exception as e:  # a profile this process cannot use: say so to the parent
        ctl.send({"error": f"{type(e).__name__}: {e}"})
        return
    ctl.send({"constants": (analysis.tests_per_window, analysis.cusum_k, analysis.cusum_h)})
    pending = select.poll()  # Connection.poll builds a selector per call: too dear 50 times a second
    pending.register(ctl_fd, select.POLLIN)
    min_batch = min(MIN_BATCH, max(inbox.queue_size // 2, 1))
    stopping = hurry = False
    since = None
    published = 0.0

    def publish() -> None:
        nonlocal published
        _publish(inbox.slot, {**analysis.state(), "cpu_seconds": time.process_time(), "queued": inbox.queued,
                              "received": inbox.received})
        published = time.monotonic()

    publish()
    while True:
        try:
            while pending.poll(0):
                request = ctl.recv()
                stopping |= request == "stop"
                hurry |= request == "flush"
        except (OSError, EOFError):
            return  # the parent is gone
        read = inbox.drain()
        if not inbox.samples and not inbox.labels:
            hurry = False
            if stopping:
                publish()
                return
            if time.monotonic() - published > _PUBLISH:
                publish()
            time.sleep(_DRAIN)
            since = None
            continue
        now = time.monotonic()
        since = since or now
        if inbox.queued < min_batch and not inbox.labels and now - since < MAX_WAIT and not (stopping or hurry):
            time.sleep(_DRAIN if read < _RING_BYTES // 4 else _DRAIN / 10)
            continue
        since = None
        labels = []
        while inbox.labels:
            labels.append(inbox.labels.popleft())
        samples: list[dict[str, np.ndarray]] = []
        taken = 0
        while inbox.samples and taken < BATCH:
            count, tensors = inbox.samples.popleft()
            samples.append(tensors)
            taken += count
        inbox.queued -= taken
        analysis.run(samples, labels, count=taken)
        publish()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s infercore-monitor-worker %(levelname)s %(message)s")
    _child(int(sys.argv[1]), int(sys.argv[2]))
