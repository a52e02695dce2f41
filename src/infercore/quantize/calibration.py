"""Post-training INT8 quantization with a measured accuracy report.

    import infercore as ic
    res = ic.calibrate("model.onnx", calib_batches, target="ort",
                       eval_data=(x_test, y_test), metric="accuracy", max_drop=0.01)
    res.artifact_path          # the INT8 model: Q/DQ ONNX (ort, tensorrt) or OpenVINO IR (openvino)
    print(res.report)          # fp32 vs int8 score, the drop, output cosine, speed ratio: all measured

Targets: ``ort`` writes a Q/DQ ONNX with ``onnxruntime.quantization`` (static, or dynamic; preset
``transformer`` quantizes MatMul only, dynamic and per channel); ``openvino`` runs NNCF post-training
quantization and writes IR; ``tensorrt`` writes the Q/DQ ONNX TensorRT's explicit quantization
takes (int8, symmetric, zero point 0, bias left in float), since TensorRT 11 has no calibrators;
``calibration_batches`` feeds the TensorRT 10 calibrator of the TensorRT backend.

The report is measured, never assumed: the metric on ``eval_data`` (or, without it, output cosine
on calibration batches held back from calibration), and the latency of both models on the target's
backend. ``max_drop`` turns an excessive drop into ``CalibrationDropError`` (a ``CalibrationError``)
carrying the report. Artifacts are cached by model hash, data fingerprint and options.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..arguments import check_choice, check_int, check_number
from ..backends import redirected_stdout, runtimes_quiet
from ..backends.ort import log_severity
from ..errors import ArgumentError, CalibrationError, InfercoreError, InputSpecError, ModelLoadError
from ..inputs import Feeds, LabelledBatches, iter_batches, labelled_batches, model_inputs, rows
from ..metrics import Metric, metric_name
from ..modelfiles import graph_op_types, quantized_ops
from ..optional import require
from ..progress import Progress, track
from ..specs import TensorSpec
from .cache import building, cache_root, fingerprint, model_digest, versions
from .measure import CalibrationResult, build_report, deliver, describe, measure

__all__ = [
    "METHODS", "PRESETS", "TARGETS", "calibrate", "calibration_batches", "check_finite", "refuse_quantized",
]  # fmt: skip

log = logging.getLogger(__name__)

TARGETS = ("ort", "openvino", "tensorrt")
METHODS = ("minmax", "entropy", "percentile")
PRESETS = ("cnn", "transformer")
EXTRA = "quantize"
_CACHE_VERSION = 1

DataSource = Any  # arrays, feed dicts, iterables of them, .npz/.npy paths, directories (infercore.inputs)


def calibration_batches(
    data: DataSource,
    inputs: Sequence[TensorSpec],
    *,
    batch_size: int | None = None,
    exact: bool = False,
    transform: Callable[[Any], Any] | None = None,
) -> Any:
    """Calibration batches as feed dicts checked against ``inputs`` (e.g. ``engine.inputs``), lazily:
    ``infercore.inputs.iter_batches`` (its forms of ``data``; ``exact=True`` re-cuts every batch to
    exactly ``batch_size`` rows, as TensorRT 10's calibrators need)."""
    return iter_batches(data, inputs, batch_size=batch_size, exact=exact, transform=transform)


def check_finite(batches: Sequence[Feeds], what: str) -> None:
    """NaN or inf in the data makes calibration ranges (and every score) meaningless: name where."""
    for i, b in enumerate(batches):
        for name, a in b.items():
            if a.dtype.kind in "fc" and not np.isfinite(a).all():
                nan, inf = int(np.isnan(a).sum()), int(np.isinf(a).sum())
                raise InputSpecError(
                    f"{what} batch {i}, input {name!r}: {nan} NaN and {inf} inf of {a.size} values; "
                    "the data must be finite (check the preprocessing)",
                    tensor=name,
                )


def _hold_back(
    batches: list[Feeds], fraction: float, specs: Sequence[TensorSpec]
) -> tuple[list[Feeds], list[Feeds]]:
    """Split calibration batches: (for calibration, held back for the report)."""
    if len(batches) >= 2:
        n = min(len(batches) - 1, max(1, round(len(batches) * fraction)))
        return batches[:-n], batches[-n:]
    n_rows = rows(batches[0])
    if n_rows >= 2 and all(s.rank and s.shape[0] is None for s in specs):
        cut = max(1, min(n_rows - 1, round(n_rows * (1 - fraction))))
        b = batches[0]
        return [{k: v[:cut] for k, v in b.items()}], [{k: v[cut:] for k, v in b.items()}]
    return batches, []


def _prepare_onnx(model: Path, work: Path, per_channel: bool, notes: list[str]) -> tuple[Path, bool]:
    """Upgrade the opset to >= 13 where per-channel needs it, then ORT's quantization pre-processing."""
    onnx = require("onnx", EXTRA)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src = model
    proto = onnx.load(str(model))
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 13:
        try:
            upgraded = onnx.version_converter.convert_version(proto, 13)
            src = work / "upgraded.onnx"
            onnx.save(upgraded, str(src))
            notes.append(f"opset upgraded from {opset} to 13 for Q/DQ")
        except Exception as e:
            if per_channel:
                notes.append(f"opset {opset} could not be upgraded to 13 ({e}); per-tensor quantization used")
                per_channel = False
    pre = work / "preprocessed.onnx"
    try:
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
    except Exception as e:
        log.debug("quant_pre_process failed (%s); retrying without optimization", e)
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True, skip_optimization=True)
            notes.append(f"ORT pre-processing without graph optimization ({type(e).__name__}: {e})")
        except Exception as e2:
            notes.append(f"ORT pre-processing skipped ({type(e2).__name__}: {e2})")
            return src, per_channel
    return pre, per_channel


def _op_types(model: Path) -> set[str]:
    """Op types of the graph and of its subgraphs (If/Loop/Scan bodies)."""
    onnx = require("onnx", EXTRA)
    return graph_op_types(onnx.load(str(model), load_external_data=False).graph)


def _check_op_selection(
    present: set[str], include: Sequence[str] | None, exclude: Sequence[str] | None, model: str
) -> list[str]:
    """Refuse op type names the model lacks and a selection that leaves nothing to quantize (an
    empty op list means "every op" to ONNX Runtime); returns notes for excluded types not present."""
    if include is None and exclude is None:
        return []
    have = ", ".join(sorted(present))

    def unknown(names: Sequence[str], option: str) -> ArgumentError:
        hints = {o: p for o in names for p in present if o.lower() == p.lower()}
        hint = "".join(f"; {o!r}: did you mean {p!r}?" for o, p in hints.items())
        return ArgumentError(
            option, f"{list(names)} not in {model} (op types are case-sensitive{hint}); its op types: {have}"
        )

    if include is not None:
        missing = [o for o in include if o not in present]
        if missing:
            raise unknown(missing, "include_ops")
    absent = [o for o in exclude or () if o not in present]
    if any(o.lower() == p.lower() for o in absent for p in present):
        raise unknown(absent, "exclude_ops")
    left = (set(include) if include is not None else present) - set(exclude or ())
    if not left:
        raise ArgumentError(
            "exclude_ops" if exclude else "include_ops",
            f"leaves no op types to quantize in {model} (included: "
            f"{sorted(include) if include is not None else 'all'}, excluded: {sorted(exclude or ())}); "
            f"its op types: {have}",
        )
    return [f"exclude_ops {absent} not in the model: nothing to exclude for them"] if absent else []


def _select_ops(
    model: Path, include: Sequence[str] | None, exclude: Sequence[str] | None
) -> list[str] | None:
    """The op types for ONNX Runtime, read on the pre-processed model (never empty: empty means all)."""
    if include is None and exclude is None:
        return None
    ops = sorted((set(include) if include is not None else _op_types(model)) - set(exclude or ()))
    if not ops:
        raise CalibrationError(
            f"exclude_ops {sorted(exclude or ())} leave no op types to quantize after ONNX Runtime's "
            f"pre-processing; its op types: {', '.join(sorted(_op_types(model)))}"
        )
    return ops


_QUANTIZED_OPS = frozenset(
    {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger",
     "DynamicQuantizeMatMul", "MatMulIntegerToFloat"}
)  # fmt: skip


def refuse_quantized(model: Path, what: str) -> None:
    """Refuse to quantize or convert a model that is already quantized (ONNX Runtime's quantizer
    fails on it with a KeyError, the FP16 converter writes a graph it cannot load)."""
    found = quantized_ops(model)  # onnx reads them: the quantize extra's own dependency
    if found:
        raise CalibrationError(
            f"{model.name} is already quantized (it has {', '.join(found)}): {what} needs the float32 "
            "model it was quantized from"
        )


def _check_quantized(model: Path, out: Path, op_types: Sequence[str] | None, preset: str | None) -> None:
    """A model with no quantized op is the float model under an INT8 name: refuse it."""
    found = _op_types(out)
    if found & _QUANTIZED_OPS or any(o.startswith("QLinear") for o in found):
        return
    onnx = require("onnx", EXTRA)
    top = {n.op_type for n in onnx.load(str(model), load_external_data=False).graph.node}
    nested = sorted((_op_types(model) - top) & {"Conv", "MatMul", "Gemm", "ConvTranspose"})
    if nested and op_types is None:
        control = ", ".join(sorted(top & {"If", "Loop", "Scan"}))
        raise CalibrationError(
            f"nothing was quantized in {model.name}: its {', '.join(nested)} ops sit only inside the "
            f"subgraphs of {control} nodes, and ONNX Runtime's quantizer does not quantize subgraphs: "
            "quantize a variant of the model without control flow"
        )
    why = " (preset 'transformer' quantizes MatMul only)" if preset == "transformer" else ""
    raise CalibrationError(
        f"nothing was quantized in {model.name}: ONNX Runtime inserted no QuantizeLinear/DequantizeLinear "
        f"and no integer op for op types {list(op_types) if op_types is not None else 'all'}{why}; "
        f"the model's op types: {', '.join(sorted(_op_types(model)))}. ONNX Runtime quantizes only the op "
        "types it supports (Conv, MatMul, Gemm, ...): choose include_ops among them"
    )


class _Reader:
    """An ``onnxruntime.quantization.CalibrationDataReader`` over materialized batches."""

    def __init__(self, batches: list[Feeds], progress: bool | None) -> None:
        self._batches = batches
        self._progress = progress
        self.rewind()

    def get_next(self) -> Feeds | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(track(self._batches, len(self._batches), "calibrating", self._progress))

    def __len__(self) -> int:
        return len(self._batches)


@contextlib.contextmanager
def _nncf_output() -> Iterator[None]:
    """NNCF logs INFO lines through a handler of its own on stdout and draws rich progress bars on
    stdout: inside the block both go to stderr, and while runtimes are quiet its log keeps to
    errors and its bars go to the debug log."""
    nncf_log = logging.getLogger("nncf")
    handlers = [h for h in nncf_log.handlers if isinstance(h, logging.StreamHandler)
                and h.stream in (sys.stdout, sys.__stdout__)]  # fmt: skip
    streams = [h.stream for h in handlers]
    levels: list[tuple[logging.Logger | logging.Handler, int]] = [(nncf_log, nncf_log.level)]
    levels += [(h, h.level) for h in handlers]
    for h in handlers:
        h.setStream(sys.stderr)
    if runtimes_quiet():
        for x, _ in levels:
            x.setLevel(logging.ERROR)
    try:
        with redirected_stdout(log, "nncf"):
            yield
    finally:
        for h, stream in zip(handlers, streams, strict=True):
            h.setStream(stream)
        for x, level in levels:
            x.setLevel(level)


class _Counted:
    """The calibration batches for ``nncf.Dataset``, advancing ``bar`` as NNCF reads them."""

    def __init__(self, batches: list[Feeds], bar: Progress) -> None:
        self._batches, self._bar = batches, bar

    def __len__(self) -> int:
        return len(self._batches)

    def __iter__(self) -> Iterator[Feeds]:
        for b in self._batches:
            yield b
            self._bar.advance()


def _quantize_onnx(
    model: Path,
    out: Path,
    work: Path,
    batches: list[Feeds],
    *,
    target: str,
    method: str,
    preset: str | None,
    dynamic: bool,
    per_channel: bool,
    include_ops: Sequence[str] | None,
    exclude_ops: Sequence[str] | None,
    progress: bool | None,
    notes: list[str],
) -> bool:
    q = require("onnxruntime.quantization", EXTRA, package="onnxruntime")
    log_severity(require("onnxruntime", EXTRA))  # its calibration sessions use the default logger
    src, per_channel = _prepare_onnx(model, work, per_channel, notes)
    if preset == "transformer" and include_ops is None:
        include_ops = ["MatMul"]
    op_types = _select_ops(src, include_ops, exclude_ops)
    if dynamic:
        q.quantize_dynamic(
            str(src), str(out), op_types_to_quantize=op_types, per_channel=per_channel,
            weight_type=q.QuantType.QInt8, extra_options={"MatMulConstBOnly": True},
        )  # fmt: skip
        _check_quantized(model, out, op_types, preset)
        return per_channel
    extra: dict[str, Any] = {}
    if method == "percentile":
        extra["CalibPercentile"] = 99.999
    if target == "tensorrt":
        # TensorRT's explicit quantization: int8, symmetric (zero point 0), one Q/DQ pair per
        # consumer, bias left in float (TensorRT fuses it; an int32 DequantizeLinear is refused).
        extra.update(
            ActivationSymmetric=True, WeightSymmetric=True, DedicatedQDQPair=True, QuantizeBias=False
        )
    calib = {"minmax": q.CalibrationMethod.MinMax, "entropy": q.CalibrationMethod.Entropy,
             "percentile": q.CalibrationMethod.Percentile}[method]  # fmt: skip

    def quantize_static() -> None:
        with redirected_stdout(log, "onnxruntime.quantization"):  # entropy/percentile print histograms
            q.quantize_static(
                str(src), str(out), _Reader(batches, progress), quant_format=q.QuantFormat.QDQ,
                op_types_to_quantize=op_types, per_channel=per_channel, activation_type=q.QuantType.QInt8,
                weight_type=q.QuantType.QInt8, calibrate_method=calib, calibration_providers=["CPUExecutionProvider"],
                extra_options=extra,
            )  # fmt: skip

    try:
        quantize_static()
    except Exception as e:
        if _raised_in(e, "collect_data") and not isinstance(e, InfercoreError):
            # onnxruntime ran the model on the calibration batches, and the model refused them
            raise CalibrationError(
                f"{model.name} failed on the calibration data (first batch: {describe(batches[0])}): "
                f"{type(e).__name__}: {e}. Give data of the shapes the model runs on"
            ) from e
        # onnxruntime's per-channel path reads a bias as 1-d and fails on a bias of another rank
        # ([1, N], as tf2onnx writes for magika); disabling its bias adjustment then writes a
        # per-axis DequantizeLinear that onnxruntime cannot load. Per-tensor weights work.
        if not (isinstance(e, ValueError) and per_channel and _raised_in(e, "_adjust_weight_scale_for_int32_bias")):
            raise
        per_channel = False
        notes.append(
            "onnxruntime's per-channel quantization fails on a bias that is not 1-d "
            f"({type(e).__name__}: {e}); per-tensor weights used"
        )
        quantize_static()
    _check_quantized(model, out, op_types, preset)
    return per_channel


def _raised_in(e: BaseException, function: str) -> bool:
    """Whether ``e`` was raised inside a function named ``function`` (a known runtime bug)."""
    tb = e.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name == function:
            return True
        tb = tb.tb_next
    return False


def _quantize_openvino(
    model: Path,
    out: Path,
    batches: list[Feeds],
    *,
    method: str | None,
    preset: str | None,
    per_channel: bool,
    include_ops: Sequence[str] | None,
    exclude_ops: Sequence[str] | None,
    progress: bool | None,
    notes: list[str],
) -> None:
    ov = require("openvino", "openvino")
    nncf = require("nncf", EXTRA)
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, QuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    ov_model = ov.Core().read_model(str(model))
    ignored = None
    if include_ops is not None or exclude_ops is not None:
        present = {op.get_type_name() for op in ov_model.get_ordered_ops()}
        notes.extend(
            _check_op_selection(present, include_ops, exclude_ops, f"{model.name} (OpenVINO op types)")
        )
        skip = set(exclude_ops or ())
        if include_ops is not None:
            skip |= present - set(include_ops)
        ignored = nncf.IgnoredScope(types=sorted(skip & present), validate=False)
        notes.append("include_ops/exclude_ops name OpenVINO op types (Convolution, MatMul, ...)")
    ranges = {
        None: None,
        "minmax": RangeEstimatorParametersSet.MINMAX,
        "percentile": RangeEstimatorParametersSet.MEAN_QUANTILE,
        "entropy": RangeEstimatorParametersSet.HISTOGRAM,
    }[method]
    advanced = AdvancedQuantizationParameters(
        weights_quantization_params=QuantizationParameters(per_channel=per_channel)
    )
    if ranges is not None:
        advanced.activations_range_estimator_params = ranges
    # infercore's own progress (with an ETA) follows NNCF through the batches
    with _nncf_output(), Progress(len(batches), "calibrating (nncf)", enabled=progress) as bar:
        quantized = nncf.quantize(
            ov_model,
            nncf.Dataset(_Counted(batches, bar)),
            model_type=nncf.ModelType.TRANSFORMER if preset == "transformer" else None,
            preset=nncf.QuantizationPreset.MIXED
            if preset == "transformer"
            else nncf.QuantizationPreset.PERFORMANCE,
            subset_size=len(batches),  # NNCF counts dataset items, here batches
            ignored_scope=ignored,
            advanced_parameters=advanced,
        )
    if not any(op.get_type_name() in ("FakeQuantize", "FakeConvert") for op in quantized.get_ordered_ops()):
        chosen = f" (ignored op types {sorted(ignored.types)})" if ignored is not None else ""
        raise CalibrationError(
            f"nothing was quantized in {model.name}: NNCF inserted no FakeQuantize{chosen}"
        )
    ov.save_model(quantized, str(out), compress_to_fp16=False)


def _check_options(
    target: str, method: str | None, preset: str | None, dynamic: bool | None, max_drop: float | None
) -> None:
    check_choice("target", target, TARGETS)
    check_choice("method", method, METHODS, optional=True)
    check_choice("preset", preset, PRESETS, optional=True)
    if dynamic and target != "ort":
        raise ArgumentError("dynamic", f"dynamic quantization is an ONNX Runtime mode; target {target!r} takes static only")
    check_number("max_drop", max_drop, optional=True)


def calibrate(
    model: str | os.PathLike[str],
    data: DataSource,
    *,
    target: str = "ort",
    method: str | None = None,
    preset: str | None = None,
    per_channel: bool = True,
    include_ops: Sequence[str] | None = None,
    exclude_ops: Sequence[str] | None = None,
    dynamic: bool | None = None,
    eval_data: Any = None,
    metric: Metric | None = None,
    max_drop: float | None = None,
    output: str | os.PathLike[str] | None = None,
    batch_size: int | None = None,
    transform: Callable[[Any], Any] | None = None,
    eval_output: str | None = None,
    holdout: float = 0.2,
    threads: int | None = None,
    timing_s: float = 2.0,
    cache: bool = True,
    progress: bool | None = None,
) -> CalibrationResult:
    """Quantize ``model`` to INT8 for ``target`` and measure what it cost.

    ``data``: calibration batches (see ``calibration_batches``). ``method``: ``minmax`` (the default
    for ONNX targets; NNCF's own default estimator for openvino when None), ``entropy`` or
    ``percentile``. ``preset="transformer"``: on ort, dynamic MatMul-only per-channel INT8 (static
    INT8 of every op collapses transformers); on openvino, NNCF's ``ModelType.TRANSFORMER``.
    ``dynamic`` (ort only) defaults to the preset's choice. ``include_ops``/``exclude_ops``: op types
    to quantize or leave in float. ``eval_data``: ``(data, labels)``, a dict with a ``"labels"`` key,
    a directory with ``labels.npy``, an iterable of ``(feeds, labels)`` pairs, or unlabeled data;
    without it the report uses ``holdout`` of the calibration batches, held back from calibration.
    ``metric``: ``"accuracy"`` (argmax vs labels), ``"top5"`` (any top-k), ``"cosine"`` (to the fp32
    outputs) or ``callable(outputs, labels) -> float`` (higher is better), on ``eval_output`` (the
    first output by default). ``max_drop``: the largest acceptable ``fp32 - quantized`` score
    (accuracy 0.01 = one point); exceeding it raises ``CalibrationDropError``. ``output``: where to
    write the artifact (``.onnx``, or ``.xml`` for openvino; missing parent directories are created);
    otherwise it stays in the cache.
    ``timing_s``: seconds spent timing both models (0 skips the speed measurement).
    """
    _check_options(target, method, preset, dynamic, max_drop)
    check_int("batch_size", batch_size, optional=True)
    check_number("timing_s", timing_s)
    metric_name(metric, has_labels=False)  # an unknown metric is refused before quantizing
    if not 0 <= holdout < 1:
        raise ArgumentError("holdout", f"expected a number in [0, 1), got {holdout!r}")
    src = Path(model)
    if not src.is_file():
        raise ModelLoadError(f"model file not found: {src}", path=str(src))
    if target in ("ort", "tensorrt") and src.suffix != ".onnx":
        raise ModelLoadError(
            f"target {target!r} quantizes ONNX models; {src.name} is not .onnx", path=str(src)
        )
    if dynamic is None:
        dynamic = target == "ort" and preset == "transformer"
    suffix = ".xml" if target == "openvino" else ".onnx"
    if output is not None and Path(output).suffix != suffix:
        raise ArgumentError("output", f"for target {target!r} it must end in {suffix}, got {output}")
    if target != "openvino" and method is None:
        method = "minmax"
    mode = "nncf" if target == "openvino" else ("dynamic" if dynamic else "static Q/DQ")

    if src.suffix == ".onnx":
        refuse_quantized(src, "INT8 calibration")
    specs = model_inputs(src)
    notes: list[str] = []
    if target != "openvino":  # openvino op types are checked on the model OpenVINO reads
        notes += _check_op_selection(_op_types(src), include_ops, exclude_ops, src.name)
    batches = list(calibration_batches(data, specs, batch_size=batch_size, transform=transform))
    if not batches:
        raise CalibrationError("no calibration batches: data is empty")
    check_finite(batches, "calibration data")
    if eval_data is not None:
        evalset = labelled_batches(eval_data, specs, batch_size=batch_size, transform=transform)
        if not evalset.batches:
            raise CalibrationError("eval_data is empty")
        check_finite(evalset.batches, "eval_data")
        calib = batches
    else:
        calib, held = _hold_back(batches, holdout, specs) if holdout > 0 else (batches, [])
        if held:
            evalset = LabelledBatches(held, [None] * len(held), "held-back calibration samples")
        else:
            evalset = LabelledBatches(calib, [None] * len(calib), "calibration samples")
            notes.append(
                "too little data to hold any back: the report is measured on the calibration samples"
            )

    options = {
        "v": _CACHE_VERSION, "target": target, "method": method, "preset": preset, "per_channel": per_channel,
        "include_ops": sorted(include_ops) if include_ops is not None else None,
        "exclude_ops": sorted(exclude_ops) if exclude_ops is not None else None, "dynamic": dynamic,
        "versions": versions("onnxruntime", "onnx", "openvino", "nncf"),
    }  # fmt: skip
    key_src = json.dumps(options, sort_keys=True) + model_digest(src) + fingerprint(calib)
    key = hashlib.sha256(key_src.encode()).hexdigest()[:24]
    entry = cache_root() / key
    artifact = entry / f"model.int8{suffix}"
    meta_path = entry / "meta.json"
    cached = cache and artifact.exists() and meta_path.exists()
    if cached:
        meta = json.loads(meta_path.read_text())
        used_per_channel = bool(meta["per_channel"])
        notes.extend(meta.get("notes", []))
    else:
        build_notes: list[str] = []
        with building(entry, key, f"{target} quantization of {src.name}") as tmp:
            out = tmp / artifact.name
            if target == "openvino":
                _quantize_openvino(
                    src, out, calib, method=method, preset=preset, per_channel=per_channel,
                    include_ops=include_ops, exclude_ops=exclude_ops, progress=progress, notes=build_notes,
                )  # fmt: skip
                used_per_channel = per_channel
            else:
                work = tmp / "work"
                work.mkdir()
                used_per_channel = _quantize_onnx(
                    src, out, work, calib, target=target, method=method or "minmax", preset=preset,
                    dynamic=dynamic, per_channel=per_channel, include_ops=include_ops,
                    exclude_ops=exclude_ops, progress=progress, notes=build_notes,
                )  # fmt: skip
                shutil.rmtree(work, ignore_errors=True)
            meta = {**options, "per_channel": used_per_channel, "notes": build_notes, "model": str(src),
                    "calibration_samples": sum(rows(b) for b in calib)}  # fmt: skip
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        notes.extend(build_notes)

    measured = measure(
        src, artifact, target=target, evalset=evalset, metric=metric, eval_output=eval_output,
        threads=threads, timing_s=timing_s, notes=notes,
    )  # fmt: skip
    final = Path(output) if output is not None else artifact
    report = build_report(
        measured, kind="int8", target=target, mode=mode, method=method, preset=preset,
        per_channel=used_per_channel, max_drop=max_drop, eval_source=evalset.source,
        calibration_samples=sum(rows(b) for b in calib), model=src, artifact=final, cached=cached, notes=notes,
    )  # fmt: skip
    return deliver(report, artifact, output)
