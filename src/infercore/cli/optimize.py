"""``infercore optimize MODEL.pt2|.pt --eval TEST.npz [--data TRAIN.npz] [--steps prune,distill,convert,int8]
[--target ort|openvino|tensorrt] [-o FINAL.onnx] [--max-drop 0.01] [--json]``

MODEL: a ``torch.export`` program (``.pt2``, ``torch.export.save``) or a TorchScript archive
(``.pt``); its convolutions, linear layers and norms become prunable ``nn`` modules again. Data
(``--data`` for distillation and INT8 calibration, ``--eval`` held out): a ``.npz`` file (keys are
input names, ``arr_0`` for a single-input model, ``labels`` the labels) or a directory of
``.npy``/``.npz`` batches with ``labels.npy``. Every step's model file, ``report.json``,
``report.md``, ``report.png`` and the final ``model.onnx``/``.xml`` go to ``--work-dir`` (default:
``MODEL``'s stem + ``.optimize/`` in the current directory); ``-o FILE`` writes the final model there
instead.

Exit status: 0 the final model was written; 1 the chain lost more than ``--max-drop`` (the report
is printed and kept, the final model is not written); 2 any error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..errors import ArgumentError, ModelLoadError, OptimizeDropError, UsageError
from .common import EXIT_OK, EXIT_VERDICT, Need, Preflight, add_output_flag

VERDICT = "the chain lost more than --max-drop (the final model is not written)"
_SUFFIX = {"ort": ".onnx", "openvino": ".xml", "tensorrt": ".onnx"}


def add_parser(subparsers: Any) -> None:
    from ..optimize import IMPORTANCES, STEPS, TARGETS

    p = subparsers.add_parser(
        "optimize",
        help="prune, distill, convert and quantize a torch model, each step measured on the target",
        description=(
            "Run a chain of steps on a saved torch model and measure every state of it on the target's "
            "backend: accuracy (precision, recall, F1) on --eval, size on disk, latency p50/p99 at batch 1 "
            "and at the best batch, speedups against the step before and the input (paired rounds). A "
            "pruning or INT8 step under 1.1x is flagged 'no speedup'; --max-drop refuses a chain that "
            "loses too much accuracy."
        ),
    )
    p.add_argument("model", type=Path, help="the torch model: .pt2 (torch.export.save) or .pt (TorchScript)")
    p.add_argument("--eval", "-e", dest="eval_data", required=True, help="held-out data: .npz (with labels) or a directory")
    p.add_argument("--data", "-d", default=None, help="training data for distill and int8: .npz or a directory")
    p.add_argument("--steps", default="prune,convert,int8", help=f"comma-separated, from {', '.join(STEPS)} (default prune,convert,int8)")
    p.add_argument("--target", "-t", choices=TARGETS, default="ort", help="runtime to optimize for (default ort)")
    add_output_flag(p, "the final model (.onnx; .xml for --target openvino)", stdout=False)
    p.add_argument("--work-dir", type=Path, default=None,
                   help="every step's file, the report and (without -o) the final model (default: MODEL's stem + .optimize/)")  # fmt: skip
    p.add_argument("--ratio", type=float, default=0.5, help="share of channels (and heads) to remove (default 0.5)")
    p.add_argument("--importance", choices=IMPORTANCES, default="l2", help="what ranks channels (default l2)")
    p.add_argument("--ignore", default=None, metavar="NAME,NAME", help="submodules to leave unpruned, by dotted name")
    p.add_argument("--round-to", type=int, default=None, help="keep channel counts multiples of N")
    p.add_argument("--epochs", type=int, default=5, help="distillation epochs (default 5)")
    p.add_argument("--lr", type=float, default=1e-3, help="distillation learning rate (default 1e-3)")
    p.add_argument("--temperature", type=float, default=4.0, help="distillation temperature (default 4)")
    p.add_argument("--alpha", type=float, default=0.7, help="weight of the distillation loss against the labels' (default 0.7)")
    p.add_argument("--method", default=None, help="INT8 calibration method (minmax, entropy, percentile)")
    p.add_argument("--preset", default=None, help="INT8 preset (cnn, transformer)")
    p.add_argument("--calibration-samples", type=int, default=512, help="samples of --data INT8 calibrates on")
    p.add_argument("--metric", default=None, help="accuracy (default with labels), precision, recall, f1 or cosine")
    p.add_argument("--max-drop", type=float, default=None, help="largest acceptable loss from the input to the last step (0.01 = 1 pt)")
    p.add_argument("--batch", default="1,8,32", help="batch sizes timed (default 1,8,32; 1 always)")
    p.add_argument("--rounds", type=int, default=5, help="paired timing rounds (default 5)")
    p.add_argument("--round-time", type=float, default=0.25, metavar="SECONDS", help="seconds per model and batch in a round")
    p.add_argument("--threads", type=int, default=None, help="threads of the measuring backend")
    p.add_argument("--no-plot", action="store_true", help="skip report.png")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run, preflight=preflight,
                   param_flags={"output_dir": "--work-dir", "round_s": "--round-time", "data": "--data",
                                "eval_data": "--eval", "example_inputs": "--data"})  # fmt: skip


def _batches(text: str) -> list[int]:
    try:
        return [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise UsageError(f"--batch: expected comma-separated integers, got {text!r}") from None


def preflight(args: argparse.Namespace) -> Preflight:
    """Refuse what would fail later, before any work: numbers out of range, the steps, the model
    file, the output path, missing extras."""
    from ..arguments import check_int, check_number
    from ..optimize.pipeline import check_steps
    from ..optimize.pruning import check_ratio

    steps, _ = check_steps(args.steps)
    check_ratio(args.ratio)
    check_int("epochs", args.epochs, minimum=0)
    check_int("rounds", args.rounds)
    check_number("round_s", args.round_time, inclusive=False)
    check_number("max_drop", args.max_drop, optional=True)
    check_int("round_to", args.round_to, optional=True)
    check_int("calibration_samples", args.calibration_samples)
    _batches(args.batch)
    if not args.model.is_file():
        raise ModelLoadError(f"model file not found: {args.model}", path=str(args.model))
    if args.output is not None:
        want = _SUFFIX[args.target]
        if str(args.output) == "-":
            raise UsageError("--output -: a model is written to files, not stdout")
        if Path(args.output).suffix.lower() != want:
            raise UsageError(f"--output {args.output}: a model for --target {args.target} is written as {want}")
    if "distill" in steps and args.data is None:
        raise UsageError("--data is required for the distill step (training data with labels)")
    if "int8" in steps and args.data is None:
        raise UsageError("--data is required for the int8 step (calibration data)")
    needs = [Need("prune", ("torch", "torch_pruning"), "infercore optimize"),
             Need("convert-torch", ("onnx", "onnxslim"), "infercore optimize (the convert step: ic.convert)")]  # fmt: skip
    if args.target == "openvino":
        needs.append(Need("openvino", ("openvino",), "--target openvino"))
    elif args.target == "ort":
        needs.append(Need("ort", ("onnxruntime",), "--target ort"))
    if "int8" in steps:
        needs.append(Need("quantize", ("onnx", "onnxruntime") + (("nncf",) if args.target == "openvino" else ()), "the int8 step"))
    return Preflight(outputs=[("--output", args.output)], needs=needs)


def run(args: argparse.Namespace) -> int:
    from ..optimize import optimize
    from ..optimize.distillation import example_from_data
    from ..optimize.pipeline import check_steps
    from ..optimize.torchmodel import load_module

    steps, _ = check_steps(args.steps)
    example = example_from_data(args.data if args.data is not None else args.eval_data)
    module, saved = load_module(args.model, None if args.model.suffix == ".pt2" else example)
    if saved is not None:
        example = saved
    work = args.work_dir if args.work_dir is not None else Path(args.model.stem + ".optimize")
    calibrate_options = {k: v for k, v in (("method", args.method), ("preset", args.preset)) if v is not None}
    try:
        result = optimize(
            module, example, args.data, args.eval_data, steps=steps, target=args.target, ratio=args.ratio,
            importance=args.importance, ignore=[n.strip() for n in args.ignore.split(",")] if args.ignore else None,
            round_to=args.round_to, epochs=args.epochs,
            distill_options={"lr": args.lr, "temperature": args.temperature, "alpha": args.alpha},
            calibrate_options=calibrate_options, calibration_samples=args.calibration_samples, metric=args.metric,
            max_drop=args.max_drop, output_dir=work, output=args.output, batches=_batches(args.batch),
            rounds=args.rounds, round_s=args.round_time, threads=args.threads, plot=not args.no_plot,
        )  # fmt: skip
    except OptimizeDropError as e:
        _print(args, e.report)
        print(f"infercore optimize: FAILED: the chain lost more than --max-drop; the final model is not written "
              f"(every step's file and the report are in {work})", file=sys.stderr)  # fmt: skip
        return EXIT_VERDICT
    except ArgumentError as e:
        if e.parameter == "output":
            raise UsageError(f"--output {args.output}: {e.reason}") from e
        raise
    _print(args, result.report)
    print(f"wrote {result.artifact_path} (every step's file and the report are in {work})", file=sys.stderr)
    return EXIT_OK


def _print(args: argparse.Namespace, report: Any) -> None:
    print(report.to_json() if args.json else str(report))
