"""The measuring core of quantization and FP16 conversion: the original and the converted model
run side by side on the target's backend, scored on the same data, timed alternately.

``CalibrationReport`` is what ``ic.calibrate`` and ``ic.convert_fp16`` return: the metric before and
after, the drop, the output cosine and the speed ratio, all measured, none assumed.
"""

from __future__ import annotations

import dataclasses
import math
import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import (
    ArgumentError,
    BackendRuntimeError,
    BackendUnavailableError,
    CalibrationDropError,
    CalibrationError,
    InputSpecError,
    ModelLoadError,
    UnknownBackendError,
)
from ..inputs import Feeds, LabelledBatches, make_feeds, rows
from ..metrics import Metric, cosines, metric_name, score
from ..specs import TensorSpec
from .cache import copy_artifact

__all__ = [
    "CalibrationReport",
    "CalibrationResult",
    "EngineRunner",
    "Measured",
    "Runner",
    "build_report",
    "deliver",
    "describe",
    "float_inputs",
    "generated_inputs",
    "measure",
    "open_runner",
    "time_alternately",
]

# sizes tried in turn for dynamic dimensions that are not the batch: multiples of 32 (detection
# backbones downsample by 32), the second long enough for audio models' reflect padding
_SYNTHETIC_SIZES = (64, 512)


@dataclass(frozen=True)
class CalibrationReport:
    """What quantization (or FP16 conversion) cost, measured on real data.

    ``fp32_score``/``quantized_score`` are the ``metric`` on ``eval_samples`` samples (accuracy and
    top-k as fractions; for ``cosine`` the fp32 score is 1 and the quantized score the mean
    per-sample cosine of the outputs); ``drop`` is ``fp32_score - quantized_score`` and ``passed``
    says whether it stayed within ``max_drop``. ``cosine_mean``/``cosine_min`` compare the two
    models' outputs sample by sample, whatever the metric. Latencies are medians per batch of
    ``speed_batch`` samples on ``backend``, the two models measured alternately in one run.
    """

    kind: str  # "int8" or "fp16"
    target: str
    mode: str  # "static Q/DQ", "dynamic", "nncf", "fp16"
    method: str | None
    preset: str | None
    per_channel: bool | None
    metric: str
    output: str
    fp32_score: float
    quantized_score: float
    drop: float
    max_drop: float | None
    passed: bool
    cosine_mean: float
    cosine_min: float
    eval_samples: int
    eval_source: str
    calibration_samples: int
    backend: str | None
    speed_batch: int | None
    fp32_ms: float | None
    quantized_ms: float | None
    speedup: float | None
    model: str
    artifact: str
    cached: bool = False
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["notes"] = list(self.notes)
        return d

    def _score(self, v: float) -> str:
        if self.metric == "accuracy" or self.metric.startswith("top"):
            return f"{100 * v:.2f}%"
        return f"{v:.5f}"

    def _delta(self, v: float) -> str:
        if self.metric == "accuracy" or self.metric.startswith("top"):
            return f"{100 * v:+.2f} pt"
        return f"{v:+.5f}"

    def __str__(self) -> str:
        q = self.kind.upper()
        how = [self.mode]
        if self.method:
            how.append(self.method)
        if self.preset:
            how.append(f"preset {self.preset}")
        if self.per_channel is not None:
            how.append("per-channel" if self.per_channel else "per-tensor")
        # without max_drop nothing was checked: say so rather than "ok" beside a collapsed score
        verdict = "not checked (no max_drop)" if self.max_drop is None else "ok" if self.passed else "FAILED"
        limit = f", max_drop {self._delta(self.max_drop).lstrip('+')}" if self.max_drop is not None else ""
        lines = [
            f"{q} for {self.target} ({', '.join(how)}): {Path(self.model).name} -> {self.artifact}"
            + (" (cached)" if self.cached else ""),
            f"  {self.metric} on {self.eval_samples} samples ({self.eval_source}), output {self.output!r}: "
            f"fp32 {self._score(self.fp32_score)}  {self.kind} {self._score(self.quantized_score)}  "
            f"drop {self._delta(self.drop)}{limit}  {verdict}",
            f"  output cosine vs fp32: mean {self.cosine_mean:.5f}  min {self.cosine_min:.5f}",
        ]
        if self.speedup is not None and self.fp32_ms is not None and self.quantized_ms is not None:
            lines.append(
                f"  speed on {self.backend}, batch {self.speed_batch}: fp32 {self.fp32_ms:.3f} ms  "
                f"{self.kind} {self.quantized_ms:.3f} ms  -> {self.speedup:.2f}x"
            )
        else:
            lines.append(f"  speed: not measured ({self.backend or 'no backend'})")
        if self.calibration_samples:
            lines.append(f"  calibrated on {self.calibration_samples} samples")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)


@dataclass(frozen=True)
class CalibrationResult:
    """The quantized model's path (``.onnx`` or OpenVINO ``.xml``) and its measured report."""

    artifact_path: Path
    report: CalibrationReport


class Runner(Protocol):
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    backend: str

    def run(self, feeds: Feeds) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...


class EngineRunner:
    def __init__(self, path: Path, backend: str, threads: int | None, **kw: Any) -> None:
        from ..engine import load

        self._eng = load(path, backend, threads=threads, **kw)
        self.metadata = self._eng.metadata
        self.inputs = self._eng.inputs
        self.outputs = self._eng.outputs
        self.backend = self._eng.backend_name

    def run(self, feeds: Feeds) -> dict[str, np.ndarray]:
        return self._eng.run(feeds)

    def close(self) -> None:
        self._eng.close()


class RawRunner:
    """A raw runtime session (``infercore.protocol.RawSession``) as a ``Runner``."""

    def __init__(self, session: Any, backend: str) -> None:
        self._session = session
        self.inputs = session.inputs
        self.outputs = session.outputs
        self.backend = backend

    def run(self, feeds: Feeds) -> dict[str, np.ndarray]:
        return self._session.run(feeds)

    def close(self) -> None:
        self._session.close()


def open_runner(
    path: Path, target: str, threads: int | None, notes: list[str], precision: str | None = None
) -> Runner:
    """The model on the target's backend (openvino falls back to raw OpenVINO if infercore's backend
    is not usable; tensorrt falls back to ONNX Runtime for accuracy, without a speed figure)."""
    if target == "openvino":
        try:
            return EngineRunner(path, "openvino", threads)
        except (BackendUnavailableError, UnknownBackendError) as e:
            from ..backends.ov import raw_session

            runner = RawRunner(raw_session(path, threads=threads), "openvino (raw, f32 hint)")
            note = f"infercore's openvino backend is not usable ({e}); measured with raw OpenVINO, f32 hint"
            if note not in notes:
                notes.append(note)
            return runner
    if target == "tensorrt":
        try:
            return EngineRunner(path, "tensorrt", threads, device="cuda:0", precision=precision)
        except (BackendUnavailableError, UnknownBackendError, ModelLoadError) as e:
            note = (
                f"TensorRT not usable here ({e}); accuracy measured on ONNX Runtime (CPU), speed not measured"
            )
            if note not in notes:
                notes.append(note)
            return EngineRunner(path, "ort", threads)
    return EngineRunner(path, "ort", threads)


def float_inputs(feeds: Feeds, specs: Sequence[TensorSpec]) -> Feeds:
    """The same feeds in the float type a converted model takes (an fp16 model without kept I/O types)."""
    want = {s.name: s.dtype for s in specs}
    return {
        k: v.astype(want[k])
        if k in want and v.dtype != want[k] and v.dtype.kind == want[k].kind == "f"
        else v
        for k, v in feeds.items()
    }


def time_alternately(runners: Sequence[Runner], feeds: Sequence[Feeds], budget_s: float) -> list[float]:
    """Median ms per run of each runner on its feeds, measured alternately (shared noise)."""
    for r, f in zip(runners, feeds, strict=True):
        for _ in range(2):
            r.run(f)
    times: list[list[float]] = [[] for _ in runners]
    t_end = time.perf_counter() + budget_s
    rounds = 0
    while rounds < 5 or (time.perf_counter() < t_end and rounds < 500):
        for i, (r, f) in enumerate(zip(runners, feeds, strict=True)):
            t0 = time.perf_counter()
            r.run(f)
            times[i].append(time.perf_counter() - t0)
        rounds += 1
    return [1e3 * statistics.median(t) for t in times]


@dataclass
class Measured:
    metric: str
    output: str
    fp32_score: float
    quantized_score: float
    cosine_mean: float
    cosine_min: float
    samples: int
    backend: str | None
    speed_batch: int | None
    fp32_ms: float | None
    quantized_ms: float | None


def measure(
    fp32: Path,
    quantized: Path,
    *,
    target: str,
    evalset: LabelledBatches,
    metric: Metric | None,
    eval_output: str | None,
    threads: int | None,
    timing_s: float,
    notes: list[str],
    precision: str = "int8",
) -> Measured:
    name = metric_name(metric, evalset.has_labels)
    ref = open_runner(fp32, target, threads, notes)
    try:
        q = open_runner(quantized, target, threads, notes, precision)
    except BaseException:
        ref.close()
        raise
    try:
        out_names = [s.name for s in ref.outputs]
        output = eval_output or out_names[0]
        if output not in out_names:
            raise ArgumentError("eval_output", f"{output!r} is not an output; the outputs are {out_names}")
        refs, gots = [], []
        for b in evalset.batches:
            refs.append(ref.run(b)[output])
            gots.append(q.run(float_inputs(b, q.inputs))[output])
        cos = np.concatenate([cosines(r, g) for r, g in zip(refs, gots, strict=True)])
        if name == "cosine":
            fp32_score, q_score = 1.0, float(cos.mean())
        else:
            labels = evalset.all_labels()
            if labels is None and not callable(metric):
                raise CalibrationError(f"metric {name!r} needs labels: give eval_data as (data, labels)")
            r_all, g_all = _concat(refs), _concat(gots)
            try:
                fp32_score = score(metric, r_all, labels, model="fp32")
                q_score = score(metric, g_all, labels, model=precision)
            except InputSpecError as e:  # labels that do not fit the outputs, a metric that fails
                raise CalibrationError(str(e)) from (e.__cause__ or e)
        speed: list[float | None] = [None, None]
        backend: str | None = ref.backend
        batch: int | None = None
        if timing_s > 0 and not (target == "tensorrt" and ref.backend == "ort"):
            feeds = max(evalset.batches, key=rows)
            batch = rows(feeds)
            speed = list(time_alternately([ref, q], [feeds, float_inputs(feeds, q.inputs)], timing_s))
        elif target == "tensorrt" and ref.backend == "ort":
            backend = "ort (accuracy only)"
        return Measured(
            name,
            output,
            fp32_score,
            q_score,
            float(cos.mean()),
            float(cos.min()),
            evalset.samples,
            backend,
            batch,
            speed[0],
            speed[1],
        )
    finally:
        q.close()
        ref.close()


def _concat(arrays: list[np.ndarray]) -> np.ndarray:
    try:
        return np.concatenate(arrays)
    except ValueError as e:
        raise CalibrationError(
            f"outputs of the eval batches have different shapes ({[a.shape for a in arrays]}); "
            "use metric='cosine' or a callable on same-shaped batches"
        ) from e


def build_report(
    m: Measured,
    *,
    kind: str,
    target: str,
    mode: str,
    method: str | None,
    preset: str | None,
    per_channel: bool | None,
    max_drop: float | None,
    eval_source: str,
    calibration_samples: int,
    model: Path,
    artifact: Path,
    cached: bool,
    notes: list[str],
) -> CalibrationReport:
    drop = m.fp32_score - m.quantized_score
    passed = max_drop is None or (not math.isnan(drop) and drop <= max_drop)
    speedup = m.fp32_ms / m.quantized_ms if m.fp32_ms and m.quantized_ms else None
    return CalibrationReport(
        kind=kind, target=target, mode=mode, method=method, preset=preset, per_channel=per_channel,
        metric=m.metric, output=m.output, fp32_score=m.fp32_score, quantized_score=m.quantized_score,
        drop=drop, max_drop=max_drop, passed=passed, cosine_mean=m.cosine_mean, cosine_min=m.cosine_min,
        eval_samples=m.samples, eval_source=eval_source, calibration_samples=calibration_samples,
        backend=m.backend, speed_batch=m.speed_batch, fp32_ms=m.fp32_ms, quantized_ms=m.quantized_ms,
        speedup=speedup, model=str(model), artifact=str(artifact), cached=cached, notes=tuple(notes),
    )  # fmt: skip


def deliver(report: CalibrationReport, artifact: Path, output: str | os.PathLike[str] | None) -> CalibrationResult:
    """Refuse a drop beyond ``max_drop`` (the artifact stays in the cache), else copy to ``output``."""
    final = Path(output) if output is not None else artifact
    if report.passed:
        if output is not None:
            copy_artifact(artifact, final)
        return CalibrationResult(final, report)
    report = dataclasses.replace(report, artifact=str(artifact))
    raise CalibrationDropError(
        f"{report.kind} {report.metric} dropped by {report._delta(report.drop).lstrip('+')} "
        f"(fp32 {report._score(report.fp32_score)} -> {report._score(report.quantized_score)}), more than "
        f"max_drop {report._delta(report.max_drop or 0.0).lstrip('+')}; the artifact was not written to "
        f"output (it is at {artifact}). Try preset='transformer', exclude_ops=..., another method, or more "
        f"calibration data.\n{report}",
        report=report,
        artifact_path=artifact,
    )


def describe(feeds: Feeds) -> str:
    return ", ".join(f"{k} {tuple(v.shape)} {v.dtype}" for k, v in feeds.items())


def generated_inputs(src: Path, threads: int | None) -> Feeds:
    """Generated inputs (``infercore.inputs``, floats normal(0, 1)) the fp32 model runs on (ONNX
    Runtime), a dynamic dimension sized each of ``_SYNTHETIC_SIZES`` in turn; when it runs on none,
    say the inputs were generated, with their shapes, and ask for real data."""
    runner = EngineRunner(src, "ort", threads)
    failures: list[str] = []
    tried: set[str] = set()
    try:
        for size in _SYNTHETIC_SIZES:
            feeds, _ = make_feeds(
                runner.inputs, metadata=runner.metadata, distribution="normal", dynamic_size=size
            )
            if describe(feeds) in tried:
                continue
            tried.add(describe(feeds))
            try:
                runner.run(feeds)
                return feeds
            except BackendRuntimeError as e:
                failures.append(f"[{describe(feeds)}]: {e}")
    finally:
        runner.close()
    raise CalibrationError(
        f"no data was given, so the report needs generated inputs (infercore.inputs' rules), and "
        f"{src.name} does not run on them: " + "; ".join(failures) + ". Pass real inputs with data= or eval_data="
    )
