"""TensorRT: infercore's bound path vs raw TensorRT vs a pageable-memory baseline (GPU only).

    python benchmarks/trt.py model.onnx [--shape x=1,3,224,224 ...] [--runs 200] [--json out.json]

Three ways to run the same engine, in the same process:
- ``raw``: TensorRT by hand, as NVIDIA's samples do: pinned host buffers, cudaMemcpyAsync,
  execute_async_v3, stream synchronize;
- ``bound``: ``eng.bind(...)``; ``io.run()``;
- ``pageable``: the same raw calls from ordinary numpy (pageable) arrays, what a naive wrapper does.
Prints a table of median / p90 latency (ms) and the ratio to raw; writes JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def _times(fn: Any, runs: int) -> list[float]:
    for _ in range(max(5, runs // 10)):
        fn()
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path)
    ap.add_argument("--shape", action="append", default=[], help="name=d0,d1,... for dynamic inputs")
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--json", type=Path, default=Path("benchmarks/results/trt.json"))
    args = ap.parse_args(argv)

    import infercore as ic
    from infercore.backends.tensorrt import cuda
    from infercore.errors import BackendUnavailableError

    try:
        gpu = cuda.device_info(0)
    except BackendUnavailableError as e:
        print(f"benchmarks/trt.py needs an NVIDIA GPU: {e}", file=sys.stderr)
        return 2
    given = {k: tuple(int(d) for d in v.split(",")) for k, v in (s.split("=", 1) for s in args.shape)}
    eng = ic.load(args.model, backend="tensorrt", device="cuda")
    shapes = {s.name: given.get(s.name, s.concrete(1)) for s in eng.inputs}
    rng = np.random.default_rng(0)
    feeds = {s.name: rng.standard_normal(shapes[s.name]).astype(s.dtype) for s in eng.inputs}

    io = eng.bind(shapes)
    for name, a in feeds.items():
        io.inputs[name][...] = a
    results: dict[str, list[float]] = {"bound": _times(io.run, args.runs)}

    backend: Any = eng._backend
    rt = cuda.runtime()
    H2D, D2H = rt.cudaMemcpyKind.cudaMemcpyHostToDevice, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
    for mode in ("raw", "pageable"):
        ctx = backend._engine.create_execution_context()
        stream = cuda.Stream()
        alloc = cuda.pinned_empty if mode == "raw" else (lambda shape, dtype: np.empty(shape, dtype))
        h2d, d2h, keep = [], [], []
        for spec in backend.inputs:
            ctx.set_input_shape(spec.name, shapes[spec.name])
        for spec in (*backend.inputs, *backend.outputs):
            shape = tuple(ctx.get_tensor_shape(spec.name))
            host = alloc(shape, spec.dtype)
            if spec.name in feeds:
                host[...] = feeds[spec.name]
            dev = cuda.DeviceBuffer(host.nbytes)
            keep.append(dev)
            ctx.set_tensor_address(spec.name, dev.ptr)
            (h2d if spec.name in feeds else d2h).append((host, dev.ptr))
        handle = stream.handle

        def run(
            ctx: Any = ctx, h2d: Any = h2d, d2h: Any = d2h, handle: Any = handle, s: Any = stream
        ) -> None:
            for host, ptr in h2d:
                rt.cudaMemcpyAsync(ptr, host.ctypes.data, host.nbytes, H2D, handle)
            ctx.execute_async_v3(int(s))
            for host, ptr in d2h:
                rt.cudaMemcpyAsync(host.ctypes.data, ptr, host.nbytes, D2H, handle)
            rt.cudaStreamSynchronize(handle)

        results[mode] = _times(run, args.runs)
    io.close()
    eng.close()

    raw = statistics.median(results["raw"])
    rows = {
        k: {
            "median_ms": statistics.median(v),
            "p90_ms": float(np.percentile(v, 90)),
            "ratio_vs_raw": statistics.median(v) / raw,
        }
        for k, v in results.items()
    }
    print(f"{'path':10} {'median ms':>10} {'p90 ms':>10} {'vs raw':>8}   ({gpu.name}, {args.model.name})")
    for k, r in rows.items():
        print(f"{k:10} {r['median_ms']:10.4f} {r['p90_ms']:10.4f} {r['ratio_vs_raw']:8.2f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {"gpu": gpu.name, "model": str(args.model), "shapes": shapes, "runs": args.runs, "results": rows},
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
