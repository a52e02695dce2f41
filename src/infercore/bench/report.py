"""What a benchmark measured: per-call latency statistics, one result per configuration, and the
report that holds them with where and how they were measured (JSON in and out)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from .machine import MachineInfo, ModelInfo

__all__ = ["BenchmarkReport", "BenchmarkResult", "HarnessOverhead", "LatencyStats", "RunSettings"]

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class LatencyStats:
    """Per-call latency in milliseconds. Percentiles are numpy's default (linear interpolation);
    ``cv`` is the sample standard deviation (ddof=1) over the mean."""

    count: int
    min_ms: float
    mean_ms: float
    std_ms: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    cv: float

    @classmethod
    def from_ns(cls, samples_ns: np.ndarray | Sequence[int]) -> LatencyStats:
        ms = np.asarray(samples_ns, dtype=np.float64) / 1e6
        if ms.size == 0:
            raise ValueError("no latency samples")
        p50, p90, p95, p99 = np.percentile(ms, [50, 90, 95, 99])
        mean = float(ms.mean())
        std = float(ms.std(ddof=1)) if ms.size > 1 else 0.0
        return cls(
            count=int(ms.size),
            min_ms=float(ms.min()),
            mean_ms=mean,
            std_ms=std,
            p50_ms=float(p50),
            p90_ms=float(p90),
            p95_ms=float(p95),
            p99_ms=float(p99),
            max_ms=float(ms.max()),
            cv=std / mean if mean > 0 else 0.0,
        )


@dataclass(frozen=True)
class HarnessOverhead:
    """What timing costs by itself, measured on the same code path with a no-op backend.

    ``latency_us``: the median time one timed call takes when the backend does nothing (timer,
    Python call, the Engine's own dispatch) — included in every latency sample. ``iteration_us``:
    wall time per loop iteration with the no-op backend — included in throughput.
    """

    latency_us: float
    iteration_us: float
    iterations: int


@dataclass(frozen=True)
class RunSettings:
    """How the run was made; the same for every configuration of a report."""

    warmup_s: float
    duration_s: float | None
    iterations: int | None
    bound: bool
    device: str
    threads: int | None
    seed: int
    input_source: str
    cv_threshold: float
    min_samples: int
    min_duration_s: float
    rss_scope: str


@dataclass(frozen=True)
class BenchmarkResult:
    """One configuration: backend, precision, batch, concurrency.

    ``throughput`` counts inferences (calls) per second over all workers; ``items_per_s`` is
    ``throughput * batch``. ``error`` is set (and the figures are None) when the configuration
    could not run; ``samples_ns`` keeps the raw per-call latencies in memory (not in JSON unless
    asked), for plots.
    """

    backend: str
    precision: str | None
    device: str
    threads: int | None
    backend_version: str | None
    batch: int
    concurrency: int
    bound: bool
    inputs: dict[str, dict[str, Any]]
    latency: LatencyStats | None = None
    overhead: HarnessOverhead | None = None
    throughput: float | None = None
    items_per_s: float | None = None
    iterations: int = 0
    warmup_iterations: int = 0
    warmup_s: float = 0.0
    measured_s: float = 0.0
    peak_rss_mb: float | None = None
    warnings: tuple[str, ...] = ()
    error: str | None = None
    samples_ns: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.error is None and self.latency is not None

    @property
    def label(self) -> str:
        prec = f" {self.precision}" if self.precision else ""
        return f"{self.backend}{prec} b{self.batch} c{self.concurrency}"

    @property
    def p50_net_ms(self) -> float | None:
        """p50 minus the harness's own per-call latency (never below zero)."""
        if self.latency is None:
            return None
        over = self.overhead.latency_us / 1e3 if self.overhead else 0.0
        return max(self.latency.p50_ms - over, 0.0)

    def to_dict(self, samples: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {
            "backend": self.backend,
            "precision": self.precision,
            "device": self.device,
            "threads": self.threads,
            "backend_version": self.backend_version,
            "batch": self.batch,
            "concurrency": self.concurrency,
            "bound": self.bound,
            "inputs": {k: dict(v) for k, v in self.inputs.items()},
            "latency_ms": _latency_dict(self.latency),
            "p50_net_ms": self.p50_net_ms,
            "overhead": None
            if self.overhead is None
            else {
                "latency_us": self.overhead.latency_us,
                "iteration_us": self.overhead.iteration_us,
                "iterations": self.overhead.iterations,
            },
            "throughput": {"inferences_per_s": self.throughput, "items_per_s": self.items_per_s},
            "iterations": self.iterations,
            "warmup_iterations": self.warmup_iterations,
            "warmup_s": self.warmup_s,
            "measured_s": self.measured_s,
            "peak_rss_mb": self.peak_rss_mb,
            "warnings": list(self.warnings),
            "error": self.error,
        }
        if samples and self.samples_ns is not None:
            d["samples_ms"] = [round(v / 1e6, 6) for v in self.samples_ns.tolist()]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BenchmarkResult:
        lat = d.get("latency_ms")
        over = d.get("overhead")
        thr = d.get("throughput") or {}
        samples = d.get("samples_ms")
        return cls(
            backend=d["backend"],
            precision=d.get("precision"),
            device=d.get("device", "cpu"),
            threads=d.get("threads"),
            backend_version=d.get("backend_version"),
            batch=int(d["batch"]),
            concurrency=int(d["concurrency"]),
            bound=bool(d.get("bound", True)),
            inputs={k: dict(v) for k, v in (d.get("inputs") or {}).items()},
            latency=None
            if lat is None
            else LatencyStats(
                count=int(lat["count"]),
                min_ms=lat["min"],
                mean_ms=lat["mean"],
                std_ms=lat["std"],
                p50_ms=lat["p50"],
                p90_ms=lat["p90"],
                p95_ms=lat["p95"],
                p99_ms=lat["p99"],
                max_ms=lat["max"],
                cv=lat["cv"],
            ),
            overhead=None
            if over is None
            else HarnessOverhead(over["latency_us"], over["iteration_us"], int(over["iterations"])),
            throughput=thr.get("inferences_per_s"),
            items_per_s=thr.get("items_per_s"),
            iterations=int(d.get("iterations", 0)),
            warmup_iterations=int(d.get("warmup_iterations", 0)),
            warmup_s=float(d.get("warmup_s", 0.0)),
            measured_s=float(d.get("measured_s", 0.0)),
            peak_rss_mb=d.get("peak_rss_mb"),
            warnings=tuple(d.get("warnings") or ()),
            error=d.get("error"),
            samples_ns=None if samples is None else (np.asarray(samples, np.float64) * 1e6).astype(np.int64),
        )


def _latency_dict(lat: LatencyStats | None) -> dict[str, float | int] | None:
    if lat is None:
        return None
    return {
        "count": lat.count,
        "min": lat.min_ms,
        "mean": lat.mean_ms,
        "std": lat.std_ms,
        "p50": lat.p50_ms,
        "p90": lat.p90_ms,
        "p95": lat.p95_ms,
        "p99": lat.p99_ms,
        "max": lat.max_ms,
        "cv": lat.cv,
    }


@dataclass(frozen=True)
class BenchmarkReport:
    """Everything one ``ic.benchmark()`` run measured, with where and how."""

    created: str
    infercore_version: str
    model: ModelInfo
    machine: MachineInfo
    settings: RunSettings
    results: tuple[BenchmarkResult, ...]
    schema_version: int = SCHEMA_VERSION
    skipped: tuple[str, ...] = ()  # default backends that cannot read the model: "name: why"

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    @property
    def warnings(self) -> list[str]:
        return [f"{r.label}: {w}" for r in self.results for w in r.warnings]

    @property
    def errors(self) -> list[str]:
        return [f"{r.label}: {r.error}" for r in self.results if r.error]

    def result(
        self,
        backend: str,
        precision: str | None = None,
        batch: int | None = None,
        concurrency: int | None = None,
    ) -> BenchmarkResult:
        """The first result matching the given fields (None: any)."""
        for r in self.results:
            if (
                r.backend == backend
                and (precision is None or r.precision == precision)
                and (batch is None or r.batch == batch)
                and (concurrency is None or r.concurrency == concurrency)
            ):
                return r
        raise KeyError(
            f"no result for backend={backend!r} precision={precision!r} batch={batch} "
            f"concurrency={concurrency}; have: {', '.join(r.label for r in self.results)}"
        )

    # -- JSON --------------------------------------------------------------------------------
    def to_dict(self, samples: bool = False) -> dict[str, Any]:
        m = self.machine
        return {
            "schema_version": self.schema_version,
            "created": self.created,
            "infercore_version": self.infercore_version,
            "model": {
                "path": self.model.path,
                "name": self.model.name,
                "format": self.model.format,
                "size_bytes": self.model.size_bytes,
                "sha256": self.model.sha256,
            },
            "machine": {
                "cpu_model": m.cpu_model,
                "cores_physical": m.cores_physical,
                "cores_logical": m.cores_logical,
                "cores_usable": m.cores_usable,
                "flags": list(m.flags),
                "memory_gb": m.memory_gb,
                "os": m.os,
                "python": m.python,
                "numpy": m.numpy,
                "loadavg": None if m.loadavg is None else list(m.loadavg),
                "description": m.describe(),
            },
            "settings": {k: getattr(self.settings, k) for k in RunSettings.__dataclass_fields__},
            "results": [r.to_dict(samples) for r in self.results],
            "skipped": list(self.skipped),
        }

    def to_json(self, path: str | os.PathLike[str] | None = None, *, samples: bool = False) -> str:
        """The report as JSON (``JSON_SCHEMA``); written to ``path`` when given."""
        text = json.dumps(self.to_dict(samples), indent=2)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BenchmarkReport:
        from .schema import validate_report

        problems = validate_report(d)
        if problems:
            raise ValueError("not a benchmark report: " + "; ".join(problems[:5]))
        m = d["machine"]
        machine = MachineInfo(
            cpu_model=m["cpu_model"],
            cores_physical=m["cores_physical"],
            cores_logical=m["cores_logical"],
            cores_usable=m["cores_usable"],
            flags=tuple(m["flags"]),
            memory_gb=m["memory_gb"],
            os=m["os"],
            python=m["python"],
            numpy=m["numpy"],
            loadavg=None if m["loadavg"] is None else (m["loadavg"][0], m["loadavg"][1], m["loadavg"][2]),
        )
        return cls(
            created=d["created"],
            infercore_version=d["infercore_version"],
            model=ModelInfo(**d["model"]),
            machine=machine,
            settings=RunSettings(**d["settings"]),
            results=tuple(BenchmarkResult.from_dict(r) for r in d["results"]),
            schema_version=int(d["schema_version"]),
            skipped=tuple(d.get("skipped", ())),
        )

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> BenchmarkReport:
        return cls.from_dict(json.loads(Path(path).read_text()))


    # -- rendering (infercore.bench.render) ----------------------------------------------------
    def header(self) -> str:
        from .render import header

        return header(self)

    def table(self) -> str:
        """The tables as plain text (what ``print_table`` prints without rich)."""
        from .render import table

        return table(self)

    def to_markdown(self) -> str:
        """A Markdown table (README-ready): one row per configuration, with the machine and date."""
        from .render import markdown

        return markdown(self)

    def print_table(self, file: TextIO | None = None, *, color: bool | None = None) -> None:
        """Print the header, the latency and throughput tables and the warnings (rich if installed)."""
        from .render import print_table

        print_table(self, file, color=color)

    def plot(self, path: str | os.PathLike[str]) -> Path:
        """Latency distributions (left) and throughput bars (right), as PNG/SVG/PDF by suffix."""
        from .render import plot

        return plot(self, path)

