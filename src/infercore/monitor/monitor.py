"""The streaming monitor: samples taken off the request path, tested against a profile in the
background, with bounded memory.

    mon = ic.monitor.Monitor(profile, sample_rate=0.1, window=1000)
    out = engine.run(feeds)
    mon.observe(feeds, out, request_id="req-17")     # O(1): into a bounded queue
    mon.feedback("req-17", label=3)                  # ground truth, when it arrives
    mon.state()                                      # drift per tensor, quality, counters (JSON-able)

``observe`` computes nothing: it keeps each monitored tensor until the worker reads it, as a copy
of the rows its features read when those are at most half of it (an image's thinned rows: see
:meth:`.Featurizer.keep`; the request's memory is then freed with the request), else as a
reference, which the caller must not change afterwards. A sample that finds the queue full is
dropped and counted (``state()["samples"]["dropped"]``); nothing ever waits. A worker reads the
queue, turns tensors into features (:mod:`.features`), keeps the last ``window`` samples per
tensor in a ring buffer, runs the window tests (:mod:`.drift`) every ``step`` samples (half a
window by default) and the sequential CUSUM on every sample, and feeds labels to the quality
tracker (:mod:`.quality`): a daemon thread (``worker="thread"``, the default), or a child process
fed through shared memory (``worker="process"``, :mod:`.worker`: the caller's threads then never
wait on the GIL for it). Memory: the queue (``queue_size`` requests), ``window`` rows of features
per tensor, the worker's scratch arrays, the prediction store (``max_feedback_ids`` ids for
``feedback_ttl`` seconds).

False alarms: ``alpha`` (default 0.01) bounds the probability that a window of stationary traffic
raises drift, split evenly between the window tests (Bonferroni over every test of the model) and
the sequential detector; the quality detector raises a false accuracy drop about once per
``window / alpha`` labels. Measured rates: ``benchmarks/drift.py`` and docs/monitoring.md.
"""

from __future__ import annotations

import collections
import os
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..arguments import check_int, check_number
from ..errors import ArgumentError
from .analysis import BATCH, MAX_WAIT, MIN_BATCH, Analysis
from .drift import round_sig
from .profile import Profile
from .quality import PredictionStore

__all__ = ["WORKERS", "Monitor"]

WORKERS = ("thread", "process")  # where a Monitor's analysis runs


class Monitor:
    """Drift and quality monitoring against a reference :class:`Profile`; see the module docstring."""

    def __init__(
        self,
        profile: Profile | str | os.PathLike[str],
        sample_rate: float = 1.0,
        window: int = 1000,
        *,
        step: int | None = None,
        alpha: float = 0.01,
        psi_floor: float = 0.05,
        accuracy_drop: float = 0.05,
        queue_size: int = 256,
        feedback_ttl: float = 3600.0,
        max_feedback_ids: int = 100_000,
        tensors: Sequence[str] | None = None,
        worker: str = "thread",
        name: str = "",
    ) -> None:
        self.profile = profile if isinstance(profile, Profile) else Profile.load(profile)
        self.sample_rate = float(check_number("sample_rate", sample_rate, minimum=0.0, maximum=1.0) or 0.0)
        self.window = int(check_int("window", window, minimum=20) or 20)
        self.step = int(check_int("step", step, optional=True) or max(self.window // 2, 1))
        if self.step > self.window:
            raise ArgumentError("step", f"a step of {self.step} samples is longer than the window ({self.window})")
        self.alpha = float(check_number("alpha", alpha, minimum=0.0, inclusive=False, maximum=0.5) or 0.01)
        self.psi_floor = float(check_number("psi_floor", psi_floor) or 0.0)
        self.accuracy_drop = float(
            check_number("accuracy_drop", accuracy_drop, minimum=0.0, inclusive=False, maximum=0.5) or 0.05
        )
        self.queue_size = int(check_int("queue_size", queue_size) or 1)
        ttl = check_number("feedback_ttl", feedback_ttl, minimum=0.0, inclusive=False)
        max_ids = check_int("max_feedback_ids", max_feedback_ids)
        if worker not in WORKERS:
            raise ArgumentError("worker", f"expected one of {', '.join(WORKERS)}, got {worker!r}")
        self.worker = worker
        self.name = name
        names = list(self.profile.tensors) if tensors is None else list(tensors)
        unknown = [n for n in names if n not in self.profile.tensors]
        if unknown:
            raise ArgumentError(
                "tensors", f"the profile has no tensor {', '.join(map(repr, unknown))}; it has {', '.join(self.profile.tensors)}"
            )
        # what observe reads of each monitored tensor: (name, featurizer, whether an input)
        self._tensors = [(n, self.profile.tensors[n].featurizer, self.profile.tensors[n].kind == "input") for n in names]
        clf = self.profile.classifier
        self.classifier = clf.name if clf is not None and clf.classes is not None else None
        self._classes = clf.classes.classes if clf is not None and clf.classes is not None else 0
        self._store = PredictionStore(float(ttl or 3600.0), int(max_ids or 1))
        settings = {"names": names, "window": self.window, "step": self.step, "alpha": self.alpha,
                    "psi_floor": self.psi_floor, "accuracy_drop": self.accuracy_drop, "name": name}
        self._samples: collections.deque[dict[str, np.ndarray]] = collections.deque()  # tensor -> what is kept
        self._labels: collections.deque[tuple[np.ndarray, np.ndarray]] = collections.deque()
        self._credit = 0.0
        self.observed = 0
        self.sampled = 0
        self.dropped = 0
        self.feedback_matched = 0
        self.feedback_unknown = 0
        self.labels_dropped = 0
        self._labels_accepted = 0
        self._busy = False
        self._cpu_seconds = 0.0  # the worker thread's CPU time
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._analysis: Analysis | None = None
        self._link: Any = None  # a .worker.ProcessLink
        if worker == "process":
            from .worker import ProcessLink

            self._link = ProcessLink(self.profile, settings, self.queue_size, name)
            self.tests_per_window, self.cusum_k, self.cusum_h = self._link.constants
            return
        self._analysis = Analysis(self.profile, **settings)  # type: ignore[arg-type]
        self.tests_per_window = self._analysis.tests_per_window
        self.cusum_k, self.cusum_h = self._analysis.cusum_k, self._analysis.cusum_h
        self._thread = threading.Thread(target=self._run, name=f"infercore-monitor{'-' + name if name else ''}",
                                        daemon=True)
        self._thread.start()

    # -- the request path ------------------------------------------------------------------------
    def observe(
        self,
        inputs: Mapping[str, Any],
        outputs: Mapping[str, Any] | None = None,
        request_id: str | None = None,
    ) -> None:
        """Offer one request's tensors (and keep its prediction under ``request_id`` for feedback).
        Never blocks and never raises for a full queue: the sample is dropped and counted."""
        self.observed += 1
        if request_id and outputs is not None and self.classifier is not None:
            out = outputs.get(self.classifier)
            if out is not None:
                self._store.put(request_id, out)
        self._credit += self.sample_rate
        if self._credit < 1.0:
            return
        self._credit -= 1.0
        link = self._link
        if self._stop.is_set() or (link is None and len(self._samples) >= self.queue_size):
            self.dropped += 1
            return
        kept: dict[str, np.ndarray] = {}
        for name, fz, is_input in self._tensors:
            a = inputs.get(name) if is_input else None
            if a is None and outputs is not None:
                a = outputs.get(name)
            if a is None and not is_input:
                a = inputs.get(name)
            if a is not None:
                try:
                    kept[name] = fz.keep(a)
                except Exception:  # never fail the request: the worker says what it cannot read
                    kept[name] = a
        if link is not None:
            if not link.send_sample(kept):
                self.dropped += 1
                return
        else:
            self._samples.append(kept)
        self.sampled += 1

    def knows(self, request_id: str) -> bool:
        """Whether a prediction is kept for ``request_id`` (it has not expired nor been labelled)."""
        return request_id in self._store

    def feedback(self, request_id: str, label: Any) -> bool:
        """The true class (or one per row of the request) of a request observed with
        ``request_id``; False when the id is unknown or expired (nothing is recorded)."""
        if not self._classes:
            raise ArgumentError(
                "label", "the profile has no classifier output, so there is no prediction to compare labels with"
            )
        if not isinstance(request_id, str) or not request_id:
            raise ArgumentError("request_id", f"expected the request's id (a non-empty string), got {request_id!r}")
        out = self._store.pop(request_id)
        if out is None:
            self.feedback_unknown += 1
            return False
        try:
            labels = _labels(label, np.shape(out)[0] if np.ndim(out) >= 1 else 1, self._classes)
        except ArgumentError:
            self._store.put(request_id, out)  # a malformed label does not use up the prediction
            raise
        self.feedback_matched += 1
        item = (np.asarray(out), labels)
        if self._link is not None:
            accepted = self._link.send_labels(item)
        else:
            accepted = len(self._labels) < 65_536
            if accepted:
                self._labels.append(item)
        if not accepted:
            self.labels_dropped += 1
            return True
        self._labels_accepted += 1
        return True

    # -- the worker thread -----------------------------------------------------------------------
    def _run(self) -> None:
        assert self._analysis is not None
        since = None  # when samples were first seen waiting
        while True:
            if not self._samples and not self._labels:
                if self._stop.is_set():
                    self._cpu_seconds = time.thread_time()
                    return
                self._wake.wait(0.05)
                self._wake.clear()
                since = None
                continue
            # gather a batch: the fixed cost of a pass (tens of numpy calls per tensor) is then
            # shared by many samples instead of paid per request under load
            now = time.monotonic()
            since = since or now
            if (len(self._samples) < min(MIN_BATCH, self.queue_size // 2) and not self._labels
                    and now - since < MAX_WAIT
                    and not self._stop.is_set() and not self._wake.is_set()):
                time.sleep(0.02)
                continue
            self._wake.clear()
            since = None
            self._busy = True
            try:
                labels = []
                while self._labels:
                    labels.append(self._labels.popleft())
                samples: list[dict[str, np.ndarray]] = []
                while self._samples and len(samples) < BATCH:
                    samples.append(self._samples.popleft())
                self._analysis.run(samples, labels, self._process)
                self._cpu_seconds = time.thread_time()
            finally:
                self._busy = False

    def _process(self, samples: list[dict[str, np.ndarray]]) -> None:
        assert self._analysis is not None
        self._analysis.process(samples)

    # -- reading ---------------------------------------------------------------------------------
    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every sample and label accepted so far is processed (tests, benchmarks)."""
        target_samples = self.sampled
        target_labels = self._labels_accepted
        if self._link is not None:
            self._link.flush(target_samples, target_labels, timeout)
            return
        assert self._analysis is not None
        deadline = time.monotonic() + timeout
        while self._analysis.processed < target_samples or self._analysis.labels_done < target_labels or self._busy:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"monitor: {target_samples - self._analysis.processed} samples still queued after {timeout} s")
            self._wake.set()
            time.sleep(0.001)

    @property
    def drift(self) -> bool:
        return bool(self.state()["drift"])

    def state(self) -> dict[str, Any]:
        """Counters, drift per tensor and quality, as JSON-able values."""
        if self._link is not None:
            worker = self._link.state()
        else:
            assert self._analysis is not None
            worker = {**self._analysis.state(), "cpu_seconds": self._cpu_seconds, "queued": len(self._samples)}
        tensors = worker["tensors"]
        out: dict[str, Any] = {
            "sample_rate": self.sample_rate,
            "window": self.window,
            "step": self.step,
            "alpha": self.alpha,
            "psi_floor": self.psi_floor,
            "tests_per_window": self.tests_per_window,
            "cusum": {"k": round_sig(self.cusum_k), "h": round_sig(self.cusum_h)},
            "samples": {
                "observed": self.observed,
                "sampled": self.sampled,
                "dropped": self.dropped,
                "queued": worker["queued"],
                "processed": worker["processed"],
            },
            "worker": {"kind": self.worker, **worker.get("process", {})},
            "worker_cpu_seconds": round(worker["cpu_seconds"], 3),
            "drift": any(t["drift"] for t in tensors.values()),
            "tensors": tensors,
            "quality": None,
            "errors": worker["errors"],
        }
        if worker["quality"] is not None:
            out["quality"] = {
                **worker["quality"],
                "output": self.classifier,
                "feedback": {
                    "matched": self.feedback_matched,
                    "unknown": self.feedback_unknown,
                    "dropped": self.labels_dropped,
                    "pending_ids": len(self._store),
                    "expired": self._store.expired,
                    "evicted": self._store.evicted,
                },
            }
        return out

    def close(self, timeout: float = 10.0) -> None:
        """Stop the worker after it processes what is queued."""
        self._stop.set()
        if self._link is not None:
            self._link.close(timeout)
            return
        self._wake.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _labels(label: Any, rows: int, classes: int) -> np.ndarray:
    """``label`` as ``rows`` class indices in ``0..classes-1``, or ArgumentError saying why not."""
    values = label if isinstance(label, list | tuple | np.ndarray) else [label]
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.shape[0] != rows:
        raise ArgumentError(
            "label", f"the request had {rows} sample(s): give {'one class index' if rows == 1 else f'{rows} class indices'}, "
            f"got {label!r}"
        )
    if arr.dtype.kind == "b" or arr.dtype.kind not in "iuf" or (arr.dtype.kind == "f" and not np.all(arr == np.round(arr))):
        raise ArgumentError("label", f"class indices are integers, got {label!r}")
    out = arr.astype(np.int64)
    if out.size and (out.min() < 0 or out.max() >= classes):
        raise ArgumentError("label", f"class indices run from 0 to {classes - 1}, got {label!r}")
    return out
