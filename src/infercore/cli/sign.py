"""``infercore sign MODEL --key KEY [-o SIG] [--certificate CERT [--chain PEM ...]] [--json]``

Signs a model (a file with its companion files, or a directory) in OpenSSF model-signing's format
with an elliptic-curve private key, or a key and its certificate. No verdict: 0 signed, 2 any error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .common import EXIT_OK, Need, Preflight, add_output_flag, wrote

VERDICT = None
PARAM_FLAGS = {
    "model_path": "MODEL",
    "signature": "-o/--output",
    "ignore_paths": "--ignore",
    "password": "--password-env",
    "certificate_chain": "--chain",
}
# model-signing imports OpenSSL (pyopenssl) without declaring it: both are the sign extra
SIGN_MODULES = ("model_signing", "OpenSSL")


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "sign",
        help="sign a model (all its files) with an elliptic-curve key or a certificate",
        description=(
            "Sign MODEL in OpenSSF model-signing's format (a Sigstore bundle over the sha256 of every "
            "file): a model file with its companion files (an .onnx's external data, an .xml's .bin), or "
            "a directory (a serve version directory: its signature goes inside it as model.sig). Keys "
            "are elliptic-curve keys (P-256, P-384, P-521): model-signing 1.1.1 signs with no other. "
            "Nothing is sent anywhere."
        ),
        epilog="example:\n  infercore sign models/cls/2 --key signing-key.pem",
    )
    p.add_argument("model", type=Path, metavar="MODEL", help="model file or directory")
    p.add_argument("--key", required=True, type=Path, help="PEM private key (elliptic curve)")
    add_output_flag(p, "the signature (default: DIR/model.sig for a directory, MODEL.sig beside a file)")
    p.add_argument(
        "--certificate", type=Path, default=None, metavar="CERT", help="sign with the key's PEM certificate"
    )
    p.add_argument(
        "--chain",
        type=Path,
        nargs="+",
        default=[],
        metavar="PEM",
        help="with --certificate: the intermediate (and root) certificates to put in the signature",
    )
    p.add_argument(
        "--password-env",
        default=None,
        metavar="VAR",
        help="the name of an environment variable holding the key's password (never on the command line)",
    )
    p.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="PATH",
        help="a path inside a directory model to leave out of the signature (repeat)",
    )
    p.add_argument("--json", action="store_true", help="print what was signed as JSON to stdout")
    p.set_defaults(func=run, preflight=preflight, param_flags=PARAM_FLAGS)


def preflight(args: argparse.Namespace) -> Preflight:
    outputs = [("-o/--output", args.output)] if args.output not in (None, "-") else []
    return Preflight(outputs=outputs, needs=[Need("sign", SIGN_MODULES, "infercore sign")])


def run(args: argparse.Namespace) -> int:
    from ..signing import sign

    if args.chain and args.certificate is None:
        raise UsageError("--chain goes with --certificate")
    password = None
    if args.password_env is not None:
        password = os.environ.get(args.password_env)
        if password is None:
            raise UsageError(f"--password-env: the environment variable {args.password_env} is not set")
    kw: dict[str, Any] = {
        "key": args.key,
        "certificate": args.certificate,
        "certificate_chain": args.chain,
        "password": password,
        "ignore_paths": args.ignore,
    }
    if args.output == "-":
        with tempfile.TemporaryDirectory(prefix="infercore-sign-") as tmp:
            sig = sign(args.model, signature=Path(tmp) / "model.sig", **kw)
            sys.stdout.write(sig.read_text())
        return EXIT_OK
    sig = sign(args.model, signature=args.output, **kw)
    method = "certificate" if args.certificate is not None else "public_key"
    if args.json:
        print(json.dumps({"model": str(args.model), "signature": str(sig), "method": method}))
    else:
        print(f"signed {args.model} ({method.replace('_', ' ')})")
    wrote(sig)
    return EXIT_OK
