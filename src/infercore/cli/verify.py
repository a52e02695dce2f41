"""``infercore verify MODEL --public-key PUB [--signature SIG] [--json]``

Checks a model (every file of it) against its model-signing signature, with a public key or a
certificate chain. Exit status: 0 verified; 1 verification failed (the verdict: a changed, missing
or extra file, a signature made with another key, no signature); 2 any error (a missing extra, a
key file that cannot be read, a model that does not exist).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import SignatureError
from .common import EXIT_OK, EXIT_VERDICT, Need, Preflight
from .sign import SIGN_MODULES

VERDICT = "the model does not match its signature (a changed, missing or extra file, another key, no signature)"
PARAM_FLAGS = {"model_path": "MODEL", "ignore_paths": "--ignore"}


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "verify",
        help="check a model against its signature (exit 1 when it does not match)",
        description=(
            "Check every file of MODEL (a file with its companion files, or a directory) against its "
            "OpenSSF model-signing signature, with a public key or a certificate chain. A changed byte, "
            "a missing file or an extra file fails, naming the file. Signatures made by model-signing's "
            "own CLI verify. Nothing is sent anywhere."
        ),
        epilog="example:\n  infercore verify models/cls/2 --public-key signing-key.pub --json",
    )
    p.add_argument("model", type=Path, metavar="MODEL", help="model file or directory")
    trust = p.add_mutually_exclusive_group(required=True)
    trust.add_argument("--public-key", type=Path, default=None, metavar="PUB", help="PEM public key")
    trust.add_argument(
        "--certificate-chain",
        type=Path,
        nargs="+",
        default=None,
        metavar="PEM",
        help="PEM certificates to trust (the root CA, and intermediates)",
    )
    p.add_argument(
        "--signature",
        type=Path,
        default=None,
        metavar="SIG",
        help="signature file (default: DIR/model.sig for a directory, MODEL.sig beside a file)",
    )
    p.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="PATH",
        help="a path inside a directory model that the signature does not cover (repeat)",
    )
    p.add_argument("--json", action="store_true", help="print the verdict as JSON to stdout (also when it fails)")
    p.set_defaults(func=run, preflight=preflight, param_flags=PARAM_FLAGS)


def preflight(args: argparse.Namespace) -> Preflight:
    return Preflight(needs=[Need("sign", SIGN_MODULES, "infercore verify")])


def run(args: argparse.Namespace) -> int:
    from ..signing import Verifier

    verifier = Verifier(
        public_key=args.public_key, certificate_chain=args.certificate_chain, ignore_paths=args.ignore
    )
    try:
        result = verifier.verify(args.model, signature=args.signature)
    except SignatureError as e:
        if args.json:
            print(
                json.dumps(
                    {
                        "model": str(args.model),
                        "signature": e.signature,
                        "verified": False,
                        "reason": e.reason,
                        "changed": list(e.changed),
                        "missing": list(e.missing),
                        "extra": list(e.extra),
                        "error": str(e),
                    }
                )
            )
        else:
            print(f"infercore verify: verification failed: {e}", file=sys.stderr)
        return EXIT_VERDICT
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        print(f"verified {args.model}: {len(result.files)} file(s) match {result.signature} ({result.method})")
    return EXIT_OK
