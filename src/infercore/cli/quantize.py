"""``infercore quantize MODEL --data DIR --target ort -o model.int8.onnx [--eval DIR --max-drop 0.01]``

Data (``--data``, ``--eval``): a ``.npz`` file (keys are input names, ``arr_0`` for a single-input
model) or a directory of ``.npy``/``.npz`` batches read in natural order. Eval labels: a
``labels.npy`` in the eval directory (one label per sample, across the files in that order) or a
``labels`` key in the eval ``.npz``. ``--fp16`` converts to float16 instead (``--data`` optional).

Exit status: 0 when the model was written (and stayed within ``--max-drop``), 1 when the measured
drop exceeded ``--max-drop`` (the report is printed, nothing is written to ``--output``), 2 for any
error (a usage error, a missing extra, data that cannot be read, a quantizer that failed).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import CalibrationDropError, UsageError
from ..quantize import METHODS, PRESETS, TARGETS, CalibrationResult
from .common import EXIT_OK, EXIT_VERDICT, Need, Preflight, add_output_flag

VERDICT = "the measured drop exceeds --max-drop (nothing is written to --output)"


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "quantize",
        help="INT8 post-training quantization (or FP16 conversion) with a measured accuracy report",
        description=(
            "Quantize MODEL to INT8 for a target runtime from calibration data, then measure, on --eval "
            "data (or on calibration batches held back), the metric of the fp32 and the quantized model, "
            "the drop, the output cosine and the speed ratio on the target's backend. --max-drop makes an "
            "excessive drop a failed verdict (exit status 1, nothing written)."
        ),
        epilog="example:\n  infercore quantize model.onnx --data calib.npz --target ort -o model.int8.onnx --max-drop 0.01",
    )
    p.add_argument("model", type=Path, help="model file (.onnx; .onnx or .xml for --target openvino)")
    p.add_argument(
        "--data", "-d", default=None, help="calibration data: a .npz file or a directory of .npy/.npz"
    )
    p.add_argument(
        "--target", "-t", choices=TARGETS, default="ort", help="runtime to quantize for (default ort)"
    )
    add_output_flag(p, "the quantized model (.onnx, or .xml for openvino)", stdout=False, aliases=("--out",))
    p.add_argument("--method", choices=METHODS, default=None, help="calibration method (default: minmax for ort, NNCF's own for openvino)")
    p.add_argument("--preset", choices=PRESETS, default=None, help="transformer: MatMul-only dynamic on ort")
    p.add_argument("--per-tensor", action="store_true", help="per-tensor weights (default per-channel)")
    p.add_argument("--dynamic", action="store_true", default=None, help="dynamic quantization (ort only)")
    p.add_argument(
        "--include-ops",
        default=None,
        metavar="OP,OP",
        help="op types to quantize, as the model names them (default: all)",
    )
    p.add_argument("--exclude-ops", default=None, metavar="OP,OP", help="op types to leave in float")
    p.add_argument(
        "--eval", "-e", dest="eval_data", default=None, help="eval data (.npz or directory); labels in labels.npy"
    )
    p.add_argument(
        "--metric",
        default=None,
        help="accuracy, topK (e.g. top5) or cosine (default: accuracy with labels, cosine without)",
    )
    p.add_argument(
        "--max-drop", type=float, default=None, help="largest acceptable drop (accuracy 0.01 = 1 pt)"
    )
    p.add_argument("--output-name", default=None, help="model output the metric reads (default: the first)")
    p.add_argument(
        "--batch-size", type=int, default=None, help="rows per batch when data is one .npz dataset"
    )
    p.add_argument("--threads", type=int, default=None, help="threads for the measuring backend")
    p.add_argument("--timing", type=float, default=2.0, metavar="SECONDS", help="time spent timing (0: skip)")
    p.add_argument("--no-cache", action="store_true", help="quantize again even if a cached artifact matches")
    p.add_argument("--fp16", action="store_true", help="convert to float16 instead of INT8 (ONNX only)")
    p.add_argument(
        "--fp16-io",
        action="store_true",
        help="with --fp16: float16 inputs/outputs too (default: keep fp32 I/O)",
    )
    p.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None,
        help="calibration progress with an ETA on stderr (default: a live line on a terminal, a line every "
        "15 s otherwise, $INFERCORE_PROGRESS_INTERVAL to change it)",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the report as JSON to stdout")
    # library parameters whose flag is not named after them
    p.set_defaults(func=run, preflight=preflight, param_flags={"timing_s": "--timing", "eval_output": "--output-name"})


def preflight(args: argparse.Namespace) -> Preflight:
    if args.output == "-":
        raise UsageError("--output -: a model is written to files, not stdout")
    if args.output is not None and Path(args.output).resolve() == args.model.resolve():
        raise UsageError(f"--output {args.output} would overwrite the model")
    modules = ("onnx", "onnxruntime") + (("nncf", "openvino") if args.target == "openvino" and not args.fp16 else ())
    needs = [Need("quantize", modules, f"quantize --target {args.target}")]
    return Preflight(outputs=[("--output", args.output)], needs=needs)


def _ops(text: str | None) -> list[str] | None:
    return [o.strip() for o in text.split(",") if o.strip()] if text is not None else None


def run(args: argparse.Namespace) -> int:
    try:
        result = _run(args)
    except CalibrationDropError as e:
        _print(args, e.report.to_dict(), str(e.report))
        print(
            f"infercore quantize: FAILED: the measured drop exceeds --max-drop; --output not written "
            f"(the artifact is at {e.artifact_path})",
            file=sys.stderr,
        )
        return EXIT_VERDICT
    _print(args, result.report.to_dict(), str(result.report))
    if args.output is not None:
        print(f"wrote {result.artifact_path}", file=sys.stderr)
    return EXIT_OK


def _run(args: argparse.Namespace) -> CalibrationResult:
    if args.fp16:
        from ..quantize import convert_fp16

        if args.target not in ("ort", "tensorrt"):
            raise UsageError("--fp16 converts ONNX for --target ort or tensorrt")
        return convert_fp16(
            args.model,
            keep_io_types=not args.fp16_io,
            output=args.output,
            data=args.data,
            eval_data=args.eval_data,
            metric=args.metric,
            max_drop=args.max_drop,
            target=args.target,
            eval_output=args.output_name,
            batch_size=args.batch_size,
            threads=args.threads,
            timing_s=args.timing,
            cache=not args.no_cache,
        )
    if args.data is None:
        raise UsageError("--data is required for INT8 calibration (a .npz file or a directory of .npy/.npz)")
    from ..quantize import calibrate

    return calibrate(
        args.model,
        args.data,
        target=args.target,
        method=args.method,
        preset=args.preset,
        per_channel=not args.per_tensor,
        include_ops=_ops(args.include_ops),
        exclude_ops=_ops(args.exclude_ops),
        dynamic=args.dynamic,
        eval_data=args.eval_data,
        metric=args.metric,
        max_drop=args.max_drop,
        output=args.output,
        batch_size=args.batch_size,
        eval_output=args.output_name,
        threads=args.threads,
        timing_s=args.timing,
        cache=not args.no_cache,
        progress=args.progress,
    )


def _print(args: argparse.Namespace, payload: dict[str, Any], text: str) -> None:
    if args.json:
        print(json.dumps(payload, indent=2))
    else:
        print(text)
