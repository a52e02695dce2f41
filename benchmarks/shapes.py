"""A second shape: a Batcher whose batch size was measured on one shape serves another.

    python benchmarks/shapes.py [--quick] [--json results/shapes.json]

MiniLM (ONNX Runtime) behind a ``Batcher`` with no arguments but the engine factory: it probes
its layout, and its first request's shape is measured again (the second look). Two batchers,
in the same process, run one after the other in alternating rounds:
  measured  the first request at ``--first`` tokens (8: batch 32 is MiniLM's best there), then
            ``--callers`` threads at ``--seq`` tokens: batched within the measured batch's time
            (``infercore.batching.pace``)
  native    the first request at ``--seq`` tokens, then the same callers: the batch size measured
            on the shape it serves, the reference
Each caller sends one request and waits for it before the next. Reported per batcher: items/s and
p50/p99 per round, their medians, the batch sizes it ran, and the ratios measured/native within a
round (then their median). Target: items/s ratio >= 0.95, p99 ratio <= 1.05.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import infercore as ic
from _common import machine, write_json
from infercore.batching import Batcher
from infercore.testing import models


def tokens(seq: int) -> dict[str, np.ndarray]:
    """One real sentence's MiniLM inputs, cut or padded to ``seq`` tokens."""
    from pydoc_data.topics import topics

    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(models.minilm_tokenizer()))
    tok.enable_truncation(seq)
    tok.enable_padding(length=seq)
    enc = tok.encode(" ".join(" ".join(topics.values()).split()[:400]))
    ids = np.array([enc.ids], np.int64)
    return {"input_ids": ids, "attention_mask": np.array([enc.attention_mask], np.int64),
            "token_type_ids": np.zeros_like(ids)}  # fmt: skip


def settle(b: Batcher, first: dict[str, np.ndarray], timeout: float = 60.0) -> dict[str, Any]:
    """Run ``first`` once and wait for the second look it brings (if the probe guessed)."""
    b.run(first)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        lay = b.layout
        look = (lay.probe.get("reprobe") if lay is not None else None) or {}
        if look.get("outcome") == "done" or lay is None or not lay.probe.get("shapes_guessed"):
            return look
        time.sleep(0.05)
    raise RuntimeError(f"no second look within {timeout} s: {b.layout}")


def closed_loop(b: Batcher, feeds: dict[str, np.ndarray], callers: int, seconds: float) -> dict[str, Any]:
    lat: list[float] = []
    lock = threading.Lock()
    before = {k: v for k, v in b.metrics.batch_sizes.items()}
    stop = time.perf_counter() + seconds

    def caller() -> None:
        mine = []
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            b.run(feeds)
            mine.append(time.perf_counter() - t0)
        with lock:
            lat.extend(mine)

    threads = [threading.Thread(target=caller) for _ in range(callers)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.perf_counter() - t0
    ms = np.array(lat) * 1e3
    sizes = {k: v - before.get(k, 0) for k, v in b.metrics.batch_sizes.items() if v - before.get(k, 0)}
    return {"items_per_s": len(lat) / took, "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)), "batch_sizes": sizes}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--first", type=int, default=8, help="tokens of the first request (the measured shape)")
    ap.add_argument("--seq", type=int, default=128, help="tokens of the callers' requests")
    ap.add_argument("--callers", type=int, default=32)
    ap.add_argument("--duration", type=float, default=8.0, help="seconds per batcher per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="2 rounds of 3 s")
    ap.add_argument("--json", default="results/shapes.json")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.duration = 2, 3.0
    path = models.minilm()
    feeds, first = tokens(args.seq), tokens(args.first)
    batchers: dict[str, Batcher] = {}
    report: dict[str, Any] = {"machine": machine(), "args": vars(args), "batchers": {}, "rounds": []}
    try:
        for name, start in (("measured", first), ("native", feeds)):
            b = batchers[name] = Batcher(lambda threads: ic.load(path, threads=threads), name=name)
            look = settle(b, start)
            m = b.metrics
            report["batchers"][name] = {"layout": b.layout.describe() if b.layout else None,
                                        "measured_batch": look.get("batch_size"), "shapes": look.get("shapes"),
                                        "batch_budget_ms": m.batch_budget_ms}  # fmt: skip
            print(f"{name}: {report['batchers'][name]}")
            closed_loop(b, feeds, args.callers, 1.0)  # warm: the callers' shape bound and timed
        for r in range(args.rounds):
            row: dict[str, Any] = {}
            for name in list(batchers)[r % 2 :] + list(batchers)[: r % 2]:
                row[name] = closed_loop(batchers[name], feeds, args.callers, args.duration)
            row["items_ratio"] = row["measured"]["items_per_s"] / row["native"]["items_per_s"]
            row["p99_ratio"] = row["measured"]["p99_ms"] / row["native"]["p99_ms"]
            report["rounds"].append(row)
            print(f"round {r + 1}: " + " | ".join(
                f"{n} {row[n]['items_per_s']:.1f} items/s p50 {row[n]['p50_ms']:.1f} p99 {row[n]['p99_ms']:.1f} ms "
                f"batches {row[n]['batch_sizes']}" for n in batchers))  # fmt: skip
    finally:
        for b in batchers.values():
            b.close()
    med = lambda k: float(np.median([r[k] for r in report["rounds"]]))  # noqa: E731
    report["items_ratio"], report["p99_ratio"] = med("items_ratio"), med("p99_ratio")
    report["target_met"] = report["items_ratio"] >= 0.95 and report["p99_ratio"] <= 1.05
    print(f"measured / native, median of paired rounds: items/s {report['items_ratio']:.3f}, "
          f"p99 {report['p99_ratio']:.3f} (target >= 0.95, <= 1.05: {'met' if report['target_met'] else 'not met'})")
    print(f"wrote {write_json(args.json, report)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
