"""``ic.benchmark()``: honest, comparable latency and throughput across backends.

    report = ic.benchmark("model.onnx", backends=["ort", "openvino:bf16"], batch=[1, 8],
                          shapes={"sequence": 128}, duration=10)
    report.print_table()
    report.to_json("bench.json")
    report.plot("bench.png")

One configuration is (backend, precision, batch, concurrency). For each, the engine is loaded
once, inputs are made (random within each input's spec, or real data), every worker warms up
for ``warmup`` seconds (excluded), then each call is timed with ``time.perf_counter_ns`` for
``duration`` seconds or ``iterations`` calls. The harness's own cost is measured on the same
code path against an in-process no-op backend and shown next to the figures (``overhead``) and
subtracted in ``p50_net_ms``. Every figure carries its coefficient of variation, and a run that
is too short or too noisy to trust says so in ``warnings`` (and as a ``BenchmarkWarning``).

The JSON written by ``to_json`` follows ``JSON_SCHEMA`` (``schema_version`` 1); see docs/bench.md.
"""

from __future__ import annotations

import datetime as _dt
import functools
import gc
import hashlib
import json
import os
import platform
import re
import resource
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from .datafiles import load_arrays, name_lone_array
from .engine import Engine, load
from .errors import BenchmarkWarning, InfercoreError, InputSpecError
from .specs import TensorSpec, is_symbol, with_onnx_dim_names

__all__ = [
    "JSON_SCHEMA",
    "SCHEMA_VERSION",
    "BenchmarkReport",
    "BenchmarkResult",
    "BenchmarkWarning",
    "HarnessOverhead",
    "LatencyStats",
    "MachineInfo",
    "ModelInfo",
    "RunSettings",
    "benchmark",
    "make_inputs",
    "resolve_shapes",
    "validate_report",
]

SCHEMA_VERSION = 1
DEFAULT_INT_RANGE = (0, 100)
DEFAULT_FLOAT_RANGE = (0.0, 1.0)
_perf_ns = time.perf_counter_ns
_CPU_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "asimd",
    "asimddp",
    "asimdhp",
    "sve",
    "sve2",
    "bf16",
    "i8mm",
)


# -- statistics --------------------------------------------------------------------------------
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


# -- machine and model -------------------------------------------------------------------------
@dataclass(frozen=True)
class MachineInfo:
    cpu_model: str
    cores_physical: int | None
    cores_logical: int
    cores_usable: int
    flags: tuple[str, ...]
    memory_gb: float | None
    os: str
    python: str
    numpy: str
    loadavg: tuple[float, float, float] | None

    @classmethod
    def collect(cls) -> MachineInfo:
        model, flags = _cpuinfo()
        logical = os.cpu_count() or 1
        try:
            usable = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            usable = logical
        physical: int | None = None
        memory: float | None = None
        try:
            import psutil

            physical = psutil.cpu_count(logical=False)
            memory = round(psutil.virtual_memory().total / 2**30, 1)
        except ImportError:
            physical = _physical_cores()
        try:
            la = os.getloadavg()
            load_avg: tuple[float, float, float] | None = (round(la[0], 2), round(la[1], 2), round(la[2], 2))
        except (AttributeError, OSError):
            load_avg = None
        return cls(
            cpu_model=model,
            cores_physical=physical,
            cores_logical=logical,
            cores_usable=usable,
            flags=flags,
            memory_gb=memory,
            os=f"{platform.system()} {platform.release()} {platform.machine()}",
            python=platform.python_version(),
            numpy=np.__version__,
            loadavg=load_avg,
        )

    def describe(self) -> str:
        """One line: CPU, cores, the SIMD features that matter for inference, memory, OS."""
        cores = f"{self.cores_physical or '?'} cores / {self.cores_logical} threads"
        if self.cores_usable != self.cores_logical:
            cores += f" ({self.cores_usable} usable)"
        simd = _simd_summary(self.flags)
        mem = f", {self.memory_gb:g} GiB" if self.memory_gb else ""
        return f"{self.cpu_model}, {cores}{', ' + simd if simd else ''}{mem}, {self.os}, Python {self.python}"


def _cpuinfo() -> tuple[str, tuple[str, ...]]:
    model = ""
    flags: set[str] = set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    if not model:
        model = platform.processor() or platform.machine() or "unknown CPU"
    return model, tuple(f for f in _CPU_FLAGS if f in flags)


def _physical_cores() -> int | None:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    cores = set()
    phys = core = ""
    for line in [*text.splitlines(), ""]:
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "physical id":
            phys = value.strip()
        elif key == "core id":
            core = value.strip()
        elif not line.strip() and core:
            cores.add((phys, core))
            phys = core = ""
    return len(cores) or None


def _simd_summary(flags: Sequence[str]) -> str:
    have = set(flags)
    parts = []
    if "avx512f" in have:
        parts.append("AVX-512")
    elif "avx2" in have:
        parts.append("AVX2")
    elif "asimd" in have:
        parts.append("NEON")
    if have & {"avx512_vnni", "avx_vnni", "asimddp"}:
        parts.append("VNNI" if have & {"avx512_vnni", "avx_vnni"} else "dot-product")
    if have & {"avx512_bf16", "amx_bf16", "bf16"}:
        parts.append("BF16")
    if "amx_tile" in have:
        parts.append("AMX")
    return " ".join(parts)


@dataclass(frozen=True)
class ModelInfo:
    path: str
    name: str
    format: str
    size_bytes: int | None
    sha256: str | None

    @classmethod
    def of(cls, path: Path | None) -> ModelInfo:
        if path is None:
            return cls("", "<engine>", "", None, None)
        digest = hashlib.sha256()
        try:
            with open(path, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
            size: int | None = path.stat().st_size
            sha: str | None = digest.hexdigest()
        except OSError:
            size, sha = None, None
        return cls(str(path), path.name, path.suffix.lstrip(".").lower(), size, sha)


# -- results -----------------------------------------------------------------------------------
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
        }

    def to_json(self, path: str | os.PathLike[str] | None = None, *, samples: bool = False) -> str:
        """The report as JSON (``JSON_SCHEMA``); written to ``path`` when given."""
        text = json.dumps(self.to_dict(samples), indent=2)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BenchmarkReport:
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
        )

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> BenchmarkReport:
        return cls.from_dict(json.loads(Path(path).read_text()))

    # -- tables ------------------------------------------------------------------------------
    def _rows(self) -> tuple[list[str], list[list[str]], list[str], list[list[str]], str]:
        base: dict[tuple[int, int], BenchmarkResult] = {}
        for r in self.results:
            if r.ok:
                base.setdefault((r.batch, r.concurrency), r)
        lat_head = [
            "backend",
            "precision",
            "batch",
            "conc",
            "min",
            "mean",
            "p50",
            "p90",
            "p95",
            "p99",
            "max",
            "CV",
            "n",
        ]
        thr_head = [
            "backend",
            "precision",
            "batch",
            "conc",
            "inf/s",
            "items/s",
            "relative",
            "p50 net",
            "overhead µs",
            "peak RSS MB",
        ]
        lat_rows: list[list[str]] = []
        thr_rows: list[list[str]] = []
        for r in self.results:
            key = [r.backend, r.precision or "default", str(r.batch), str(r.concurrency)]
            if not r.ok or r.latency is None:
                msg = f"failed: {r.error}"
                if len(msg) > 140:
                    msg = msg[:137] + "..."  # the whole message is in the JSON
                lat_rows.append([*key, msg] + [""] * (len(lat_head) - 5))
                thr_rows.append([*key, msg] + [""] * (len(thr_head) - 5))
                continue
            s = r.latency
            lat_rows.append(
                [
                    *key,
                    *(
                        _ms(v)
                        for v in (s.min_ms, s.mean_ms, s.p50_ms, s.p90_ms, s.p95_ms, s.p99_ms, s.max_ms)
                    ),
                    f"{s.cv:.1%}",
                    str(s.count),
                ]
            )
            ref = base[(r.batch, r.concurrency)]
            rel = (r.items_per_s or 0.0) / (ref.items_per_s or 1.0)
            thr_rows.append(
                [
                    *key,
                    f"{r.throughput:,.1f}",
                    f"{r.items_per_s:,.1f}",
                    f"{rel:.2f}x",
                    _ms(r.p50_net_ms or 0.0),
                    f"{r.overhead.latency_us:.1f}" if r.overhead else "",
                    f"{r.peak_rss_mb:,.0f}" if r.peak_rss_mb is not None else "",
                ]
            )
        refs = sorted({f"{b.backend} {b.precision or 'default'}" for b in base.values()}) or ["none ran"]
        note = (
            "relative: items/s over the first backend of the same batch and concurrency "
            f"({', '.join(refs)}); p50 net: p50 minus the harness overhead"
        )
        return lat_head, lat_rows, thr_head, thr_rows, note

    def header(self) -> str:
        s = self.settings
        run = f"{s.duration_s:g} s" if s.iterations is None and s.duration_s else f"{s.iterations} calls"
        versions = sorted({f"{r.backend} {r.backend_version}" for r in self.results if r.backend_version})
        return "\n".join(
            [
                f"model    {self.model.name} ({_size(self.model.size_bytes)})",
                f"machine  {self.machine.describe()}",
                f"load     {' '.join(map(str, self.machine.loadavg)) if self.machine.loadavg else 'n/a'} (1/5/15 min "
                "load average at start)",
                f"run      warmup {s.warmup_s:g} s, measured {run} per configuration, "
                f"{'bound I/O (zero-copy)' if s.bound else 'run() with copies'}, threads "
                f"{s.threads or 'backend default'}, inputs {s.input_source}",
                f"backends {', '.join(versions) or 'n/a'}",
            ]
        )

    def table(self) -> str:
        """The tables as plain text (what ``print_table`` prints without rich)."""
        lat_head, lat_rows, thr_head, thr_rows, note = self._rows()
        parts = [
            self.header(),
            "",
            "latency (ms)",
            _plain_table(lat_head, lat_rows),
            "",
            "throughput",
            _plain_table(thr_head, thr_rows),
            note,
        ]
        if self.warnings:
            parts += ["", "warnings:"] + [f"  ! {w}" for w in self.warnings]
        return "\n".join(parts)

    def to_markdown(self) -> str:
        """A Markdown table (README-ready): one row per configuration, with the machine and date."""
        head = [
            "backend",
            "precision",
            "batch",
            "conc",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "CV",
            "items/s",
            "relative",
            "peak RSS MB",
        ]
        _, _, _, thr_rows, note = self._rows()
        rows = []
        for r, t in zip(self.results, thr_rows, strict=True):
            if r.latency is None:
                rows.append(t[:4] + [t[4]] + [""] * (len(head) - 5))
                continue
            s = r.latency
            rows.append(
                [*t[:4], _ms(s.p50_ms), _ms(s.p90_ms), _ms(s.p99_ms), f"{s.cv:.1%}", t[5], t[6], t[9]]
            )
        lines = [
            f"**{self.model.name}** on {self.machine.describe()} — {self.created[:10]}, "
            f"infercore {self.infercore_version}",
            "",
            "| " + " | ".join(head) + " |",
            "|" + "|".join("---" if i < 2 else "---:" for i in range(len(head))) + "|",
        ]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
        lines += ["", f"_{note}._"]
        if self.warnings:
            lines += ["", "Warnings: " + "; ".join(self.warnings)]
        return "\n".join(lines)

    def print_table(self, file: TextIO | None = None, *, color: bool | None = None) -> None:
        """Print the header, the latency and throughput tables and the warnings (rich if installed)."""
        file = file or sys.stdout
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            print(self.table(), file=file)
            return
        console = Console(
            file=file,
            highlight=False,
            force_terminal=color,
            no_color=color is False,
            width=max(120, Console(file=file).width),
        )
        console.print(self.header())
        lat_head, lat_rows, thr_head, thr_rows, note = self._rows()
        for title, head, rows in (("latency (ms)", lat_head, lat_rows), ("throughput", thr_head, thr_rows)):
            t = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
            for i, h in enumerate(head):
                t.add_column(h, justify="left" if i < 2 else "right", no_wrap=i >= 2)
            for row, r in zip(rows, self.results, strict=True):
                if r.ok:
                    t.add_row(*row)
                else:  # the message goes below the table, where it cannot squash the columns
                    t.add_row(*row[:4], "failed", *[""] * (len(head) - 5), style="red")
            console.print(t)
        console.print(note, style="dim")
        for e in self.errors:
            console.print(f"x {e}", style="red")
        for w in self.warnings:
            console.print(f"! {w}", style="yellow")

    # -- plot --------------------------------------------------------------------------------
    def plot(self, path: str | os.PathLike[str]) -> Path:
        """Latency distributions (left) and throughput bars (right), as PNG/SVG/PDF by suffix."""
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError as e:
            raise InfercoreError('plotting needs matplotlib: pip install "infercore[bench]"') from e
        ok = [r for r in self.results if r.ok and r.latency is not None]
        if not ok:
            raise InfercoreError("nothing to plot: every configuration failed")
        labels = [r.label for r in ok]
        fig = Figure(figsize=(12, 1.6 + 0.55 * len(ok)), layout="constrained")
        FigureCanvasAgg(fig)
        ax_lat, ax_thr = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
        ys = np.arange(len(ok))
        rng = np.random.default_rng(0)
        for y, r in zip(ys, ok, strict=True):
            s = r.latency
            assert s is not None
            if r.samples_ns is not None and r.samples_ns.size > 1:
                ms = r.samples_ns / 1e6
                if ms.size > 4000:
                    ms = rng.choice(ms, 4000, replace=False)
                lo, hi = np.percentile(ms, [0.5, 99.5])
                ms = ms[(ms >= lo) & (ms <= hi)]
                if ms.size > 1 and ms.max() > ms.min():
                    parts = ax_lat.violinplot(
                        [ms], positions=[y], widths=0.8, showextrema=False, **_horizontal(ax_lat)
                    )
                    for body in parts["bodies"]:
                        body.set_alpha(0.45)
            ax_lat.hlines(y, s.p50_ms, s.p99_ms, color="0.3", lw=1)
            ax_lat.plot([s.p50_ms], [y], "o", color="C3", ms=5)
            ax_lat.plot([s.p99_ms], [y], "|", color="0.2", ms=10)
        ax_lat.set_yticks(ys, labels)
        ax_lat.invert_yaxis()
        ax_lat.set_xlabel("latency per call (ms) — dot: p50, bar: p99; 0.5-99.5% shown")
        ax_lat.grid(axis="x", alpha=0.3)
        thr = [r.items_per_s or 0.0 for r in ok]
        bars = ax_thr.barh(ys, thr, color=[f"C{i % 10}" for i in range(len(ok))], alpha=0.8)
        ax_thr.bar_label(bars, [f"{v:,.0f}" for v in thr], padding=3, fontsize=8)
        ax_thr.set_yticks(ys, [""] * len(ok))
        ax_thr.invert_yaxis()
        ax_thr.set_xlabel("throughput (items/s)")
        ax_thr.set_xlim(0, max(thr) * 1.2 if max(thr) > 0 else 1)
        ax_thr.grid(axis="x", alpha=0.3)
        fig.suptitle(
            f"{self.model.name} — {self.machine.cpu_model}, {self.machine.cores_usable} cores "
            f"({_simd_summary(self.machine.flags)}) — {self.created[:10]}",
            fontsize=10,
        )
        out = Path(path)
        fig.savefig(out, dpi=120)
        return out


def _horizontal(ax: Any) -> dict[str, Any]:
    import inspect

    params = inspect.signature(ax.violinplot).parameters
    return {"orientation": "horizontal"} if "orientation" in params else {"vert": False}


def _ms(v: float) -> str:
    if v >= 100:
        return f"{v:,.1f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def _size(n: int | None) -> str:
    if n is None:
        return "size unknown"
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 1024:.1f} KiB"


def _plain_table(head: list[str], rows: list[list[str]]) -> str:
    widths = [len(h) for h in head]
    for row in rows:
        for i, cell in enumerate(row):
            if cell.startswith("failed:"):
                break  # a failure message spans the figure columns: it does not widen one
            widths[i] = max(widths[i], len(cell))

    def line(cells: list[str]) -> str:
        out = []
        for i, c in enumerate(cells):
            if c.startswith("failed:"):
                out.append(c)
                break
            out.append(c.ljust(widths[i]) if i < 2 else c.rjust(widths[i]))
        return "  ".join(out).rstrip()

    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(r) for r in rows])


# -- JSON schema -------------------------------------------------------------------------------
_NUM = {"type": "number"}
_NUM_OR_NULL = {"type": ["number", "null"]}
_INT = {"type": "integer"}
_STR = {"type": "string"}
_STR_OR_NULL = {"type": ["string", "null"]}
_LATENCY = {
    "type": ["object", "null"],
    "required": ["count", "min", "mean", "std", "p50", "p90", "p95", "p99", "max", "cv"],
    "properties": {
        "count": _INT,
        **{k: _NUM for k in ("min", "mean", "std", "p50", "p90", "p95", "p99", "max", "cv")},
    },
}
JSON_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "infercore benchmark report",
    "type": "object",
    "required": ["schema_version", "created", "infercore_version", "model", "machine", "settings", "results"],
    "properties": {
        "schema_version": {"type": "integer", "const": SCHEMA_VERSION},
        "created": _STR,
        "infercore_version": _STR,
        "model": {
            "type": "object",
            "required": ["path", "name", "format", "size_bytes", "sha256"],
            "properties": {
                "path": _STR,
                "name": _STR,
                "format": _STR,
                "size_bytes": {"type": ["integer", "null"]},
                "sha256": _STR_OR_NULL,
            },
        },
        "machine": {
            "type": "object",
            "required": [
                "cpu_model",
                "cores_physical",
                "cores_logical",
                "cores_usable",
                "flags",
                "memory_gb",
                "os",
                "python",
                "numpy",
                "loadavg",
                "description",
            ],
            "properties": {
                "cpu_model": _STR,
                "cores_physical": {"type": ["integer", "null"]},
                "cores_logical": _INT,
                "cores_usable": _INT,
                "flags": {"type": "array", "items": _STR},
                "memory_gb": _NUM_OR_NULL,
                "os": _STR,
                "python": _STR,
                "numpy": _STR,
                "loadavg": {"type": ["array", "null"], "items": _NUM},
                "description": _STR,
            },
        },
        "settings": {
            "type": "object",
            "required": list(RunSettings.__dataclass_fields__),
            "properties": {
                "warmup_s": _NUM,
                "duration_s": _NUM_OR_NULL,
                "iterations": {"type": ["integer", "null"]},
                "bound": {"type": "boolean"},
                "device": _STR,
                "threads": {"type": ["integer", "null"]},
                "seed": _INT,
                "input_source": _STR,
                "cv_threshold": _NUM,
                "min_samples": _INT,
                "min_duration_s": _NUM,
                "rss_scope": {"type": "string", "enum": ["since-load", "process"]},
            },
        },
        "results": {
            "type": "array",
            "items": {
                "type": "object",
                "required": [
                    "backend",
                    "precision",
                    "device",
                    "threads",
                    "backend_version",
                    "batch",
                    "concurrency",
                    "bound",
                    "inputs",
                    "latency_ms",
                    "p50_net_ms",
                    "overhead",
                    "throughput",
                    "iterations",
                    "warmup_iterations",
                    "warmup_s",
                    "measured_s",
                    "peak_rss_mb",
                    "warnings",
                    "error",
                ],
                "properties": {
                    "backend": _STR,
                    "precision": _STR_OR_NULL,
                    "device": _STR,
                    "threads": {"type": ["integer", "null"]},
                    "backend_version": _STR_OR_NULL,
                    "batch": _INT,
                    "concurrency": _INT,
                    "bound": {"type": "boolean"},
                    "inputs": {"type": "object"},
                    "latency_ms": _LATENCY,
                    "p50_net_ms": _NUM_OR_NULL,
                    "overhead": {
                        "type": ["object", "null"],
                        "required": ["latency_us", "iteration_us", "iterations"],
                        "properties": {"latency_us": _NUM, "iteration_us": _NUM, "iterations": _INT},
                    },
                    "throughput": {
                        "type": "object",
                        "required": ["inferences_per_s", "items_per_s"],
                        "properties": {"inferences_per_s": _NUM_OR_NULL, "items_per_s": _NUM_OR_NULL},
                    },
                    "iterations": _INT,
                    "warmup_iterations": _INT,
                    "warmup_s": _NUM,
                    "measured_s": _NUM,
                    "peak_rss_mb": _NUM_OR_NULL,
                    "warnings": {"type": "array", "items": _STR},
                    "error": _STR_OR_NULL,
                    "samples_ms": {"type": "array", "items": _NUM},
                },
            },
        },
    },
}

_JSON_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def validate_report(obj: Any, schema: Mapping[str, Any] | None = None, where: str = "$") -> list[str]:
    """Check a decoded report against ``JSON_SCHEMA`` (the subset it uses: type, required,
    properties, items, enum, const). Returns the problems found, empty when valid. Use the
    ``jsonschema`` package for a full validator; this one keeps infercore free of it."""
    schema = JSON_SCHEMA if schema is None else schema
    problems: list[str] = []
    types = schema.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else list(types)
        if not any(_JSON_TYPES[t](obj) for t in names):
            return [f"{where}: expected {' or '.join(names)}, got {type(obj).__name__}"]
    if "const" in schema and obj != schema["const"]:
        problems.append(f"{where}: expected {schema['const']!r}, got {obj!r}")
    if "enum" in schema and obj not in schema["enum"]:
        problems.append(f"{where}: expected one of {schema['enum']}, got {obj!r}")
    if isinstance(obj, dict):
        problems += [f"{where}: missing {k!r}" for k in schema.get("required", ()) if k not in obj]
        for key, sub in schema.get("properties", {}).items():
            if key in obj:
                problems += validate_report(obj[key], sub, f"{where}.{key}")
    if isinstance(obj, list) and "items" in schema:
        for i, item in enumerate(obj):
            problems += validate_report(item, schema["items"], f"{where}[{i}]")
    return problems


# -- inputs ------------------------------------------------------------------------------------
def _is_batch_dim(name: str | None) -> bool:
    return name is not None and (name.lower() in ("n", "b", "bs") or "batch" in name.lower())


def resolve_shapes(
    specs: Sequence[TensorSpec],
    batch: int | None = None,
    shapes: Mapping[str, Sequence[int] | int] | None = None,
    data: Mapping[str, np.ndarray] | None = None,
) -> tuple[dict[str, tuple[int, ...]], int]:
    """Concrete input shapes and the batch size they carry.

    ``shapes`` maps an input name to a full shape, or a symbolic dimension name (``"sequence"``)
    to a size. ``batch`` replaces every dynamic batch dimension (one named like ``batch``/``N``, or
    else a dynamic dimension 0). Real ``data`` fixes the shape of its inputs. A dynamic dimension
    left unresolved raises ``InputSpecError`` naming it and how to set it.
    """
    shapes = dict(shapes or {})
    data = data or {}
    names = {s.name for s in specs}
    unknown = [k for k, v in shapes.items() if k not in names and not isinstance(v, int)]
    if unknown:
        raise InputSpecError(
            f"--shape {unknown[0]}=...: the model has no input {unknown[0]!r}; its inputs are "
            f"{', '.join(sorted(names))} (a symbolic dimension takes one size: NAME=128)"
        )
    out: dict[str, tuple[int, ...]] = {}
    batch_used: int | None = None
    for spec in specs:
        batch_axes = [
            i
            for i, (d, n) in enumerate(zip(spec.shape, spec.dim_names, strict=True))
            if d is None and _is_batch_dim(n)
        ]
        if not batch_axes and spec.rank and spec.shape[0] is None:
            batch_axes = [0]
        if spec.name in data:
            dims = list(data[spec.name].shape)
        elif spec.name in shapes:
            given = shapes[spec.name]
            dims = [int(given)] if isinstance(given, int) else [int(d) for d in given]
            if not spec.accepts(dims):
                raise InputSpecError(
                    f"input {spec.name!r}: shape {tuple(dims)} does not fit the model's {spec.shape} "
                    "(None: any size)",
                    tensor=spec.name,
                )
        else:
            dims = []
            for i, (d, n) in enumerate(zip(spec.shape, spec.dim_names, strict=True)):
                if d is not None:
                    dims.append(d)
                elif n is not None and isinstance(shapes.get(n), int):
                    dims.append(int(shapes[n]))  # type: ignore[arg-type]
                elif i in batch_axes:
                    dims.append(batch if batch is not None else 1)
                else:
                    label = f" ({n!r})" if n else ""
                    example = "x".join(
                        str(d) if d is not None else "1" if j in batch_axes else "?" for j, d in enumerate(spec.shape)
                    )  # the ? are for the caller to fill in
                    symbol = n if is_symbol(n) else None  # "?" or "unk__3" would size every such dim
                    raise InputSpecError(
                        f"input {spec.name!r} dimension {i}{label} is dynamic and has no size: give one with "
                        f"--shape {symbol or spec.name}={'N' if symbol else example} "
                        f"(shapes={{{(symbol or spec.name)!r}: ...}})",
                        tensor=spec.name,
                    )
        if batch is not None:
            for i in batch_axes:
                if i < len(dims):
                    dims[i] = batch
        if batch_axes and batch_used is None and batch_axes[0] < len(dims):
            batch_used = dims[batch_axes[0]]
        out[spec.name] = tuple(dims)
    if batch is not None and batch_used is None:
        fixed = next((s for s in specs if s.rank), None)
        raise InputSpecError(
            f"batch {batch} asked, but the model's inputs have no dynamic batch dimension "
            f"({fixed.name if fixed else 'inputs'}: {fixed.shape if fixed else ()}); export it with a dynamic "
            "batch axis or leave --batch out"
        )
    return out, batch_used if batch_used is not None else 1


def _check_shape_names(shapes: Mapping[str, Any], specs: Sequence[TensorSpec]) -> None:
    """``shapes`` keys are input names or symbolic dimension names of the model."""
    known = {s.name for s in specs} | {n for s in specs for n in s.dim_names if n is not None}
    unknown = [k for k in shapes if k not in known]
    if unknown:
        dims = sorted({n for s in specs for n in s.dim_names if n is not None})
        raise InputSpecError(
            f"shapes / --shape names {', '.join(map(repr, unknown))}, which is neither an input nor a dimension "
            f"of the model; its inputs are: {', '.join(s.name for s in specs)}; its named dimensions: "
            f"{', '.join(dims) or 'none'}",
            tensor=unknown[0],
        )


def _check_input_range(input_range: Mapping[str, tuple[float, float]], specs: Sequence[TensorSpec]) -> None:
    names = [s.name for s in specs]
    unknown = [n for n in input_range if n not in names]
    if unknown:
        raise InputSpecError(
            f"input_range / --input-range names {', '.join(map(repr, unknown))}, which the model does not "
            f"take; its inputs are: {', '.join(names)}",
            tensor=unknown[0],
        )


def _range_for(
    spec: TensorSpec, input_range: Mapping[str, tuple[float, float]], metadata: Mapping[str, str]
) -> tuple[tuple[float, float], str]:
    if spec.name in input_range:
        return tuple(input_range[spec.name]), "--input-range"  # type: ignore[return-value]
    raw = metadata.get(f"infercore.input_range.{spec.name}")
    if raw:
        lo, _, hi = raw.partition(":")
        try:
            return (float(lo), float(hi)), "model metadata"
        except ValueError:
            pass
    kind = spec.dtype.kind
    lower = spec.name.lower()
    if kind in "iu":
        vocab = metadata.get("vocab_size")
        if vocab and vocab.isdigit() and lower.endswith("ids") and "type" not in lower:
            return (0, int(vocab)), "model metadata vocab_size"
        if "mask" in lower:
            return (1, 2), "mask: all ones"
        if "token_type" in lower or "segment" in lower:
            return (0, 1), "token types: all zeros"
        return DEFAULT_INT_RANGE, "default"
    return DEFAULT_FLOAT_RANGE, "default"


def make_inputs(
    specs: Sequence[TensorSpec],
    shapes: Mapping[str, tuple[int, ...]],
    *,
    input_range: Mapping[str, tuple[float, float]] | None = None,
    metadata: Mapping[str, str] | None = None,
    data: Mapping[str, np.ndarray] | None = None,
    seed: int = 0,
) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
    """Arrays for every input, and a description of each (shape, dtype, where values came from).

    Random by default: floats uniform in [0, 1), integers in [0, 100), booleans 0/1; an input's
    range comes from ``input_range``, else the model's metadata (``infercore.input_range.NAME`` =
    ``"lo:hi"``, or ``vocab_size`` for ``*ids`` inputs), else the name (``*mask*``: all ones,
    ``token_type*``/``segment*``: zeros). ``data`` gives real arrays (rows repeat to fill a batch).
    """
    rng = np.random.default_rng(seed)
    input_range = input_range or {}
    metadata = metadata or {}
    data = data or {}
    feeds: dict[str, np.ndarray] = {}
    described: dict[str, dict[str, Any]] = {}
    for spec in specs:
        shape = tuple(shapes[spec.name])
        dtype = spec.dtype
        if spec.name in data:
            a = np.asarray(data[spec.name])
            if a.dtype != dtype:
                raise InputSpecError(
                    f"input {spec.name!r}: the data file holds {a.dtype}, the model takes {dtype}; save it with "
                    f"a.astype(np.{dtype.name}) (infercore never casts silently)",
                    tensor=spec.name,
                )
            if a.shape != shape:
                if a.ndim == len(shape) and a.shape[1:] == shape[1:] and a.shape[0] > 0:
                    a = np.take(a, np.arange(shape[0]) % a.shape[0], axis=0)
                else:
                    raise InputSpecError(
                        f"input {spec.name!r}: data shape {a.shape} does not fit {shape}", tensor=spec.name
                    )
            feeds[spec.name] = np.ascontiguousarray(a) if a.ndim else a
            described[spec.name] = {"shape": list(shape), "dtype": dtype.name, "source": "data file"}
            continue
        if dtype.hasobject:
            raise InputSpecError(
                f"input {spec.name!r} is a string tensor: pass real data with --inputs", tensor=spec.name
            )
        (lo, hi), why = _range_for(spec, input_range, metadata)
        if dtype.kind == "b":
            a = rng.integers(0, 2, size=shape).astype(bool)
            source = "random {0, 1}"
        elif dtype.kind in "iu":
            info = np.iinfo(dtype)
            ilo, ihi = max(int(lo), int(info.min)), min(int(hi), int(info.max) + 1)
            if ihi <= ilo:
                raise ValueError(f"input {spec.name!r}: empty integer range [{lo}, {hi}) for {dtype}")
            a = rng.integers(ilo, ihi, size=shape, dtype=np.int64).astype(dtype)
            source = f"random integers [{ilo}, {ihi}) ({why})"
        else:
            a = (rng.random(size=shape, dtype=np.float32) * np.float32(hi - lo) + np.float32(lo)).astype(
                dtype
            )
            source = f"random uniform [{lo:g}, {hi:g}) ({why})"
        feeds[spec.name] = a
        described[spec.name] = {"shape": list(shape), "dtype": dtype.name, "source": source}
    return feeds, described


def load_data(path: str | os.PathLike[str], specs: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
    """Real inputs from ``.npz`` (arrays named after the inputs) or ``.npy`` (a single-input model)."""
    return _data_for(_read_data_file(path), specs, Path(path).name)


def _read_data_file(path: str | os.PathLike[str]) -> np.ndarray | dict[str, np.ndarray]:
    p = Path(path)
    if p.suffix not in (".npz", ".npy"):
        raise ValueError(f"--inputs takes a .npz or .npy file, got {p.name}")
    return load_arrays(p)  # InputSpecError naming the file when it is missing, empty or corrupt


def _data_for(
    given: np.ndarray | Mapping[str, np.ndarray], specs: Sequence[TensorSpec], origin: str
) -> dict[str, np.ndarray]:
    """``given`` by input name: one array for a single-input model, or arrays named after inputs."""
    if isinstance(given, np.ndarray):
        if len(specs) != 1:
            raise InputSpecError(
                f"{origin} holds one array but the model has {len(specs)} inputs "
                f"({', '.join(s.name for s in specs)}): save them in a .npz, one per name"
            )
        return {specs[0].name: given}
    given = name_lone_array(given, [s.name for s in specs])
    names = {s.name for s in specs}
    extra = sorted(set(given) - names)
    if extra:
        raise InputSpecError(
            f"{origin} holds {', '.join(extra)}, which the model does not take; its inputs "
            f"are {', '.join(sorted(names))}",
            tensor=extra[0],
        )
    return {k: np.asarray(v) for k, v in given.items()}


# -- the harness -------------------------------------------------------------------------------
class _NoopBinding:
    def __init__(self, inputs: dict[str, np.ndarray]) -> None:
        self.inputs = inputs
        self.outputs: dict[str, np.ndarray] = {}

    def run(self) -> None:
        pass

    def close(self) -> None:
        pass


class _NoopBackend:
    """Accepts the real model's inputs and does nothing: what is left is the harness."""

    name = "noop"
    device = "cpu"

    def __init__(self, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> None:
        self.inputs = tuple(inputs)
        self.outputs = tuple(outputs)
        self.metadata: Mapping[str, str] = {}

    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        return {}

    def bind(self, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> _NoopBinding:
        return _NoopBinding(inputs)

    def close(self) -> None:
        pass


def _warm(run: Callable[[], object], seconds: float) -> tuple[int, float]:
    perf = _perf_ns
    n = 0
    t0 = perf()
    end = t0 + int(seconds * 1e9)
    now = t0
    while (n == 0 and seconds > 0) or now < end:
        run()
        n += 1
        now = perf()
    return n, (now - t0) / 1e9


def _timed(
    run: Callable[[], object], end_ns: int | None, count: int | None, out: list[int]
) -> tuple[int, int]:
    """The measured loop: one ``perf_counter_ns`` pair per call, nothing else in the timed span."""
    perf = _perf_ns
    append = out.append
    start = perf()
    if count is not None:
        for _ in range(count):
            t0 = perf()
            run()
            t1 = perf()
            append(t1 - t0)
    else:
        assert end_ns is not None
        t1 = start
        while t1 < end_ns:
            t0 = perf()
            run()
            t1 = perf()
            append(t1 - t0)
    return start, perf()


@dataclass
class _Measurement:
    samples: np.ndarray
    wall_s: float
    warm_iterations: int
    warm_s: float


@contextmanager
def _gc_paused() -> Iterator[None]:
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _measure(
    runs: Sequence[Callable[[], object]], warmup_s: float, duration_s: float | None, iterations: int | None
) -> _Measurement:
    """Warm every worker, then time them together; one worker runs in this thread."""
    if len(runs) == 1:
        warm_n, warm_s = _warm(runs[0], warmup_s)
        samples: list[int] = []
        with _gc_paused():
            end = None if iterations is not None else _perf_ns() + int((duration_s or 0) * 1e9)
            start, stop = _timed(runs[0], end, iterations, samples)
        return _Measurement(np.asarray(samples, np.int64), (stop - start) / 1e9, warm_n, warm_s)

    n = len(runs)
    per_worker: list[list[int]] = [[] for _ in range(n)]
    spans: list[tuple[int, int]] = [(0, 0)] * n
    warm: list[tuple[int, float]] = [(0, 0.0)] * n
    failures: list[BaseException] = []
    zero = [0]
    barrier = threading.Barrier(n, action=lambda: zero.__setitem__(0, _perf_ns()))

    def worker(i: int) -> None:
        try:
            warm[i] = _warm(runs[i], warmup_s)
            barrier.wait()
            end = None if iterations is not None else zero[0] + int((duration_s or 0) * 1e9)
            count = None if iterations is None else iterations // n + (1 if i < iterations % n else 0)
            spans[i] = _timed(runs[i], end, count, per_worker[i])
        except threading.BrokenBarrierError:
            pass
        except BaseException as e:
            failures.append(e)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(i,), name=f"infercore-bench-{i}") for i in range(n)]
    with _gc_paused():
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    if failures:
        raise failures[0]
    wall = (max(s[1] for s in spans) - min(s[0] for s in spans)) / 1e9
    samples_all = np.concatenate([np.asarray(s, np.int64) for s in per_worker])
    return _Measurement(samples_all, wall, sum(w[0] for w in warm), max(w[1] for w in warm))


def _callables(
    engine: Engine, feeds: Mapping[str, np.ndarray], bound: bool, n: int
) -> tuple[list[Any], list[Any]]:
    """One run callable per worker, and what to close afterwards."""
    if not bound:
        return [functools.partial(engine.run, dict(feeds)) for _ in range(n)], []
    ios = []
    try:
        for _ in range(n):
            io = engine.bind({k: v.shape for k, v in feeds.items()})
            ios.append(io)
            for k, v in feeds.items():
                io.inputs[k][...] = v
    except BaseException:
        for io in ios:
            io.close()
        raise
    return [io.run for io in ios], ios


def _overhead(
    engine: Engine, feeds: Mapping[str, np.ndarray], bound: bool, calls: int = 4000
) -> HarnessOverhead:
    noop = Engine(_NoopBackend(engine.inputs, engine.outputs), backend_name="noop")
    try:
        runs, ios = _callables(noop, feeds, bound, 1)
        try:
            _warm(runs[0], 0.02)
            samples: list[int] = []
            with _gc_paused():
                start, stop = _timed(runs[0], None, calls, samples)
        finally:
            for io in ios:
                io.close()
    finally:
        noop.close()
    return HarnessOverhead(float(np.median(samples)) / 1e3, (stop - start) / 1e3 / calls, calls)


class _PeakRss:
    """Peak resident memory. On Linux the kernel's high-water mark is reset (``clear_refs`` 5) so
    each backend's figure covers its own load and runs; elsewhere it is the process's peak."""

    def __init__(self) -> None:
        self.scope = "since-load" if self._reset() else "process"

    @staticmethod
    def _reset() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            return Path("/proc/self/status").exists()
        except OSError:
            return False

    def reset(self) -> None:
        if self.scope == "since-load":
            self._reset()

    def read_mb(self) -> float | None:
        if self.scope == "since-load":
            try:
                for line in Path("/proc/self/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        return round(int(line.split()[1]) / 1024, 1)
            except (OSError, ValueError, IndexError):
                pass
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return round(peak / (2**20 if sys.platform == "darwin" else 1024), 1)


class _Progress:
    """A live bar on stderr over configurations (rich, else tqdm, else nothing). It is redrawn a
    few times a second from its own thread and never touches the timed loop."""

    def __init__(self, total: int, enabled: bool | None) -> None:
        self._rich: Any = None
        self._tqdm: Any = None
        self._task: Any = None
        if enabled is None:
            enabled = sys.stderr.isatty()
        if not enabled or total <= 0:
            return
        try:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            self._rich = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=True,
                refresh_per_second=2,
            )
            self._rich.start()
            self._task = self._rich.add_task("benchmark", total=total)
            return
        except ImportError:
            pass
        try:
            from tqdm import tqdm

            self._tqdm = tqdm(total=total, file=sys.stderr, leave=False, mininterval=0.5)
        except ImportError:
            pass

    def describe(self, text: str) -> None:
        if self._rich is not None:
            self._rich.update(self._task, description=text)
        elif self._tqdm is not None:
            self._tqdm.set_description(text)

    def advance(self) -> None:
        if self._rich is not None:
            self._rich.advance(self._task)
        elif self._tqdm is not None:
            self._tqdm.update(1)

    def close(self) -> None:
        if self._rich is not None:
            self._rich.stop()
        elif self._tqdm is not None:
            self._tqdm.close()


# -- the public entry point ----------------------------------------------------------------------
def _as_list(value: Any, kind: type) -> list[Any]:
    if value is None:
        return [None]
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        value = [value]
    items: list[Any] = []
    for v in value:
        if isinstance(v, str) and kind is int:
            items += [int(x) for x in v.split(",") if x.strip()]
        elif isinstance(v, str):
            items += [x.strip() for x in v.split(",") if x.strip()]
        else:
            items.append(v)
    return items


def _parse_backends(
    backends: Sequence[str], precisions: Sequence[str | None]
) -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = []
    for b in backends:
        name, _, prec = b.partition(":")
        if prec:
            out.append((name.strip(), prec.strip().lower()))
        else:
            out += [(name.strip(), p) for p in precisions]
    return out


def _default_backends(path: Path) -> list[str]:
    from .plugins import registry

    names = [
        r.name for r in registry.candidates(path) if r.priority >= 0 and registry.probe(r.name).available
    ]
    if not names:
        registry.pick(path)  # raises, naming why each candidate is unavailable
    return names


def _version(backend: str) -> str | None:
    from .plugins import registry

    try:
        return registry.probe(backend).version
    except InfercoreError:
        return None


def _check_positive(name: str, value: float | None, allow_zero: bool = False) -> None:
    if value is None:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or value < 0
        or (value == 0 and not allow_zero)
    ):
        raise ValueError(
            f"{name} must be a {'non-negative' if allow_zero else 'positive'} number, got {value!r}"
        )


def benchmark(
    model: str | os.PathLike[str] | Engine,
    backends: str | Sequence[str] | None = None,
    *,
    batch: int | Sequence[int] | None = None,
    shapes: Mapping[str, Sequence[int] | int] | None = None,
    concurrency: int | Sequence[int] = 1,
    threads: int | None = None,
    precision: str | Sequence[str | None] | None = None,
    device: str = "cpu",
    warmup: float = 2.0,
    duration: float | None = 10.0,
    iterations: int | None = None,
    bound: bool = True,
    input_range: Mapping[str, tuple[float, float]] | None = None,
    inputs: str | os.PathLike[str] | Mapping[str, np.ndarray] | np.ndarray | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    cv_threshold: float = 0.10,
    min_samples: int = 30,
    min_duration: float = 1.0,
    progress: bool | None = None,
    keep_samples: bool = True,
    seed: int = 0,
) -> BenchmarkReport:
    """Benchmark a model on each backend and return a ``BenchmarkReport``.

    ``backends``: names (``"ort"``, ``"openvino"``, ``"litert"``...) or ``"name:precision"``
    (``"openvino:bf16"``); default: every available backend that reads the model's file type.
    ``precision`` (one or several) applies to entries without their own. ``batch`` and
    ``concurrency`` may be lists: every combination is measured. ``shapes``: input name → shape,
    or symbolic dimension → size (``{"sequence": 128}``). ``warmup``/``duration`` in seconds;
    ``iterations`` (total calls) replaces ``duration``. ``bound``: time ``io.run()`` on bound
    buffers (the zero-copy path) rather than ``engine.run(feeds)``. ``inputs``: real data
    (``.npz``/``.npy`` path, a dict, or one array); a file is read once, up front, and one that
    cannot be read raises ``InputSpecError`` naming it. ``input_range``: input name → (lo, hi); a
    name the model does not take (checked against the first backend that loads) raises
    ``InputSpecError``, as does data named after no input. ``options``: backend name → load options.

    A configuration that fails (a backend missing, a precision it refuses) becomes a result with
    ``error`` set; the others still run. Nothing here asserts timings: read ``warnings``.
    """
    from . import __version__

    if iterations is not None:
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
            raise ValueError(f"iterations must be a positive int, got {iterations!r}")
        duration = None
    elif duration is None:
        raise ValueError("give duration (seconds) or iterations")
    _check_positive("duration", duration)
    _check_positive("warmup", warmup, allow_zero=True)
    _check_positive("cv_threshold", cv_threshold)
    batches: list[int | None] = _as_list(batch, int)
    concs: list[int] = [c for c in _as_list(concurrency, int) if c is not None] or [1]
    for b in batches:
        if b is not None and (isinstance(b, bool) or not isinstance(b, int) or b < 1):
            raise ValueError(f"batch sizes must be positive ints, got {b!r}")
    for c in concs:
        if isinstance(c, bool) or not isinstance(c, int) or c < 1:
            raise ValueError(f"concurrency must be positive ints, got {c!r}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive int, got {threads!r}")

    given_engine = model if isinstance(model, Engine) else None
    path = given_engine.path if given_engine is not None else Path(model)  # type: ignore[arg-type]
    if given_engine is None:
        assert path is not None
        if not path.exists():
            from .errors import ModelLoadError

            raise ModelLoadError(f"model file not found: {path}", path=str(path))
        names = _as_list(backends, str) if backends is not None else _default_backends(path)
        configs = _parse_backends(names, _as_list(precision, str))
    else:
        if backends is not None:
            raise ValueError("backends= does not apply when benchmarking an already-open Engine")
        configs = [(given_engine.backend_name, given_engine.precision)]

    machine = MachineInfo.collect()
    rss = _PeakRss()
    source = (
        "random"
        if inputs is None
        else (f"file {Path(inputs).name}" if isinstance(inputs, (str, os.PathLike)) else "given arrays")
    )
    data_origin = "the given array" if isinstance(inputs, np.ndarray) else "inputs"
    if isinstance(inputs, (str, os.PathLike)):
        data_origin = Path(inputs).name
        inputs = _read_data_file(inputs)  # once, before any backend loads: a bad file fails at once
    settings = RunSettings(
        warmup_s=float(warmup),
        duration_s=None if duration is None else float(duration),
        iterations=iterations,
        bound=bound,
        device=device,
        threads=threads,
        seed=seed,
        input_source=source,
        cv_threshold=float(cv_threshold),
        min_samples=int(min_samples),
        min_duration_s=float(min_duration),
        rss_scope=rss.scope,
    )
    results: list[BenchmarkResult] = []
    bar = _Progress(len(configs) * len(batches) * len(concs), progress)
    range_checked = False  # input_range names are checked against the first backend that loads
    try:
        for name, prec in configs:
            rss.reset()
            engine = given_engine
            failure: str | None = None
            if engine is None:
                bar.describe(f"loading {name}{' ' + prec if prec else ''}")
                try:
                    assert path is not None
                    engine = load(
                        path,
                        name,
                        device=device,
                        precision=prec,
                        threads=threads,
                        options=(options or {}).get(name),
                    )
                except (InfercoreError, OSError, ValueError, RuntimeError) as e:
                    failure = f"{type(e).__name__}: {e}"
            try:
                if engine is not None and not range_checked:  # names checked once, on the first engine
                    if input_range:
                        _check_input_range(input_range, engine.inputs)
                    if shapes:
                        _check_shape_names(shapes, engine.inputs)
                    range_checked = True
                for b in batches:
                    for c in concs:
                        if engine is None:
                            results.append(
                                BenchmarkResult(
                                    backend=name,
                                    precision=prec,
                                    device=device,
                                    threads=threads,
                                    backend_version=_version(name),
                                    batch=b or 1,
                                    concurrency=c,
                                    bound=bound,
                                    inputs={},
                                    error=failure,
                                )
                            )
                        else:
                            bar.describe(f"{name}{' ' + prec if prec else ''} batch {b or '-'} conc {c}")
                            results.append(
                                _run_config(
                                    engine,
                                    b,
                                    c,
                                    shapes,
                                    inputs,
                                    data_origin,
                                    input_range,
                                    settings,
                                    rss,
                                    keep_samples,
                                )
                            )
                        bar.advance()
            finally:
                if engine is not None and engine is not given_engine:
                    engine.close()
    finally:
        bar.close()
    report = BenchmarkReport(
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        infercore_version=__version__,
        model=ModelInfo.of(path if given_engine is None else given_engine.path),
        machine=machine,
        settings=settings,
        results=tuple(results),
    )
    for w in report.warnings:
        warnings.warn(w, BenchmarkWarning, stacklevel=2)
    return report


def _run_config(
    engine: Engine,
    batch: int | None,
    concurrency: int,
    shapes: Mapping[str, Sequence[int] | int] | None,
    inputs: str | os.PathLike[str] | Mapping[str, np.ndarray] | np.ndarray | None,
    data_origin: str,
    input_range: Mapping[str, tuple[float, float]] | None,
    s: RunSettings,
    rss: _PeakRss,
    keep_samples: bool,
) -> BenchmarkResult:
    base = BenchmarkResult(
        backend=engine.backend_name,
        precision=engine.precision,
        device=engine.device,
        threads=s.threads,
        backend_version=_version(engine.backend_name),
        batch=batch or 1,
        concurrency=concurrency,
        bound=s.bound,
        inputs={},
    )
    ios: list[Any] = []
    try:
        data: dict[str, np.ndarray] | None
        if inputs is None:
            data = None
        elif isinstance(inputs, (str, os.PathLike)):
            data = load_data(inputs, engine.inputs)
        else:
            data = _data_for(inputs, engine.inputs, data_origin)
        specs = with_onnx_dim_names(engine.inputs, engine.path)  # names a backend did not report
        resolved, items = resolve_shapes(specs, batch, shapes, data)
        feeds, described = make_inputs(
            engine.inputs, resolved, input_range=input_range, metadata=engine.metadata, data=data, seed=s.seed
        )
        base = replace(base, batch=items, inputs=described)
        overhead = _overhead(engine, feeds, s.bound)
        runs, ios = _callables(engine, feeds, s.bound, concurrency)
        m = _measure(runs, s.warmup_s, s.duration_s, s.iterations)
    except (InfercoreError, ValueError, RuntimeError, OSError, MemoryError) as e:
        return replace(base, error=f"{type(e).__name__}: {e}", peak_rss_mb=rss.read_mb())
    finally:
        for io in ios:
            io.close()
    stats = LatencyStats.from_ns(m.samples)
    throughput = stats.count / m.wall_s if m.wall_s > 0 else 0.0
    result = replace(
        base,
        latency=stats,
        overhead=overhead,
        throughput=throughput,
        items_per_s=throughput * items,
        iterations=stats.count,
        warmup_iterations=m.warm_iterations,
        warmup_s=round(m.warm_s, 4),
        measured_s=round(m.wall_s, 4),
        peak_rss_mb=rss.read_mb(),
        samples_ns=m.samples if keep_samples else None,
    )
    return replace(result, warnings=tuple(_honesty(result, s)))


def load_data_array(array: np.ndarray, specs: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
    return _data_for(array, specs, "the given array")


def _honesty(r: BenchmarkResult, s: RunSettings) -> list[str]:
    """The reasons not to trust this figure as it stands."""
    out = []
    lat = r.latency
    assert lat is not None
    if lat.count < s.min_samples:
        out.append(
            f"too short: {lat.count} timed calls (< {s.min_samples}); percentiles are unreliable: run "
            "longer (--duration) or more (--iterations)"
        )
    if r.measured_s < s.min_duration_s:
        out.append(
            f"too short: measured {r.measured_s:.2f} s (< {s.min_duration_s:g} s); frequency scaling and "
            "caches may not have settled"
        )
    if s.warmup_s == 0:
        out.append("no warmup: first-call costs (allocation, kernel selection) are in the samples")
    if lat.cv > s.cv_threshold:
        out.append(
            f"noisy: latency CV {lat.cv:.1%} > {s.cv_threshold:.0%} (p99/p50 = {lat.p99_ms / lat.p50_ms:.2f}); "
            "other processes, frequency scaling or thermal throttling: close other work, run longer"
        )
    if r.overhead is not None and lat.p50_ms > 0:
        share = r.overhead.latency_us / 1e3 / lat.p50_ms
        if share > 0.05:
            out.append(
                f"harness overhead {r.overhead.latency_us:.1f} µs is {share:.0%} of p50: the model is too "
                "small to time per call from Python; see p50_net_ms"
            )
    return out


def parse_duration(text: str) -> float:
    """``"10s"``, ``"500ms"``, ``"2m"``, ``"1.5"`` (seconds) → seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|sec|m|min)?\s*", text)
    if not m:
        raise ValueError(f"not a duration: {text!r} (examples: 10s, 500ms, 2m)")
    value = float(m.group(1))
    unit = m.group(2) or "s"
    return value / 1000 if unit == "ms" else value * 60 if unit in ("m", "min") else value
