"""How a model's cores are split across engines, and a short probe that picks the split.

Runtimes fix their intra-op threads when a session (or compiled model) is made, and no one split
of the cores is best at every load: a request that is alone runs fastest with every core, while
under concurrent load several narrow engines side by side give more items/s than one wide one
(MiniLM on 2 cores: two 1-thread sessions 91 items/s, one 2-thread session 70). A ``Layout``
therefore names two kinds of engine over one core budget:

- ``instances`` engines of ``threads`` threads each, that run batches under concurrent load;
- optionally one engine of ``lone_threads`` threads (all the cores), that runs a request which
  arrives when nothing else is queued or running.

The ``Batcher`` never runs engines whose threads add up to more than ``cores`` at once: the lone
engine runs only while the others are idle, and they wait for it to finish.

``probe_layout`` measures the real model on this machine, within a few seconds: batch 1 on the
wide engine against a narrow one (alternating runs), then items/s at batch 1, 2, 4, ... for the
narrow engines side by side and the wide engine alone (paired per size, so that drift on a shared
host hits both alike), and picks the layout and the batch size where items/s peaks. Runs are timed
by their fastest fifth for items/s and by their fastest run for a lone request (other processes
only ever add time, and they slow an engine that needs all its cores at once the most); /proc/stat
says how much of the cores other processes took meanwhile, for the record. The Batcher times both
engines as it serves and routes each lone request to the one that is faster then.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .arguments import check_int
from .engine import Engine
from .errors import ArgumentError

__all__ = [
    "PROBE_SECONDS",
    "REPROBE_SECONDS",
    "SHORT_QUEUE",
    "Layout",
    "MeasureStopped",
    "available_cores",
    "probe_layout",
    "remeasure_batch",
    "rss_mb",
]

log = logging.getLogger(__name__)

PROBE_SECONDS = 3.0
"""The probe's time budget (seconds of measuring; opening the engines comes on top)."""
REPROBE_SECONDS = 1.0
"""The budget of ``remeasure_batch``: the batch size again, on the shapes a model is served."""
MAX_INSTANCES = 8
"""At most this many narrow engines: on more cores each gets several threads (memory grows with
every engine)."""

_WINDOW = 0.12  # seconds per measured point, at least _MIN_RUNS runs
_MIN_RUNS = 2
_LONG_BATCH = 0.25  # a batch that takes longer ends the climb in batch size
_LONE_GAIN = 0.9  # the lone engine is kept when its fastest batch of 1 takes <= this x a narrow one's
_WIDE_GAIN = 1.1  # the wide engine runs the load alone only when its items/s beat the narrow ones' by
#                   this much: side by side 1-thread streams are a CPU's best throughput as a rule
#                   (OpenVINO's throughput hint makes one per core), and on a busy host a
#                   multi-threaded engine loses more
_QUANTILE = 0.2  # runs are timed by their fastest fifth (see _rate)
_PEAK = 0.99  # the batch size picked is the largest whose items/s is within 1% of the best
SHORT_QUEUE = 0.9
"""``Layout.short_batch`` is the smallest batch size whose items/s is within this of the best."""


def available_cores(cgroup: str | os.PathLike[str] = "/sys/fs/cgroup") -> int:
    """The cores this process may use: its CPU affinity (else ``os.cpu_count()``), capped by its
    container's CPU quota (cgroup v2 ``cpu.max``, v1 ``cpu/cpu.cfs_quota_us``), rounded up.

    A container limited to 2 CPUs on a 64-core host sees 64 in its affinity; threads sized from that
    would be throttled by the quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    root = Path(cgroup)
    quota = period = 0
    try:
        quota_text, period_text = (root / "cpu.max").read_text().split()[:2]
        if quota_text != "max":
            quota, period = int(quota_text), int(period_text)
    except (OSError, ValueError):
        try:
            quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
            if quota > 0:
                period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            quota = 0
    if quota > 0 and period > 0:
        cpus = min(cpus, math.ceil(quota / period))
    return max(1, cpus)


def _cpu_seconds() -> tuple[float, float] | None:
    """(busy seconds of every CPU on the host, of this process) from /proc, or None without /proc."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    tick = os.sysconf("SC_CLK_TCK")
    busy = sum(fields[:8]) - fields[3] - fields[4]  # all but idle and iowait (guest is inside user)
    own = os.times()
    return busy / tick, own.user + own.system


class _Contention:
    """How much of the probed cores other processes took while the probe measured (/proc/stat:
    the host's busy CPU time less this process's own)."""

    def __init__(self, cores: int) -> None:
        self.cores = cores
        self.t0 = time.perf_counter()
        self.start = _cpu_seconds()

    def share(self) -> float | None:
        """Their share of our cores since construction, for the record (2 decimals), or None."""
        end = _cpu_seconds()
        wall = time.perf_counter() - self.t0
        if self.start is None or end is None or wall <= 0:
            return None
        others = (end[0] - self.start[0]) - (end[1] - self.start[1])
        spare = max(0, (os.cpu_count() or self.cores) - self.cores)  # CPUs beyond ours they may use
        return round(max(0.0, min(1.0, (others / wall - spare) / self.cores)), 2)


def rss_mb() -> float | None:
    """This process's resident memory in MiB (from /proc), or None where there is no /proc."""
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / (1 << 20)


@dataclass(frozen=True)
class Layout:
    """A model's engines over ``cores`` cores (see the module docstring).

    ``instances`` engines of ``threads`` threads run batches under load; ``lone_threads`` (None:
    no such engine) is the engine for a request that is alone. ``batch_size``: the batch size
    where the load engines' items/s peaks, used as the preferred batch size (None: no
    preference). ``short_batch``: the smallest batch size whose items/s is within 10% of the best
    (``SHORT_QUEUE``), preferred while the queue holds less than ``batch_size`` items per load
    engine: at a moderate load, a batch that costs the engines little of their items/s keeps a
    request from waiting on a whole larger batch (MiniLM, 4 clients over HTTP: p99 49 ms preferring
    batch 1, 58 preferring 2; at 32 clients batch 1 throughout gave 8% fewer items/s). ``source``:
    ``"probe"``, ``"probe, reused"`` (a reload of the same file and config), ``"given"`` or
    ``"fallback"`` (the probe failed); ``probe``: what the probe measured, for the record
    (``/stats``, logs).
    """

    cores: int
    instances: int
    threads: int
    lone_threads: int | None = None
    batch_size: int | None = None
    source: str = "given"
    probe: Mapping[str, Any] = field(default_factory=dict, compare=False)
    short_batch: int | None = None

    def __post_init__(self) -> None:
        check_int("cores", self.cores)
        check_int("instances", self.instances)
        check_int("threads", self.threads)
        check_int("lone_threads", self.lone_threads, optional=True)
        check_int("batch_size", self.batch_size, optional=True)
        check_int("short_batch", self.short_batch, optional=True)
        if self.instances * self.threads > self.cores:
            raise ArgumentError(
                "instances",
                f"{self.instances} engines x {self.threads} threads need {self.instances * self.threads} "
                f"cores, more than cores={self.cores}: they would run at once on fewer cores than threads",
            )
        if self.lone_threads is not None and self.lone_threads > self.cores:
            raise ArgumentError("lone_threads", f"{self.lone_threads} is more than cores={self.cores}")

    @property
    def engines(self) -> int:
        return self.instances + (self.lone_threads is not None)

    def describe(self) -> str:
        """One line: ``"lone request: 1 x 2 threads; under load: 2 x 1 thread, batch 4 (probe 2.1 s)"``."""
        def engines(n: int, t: int) -> str:
            return f"{n} x {t} thread{'s' if t > 1 else ''}"

        parts = []
        if self.lone_threads is not None:
            parts.append(f"lone request: {engines(1, self.lone_threads)}")
        load = f"{'under load' if parts else 'engines'}: {engines(self.instances, self.threads)}"
        if self.batch_size is not None:
            load += f", batch {self.batch_size}"
            if self.short_batch is not None and self.short_batch < self.batch_size:
                load += f" ({self.short_batch} on a short queue)"
        parts.append(load)
        how = self.source
        if "seconds" in self.probe:
            how += f" {self.probe['seconds']:.1f} s"
        return "; ".join(parts) + f" ({how})"

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able values: the layout and, under ``probe``, what was measured."""
        out = asdict(self)
        out["probe"] = dict(self.probe)
        out["summary"] = self.describe()
        return out


# -- the probe -----------------------------------------------------------------------------------
class MeasureStopped(Exception):
    """``remeasure_batch`` was asked to stop (its ``stop()`` returned True) before it finished."""


def _narrow_threads(cores: int) -> int:
    return max(1, math.ceil(cores / MAX_INSTANCES))


class _Clock:
    def __init__(self, seconds: float) -> None:
        self.t0 = time.perf_counter()
        self.end = self.t0 + seconds

    @property
    def left(self) -> float:
        return self.end - time.perf_counter()

    @property
    def spent(self) -> float:
        return time.perf_counter() - self.t0


def _repeat(feeds: Mapping[str, np.ndarray], b: int) -> dict[str, np.ndarray]:
    return {k: np.ascontiguousarray(np.repeat(v[:1], b, axis=0)) for k, v in feeds.items()}


def _runner(engine: Engine, feeds: Mapping[str, np.ndarray], b: int) -> Any:
    """Bound I/O of ``engine`` for a batch of ``b`` copies of the request, filled."""
    batch = _repeat(feeds, b)
    io = engine.bind({k: v.shape for k, v in batch.items()})
    for k, v in batch.items():
        io.inputs[k][...] = v
    return io


def _rate(
    ios: Sequence[Any], b: int, window: float, stop: Callable[[], bool] | None = None
) -> tuple[float, float]:
    """Items/s of ``ios`` run side by side (one thread each, back to back for ``window`` seconds,
    at least _MIN_RUNS runs each), and the median seconds of one run. ``stop()`` True after a
    run: MeasureStopped.

    Each engine's rate is taken from its fastest fifth of runs: other processes on a shared host
    only ever add time (a run preempted halfway), and the engines' own contention with each other
    is in every run alike."""
    times: list[list[float]] = [[] for _ in ios]
    start = threading.Barrier(len(ios))
    stopped = threading.Event()

    def stream(i: int) -> None:
        io, own = ios[i], times[i]
        start.wait()
        end = time.perf_counter() + window
        t = time.perf_counter()
        while (len(own) < _MIN_RUNS or t < end) and not stopped.is_set():
            io.run()
            t1 = time.perf_counter()
            own.append(t1 - t)
            t = t1
            if stop is not None and stop():
                stopped.set()

    if len(ios) == 1:
        stream(0)
    else:
        workers = [threading.Thread(target=stream, args=(i,), daemon=True) for i in range(len(ios))]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    if stopped.is_set():
        raise MeasureStopped("asked to stop")
    rate = sum(b / float(np.quantile(ts, _QUANTILE)) for ts in times)
    return rate, float(np.median([t for ts in times for t in ts]))


def probe_layout(
    open_engine: Callable[[int], Engine],
    *,
    cores: int | None = None,
    feeds: Mapping[str, np.ndarray] | None = None,
    max_batch_size: int = 32,
    seconds: float = PROBE_SECONDS,
    first: Engine | None = None,
) -> tuple[Layout, list[Engine], Engine | None]:
    """Measure the model and pick its layout: ``(layout, load engines, lone engine or None)``.

    ``open_engine(threads)`` opens the model with that many intra-op threads. ``feeds``: one
    request of one item (generated from the model's specs when None: a dynamic non-batch
    dimension then takes ``infercore.inputs.DYNAMIC_SIZE``). ``first``: an engine already open
    with ``cores`` threads, used as the wide one (it is handed over: closed if the layout does not
    use it). Engines the probe opens and the layout does not use are closed. Measuring stops after
    ``seconds`` (what was measured by then decides); opening the engines comes on top.
    """
    cores = available_cores() if cores is None else check_int("cores", cores)
    assert cores is not None
    t0 = time.perf_counter()
    rss0 = rss_mb()
    opened: list[Engine] = [] if first is None else [first]
    try:
        wide = first if first is not None else open_engine(cores)
        if first is None:
            opened.append(wide)
        t = _narrow_threads(cores)
        narrow: list[Engine] = []
        for _ in range(cores // t if cores > 1 else 0):
            narrow.append(open_engine(t))
            opened.append(narrow[-1])
        # a dynamic non-batch dimension sized by the generator: traffic may come in other sizes
        guessed = feeds is None and any(None in s.shape[1:] for s in wide.inputs)
        if feeds is None:
            from .inputs import make_feeds

            # one item: a dynamic batch dimension is 1 (asking batch=1 outright would refuse a
            # model whose batch dimension is fixed, MediaPipe's [1, 224, 224, 3])
            feeds, _ = make_feeds(wide.inputs, metadata=wide.metadata)
        feeds = {k: np.asarray(v) for k, v in feeds.items()}
        rss1 = rss_mb()
        record: dict[str, Any] = {
            "shapes": {k: list(v.shape[1:]) for k, v in feeds.items()},
            "shapes_guessed": guessed,
            "engines_opened": len(opened),
            "open_seconds": round(time.perf_counter() - t0, 2),
            "rss_mb": None if rss0 is None or rss1 is None else round(rss1 - rss0, 1),
        }
        layout = _measure(wide, narrow, t, cores, feeds, max_batch_size, _Clock(seconds), record)
    except BaseException:
        for e in opened:
            e.close()
        raise
    if layout.lone_threads is None and layout.instances == 1 and layout.threads == cores:
        load, lone = [wide], None  # the wide engine runs everything
    else:
        load, lone = narrow, wide if layout.lone_threads is not None else None
    for e in opened:
        if e not in load and e is not lone:
            e.close()
    return layout, load, lone


def _measure(
    wide: Engine,
    narrow: list[Engine],
    t: int,
    cores: int,
    feeds: Mapping[str, np.ndarray],
    max_batch_size: int,
    clock: _Clock,
    record: dict[str, Any],
) -> Layout:
    max_b = max_batch_size
    if any(s.shape[0] is not None for s in wide.inputs):
        max_b = 1  # a fixed batch dimension: batches of 1 only
    groups = {"wide": [wide], "narrow": narrow} if narrow else {"wide": [wide]}
    lone: int | None = None
    busy = _Contention(cores)
    if narrow:
        # a request alone: the wide engine against one narrow engine, runs alternating
        w1, n1 = _runner(wide, feeds, 1), _runner(narrow[0], feeds, 1)
        try:
            w1.run()
            n1.run()
            tw: list[float] = []
            tn: list[float] = []
            end = time.perf_counter() + min(0.4, 0.15 * clock.left)
            while len(tw) < 5 or (time.perf_counter() < end and len(tw) < 200):
                pair = ((w1, tw), (n1, tn)) if len(tw) % 2 else ((n1, tn), (w1, tw))
                for io, own in pair:
                    s = time.perf_counter()
                    io.run()
                    own.append(time.perf_counter() - s)
        finally:
            w1.close()
            n1.close()
        # what each engine does when it gets its cores: the fastest run of each (on a busy host the
        # wide engine, which needs all its cores at once, is slowed more than a narrow one)
        t_wide, t_narrow = min(tw), min(tn)
        record["batch1_ms"] = {"wide": round(t_wide * 1e3, 3), "narrow": round(t_narrow * 1e3, 3)}
        # with guessed shapes the wide engine stays whatever it did on them: a lone request of the
        # real size (a 320 x 320 image where the probe ran 64 x 64) may gain from every core, and
        # the Batcher times both engines per input shape as it serves and sends it to the faster
        lone = cores if t_wide <= _LONE_GAIN * t_narrow or record.get("shapes_guessed") else None
    rates = _climb(groups, feeds, max_b, clock, record)
    record["seconds"] = round(clock.spent, 2)
    record["others_cpu"] = busy.share()
    if not narrow or max(rates["wide"].values()) >= _WIDE_GAIN * max(rates["narrow"].values()):
        # one core: one engine; or the wide engine does better under load: it runs everything
        w = rates["wide"]
        return Layout(cores, 1, cores, None, _peak(w), "probe", record, _short(w))
    n = rates["narrow"]
    return Layout(cores, len(narrow), t, lone, _peak(n), "probe", record, _short(n))


def remeasure_batch(
    engines: Sequence[Engine],
    feeds: Mapping[str, np.ndarray],
    *,
    cores: int,
    max_batch_size: int = 32,
    seconds: float = REPROBE_SECONDS,
    stop: Callable[[], bool] | None = None,
) -> tuple[int, dict[str, Any]]:
    """The batch size where ``engines`` (the load engines, run side by side) peak in items/s on
    ``feeds`` (one request of the served shape), and what was measured: the Batcher's second look
    when ``probe_layout`` had to guess a dynamic dimension (PP-OCR det, probed at 64 x 64, peaked at
    batch 2-32 and falls from batch 1 at 320 x 320: 164, 156, 118 items/s at 1, 2, 4). ``cores``:
    what the engines' threads add up to, for the record of what other processes took meanwhile.
    ``stop()``, asked after every run, ends it with MeasureStopped (a request that cannot wait)."""
    clock = _Clock(seconds)
    feeds = {k: np.asarray(v) for k, v in feeds.items()}
    record: dict[str, Any] = {"shapes": {k: list(v.shape[1:]) for k, v in feeds.items()}}
    busy = _Contention(cores)
    rates = _climb({"load": list(engines)}, feeds, max(1, max_batch_size), clock, record, stop)
    record["items_per_s"] = record["items_per_s"]["load"]
    record["batch_size"] = _peak(rates["load"])
    record["short_batch"] = _short(rates["load"])
    record["seconds"] = round(clock.spent, 2)
    record["others_cpu"] = busy.share()
    return record["batch_size"], record


def _climb(
    groups: Mapping[str, Sequence[Engine]],
    feeds: Mapping[str, np.ndarray],
    max_b: int,
    clock: _Clock,
    record: dict[str, Any],
    stop: Callable[[], bool] | None = None,
) -> dict[str, dict[int, float]]:
    """Items/s against batch size, per group of engines run side by side: batch 1, 2, 4, ...
    while time is left, a batch stays under _LONG_BATCH seconds, and items/s has not fallen below
    90% of the best so far twice in a row. Groups alternate which goes first. A first run of one
    item over _LONG_BATCH (a large input: a 1600 x 1600 image) is the measurement: batch 1."""
    rates: dict[str, dict[int, float]] = {k: {} for k in groups}
    names = list(groups)
    falls = 0
    b = 1
    slow = 0.0
    while b <= max_b:
        # the next size takes, per group, a first run and a window of at least _MIN_RUNS runs, each
        # about twice as long as the last size's
        if b > 1 and clock.left < len(groups) * (2 * slow + max(_WINDOW, 2 * _MIN_RUNS * slow)):
            record["cut_short"] = True
            break
        slow = 0.0
        for kind in names if b.bit_length() % 2 else names[::-1]:
            ios = [_runner(e, feeds, b) for e in groups[kind]]
            try:
                for io in ios:  # the first run at a shape: allocations, kernels picked
                    t = time.perf_counter()
                    io.run()
                    first = time.perf_counter() - t
                    if stop is not None and stop():
                        raise MeasureStopped("asked to stop")
                    if b == 1 and first > _LONG_BATCH:  # one item takes long: batches of 1, measured
                        rate, per_run = len(ios) / first, first  # well enough by this run
                        break
                else:
                    rate, per_run = _rate(ios, b, _WINDOW, stop)
            finally:
                for io in ios:
                    io.close()
            rates[kind][b] = rate
            slow = max(slow, per_run)
        fell = all(r[b] < 0.9 * max(r.values()) for r in rates.values())
        falls = falls + 1 if fell else 0
        if falls >= 2 or slow > _LONG_BATCH:
            break
        b *= 2
    record["items_per_s"] = {k: {str(b): round(r, 1) for b, r in v.items()} for k, v in rates.items()}
    return rates


def _peak(rates: Mapping[int, float]) -> int:
    """The batch size for a deep queue: the largest within 1% of the best items/s (what the probe
    cannot see, the serving's own work per batch, favours the larger batch)."""
    best = max(rates.values())
    return max(b for b, r in rates.items() if r >= _PEAK * best)


def _short(rates: Mapping[int, float]) -> int:
    """The batch size for a short queue: the smallest within ``SHORT_QUEUE`` of the best items/s."""
    best = max(rates.values())
    return min(b for b, r in rates.items() if r >= SHORT_QUEUE * best)
