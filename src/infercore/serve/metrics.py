"""Prometheus metrics, per model and version, on a registry of the server's own.

Counted by the server on every inference request (both protocols); requests for a model that is
not in the repository are labelled ``model="_unknown"``, so clients cannot grow the label set::

    infercore_request_success_total{model,version,protocol}
    infercore_request_failure_total{model,version,protocol,reason}
    infercore_request_cancelled_total{model,version,protocol}         the client went away
    infercore_request_duration_seconds{model,version,protocol}        histogram, server-side time

Read from each version's Batcher (and Engine) when Prometheus scrapes, so they cost nothing per
request::

    infercore_batcher_requests_total{model,version,outcome}            submitted, succeeded, failed, ...
    infercore_queue_depth{model,version}
    infercore_batch_size{model,version}                               histogram of executed batch sizes
    infercore_queue_duration_seconds{model,version,quantile}          time spent waiting for a batch
    infercore_compute_duration_seconds{model,version,quantile}        time of one batch execution
    infercore_inference_count_total{model,version}                    engine runs (batches)

Monitoring (drift, quality, screening: ``infercore_drift``, ``infercore_quality``, ...) is listed
in :mod:`infercore.serve.monitoring`; the process's CPU time and memory are prometheus_client's
``process_*`` metrics.

Counted by the repository when a version is refused for its signature (missing, invalid,
mismatch: ``SignatureError.reason``); the version is not loaded::

    infercore_signature_failure_total{model,version,reason}
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .repository import ModelRepository

__all__ = ["ServeMetrics"]

_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
_OUTCOMES = ("submitted", "succeeded", "failed", "rejected", "timed_out", "cancelled", "aborted")


class ServeMetrics:
    def __init__(self, repo: ModelRepository | None = None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        self._success = Counter(
            "infercore_request_success",
            "Inference requests answered with a result.",
            ["model", "version", "protocol"],
            registry=self.registry,
        )
        self._failure = Counter(
            "infercore_request_failure",
            "Inference requests answered with an error, by error kind.",
            ["model", "version", "protocol", "reason"],
            registry=self.registry,
        )
        self._cancelled = Counter(
            "infercore_request_cancelled",
            "Inference requests whose client went away before the answer (not counted as failures).",
            ["model", "version", "protocol"],
            registry=self.registry,
        )
        self._duration = Histogram(
            "infercore_request_duration_seconds",
            "Server-side time of an inference request (decode to encode).",
            ["model", "version", "protocol"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self._children: dict[tuple[str, ...], tuple[Any, Any]] = {}
        if repo is not None:
            from prometheus_client import ProcessCollector

            from .monitoring import MonitorCollector

            self.registry.register(_BatcherCollector(repo))
            self.registry.register(MonitorCollector(repo))  # drift, quality, screening (serve/monitoring.py)
            ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, resident memory: resources
            self.registry.register(_SignatureCollector(repo))

    def success(self, model: str, version: str, protocol: str, seconds: float) -> None:
        key = (model, version, protocol)
        pair = self._children.get(key)
        if pair is None:
            pair = self._children[key] = (self._success.labels(*key), self._duration.labels(*key))
        pair[0].inc()
        pair[1].observe(seconds)

    def failure(self, model: str, version: str, protocol: str, reason: str, seconds: float) -> None:
        self._failure.labels(model, version, protocol, reason).inc()
        self._duration.labels(model, version, protocol).observe(seconds)

    def cancelled(self, model: str, version: str, protocol: str, seconds: float) -> None:
        self._cancelled.labels(model, version, protocol).inc()

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        out: bytes = generate_latest(self.registry)
        return out


class _BatcherCollector:
    """Reads every served version's Batcher snapshot at scrape time."""

    def __init__(self, repo: ModelRepository) -> None:
        self.repo = repo

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        labels = ["model", "version"]
        requests = CounterMetricFamily(
            "infercore_batcher_requests",
            "Requests seen by the model's batcher, by outcome.",
            labels=[*labels, "outcome"],
        )
        depth = GaugeMetricFamily(
            "infercore_queue_depth", "Requests waiting in the batcher's queue.", labels=labels
        )
        sizes = HistogramMetricFamily("infercore_batch_size", "Sizes of the batches executed.", labels=labels)
        queue = GaugeMetricFamily(
            "infercore_queue_duration_seconds",
            "Queue time percentiles (recent requests).",
            labels=[*labels, "quantile"],
        )
        compute = GaugeMetricFamily(
            "infercore_compute_duration_seconds",
            "Batch execution time percentiles (recent batches).",
            labels=[*labels, "quantile"],
        )
        runs = CounterMetricFamily("infercore_inference_count", "Engine executions (batches).", labels=labels)
        for entry in self.repo.models():
            for mv in list(entry.versions.values()):
                lv = [mv.name, str(mv.version)]
                m = getattr(mv.runner, "metrics", None)
                if m is not None:
                    for outcome in _OUTCOMES:
                        v = getattr(m, outcome, None)
                        if v is not None:
                            requests.add_metric([*lv, outcome], float(v))
                    if getattr(m, "queue_depth", None) is not None:
                        depth.add_metric(lv, float(m.queue_depth))
                    hist = _batch_histogram(m)
                    if hist:
                        buckets, total = [], 0
                        for size in sorted(hist):
                            total += hist[size]
                            buckets.append((str(size), float(total)))
                        buckets.append(("+Inf", float(total)))
                        sizes.add_metric(lv, buckets, float(sum(s * c for s, c in hist.items())))
                    for q, value in _percentiles(m, "queue"):
                        queue.add_metric([*lv, q], value)
                    for q, value in _percentiles(m, "exec"):
                        compute.add_metric([*lv, q], value)
                elif mv.engine is not None:
                    stats = mv.engine.stats
                    for q, ms in (("0.5", stats.p50_ms), ("0.99", stats.p99_ms)):
                        if ms is not None:
                            compute.add_metric([*lv, q], ms / 1e3)
                if mv.engine is not None:
                    stats = mv.engine.stats
                    runs.add_metric(lv, float(stats.runs + stats.bound_runs))
        yield from (requests, depth, sizes, queue, compute, runs)


class _SignatureCollector:
    """The repository's count of versions refused for their signature."""

    def __init__(self, repo: ModelRepository) -> None:
        self.repo = repo

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily

        refused = CounterMetricFamily(
            "infercore_signature_failure",
            "Model versions not loaded because their signature is missing, invalid or does not match.",
            labels=["model", "version", "reason"],
        )
        signatures = getattr(self.repo, "signatures", None)
        for labels, count in sorted(dict(getattr(signatures, "failures", {})).items()):
            refused.add_metric(list(labels), float(count))
        yield refused


def _batch_histogram(m: Any) -> Mapping[int, int]:
    hist = getattr(m, "batch_sizes", None)
    return {int(k): int(v) for k, v in hist.items() if v} if isinstance(hist, Mapping) else {}


def _percentiles(m: Any, kind: str) -> list[tuple[str, float]]:
    """The p50/p90/p99 of the snapshot's ``queue_ms`` or ``exec_ms`` summary, in seconds."""
    summary = getattr(m, f"{kind}_ms", None)
    out = []
    for q, field in (("0.5", "p50_ms"), ("0.9", "p90_ms"), ("0.99", "p99_ms")):
        value = getattr(summary, field, None)
        if value is not None:
            out.append((q, float(value) / 1e3))
    return out
