"""The batch size's second look: when the layout probe had to guess a dynamic dimension (an image
model probed at 64 x 64, served at 320 x 320), the load engines are measured again on a request of
the shape actually served (``infercore.layout.remeasure_batch``), and the peak becomes the
Batcher's preferred batch size.

The measurement needs the load engines to itself, so no batch starts while it runs (``hold``).
It is taken when the Batcher is idle (nothing queued or running: the request that brought the
shape is answered first), or, under a load that leaves no idle moment, after ``PATIENCE`` seconds
once the running batches end (queued requests then wait, about ``REPROBE_SECONDS``). It yields to
requests that cannot wait: one whose deadline falls before the measurement would end stops it (or
keeps it from starting), and it is tried again later. A failed or stopped look is tried again, up
to ``ATTEMPTS`` times in all; then the probe's pick stays, as the record says.

The state lives here, read and changed under the Batcher's lock; the measuring runs on a thread of
its own (``start``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ..layout import REPROBE_SECONDS

__all__ = ["ATTEMPTS", "PATIENCE", "SecondLook"]

PATIENCE = 1.0
"""Seconds a served shape waits for an idle Batcher before the queue is held to measure it."""
ATTEMPTS = 3
"""Looks tried at most (a failed one, or one stopped for a request with a deadline)."""
_SPAN = 2 * REPROBE_SECONDS  # what one look may take: the budget, and first runs on top


class SecondLook:
    def __init__(self, wanted: bool, guessed: Mapping[str, Sequence[int]] | None) -> None:
        self.wanted = wanted  # a look is still to be taken
        self.guessed = dict(guessed or {})  # the shapes the probe measured: no look for those
        self.attempts = 0
        self.feeds: dict[str, np.ndarray] | None = None  # a served request, once one came
        self.since = 0.0  # when it came
        self.hold = False  # no batch may start: the look waits for running batches, or runs
        self.ends_by = 0.0  # with hold: when the look should be over
        self.thread: threading.Thread | None = None
        self.stop = False  # the running look is asked to end (a deadline, or close)

    def wants_sample(self) -> bool:
        """Whether a request's feeds are worth copying for a look (read without the lock: a
        stale answer costs one copy, or one request later)."""
        return self.wanted and self.feeds is None

    def offer(self, sample: dict[str, np.ndarray], now: float) -> bool:
        """Under the lock: a served request's feeds; True when they start a look's wait."""
        if not self.wanted or self.feeds is not None:
            return False
        if {k: list(v.shape[1:]) for k, v in sample.items()} == self.guessed:
            self.wanted = False  # served at the shape the probe measured: its pick holds
            return False
        self.feeds, self.since = sample, now
        return True

    def pending(self) -> bool:
        """Under the lock: a look waits to be taken (not running yet)."""
        return self.feeds is not None and self.thread is None

    def wait(self, now: float) -> float | None:
        """Seconds until the scheduler must look again (the end of the patience), if it must."""
        if not self.pending() or self.hold or now - self.since >= PATIENCE:
            return None  # after the patience: each batch that ends wakes the scheduler anyway
        return self.since + PATIENCE - now

    def due(self, now: float, idle: bool, tight: Callable[[float], bool]) -> bool:
        """Under the lock, while pending: whether to hold the queue for the look now. ``idle``:
        nothing queued or running; ``tight(t)``: a queued request's deadline falls before ``t``."""
        if self.hold:
            return True
        if not (idle or now - self.since >= PATIENCE) or tight(now + _SPAN):
            return False
        self.hold, self.ends_by = True, now + _SPAN
        return True

    def deadline(self, deadline: float) -> None:
        """Under the lock: a request with this deadline came. One that cannot wait for the look
        stops it, or releases a hold that waits for running batches (tried again later)."""
        if self.hold and deadline < self.ends_by:
            if self.thread is not None:
                self.stop = True
            else:
                self.hold = False  # due() holds again once no queued deadline is that close

    def start(self, target: Callable[[], None], name: str) -> None:
        """Under the lock, once every engine is idle: measure on a thread of its own."""
        self.stop = False
        self.thread = threading.Thread(target=target, name=name, daemon=True)
        self.thread.start()

    def finish(self, outcome: str) -> None:
        """Under the lock, from the look's thread: ``"done"``, ``"failed"`` or ``"stopped"``. The
        queue goes on; a failed or stopped look is tried again while attempts are left (a failed
        one on the next request's feeds: the last ones may be what the model refuses)."""
        self.attempts += 1
        self.hold, self.thread, self.stop = False, None, False
        if outcome == "done" or self.attempts >= ATTEMPTS:
            self.wanted, self.feeds = False, None
        elif outcome == "failed":
            self.feeds = None

    def drop(self) -> None:
        """Under the lock: closing, a look not yet taken is not worth taking."""
        self.wanted, self.feeds, self.hold = False, None, False

    def record(self, outcome: str, record: dict[str, Any]) -> dict[str, Any]:
        """The look's record with the attempt it was and what became of it."""
        return {**record, "attempt": self.attempts + 1, "outcome": outcome}
