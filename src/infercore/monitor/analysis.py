"""What a Monitor's worker does with the samples and labels it takes, wherever it runs (the
worker thread of :mod:`.monitor`, or the worker process of :mod:`.worker`): each tensor's ring of
feature rows and its detectors, the quality tracker, and their state; and the batching of the
worker's passes."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import InfercoreError
from .drift import (
    Cusum,
    FeatureTest,
    class_test,
    cusum_reference,
    cusum_threshold,
    decide,
    feature_tests,
    round_sig,
)
from .features import Workspace
from .profile import Profile, TensorProfile, class_probabilities
from .quality import QualityTracker

__all__ = ["BATCH", "CHUNK", "MAX_WAIT", "MIN_BATCH", "TOP", "Analysis"]

log = logging.getLogger("infercore.monitor")

TOP = 5  # the features a verdict names
BATCH = 256  # samples per pass at most
CHUNK = 128  # ... taken this many at a time, the GIL handed back in between (see Analysis.process)
MIN_BATCH = 128  # a pass waits for this many samples (at most half the queue) ...
MAX_WAIT = 0.25  # ... or this many seconds: fewer, larger passes hand the GIL back and forth less


class _TensorWindow:
    """One tensor's ring of feature rows, its detectors and its last verdict (worker thread only)."""

    def __init__(self, t: TensorProfile, window: int, step: int, cusum_h: float, cusum_k: float) -> None:
        self.t = t
        self.work = Workspace()  # the featurizer's scratch arrays, reused batch after batch
        self.window = window
        self.step = step
        width = t.featurizer.size
        self.rows = np.zeros((window, width))
        self.classes = np.zeros(window, np.int64) if t.classes is not None else None
        self.confidence = np.zeros((window, 1)) if t.classes is not None else None
        self.filled = 0
        self.pos = 0
        self.since = 0
        self.seen = 0
        self.cusum = Cusum(t.stats, cusum_h, cusum_k)
        self.sequential_alarms = 0
        self.sequential_features: list[str] = []
        self.last_alarm: int | None = None  # the sample count at the last CUSUM alarm
        self.windows = 0
        self.drift_windows = 0
        self.drift_since: int | None = None  # the sample count at which the current drift was raised
        self.first_drift: int | None = None  # ... and the first drift ever
        self.skipped = 0
        self.skip_reason = ""
        self.state: dict[str, Any] = {
            "kind": t.kind,
            "features": width,
            "samples": 0,
            "windows": 0,
            "drift": False,
            "scores": {},
            "top": [],
        }

    def add(self, rows: np.ndarray, probs: np.ndarray | None, evaluate: Callable[[_TensorWindow], None]) -> None:
        """Append rows, evaluating at every step boundary they cross (a large batch is cut there)."""
        i, n = 0, rows.shape[0]
        while i < n:
            if self.filled < self.window:
                size = min(n - i, self.window - self.filled)
            else:
                size = min(n - i, max(self.step - self.since, 1))
            self._append(rows[i : i + size], None if probs is None else probs[i : i + size])
            i += size
            if self.due():
                evaluate(self)

    def _append(self, rows: np.ndarray, probs: np.ndarray | None) -> None:
        k = rows.shape[0]
        idx = (self.pos + np.arange(k)) % self.window
        self.rows[idx] = rows
        if probs is not None and self.classes is not None and self.confidence is not None:
            self.classes[idx] = probs.argmax(axis=1)
            self.confidence[idx, 0] = probs.max(axis=1)
        self.pos = int((self.pos + k) % self.window)
        self.filled = min(self.filled + k, self.window)
        self.since += k
        self.seen += k
        alarmed, first = self.cusum.update(rows)
        if alarmed.size:
            self.sequential_alarms += 1
            self.last_alarm = self.seen - k + 1 + (first or 0)
            if self.drift_since is None:
                self.drift_since = self.seen - k + 1 + (first or 0)
            if self.first_drift is None:
                self.first_drift = self.drift_since
            self.sequential_features = [self.t.featurizer.names[i] for i in alarmed[:TOP]]

    @property
    def sequential(self) -> bool:
        """Whether the CUSUM alarmed within the last ``step`` samples: it restarts after each
        alarm, so a shift that lasts alarms again and again (a 0.3 sd shift every 250 samples or
        so), and the state holds while it lasts."""
        return self.last_alarm is not None and self.seen - self.last_alarm < self.step

    def due(self) -> bool:
        return self.filled >= self.window and self.since >= self.step

    def tests(self) -> list[FeatureTest]:
        t = self.t
        out = feature_tests(self.rows, t.stats, t.featurizer.names)
        if t.classes is not None and self.classes is not None and self.confidence is not None:
            out += feature_tests(self.confidence, t.classes.confidence, (f"{t.name}:confidence",))
            counts = np.bincount(self.classes, minlength=t.classes.classes)
            chi2, p, effect = class_test(counts, t.classes.counts)
            out.append(FeatureTest(f"{t.name}:classes", "chi2", chi2, p, effect))
        return out

    def conclude(self, tests: list[FeatureTest], drift: bool) -> None:
        self.since = 0
        self.windows += 1
        sequential = self.sequential
        drift_any = drift or sequential
        self.drift_windows += int(drift_any)
        if drift_any and self.drift_since is None:
            self.drift_since = self.seen
        if drift_any and self.first_drift is None:
            self.first_drift = self.drift_since
        elif not drift_any:
            self.drift_since = None
        ks = [x for x in tests if x.test == "ks"]
        chi = [x for x in tests if x.test == "chi2"]
        scores: dict[str, float] = {
            "psi": max((x.psi for x in tests if x.test == "ks"), default=0.0),
            "ks": max((x.statistic for x in ks), default=0.0),
            "cusum": self.cusum.level(),
        }
        if chi:
            scores["chi2"] = chi[0].statistic
        top = sorted(tests, key=lambda x: (x.drift, x.psi), reverse=True)[:TOP]
        self.state = {
            "kind": self.t.kind,
            "features": self.t.featurizer.size,
            "samples": self.seen,
            "windows": self.windows,
            "drift_windows": self.drift_windows,
            "drift": drift_any,
            "window_test": drift,
            "drift_since_sample": self.drift_since,
            "sequential": {
                "alarm": sequential,
                "alarms": self.sequential_alarms,
                "features": self.sequential_features if sequential else [],
            },
            "scores": {k: round_sig(v) for k, v in scores.items()},
            "min_p": float(f"{min((x.p for x in tests), default=1.0):.3g}"),
            "top": [x.to_dict() for x in top],
            "updated": time.time(),
        }
        if self.skipped:
            self.state["skipped_samples"] = self.skipped
            self.state["skip_reason"] = self.skip_reason

    def live(self) -> dict[str, Any]:
        """The verdict of the last window, with the sequential detector's news since then."""
        state = dict(self.state)
        state["samples"] = self.seen
        if self.sequential:
            state["drift"] = True
            state["sequential"] = {
                "alarm": True,
                "alarms": self.sequential_alarms,
                "features": self.sequential_features,
            }
        state["drift_since_sample"] = self.drift_since
        scores = dict(state.get("scores", {}))
        scores["cusum"] = round_sig(self.cusum.level())
        state["scores"] = scores
        if self.skipped:
            state["skipped_samples"] = self.skipped
            state["skip_reason"] = self.skip_reason
        return state


class Analysis:
    """What the worker does with the samples and labels it takes: the tensors' windows and
    detectors, the quality tracker, their state. Lives in the worker thread, or in the worker
    process (:mod:`.worker`); touched by that worker only."""

    def __init__(
        self, profile: Profile, names: Sequence[str], window: int, step: int, alpha: float, psi_floor: float,
        accuracy_drop: float, name: str = "",
    ) -> None:
        self.profile = profile
        self.name = name
        self.alpha = alpha
        self.psi_floor = psi_floor
        monitored = [profile.tensors[n] for n in names]
        features = sum(t.featurizer.size for t in monitored)
        self.tests_per_window = features + sum(2 for t in monitored if t.classes is not None)
        smallest = min((t.stats.sampled for t in monitored), default=1)
        self.cusum_k = cusum_reference(smallest)
        self.cusum_h = cusum_threshold(max(features, 1), window, alpha / 2, self.cusum_k)
        self.windows = {t.name: _TensorWindow(t, window, step, self.cusum_h, self.cusum_k) for t in monitored}
        clf = profile.classifier
        self.classifier = clf.name if clf is not None and clf.classes is not None else None
        self.quality: QualityTracker | None = None
        if clf is not None and clf.classes is not None:
            baseline = (profile.quality or {}).get("accuracy")
            self.quality = QualityTracker(clf.classes.classes, window, baseline=baseline, drop=accuracy_drop, alpha=alpha)
        self.processed = 0
        self.labels_done = 0
        self.errors = 0

    def run(self, samples: list[dict[str, np.ndarray]], labels: list[tuple[np.ndarray, np.ndarray]],
            process: Callable[[list[dict[str, np.ndarray]]], None] | None = None, count: int | None = None) -> None:
        """One pass: the labels, then the samples ``CHUNK`` at a time (``count`` requests in all,
        when an entry holds several). A failure is counted and logged, never raised: a bug must not
        end monitoring."""
        process = process or self.process
        try:
            if labels:
                self.process_labels(labels)
            for i in range(0, len(samples), CHUNK):
                process(samples[i : i + CHUNK])
        except Exception:
            self.errors += 1
            log.exception("monitor worker failed on a batch", extra={"model": self.name})
        self.processed += len(samples) if count is None else count
        self.labels_done += len(labels)

    def process_labels(self, items: list[tuple[np.ndarray, np.ndarray]]) -> None:
        assert self.quality is not None and self.classifier is not None
        clf = self.profile.tensors[self.classifier].classes
        assert clf is not None
        for out, labels in items:
            self.quality.add(class_probabilities(out, clf.probabilities), labels)

    def process(self, samples: list[dict[str, np.ndarray]]) -> None:
        for name, tw in self.windows.items():
            arrays = [a for a in (s.get(name) for s in samples) if a is not None]
            if not arrays:
                continue
            fz = tw.t.featurizer
            try:
                arrays = [a if type(a) is np.ndarray else np.asarray(a) for a in arrays]
                batch = fz.gather(arrays, tw.work)  # the thinned samples, in one array
                if batch is not None:
                    rows = fz.of_samples(batch, tw.work)
                    probs = tw.t.classes.probs(batch) if tw.t.classes is not None else None
                else:
                    rows = np.concatenate([fz(a) for a in arrays])
                    probs = (np.concatenate([tw.t.classes.probs(fz.samples(a)) for a in arrays])
                             if tw.t.classes is not None else None)
            except (InfercoreError, ValueError, TypeError) as e:
                tw.skipped += len(arrays)
                tw.skip_reason = str(e)
                continue
            tw.add(rows, probs, self.evaluate)
            time.sleep(0)  # hand the GIL back to the request threads between tensors

    def evaluate(self, tw: _TensorWindow) -> None:
        tests = tw.tests()
        drift = decide(tests, self.tests_per_window, self.alpha / 2, self.psi_floor)
        tw.conclude(tests, drift)

    def state(self) -> dict[str, Any]:
        """The worker's side of :meth:`Monitor.state` (JSON-able)."""
        return {
            "processed": self.processed,
            "labels_done": self.labels_done,
            "errors": self.errors,
            "tensors": {name: tw.live() for name, tw in self.windows.items()},
            "quality": None if self.quality is None else self.quality.state(),
        }
