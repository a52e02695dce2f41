"""What a batcher reports: ``BatcherMetrics`` snapshots, their ``LatencySummary`` percentiles, and
the lock-free rings of recent latencies they are computed from."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["RING", "BatcherMetrics", "LatencyRing", "LatencySummary", "snapshot", "summarize"]

RING = 4096  # latencies kept per recorder for percentiles (the most recent ones); a power of two


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
    (``Layout.as_dict``), or None. ``batch_budget_ms``: the preferred batch's run time on one load
    engine where it was measured; batches of other shapes run within 1.5 times it (``pace``), or
    None (no time bound: sizes given, or nothing measured).
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
    batch_budget_ms: float | None = None

    @property
    def mean_batch_size(self) -> float | None:
        return self.items / self.batches if self.batches else None


class LatencyRing:
    """Latencies written by one thread only: no lock, a snapshot may miss the latest sample."""

    __slots__ = ("buf", "n")

    def __init__(self) -> None:
        self.buf = [0.0] * RING
        self.n = 0

    def add(self, seconds: float) -> None:
        self.buf[self.n & (RING - 1)] = seconds
        self.n += 1

    def values(self) -> list[float]:
        return self.buf[: min(self.n, RING)]


def summarize(values: list[float]) -> LatencySummary:
    """Percentiles of latencies given in seconds."""
    if not values:
        return LatencySummary(0, None, None, None, None, None)
    a = np.asarray(values, dtype=np.float64) * 1e3
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return LatencySummary(int(a.size), float(a.mean()), float(p50), float(p90), float(p99), float(a.max()))


def snapshot(
    name: str, insts: Sequence[Any], counts: Sequence[int], queue: LatencyRing, layout: Any,
    budget: float | None = None,
) -> BatcherMetrics:
    """A batcher's metrics from its instances (``engines.Instance``), its counters taken under its
    lock (submitted, rejected, timed out, cancelled, aborted, queue depth), its queue-wait ring and
    its layout (or None), and the time budget of other shapes' batches in seconds (or None)."""
    submitted, rejected, timed_out, cancelled, aborted, depth = counts
    succeeded = sum(i.succeeded for i in insts)
    failed = sum(i.failed for i in insts)
    sizes: dict[int, int] = {}
    for inst in insts:
        for k, v in list(inst.sizes.items()):
            sizes[k] = sizes.get(k, 0) + v
    in_flight = max(0, submitted - succeeded - failed - timed_out - cancelled - aborted - depth)
    engines = tuple(
        {"role": "lone" if i.lone else "load",
         "threads": (layout.lone_threads if i.lone else layout.threads) if layout else None,
         "batches": i.batches, "items": i.items}
        for i in insts
    )  # fmt: skip
    return BatcherMetrics(
        name, submitted, succeeded, failed, rejected, timed_out, cancelled, aborted, depth, in_flight,
        sum(i.batches for i in insts), sum(i.items for i in insts), dict(sorted(sizes.items())),
        summarize(queue.values()), summarize([v for i in insts for v in i.exec.values()]),
        engines, None if layout is None else layout.as_dict(), None if budget is None else round(budget * 1e3, 3),
    )  # fmt: skip
