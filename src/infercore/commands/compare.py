"""``infercore compare MODEL --backends ort,openvino[:bf16] [--inputs data.npz] [--seed N] [--json]``

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

from ..compare import PRECISION_ORDER, CompareReport, compare, load_arrays
from ..errors import InputSpecError, UsageError

EXIT_AGREE, EXIT_MISMATCH, EXIT_FAILED = 0, 1, 2


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "compare",
        help="run a model on several backends with the same inputs and check they agree",
        description=(
            "Run MODEL on each backend with the same inputs (from --inputs, or generated within each "
            "input's spec) and compare every output with the first backend's: max abs/rel error, cosine "
            "similarity, share of mismatching elements, and a verdict with tolerances for the loosest "
            "precision involved. Exit status 0: agree, 1: mismatch, 2: a backend failed or any other "
            "error (usage errors included)."
        ),
    )
    p.add_argument("model", type=Path, help="model file (.onnx, .xml, .tflite, ...)")
    p.add_argument(
        "--backends",
        "-b",
        default=None,
        help="comma-separated backends, first is the reference; NAME:PRECISION runs one in "
        "fp16/bf16/int8, e.g. ort,openvino:bf16 (default: every installed backend for the file)",
    )
    p.add_argument(
        "--inputs", type=Path, default=None, help=".npz of input arrays (name -> array); others are generated"
    )
    p.add_argument(
        "--input",
        "-i",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="one input: a number that fills the tensor (sr=16000, attention_mask=1) or a .npy path",
    )
    p.add_argument(
        "--shape",
        "-s",
        action="append",
        default=[],
        metavar="NAME=AxBxC",
        help="shape of a generated input, e.g. input=1x512 (0-d: NAME=)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for generated inputs (default 0)")
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
    p.add_argument("--save-inputs", type=Path, default=None, metavar="FILE.npz", help="write the inputs used")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print the report as JSON")
    out.add_argument("--plain", action="store_true", help="plain-text table even when rich is installed")
    p.set_defaults(func=run, error_status=EXIT_FAILED)


def _tolerance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def _parse_value(name: str, text: str) -> Any:
    if text.endswith(".npy"):
        a = load_arrays(text, tensor=name)
        if not isinstance(a, np.ndarray):
            raise InputSpecError(
                f"--input {name}={text}: expected one array (.npy), the file holds {list(a)}"
            )
        return a
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    raise UsageError(f"--input {name}={text}: expected a number, true/false or a .npy file, got {text!r}")


def _pairs(items: list[str], flag: str) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"{flag} takes NAME=VALUE, got {item!r}")
        out[name] = value
    return out


def run(args: argparse.Namespace) -> int:
    values: dict[str, Any] = {}
    if args.inputs is not None:
        from ..compare import load_inputs

        values.update(load_inputs(args.inputs))
    values.update({k: _parse_value(k, v) for k, v in _pairs(args.input, "--input").items()})
    shapes = {k: _dims(k, v) for k, v in _pairs(args.shape, "--shape").items()}
    backends = [b for b in args.backends.split(",") if b.strip()] if args.backends else None
    # errors (the reference failing included) reach the CLI, which prints them and exits EXIT_FAILED
    report = _compare(args, backends, values, shapes)
    if args.save_inputs is not None:
        np.savez(args.save_inputs, **report.feeds)  # type: ignore[arg-type]
    if args.json:
        print(report.to_json())
    elif args.plain or not sys.stdout.isatty() or not _print_rich(report):
        print(report.table())
    if report.failed_backends:
        return EXIT_FAILED
    return EXIT_AGREE if report.passed else EXIT_MISMATCH


def _dims(name: str, text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in text.lower().split("x") if d)
    except ValueError:
        dims = (-1,)
    if any(d < 0 for d in dims):
        raise UsageError(f"--shape {name}={text}: expected sizes like 1x512 (empty for a 0-d input)")
    return dims


def _compare(
    args: argparse.Namespace, backends: list[str] | None, values: dict[str, Any], shapes: dict[str, Any]
) -> CompareReport:
    return compare(
        args.model,
        backends,
        inputs=values,
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
    color = "green" if report.passed else "red"
    console.print(f"[{color}]{report.verdict()}[/{color}]", highlight=False)
    return True
