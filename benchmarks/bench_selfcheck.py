"""Does ``infercore bench`` tell the truth? Its p50 against a hand-written loop over the raw runtime.

    python benchmarks/bench_selfcheck.py [--quick] [--json results/bench_selfcheck.json]
                                         [--plot results/bench_selfcheck.png]

Cases: MiniLM (seq 128) on ONNX Runtime, OpenVINO f32 and OpenVINO bf16; MediaPipe
hand_landmark_lite (.tflite) on LiteRT and on OpenVINO. For each case, in alternating rounds
(A B, then B A, ...), ``infercore bench`` runs through its real command line (``-o`` to a
temporary file, p50 read back from it) and a plain loop calls the runtime directly, with the same
threads, warmup and duration, timed the same way (``perf_counter_ns`` around each call). The
figure is the median over rounds of the paired ratio bench p50 / raw p50 (each round's two sides
ran back to back, so slow drifts in machine load cancel); the check passes within 10%.
A case whose runtime is not installed is listed as skipped. Exit status 1 when a case disagrees.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import infercore as ic
from infercore.bench import MachineInfo
from infercore.cli import main as cli_main
from infercore.testing import models

TOLERANCE = 0.10
SEQ = 128


# -- the hand-written loops: what a user would write against each runtime -------------------------------
def raw_ort(path: Path, feeds: dict[str, np.ndarray], threads: int) -> Callable[[], object]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return lambda: sess.run(None, feeds)


def raw_openvino(path: Path, feeds: dict[str, np.ndarray], threads: int, hint: str) -> Callable[[], object]:
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(
        str(path), "CPU", {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": threads}
    )
    request = compiled.create_infer_request()
    values = list(feeds.values())
    tensors = []  # shared tensors read these arrays in place: keep both alive with the request
    for i, port in enumerate(compiled.inputs):
        value = next(
            (feeds[n] for n in port.get_names() if n in feeds), values[i] if len(values) == 1 else None
        )
        if value is None:
            raise ValueError(f"no input for OpenVINO port {port.get_names()}")
        tensors.append(ov.Tensor(value, shared_memory=True))
        request.set_input_tensor(i, tensors[-1])
    return lambda: (request.infer(), tensors)


def raw_litert(path: Path, feeds: dict[str, np.ndarray], threads: int) -> Callable[[], object]:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=threads)
    interp.allocate_tensors()
    values = list(feeds.values())
    for i, detail in enumerate(interp.get_input_details()):
        interp.set_tensor(detail["index"], feeds.get(detail["name"], values[i]))
    return interp.invoke


def time_loop(fn: Callable[[], object], warmup_s: float, duration_s: float) -> float:
    """p50 in ms of ``fn``, timed as ``infercore bench`` times: warmup excluded, one timer pair per call."""
    perf = time.perf_counter_ns
    end = perf() + int(warmup_s * 1e9)
    while perf() < end:
        fn()
    samples = []
    end = perf() + int(duration_s * 1e9)
    t1 = 0
    while t1 < end:
        t0 = perf()
        fn()
        t1 = perf()
        samples.append(t1 - t0)
    return float(np.percentile(np.asarray(samples, np.float64) / 1e6, 50))


def bench_p50(
    path: Path,
    backend: str,
    shape_args: list[str],
    threads: int,
    warmup_s: float,
    duration_s: float,
    keep: Path | None,
) -> tuple[float, dict[str, Any]]:
    """p50 in ms from ``infercore bench``'s own JSON, run through its command line."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.json"
        argv = [
            "bench",
            str(path),
            "--backends",
            backend,
            *shape_args,
            "--threads",
            str(threads),
            "--warmup",
            f"{warmup_s}s",
            "--duration",
            f"{duration_s}s",
            "--no-progress",
            "-o",
            str(out),
        ]
        if keep is not None:
            argv += ["--plot", str(keep.with_suffix(".png"))]
        table = io.StringIO()
        with contextlib.redirect_stdout(table), contextlib.redirect_stderr(io.StringIO()):
            code = cli_main(argv)
        report = json.loads(out.read_text())
        if keep is not None:
            keep.write_text(json.dumps(report, indent=2))
            keep.with_suffix(".txt").write_text(table.getvalue())
    result = report["results"][0]
    if code != 0 or result["error"]:
        raise RuntimeError(f"infercore bench {backend} failed (exit {code}): {result['error']}")
    return float(result["latency_ms"]["p50"]), result


def cases(threads: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    out: list[dict[str, Any]] = []
    minilm = models.minilm()
    text = {
        "input_ids": rng.integers(0, 100, (1, SEQ)).astype(np.int64),
        "attention_mask": np.ones((1, SEQ), np.int64),
        "token_type_ids": np.zeros((1, SEQ), np.int64),
    }
    shape = ["--shape", f"sequence={SEQ}"]
    out.append(
        {
            "case": "MiniLM seq128 ort",
            "model": minilm,
            "backend": "ort",
            "shape": shape,
            "raw": lambda: raw_ort(minilm, text, threads),
            "needs": "onnxruntime",
        }
    )
    out.append(
        {
            "case": "MiniLM seq128 openvino f32",
            "model": minilm,
            "backend": "openvino:fp32",
            "shape": shape,
            "raw": lambda: raw_openvino(minilm, text, threads, "f32"),
            "needs": "openvino",
        }
    )
    out.append(
        {
            "case": "MiniLM seq128 openvino bf16",
            "model": minilm,
            "backend": "openvino:bf16",
            "shape": shape,
            "raw": lambda: raw_openvino(minilm, text, threads, "bf16"),
            "needs": "openvino",
        }
    )
    try:
        hand = models.mediapipe("hand_landmark_lite")
    except models.ModelUnavailable as e:
        print(f"hand_landmark_lite unavailable: {e}", file=sys.stderr)
        return out
    image = {"input_1": rng.random((1, 224, 224, 3), dtype=np.float32)}
    out.append(
        {
            "case": "hand_landmark_lite litert",
            "model": hand,
            "backend": "litert",
            "shape": [],
            "raw": lambda: raw_litert(hand, image, threads),
            "needs": "ai_edge_litert",
            "feeds": image,
        }
    )
    out.append(
        {
            "case": "hand_landmark_lite openvino f32",
            "model": hand,
            "backend": "openvino:fp32",
            "shape": [],
            "raw": lambda: raw_openvino(hand, image, threads, "f32"),
            "needs": "openvino",
            "feeds": image,
        }
    )
    return out


def _input_name_fix(case: dict[str, Any]) -> None:
    """The .tflite input is named by the converter; read it rather than guess."""
    if "feeds" not in case:
        return
    with ic.load(case["model"], case["backend"].split(":")[0]) as eng:
        name = eng.inputs[0].name
    value = next(iter(case["feeds"].values()))
    case["feeds"].clear()
    case["feeds"][name] = value


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 rounds of 1 s per side (a smoke run)")
    ap.add_argument("--rounds", type=int, help="alternating rounds per case (default 7, quick 3)")
    ap.add_argument("--duration", type=float, help="measured seconds per side and round (default 3, quick 1)")
    ap.add_argument("--warmup", type=float, help="warmup seconds per side and round (default 1, quick 0.3)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="runtime threads on both sides")
    ap.add_argument("--json", default="results/bench_selfcheck.json")
    ap.add_argument("--plot", default=None, help="bar chart of both sides' p50 (default: beside the JSON)")
    args = ap.parse_args()
    rounds = args.rounds or (3 if args.quick else 7)
    duration = args.duration or (1.0 if args.quick else 3.0)
    warmup = args.warmup or (0.3 if args.quick else 1.0)
    out_json = Path(args.json)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    keep_dir = out_json.with_suffix("")
    keep_dir.mkdir(parents=True, exist_ok=True)

    rows: list[dict[str, Any]] = []
    for case in cases(args.threads):
        try:
            __import__(case["needs"])
        except ImportError:
            rows.append({"case": case["case"], "skipped": f"{case['needs']} is not installed"})
            continue
        try:
            _input_name_fix(case)
            raw_fn = case["raw"]()
        except (ic.InfercoreError, RuntimeError, ValueError) as e:
            rows.append({"case": case["case"], "skipped": f"{type(e).__name__}: {e}"})
            continue
        bench_p50s: list[float] = []
        raw_p50s: list[float] = []
        last: dict[str, Any] = {}
        slug = case["case"].replace(" ", "_").lower()
        for r in range(rounds):
            keep = keep_dir / f"{slug}.json" if r == rounds - 1 else None
            for side in ("bench", "raw") if r % 2 == 0 else ("raw", "bench"):
                if side == "bench":
                    p50, result = bench_p50(
                        case["model"], case["backend"], case["shape"], args.threads, warmup, duration, keep
                    )
                    bench_p50s.append(p50)
                    last = result
                else:
                    raw_p50s.append(time_loop(raw_fn, warmup, duration))
        b, raw = statistics.median(bench_p50s), statistics.median(raw_p50s)
        # each round's two sides ran back to back: their ratio cancels slow drifts in machine load
        ratio = statistics.median(x / y for x, y in zip(bench_p50s, raw_p50s, strict=True))
        rows.append(
            {
                "case": case["case"],
                "backend": case["backend"],
                "model": Path(case["model"]).name,
                "bench_p50_ms": round(b, 4),
                "raw_p50_ms": round(raw, 4),
                "ratio": round(ratio, 4),
                "agree": abs(ratio - 1) <= TOLERANCE,
                "rounds": rounds,
                "bench_p50_rounds_ms": [round(v, 4) for v in bench_p50s],
                "raw_p50_rounds_ms": [round(v, 4) for v in raw_p50s],
                "bench_cv": last.get("latency_ms", {}).get("cv"),
                "bench_warnings": last.get("warnings", []),
                "harness_overhead_us": (last.get("overhead") or {}).get("latency_us"),
            }
        )
        print(
            f"{case['case']:34s} bench p50 {b:8.3f} ms   raw p50 {raw:8.3f} ms   ratio {ratio:.3f}",
            flush=True,
        )

    machine = MachineInfo.collect()
    measured = [r for r in rows if "ratio" in r]
    payload = {
        "benchmark": "bench_selfcheck",
        "schema_version": 1,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine.describe(),
        "loadavg": machine.loadavg,
        "threads": args.threads,
        "warmup_s": warmup,
        "duration_s": duration,
        "rounds": rounds,
        "tolerance": TOLERANCE,
        "rows": rows,
        "all_agree": bool(measured) and all(r["agree"] for r in measured),
    }
    out_json.write_text(json.dumps(payload, indent=2))
    print()
    print(f"{'case':34s} {'bench p50':>10s} {'raw p50':>10s} {'ratio':>7s}  agree (±{TOLERANCE:.0%})")
    for r in rows:
        if "skipped" in r:
            print(f"{r['case']:34s} skipped: {r['skipped']}")
        else:
            print(
                f"{r['case']:34s} {r['bench_p50_ms']:10.3f} {r['raw_p50_ms']:10.3f} {r['ratio']:7.3f}  "
                f"{'yes' if r['agree'] else 'NO'}"
            )
    print(f"\n{machine.describe()}; load average {machine.loadavg}; wrote {out_json}")
    plot = Path(args.plot) if args.plot else out_json.with_suffix(".png")
    if measured:
        _plot(measured, plot, machine.describe())
        print(f"wrote {plot}")
    return 0 if payload["all_agree"] else 1


def _plot(rows: list[dict[str, Any]], path: Path, machine: str) -> None:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return
    fig = Figure(figsize=(9, 1.2 + 0.6 * len(rows)), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ys = np.arange(len(rows))
    ax.barh(ys - 0.2, [r["bench_p50_ms"] for r in rows], 0.4, label="infercore bench p50")
    ax.barh(ys + 0.2, [r["raw_p50_ms"] for r in rows], 0.4, label="hand-written raw loop p50")
    for y, r in zip(ys, rows, strict=True):
        ax.text(
            max(r["bench_p50_ms"], r["raw_p50_ms"]) * 1.02, y, f"{r['ratio']:.3f}", va="center", fontsize=8
        )
    ax.set_yticks(ys, [r["case"] for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel("p50 latency (ms); label: bench / raw")
    ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(f"infercore bench vs raw runtime — {machine}", fontsize=8)
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
