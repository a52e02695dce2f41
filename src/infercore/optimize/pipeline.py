"""``ic.optimize``: pruning, distillation, conversion and INT8 as one chain, every state of the
model measured on the target's backend.

    res = ic.optimize(model, torch.randn(1, 3, 32, 32), (x_train, y_train), (x_test, y_test),
                      steps=["prune", "distill", "convert", "int8"], target="openvino",
                      ratio=0.5, epochs=5, max_drop=0.01, output_dir="optimized")
    print(res.report)           # one row per state: accuracy, size, p50/p99, best batch, speedups
    res.artifact_path           # optimized/model.xml, written only within max_drop

The input model is converted first (``ic.convert``, verified against torch on the target's
backend) and measured as the baseline. Torch steps (``prune``, ``distill``) are measured the same
way, through a verified conversion of the module they leave; ``convert`` marks where the chain
leaves torch (its row is the file the later steps start from); ``int8`` runs ``ic.calibrate`` on
that file. Accuracy (precision, recall, F1: ``infercore.metrics``) is measured on ``eval_data``
with each model file on the target's backend; without labels, the cosine of each state's outputs
to the input's. Speed: every file in one run of paired rounds (``infercore.optimize.speed``).
``max_drop`` refuses a chain whose last state lost more than that against the input: the report
is written, the final model is not.
"""

from __future__ import annotations

import copy
import datetime as _dt
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..arguments import check_choice, check_int, check_number
from ..errors import ArgumentError, InputSpecError, OptimizeDropError
from ..inputs import LabelledBatches, labelled_batches
from ..metrics import classification, cosines
from ..modelfiles import model_files
from ..progress import Progress
from .distillation import as_numpy_data, distill
from .pruning import check_ratio, prune
from .report import OptimizeReport, OptimizeResult, StepReport
from .speed import MIN_SPEEDUP, measure_speed, speed_flag
from .torchmodel import ModuleInputs, module_inputs, torch

__all__ = ["STEPS", "TARGETS", "check_steps", "optimize"]

STEPS = ("prune", "distill", "convert", "int8")
TARGETS = ("ort", "openvino", "tensorrt")
_FORMAT = {"ort": "onnx", "openvino": "openvino", "tensorrt": "onnx"}
_SUFFIX = {"onnx": ".onnx", "openvino": ".xml"}
_METRICS = ("accuracy", "precision", "recall", "f1", "cosine")
_TORCH_STEPS = ("prune", "distill")


def check_steps(steps: Any) -> tuple[list[str], list[str]]:
    if isinstance(steps, str):
        steps = [s.strip() for s in steps.split(",") if s.strip()]
    try:
        items = [str(s).lower() for s in steps]
    except TypeError:
        raise ArgumentError("steps", f"expected a list of steps from {', '.join(STEPS)}, got {steps!r}") from None
    if not items:
        raise ArgumentError("steps", f"no steps given: choose from {', '.join(STEPS)}")
    notes = []
    for s in items:
        if s not in STEPS:
            raise ArgumentError("steps", f"unknown step {s!r}: choose from {', '.join(STEPS)}")
    if items.count("convert") > 1 or items.count("int8") > 1:
        raise ArgumentError("steps", "convert and int8 come once each")
    if "convert" not in items:
        first_file = items.index("int8") if "int8" in items else len(items)
        items.insert(first_file, "convert")
        notes.append("steps had no convert: the module is converted after its torch steps")
    at = items.index("convert")
    late = [s for s in items[at:] if s in _TORCH_STEPS]
    if late:
        raise ArgumentError("steps", f"{late[0]} works on the torch module: put it before convert ({' -> '.join(items)})")
    if "int8" in items and items.index("int8") < at:
        raise ArgumentError("steps", "int8 quantizes the converted model: put it after convert")
    return items, notes


def _check_metric(metric: Any, has_labels: bool) -> str:
    if metric is None:
        return "accuracy" if has_labels else "cosine"
    m = str(metric).lower()
    if m == "top1":
        m = "accuracy"
    if m not in _METRICS:
        raise ArgumentError("metric", f"expected one of {', '.join(_METRICS)}, got {metric!r}")
    if m != "cosine" and not has_labels:
        raise ArgumentError("metric", f"{m} needs labels in eval_data: give (inputs, labels), or metric='cosine'")
    return m


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in model_files(path))


def _convert(module: Any, inputs: ModuleInputs, fmt: str, out: Path, *, backends: list[str] | None,
             exporter: str | None) -> tuple[Path, dict[str, Any]]:  # fmt: skip
    """The module as a verified model file: ``ic.convert``'s parity gate, or its error."""
    from ..convert import convert

    res = convert(
        module, fmt, inputs.example_for_tracing(), dynamic={n: {0: "batch"} for n in inputs.names},
        input_names=list(inputs.names), output=out, backends=backends, exporter=exporter,
    )  # fmt: skip
    rep = res.report
    detail = {
        "verdict": rep.verdict(),
        "exporter": rep.exporter,
        "backends": list(rep.backends),
        "sets": rep.sets,
        "worst_max_abs": max((c.max_abs or 0.0 for c in rep.checks), default=None),
    }
    return Path(res.artifact_path), detail


def _outputs(path: Path, backend: str, evalset: LabelledBatches, threads: int | None) -> np.ndarray:
    from ..engine import load

    with load(path, backend, threads=threads) as eng:
        name = eng.outputs[0].name
        specs = {s.name: s for s in eng.inputs}
        outs = []
        for b in evalset.batches:
            feeds = {k: v.astype(specs[k].dtype, copy=False) if k in specs and v.dtype.kind == specs[k].dtype.kind == "f" else v
                     for k, v in b.items()}  # fmt: skip
            outs.append(eng.run(feeds, outputs=[name])[name])
    return np.concatenate(outs)


def _scores(out: np.ndarray, labels: np.ndarray | None, reference: np.ndarray | None) -> dict[str, float]:
    scores: dict[str, float] = {}
    if labels is not None:
        c = classification(out, labels)
        scores = {k: c[k] for k in ("accuracy", "precision", "recall", "f1")}
    if reference is not None:
        scores["cosine"] = float(cosines(reference, out).mean())
    return scores


def optimize(
    module: Any,
    example_inputs: Any,
    data: Any,
    eval_data: Any,
    steps: Sequence[str] | str = ("prune", "convert", "int8"),
    target: str = "ort",
    *,
    ratio: float = 0.5,
    importance: Any = "l2",
    ignore: Any = None,
    round_to: int | None = None,
    epochs: int = 5,
    distill_options: Mapping[str, Any] | None = None,
    fine_tune: Callable[[Any, Any, Any], Any] | None = None,
    calibrate_options: Mapping[str, Any] | None = None,
    calibration_samples: int = 512,
    metric: str | None = None,
    max_drop: float | None = None,
    output_dir: str | os.PathLike[str] | None = None,
    output: str | os.PathLike[str] | None = None,
    batches: Sequence[int] = (1, 8, 32),
    rounds: int = 5,
    round_s: float = 0.25,
    threads: int | None = None,
    exporter: str | None = "torchscript",
    verify_backends: Sequence[str] | None = None,
    min_speedup: float = MIN_SPEEDUP,
    plot: bool = True,
    progress: bool | None = None,
) -> OptimizeResult:
    """Run ``steps`` on ``module`` and measure every state of it on ``target``'s backend.

    ``data``: training data for distillation and INT8 calibration, ``(inputs, labels)`` or any
    form ``infercore.inputs.labelled_batches`` reads. ``eval_data``: held-out ``(inputs, labels)``
    (without labels: cosine to the input model). ``steps``: from ``prune``, ``distill``,
    ``convert``, ``int8``, torch steps before ``convert`` (added before ``int8`` when left out).
    ``target``: ``"ort"`` (ONNX on ONNX Runtime), ``"openvino"`` (IR on OpenVINO, f32) or
    ``"tensorrt"`` (ONNX on TensorRT). ``ratio``, ``importance``, ``ignore``, ``round_to``: see
    ``ic.prune``. ``epochs``, ``distill_options`` (``temperature``, ``alpha``, ``lr``,
    ``batch_size``, ``loss_fn``...), ``fine_tune``: see ``ic.distill``. ``calibrate_options``
    (``method``, ``preset``...): see ``ic.calibrate``; it calibrates on ``calibration_samples`` of
    ``data``. ``metric``: ``accuracy`` (default with labels), ``precision``, ``recall``, ``f1``
    or ``cosine``. ``max_drop``: the largest acceptable loss of ``metric`` from the input to the
    last step (accuracy 0.01 = one point): beyond it ``OptimizeDropError`` carries the report and
    no final model is written. ``output_dir``: every state's file, ``report.json``, ``report.md``,
    ``report.png`` and the final ``model.onnx``/``.xml`` (default: a new temporary directory).
    ``output``: where to write the final model instead (``.onnx``; ``.xml`` for openvino).
    ``batches``, ``rounds``, ``round_s``, ``threads``: how speed is measured. ``exporter``: the
    torch exporter ``ic.convert`` tries first. ``verify_backends``: the backends ``ic.convert``
    verifies on (default: the target's).
    """
    t = torch()
    if not isinstance(module, t.nn.Module):
        raise ArgumentError("module", f"expected a torch nn.Module, got {type(module).__name__}")
    chain, notes = check_steps(steps)
    check_choice("target", target, TARGETS)
    check_number("max_drop", max_drop, optional=True)
    check_number("min_speedup", min_speedup, inclusive=False)
    check_int("calibration_samples", calibration_samples)
    check_int("epochs", epochs, minimum=0)
    if "prune" in chain:
        check_ratio(ratio)
    for name, opts in (("distill_options", distill_options), ("calibrate_options", calibrate_options)):
        if opts is not None and not isinstance(opts, Mapping):
            raise ArgumentError(name, f"expected a dict of keyword arguments, got {type(opts).__name__}")
    backend = "openvino" if target == "openvino" else target
    fmt = _FORMAT[target]
    verify = list(verify_backends) if verify_backends is not None else ([backend] if target != "tensorrt" else None)
    inputs = module_inputs(module, example_inputs)
    data = as_numpy_data(data) if data is not None else None
    if data is None and any(s in chain for s in ("distill", "int8")):
        raise ArgumentError("data", "distill and int8 need training data: (inputs, labels)")
    if eval_data is None:
        raise ArgumentError("eval_data", "give held-out data to measure every step on: (inputs, labels)")
    evalset = labelled_batches(as_numpy_data(eval_data), inputs.specs, batch_size=64)
    if not evalset.batches:
        raise ArgumentError("eval_data", "is empty")
    metric_name = _check_metric(metric, evalset.has_labels)
    suffix = _SUFFIX[fmt]
    if output is not None and Path(output).suffix.lower() != suffix:
        raise ArgumentError("output", f"a {fmt} model for target {target!r} is written as {suffix}, got {output}")
    if output is not None and Path(output).is_dir():
        raise ArgumentError("output", f"{output} is a directory")
    out_dir = Path(output_dir) if output_dir is not None else Path(tempfile.mkdtemp(prefix="infercore-optimize-"))
    out_dir.mkdir(parents=True, exist_ok=True)

    # -- build every state ----------------------------------------------------------------------
    rows: list[dict[str, Any]] = []
    current = module
    current_file: Path | None = None
    started = time.perf_counter()
    with Progress(len(chain) + 3, "optimize", enabled=progress) as bar:
        bar.describe("converting the input model")
        path, conv = _convert(module, inputs, fmt, out_dir / f"00-input{suffix}", backends=verify, exporter=exporter)
        rows.append({"step": "input", "kind": "input", "description": "the model as given", "artifact": path,
                     "details": {"conversion": conv}, "seconds": time.perf_counter() - started})  # fmt: skip
        current_file = path
        bar.advance()
        for i, step in enumerate(chain, start=1):
            t0 = time.perf_counter()
            stem = out_dir / f"{i:02d}-{step}"
            bar.describe(step)
            if step == "prune":
                res = prune(current, example_inputs, ratio, ignore=ignore, importance=importance, round_to=round_to,
                            data=data)  # fmt: skip
                current = res.module
                path, conv = _convert(current, inputs, fmt, stem.with_suffix(suffix), backends=verify, exporter=exporter)
                rows.append({"step": step, "kind": "speed", "artifact": path, "details": {
                    "prune": res.report.to_dict(), "conversion": conv},
                    "description": f"structured {ratio:.0%} ({res.report.importance}), MACs {res.report.mac_ratio:.0%}"})  # fmt: skip
            elif step == "distill":
                student = copy.deepcopy(current) if current is module else current
                opts = {"progress": False, **dict(distill_options or {})}
                res_d = distill(student, module, data, epochs, example_inputs=example_inputs, fine_tune=fine_tune,
                                **opts)  # fmt: skip
                current = res_d.module
                path, conv = _convert(current, inputs, fmt, stem.with_suffix(suffix), backends=verify, exporter=exporter)
                what = "caller's fine_tune" if fine_tune is not None else f"{res_d.report.method}, {epochs} epochs"
                rows.append({"step": step, "kind": "recovery", "artifact": path, "description": what,
                             "details": {"distill": res_d.report.to_dict(), "conversion": conv}})  # fmt: skip
            elif step == "convert":
                assert current_file is not None
                path = current_file
                rows.append({"step": step, "kind": "format", "artifact": path,
                             "description": f"{fmt}, verified on {', '.join(rows[-1]['details']['conversion']['backends'])}",
                             "details": {"conversion": rows[-1]["details"]["conversion"]}})  # fmt: skip
            else:  # int8
                path, cal = _int8(current_file, target, data, inputs, stem, calibration_samples, calibrate_options, threads)
                rows.append({"step": step, "kind": "speed", "artifact": path, "details": {"calibration": cal},
                             "description": f"INT8 {cal['mode']}" + (f" {cal['method']}" if cal.get("method") else "")})  # fmt: skip
            rows[-1]["seconds"] = time.perf_counter() - t0
            current_file = rows[-1]["artifact"]
            bar.advance()

        # -- measure every distinct file ------------------------------------------------------
        bar.describe(f"accuracy on {backend}")
        files = list(dict.fromkeys(Path(r["artifact"]) for r in rows))
        labels = evalset.all_labels()
        outputs = {f: _outputs(f, backend, evalset, threads) for f in files}
        reference = outputs[files[0]] if metric_name == "cosine" or labels is None else None
        scores = {f: _scores(outputs[f], labels, reference) for f in files}
        bar.advance()
        bar.describe(f"speed on {backend}")
        label_of = {f: f.name for f in files}
        run = measure_speed({label_of[f]: f for f in files}, backend, batches=batches, rounds=rounds,
                            round_s=round_s, threads=threads)  # fmt: skip
        bar.advance()

    # -- the report -------------------------------------------------------------------------------
    first = label_of[Path(rows[0]["artifact"])]
    steps_out: list[StepReport] = []
    for i, r in enumerate(rows):
        f = Path(r["artifact"])
        sp = run.models[label_of[f]]
        prev = label_of[Path(rows[i - 1]["artifact"])] if i else None
        same = prev == label_of[f]
        up = None if prev is None else (1.0 if same else run.ratio(label_of[f], prev))
        up_best = None if prev is None else (1.0 if same else run.best_ratio(label_of[f], prev))
        low = None if prev is None else (1.0 if same else run.ratio_low(label_of[f], prev))
        best_low = None if prev is None else (1.0 if same else run.best_ratio_low(label_of[f], prev))
        steps_out.append(StepReport(
            step=r["step"], kind=r["kind"], description=r["description"], artifact=str(f), size_bytes=_size(f),
            metrics=scores[f], p50_ms=sp.p50_ms, p99_ms=sp.p99_ms, best_batch=sp.best_batch,
            best_p50_ms=sp.best_p50_ms, best_p99_ms=sp.best_p99_ms, best_items_per_s=sp.best_items_per_s,
            speedup=up, speedup_best=up_best, speedup_low=low, speedup_best_low=best_low,
            total=1.0 if label_of[f] == first else run.ratio(label_of[f], first),
            total_best=1.0 if label_of[f] == first else run.best_ratio(label_of[f], first),
            flag=speed_flag(low, best_low, min_speedup) if r["kind"] == "speed" else None,
            seconds=round(r["seconds"], 3), details=r["details"],
        ))  # fmt: skip
    base = steps_out[0].metrics.get(metric_name, float("nan"))
    last = steps_out[-1].metrics.get(metric_name, float("nan"))
    drop = (1.0 - last) if metric_name == "cosine" else base - last
    passed = max_drop is None or (drop == drop and drop <= max_drop)
    final: Path | None = None
    if passed:
        final = Path(output) if output is not None else out_dir / f"model{Path(steps_out[-1].artifact).suffix}"
        final.parent.mkdir(parents=True, exist_ok=True)
        _copy_model(Path(steps_out[-1].artifact), final)
    report = OptimizeReport(
        target=target, backend=backend, metric=metric_name, eval_samples=evalset.samples,
        eval_source=evalset.source, steps=tuple(steps_out), drop=float(drop), max_drop=max_drop, passed=passed,
        batches=run.batches, rounds=rounds, output_dir=str(out_dir), final=str(final) if final else None,
        min_speedup=min_speedup, created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        notes=tuple(notes + run.notes),
    )  # fmt: skip
    report.to_json(out_dir / "report.json")
    (out_dir / "report.md").write_text(report.markdown() + "\n\n" + report.verdict() + "\n")
    if plot:
        try:
            report.plot(out_dir / "report.png")
        except ImportError as e:  # matplotlib missing: the report stands without its plot
            report = _with_note(report, f"no plot: {e}")
    if not passed:
        raise OptimizeDropError(
            f"the chain lost too much: {report.verdict()}; no final model written "
            f"(every step's file and the report are in {out_dir})\n{report}",
            report=report,
        )
    return OptimizeResult(current, final, report)


def _with_note(report: OptimizeReport, note: str) -> OptimizeReport:
    from dataclasses import replace

    return replace(report, notes=(*report.notes, note))


def _copy_model(src: Path, dest: Path) -> None:
    """The model file and its data files (an IR's .bin, ONNX external data) under a new stem."""
    files = model_files(src)
    for f in files[1:]:  # an IR's .bin follows the .xml's stem; ONNX external data keeps its name
        shutil.copyfile(f, dest.parent / (dest.stem + f.suffix if f.stem == src.stem else f.name))
    shutil.copyfile(src, dest)


def _int8(src: Path | None, target: str, data: Any, inputs: ModuleInputs, stem: Path, samples: int,
          options: Mapping[str, Any] | None, threads: int | None) -> tuple[Path, dict[str, Any]]:  # fmt: skip
    from ..quantize import calibrate

    assert src is not None
    batches = labelled_batches(data, inputs.specs, batch_size=32, source="data").batches
    calib, n = [], 0
    for b in batches:
        if n >= samples:
            break
        calib.append(b)
        n += len(next(iter(b.values())))
    if not calib:
        raise InputSpecError("data has no samples to calibrate INT8 on")
    suffix = ".xml" if target == "openvino" else ".onnx"
    res = calibrate(src, calib, target=target, output=stem.with_suffix(suffix), timing_s=0, threads=threads,
                    **dict(options or {}))  # fmt: skip
    rep = res.report
    return Path(res.artifact_path), {"mode": rep.mode, "method": rep.method, "preset": rep.preset,
                                     "per_channel": rep.per_channel, "calibration_samples": rep.calibration_samples,
                                     "cosine_mean": rep.cosine_mean, "notes": list(rep.notes)}  # fmt: skip
