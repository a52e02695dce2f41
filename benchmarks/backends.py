"""Each backend against its own raw runtime, on real models, in one run.

    python benchmarks/backends.py [--quick] [--threads N] [--models a,b] [--rounds N] [--round-s S]
                                  [--json results/backends.json]

For every model and every backend that reads it, four paths are timed in interleaved rounds
(medians of per-round means, so machine noise hits all of them alike):

  raw run     the runtime's convenience call: ORT ``sess.run``, OpenVINO ``compiled_model(feeds)``,
              LiteRT ``set_tensor``/``invoke``/``get_tensor``
  raw best    the runtime's cheapest per-call path: ORT ``run_with_iobinding`` on OrtValues bound
              once, OpenVINO ``request.infer()`` with preset shared ``ov.Tensor``s, LiteRT the same
              set/invoke/get (there is no cheaper public path)
  ic run      ``Engine.run(feeds)``
  ic bound    ``BoundIO.run()`` with the inputs written once

and reported as ``ic run / raw run`` and ``ic bound / raw best``. Every path's outputs are checked
against the others before timing. Same threads and f32 everywhere (OpenVINO's CPU default would
be bf16).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import infercore as ic
from _common import interleaved, machine, write_json
from infercore.inputs import make_feeds
from infercore.testing import models
from infercore.testing.conformance import build_onnx, build_tflite, mlp_case

Feeds = dict[str, np.ndarray]


# -- the models -----------------------------------------------------------------------------------
def _tiny(kind: str) -> Callable[[], Path]:
    def get() -> Path:
        directory = Path(tempfile.mkdtemp(prefix="infercore-bench-"))
        return (build_onnx if kind == "onnx" else build_tflite)(mlp_case(), directory)

    return get


# name -> (path getter, backends, input values, input shapes)
MODELS: dict[str, tuple[Callable[[], Path], tuple[str, ...], dict[str, Any], dict[str, tuple[int, ...]]]] = {
    "tiny-mlp.onnx": (_tiny("onnx"), ("ort", "openvino"), {}, {}),
    "tiny-mlp.tflite": (_tiny("tflite"), ("litert",), {}, {}),
    "minilm": (models.minilm, ("ort", "openvino"), {}, {"input_ids": (1, 128)}),
    "ppocr-det": (models.ppocr_det, ("ort", "openvino"), {}, {"x": (1, 3, 320, 640)}),
    "silero-ifless": (
        lambda: models.silero_vad("ifless"),
        ("ort", "openvino"),
        {"sr": 16000},
        {"input": (1, 512)},
    ),
    "hand_landmark_lite": (lambda: models.mediapipe("hand_landmark_lite"), ("litert", "openvino"), {}, {}),
    "face_detection_short_range": (
        lambda: models.mediapipe("face_detection_short_range"),
        ("litert", "openvino"),
        {},
        {},
    ),
}


# -- raw runtimes: (convenience call, best per-call path, read outputs of the best path) ---------------
def raw_ort(
    path: Path, feeds: Feeds, threads: int
) -> tuple[Callable[[], object], Callable[[], object], Callable[[], list]]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    first = sess.run(names, feeds)
    iob = sess.io_binding()
    keep = []
    for name, a in feeds.items():
        v = ort.OrtValue.ortvalue_from_numpy(a)
        keep.append(v)
        iob.bind_ortvalue_input(name, v)
    outs = [np.empty_like(o) for o in first]
    for name, o in zip(names, outs, strict=True):
        v = ort.OrtValue.ortvalue_from_numpy(o)
        keep.append(v)
        iob.bind_ortvalue_output(name, v)

    def best() -> None:
        sess.run_with_iobinding(iob)

    best.keep = keep  # type: ignore[attr-defined]
    return (lambda: sess.run(names, feeds)), best, lambda: outs


def raw_openvino(
    path: Path, feeds: Feeds, threads: int
) -> tuple[Callable[[], object], Callable[[], object], Callable[[], list]]:
    import openvino as ov

    compiled = ov.Core().compile_model(
        str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads}
    )
    in_names = [p.get_any_name() for p in compiled.inputs]
    ordered = [feeds[n] for n in in_names]
    request = compiled.create_infer_request()
    for i, a in enumerate(ordered):
        request.set_input_tensor(i, ov.Tensor(a, shared_memory=True))
    request.infer()
    outs = [np.empty_like(request.get_output_tensor(i).data) for i in range(len(compiled.outputs))]
    for i, o in enumerate(outs):
        request.set_output_tensor(i, ov.Tensor(o, shared_memory=True))
    convenience_request = compiled.create_infer_request()
    return (lambda: convenience_request.infer(ordered)), request.infer, lambda: outs


def raw_litert(
    path: Path, feeds: Feeds, threads: int
) -> tuple[Callable[[], object], Callable[[], object], Callable[[], list]]:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(str(path), num_threads=threads)
    details = interp.get_input_details()
    for d in details:
        if tuple(d["shape"]) != feeds[d["name"]].shape:
            interp.resize_tensor_input(d["index"], list(feeds[d["name"]].shape))
    interp.allocate_tensors()
    ins = [(d["index"], feeds[d["name"]]) for d in details]
    outs = [d["index"] for d in interp.get_output_details()]
    set_tensor, invoke, get_tensor = interp.set_tensor, interp.invoke, interp.get_tensor
    last: list[list[np.ndarray]] = [[]]

    def call() -> None:
        for i, a in ins:
            set_tensor(i, a)
        invoke()
        last[0] = [get_tensor(o) for o in outs]

    return call, call, lambda: last[0]


RAW = {"ort": raw_ort, "openvino": raw_openvino, "litert": raw_litert}


# -- one model on one backend -----------------------------------------------------------------------
def _calls_for(fn: Callable[[], object], budget_s: float) -> int:
    import time

    t0 = time.perf_counter()
    n = 0
    while time.perf_counter() - t0 < budget_s / 4 or n < 3:
        fn()
        n += 1
    per = (time.perf_counter() - t0) / n
    return max(3, int(budget_s / per))


def bench_one(
    path: Path, backend: str, feeds: Feeds, threads: int, rounds: int, budget_s: float
) -> dict[str, Any]:
    with ic.load(path, backend, threads=threads) as eng:
        raw_run, raw_best, raw_outs = RAW[backend](path, feeds, threads)
        io = eng.bind({k: v.shape for k, v in feeds.items()})
        for k, v in feeds.items():
            io.inputs[k][...] = v
        # the four paths compute the same thing
        ref = eng.run(feeds)
        io.run()
        raw_best()
        for (name, want), raw in zip(ref.items(), raw_outs(), strict=True):
            np.testing.assert_allclose(io.outputs[name], want, rtol=1e-5, atol=1e-5, err_msg=f"bound {name}")
            np.testing.assert_allclose(raw, want, rtol=1e-4, atol=1e-4, err_msg=f"raw {name}")
        calls = _calls_for(raw_best, budget_s)
        cases = {
            "raw run": raw_run,
            "raw best": raw_best,
            "ic run": lambda: eng.run(feeds),
            "ic bound": io.run,
        }
        timing = interleaved(cases, calls=calls, rounds=rounds, warmup=max(3, min(200, calls)))
        io.close()
    us = {name: t["median_ns"] / 1e3 for name, t in timing.items()}
    return {
        "backend": backend,
        "inputs": {k: list(v.shape) for k, v in feeds.items()},
        "calls_per_round": calls,
        "rounds": rounds,
        "us": us,
        "spread_us": {name: [t["min_ns"] / 1e3, t["max_ns"] / 1e3] for name, t in timing.items()},
        "run_ratio": us["ic run"] / us["raw run"],
        "bound_ratio": us["ic bound"] / us["raw best"],
    }


# -- output ---------------------------------------------------------------------------------------
def _fmt_us(v: float) -> str:
    return f"{v:.1f}" if v < 1000 else f"{v / 1000:.2f} ms"


def print_table(results: list[dict[str, Any]]) -> None:
    headers = ["model", "backend", "raw run", "raw best", "ic run", "ic bound", "run/raw", "bound/best"]
    rows = [headers]
    for r in results:
        if "error" in r:
            rows.append([r["model"], r["backend"], "", "", "", "", "", "error"])
            continue
        us = r["us"]
        rows.append(
            [
                r["model"],
                r["backend"],
                _fmt_us(us["raw run"]),
                _fmt_us(us["raw best"]),
                _fmt_us(us["ic run"]),
                _fmt_us(us["ic bound"]),
                f"{r['run_ratio']:.3f}",
                f"{r['bound_ratio']:.3f}",
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(headers))]
    print("per call, µs unless marked (median of interleaved rounds)")
    for j, row in enumerate(rows):
        print(
            "  ".join(
                c.rjust(w) if i >= 2 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if j == 0:
            print("  ".join("-" * w for w in widths))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="few short rounds (for a smoke run, not for figures)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument(
        "--round-s",
        type=float,
        default=None,
        help="seconds of calls per path per round (default 0.3, 0.05 with --quick); on a busy machine, "
        "short rounds and many of them (--round-s 0.02 --rounds 61) interleave finer for µs-scale models",
    )
    p.add_argument("--models", default=None, help=f"comma-separated subset of {', '.join(MODELS)}")
    p.add_argument("--backends", default=None, help="comma-separated subset of backends")
    p.add_argument("--json", type=Path, default=Path("benchmarks/results/backends.json"))
    args = p.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 9)
    budget = args.round_s or (0.05 if args.quick else 0.3)
    names = args.models.split(",") if args.models else list(MODELS)
    only = set(args.backends.split(",")) if args.backends else None
    available = {n for n, info in ic.available_backends().items() if info.available}
    results: list[dict[str, Any]] = []
    for name in names:
        get, backends, values, shapes = MODELS[name]
        try:
            path = get()
        except models.ModelUnavailable as e:
            print(f"{name}: skipped, model unavailable: {e}", file=sys.stderr)
            continue
        runnable = [b for b in backends if b in available and (only is None or b in only)]
        if not runnable:
            continue
        with ic.load(path, backends[0] if backends[0] in available else runnable[0]) as eng:
            # one set of inputs per model, from the first backend's specs (ORT keeps symbolic dim names)
            feeds, _ = make_feeds(eng.inputs, seed=0, values=values, shapes=shapes, metadata=eng.metadata)
        for backend in runnable:
            try:
                r = bench_one(path, backend, feeds, args.threads, rounds, budget)
            except Exception as e:  # one failing pair must not lose the others' figures
                r = {"backend": backend, "error": f"{type(e).__name__}: {e}"}
            results.append({"model": name, **r})
            print(f"  {name} / {backend}: done", file=sys.stderr)
    print_table(results)
    for r in results:
        if "error" in r:
            print(f"{r['model']} / {r['backend']}: {r['error']}")
    ok = [r["bound_ratio"] for r in results if "bound_ratio" in r]
    summary = {
        "bound_ratio_median": statistics.median(ok) if ok else None,
        "bound_ratio_max": max(ok) if ok else None,
    }
    payload = {
        "benchmark": "backends",
        "machine": machine(),
        "threads": args.threads,
        "quick": args.quick,
        "round_s": budget,
        "versions": {n: ic.available_backends()[n].version for n in sorted(available)},
        "results": results,
        "summary": summary,
    }
    out = write_json(args.json, payload)
    print(
        f"\nbound/best: median {summary['bound_ratio_median']}, max {summary['bound_ratio_max']}; JSON: {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
