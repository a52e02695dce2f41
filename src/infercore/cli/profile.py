"""``infercore profile MODEL --data DATA -o profile.json``: the reference profile that
``infercore serve`` monitors a model against (``monitoring: {profile: profile.json}``)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .common import Need, Preflight, add_backends_flag, add_output_flag, check_output, open_output, wrote

VERDICT = None  # no verdict: 0 written, 2 an error


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "profile",
        help="build a model's reference profile for monitoring (drift, quality, screening)",
        description=(
            "Run DATA through MODEL and write what its inputs and outputs look like: per-feature quantiles, "
            "histograms and moments, class frequencies and scores of a classifier output, the reference "
            "accuracy when the data has labels (use held-out data), and what input screening needs."
        ),
    )
    p.add_argument("model", type=Path, help="model file (.onnx, .xml, .tflite, ...)")
    p.add_argument(
        "--data", "-d", required=True,
        help="reference data: a .npz (keys are input names; a 'labels' key gives labels) or a directory of "
        ".npy/.npz batches (labels in labels.npy), e.g. the calibration or validation data",
    )  # fmt: skip
    add_output_flag(p, "the profile (JSON)")
    add_backends_flag(p, "backend that runs the model (default: by file suffix)", one=True)
    p.add_argument("--batch-size", type=int, default=None, help="rows per batch when the data is one .npz")
    p.add_argument(
        "--classifier", default=None, metavar="OUTPUT",
        help="the output holding class scores (default: outputs named like logits/probs/scores; none: no classifier)",
    )  # fmt: skip
    p.add_argument("--inputs-only", action="store_true", help="profile the inputs only")
    p.add_argument("--max-samples", type=int, default=20_000, help="reservoir rows per tensor (default 20000)")
    p.add_argument("--json", action="store_true", help="print the profile's summary as JSON to stdout")
    p.set_defaults(func=run, preflight=preflight)


def preflight(args: argparse.Namespace) -> Preflight:
    if args.output is None:
        from ..errors import UsageError

        raise UsageError("-o/--output FILE is required: where to write the profile (-: stdout)")
    check_output("--output", args.output)
    backends: list[tuple[str, Sequence[str]]] = [("--backend", [args.backend])] if args.backend else []
    return Preflight(outputs=[("--output", args.output)], needs=[Need("monitor", ("scipy",), "profile")],
                     backends=backends)


def run(args: argparse.Namespace) -> int:
    from ..monitor import Profile

    classifier: str | bool | None = args.classifier
    if isinstance(classifier, str) and classifier.lower() == "none":
        classifier = False
    profile = Profile.build(
        args.model,
        args.data,
        backend=args.backend,
        batch_size=args.batch_size,
        outputs=not args.inputs_only,
        classifier=classifier,
        max_samples=args.max_samples,
    )
    with open_output(args.output) as f:
        json.dump(profile.to_dict(), f, separators=(",", ":"), allow_nan=False)
        if str(args.output) == "-":
            f.write("\n")
    summary = profile.summary()
    if args.json:
        if str(args.output) != "-":
            print(json.dumps({"output": str(args.output), **summary}, indent=2))
        return 0
    out = sys.stderr if str(args.output) == "-" else sys.stdout
    print(f"{summary['samples']} samples profiled", file=out)
    for name, t in summary["tensors"].items():
        extra = f", {t['classes']} classes" if "classes" in t else ""
        print(f"  {t['kind']:6s} {name}: {t['features']} features ({t['layout']}){extra}", file=out)
    if "quality" in summary:
        q = summary["quality"]
        print(f"  reference accuracy {q['accuracy']:.4f} on {q['labels']} labels (output {q['output']})", file=out)
    for name, why in summary.get("skipped", {}).items():
        print(f"  skipped {name}: {why}", file=out)
    wrote(args.output)
    return 0
