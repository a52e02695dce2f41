"""``infercore quantize MODEL --data DIR --target ort --out model.int8.onnx [--eval DIR --max-drop 0.01]``

Data (``--data``, ``--eval``): a ``.npz`` file (keys are input names, ``arr_0`` for a single-input
model) or a directory of ``.npy``/``.npz`` batches read in natural order. Eval labels: a
``labels.npy`` in the eval directory (one label per sample, across the files in that order) or a
``labels`` key in the eval ``.npz``. ``--fp16`` converts to float16 instead (``--data`` optional).

Exit status: 0 when the model was written (and stayed within ``--max-drop``), 1 when the measured
drop exceeded ``--max-drop`` (the report is printed, nothing is written to ``--out``) or on error,
2 on a usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import CalibrationDropError, UsageError
from ..quantize import METHODS, PRESETS, TARGETS, CalibrationResult

EXIT_OK, EXIT_DROP = 0, 1


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "quantize",
        help="INT8 post-training quantization (or FP16 conversion) with a measured accuracy report",
        description=(
            "Quantize MODEL to INT8 for a target runtime from calibration data, then measure, on --eval "
            "data (or on calibration batches held back), the metric of the fp32 and the quantized model, "
            "the drop, the output cosine and the speed ratio on the target's backend. --max-drop makes an "
            "excessive drop an error (exit status 1, nothing written)."
        ),
    )
    p.add_argument("model", type=Path, help="model file (.onnx; .onnx or .xml for --target openvino)")
    p.add_argument(
        "--data", "-d", default=None, help="calibration data: a .npz file or a directory of .npy/.npz"
    )
    p.add_argument(
        "--target", "-t", choices=TARGETS, default="ort", help="runtime to quantize for (default ort)"
    )
    p.add_argument(
        "--out",
        "-o",
        type=Path,
        default=None,
        help="output path (.onnx, or .xml for openvino); missing directories are created",
    )
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
    p.add_argument("--eval", "-e", dest="eval_data", default=None, help="eval data (.npz or directory)")
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
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def _ops(text: str | None) -> list[str] | None:
    return [o.strip() for o in text.split(",") if o.strip()] if text is not None else None


def run(args: argparse.Namespace) -> int:
    if args.out is not None and args.out.resolve() == args.model.resolve():
        raise ValueError(f"--out {args.out} would overwrite the model")
    try:
        result = _run(args)
    except CalibrationDropError as e:
        _print(args, e.report.to_dict(), str(e.report))
        print(
            f"infercore quantize: error: the measured drop exceeds --max-drop; not written "
            f"(the artifact is at {e.artifact_path})",
            file=sys.stderr,
        )
        return EXIT_DROP
    _print(args, result.report.to_dict(), str(result.report))
    return EXIT_OK


def _run(args: argparse.Namespace) -> CalibrationResult:
    if args.fp16:
        from ..quantize import convert_fp16

        if args.target not in ("ort", "tensorrt"):
            raise ValueError("--fp16 converts ONNX for --target ort or tensorrt")
        return convert_fp16(
            args.model,
            keep_io_types=not args.fp16_io,
            output=args.out,
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
        output=args.out,
        batch_size=args.batch_size,
        eval_output=args.output_name,
        threads=args.threads,
        timing_s=args.timing,
        cache=not args.no_cache,
        progress=None,
    )


def _print(args: argparse.Namespace, payload: dict[str, Any], text: str) -> None:
    if args.json:
        print(json.dumps(payload, indent=2))
    else:
        print(text)
