"""``infercore run MODEL --input name=file.npy ...``: one inference from files, outputs to .npz."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputSpecError, UsageError


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
    from ..inputs import load_arrays

    feeds: dict[str, np.ndarray] = {}
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
        t0 = time.perf_counter()  # the engine times only every 8th call: time this one here
        out = eng.run(feeds)
        ms = (time.perf_counter() - t0) * 1e3
    for name, value in out.items():
        print(f"{name}: {value.dtype} {list(value.shape)}  {_summary(value)}")
    print(f"latency: {ms:.3f} ms ({eng.backend_name}, one call, the first after loading)")
    if args.output:
        np.savez(args.output, **out)  # type: ignore[arg-type]
        print(f"wrote {args.output}")
    return 0


def _summary(a: Any) -> str:
    if a.dtype.kind in "fiub" and a.size:
        return f"min={a.min():.6g} max={a.max():.6g} mean={a.astype(np.float64).mean():.6g}"
    return ""
