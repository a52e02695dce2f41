"""``infercore convert SRC -o OUT [--to onnx|openvino|tflite] [--precision fp16|int8] [--data DATA] [--json]``

Exit status (docs/cli.md): 0 the model was converted, verified and written; 1 verification failed
(the report is printed, nothing is written at OUT); 2 any error (a usage error, a source that
cannot be read, an exporter that failed, a missing extra).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConversionMismatchError, UsageError
from .common import EXIT_OK, EXIT_VERDICT, Need, Preflight, add_backends_flag, add_output_flag, parse_shape

VERDICT = "verification failed: the converted model disagrees with its source (nothing is written at --output)"

_PAIRS_HELP = """source -> target pairs:
  .pt2 (torch.export) / .pt (TorchScript)   -> onnx (torch.onnx.export: dynamo, torchscript), openvino
  .keras / SavedModel directory              -> onnx (tf2onnx), tflite (fp32, fp16, int8), openvino
  .tflite                                    -> onnx (tf2onnx), openvino
  .onnx                                      -> onnx (simplified with onnxslim), openvino
  (in Python, ic.convert also takes an nn.Module, an ExportedProgram, a Keras model, a tf.function)

Every conversion is verified before it is written: at least 16 input sets generated within each
input's spec (two batch sizes and two sizes of other dynamic dimensions) plus --data, on every
installed backend that reads the target, against the source framework's own outputs.

example:
  infercore convert model.pt2 -o model.onnx --data inputs.npz"""

_EXTRAS = {
    ".pt": ("convert-torch", ["torch", "onnx"]),
    ".pt2": ("convert-torch", ["torch", "onnx"]),
    ".pth": ("convert-torch", ["torch", "onnx"]),
    ".keras": ("convert-tf", ["tensorflow", "tf2onnx"]),
    ".h5": ("convert-tf", ["tensorflow", "tf2onnx"]),
    "savedmodel": ("convert-tf", ["tensorflow", "tf2onnx"]),
}


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "convert",
        help="convert a PyTorch, Keras/TensorFlow, TFLite or ONNX model to ONNX, OpenVINO IR or TFLite, verified",
        description=(
            "Convert SRC to ONNX, OpenVINO IR (.xml + .bin) or .tflite, verify the result against the "
            "source framework on every installed backend that reads it, and write it at --output only "
            "if it agrees. The target is read from the output's suffix unless --to names it."
        ),
        epilog=_PAIRS_HELP,
    )
    p.add_argument("model", type=Path, metavar="SRC", help=".pt2, .pt, .keras, a SavedModel directory, .tflite or .onnx")
    add_output_flag(p, "the converted model: .onnx, .xml (+ .bin) or .tflite; the target follows its suffix", stdout=False)
    p.add_argument("--to", choices=("onnx", "openvino", "tflite"), default=None, help="target (default: from the output's suffix)")
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"), default=None,
                   help="fp16: OpenVINO/TFLite weights in fp16; int8: full-integer TFLite calibrated on --data")  # fmt: skip
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's: 18 dynamo, 17 otherwise)")
    p.add_argument("--exporter", choices=("dynamo", "torchscript"), default=None,
                   help="the torch.onnx exporter tried first (the other is tried if it fails or does not verify)")  # fmt: skip
    p.add_argument("--example", action="append", default=[], metavar="NAME=SHAPE[:DTYPE]",
                   help="an example input of a TorchScript .pt (x=1x3x224x224, ids=1x128:int64), in argument order; repeatable")  # fmt: skip
    p.add_argument("--dynamic", action="append", default=[], metavar="NAME:AXIS=DIM[,AXIS=DIM]",
                   help="a dynamic axis by input name (input_ids:0=batch,1=sequence); repeatable")  # fmt: skip
    p.add_argument("--data", "-d", default=None, metavar="DATA",
                   help="real inputs (.npz keyed by input name, .npy, or a directory of them): verified on, and INT8 calibrates on them")  # fmt: skip
    add_backends_flag(p, "comma-separated backends that verify (default: every installed one that reads the output)")
    p.add_argument("--no-simplify", action="store_true", help="keep the ONNX graph as exported (no onnxslim)")
    p.add_argument("--no-verify", action="store_true", help="write without verifying (recorded in the model's metadata)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated inputs (default 0)")
    p.add_argument("--json", action="store_true", help="print the report as JSON to stdout")
    p.set_defaults(func=run, preflight=preflight, param_flags={
        "model": "SRC", "output": "--output", "data": "--data", "example_inputs": "--example",
        "input_names": "--example", "precision": "--precision", "to": "--to",
    })  # fmt: skip


def _examples(items: list[str]) -> tuple[Any, list[str]]:
    import numpy as _np

    arrays: list[Any] = []
    names: list[str] = []
    for item in items:
        spec, _, dtype = item.partition(":")
        try:
            name, shape = parse_shape(spec)
        except argparse.ArgumentTypeError as e:
            raise UsageError(f"--example: {e}") from None
        dims = (shape,) if isinstance(shape, int) else shape
        try:
            dt = _np.dtype(dtype or "float32")
        except TypeError:
            raise UsageError(f"--example {item}: unknown dtype {dtype!r}") from None
        rng = _np.random.default_rng(len(arrays))
        a = rng.integers(0, 2, dims).astype(dt) if dt.kind in "iub" else rng.uniform(-1, 1, dims).astype(dt)
        arrays.append(a)
        names.append(name)
    return (tuple(arrays) if arrays else None), names


def _dynamic(items: list[str]) -> dict[str, dict[int, str]]:
    out: dict[str, dict[int, str]] = {}
    for item in items:
        name, sep, rest = item.rpartition(":")
        if not sep or not name:
            raise UsageError(f"--dynamic takes NAME:AXIS=DIM[,AXIS=DIM], got {item!r}")
        axes: dict[int, str] = {}
        for part in rest.split(","):
            axis, eq, dim = part.partition("=")
            try:
                axes[int(axis)] = dim.strip() if eq and dim.strip() else ("batch" if int(axis) == 0 else f"{name}_dim{axis}")
            except ValueError:
                raise UsageError(f"--dynamic {item}: {part!r} is not AXIS=DIM") from None
        out.setdefault(name, {}).update(axes)
    return out


def preflight(args: argparse.Namespace) -> Preflight:
    if args.output is None:
        raise UsageError("--output is required: the converted model's path (.onnx, .xml or .tflite)")
    if args.output == "-":
        raise UsageError("--output -: a model is written to files, not stdout")
    src, out = args.model, Path(args.output)
    if not src.exists():
        raise UsageError(f"SRC {src} does not exist")
    if out.exists() and out.resolve() == src.resolve():
        raise UsageError(f"--output {out} would overwrite SRC")
    key = "savedmodel" if src.is_dir() else src.suffix.lower()
    target = args.to or {".onnx": "onnx", ".xml": "openvino", ".tflite": "tflite"}.get(out.suffix.lower())
    needs: list[Need] = []
    if key in _EXTRAS:
        extra, modules = _EXTRAS[key]
        needs.append(Need(extra, tuple(modules), f"convert {src.name}"))
    if key == ".tflite" and target == "onnx":  # tf2onnx reads .tflite through TensorFlow
        needs.append(Need("convert-tf", ("tensorflow", "tf2onnx"), "convert .tflite to onnx"))
    if target == "onnx" and not args.no_simplify:
        extra = "convert-tf" if key in ("savedmodel", ".keras", ".h5", ".tflite") else "convert-torch"
        needs.append(Need(extra, ("onnxslim",), "convert to onnx (simplified; --no-simplify skips onnxslim)"))
    if target == "openvino":
        needs.append(Need("openvino", ("openvino",), "convert to openvino"))
    backends: list[tuple[str, Sequence[str]]] = []
    if args.backends:
        backends.append(("--backends", [b.split(":")[0].strip() for b in args.backends.split(",") if b.strip()]))
    return Preflight(outputs=[("--output", args.output)], needs=needs, backends=backends)


def run(args: argparse.Namespace) -> int:
    from ..convert import convert

    examples, names = _examples(args.example)
    try:
        result = convert(
            args.model,
            args.to,
            examples,
            dynamic=_dynamic(args.dynamic) or None,
            opset=args.opset,
            precision=args.precision,
            simplify=not args.no_simplify,
            verify=not args.no_verify,
            data=args.data,
            output=args.output,
            exporter=args.exporter,
            input_names=names or None,
            backends=args.backends,
            seed=args.seed,
        )
    except ConversionMismatchError as e:
        _print(args, e.report)
        print(f"infercore convert: FAILED: verification failed; nothing was written at {args.output}", file=sys.stderr)
        return EXIT_VERDICT
    _print(args, result.report)
    print(f"wrote {', '.join(result.report.files)}", file=sys.stderr)
    return EXIT_OK


def _print(args: argparse.Namespace, report: Any) -> None:
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=_default))
    else:
        print(report)


def _default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    return str(o)
