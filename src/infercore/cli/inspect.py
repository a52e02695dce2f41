"""``infercore inspect MODEL``: inputs, outputs, dtypes, dynamic dims, opset, size."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .common import Preflight, add_backends_flag

VERDICT = None  # exit status 1 is not used


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "inspect",
        help="show a model's inputs, outputs, opset and size",
        description="Open MODEL with a backend and show its inputs and outputs (dtype, shape, dynamic "
        "dimensions, quantization), the opset, producer and node count of an ONNX file, its size and metadata.",
        epilog="example:\n  infercore inspect model.onnx --json",
    )
    p.add_argument("model", type=Path, help="model file (.onnx, .xml, .tflite, ...)")
    add_backends_flag(p, "backend to open it with (default: from the file suffix)", one=True)
    p.add_argument("--json", action="store_true", help="print JSON to stdout instead of text")
    p.set_defaults(func=run, preflight=preflight)


def preflight(args: argparse.Namespace) -> Preflight:
    return Preflight(backends=[("--backend", [args.backend])] if args.backend else [])


def _onnx_facts(path: Path) -> dict[str, Any]:
    """Opset, producer and node count read from the file itself, when the onnx package is there."""
    if path.suffix.lower() != ".onnx":
        return {}
    try:
        import onnx
    except ImportError:
        return {}
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:
        return {}
    return {
        "opset": {(o.domain or "ai.onnx"): o.version for o in model.opset_import},
        "ir_version": model.ir_version,
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "nodes": len(model.graph.node),
    }


def run(args: argparse.Namespace) -> int:
    from .. import load
    from ..specs import format_shape

    path: Path = args.model
    with load(path, backend=args.backend) as eng:
        size = path.stat().st_size
        weights = path.with_suffix(".bin")
        if path.suffix.lower() == ".xml" and weights.exists():
            size += weights.stat().st_size
        facts = {
            "path": str(path),
            "size_bytes": size,
            "backend": eng.backend_name,
            "device": eng.device,
            **_onnx_facts(path),
            "inputs": [_spec_dict(s) for s in eng.inputs],
            "outputs": [_spec_dict(s) for s in eng.outputs],
            "metadata": dict(eng.metadata),
        }
        if args.json:
            print(json.dumps(facts, indent=2))
            return 0
        print(f"{path}  ({size / 1e6:.2f} MB)  backend={eng.backend_name} device={eng.device}")
        if "opset" in facts:
            ops = ", ".join(f"{d} {v}" for d, v in facts["opset"].items())
            print(f"opset: {ops}  ir_version: {facts['ir_version']}  nodes: {facts['nodes']}  "
                  f"producer: {facts['producer'] or '-'}")
        for title, specs in (("inputs", eng.inputs), ("outputs", eng.outputs)):
            print(f"{title}:")
            for s in specs:
                dyn = [n or f"dim{i}" for i, (d, n) in enumerate(zip(s.shape, s.dim_names, strict=True)) if d is None]
                extra = f"  dynamic: {', '.join(dyn)}" if dyn else ""
                q = f"  quantized: scale={s.quantization.scale} zero_point={s.quantization.zero_point}" if s.quantization else ""
                print(f"  {s.name:<24} {s.dtype!s:<10} {format_shape(s.shape, s.dim_names)}{extra}{q}")
        if eng.metadata:
            print("metadata:")
            for k, v in eng.metadata.items():
                print(f"  {k}: {v}")
    return 0


def _spec_dict(s: Any) -> dict[str, Any]:
    d = {"name": s.name, "dtype": str(s.dtype), "shape": list(s.shape), "dim_names": list(s.dim_names)}
    if s.quantization is not None:
        d["quantization"] = {"scale": s.quantization.scale, "zero_point": s.quantization.zero_point}
    return d
