"""Per-call overhead of infercore against raw ONNX Runtime, measured in one run.

    python benchmarks/overhead.py [--quick] [--json results/overhead.json]

Cases, on a tiny model (1x16 Add) and on a real model (PP-OCRv4 text detection):
  raw sess.run                     vs  Engine.run
  raw run_with_iobinding, pre-bound vs  BoundIO.run
plus bytes allocated per steady-state bound run (tracemalloc) and `import infercore` time.
Ratios are medians of interleaved rounds, so machine noise hits both sides alike.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import infercore as ic
from _common import interleaved, machine, paired, write_json


def tiny_model(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    b = numpy_helper.from_array(np.ones((1, 16), np.float32), "b")
    g = helper.make_graph(
        [helper.make_node("Add", ["x", "b"], ["y"])],
        "add",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])],
        [b],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    onnx.save(m, str(path))
    return path


def measure(
    path: Path, feeds: dict[str, np.ndarray], threads: int, calls: int, rounds: int, alloc_runs: int
) -> dict:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    # raw pre-bound IOBinding: OrtValues made once, outputs preallocated
    out_names = [o.name for o in sess.get_outputs()]
    eng = ic.load(path, threads=threads)
    shapes = {k: v.shape for k, v in feeds.items()}
    io = eng.bind(shapes)
    for k, v in feeds.items():
        io.inputs[k][...] = v
    io.run()  # outputs with dynamic dimensions get their bound arrays on the first run
    iob = sess.io_binding()
    keep = []
    for k, v in feeds.items():
        arr = np.ascontiguousarray(v)
        ov = ort.OrtValue.ortvalue_from_numpy(arr)
        keep.append((arr, ov))
        iob.bind_ortvalue_input(k, ov)
    for name in out_names:
        arr = np.empty_like(io.outputs[name])
        ov = ort.OrtValue.ortvalue_from_numpy(arr)
        keep.append((arr, ov))
        iob.bind_ortvalue_output(name, ov)
    sess.run_with_iobinding(iob)
    for name, (arr, _) in zip(out_names, keep[len(feeds) :], strict=True):
        io.run()
        assert np.array_equal(arr, io.outputs[name]), "bound path disagrees with raw IOBinding"

    cases = {
        "raw sess.run": lambda: sess.run(None, feeds),
        "Engine.run": lambda: eng.run(feeds),
        "raw IOBinding": lambda: sess.run_with_iobinding(iob),
        "BoundIO.run": io.run,
    }
    # a fast model: rounds of many calls, alternating; a slow one: single calls, cycling
    t = interleaved(cases, calls=calls, rounds=rounds) if calls > 100 else paired(cases, calls=calls * rounds)
    # bytes allocated (and kept) per steady-state bound run: both snapshots are taken while
    # tracing, after warm runs, so objects replaced in place (counters) cancel out
    tracemalloc.start()
    for _ in range(max(10, alloc_runs // 10)):
        io.run()
    before = tracemalloc.take_snapshot()
    n = alloc_runs
    for _ in range(n):
        io.run()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    stats = after.compare_to(before, "filename")
    net_bytes = sum(s.size_diff for s in stats if "tracemalloc" not in s.traceback[0].filename)
    net_blocks = sum(s.count_diff for s in stats if "tracemalloc" not in s.traceback[0].filename)
    io.close()
    eng.close()
    return {
        "timings": t,
        "run_ratio": t["Engine.run"]["median_ns"] / t["raw sess.run"]["median_ns"],
        "bound_ratio": t["BoundIO.run"]["median_ns"] / t["raw IOBinding"]["median_ns"],
        "bound_alloc_bytes_per_run": net_bytes / n,
        "bound_alloc_blocks_retained": net_blocks,
        "bound_alloc_runs": n,
    }


def import_time_ms(repeats: int) -> float:
    code = "import time; t=time.perf_counter(); import infercore; print((time.perf_counter()-t)*1e3)"
    times = [float(subprocess.check_output([sys.executable, "-c", code], text=True)) for _ in range(repeats)]
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    ap.add_argument("--json", default="results/overhead.json")
    ap.add_argument("--no-real", action="store_true", help="skip the real model")
    args = ap.parse_args()
    rounds = 5 if args.quick else 21
    results: dict = {"machine": machine(), "onnxruntime": __import__("onnxruntime").__version__}
    with tempfile.TemporaryDirectory() as tmp:
        path = tiny_model(Path(tmp) / "add.onnx")
        x = np.ones((1, 16), np.float32)
        results["tiny"] = measure(
            path, {"x": x}, threads=1, calls=2000 if args.quick else 5000, rounds=rounds, alloc_runs=5000
        )
    if not args.no_real:
        from infercore.testing import models

        det = models.ppocr_det()
        img = models.text_image("infercore overhead", height=320, width=640).astype(np.float32) / 255.0
        xr = np.ascontiguousarray(((img - 0.5) / 0.5).transpose(2, 0, 1)[None], dtype=np.float32)
        results["real"] = {
            "model": det.name,
            "shape": list(xr.shape),
            **measure(
                det, {"x": xr}, threads=2, calls=3 if args.quick else 10, rounds=rounds,
                alloc_runs=30 if args.quick else 100,
            ),
        }
    results["import_infercore_ms"] = import_time_ms(3 if args.quick else 11)

    rows = []
    for key in ("tiny", "real"):
        if key not in results:
            continue
        r = results[key]
        t = r["timings"]
        rows.append((key, "raw sess.run", t["raw sess.run"]["median_ns"], None))
        rows.append((key, "Engine.run", t["Engine.run"]["median_ns"], r["run_ratio"]))
        rows.append((key, "raw IOBinding (pre-bound)", t["raw IOBinding"]["median_ns"], None))
        rows.append((key, "BoundIO.run", t["BoundIO.run"]["median_ns"], r["bound_ratio"]))
    print(f"{'model':<6} {'path':<28} {'median per call':>16} {'vs raw':>8}")
    for model, name, ns, ratio in rows:
        val = f"{ns / 1e3:.2f} us" if ns < 1e6 else f"{ns / 1e6:.3f} ms"
        print(f"{model:<6} {name:<28} {val:>16} {'' if ratio is None else f'{ratio:.3f}x':>8}")
    for key in ("tiny", "real"):
        if key in results:
            print(
                f"{key}: bytes allocated per steady-state bound run: {results[key]['bound_alloc_bytes_per_run']:.2f}"
                f" (blocks retained after {results[key]['bound_alloc_runs']} runs: "
                f"{results[key]['bound_alloc_blocks_retained']})"
            )
    print(
        f"import infercore: {results['import_infercore_ms']:.1f} ms (median, fresh interpreter, numpy included)"
    )
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    out = write_json(args.json, results)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
