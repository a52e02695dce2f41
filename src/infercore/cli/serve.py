"""``infercore serve PATH``: an Open Inference Protocol (V2) server over REST and gRPC."""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import sys
from pathlib import Path

from .common import EXIT_ERROR, EXIT_OK, Need, Preflight
from .sign import SIGN_MODULES

VERDICT = None  # exit status 1 is not used

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1 << 10,
    "kb": 1 << 10,
    "kib": 1 << 10,
    "m": 1 << 20,
    "mb": 1 << 20,
    "mib": 1 << 20,
    "g": 1 << 30,
    "gb": 1 << 30,
    "gib": 1 << 30,
}


def parse_size(text: str) -> int:
    """``64MB``, ``512k``, ``1048576`` -> bytes (binary units)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if m is None or m.group(2).lower() not in _UNITS:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (examples: 64MB, 512k, 1048576)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def _port(text: str) -> int | None:
    if text.lower() in ("off", "none", "-1"):
        return None
    port = int(text)
    if not 0 <= port < 65536:
        raise argparse.ArgumentTypeError(f"not a port: {text}")
    return port


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"not a number of seconds >= 0: {text!r}")
    return value


def _threads(text: str) -> int:
    if text.strip().lower() == "auto":
        from ..layout import available_cores

        return available_cores()
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a positive integer or 'auto': {text!r}")
    return value


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a model repository over the Open Inference Protocol (V2): REST and gRPC",
        description="Serve PATH with Triton/KServe-compatible REST (binary tensor extension) and gRPC, "
        "Prometheus metrics, and a graceful drain on SIGTERM. PATH is a model repository "
        "(PATH/<model>/<version>/model.{onnx,xml,tflite,engine} + PATH/<model>/config.yaml), or one "
        "model: a model file (minilm.onnx), or with --model-name a directory of one model's files "
        "(PATH/model.onnx + PATH/config.yaml, as KServe's storage initializer leaves /mnt/models) or "
        "of its versions (PATH/1/model.onnx). Logs are JSON lines on stderr; a repository with no servable model is "
        "served all the same (models can be added and loaded through the API), with a warning.",
        epilog="examples:\n  infercore serve models/ --http-port 8000 --grpc-port off --metrics-port off\n"
        "  infercore serve /mnt/models --model-name minilm --threads auto",
    )
    p.add_argument(
        "repository",
        type=Path,
        metavar="PATH",
        help="model repository (PATH/<model>/<version>/model.<suffix>), or one model: a model file, "
        "or a directory of its files or of its versions",
    )
    p.add_argument(
        "--model-name",
        metavar="NAME",
        help="serve PATH as the model NAME: PATH is one model (a file, a directory of its files or of its "
        "versions), or a repository holding NAME or only one model (KServe runtimes pass {{.Name}}); "
        "without it a directory is a repository, and a file is named after its stem",
    )
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    p.add_argument("--http-port", type=_port, default=8000, help="REST port (default 8000; 0: any; off)")
    p.add_argument("--grpc-port", type=_port, default=8001, help="gRPC port (default 8001; 0: any; off)")
    p.add_argument(
        "--metrics-port", type=_port, default=8002, help="Prometheus port (default 8002; 0: any; off)"
    )
    p.add_argument(
        "--token",
        default=os.environ.get("INFERCORE_SERVE_TOKEN"),
        help="require 'Authorization: Bearer TOKEN' on inference and repository endpoints "
        "(default: $INFERCORE_SERVE_TOKEN; none: no auth)",
    )
    p.add_argument(
        "--max-body",
        type=parse_size,
        default=64 << 20,
        help="largest request body (and gRPC message) accepted, e.g. 64MB (default)",
    )
    p.add_argument(
        "--model",
        action="append",
        dest="models",
        metavar="NAME",
        help="load only this model at start (repeat); others can be loaded through the API",
    )
    p.add_argument(
        "--drain-timeout",
        type=_seconds,
        default=30.0,
        help="seconds to finish accepted requests after SIGTERM (default 30)",
    )
    p.add_argument(
        "--threads",
        type=_threads,
        metavar="N|auto",
        help="runtime threads per engine instance for every model whose config.yaml does not set "
        "threads or instances, in place of the probed layout; auto: the CPUs this container may use (its "
        "cgroup CPU quota). Default: a layout probed at load on those CPUs (see --no-autotune)",
    )
    p.add_argument("--access-log", action="store_true", help="log every inference request (JSON lines)")
    p.add_argument(
        "--no-autotune",
        dest="autotune",
        action="store_false",
        help="do not probe a model's layout at load: a config without threads/instances runs one engine "
        "with the runtime's default threads (as `auto: false` in its config.yaml)",
    )
    p.add_argument(
        "--require-signatures",
        type=Path,
        default=None,
        metavar="PUB",
        help="load only version directories whose model.sig verifies with this PEM public key (a version "
        "that does not is listed UNAVAILABLE, and the version policy picks among the others); "
        "needs infercore[sign]",
    )
    p.set_defaults(func=run, preflight=preflight, param_flags={"public_key": "--require-signatures"})


def preflight(args: argparse.Namespace) -> Preflight:
    modules = ["orjson", "yaml"]  # the JSON logs, config.yaml
    if args.http_port is not None:
        modules += ["starlette", "uvicorn"]
    if args.grpc_port is not None:
        modules += ["grpc", "google.protobuf"]
    if args.metrics_port is not None:
        modules += ["prometheus_client"]
    needs = [Need("serve", tuple(modules), "infercore serve")]
    if args.require_signatures is not None:  # model-signing imports OpenSSL (pyopenssl) undeclared
        needs.append(Need("sign", SIGN_MODULES, "--require-signatures"))
    return Preflight(needs=needs)


def run(args: argparse.Namespace) -> int:
    from ..serve.logs import configure_logging

    restore = configure_logging(
        logging.DEBUG if getattr(args, "debug", False) else logging.INFO, access=args.access_log
    )
    try:
        return _serve(args)
    finally:
        restore()


def _serve(args: argparse.Namespace) -> int:
    from ..errors import ServeError, UsageError
    from ..serve.layout import repository_for
    from ..serve.repository import ModelRepository
    from ..serve.server import InferenceServer, ServeOptions

    if args.models and args.model_name:
        raise UsageError("--model and --model-name: give one (--model-name serves PATH as that one model)")
    signature = None
    if args.require_signatures is not None:
        from ..serve.signatures import SignatureConfig

        signature = SignatureConfig(public_key=args.require_signatures)
    served = repository_for(args.repository, args.model_name)
    if signature is not None and served.layout in ("file", "files"):
        served.cleanup()  # served through links, which signature checks refuse (and model.* renames)
        raise UsageError(
            f"--require-signatures: {args.repository} is served as one model's files; signatures are "
            "checked on version directories: lay it out as DIR/1/model.onnx with DIR/1/model.sig "
            "(infercore sign DIR/1) and serve DIR (with --model-name) or a repository"
        )
    try:
        repo = ModelRepository(
            served.root,
            signature=signature,
            defaults={"threads": args.threads} if args.threads else None,
            autotune=args.autotune,
        )
        options = ServeOptions(
            host=args.host,
            http_port=args.http_port,
            grpc_port=args.grpc_port,
            metrics_port=args.metrics_port,
            token=args.token or None,
            max_body=args.max_body,
            models=args.models or list(served.models) or None,
            drain_timeout=args.drain_timeout,
        )
        InferenceServer(repo, options).run()
    except ServeError as e:  # a model that fails to load at start: not a bad request, not a bug
        print(f"infercore serve: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        served.cleanup()
    return EXIT_OK
