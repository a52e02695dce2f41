"""``infercore bench``: latency and throughput across backends, batch sizes and concurrency.

Exit status: 0 when every configuration ran; 1 with ``--strict`` when a figure carries an honesty
warning (too short, too noisy, overhead-dominated); 2 for any error: a configuration that failed,
the model or the --inputs file that could not be read, a usage error.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any

from ..bench import BenchmarkReport, BenchmarkWarning, benchmark, parse_duration
from ..errors import InfercoreError, UsageError
from .common import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_VERDICT,
    Need,
    Preflight,
    add_backends_flag,
    add_input_flags,
    add_output_flag,
    open_output,
    read_values,
    wrote,
)

VERDICT = "--strict and a figure carries a warning (too short, too noisy, overhead-dominated)"


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _range(text: str) -> tuple[str, tuple[float, float]]:
    name, sep, rng = text.partition("=")
    lo, colon, hi = rng.partition(":")
    try:
        if not sep or not colon:
            raise ValueError
        low, high = float(lo), float(hi)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=LO:HI (HI excluded), got {text!r}") from None
    if high <= low:
        raise argparse.ArgumentTypeError(f"empty range in {text!r}: HI must be above LO")
    return name.strip(), (low, high)


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "bench",
        help="benchmark a model: latency percentiles and throughput across backends",
        description="Benchmark a model on one or more backends. Warmup is excluded, the harness's own "
        "overhead is measured against a no-op backend, and runs that are too short or too noisy say so.",
        epilog="examples:\n  infercore bench model.onnx -b ort,openvino,openvino:bf16 -s sequence=128\n"
        "  infercore bench det.onnx -s x=1x3x640x640 --batch 1,8 --concurrency 1,2 -o out.json --plot out.png",
    )
    p.add_argument("model", type=Path, help="model file (.onnx, .xml, .tflite, ...)")
    add_backends_flag(
        p,
        "comma-separated backends, each optionally NAME:PRECISION (openvino:bf16); "
        "default: every installed backend that reads the file",
    )
    p.add_argument("--batch", type=_int_list, help="batch sizes, e.g. 1,8,32 (dynamic batch dimension)")
    add_input_flags(p)
    p.add_argument("--concurrency", type=_int_list, default=[1], help="worker threads, e.g. 1,4 (default 1)")
    p.add_argument("--threads", type=int, help="runtime threads per engine (default: the backend's)")
    p.add_argument("--precision", help="fp32, fp16, bf16 or int8 (comma list allowed); default: backend's")
    p.add_argument("--device", default="cpu", help="device name (default cpu)")
    p.add_argument("--warmup", type=_duration, default=2.0, help="warmup per configuration (default 2s)")
    run = p.add_mutually_exclusive_group()
    run.add_argument("--duration", type=_duration, help="measured time per configuration (default 10s)")
    run.add_argument("--iterations", type=int, help="measured calls per configuration, instead of --duration")
    p.add_argument(
        "--bound",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="time io.run() on bound buffers (default) or engine.run(feeds) (--no-bound)",
    )
    p.add_argument(
        "--input-range",
        type=_range,
        action="append",
        default=[],
        metavar="NAME=LO:HI",
        help="value range of a random input (integers: HI excluded); repeatable",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON to stdout (the table goes to stderr)")
    add_output_flag(p, "the report as JSON")
    p.add_argument("--json-samples", action="store_true", help="include every latency sample in the JSON")
    p.add_argument(
        "--plot", default=None, metavar="FILE",
        help="write latency distributions and throughput as an image (PNG; .svg or .pdf by suffix)",
    )  # fmt: skip
    p.add_argument(
        "--cv-threshold", type=float, default=0.10, help="warn above this latency CV (default 0.10)"
    )
    p.add_argument("--strict", action="store_true", help="exit 1 when any figure carries a warning")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress with an ETA on stderr (default: a live line on a terminal, a line every 15 s "
        "otherwise, $INFERCORE_PROGRESS_INTERVAL to change it)",
    )
    p.set_defaults(func=run_bench, preflight=preflight)


def preflight(args: argparse.Namespace) -> Preflight:
    from ..inputs import parse_backends

    if args.plot == "-":
        raise UsageError("--plot -: an image is written to a file, not stdout")
    names = [c.name for c in parse_backends(args.backends)] if args.backends else []
    return Preflight(
        outputs=[("--output", args.output), ("--plot", args.plot)],
        needs=[Need("bench", ("matplotlib",), "--plot")] if args.plot is not None else [],
        backends=[("--backends", names)],
    )


def run_bench(args: argparse.Namespace) -> int:
    if args.iterations is not None and args.iterations < 1:
        raise UsageError(f"--iterations must be positive, got {args.iterations}")
    backends = [b.strip() for b in args.backends.split(",") if b.strip()] if args.backends else None
    to_stdout = args.json or args.output == "-"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BenchmarkWarning)  # printed below, once, with the table
        report = _benchmark(args, backends)
    report.print_table(sys.stderr if to_stdout else sys.stdout)
    if to_stdout:
        print(report.to_json(samples=args.json_samples))
    if args.output is not None and args.output != "-":
        with open_output(args.output) as f:
            f.write(report.to_json(samples=args.json_samples) + "\n")
        wrote(args.output)
    if args.plot is not None and any(r.ok for r in report.results):
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        wrote(report.plot(args.plot))
    if report.errors:
        print(f"infercore bench: error: {len(report.errors)} configuration(s) failed", file=sys.stderr)
        generated = {
            k: f"{k} {i['shape']} ({i['source']})"
            for r in report.results if r.error for k, i in r.inputs.items() if i["source"].startswith("generated")
        }  # fmt: skip
        if generated:  # the model refused inputs infercore made: say which, and the flags that replace them
            print(
                f"infercore bench: the failed runs used generated inputs: {'; '.join(generated.values())}. Give "
                "real inputs (--inputs DATA, -i NAME=VALUE) or other shapes (-s NAME=AxBxC, -s DIM=N)",
                file=sys.stderr,
            )
        return EXIT_ERROR
    if args.strict and report.warnings:
        print(f"infercore bench: {len(report.warnings)} warning(s) and --strict", file=sys.stderr)
        return EXIT_VERDICT
    return EXIT_OK


def _benchmark(args: argparse.Namespace, backends: list[str] | None) -> BenchmarkReport:
    """``benchmark()`` with the errors that are about the command line raised as ``UsageError``."""
    ranges = dict(args.input_range)
    shapes = dict(args.shape)
    given: Any = args.inputs
    values = read_values(args.input)
    if values:  # -i NAME=VALUE, over the --inputs file's arrays of the same name
        from ..inputs import load_feeds, model_inputs

        specs = model_inputs(args.model)
        unknown = sorted(set(values) - {s.name for s in specs})
        if unknown:
            raise UsageError(
                f"--input names {', '.join(map(repr, unknown))}, which the model does not take; its inputs are "
                f"{', '.join(s.name for s in specs) or 'none'}"
            )
        given = {**(load_feeds(args.inputs, specs) if args.inputs is not None else {}), **values}
    try:
        return benchmark(
            args.model,
            backends,
            batch=args.batch,
            shapes=shapes,
            concurrency=args.concurrency,
            threads=args.threads,
            precision=args.precision.split(",") if args.precision else None,
            device=args.device,
            warmup=args.warmup,
            duration=args.duration if args.duration is not None else 10.0,
            iterations=args.iterations,
            bound=args.bound,
            input_range=ranges,
            inputs=given,
            cv_threshold=args.cv_threshold,
            progress=args.progress,
            seed=args.seed,
        )
    except InfercoreError:
        raise
    except ValueError as e:  # benchmark() refusing an argument value
        raise UsageError(str(e)) from e
