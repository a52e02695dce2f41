"""Digits CNN: INT8 (ONNX Runtime, static Q/DQ) against fp32, accuracy and speed at batch 64, one run.

    python benchmarks/digits.py [--quick] [--json results/digits.json] [--retrain]

Trains a small CNN on scikit-learn's digits with torch 2.13.0 CPU (seconds; cached afterwards),
exports it to ONNX, calibrates on 512 training images through ``ic.calibrate`` and reports the
held-out accuracy of both models and their latency at batch 64. The speed ratio is measured twice
in the same run: by the calibration report (infercore Engines) and by raw ONNX Runtime sessions.
Done when: INT8 accuracy within 1 point of fp32 and INT8 >= 1.5x faster.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import infercore as ic
from _common import interleaved, machine, write_json
from infercore.quantize import calibrate
from infercore.testing import digits

BATCH = 64


def raw_ort_ratio(fp32: Path, int8: Path, x: np.ndarray, threads: int | None, rounds: int) -> dict[str, Any]:
    """The same ratio with plain onnxruntime sessions: one call per round, rounds alternating, medians."""
    import onnxruntime as ort

    def session(p: Path) -> Any:
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = threads
        return ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"])

    a, b = session(fp32), session(int8)
    feeds = {digits.INPUT: x}
    t = interleaved({"fp32": lambda: a.run(None, feeds), "int8": lambda: b.run(None, feeds)}, calls=1,
                    rounds=rounds, warmup=5)  # fmt: skip
    return {"fp32_ms": t["fp32"]["median_ns"] / 1e6, "int8_ms": t["int8"]["median_ns"] / 1e6,
            "speedup": t["fp32"]["median_ns"] / t["int8"]["median_ns"], "rounds": rounds}  # fmt: skip


def run_digits(quick: bool = False, retrain: bool = False, threads: int | None = None) -> dict[str, Any]:
    if retrain:
        import tempfile

        case = digits.digits_cnn(directory=Path(tempfile.mkdtemp(prefix="digits-")))
    else:
        case = digits.digits_cnn()
    res = calibrate(
        case.path, case.batches(case.x_train[:512], BATCH), eval_data=(case.x_test, case.y_test),
        metric="accuracy", max_drop=0.01, batch_size=BATCH, threads=threads, timing_s=2.0 if quick else 6.0,
    )  # fmt: skip
    r = res.report
    raw = raw_ort_ratio(case.path, res.artifact_path, case.x_test[:BATCH], threads, 60 if quick else 200)
    out = {
        "model": "digits CNN (conv32-conv64-pool-conv128-fc128-fc10), trained here",
        "threads": threads,
        "train_samples": len(case.y_train), "test_samples": len(case.y_test), "batch": BATCH,
        "report": r.to_dict(), "raw_ort": raw,
        "done": {"accuracy_within_1pt": r.drop <= 0.01, "speedup_ge_1.5": (r.speedup or 0) >= 1.5},
    }  # fmt: skip
    return out


def print_digits(d: dict[str, Any]) -> None:
    r = d["report"]
    print(
        f"digits ORT INT8 (threads {d['threads'] or 'default'}): accuracy fp32 {100 * r['fp32_score']:.2f}% int8 {100 * r['quantized_score']:.2f}% "
        f"(drop {100 * r['drop']:+.2f} pt); batch {d['batch']}: fp32 {r['fp32_ms']:.2f} ms, "
        f"int8 {r['quantized_ms']:.2f} ms -> {r['speedup']:.2f}x (raw ORT {d['raw_ort']['speedup']:.2f}x)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="shorter timing")
    ap.add_argument("--retrain", action="store_true", help="train a fresh model instead of the cached one")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default="results/digits.json")
    args = ap.parse_args()
    d = run_digits(args.quick, args.retrain, args.threads)
    print_digits(d)
    out = write_json(args.json, {"machine": machine(), "infercore": ic.__version__, "digits": d})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
