"""``infercore run MODEL -i NAME=FILE.npy ... [-o out.npz] [--json]``: one inference from files."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputSpecError, UsageError
from .common import EXIT_OK, Preflight, add_backends_flag, add_output_flag, open_output, wrote

VERDICT = None  # exit status 1 is not used


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "run",
        help="run a model once on inputs from .npy/.npz files",
        description="Run MODEL once on inputs read from .npy/.npz files, print each output's dtype, shape "
        "and summary statistics and the latency of that one call, and write the outputs to a .npz file.",
        epilog="example:\n  infercore run model.onnx -i x=x.npy -o out.npz --json",
    )
    p.add_argument("model", type=Path, help="model file (.onnx, .xml, .tflite, ...)")
    p.add_argument("--input", "-i", action="append", default=[], metavar="NAME=FILE.npy",
                   help="an input from a .npy file, or a number that fills it (sr=16000), repeated per input; "
                   "FILE.npz alone gives all inputs by name")
    add_output_flag(p, "the outputs as a .npz file (arrays named after the outputs)")
    add_backends_flag(p, "backend (default: from the file suffix)", one=True)
    p.add_argument("--device", help="device (default: the backend's, cpu or cuda:0)")
    p.add_argument("--precision", help="fp32, fp16, bf16 or int8, where the backend supports it (default: its own)")
    p.add_argument("--threads", type=int, help="runtime threads (default: the backend's)")
    p.add_argument("--json", action="store_true",
                   help="print the outputs' names, dtypes, shapes, summary statistics and the latency as JSON")
    p.set_defaults(func=run, preflight=preflight)


def preflight(args: argparse.Namespace) -> Preflight:
    if args.json and args.output == "-":
        raise UsageError("--json and --output - would both write stdout: give -o a file")
    return Preflight(
        outputs=[("--output", args.output)],
        backends=[("--backend", [args.backend])] if args.backend else [],
    )


def _number(text: str) -> int | float | bool | None:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text.lower() == "true" if text.lower() in ("true", "false") else None


def _read_inputs(specs: list[str]) -> dict[str, Any]:
    from ..inputs import load_arrays

    feeds: dict[str, Any] = {}
    for item in specs:
        name, sep, file = item.partition("=")
        if not sep:
            if Path(name).suffix != ".npz":
                raise UsageError(f"--input {item!r}: expected NAME=FILE.npy or a FILE.npz holding every input")
            data = load_arrays(name)
            if isinstance(data, np.ndarray):
                raise InputSpecError(
                    f"--input {name}: expected named arrays (.npz), the file holds one unnamed "
                    f"{data.dtype}{list(data.shape)} array: give it as NAME={name}"
                )
            feeds.update(data)
            continue
        if not name:
            raise UsageError(f"--input {item!r}: expected NAME=FILE.npy")
        number = _number(file)
        if number is not None:  # a number fills the input (sized below, once the model's specs are known)
            feeds[name] = number
            continue
        a = load_arrays(file, tensor=name)
        if not isinstance(a, np.ndarray):
            raise InputSpecError(
                f"--input {name}={file}: expected one array (.npy), the file holds {', '.join(a) or 'nothing'}",
                tensor=name,
            )
        feeds[name] = a
    return feeds


def run(args: argparse.Namespace) -> int:
    from .. import load
    from ..inputs.data import name_lone_array

    feeds = _read_inputs(args.input)
    with load(args.model, backend=args.backend, device=args.device, precision=args.precision,
              threads=args.threads) as eng:
        names = [s.name for s in eng.inputs]
        feeds = name_lone_array(feeds, names)
        unknown = sorted(set(feeds) - set(names))
        if unknown:
            raise UsageError(
                f"--input names {', '.join(map(repr, unknown))}, which the model does not take; its inputs are "
                f"{', '.join(names) or 'none'}"
            )
        missing = [n for n in names if n not in feeds]
        if missing:
            raise UsageError(
                f"missing input(s) {', '.join(map(repr, missing))}: give each with -i NAME=FILE.npy (or a number "
                f"that fills it, -i NAME=0), or all at once with -i FILE.npz; the model's inputs are: "
                f"{', '.join(str(s) for s in eng.inputs)}"
            )
        feeds = _fill_numbers(feeds, eng.inputs)
        t0 = time.perf_counter()  # the engine times only every 8th call: time this one here
        out = eng.run(feeds)
        ms = (time.perf_counter() - t0) * 1e3
        backend, device = eng.backend_name, eng.device
    if args.output is not None:
        with open_output(args.output, binary=True) as f:
            np.savez(f, **out)  # type: ignore[arg-type]  # a file object: no ".npz" appended to the path
    # the report goes to stdout, unless the outputs themselves do (-o -)
    report = sys.stderr if args.output == "-" else sys.stdout
    if args.json:
        doc = {
            "schema": "infercore.run/1",
            "model": str(args.model),
            "backend": backend,
            "device": device,
            "outputs": [_describe(k, v) for k, v in out.items()],
            "latency_ms": round(ms, 4),
            "latency_note": "one call, the first after loading",
            "output_file": args.output,
        }
        print(json.dumps(doc, indent=2), file=report)
    else:
        for name, value in out.items():
            text = "  ".join(f"{k}={v:.6g}" for k, v in _stats(value).items())
            print(f"{name}: {value.dtype} {list(value.shape)}  {text}".rstrip(), file=report)
        print(f"latency: {ms:.3f} ms ({backend}, one call, the first after loading)", file=report)
    if args.output is not None:
        wrote(args.output)
    return EXIT_OK


def _fill_numbers(feeds: dict[str, Any], specs: Any) -> dict[str, np.ndarray]:
    """Numbers given with -i fill their input, sized by infercore.inputs' rule from the arrays given."""
    from ..inputs import as_feed, resolve_shapes

    arrays = {k: v.shape for k, v in feeds.items() if isinstance(v, np.ndarray)}
    if len(arrays) == len(feeds):
        return feeds
    shapes, _ = resolve_shapes(specs, given=arrays)
    out = dict(feeds)
    for spec in specs:
        if not isinstance(feeds[spec.name], np.ndarray):
            a, _ = as_feed(spec, feeds[spec.name])
            out[spec.name] = np.full(shapes[spec.name], a, spec.dtype) if spec.rank else a
    return out


def _describe(name: str, a: Any) -> dict[str, Any]:
    stats = {k: v if math.isfinite(v) else None for k, v in _stats(a).items()}  # JSON has no NaN
    return {"name": name, "dtype": str(a.dtype), "shape": list(a.shape), **stats}


def _stats(a: Any) -> dict[str, float]:
    """min, max, mean of a numeric output (none for strings or an empty one)."""
    if a.dtype.kind in "fiub" and a.size:
        return {"min": float(a.min()), "max": float(a.max()), "mean": float(a.astype(np.float64).mean())}
    return {}
