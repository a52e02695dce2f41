"""``infercore run MODEL --input name=file.npy ...``: one inference from files, outputs to .npz."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", help="run a model once on inputs from .npy/.npz files")
    p.add_argument("model", type=Path)
    p.add_argument("--input", "-i", action="append", default=[], metavar="NAME=FILE.npy",
                   help="an input from a .npy file (repeat per input); FILE.npz alone gives all inputs by name")
    p.add_argument("--output", "-o", type=Path, help="write the outputs to this .npz file")
    p.add_argument("--backend", help="backend (default: from the file suffix)")
    p.add_argument("--device", help="device (default: the backend's, cpu or cuda:0)")
    p.add_argument("--precision")
    p.add_argument("--threads", type=int)
    p.set_defaults(func=run)


def _read_inputs(specs: list[str]) -> dict[str, np.ndarray]:
    feeds: dict[str, np.ndarray] = {}
    for item in specs:
        name, sep, file = item.partition("=")
        if not sep:
            path = Path(name)
            if path.suffix != ".npz":
                raise ValueError(f"--input {item!r}: expected NAME=FILE.npy or a FILE.npz holding every input")
            with np.load(path, allow_pickle=False) as z:
                feeds.update({k: z[k] for k in z.files})
            continue
        path = Path(file)
        if not path.exists():
            raise ValueError(f"--input {name}: file not found: {path}")
        feeds[name] = np.load(path, allow_pickle=False)
    return feeds


def run(args: argparse.Namespace) -> int:
    from .. import load

    feeds = _read_inputs(args.input)
    with load(args.model, backend=args.backend, device=args.device, precision=args.precision,
              threads=args.threads) as eng:
        out = eng.run(feeds)
        stats = eng.stats
    for name, value in out.items():
        print(f"{name}: {value.dtype} {list(value.shape)}  {_summary(value)}")
    print(f"latency: {stats.p50_ms:.3f} ms ({eng.backend_name})")
    if args.output:
        np.savez(args.output, **out)  # type: ignore[arg-type]
        print(f"wrote {args.output}")
    return 0


def _summary(a: Any) -> str:
    if a.dtype.kind in "fiub" and a.size:
        return f"min={a.min():.6g} max={a.max():.6g} mean={a.astype(np.float64).mean():.6g}"
    return ""
