"""``infercore profile MODEL --data DATA -o profile.json``: the reference profile that
``infercore serve`` monitors a model against (``monitoring: {profile: profile.json}``).

Exit status: 0 the profile was written; 1 an error (a model or data file that cannot be read or
does not fit the model); 2 a usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import UsageError


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "profile",
        help="build a model's reference profile for monitoring (drift, quality, screening)",
        description=(
            "Run DATA through MODEL and write what its inputs and outputs look like: per-feature "
            "quantiles, histograms and moments, class frequencies and scores of a classifier output, "
            "reference accuracy when the data has labels, and the statistics input screening needs. "
            "Exit status: 0 written, 1 error, 2 usage error."
        ),
        epilog="exit status: 0 the profile was written; 1 error; 2 usage error",
    )
    p.add_argument("model", type=Path, help="model file (.onnx, .xml, .tflite, ...)")
    p.add_argument(
        "--data",
        "-d",
        required=True,
        help="reference data: a .npz (keys are input names; a 'labels' key gives labels) or a directory of "
        ".npy/.npz batches (labels in labels.npy), e.g. the calibration data",
    )
    p.add_argument("--output", "-o", required=True, help="the profile (.json); '-' prints it")
    p.add_argument("--backend", "-b", default=None, help="backend that runs the model (default: by suffix)")
    p.add_argument("--batch-size", type=int, default=None, help="rows per batch when the data is one .npz")
    p.add_argument(
        "--classifier",
        default=None,
        metavar="OUTPUT",
        help="the output holding class scores (default: outputs named like logits/probs/scores; 'none': no classifier)",
    )
    p.add_argument("--inputs-only", action="store_true", help="profile the inputs only (the model still loads)")
    p.add_argument("--max-samples", type=int, default=20_000, help="reservoir rows per tensor (default 20000)")
    p.add_argument("--json", action="store_true", help="print the profile's summary as JSON")
    p.set_defaults(func=run, param_flags={"classifier": "--classifier", "max_samples": "--max-samples"})


def run(args: argparse.Namespace) -> int:
    from ..monitor import Profile

    out = str(args.output)
    if out != "-":
        target = Path(out)
        if target.exists() and target.is_dir():
            raise UsageError(f"--output {out} is a directory; give a file name such as profile.json")
        if not target.parent.exists():
            raise UsageError(f"--output {out}: directory {target.parent} does not exist")
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
    if out == "-":
        json.dump(profile.to_dict(), sys.stdout, separators=(",", ":"))
        print()
        return 0
    profile.save(out)
    summary = profile.summary()
    if args.json:
        print(json.dumps({"output": out, **summary}, indent=2))
    else:
        print(f"wrote {out}: {summary['samples']} samples")
        for name, t in summary["tensors"].items():
            extra = f", {t['classes']} classes" if "classes" in t else ""
            print(f"  {t['kind']:6s} {name}: {t['features']} features ({t['layout']}){extra}")
        if "quality" in summary:
            q = summary["quality"]
            print(f"  reference accuracy {q['accuracy']:.4f} on {q['labels']} labels (output {q['output']})")
        for name, why in summary.get("skipped", {}).items():
            print(f"  skipped {name}: {why}")
    return 0
