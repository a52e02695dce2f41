"""``Batcher``: the scheduler and the instance threads (see the package docstring).

What a request is and how its answer reaches the caller is in ``request``; how requests map onto a
batch's buffers in ``plan``; which engines run in ``engines``; how other shapes' batches are bounded
in ``pace``; what the batcher reports in ``stats``.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import numpy as np

from ..arguments import check_int, check_number, check_timeout
from ..engine import Engine
from ..errors import ArgumentError, BatcherClosedError, DeadlineExceededError, QueueFullError
from ..layout import Layout
from ..specs import TensorSpec
from .engines import Instance, layout_engines, make_engines, remeasure, takes_no_args, takes_threads
from .pace import Pace
from .plan import BIND_CACHE, BatchPlan
from .request import (
    DONE_EARLY,
    QUEUED,
    RUNNING,
    Answer,
    AsyncSlot,
    KeyQueue,
    Request,
    RequestFuture,
    Solo,
    Waiter,
    settled,
)
from .second_look import SecondLook
from .stats import BatcherMetrics, LatencyRing, snapshot

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..preprocess import Pipeline

__all__ = ["AUTO_QUEUE_DELAY", "AUTO_QUIET", "Batcher"]

log = logging.getLogger("infercore.batching")

_now = time.perf_counter
AUTO_QUEUE_DELAY = 0.0
"""``max_queue_delay`` with a chosen layout: a batch goes as soon as an engine is free for it;
under load, batches grow on their own while every engine is busy."""
AUTO_QUIET: float | None = None
"""``quiet`` with a chosen layout."""
_LONE_AFTER = 0.05  # seconds (or 4 batch times) without two requests at once before one is alone
_MAX_WAIT = 3600.0  # the scheduler re-checks at least hourly: Condition.wait overflows past ~2**63 ns


def _wait(parameter: str, value: float | None) -> float | None:
    """A wait in seconds: >= 0, inf (wait for a full batch) or None (the default)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value == float("inf"):
        return float("inf")
    return check_number(parameter, value, optional=True)


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
        timeout = check_timeout(timeout)
        instances = check_int("instances", instances, optional=True)
        if not (layout is None or layout == "auto" or isinstance(layout, Layout)):
            raise ArgumentError("layout", f"expected 'auto', a Layout or None, got {layout!r}")
        cores = check_int("cores", cores, optional=True)
        self.name = name or f"batcher-{id(self):x}"
        self.max_queue_size = max_queue_size
        self.timeout = timeout
        self.preprocess = preprocess

        # which engines: a layout the batcher chooses (or is given), or ``instances`` alike
        threads_factory = not isinstance(engine, Engine) and callable(engine) and takes_threads(engine)
        sizes_given = preferred_batch_sizes is not None
        if isinstance(layout, Layout) and not threads_factory:
            raise TypeError(
                "a Layout needs engine to be a factory taking threads=, e.g. lambda threads: "
                "ic.load(path, threads=threads)"
            )
        choose = threads_factory and layout is not None and (isinstance(layout, Layout) or instances is None)
        self.layout: Layout | None = None
        lone_engine: Engine | None = None
        if choose:
            engines, lone_engine, lay = layout_engines(
                engine,  # type: ignore[arg-type]
                layout,  # type: ignore[arg-type]
                cores=cores,
                probe_feeds=probe_feeds,
                max_batch_size=max_batch_size or 32,
                name=self.name,
            )
            self.layout = lay
            self._owned = True
            if max_batch_size is None:
                max_batch_size = max(32, lay.batch_size or 1)
                if any(s.shape[0] is not None for s in engines[0].inputs):
                    max_batch_size = 1  # a fixed batch dimension of 1
            # a probe that had to guess a dynamic dimension picked its batch size on the guess: the
            # first request's shape measures it again (unless the caller chose the sizes)
            reprobe = preferred_batch_sizes is None and lay.source.startswith("probe") and bool(
                lay.probe.get("shapes_guessed")
            )
            if preferred_batch_sizes is None:
                preferred_batch_sizes = (lay.batch_size,) if lay.batch_size and lay.batch_size < max_batch_size else ()
            if max_queue_delay is None and quiet is None:
                max_queue_delay, quiet = AUTO_QUEUE_DELAY, AUTO_QUIET
            # a quiet period given alone needs a window to end early: the usual 2 ms below
        else:
            reprobe = False
            source: Engine | Callable[[], Engine] = engine
            if threads_factory and not takes_no_args(engine):
                factory: Callable[..., Engine] = engine  # type: ignore[assignment]

                def source() -> Engine:
                    return factory(threads=None)

            engines, self._owned = make_engines(source, instances or 1)
        self.max_batch_size = 32 if max_batch_size is None else max_batch_size
        try:
            preferred = sorted({int(check_int("preferred_batch_sizes", p)) for p in preferred_batch_sizes or ()})  # type: ignore[arg-type]
            if any(p > self.max_batch_size for p in preferred):
                raise ArgumentError(
                    "preferred_batch_sizes", f"{preferred} must lie in 1..max_batch_size={self.max_batch_size}"
                )
            everyone = engines if lone_engine is None else [*engines, lone_engine]
            self._plan = BatchPlan(everyone, self.max_batch_size, pad, preprocess)
        except BaseException:
            for e in (*engines, lone_engine) if self._owned else ():
                if e is not None:
                    e.close()
            raise
        self.preferred_batch_sizes = tuple(preferred)
        self._pace = Pace(self._plan.key_of)  # other shapes' batches bounded by time (pace.py)
        self._pace.measured(None if sizes_given else self.layout)
        # a queue shorter than a preferred batch per load engine prefers this (Layout.short_batch)
        self._short = None if sizes_given or self.layout is None else self.layout.short_batch
        self.max_queue_delay = 0.002 if max_queue_delay is None else float(max_queue_delay)
        self.quiet = None if quiet is None else float(quiet)
        instances = len(engines)

        self.engine = engines[0]
        self.inputs: tuple[TensorSpec, ...] = self.engine.inputs
        self.outputs: tuple[TensorSpec, ...] = self.engine.outputs
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
        self._queues: dict[tuple[Any, ...], KeyQueue] = {}
        # (deadline, seq, weakref to the request): a finished request is not kept for its deadline
        self._deadlines: list[tuple[float, int, weakref.ref[Request]]] = []
        self._seq = itertools.count()
        self._depth = 0
        self._running = 0  # requests in batches that run now
        # when a request last arrived with another in the batcher, and how long batches take: a
        # request is alone only when no two were in the batcher for a few batch times (two callers
        # whose requests were batched together come back one after the other to an empty batcher)
        self._concurrent_at = -1e9
        self._batch_s = 0.0
        # cores: with a layout, engines start only while their threads fit in the free cores
        chosen = self.layout
        width = chosen.threads if chosen is not None else 0
        self._cores = chosen.cores if chosen is not None else 0
        self._free = self._cores
        self._load_cores = width
        self._idle = instances  # idle instances that run batches under load (not the lone one)
        # since when some instance has been free without a break: with ``quiet``, a batch's fill
        # window opens at max(head's arrival, this), so a head that waited for capacity gets one
        self._free_since = 0.0
        # the batch size measured again on a served shape (second_look.py): while ``hold`` no
        # batch starts, and once the engines are idle a thread measures them
        guessed = chosen.probe.get("shapes") if chosen is not None else None
        self._look = SecondLook(reprobe and self.max_batch_size > 1, guessed)
        self._closing = False
        self._drain = True
        self._submitted = 0
        self._rejected = 0
        self._timed_out = 0
        self._cancelled = 0
        self._aborted = 0
        self._queue_ring = LatencyRing()  # written by the scheduler thread only
        self._instances = [
            Instance(self._instance_loop, f"{self.name}-instance-{i}", i, e, width) for i, e in enumerate(engines)
        ]
        self._lone: Instance | None = None
        self._solo: dict[tuple[Any, ...], Solo] = {}  # per shape key, for the lone engine's routing
        if lone_engine is not None:
            assert chosen is not None and chosen.lone_threads is not None
            self._lone = Instance(
                self._instance_loop, f"{self.name}-instance-{len(engines)}", len(engines), lone_engine,
                chosen.lone_threads, lone=True,
            )
            self._instances.append(self._lone)
        self._scheduler = threading.Thread(
            target=self._schedule_loop, name=f"{self.name}-scheduler", daemon=True
        )
        for inst in self._instances:
            inst.thread.start()
        self._scheduler.start()

    # -- construction checks ---------------------------------------------------------------------
    # -- introspection -----------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closing

    @property
    def metrics(self) -> BatcherMetrics:
        with self._cv:
            counts = (self._submitted, self._rejected, self._timed_out, self._cancelled, self._aborted, self._depth)
        return snapshot(self.name, self._instances, counts, self._queue_ring, self.layout, self._pace.budget)

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
        fut = RequestFuture(self._on_cancel)
        fut.track(self._enqueue(feeds, fut, timeout, priority))
        return fut

    async def infer(
        self, feeds: Any, *, timeout: float | None = None, priority: int = 0
    ) -> dict[str, np.ndarray]:
        """``submit`` for asyncio: cancelling the awaiting task takes the request out of the queue."""
        slot = AsyncSlot(asyncio.get_running_loop())
        req = self._enqueue(feeds, slot, timeout, priority)
        try:
            return await slot.fut
        except asyncio.CancelledError:
            self._on_cancel(req)
            raise

    def run(self, feeds: Any, *, timeout: float | None = None, priority: int = 0) -> dict[str, np.ndarray]:
        """``submit`` and wait for the result (the batcher itself enforces ``timeout``)."""
        waiter = Waiter()
        self._enqueue(feeds, waiter, timeout, priority)
        return waiter.wait()

    def _enqueue(
        self,
        feeds: Any,
        answer: Answer,
        timeout: float | None,
        priority: int,
    ) -> Request:
        if self._closing:
            raise BatcherClosedError(f"batcher {self.name!r} is closed; no new requests are accepted")
        if priority not in (0, 1):
            raise ArgumentError("priority", f"expected 0 (normal) or 1 (high), got {priority!r}")
        timeout = self.timeout if timeout is None else check_timeout(timeout)
        req = self._plan.request(feeds)
        req.priority = priority
        req.future = answer
        look = self._look
        sample = self._plan.sample(req) if look.wants_sample() else None
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
                kq = self._queues[req.key] = KeyQueue()
            (kq.high if priority else kq.normal).append(req)
            kq.last = req.t_submit
            wake = False
            if req.deadline is not None:
                heap = self._deadlines
                if len(heap) > 2 * self._depth + 64:  # mostly finished requests: keep the queued ones
                    heap[:] = [e for e in heap if (r := e[2]()) is not None and r.state == QUEUED]
                    heapq.heapify(heap)
                seq = next(self._seq)
                heapq.heappush(heap, (req.deadline, seq, weakref.ref(req)))
                wake = heap[0][1] == seq  # the earliest deadline: the scheduler must wake for it
            self._depth += 1
            self._submitted += 1
            if sample is not None and look.offer(sample, now):
                wake = True  # the scheduler keeps the look's time
            if req.deadline is not None and look.hold:
                look.deadline(req.deadline)
            avail, lone = self._available(), self._lone_free()
            batch: list[Request] | None = None
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

    # -- cancellation ------------------------------------------------------------------------
    def _on_cancel(self, req: Request) -> None:
        with self._cv:
            if req.state != QUEUED:
                return  # already taken (and found cancelled) by the scheduler or close
            req.state = DONE_EARLY
            self._depth -= 1
            self._cancelled += 1
            self._cv.notify()
        # CANCELLED -> CANCELLED_AND_NOTIFIED: wakes concurrent.futures.wait() and as_completed()
        req.future.set_running_or_notify_cancel()
        settled(req)

    def _end_early(
        self, req: Request, error: Exception, pending: list[tuple[Answer, Exception]]
    ) -> bool:
        """Under the lock: take a queued request out with an error; False if it was cancelled meanwhile."""
        req.state = DONE_EARLY
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
            self._stop_instances()

    def _stop_instances(self) -> None:
        """Each instance thread ends after its queued batches (and closes an engine it owns), once
        a re-measure of the batch size, which runs on their engines, is over."""
        thread = self._look.thread
        if thread is not None:
            thread.join()
        for inst in self._instances:
            inst.inbox.put(None)

    def _schedule(self) -> None:
        cv = self._cv
        while True:
            pending: list[tuple[Answer, Exception]] = []
            batch: list[Request] | None = None
            target: Instance | None = None
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
                    look = self._look
                    if look.pending():
                        if self._closing:
                            look.drop()  # not worth measuring any more
                        elif look.due(now, self._depth == 0 and self._running == 0, self._tight) and not self._running:
                            look.start(self._reprobe, f"{self.name}-reprobe")  # every engine idle: measure
                    wait = look.wait(now)
                    if self._depth > 0:
                        avail = self._available()
                        lone = self._lone_free()
                        if avail > 0 or lone:
                            batch, formed, alone = self._form(now, avail, lone)
                            if batch is not None:
                                break
                            if formed is not None:
                                wait = formed if wait is None else min(wait, formed)
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
                self._stop_instances()
                return

    def _claim(self, batch: list[Request], alone: bool) -> Instance:
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

    def _solo_for(self, key: tuple[Any, ...]) -> Solo:
        solo = self._solo.get(key)
        if solo is None:
            if len(self._solo) >= BIND_CACHE:  # bounded like the bound I/O: the oldest key goes
                del self._solo[next(iter(self._solo))]
            solo = self._solo[key] = Solo()
        return solo

    def _available(self) -> int:
        """Under the lock: how many load instances may start a batch now (idle, and with a layout,
        their threads fit in the free cores)."""
        if self._look.hold:
            return 0
        if not self._load_cores:
            return self._idle
        return min(self._idle, self._free // self._load_cores)

    def _lone_free(self) -> bool:
        """Under the lock: whether the lone engine may take the one queued request (nothing runs)."""
        lone = self._lone
        return lone is not None and not lone.busy and not self._look.hold and self._depth == 1 and self._free == self._cores

    def _tight(self, t: float) -> bool:
        """Under the lock: whether a queued request's deadline falls before ``t``."""
        return any(e[0] < t and (r := e[2]()) is not None and r.state == QUEUED for e in self._deadlines)

    def _reprobe(self) -> None:
        """The second look (second_look.py): the load engines measured on a served request's
        shape; its peak replaces the probe's preferred batch size. Runs while every engine is
        idle and no batch may start; queued requests wait for it, or stop it."""
        look = self._look
        assert look.feeds is not None and self.layout is not None
        load = [i.engine for i in self._instances if not i.lone]
        size, layout, outcome = None, self.layout, "failed"
        try:
            size, layout, outcome = remeasure(self.layout, load, look.feeds, self.max_batch_size, self.name, look)
        finally:  # whatever happened, the queue goes on
            with self._cv:
                if size is not None:
                    self.preferred_batch_sizes = (size,) if size < self.max_batch_size else ()
                    self._pace.measured(layout)
                    self._short = layout.short_batch
                self.layout = layout
                look.finish(outcome)
                self._free_since = _now()
                self._cv.notify_all()

    def _expire(self, now: float, pending: list[tuple[Answer, Exception]]) -> None:
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            req = heapq.heappop(heap)[2]()
            if req is None or req.state != QUEUED:
                continue
            waited = (now - req.t_submit) * 1e3
            err = DeadlineExceededError(
                f"batcher {self.name!r}: request deadline passed after {waited:.1f} ms in the queue; it was not run"
            )
            if self._end_early(req, err, pending):
                self._timed_out += 1

    def _form(self, now: float, avail: int, lone: bool) -> tuple[list[Request] | None, float | None, bool]:
        """Under the lock, with ``avail`` load instances free or the lone one (``lone``): a batch
        to dispatch now and whether it goes to the lone engine, or how long to wait.

        The lone engine takes the one queued request when it arrived with nothing else queued or
        running (``seen == 1``): a request that came while others were in flight is part of a
        load and goes to the load engines (waiting for them if the lone one is running)."""
        best: tuple[Any, ...] | None = None
        best_head: Request | None = None
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
        take: list[Request] = []
        if lone and best_head.seen == 1 and self._solo_for(best_head.key).prefers_lone(now):
            take.append(best_head)
            self._pop(kq, take)
            return take, None, True
        if avail == 0:
            return None, None, False  # the load engines are busy: wait for one
        total = 0
        cap, paced = self._pace.cap(best, best_head.n, self.max_batch_size)  # type: ignore[arg-type]
        if avail > 1:
            # several instances idle and at least one request for each: share the queue among them
            # at once rather than give it all to one instance while the others wait
            queued = kq.items()
            if queued >= avail:  # never below the head's own items: it must fit
                cap = min(cap, max(-(-queued // avail), best_head.n))
        full = False
        for dq in (kq.high, kq.normal):
            for req in dq:
                if req.state != QUEUED:
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
        preferred = () if paced else self.preferred_batch_sizes  # measured on another shape (pace.py)
        if preferred and self._short is not None and self._short < preferred[-1]:
            deep = (len(self._instances) - (self._lone is not None)) * preferred[-1]
            if kq.items(deep) < deep:  # a short queue (Layout.short_batch)
                preferred = (self._short,)
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

    def _pop(self, kq: KeyQueue, take: list[Request]) -> None:
        remaining = len(take)
        for dq in (kq.high, kq.normal):
            while remaining and dq:
                req = dq.popleft()
                if req.state == QUEUED:
                    remaining -= 1
        now = _now()
        ring = self._queue_ring
        for req in take:
            self._depth -= 1
            if req.future.set_running_or_notify_cancel():
                req.state = RUNNING
                ring.add(now - req.t_submit)
            else:
                req.state = DONE_EARLY
                self._cancelled += 1
        take[:] = [r for r in take if r.state == RUNNING]

    # -- running a batch ---------------------------------------------------------------------
    def _instance_loop(self, inst: Instance) -> None:
        while True:
            batch = inst.inbox.get()
            if batch is None:
                break
            answers: list[tuple[Request, dict[str, np.ndarray] | None, BaseException | None]] = []
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
                inst.answer(answers)
        for io in inst.bound.values():
            io.close()
        inst.bound.clear()
        if self._owned:  # the batcher is closing: an engine it made goes with its thread
            inst.engine.close()

    def _execute(
        self,
        inst: Instance,
        batch: list[Request],
        answers: list[tuple[Request, dict[str, np.ndarray] | None, BaseException | None]],
    ) -> None:
        """Run a batch; each request's result or error goes to ``answers``, in batch order."""
        t0 = _now()
        total = sum(req.n for req in batch)
        try:
            results = self._plan.run(inst.engine, inst.bound, batch, total)
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
                        (out,) = self._plan.run(inst.engine, inst.bound, [req], req.n)
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
        if not inst.lone:
            self._pace.timed(batch[0].key, t1 - t0, total)
        if len(batch) == 1 and self._lone is not None:
            solo = self._solo.get(batch[0].key)
            # a request alone, or one that came alone to a load engine
            if solo is not None and (inst.lone or batch[0].seen == 1):
                solo.timed((t1 - t0) / total, t0, inst.lone)
        answers.extend((req, out, None) for req, out in zip(batch, results, strict=True))

    # -- lifetime ----------------------------------------------------------------------------
    def close(self, drain: bool = True, timeout: float | None = None) -> None:
        """Stop accepting requests. ``drain=True`` runs everything accepted first (``timeout``
        seconds at most: what is still queued then ends with ``BatcherClosedError``);
        ``drain=False`` ends every queued request with ``BatcherClosedError`` at once. Batches
        already running finish either way. Engines the batcher made are closed. Idempotent."""
        timeout = check_timeout(timeout, zero=True)
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
            self._look.stop = True  # a second look under way gives way to the drain
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
        pending: list[tuple[Answer, Exception]] = []
        with self._cv:
            self._drain = False
            for kq in self._queues.values():
                for dq in (kq.high, kq.normal):
                    for req in dq:
                        if req.state == QUEUED:
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
