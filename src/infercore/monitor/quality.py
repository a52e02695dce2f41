"""Live quality from labelled feedback: predictions kept by request id for a bounded time, rolling
classification metrics, and a detector of an accuracy drop.

- :class:`PredictionStore`: request id -> the classifier output of that request, for at most
  ``ttl`` seconds and ``max_items`` ids (the oldest go first); a label consumes its prediction.
- :class:`QualityTracker`: the last ``window`` labelled predictions; accuracy, macro precision,
  recall, F1 and ROC AUC over them (:func:`infercore.metrics.classification`, binary and
  multiclass); and a Bernoulli CUSUM on "was the prediction right" that tests the baseline accuracy
  ``p0`` against ``p0 - drop`` (and, once it alarmed, the mirror test that clears the alarm when
  the accuracy is back). ``p0`` is the profile's reference accuracy (a profile built from
  labelled data) or else the accuracy of the first ``window`` labels less one standard error (an
  estimate that came out high would otherwise raise false alarms). The threshold makes the
  in-control average run length ``2 * window / alpha`` labels (:func:`cusum_run_length`): a false
  alarm in at most about ``alpha`` of the windows.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["PredictionStore", "QualityTracker", "bernoulli_cusum_threshold", "cusum_run_length"]


class PredictionStore:
    """Request id -> prediction, bounded in time and count; thread-safe."""

    def __init__(self, ttl: float, max_items: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.max_items = max_items
        self.clock = clock
        self._items: OrderedDict[str, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self.expired = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        item = self._items.get(key)  # type: ignore[call-overload]
        return item is not None and item[0] > self.clock()

    def put(self, key: str, value: Any) -> None:
        now = self.clock()
        items = self._items
        with self._lock:
            if key in items:
                items.move_to_end(key)
            items[key] = (now + self.ttl, value)
            while items:
                first = next(iter(items.values()))
                if first[0] <= now:
                    items.popitem(last=False)
                    self.expired += 1
                elif len(items) > self.max_items:
                    items.popitem(last=False)
                    self.evicted += 1
                else:
                    break

    def pop(self, key: str) -> Any | None:
        with self._lock:
            item = self._items.pop(key, None)
        if item is None:
            return None
        if item[0] <= self.clock():
            self.expired += 1
            return None
        return item[1]


def cusum_run_length(p0: float, p1: float, h: float) -> float:
    """In-control (accuracy ``p0``) average run length, in labels, of the Bernoulli CUSUM of the
    log-likelihood ratio of ``p1`` against ``p0`` with threshold ``h``: Wald's approximation with
    the expected overshoot (half a wrong prediction's increment) added to ``h``. Within 10% of
    simulation for accuracies 0.8-0.95 (tests/monitor check it against a simulation)."""
    up = math.log((1 - p1) / (1 - p0))
    kl = p0 * math.log(p0 / p1) + (1 - p0) * math.log((1 - p0) / (1 - p1))
    x = h + up / 2
    return (math.exp(min(x, 700.0)) - x - 1) / kl


@functools.lru_cache(maxsize=64)
def bernoulli_cusum_threshold(p0: float, p1: float, run_length: float) -> float:
    """The threshold whose in-control average run length is ``run_length`` labels."""
    lo, hi = 0.0, 700.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if cusum_run_length(p0, p1, mid) < run_length:
            lo = mid
        else:
            hi = mid
    return round(hi, 4)


class QualityTracker:
    """Rolling metrics and the accuracy-drop detector over labelled predictions (single-threaded:
    the monitor's worker feeds it)."""

    def __init__(
        self,
        classes: int,
        window: int,
        *,
        baseline: float | None = None,
        drop: float = 0.05,
        alpha: float = 0.01,
    ) -> None:
        self.classes = classes
        self.window = window
        self.drop = drop
        self.alpha = alpha
        self.scores = np.zeros((window, classes), dtype=np.float32)
        self.labels = np.zeros(window, dtype=np.int64)
        self.filled = 0
        self.pos = 0
        self.total = 0
        self.correct_total = 0
        self.baseline_from = "profile" if baseline is not None else "first window"
        self.baseline: float | None = None
        self.h = math.inf
        self.p1 = 0.0
        self.stat = 0.0
        self.recovery = 0.0
        self.degraded = False
        self.alarms = 0
        self.degraded_at: int | None = None
        self._first_correct = 0
        self._cache: tuple[int, dict[str, float | None]] | None = None
        if baseline is not None:
            self._set_baseline(baseline)

    def _set_baseline(self, p0: float) -> None:
        self.baseline = float(p0)
        p0 = min(max(p0, 0.01), 0.999)
        self.p1 = max(p0 - self.drop, 0.001)
        self._up = math.log((1 - self.p1) / (1 - p0))
        self._down = math.log(self.p1 / p0)
        # twice the run length that gives alpha: Wald's approximation runs up to 10% short
        self.h = bernoulli_cusum_threshold(round(p0, 4), round(self.p1, 4), 2 * self.window / self.alpha)

    def add(self, probs: np.ndarray, labels: np.ndarray) -> None:
        """Labelled predictions: class probabilities ``[n, classes]`` and labels ``[n]``."""
        correct = probs.argmax(axis=1) == labels
        for row, label, ok in zip(probs, labels, correct, strict=True):
            self.scores[self.pos] = row
            self.labels[self.pos] = label
            self.pos = (self.pos + 1) % self.window
            self.filled = min(self.filled + 1, self.window)
            self.total += 1
            self.correct_total += int(ok)
            if self.baseline is None:
                self._first_correct += int(ok)
                if self.total == self.window:
                    p = self._first_correct / self.window
                    self._set_baseline(p - math.sqrt(p * (1 - p) / self.window))
                continue
            self.stat = max(0.0, self.stat + (self._down if ok else self._up))
            if self.stat >= self.h:
                self.alarms += 1
                if not self.degraded:
                    self.degraded_at = self.total
                self.degraded = True
                self.stat = 0.0
                self.recovery = 0.0
            elif self.degraded:
                # the mirror CUSUM (p0 - drop against p0) clears the alarm once the accuracy is back
                self.recovery = max(0.0, self.recovery - (self._down if ok else self._up))
                if self.recovery >= self.h:
                    self.degraded = False
                    self.recovery = 0.0
        self._cache = None

    def metrics(self) -> dict[str, float | None]:
        """accuracy, precision, recall, f1, roc_auc over the window (None before any label)."""
        from .. import metrics

        if self._cache is not None and self._cache[0] == self.total:
            return self._cache[1]
        n = self.filled
        if n == 0:
            out: dict[str, float | None] = dict.fromkeys(("accuracy", "precision", "recall", "f1", "roc_auc"))
        else:
            m = metrics.classification(self.scores[:n], self.labels[:n])
            out = {k: (float(v) if math.isfinite(v) else None) for k, v in m.items()}
        self._cache = (self.total, out)
        return out

    def state(self) -> dict[str, Any]:
        return {
            "labels_in_window": self.filled,
            "labels_total": self.total,
            "window": self.window,
            "metrics": self.metrics(),
            "baseline_accuracy": self.baseline,
            "baseline_from": self.baseline_from,
            "detector": {
                "test": "bernoulli_cusum",
                "drop": self.drop,
                "threshold": None if not math.isfinite(self.h) else self.h,
                "level": 0.0 if not math.isfinite(self.h) else round(self.stat / self.h, 4),
                "alarms": self.alarms,
                "degraded_at_label": self.degraded_at,
            },
            "degraded": self.degraded,
        }
