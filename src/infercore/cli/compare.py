"""``infercore compare MODEL -b ort,openvino[:bf16] [--inputs data.npz] [--seed N] [--json] [-o report.json]``

Exit status, like ``diff``: 0 when every backend agrees with the first, 1 on a mismatch, 2 for
anything else: a backend (the reference included) could not load or run the model, a usage error
(a bad option, an unknown backend or input name, a value that does not fit its input), or an input
file that cannot be read. 1 is never an error.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..compare import PRECISION_ORDER, CompareReport, compare
from ..engine import load
from ..errors import InputsRejectedError, UsageError
from .common import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_VERDICT,
    Preflight,
    add_backends_flag,
    add_input_flags,
    add_output_flag,
    open_output,
    read_values,
    wrote,
)

VERDICT = "an output of a backend disagrees with the reference's (a mismatch)"


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "compare",
        help="run a model on several backends with the same inputs and check they agree",
        description=(
            "Run MODEL on each backend with the same inputs (from --inputs, or generated within each "
            "input's spec) and compare every output with the first backend's: max abs/rel error, cosine "
            "similarity, share of mismatching elements, and a verdict with tolerances for the loosest "
            "precision involved."
        ),
        epilog="example:\n  infercore compare model.onnx -b ort,openvino -s sequence=128 -o report.json",
    )
    p.add_argument("model", type=Path, help="model file (.onnx, .xml, .tflite, ...)")
    add_backends_flag(
        p,
        "comma-separated backends, first is the reference; NAME:PRECISION runs one in "
        "fp16/bf16/int8, e.g. ort,openvino:bf16 (default: every installed backend for the file)",
    )
    add_input_flags(p)
    p.add_argument(
        "--dist",
        choices=("uniform", "normal"),
        default="uniform",
        help="generated floats: uniform [-1, 1) (default) or normal(0, 1)",
    )
    p.add_argument(
        "--tolerance",
        choices=PRECISION_ORDER,
        default=None,
        help="tolerances of this precision (default: the loosest precision among the backends)",
    )
    p.add_argument("--rtol", type=_tolerance, default=None, help="override the relative tolerance (>= 0)")
    p.add_argument("--atol", type=_tolerance, default=None, help="override the absolute floor (>= 0)")
    p.add_argument("--device", default="cpu", help="device for every backend (default cpu)")
    p.add_argument("--threads", type=int, default=None, help="threads per backend")
    add_output_flag(p, "the report as JSON")
    p.add_argument(
        "--save-inputs", default=None, metavar="FILE", help="write the inputs used as .npz, to replay with --inputs"
    )
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print the report as JSON to stdout")
    out.add_argument("--plain", action="store_true", help="plain-text table even when rich is installed")
    p.set_defaults(func=run, preflight=preflight)


def preflight(args: argparse.Namespace) -> Preflight:
    from ..inputs import parse_backends

    if args.save_inputs == "-":
        raise UsageError("--save-inputs -: the inputs are written to a .npz file, not stdout")
    names = [c.name for c in parse_backends(args.backends)] if args.backends else []
    return Preflight(
        outputs=[("--output", args.output), ("--save-inputs", args.save_inputs)],
        backends=[("--backends", names)],
    )


def _tolerance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    values = read_values(args.input)
    if values:  # a name the model does not take: said with the flag, before any backend runs
        from ..inputs import model_inputs

        names = [s.name for s in model_inputs(args.model)]
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise UsageError(
                f"--input names {', '.join(map(repr, unknown))}, which the model does not take; its inputs are "
                f"{', '.join(names) or 'none'}"
            )
    shapes = dict(args.shape)
    backends = args.backends
    # errors (the reference failing included) reach the CLI, which prints them and exits EXIT_ERROR
    try:
        report = _compare(args, backends, values, shapes)
    except InputsRejectedError as e:
        if not e.generated:
            raise
        raise UsageError(
            str(e).replace("(inputs=) or other shapes (shapes=)", "(--inputs DATA, -i NAME=VALUE) or other shapes "
                           "(-s NAME=AxBxC, -s DIM=N)")
        ) from e
    if args.save_inputs is not None:
        with open_output(args.save_inputs, binary=True) as f:
            np.savez(f, **report.feeds)  # type: ignore[arg-type]
        wrote(args.save_inputs)
    if args.output is not None and args.output != "-":
        with open_output(args.output) as f:
            f.write(report.to_json() + "\n")
        wrote(args.output)
    if args.json or args.output == "-":
        print(report.to_json())
    elif args.plain or not sys.stdout.isatty() or not _print_rich(report):
        print(report.table())
    if report.failed_backends:
        return EXIT_ERROR
    return EXIT_OK if report.passed else EXIT_VERDICT


def _compare(
    args: argparse.Namespace, backends: str | None, values: dict[str, Any], shapes: dict[str, Any]
) -> CompareReport:
    given: Any = values
    if args.inputs is not None:
        from .. import inputs as ic_inputs

        with load(args.model, backend=_reference(backends, args.model), device=args.device) as eng:
            given = {**ic_inputs.load_feeds(args.inputs, eng.inputs), **values}
    return compare(
        args.model,
        backends,
        inputs=given,
        shapes=shapes,
        seed=args.seed,
        distribution=args.dist,
        tolerance=args.tolerance,
        rtol=args.rtol,
        atol=args.atol,
        device=args.device,
        threads=args.threads,
    )


def _print_rich(report: CompareReport) -> bool:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        return False
    console = Console()
    table = Table(title=report._title(), title_justify="left")
    for h in report.HEADERS:
        table.add_column(
            h, justify="right" if h in ("max abs", "max rel", "cosine", "mismatch", "atol") else "left"
        )
    for row in report.rows():
        style = None if row[7] == "ok" else "bold red"
        table.add_row(*row, style=style)
    console.print(table)
    for r in report.runs:
        if r.error:
            console.print(f"[red]{r.label}: FAILED: {r.error}[/red]", highlight=False)
    for note in report.notes:
        console.print(f"note: {note}", highlight=False, markup=False)
    color = "green" if report.passed else "red"
    console.print(f"[{color}]{report.verdict()}[/{color}]", highlight=False)
    return True


def _reference(backends: str | None, model: Path) -> str:
    """The reference backend's name: the first of --backends, else the first installed default."""
    from ..inputs import default_backends, parse_backends

    return parse_backends(backends)[0].name if backends else default_backends(model)[0]
