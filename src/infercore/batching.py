"""``Batcher``: dynamic batching over any Engine, for many callers at once (threads or asyncio).

Modelled on Triton's dynamic batcher. Callers submit requests (each carrying ``n >= 1`` items
along dimension 0); one scheduler thread groups queued requests of the same non-batch shape into
a batch as soon as an instance is free, waiting at most ``max_queue_delay`` (from the head's
arrival) for a batch to fill, or dispatching at once when it reaches ``max_batch_size`` or a
preferred size. With ``quiet``, the window is adaptive: it opens when the head arrives or, if the
head had to wait for a free instance, when one frees, and the batch goes once no request has
arrived for ``quiet`` seconds (``max_queue_delay`` still caps it). Each instance
thread copies its requests once, straight into the bound input buffers of that batch size
(``Engine.bind``, cached per size and shape), runs, and hands each caller its own slice of the
outputs as arrays the caller owns.

Given an engine factory that takes ``threads``, the batcher picks its engines itself
(``infercore.layout``): one with every core for a request that comes alone, narrower ones side by
side under load, never more threads running than cores.

Nothing is lost: every accepted request ends in exactly one result or one error.

- a full queue refuses at submit (``QueueFullError``), nothing is queued;
- a request whose deadline passes while queued ends with ``DeadlineExceededError`` and is not run;
- a cancelled future (or a cancelled asyncio task awaiting ``infer``) leaves the queue;
- a failing batch fails only its own requests, with the runtime's exception;
- ``close(drain=True)`` finishes everything accepted, ``close(drain=False)`` ends what is still
  queued with ``BatcherClosedError``; a submit after close raises ``BatcherClosedError``.

    b = Batcher(lambda threads: ic.load("minilm.onnx", threads=threads))   # probes its layout
    fut = b.submit({"input_ids": ids, "attention_mask": mask, "token_type_ids": types})
    emb = fut.result()["embedding"]          # or: await b.infer(feeds); or: b.run(feeds)
    b.close()
"""

from __future__ import annotations

import asyncio
import heapq
import inspect
import itertools
import logging
import queue
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .arguments import check_int, check_number
from .engine import BoundIO, Engine
from .errors import (
    ArgumentError,
    BatcherClosedError,
    BatchingError,
    DeadlineExceededError,
    InputSpecError,
    QueueFullError,
)
from .layout import Layout, available_cores, probe_layout
from .specs import TensorSpec, format_shape, is_symbol

if TYPE_CHECKING:
    from .preprocess import Pipeline, Prepared

__all__ = ["AUTO_QUEUE_DELAY", "AUTO_QUIET", "Batcher", "BatcherClosedError", "BatcherMetrics", "LatencySummary", "Layout"]

log = logging.getLogger(__name__)

_RING = 4096  # latencies kept per recorder for percentiles (the most recent ones)
_BIND_CACHE = 128  # bound I/O kept per instance, least recently used dropped first
_now = time.perf_counter
AUTO_QUEUE_DELAY = 0.0
"""``max_queue_delay`` with a chosen layout: a batch goes as soon as an engine is free for it;
under load, batches grow on their own while every engine is busy."""
AUTO_QUIET: float | None = None
"""``quiet`` with a chosen layout."""
_LONE_AFTER = 0.05  # seconds (or 4 batch times) without two requests at once before one is alone
_EXPLORE = 128  # a lone request in this many (or one a second) may run on the other engine, to time it
_EXPLORE_S = 1.0
_SAMPLES = 3
_STALE = 10.0
_MAX_WAIT = 3600.0  # the scheduler re-checks at least hourly: Condition.wait overflows past ~2**63 ns


def _unnamed(spec: TensorSpec, axis: int) -> bool:
    """A dynamic dimension with no symbolic name (None, "?", onnxruntime's "unk__N"): see is_symbol."""
    return not is_symbol(spec.dim_names[axis] if axis < len(spec.dim_names) else None)


def _dim_key(spec: TensorSpec, axis: int) -> str:
    """What ties a dimension to others for padding: its symbolic name, or for an unnamed one the
    input and axis themselves (so it pads independently of every other)."""
    return f"{spec.name}[{axis}]" if _unnamed(spec, axis) else str(spec.dim_names[axis])


def _wait(parameter: str, value: float | None) -> float | None:
    """A wait in seconds: >= 0, inf (wait for a full batch) or None (the default)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value == float("inf"):
        return float("inf")
    return check_number(parameter, value, optional=True)


def _timeout(timeout: float | None, minimum: str = "> 0") -> float | None:
    """A timeout in seconds (> 0; >= 0 for ``close``), or None (or inf) for none."""
    if timeout is None:
        return None
    wanted = f"expected seconds {minimum} (or None: no limit), got {timeout!r}"
    try:
        t = float(timeout)
    except (TypeError, ValueError):
        raise ArgumentError("timeout", wanted) from None
    if isinstance(timeout, bool) or not (t > 0 or (minimum == ">= 0" and t == 0)):  # also NaN
        raise ArgumentError("timeout", wanted)
    return None if t == float("inf") else t

# request states; every transition out of _QUEUED happens under the batcher's lock
_QUEUED, _RUNNING, _DONE_EARLY = 0, 1, 2


@dataclass(frozen=True)
class LatencySummary:
    """Percentiles (milliseconds) over the most recent ``count`` samples (up to 4096 per recorder)."""

    count: int
    mean_ms: float | None
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None


@dataclass(frozen=True)
class BatcherMetrics:
    """A snapshot of a batcher's counters.

    ``submitted`` counts accepted requests; ``rejected`` refused ones (``QueueFullError``, not in
    ``submitted``). Every accepted request is in exactly one of ``succeeded``, ``failed``,
    ``timed_out``, ``cancelled``, ``aborted`` (ended by ``close(drain=False)`` or a close timeout),
    ``queue_depth`` (waiting) or ``in_flight`` (in a batch that is running). ``batch_sizes`` maps
    items per batch to how many batches ran with that many; ``queue_ms`` is submit to dispatch per
    request, ``exec_ms`` copy-in + run + copy-out per batch. ``engines``: per engine, its role
    (``"lone"``: runs a request that is alone; ``"load"``), threads (None where the batcher did not
    choose them), batches and items run; ``layout``: the chosen layout and what the probe measured
    (``Layout.as_dict``), or None.
    """

    name: str
    submitted: int
    succeeded: int
    failed: int
    rejected: int
    timed_out: int
    cancelled: int
    aborted: int
    queue_depth: int
    in_flight: int
    batches: int
    items: int
    batch_sizes: Mapping[int, int]
    queue_ms: LatencySummary
    exec_ms: LatencySummary
    engines: tuple[Mapping[str, Any], ...] = ()
    layout: Mapping[str, Any] | None = None

    @property
    def mean_batch_size(self) -> float | None:
        return self.items / self.batches if self.batches else None


class _Ring:
    """Latencies written by one thread only: no lock, a snapshot may miss the latest sample."""

    __slots__ = ("buf", "n")

    def __init__(self) -> None:
        self.buf = [0.0] * _RING
        self.n = 0

    def add(self, seconds: float) -> None:
        self.buf[self.n & (_RING - 1)] = seconds
        self.n += 1

    def values(self) -> list[float]:
        return self.buf[: min(self.n, _RING)]


def _summary(values: list[float]) -> LatencySummary:
    if not values:
        return LatencySummary(0, None, None, None, None, None)
    a = np.asarray(values, dtype=np.float64) * 1e3
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return LatencySummary(int(a.size), float(a.mean()), float(p50), float(p90), float(p99), float(a.max()))


class _Request:
    """One accepted request: its validated arrays (or a pipeline's prepared data) and its state."""

    __slots__ = (
        "__weakref__",
        "data",
        "deadline",
        "dims",
        "future",
        "key",
        "n",
        "prepared",
        "priority",
        "seen",
        "shapes",
        "state",
        "t_submit",
    )

    data: dict[str, np.ndarray] | None
    prepared: Prepared | None
    deadline: float | None
    dims: dict[str, int] | None  # with padding: the request's own length per padded dimension name
    future: _Answer
    key: tuple[Any, ...]
    n: int
    priority: int
    seen: int  # requests in the batcher (queued or running) when it arrived, itself included; 2
    #            for a request that found it empty while a load was still going on
    shapes: Mapping[str, tuple[int, ...]]
    state: int
    t_submit: float

    def __init__(self) -> None:
        self.state = _QUEUED


class _RequestFuture(Future[dict[str, np.ndarray]]):
    """A Future whose successful ``cancel()`` takes its request out of the batcher's queue."""

    _batcher: Batcher
    _request: _Request | None  # None once settled: no future -> request -> future cycle outlives it

    def cancel(self) -> bool:
        if not super().cancel():
            return False
        if self._request is not None:
            self._batcher._on_cancel(self._request)
        return True


class _Waiter:
    """``run``'s answer: one lock, released when the answer is in. A Future's Condition costs a
    Python-level wait and notify per request, which 64 threads calling ``run`` pay in GIL time."""

    __slots__ = ("_error", "_lock", "_result")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self._result: dict[str, np.ndarray] | None = None
        self._error: BaseException | None = None

    @staticmethod
    def set_running_or_notify_cancel() -> bool:
        return True  # a caller blocked in run() cannot cancel

    def set_result(self, result: dict[str, np.ndarray]) -> None:
        self._result = result
        self._lock.release()

    def set_exception(self, error: BaseException) -> None:
        self._error = error
        self._lock.release()

    def wait(self) -> dict[str, np.ndarray]:
        self._lock.acquire()
        if self._error is not None:
            try:
                raise self._error
            finally:
                self._error = None
        assert self._result is not None
        return self._result


class _AsyncSlot:
    """``infer``'s answer: an asyncio future of the caller's loop. Results of one batch reach each
    loop in one ``call_soon_threadsafe`` (one wake-up of the loop per batch, not per request)."""

    __slots__ = ("fut", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.fut: asyncio.Future[dict[str, np.ndarray]] = loop.create_future()

    def set_running_or_notify_cancel(self) -> bool:
        return not self.fut.cancelled()  # read from another thread: a cancel after it is caught later

    def set_result(self, result: dict[str, np.ndarray]) -> None:
        _call_in(self.loop, _settle_all, [(self.fut, result, None)])

    def set_exception(self, error: BaseException) -> None:
        _call_in(self.loop, _settle_all, [(self.fut, None, error)])


def _call_in(loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], arg: Any) -> None:
    try:
        loop.call_soon_threadsafe(fn, arg)
    except RuntimeError:  # the loop is closed: nobody is left awaiting
        pass


def _settle_all(items: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for fut, result, error in items:
        if fut.done():  # cancelled meanwhile
            continue
        if error is None:
            fut.set_result(result)
        else:
            fut.set_exception(error)


def _deliver(batch: Sequence[_Request], results: Sequence[dict[str, np.ndarray]]) -> None:
    """Each request's result to its caller; asyncio callers get theirs per loop, in one go."""
    loops: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any, None]]] | None = None
    for req, out in zip(batch, results, strict=True):
        fut = req.future
        if type(fut) is _AsyncSlot:
            if loops is None:
                loops = {}
            loops.setdefault(fut.loop, []).append((fut.fut, out, None))
        else:
            fut.set_result(out)
    if loops:
        for loop, items in loops.items():
            _call_in(loop, _settle_all, items)


_Answer = Future[dict[str, np.ndarray]] | _Waiter | _AsyncSlot  # how a request's answer reaches its caller


def _settled(req: _Request) -> None:
    """A request that has its answer keeps nothing: its inputs go, and its future forgets it."""
    req.data = req.prepared = None
    fut = req.future
    if isinstance(fut, _RequestFuture):
        fut._request = None


class _KeyQueue:
    """Queued requests of one shape key: high priority first, FIFO within a priority."""

    __slots__ = ("high", "last", "normal")

    def __init__(self) -> None:
        self.high: deque[_Request] = deque()
        self.normal: deque[_Request] = deque()
        self.last = 0.0  # when the latest request of this key arrived

    def head(self) -> _Request | None:
        for dq in (self.high, self.normal):
            while dq and dq[0].state != _QUEUED:
                dq.popleft()  # dead entries (cancelled, expired) are dropped when reached
            if dq:
                return dq[0]
        return None


class _Solo:
    """Per shape key: seconds per item of a request that came alone, on the lone engine and on a
    load engine (the last _SAMPLES of each, written by the instance threads), and when each last
    ran one. A lone request goes to whichever runs it faster now (the host's other work slows a
    wide engine more than a narrow one). While the other one has fewer than _SAMPLES figures, or
    its figures are older than _STALE seconds, it runs the lone request that comes after a gap of
    _EXPLORE requests or _EXPLORE_S seconds since it last did, so the choice follows the host; one
    request in _EXPLORE (or one a second) is too few to move a p99."""

    __slots__ = ("count", "explored_at", "load", "load_at", "lone", "lone_at")

    def __init__(self) -> None:
        self.lone: deque[float] = deque(maxlen=_SAMPLES)
        self.load: deque[float] = deque(maxlen=_SAMPLES)
        self.lone_at = self.load_at = 0.0
        self.explored_at = _now()
        self.count = 0

    def prefers_lone(self, now: float) -> bool:
        self.count += 1
        lone, load = self.lone, self.load
        # until both were timed, the probe's pick (it kept the lone engine for being faster)
        choice = not (lone and load) or sorted(lone)[len(lone) // 2] <= sorted(load)[len(load) // 2]
        other, at = (load, self.load_at) if choice else (lone, self.lone_at)
        if (len(other) < _SAMPLES or now - at > _STALE) and (
            self.count >= _EXPLORE or now - self.explored_at > _EXPLORE_S
        ):
            self.count = 0
            self.explored_at = now
            return not choice
        return choice


class _Instance:
    """One worker thread with its engine and its own cache of bound I/O.

    ``cores``: the cores its engine uses while it runs (0: not counted, as in a layout the batcher
    did not choose); ``lone``: it runs only a request that is alone (see ``Layout``)."""

    def __init__(self, batcher: Batcher, index: int, engine: Engine, cores: int = 0, lone: bool = False) -> None:
        self.index = index
        self.engine = engine
        self.cores = cores
        self.lone = lone
        self.inbox: queue.SimpleQueue[list[_Request] | None] = queue.SimpleQueue()
        self.bound: OrderedDict[tuple[Any, ...], BoundIO] = OrderedDict()
        self.succeeded = 0
        self.failed = 0
        self.batches = 0
        self.items = 0
        self.sizes: dict[int, int] = {}
        self.exec = _Ring()
        self.busy = False
        # (start, end) of the latest batches, for checks that engines never overlap past the cores
        self.spans: deque[tuple[float, float]] = deque(maxlen=_RING)
        self.thread = threading.Thread(
            target=batcher._instance_loop, args=(self,), name=f"{batcher.name}-instance-{index}", daemon=True
        )


def _takes_no_args(factory: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return True
    return all(p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params)


def _takes_threads(factory: Callable[..., Any]) -> bool:
    """Whether an engine factory accepts ``threads=`` (then the batcher may choose its layout)."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature
        return False
    return any(
        p.kind is p.VAR_KEYWORD or (p.name == "threads" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
        for p in params
    )


class Batcher:
    """Dynamic batching over an Engine (see the module docstring).

    ``engine``: an Engine (all instances share it; ORT sessions are thread-safe), a zero-argument
    callable that makes one Engine per instance, e.g. ``lambda: ic.load(path, threads=1)``, or a
    callable taking ``threads``, e.g. ``lambda threads: ic.load(path, threads=threads)``: then,
    unless ``instances`` is given, the batcher picks its own ``layout`` (below). The batcher
    closes engines it made. ``pad``: ``False`` groups requests by exact non-batch shape; ``True``
    lets requests that differ in any dynamic non-batch dimension share a batch, padded with zeros at
    the end of those dimensions; a list of dimension names (``["sequence"]``) allows only those.
    Outputs whose dimension has the same name as a padded input dimension are cut back to each
    request's own length.

    ``layout``: ``"auto"`` (the default; it applies to a factory taking ``threads`` when
    ``instances`` is not given) probes the model for a few seconds at construction and picks how
    its ``cores`` (default: all this process may use) are split (see ``infercore.layout``): a
    request that is alone runs on an engine with all the cores, concurrent requests on narrower
    engines side by side, batched up to the size where items/s peaked (the preferred batch size),
    never more threads running than cores. ``probe_feeds``: one request to probe with (default:
    generated from the model's specs). A ``Layout`` gives the split without probing; ``None``
    turns it off (``instances`` engines, default 1). Arguments given explicitly always win over
    what the probe picks. ``layout`` (the attribute) says what was chosen and measured.

    ``max_queue_delay`` (seconds) is the longest a batch that is not full waits for more requests,
    counted from its head's arrival (Triton's rule: a head that waited for a free instance goes at
    once). ``quiet`` (seconds, default off) makes the window adaptive: a head that waited for an
    instance gets a window from when one frees, and a batch goes once no request has arrived for
    ``quiet`` seconds, so a burst of arrivals keeps it open and a lull sends it.
    ``max_queue_delay=0.05, quiet=0.004`` lets callers whose results just came back rejoin the next
    batch without making a lone caller wait 50 ms. Defaults: 2 ms and off; with a chosen layout,
    see ``AUTO_QUEUE_DELAY`` and ``AUTO_QUIET``.
    """

    def __init__(
        self,
        engine: Engine | Callable[..., Engine],
        *,
        max_batch_size: int | None = None,
        preferred_batch_sizes: Sequence[int] | None = None,
        max_queue_delay: float | None = None,
        quiet: float | None = None,
        max_queue_size: int = 1024,
        timeout: float | None = None,
        instances: int | None = None,
        pad: bool | Iterable[str] = False,
        preprocess: Pipeline | None = None,
        name: str | None = None,
        layout: Layout | str | None = "auto",
        cores: int | None = None,
        probe_feeds: Mapping[str, Any] | None = None,
    ) -> None:
        max_batch_size = check_int("max_batch_size", max_batch_size, optional=True)
        max_queue_delay = _wait("max_queue_delay", max_queue_delay)
        quiet = _wait("quiet", quiet)
        max_queue_size = check_int("max_queue_size", max_queue_size)  # type: ignore[assignment]
        timeout = _timeout(timeout)
        instances = check_int("instances", instances, optional=True)
        if not (layout is None or layout == "auto" or isinstance(layout, Layout)):
            raise ArgumentError("layout", f"expected 'auto', a Layout or None, got {layout!r}")
        cores = check_int("cores", cores, optional=True)
        self.name = name or f"batcher-{id(self):x}"
        self.max_queue_size = max_queue_size
        self.timeout = timeout
        self.preprocess = preprocess

        # which engines: a layout the batcher chooses (or is given), or ``instances`` alike
        threads_factory = not isinstance(engine, Engine) and callable(engine) and _takes_threads(engine)
        if isinstance(layout, Layout) and not threads_factory:
            raise TypeError(
                "a Layout needs engine to be a factory taking threads=, e.g. lambda threads: "
                "ic.load(path, threads=threads)"
            )
        choose = threads_factory and layout is not None and (isinstance(layout, Layout) or instances is None)
        self.layout: Layout | None = None
        lone_engine: Engine | None = None
        if choose:
            engines, lone_engine = self._layout_engines(
                engine, layout, cores, probe_feeds, max_batch_size or 32  # type: ignore[arg-type]
            )
            self._owned = True
            lay = self.layout
            assert lay is not None
            if max_batch_size is None:
                max_batch_size = max(32, lay.batch_size or 1)
                if any(s.shape[0] is not None for s in engines[0].inputs):
                    max_batch_size = 1  # a fixed batch dimension of 1
            if preferred_batch_sizes is None:
                preferred_batch_sizes = (lay.batch_size,) if lay.batch_size and lay.batch_size < max_batch_size else ()
            if max_queue_delay is None and quiet is None:
                max_queue_delay, quiet = AUTO_QUEUE_DELAY, AUTO_QUIET
            # a quiet period given alone needs a window to end early: the usual 2 ms below
        else:
            source: Engine | Callable[[], Engine] = engine
            if threads_factory and not _takes_no_args(engine):
                factory: Callable[..., Engine] = engine  # type: ignore[assignment]

                def source() -> Engine:
                    return factory(threads=None)

            engines, self._owned = self._make_engines(source, instances or 1)
        self.max_batch_size = 32 if max_batch_size is None else max_batch_size
        try:
            preferred = sorted({int(check_int("preferred_batch_sizes", p)) for p in preferred_batch_sizes or ()})  # type: ignore[arg-type]
            if any(p > self.max_batch_size for p in preferred):
                raise ArgumentError(
                    "preferred_batch_sizes", f"{preferred} must lie in 1..max_batch_size={self.max_batch_size}"
                )
        except BaseException:
            for e in (*engines, lone_engine) if self._owned else ():
                if e is not None:
                    e.close()
            raise
        self.preferred_batch_sizes = tuple(preferred)
        self.max_queue_delay = 0.002 if max_queue_delay is None else float(max_queue_delay)
        self.quiet = None if quiet is None else float(quiet)
        instances = len(engines)

        self.engine = engines[0]
        self.inputs: tuple[TensorSpec, ...] = self.engine.inputs
        self.outputs: tuple[TensorSpec, ...] = self.engine.outputs
        try:
            self._check_model(engines if lone_engine is None else [*engines, lone_engine])
            self._pad_dims = self._pad_plan(pad)
            self._crop = self._crop_plan()
            if preprocess is not None:
                self._check_pipeline(preprocess)
        except BaseException:
            for e in (*engines, lone_engine) if self._owned else ():
                if e is not None:
                    e.close()
            raise
        self._input_names = tuple(s.name for s in self.inputs)
        parallel = self.engine.concurrency
        if not self._owned and parallel is not None and parallel < instances:
            log.warning(
                "batcher %r: %d instances share one %s engine that runs %d request(s) at once; the other "
                "instances' batches wait inside the runtime and their execution times include that wait. "
                "Open it with more streams (openvino: options={'num_streams': %d}; OpenVINO runs at most one "
                "stream per inference thread, so threads= must be at least that) or use fewer instances",
                self.name,
                instances,
                self.engine.backend_name,
                parallel,
                instances,
            )

        self._cv = threading.Condition(threading.Lock())
        self._queues: dict[tuple[Any, ...], _KeyQueue] = {}
        # (deadline, seq, weakref to the request): a finished request is not kept for its deadline
        self._deadlines: list[tuple[float, int, weakref.ref[_Request]]] = []
        self._seq = itertools.count()
        self._depth = 0
        self._running = 0  # requests in batches that run now
        # when a request last arrived with another in the batcher, and how long batches take: a
        # request is alone only when no two were in the batcher for a few batch times (two callers
        # whose requests were batched together come back one after the other to an empty batcher)
        self._concurrent_at = -1e9
        self._batch_s = 0.0
        # cores: with a layout, engines start only while their threads fit in the free cores
        lay = self.layout
        width = lay.threads if lay is not None else 0
        self._cores = lay.cores if lay is not None else 0
        self._free = self._cores
        self._load_cores = width
        self._idle = instances  # idle instances that run batches under load (not the lone one)
        # since when some instance has been free without a break: with ``quiet``, a batch's fill
        # window opens at max(head's arrival, this), so a head that waited for capacity gets one
        self._free_since = 0.0
        self._closing = False
        self._drain = True
        self._submitted = 0
        self._rejected = 0
        self._timed_out = 0
        self._cancelled = 0
        self._aborted = 0
        self._queue_ring = _Ring()  # written by the scheduler thread only
        self._instances = [_Instance(self, i, e, width) for i, e in enumerate(engines)]
        self._lone: _Instance | None = None
        self._solo: dict[tuple[Any, ...], _Solo] = {}  # per shape key, for the lone engine's routing
        if lone_engine is not None:
            assert lay is not None and lay.lone_threads is not None
            self._lone = _Instance(self, len(engines), lone_engine, lay.lone_threads, lone=True)
            self._instances.append(self._lone)
        self._scheduler = threading.Thread(
            target=self._schedule_loop, name=f"{self.name}-scheduler", daemon=True
        )
        for inst in self._instances:
            inst.thread.start()
        self._scheduler.start()

    # -- construction checks ---------------------------------------------------------------------
    def _layout_engines(
        self,
        factory: Callable[..., Engine],
        layout: Layout | str,
        cores: int | None,
        probe_feeds: Mapping[str, Any] | None,
        max_batch_size: int,
    ) -> tuple[list[Engine], Engine | None]:
        """The engines of a given layout, or of the one the probe picks (``self.layout``)."""

        def open_engine(threads: int) -> Engine:
            e = factory(threads=threads)
            if not isinstance(e, Engine):
                raise TypeError(f"the engine factory returned {type(e).__name__}, not an infercore Engine")
            if e.closed:
                raise BatchingError("the engine factory returned a closed engine")
            return e

        if isinstance(layout, Layout):
            made: list[Engine] = []
            try:
                if layout.lone_threads is not None:
                    made.append(open_engine(layout.lone_threads))
                for _ in range(layout.instances):
                    made.append(open_engine(layout.threads))
            except BaseException:
                for e in made:
                    e.close()
                raise
            self.layout = layout
            if layout.lone_threads is not None:
                return made[1:], made[0]
            return made, None
        cores = available_cores() if cores is None else cores
        try:
            chosen, load, lone = probe_layout(
                open_engine, cores=cores, feeds=probe_feeds, max_batch_size=max_batch_size
            )
        except Exception as e:
            why = f"{type(e).__name__}: {e}"
            log.warning("batcher %r: the layout probe failed (%s); running one engine of %d threads", self.name, why, cores)
            self.layout = Layout(cores, 1, cores, source="fallback", probe={"error": why})
            return [open_engine(cores)], None
        self.layout = chosen
        log.info("batcher %r: %s", self.name, chosen.describe())
        return load, lone

    @staticmethod
    def _make_engines(engine: Engine | Callable[[], Engine], instances: int) -> tuple[list[Engine], bool]:
        if isinstance(engine, Engine):
            if engine.closed:
                raise BatchingError("the engine given to Batcher is closed")
            return [engine] * instances, False
        if not callable(engine):
            raise TypeError(
                f"engine must be an Engine or a zero-argument callable returning one, got {engine!r}"
            )
        made: list[Engine] = []
        try:
            for _ in range(instances):
                e = engine()
                if not isinstance(e, Engine):
                    raise TypeError(
                        f"the engine factory returned {type(e).__name__}, not an infercore Engine"
                    )
                made.append(e)
        except BaseException:
            for e in made:
                e.close()
            raise
        return made, True

    def _check_model(self, engines: list[Engine]) -> None:
        first = engines[0]
        for e in engines[1:]:
            if e.inputs != first.inputs or e.outputs != first.outputs:
                raise BatchingError("the engine factory made engines with different inputs/outputs")
        for spec in self.inputs:
            if spec.rank == 0:
                raise InputSpecError(
                    f"input {spec.name!r} is a scalar (shape []): it has no batch dimension, so requests cannot "
                    "be batched; call Engine.run directly",
                    tensor=spec.name,
                )
            if spec.dtype.hasobject:
                raise InputSpecError(
                    f"input {spec.name!r} is a string tensor: the batcher binds fixed-size buffers; "
                    "call Engine.run directly",
                    tensor=spec.name,
                )
            d0 = spec.shape[0]
            if d0 is not None and not (d0 == 1 and self.max_batch_size == 1):
                raise InputSpecError(
                    f"input {spec.name!r} has a fixed batch dimension: shape "
                    f"{format_shape(spec.shape, spec.dim_names)}; the batcher needs dimension 0 dynamic. "
                    "Re-export the model with a dynamic batch axis, or use max_batch_size=1",
                    tensor=spec.name,
                )

    def _pad_plan(self, pad: bool | Iterable[str]) -> dict[str, tuple[int, ...]]:
        """Input name -> the axes (>= 1) along which requests may be padded."""
        if pad is False:
            return {}
        if pad is True:
            return {s.name: tuple(i for i in range(1, s.rank) if s.shape[i] is None) for s in self.inputs}
        names = {pad} if isinstance(pad, str) else set(pad)
        plan: dict[str, tuple[int, ...]] = {}
        found: set[str] = set()
        for s in self.inputs:
            axes = tuple(i for i in range(1, s.rank) if s.shape[i] is None and s.dim_names[i] in names)
            found.update(s.dim_names[i] for i in axes)  # type: ignore[misc]
            plan[s.name] = axes
        missing = names - found
        if missing:
            dyn = sorted(
                {str(s.dim_names[i]) for s in self.inputs for i in range(1, s.rank) if s.shape[i] is None}
            )
            raise ArgumentError(
                "pad",
                f"names dimension(s) {sorted(missing)} that no input has as a dynamic non-batch dimension; "
                f"the model's are: {dyn or 'none'}",
            )
        return plan

    def _crop_plan(self) -> dict[str, tuple[tuple[int, str], ...]]:
        """Output name -> (axis, dim name) to cut back to each request's own length after padding.

        Padded axes pair up with output axes by dimension name. An unnamed padded axis matches no
        output axis, so if an output also has an unnamed dynamic axis the batcher could not tell
        whether to cut it back: that combination is refused rather than answered with padding.
        """
        keys = {_dim_key(self._spec(n), a) for n, axes in self._pad_dims.items() for a in axes}
        anonymous = sorted(
            _dim_key(self._spec(n), a) for n, axes in self._pad_dims.items() for a in axes if _unnamed(self._spec(n), a)
        )
        plan = {}
        for s in self.outputs:
            unnamed = [i for i in range(1, s.rank) if s.shape[i] is None and _unnamed(s, i)]
            if anonymous and unnamed:
                raise ArgumentError(
                    "pad",
                    f"would pad unnamed dimension(s) {', '.join(anonymous)}, and output {s.name!r} "
                    f"{format_shape(s.shape, s.dim_names)} has unnamed dynamic axes {unnamed}: the batcher "
                    "cannot tell which to cut back to each request's size. Batch without pad (requests of "
                    "different shapes then run in separate batches), or name the dimensions in the model",
                )
            axes = tuple((i, str(s.dim_names[i])) for i in range(1, s.rank) if s.dim_names[i] in keys)
            if axes:
                plan[s.name] = axes
        return plan

    def _spec(self, name: str) -> TensorSpec:
        return next(s for s in self.inputs if s.name == name)

    def _check_pipeline(self, pipeline: Pipeline) -> None:
        want = {s.name: s for s in self.inputs}
        given = set(pipeline.inputs)
        if given != set(want):
            raise InputSpecError(
                f"the pipeline fills {sorted(given)}, but the model's inputs are {sorted(want)}",
                tensor=sorted(set(want) ^ given)[0],
            )
        for name, dtype in pipeline.dtypes.items():
            if np.dtype(dtype) != want[name].dtype:
                raise InputSpecError(
                    f"input {name!r}: the pipeline produces {np.dtype(dtype)}, the model takes {want[name].dtype}; "
                    "add a dtype step to the pipeline",
                    tensor=name,
                )

    # -- introspection -----------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closing

    @property
    def metrics(self) -> BatcherMetrics:
        insts = self._instances
        succeeded = sum(i.succeeded for i in insts)
        failed = sum(i.failed for i in insts)
        sizes: dict[int, int] = {}
        for inst in insts:
            for k, v in list(inst.sizes.items()):
                sizes[k] = sizes.get(k, 0) + v
        with self._cv:
            submitted, depth = self._submitted, self._depth
            rejected, timed_out, cancelled, aborted = (
                self._rejected,
                self._timed_out,
                self._cancelled,
                self._aborted,
            )
        in_flight = max(0, submitted - succeeded - failed - timed_out - cancelled - aborted - depth)
        exec_values = [v for i in insts for v in i.exec.values()]
        return BatcherMetrics(
            self.name,
            submitted,
            succeeded,
            failed,
            rejected,
            timed_out,
            cancelled,
            aborted,
            depth,
            in_flight,
            sum(i.batches for i in insts),
            sum(i.items for i in insts),
            dict(sorted(sizes.items())),
            _summary(self._queue_ring.values()),
            _summary(exec_values),
            tuple(
                {
                    "role": "lone" if i.lone else "load",
                    "threads": (self.layout.lone_threads if i.lone else self.layout.threads) if self.layout else None,
                    "batches": i.batches,
                    "items": i.items,
                }
                for i in insts
            ),
            None if self.layout is None else self.layout.as_dict(),
        )

    def __repr__(self) -> str:
        state = "closed" if self._closing else "open"
        layout = f" layout={self.layout.describe()!r}" if self.layout is not None else ""
        return (
            f"<Batcher {self.name} {state} instances={len(self._instances)} max_batch_size={self.max_batch_size} "
            f"max_queue_delay={self.max_queue_delay * 1e3:g}ms engine={self.engine.path}{layout}>"
        )

    # -- submit ------------------------------------------------------------------------------
    def submit(
        self, feeds: Any, *, timeout: float | None = None, priority: int = 0
    ) -> Future[dict[str, np.ndarray]]:
        """Queue one request; returns a Future of its outputs (arrays the caller owns).

        ``feeds``: a dict name -> array (or one array for a single-input model) whose arrays all
        carry the same number ``n >= 1`` of items along dimension 0; with a ``preprocess`` pipeline,
        whatever the pipeline takes (image bytes, strings, ...). Arrays are read when the batch
        runs, not copied at submit: do not modify them until the future is done. ``timeout``
        (seconds, default the batcher's): the request ends with ``DeadlineExceededError``, not run,
        if it has not started by then. ``priority``: 0 normal, 1 high (served first).

        Raises at once, queueing nothing: ``InputSpecError`` for a bad request, ``QueueFullError``
        when ``max_queue_size`` requests are waiting, ``BatcherClosedError`` after ``close()``.
        """
        fut: _RequestFuture = _RequestFuture()
        fut._batcher = self
        fut._request = self._enqueue(feeds, fut, timeout, priority)
        return fut

    async def infer(
        self, feeds: Any, *, timeout: float | None = None, priority: int = 0
    ) -> dict[str, np.ndarray]:
        """``submit`` for asyncio: cancelling the awaiting task takes the request out of the queue."""
        slot = _AsyncSlot(asyncio.get_running_loop())
        req = self._enqueue(feeds, slot, timeout, priority)
        try:
            return await slot.fut
        except asyncio.CancelledError:
            self._on_cancel(req)
            raise

    def run(self, feeds: Any, *, timeout: float | None = None, priority: int = 0) -> dict[str, np.ndarray]:
        """``submit`` and wait for the result (the batcher itself enforces ``timeout``)."""
        waiter = _Waiter()
        self._enqueue(feeds, waiter, timeout, priority)
        return waiter.wait()

    def _enqueue(
        self,
        feeds: Any,
        answer: _Answer,
        timeout: float | None,
        priority: int,
    ) -> _Request:
        if self._closing:
            raise BatcherClosedError(f"batcher {self.name!r} is closed; no new requests are accepted")
        if priority not in (0, 1):
            raise ArgumentError("priority", f"expected 0 (normal) or 1 (high), got {priority!r}")
        timeout = self.timeout if timeout is None else _timeout(timeout)
        req = self._make_request(feeds)
        req.priority = priority
        req.future = answer
        with self._cv:
            if self._closing:
                raise BatcherClosedError(f"batcher {self.name!r} is closed; no new requests are accepted")
            if self._depth >= self.max_queue_size:
                self._rejected += 1
                raise QueueFullError(
                    f"batcher {self.name!r}: queue full ({self.max_queue_size} requests waiting); retry later, "
                    "or raise max_queue_size / add instances"
                )
            now = _now()
            req.t_submit = now
            req.seen = self._depth + self._running + 1
            if req.seen > 1:
                self._concurrent_at = now
            elif now - self._concurrent_at < max(_LONE_AFTER, 4 * self._batch_s):
                req.seen = 2  # the batcher is empty, but the load that just filled it may go on
            req.deadline = None if timeout is None else now + timeout
            kq = self._queues.get(req.key)
            if kq is None:
                kq = self._queues[req.key] = _KeyQueue()
            (kq.high if priority else kq.normal).append(req)
            kq.last = req.t_submit
            wake = False
            if req.deadline is not None:
                heap = self._deadlines
                if len(heap) > 2 * self._depth + 64:  # mostly finished requests: keep the queued ones
                    heap[:] = [e for e in heap if (r := e[2]()) is not None and r.state == _QUEUED]
                    heapq.heapify(heap)
                seq = next(self._seq)
                heapq.heappush(heap, (req.deadline, seq, weakref.ref(req)))
                wake = heap[0][1] == seq  # the earliest deadline: the scheduler must wake for it
            self._depth += 1
            self._submitted += 1
            avail, lone = self._available(), self._lone_free()
            batch: list[_Request] | None = None
            if not wake and (lone or (avail and not self.max_queue_delay)):
                # an engine can take it now and nothing is worth waiting for: dispatch from here,
                # one thread hop fewer than through the scheduler (the same rules, under the same lock)
                batch, _, alone = self._form(now, avail, lone)
                if batch:
                    # handed over under the lock: a close() that follows sees the batch in the
                    # engine's inbox, ahead of its stop (SimpleQueue.put never blocks)
                    self._claim(batch, alone).inbox.put(batch)
                else:
                    self._cv.notify()  # not due yet: the scheduler keeps the time
            elif wake or avail or lone:
                # the scheduler only acts when an engine can take a batch: while all are busy (a
                # full queue under load), waking it for every request costs a thread switch each
                self._cv.notify()
        return req

    def _make_request(self, feeds: Any) -> _Request:
        req = _Request()
        pipeline = self.preprocess
        if pipeline is not None:
            prepared: Prepared = pipeline.prepare(feeds)
            shapes = prepared.shapes
            for spec in self.inputs:
                shape = shapes[spec.name]
                if not spec.accepts(shape):
                    raise InputSpecError(
                        f"input {spec.name!r}: the pipeline produced shape {shape}, the model takes "
                        f"{format_shape(spec.shape, spec.dim_names)}",
                        tensor=spec.name,
                    )
            req.prepared = prepared
            req.data = None
        else:
            checked = self.engine._check_feeds(feeds)
            shapes = {k: v.shape for k, v in checked.items()}
            req.prepared = None
            req.data = checked
        n = -1
        for name in self._input_names:
            shape = shapes[name]
            if n < 0:
                n = shape[0]
            elif shape[0] != n:
                raise InputSpecError(
                    f"input {name!r} carries {shape[0]} items along dimension 0 but "
                    f"{self._input_names[0]!r} carries {n}; every input of a request needs the same batch size",
                    tensor=name,
                )
        if n < 1 or n > self.max_batch_size:
            raise InputSpecError(
                f"input {self._input_names[0]!r}: a request carries {n} items along dimension 0; it must carry "
                f"1..max_batch_size={self.max_batch_size}",
                tensor=self._input_names[0],
            )
        req.n = n
        req.shapes = shapes
        pad = self._pad_dims
        if pad:
            key = []
            dims: dict[str, int] = {}
            for name in self._input_names:
                rest = list(shapes[name][1:])
                for axis in pad[name]:
                    dim = _dim_key(self._spec(name), axis)  # unnamed axes pad independently
                    if dims.setdefault(dim, rest[axis - 1]) != rest[axis - 1]:
                        raise InputSpecError(
                            f"input {name!r}: dimension {dim!r} is {rest[axis - 1]} here but {dims[dim]} in "
                            "another input of the same request",
                            tensor=name,
                        )
                    rest[axis - 1] = -1
                key.append(tuple(rest))
            req.key = tuple(key)
            req.dims = dims
        else:
            req.key = tuple(shapes[name][1:] for name in self._input_names)
            req.dims = None
        return req

    # -- cancellation ------------------------------------------------------------------------
    def _on_cancel(self, req: _Request) -> None:
        with self._cv:
            if req.state != _QUEUED:
                return  # already taken (and found cancelled) by the scheduler or close
            req.state = _DONE_EARLY
            self._depth -= 1
            self._cancelled += 1
            self._cv.notify()
        # CANCELLED -> CANCELLED_AND_NOTIFIED: wakes concurrent.futures.wait() and as_completed()
        req.future.set_running_or_notify_cancel()
        _settled(req)

    def _end_early(
        self, req: _Request, error: Exception, pending: list[tuple[_Answer, Exception]]
    ) -> bool:
        """Under the lock: take a queued request out with an error; False if it was cancelled meanwhile."""
        req.state = _DONE_EARLY
        self._depth -= 1
        if not req.future.set_running_or_notify_cancel():
            self._cancelled += 1
            return False
        pending.append((req.future, error))
        return True

    # -- scheduling --------------------------------------------------------------------------
    def _schedule_loop(self) -> None:
        try:
            self._schedule()
        except BaseException as e:  # a dead scheduler would strand every request and hang close()
            log.exception("batcher %r: scheduler failed; closing the batcher", self.name)
            with self._cv:
                self._closing = True
            self._abort_queued(f"the scheduler failed ({type(e).__name__}: {e}); the request was not run")
            for inst in self._instances:
                inst.inbox.put(None)

    def _schedule(self) -> None:
        cv = self._cv
        while True:
            pending: list[tuple[_Answer, Exception]] = []
            batch: list[_Request] | None = None
            target: _Instance | None = None
            alone = False
            stop = False
            with cv:
                while True:
                    now = _now()
                    self._expire(now, pending)
                    if pending:
                        break  # resolve outside the lock, then come back
                    if self._closing and (self._depth == 0 or not self._drain):
                        stop = True
                        break
                    wait: float | None = None
                    if self._depth > 0:
                        avail = self._available()
                        lone = self._lone_free()
                        if avail > 0 or lone:
                            batch, wait, alone = self._form(now, avail, lone)
                            if batch is not None:
                                break
                    if self._deadlines:
                        until = self._deadlines[0][0] - now
                        wait = until if wait is None else min(wait, until)
                    cv.wait(None if wait is None else min(max(wait, 0.0), _MAX_WAIT))
                if batch:  # may be empty when every request taken was cancelled meanwhile
                    target = self._claim(batch, alone)
            for fut, err in pending:
                fut.set_exception(err)
            if target is not None:
                target.inbox.put(batch)
            if stop:
                for inst in self._instances:
                    inst.inbox.put(None)
                return

    def _claim(self, batch: list[_Request], alone: bool) -> _Instance:
        """Under the lock: the instance that runs ``batch``, marked busy, its cores taken."""
        if alone:
            assert self._lone is not None
            target = self._lone
        else:
            self._idle -= 1
            target = next(i for i in self._instances if not i.busy and not i.lone)
        target.busy = True
        self._free -= target.cores
        self._running += len(batch)
        return target

    def _solo_for(self, key: tuple[Any, ...]) -> _Solo:
        solo = self._solo.get(key)
        if solo is None:
            if len(self._solo) >= _BIND_CACHE:  # bounded like the bound I/O: the oldest key goes
                del self._solo[next(iter(self._solo))]
            solo = self._solo[key] = _Solo()
        return solo

    def _available(self) -> int:
        """Under the lock: how many load instances may start a batch now (idle, and with a layout,
        their threads fit in the free cores)."""
        if not self._load_cores:
            return self._idle
        return min(self._idle, self._free // self._load_cores)

    def _lone_free(self) -> bool:
        """Under the lock: whether the lone engine may take the one queued request (nothing runs)."""
        return self._lone is not None and self._depth == 1 and self._free == self._cores and not self._lone.busy

    def _expire(self, now: float, pending: list[tuple[_Answer, Exception]]) -> None:
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            req = heapq.heappop(heap)[2]()
            if req is None or req.state != _QUEUED:
                continue
            waited = (now - req.t_submit) * 1e3
            err = DeadlineExceededError(
                f"batcher {self.name!r}: request deadline passed after {waited:.1f} ms in the queue; it was not run"
            )
            if self._end_early(req, err, pending):
                self._timed_out += 1

    def _form(self, now: float, avail: int, lone: bool) -> tuple[list[_Request] | None, float | None, bool]:
        """Under the lock, with ``avail`` load instances free or the lone one (``lone``): a batch
        to dispatch now and whether it goes to the lone engine, or how long to wait.

        The lone engine takes the one queued request when it arrived with nothing else queued or
        running (``seen == 1``): a request that came while others were in flight is part of a
        load and goes to the load engines (waiting for them if the lone one is running)."""
        best: tuple[Any, ...] | None = None
        best_head: _Request | None = None
        for key, kq in list(self._queues.items()):
            head = kq.head()
            if head is None:
                del self._queues[key]
                continue
            if best_head is None or (head.priority, -head.t_submit) > (
                best_head.priority,
                -best_head.t_submit,
            ):
                best, best_head = key, head
        if best_head is None:
            return None, None, False
        kq = self._queues[best]  # type: ignore[index]
        take: list[_Request] = []
        if lone and best_head.seen == 1 and self._solo_for(best_head.key).prefers_lone(now):
            take.append(best_head)
            self._pop(kq, take)
            return take, None, True
        if avail == 0:
            return None, None, False  # the load engines are busy: wait for one
        total = 0
        cap = self.max_batch_size
        if avail > 1:
            # several instances idle and at least one request for each: share the queue among them
            # at once rather than give it all to one instance while the others wait
            queued = sum(r.n for dq in (kq.high, kq.normal) for r in dq if r.state == _QUEUED)
            if queued >= avail:  # never below the head's own items: it must fit
                cap = min(cap, max(-(-queued // avail), best_head.n))
        full = False
        for dq in (kq.high, kq.normal):
            for req in dq:
                if req.state != _QUEUED:
                    continue
                if total + req.n > cap:
                    full = True
                    break
                take.append(req)
                total += req.n
            if full:
                break
        full = full or total == cap
        if self.quiet is None:  # Triton's rule: the window runs from the head's arrival
            go = best_head.t_submit + self.max_queue_delay
        else:  # adaptive: the window opens when an instance is free for the head and closes at a lull
            opened = max(best_head.t_submit, self._free_since)
            go = min(opened + self.max_queue_delay, max(opened, kq.last) + self.quiet)
        due = self._closing or full or now >= go
        preferred = self.preferred_batch_sizes
        if preferred and (not full or total > preferred[-1]):
            # the largest preferred size that a prefix of the candidates sums to exactly; also when
            # more than that is queued (Triton's rule: a full queue sends the largest preferred
            # batch, not max_batch_size, which is then the largest a request may be)
            sums = list(itertools.accumulate(r.n for r in take))
            hits = [i for i, s in enumerate(sums) if s in preferred]
            if hits and (due or full or sums[hits[-1]] == preferred[-1] or total >= preferred[-1]):
                take = take[: hits[-1] + 1]
                due = True
        if not due:
            return None, go - now, False
        self._pop(kq, take)
        return take, None, False

    def _pop(self, kq: _KeyQueue, take: list[_Request]) -> None:
        remaining = len(take)
        for dq in (kq.high, kq.normal):
            while remaining and dq:
                req = dq.popleft()
                if req.state == _QUEUED:
                    remaining -= 1
        now = _now()
        ring = self._queue_ring
        for req in take:
            self._depth -= 1
            if req.future.set_running_or_notify_cancel():
                req.state = _RUNNING
                ring.add(now - req.t_submit)
            else:
                req.state = _DONE_EARLY
                self._cancelled += 1
        take[:] = [r for r in take if r.state == _RUNNING]

    # -- running a batch ---------------------------------------------------------------------
    def _instance_loop(self, inst: _Instance) -> None:
        while True:
            batch = inst.inbox.get()
            if batch is None:
                break
            answers: list[tuple[_Request, dict[str, np.ndarray] | None, BaseException | None]] = []
            try:
                self._execute(inst, batch, answers)
            finally:
                # the engine is free again whatever happened to its batch, and is counted free
                # before the callers hear back: a caller that sends its next request at once
                # must find the batcher idle (to go alone) and the cores free
                with self._cv:
                    inst.busy = False
                    was = self._available()
                    self._free += inst.cores
                    self._running -= len(batch)
                    if not inst.lone:
                        self._idle += 1
                    if was == 0 and self._available() > 0:
                        self._free_since = _now()
                    self._cv.notify()
                self._answer(inst, answers)
        for io in inst.bound.values():
            io.close()
        inst.bound.clear()
        if self._owned:  # the batcher is closing: an engine it made goes with its thread
            inst.engine.close()

    def _execute(
        self,
        inst: _Instance,
        batch: list[_Request],
        answers: list[tuple[_Request, dict[str, np.ndarray] | None, BaseException | None]],
    ) -> None:
        """Run a batch; each request's result or error goes to ``answers``, in batch order."""
        t0 = _now()
        total = sum(req.n for req in batch)
        try:
            results = self._run_batch(inst, batch, total)
        except Exception as e:
            if len(batch) == 1:
                answers.append((batch[0], None, e))
            else:
                # one bad request must not fail the others: run each alone, so the error reaches
                # only the request that causes it (and each future gets its own exception)
                log.debug("batcher %s: batch of %d requests failed (%s); running them one by one",
                          self.name, len(batch), e)
                for req in batch:
                    try:
                        (out,) = self._run_batch(inst, [req], req.n)
                    except BaseException as e1:  # SystemExit & co. too: every request is answered
                        answers.append((req, None, e1))
                    else:
                        answers.append((req, out, None))
            return
        except BaseException as e:  # SystemExit or a framework's cancellation raised by a backend
            log.error("batcher %s: a batch raised %s; its requests get it, the instance goes on",
                      self.name, type(e).__name__)
            answers.extend((req, None, e) for req in batch)
            return
        finally:
            t1 = _now()
            inst.exec.add(t1 - t0)
            self._batch_s += 0.1 * (t1 - t0 - self._batch_s)  # racy between instances: a rough average
            inst.spans.append((t0, t1))
            inst.batches += 1
            inst.items += total
            inst.sizes[total] = inst.sizes.get(total, 0) + 1
        if len(batch) == 1 and self._lone is not None:
            solo = self._solo.get(batch[0].key)
            if solo is not None:  # a request alone (or one that came alone to a load engine)
                per_item = (t1 - t0) / total
                if inst.lone:
                    solo.lone.append(per_item)
                    solo.lone_at = t0
                elif batch[0].seen == 1:
                    solo.load.append(per_item)
                    solo.load_at = t0
        answers.extend((req, out, None) for req, out in zip(batch, results, strict=True))

    @staticmethod
    def _answer(
        inst: _Instance, answers: list[tuple[_Request, dict[str, np.ndarray] | None, BaseException | None]]
    ) -> None:
        """Hand each caller its answer; a future the caller keeps holds its result, not the
        request's inputs."""
        done = [(req, out) for req, out, err in answers if err is None]
        if len(done) == len(answers):
            _deliver([req for req, _ in done], [out for _, out in done])  # type: ignore[misc]
        else:
            for req, out, err in answers:
                if err is None:
                    req.future.set_result(out)  # type: ignore[arg-type]
                else:
                    log.debug("batcher request failed: %s", err)
                    req.future.set_exception(err)
        inst.succeeded += len(done)
        inst.failed += len(answers) - len(done)
        for req, _, _ in answers:
            _settled(req)

    def _run_batch(self, inst: _Instance, batch: list[_Request], total: int) -> list[dict[str, np.ndarray]]:
        io, shapes = self._bound_io(inst, batch, total)
        padded = self._fill(io, batch, shapes)
        io.run()
        return self._split(io, batch, total, padded)

    def _bound_io(
        self, inst: _Instance, batch: list[_Request], total: int
    ) -> tuple[BoundIO, dict[str, tuple[int, ...]]]:
        first = batch[0]
        if self._pad_dims and len(batch) > 1:
            shapes = {}
            for name in self._input_names:
                shape = list(first.shapes[name])
                for axis in self._pad_dims[name]:
                    shape[axis] = max(r.shapes[name][axis] for r in batch)
                shape[0] = total
                shapes[name] = tuple(shape)
        else:
            shapes = {name: (total, *first.shapes[name][1:]) for name in self._input_names}
        key = tuple(shapes.values())
        cache = inst.bound
        io = cache.get(key)
        if io is None:
            io = inst.engine.bind(shapes)
            cache[key] = io
            if len(cache) > _BIND_CACHE:
                _, old = cache.popitem(last=False)
                old.close()
        else:
            cache.move_to_end(key)
        return io, shapes

    def _fill(self, io: BoundIO, batch: list[_Request], shapes: dict[str, tuple[int, ...]]) -> bool:
        """Copy each request once into its slot of the bound inputs; True if any was padded."""
        bufs = io.inputs
        pipeline = self.preprocess
        padded = False
        off = 0
        for req in batch:
            n = req.n
            slots = {}
            for name in self._input_names:
                buf = bufs[name]
                shape = req.shapes[name]
                if shape[1:] == shapes[name][1:]:
                    slots[name] = buf[off : off + n]
                else:
                    padded = True
                    region = buf[off : off + n]
                    region[...] = 0
                    slots[name] = region[tuple(slice(0, d) for d in shape)]
            data = req.data
            if data is None:
                pipeline.fill(req.prepared, slots)  # type: ignore[union-attr,arg-type]
            else:
                for name, slot in slots.items():
                    slot[...] = data[name]
            off += n
        return padded

    def _split(
        self, io: BoundIO, batch: list[_Request], total: int, padded: bool
    ) -> list[dict[str, np.ndarray]]:
        outs = io.outputs
        for name, arr in outs.items():
            if arr.ndim == 0 or arr.shape[0] != total:
                raise BatchingError(
                    f"output {name!r} has shape {arr.shape} for a batch of {total} items: the batcher needs every "
                    "output to carry the batch along dimension 0"
                )
        results: list[dict[str, np.ndarray]] = []
        crop = self._crop if padded else None
        off = 0
        for req in batch:
            n = req.n
            res = {}
            for name, arr in outs.items():
                view = arr[off : off + n]
                if crop and name in crop:
                    index: list[slice] = [slice(None)] * arr.ndim
                    for axis, dim in crop[name]:
                        index[axis] = slice(0, req.dims[dim])  # type: ignore[index]
                    view = view[tuple(index)]
                res[name] = np.array(view, copy=True)
            results.append(res)
            off += n
        return results

    # -- lifetime ----------------------------------------------------------------------------
    def close(self, drain: bool = True, timeout: float | None = None) -> None:
        """Stop accepting requests. ``drain=True`` runs everything accepted first (``timeout``
        seconds at most: what is still queued then ends with ``BatcherClosedError``);
        ``drain=False`` ends every queued request with ``BatcherClosedError`` at once. Batches
        already running finish either way. Engines the batcher made are closed. Idempotent."""
        timeout = _timeout(timeout, ">= 0")
        end = None if timeout is None else _now() + timeout

        def join(thread: threading.Thread) -> None:  # Thread.join overflows past ~2**63 ns
            while thread.is_alive():
                left = _MAX_WAIT if end is None else end - _now()
                if left <= 0:
                    return
                thread.join(min(left, _MAX_WAIT))

        with self._cv:
            if not self._closing:
                self._closing = True
                self._drain = drain
            self._cv.notify_all()
        if not drain:
            self._abort_queued("closed without draining")
        me = threading.current_thread()  # close() from a future's callback runs on our own threads
        if self._scheduler is not me:
            join(self._scheduler)
            if self._scheduler.is_alive():
                self._abort_queued(f"close(timeout={timeout}) ran out before the request was run")
                self._scheduler.join(1.0)
        for inst in self._instances:
            if inst.thread is not me:
                join(inst.thread)

    def _abort_queued(self, why: str) -> None:
        pending: list[tuple[_Answer, Exception]] = []
        with self._cv:
            self._drain = False
            for kq in self._queues.values():
                for dq in (kq.high, kq.normal):
                    for req in dq:
                        if req.state == _QUEUED:
                            err = BatcherClosedError(f"batcher {self.name!r}: {why}")
                            if self._end_early(req, err, pending):
                                self._aborted += 1
                    dq.clear()
            self._queues.clear()
            self._cv.notify_all()
        for fut, error in pending:
            fut.set_exception(error)

    def __enter__(self) -> Batcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
