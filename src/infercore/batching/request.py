"""One accepted request and how it travels: its state, the queue of its shape key, the answer its
caller waits on (a Future, ``run``'s lock or an asyncio future), and the per-key timings that
route a request that comes alone.

Every transition out of ``QUEUED`` happens under the batcher's lock; an answer is set once.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ..preprocess import Prepared

__all__ = [
    "DONE_EARLY",
    "QUEUED",
    "RUNNING",
    "Answer",
    "AsyncSlot",
    "KeyQueue",
    "Request",
    "RequestFuture",
    "Solo",
    "Waiter",
    "deliver",
    "settled",
]

now = time.perf_counter

# request states
QUEUED, RUNNING, DONE_EARLY = 0, 1, 2

EXPLORE = 128  # a lone request in this many (or one a second) may run on the other engine, to time it
EXPLORE_S = 1.0
SAMPLES = 3
STALE = 10.0


class Request:
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
    future: Answer
    key: tuple[Any, ...]
    n: int
    priority: int
    seen: int  # requests in the batcher (queued or running) when it arrived, itself included; 2
    #            for a request that found it empty while a load was still going on
    shapes: Mapping[str, tuple[int, ...]]
    state: int
    t_submit: float

    def __init__(self) -> None:
        self.state = QUEUED


class RequestFuture(Future[dict[str, np.ndarray]]):
    """A Future whose successful ``cancel()`` takes its request out of the batcher's queue."""

    def __init__(self, on_cancel: Callable[[Request], None]) -> None:
        super().__init__()
        self._on_cancel = on_cancel
        self._request: Request | None = None  # None once settled: no future -> request -> future cycle

    def track(self, req: Request) -> None:
        """Remember the request for ``cancel``, unless it was answered already."""
        self._request = req
        if self.done():  # answered before submit returned: settled() may have run before us
            self._request = None

    def cancel(self) -> bool:
        if not super().cancel():
            return False
        if self._request is not None:
            self._on_cancel(self._request)
        return True


class Waiter:
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


class AsyncSlot:
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


Answer = Future[dict[str, np.ndarray]] | Waiter | AsyncSlot  # how a request's answer reaches its caller


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


def deliver(batch: Sequence[Request], results: Sequence[dict[str, np.ndarray]]) -> None:
    """Each request's result to its caller; asyncio callers get theirs per loop, in one go."""
    loops: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any, None]]] | None = None
    for req, out in zip(batch, results, strict=True):
        fut = req.future
        if type(fut) is AsyncSlot:
            if loops is None:
                loops = {}
            loops.setdefault(fut.loop, []).append((fut.fut, out, None))
        else:
            fut.set_result(out)
    if loops:
        for loop, items in loops.items():
            _call_in(loop, _settle_all, items)


def settled(req: Request) -> None:
    """A request that has its answer keeps nothing: its inputs go, and its future forgets it."""
    req.data = req.prepared = None
    fut = req.future
    if isinstance(fut, RequestFuture):
        fut._request = None


class KeyQueue:
    """Queued requests of one shape key: high priority first, FIFO within a priority."""

    __slots__ = ("high", "last", "normal")

    def __init__(self) -> None:
        self.high: deque[Request] = deque()
        self.normal: deque[Request] = deque()
        self.last = 0.0  # when the latest request of this key arrived

    def head(self) -> Request | None:
        for dq in (self.high, self.normal):
            while dq and dq[0].state != QUEUED:
                dq.popleft()  # dead entries (cancelled, expired) are dropped when reached
            if dq:
                return dq[0]
        return None

    def items(self, enough: int | None = None) -> int:
        """Items queued, counted up to ``enough`` (or all)."""
        total = 0
        for dq in (self.high, self.normal):
            for req in dq:
                if req.state == QUEUED:
                    total += req.n
                    if enough is not None and total >= enough:
                        return total
        return total


class Solo:
    """Per shape key: seconds per item of a request that came alone, on the lone engine and on a
    load engine (the last SAMPLES of each with when they ran, written by the instance threads). A
    lone request goes to whichever runs it faster now (the host's other work slows a wide engine
    more than a narrow one). While the other one has fewer than SAMPLES figures, or any of them is
    older than STALE seconds, it runs the lone request that comes after a gap of EXPLORE requests
    or EXPLORE_S seconds since it last did, so the choice follows the host within a few seconds of
    a change (with staleness counted from the newest figure, two old ones outvoted each fresh one
    for another STALE seconds); one request in EXPLORE (or one a second) is too few to move a p99."""

    __slots__ = ("count", "explored_at", "load", "lone")

    def __init__(self) -> None:
        self.lone: deque[tuple[float, float]] = deque(maxlen=SAMPLES)  # (seconds per item, when)
        self.load: deque[tuple[float, float]] = deque(maxlen=SAMPLES)
        self.explored_at = now()
        self.count = 0

    def prefers_lone(self, t: float) -> bool:
        self.count += 1
        lone, load = self.lone, self.load
        # until both were timed, the probe's pick (it kept the lone engine for being faster)
        choice = not (lone and load) or _median(lone) <= _median(load)
        other = load if choice else lone
        if (len(other) < SAMPLES or t - other[0][1] > STALE) and (
            self.count >= EXPLORE or t - self.explored_at > EXPLORE_S
        ):
            self.count = 0
            self.explored_at = t
            return not choice
        return choice

    def timed(self, per_item: float, t: float, lone: bool) -> None:
        """A lone request's seconds per item, run on the lone engine or on a load engine at ``t``."""
        (self.lone if lone else self.load).append((per_item, t))


def _median(figures: deque[tuple[float, float]]) -> float:
    return sorted(v for v, _ in figures)[len(figures) // 2]
