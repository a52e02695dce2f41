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
import os
import re
import resource
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..arguments import check_int, check_number
from ..engine import Engine, load
from ..errors import ArgumentError, BenchmarkWarning, InfercoreError, ModelLoadError
from ..inputs import (
    Data,
    default_backends,
    is_batch_axis,
    load_feeds,
    make_feeds,
    name_feeds,
    parse_backends,
    read_data,
    resolve_shapes,
)
from ..progress import Progress
from ..specs import TensorSpec, with_onnx_dim_names
from .machine import MachineInfo, ModelInfo
from .report import BenchmarkReport, BenchmarkResult, HarnessOverhead, LatencyStats, RunSettings

__all__ = ["benchmark", "parse_duration"]


_perf_ns = time.perf_counter_ns


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


def _version(backend: str) -> str | None:
    from ..plugins import registry

    try:
        return registry.probe(backend).version
    except InfercoreError:
        return None


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
    (``"openvino:bf16"``), as a list or a comma-separated string; default: every available
    backend that reads the model's file type (``infercore.inputs.default_backends``); of those,
    one that cannot load this model (``ModelLoadError``) is left out and listed in
    ``report.skipped``, and when none can, ``ModelLoadError`` names each one's reason.
    ``precision`` (one or several) applies to entries without their own. ``batch`` and
    ``concurrency`` may be lists: every combination is measured. ``shapes``: input name -> shape,
    or symbolic dimension -> size (``{"sequence": 128}``); other dynamic dimensions are sized by
    ``infercore.inputs``' rule, and each result's ``inputs`` says how. ``warmup``/``duration`` in
    seconds; ``iterations`` (total calls) replaces ``duration``. ``bound``: time ``io.run()`` on
    bound buffers (the zero-copy path) rather than ``engine.run(feeds)``. ``inputs``: real data
    (a ``.npz``/``.npy`` path or a directory, a dict, or one array; rows repeat to fill a batch); a
    file is read once, up front. ``input_range``: input name -> (lo, hi) of generated values.
    ``options``: backend name -> load options.

    A configuration that fails (a backend missing, a precision it refuses) becomes a result with
    ``error`` set; the others still run. Nothing here asserts timings: read ``warnings``.
    """
    from .. import __version__

    if iterations is not None:
        check_int("iterations", iterations)
        duration = None
    elif duration is None:
        raise ArgumentError("duration", "give duration (seconds) or iterations")
    check_number("duration", duration, inclusive=False, optional=True)
    check_number("warmup", warmup)
    check_number("cv_threshold", cv_threshold, inclusive=False)
    check_int("threads", threads, optional=True)
    batches: list[int | None] = [check_int("batch", b, optional=True) for b in _as_list(batch, int)]
    concs: list[int] = [c for c in _as_list(concurrency, int) if c is not None] or [1]
    for c in concs:
        check_int("concurrency", c)

    given_engine = model if isinstance(model, Engine) else None
    path = given_engine.path if given_engine is not None else Path(model)  # type: ignore[arg-type]
    if given_engine is None:
        assert path is not None
        if not path.exists():
            raise ModelLoadError(f"model file not found: {path}", path=str(path))
        chosen = backends if backends is not None else default_backends(path)
        precisions = _as_list(precision, str) if precision is not None else None
        configs = [(c.name, c.precision) for c in parse_backends(chosen, precisions=precisions)]
    else:
        if backends is not None:
            raise ArgumentError("backends", "does not apply when benchmarking an already-open Engine")
        configs = [(given_engine.backend_name, given_engine.precision)]

    machine = MachineInfo.collect()
    rss = _PeakRss()
    source = "random"
    given: Data | Mapping[str, np.ndarray] | np.ndarray | None = None
    if isinstance(inputs, (str, os.PathLike)):
        source = f"file {Path(inputs).name}"
        given = read_data(inputs)  # once, before any backend loads: a bad file fails at once
    elif inputs is not None:
        source, given = "given arrays", inputs
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
    skipped: list[str] = []  # default backends (none named) that cannot read this model
    load_errors: list[ModelLoadError] = []
    defaulted = given_engine is None and backends is None
    checked = False  # shapes, batches and input_range are checked against the first backend that loads
    per_config = float(warmup) + float(duration) if duration is not None else None  # an ETA from the start
    with Progress(
        len(configs) * len(batches) * len(concs), "benchmark", enabled=progress, expected=per_config
    ) as bar:
        for name, prec in configs:
            rss.reset()
            engine = given_engine
            failure: str | None = None
            if engine is None:
                bar.describe(f"loading {name}{' ' + prec if prec else ''}")
                try:
                    assert path is not None
                    engine = load(
                        path, name, device=device, precision=prec, threads=threads, options=(options or {}).get(name)
                    )
                except (InfercoreError, OSError, ValueError, RuntimeError) as e:
                    failure = f"{type(e).__name__}: {e}"
                    if defaulted and isinstance(e, ModelLoadError):  # not asked for, and cannot read it
                        skipped.append(f"{name}{' ' + prec if prec else ''}: {e}")
                        load_errors.append(e)
                        for _ in range(len(batches) * len(concs)):
                            bar.advance()
                        continue
            try:
                if engine is not None and not checked:  # a wrong name or batch fails once, as an argument
                    specs = with_onnx_dim_names(engine.inputs, engine.path)
                    for b in batches:
                        resolve_shapes(specs, shapes=shapes, batch=b)
                    _check_ranges(input_range, specs)
                    checked = True
                for b in batches:
                    for c in concs:
                        if engine is None:
                            failed = BenchmarkResult(
                                backend=name, precision=prec, device=device, threads=threads,
                                backend_version=_version(name), batch=b or 1, concurrency=c, bound=bound,
                                inputs={}, error=failure,
                            )  # fmt: skip
                            results.append(failed)
                        else:
                            bar.describe(f"{name}{' ' + prec if prec else ''} batch {b or '-'} conc {c}")
                            results.append(
                                _run_config(engine, b, c, shapes, given, input_range, settings, rss, keep_samples)
                            )
                        bar.advance()
            finally:
                if engine is not None and engine is not given_engine:
                    engine.close()
    if skipped and not results:  # no installed backend reads it: one error with every reason
        assert path is not None
        raise ModelLoadError(
            f"no installed backend can read {path.name}: " + "; ".join(skipped), path=str(path)
        ) from load_errors[0]
    report = BenchmarkReport(
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        infercore_version=__version__,
        model=ModelInfo.of(path if given_engine is None else given_engine.path),
        machine=machine,
        settings=settings,
        results=tuple(results),
        skipped=tuple(skipped),
    )
    for w in report.warnings:
        warnings.warn(w, BenchmarkWarning, stacklevel=2)
    return report


def _check_ranges(ranges: Mapping[str, tuple[float, float]] | None, specs: Sequence[TensorSpec]) -> None:
    names = [s.name for s in specs]
    unknown = [n for n in ranges or {} if n not in names]
    if unknown:
        raise ArgumentError(
            "input_range", f"{', '.join(map(repr, unknown))} is not an input of the model; its inputs are: {', '.join(names)}"
        )


def _given_feeds(
    inputs: Data | Mapping[str, np.ndarray] | np.ndarray | None, specs: Sequence[TensorSpec]
) -> dict[str, Any]:
    if inputs is None:
        return {}
    if isinstance(inputs, Data):
        return load_feeds(inputs, specs)
    return name_feeds(inputs, specs, "inputs")


def _run_config(
    engine: Engine,
    batch: int | None,
    concurrency: int,
    shapes: Mapping[str, Sequence[int] | int] | None,
    inputs: Data | Mapping[str, np.ndarray] | np.ndarray | None,
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
        specs = with_onnx_dim_names(engine.inputs, engine.path)  # names a backend did not report
        feeds, info = make_feeds(
            specs,
            values=_given_feeds(inputs, specs),
            shapes=shapes,
            batch=batch,
            seed=s.seed,
            ranges=input_range,
            metadata=engine.metadata,
            values_from="data file" if isinstance(inputs, Data) else "given",
        )
        items = rows_of_batch(specs, feeds)
        described = {k: {"shape": list(i.shape), "dtype": i.dtype, "source": i.source} for k, i in info.items()}
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


def rows_of_batch(specs: Sequence[TensorSpec], feeds: Mapping[str, np.ndarray]) -> int:
    """The batch a set of feeds carries: the size of the first input's batch dimension (1 without)."""
    for spec in specs:
        for i in range(spec.rank):
            if is_batch_axis(spec, i):
                return int(feeds[spec.name].shape[i])
    return 1


def _honesty(r: BenchmarkResult, s: RunSettings) -> list[str]:
    """The reasons not to trust this figure as it stands."""
    out = []
    lat = r.latency
    assert lat is not None
    if lat.count < s.min_samples:
        out.append(
            f"too short: {lat.count} timed calls (< {s.min_samples}); percentiles are unreliable: run "
            "for longer or for more iterations"
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
        raise ArgumentError("duration", f"not a duration: {text!r} (examples: 10s, 500ms, 2m)")
    value = float(m.group(1))
    unit = m.group(2) or "s"
    return value / 1000 if unit == "ms" else value * 60 if unit in ("m", "min") else value
