"""Batches of other shapes bounded by time: the preferred batch size the probe (or the second look)
picked holds for the shape it was measured on; a request of another shape is batched only up to
what fits in the time that preferred batch takes, from that shape's own run times, and the
preferred size does not apply to it: a lighter shape gets larger batches.

A count alone does not carry across shapes. MiniLM measured at sequence 8 peaks at batch 32 (a
batch of 32 short sequences runs in tens of milliseconds); the same 32 at sequence 128 take half a
second on one thread, while its items/s peaks at batch 2 there: longer batches only add queueing
(32 callers: p99 518-660 ms against 283-304 ms bounded by time). The other way, MiniLM measured
at sequence 256 peaks at batch 1, and sequence 32 run one at a time gave 0.64x the items/s of
batches sized at 32. Token-budget batching in LLM servers follows the same rule.

The budget is the measured batch's run time on one load engine (batch size x engines / items/s);
a shape gets ``SLACK`` times that, divided by the median of its last ``SAMPLES`` seconds per item on
a load engine; a shape not yet timed goes one request at a time until its first batch ends. Only
when the Batcher picked the preferred batch size itself: sizes given explicitly are kept as given.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..layout import Layout
from .plan import BIND_CACHE

__all__ = ["SAMPLES", "SLACK", "Pace", "batch_budget"]

SLACK = 1.5
"""How much longer than the measured batch a batch of another shape may run."""
SAMPLES = 8
"""Run times kept per shape (seconds per item; their median is the shape's figure)."""


def batch_budget(layout: Layout | None) -> tuple[float, dict[str, list[int]]] | None:
    """Seconds the preferred batch takes on one load engine, and the shapes it was measured on;
    None without a measured preferred size (a given layout, a failed probe, no batch size)."""
    if layout is None or not layout.batch_size or not layout.source.startswith("probe"):
        return None
    probe = layout.probe
    look = probe.get("reprobe") or {}
    if look.get("outcome") == "done" and look.get("batch_size") == layout.batch_size:
        rates, shapes = look.get("items_per_s") or {}, look.get("shapes")
    else:  # the probe's own pick: the group of engines that runs batches under load
        wide = layout.instances == 1 and layout.threads == layout.cores
        rates, shapes = (probe.get("items_per_s") or {}).get("wide" if wide else "narrow") or {}, probe.get("shapes")
    rate = rates.get(str(layout.batch_size))
    if not rate or not shapes:
        return None
    return layout.batch_size * layout.instances / float(rate), {k: list(v) for k, v in shapes.items()}


class Pace:
    """The per-shape batch cap (see the module docstring); thread-safe (the instance threads time
    batches while the scheduler forms them)."""

    def __init__(self, key_of: Callable[[Mapping[str, Sequence[int]]], tuple[Any, ...] | None]) -> None:
        self._key_of = key_of  # the shape key of a request of these per-item shapes
        self._lock = threading.Lock()
        self.budget: float | None = None  # seconds; None: no cap
        self._measured: tuple[Any, ...] | None = None  # the key the preferred size holds for
        self._per_item: OrderedDict[tuple[Any, ...], deque[float]] = OrderedDict()

    def measured(self, layout: Layout | None) -> None:
        """The layout's preferred batch size (the probe's, or the second look's) sets the budget."""
        found = batch_budget(layout)
        with self._lock:
            self.budget, self._measured = (None, None) if found is None else (found[0], self._key_of(found[1]))

    def cap(self, key: tuple[Any, ...], head: int, cap: int) -> tuple[int, bool]:
        """The most items a batch of ``key`` may take (never below the head request's ``head``),
        and whether that is the shape's own bound: then the preferred sizes, measured on another
        shape, do not apply to it (a lighter shape gets larger batches as well)."""
        with self._lock:
            if self.budget is None or key == self._measured:
                return cap, False
            times = self._per_item.get(key)
            if not times:
                return min(cap, head), True
            per_item = sorted(times)[len(times) // 2]
            return min(cap, max(head, int(SLACK * self.budget / per_item))), True

    def timed(self, key: tuple[Any, ...], seconds: float, items: int) -> None:
        """A batch of ``items`` items of ``key`` ran on a load engine in ``seconds``."""
        with self._lock:
            if self.budget is None:
                return
            times = self._per_item.get(key)
            if times is None:
                if len(self._per_item) >= BIND_CACHE:  # bounded like the bound I/O: the oldest goes
                    self._per_item.popitem(last=False)
                times = self._per_item[key] = deque(maxlen=SAMPLES)
            else:
                self._per_item.move_to_end(key)
            times.append(seconds / items)
