"""Pruning: unstructured against structured, before and after distillation, and with INT8, on
ONNX Runtime and OpenVINO f32 in one run, as ratios against the dense model.

    python benchmarks/prune.py [--quick] [--json results/prune.json] [--plot results/prune.png]

A real training run on this CPU (about 8 minutes in all here, most of it training, on one torch
thread in channels-last memory): a ResNet-style CNN (``infercore.testing.digits.resnet``, widths
32/64/128, the first block at full resolution) trained 4 epochs on scikit-learn's digits upscaled to
32 x 32 so that compute dominates. Rows: dense; unstructured 80% (``torch.nn.utils.prune``, global
L1, fine-tuned 2 epochs with its masks, then made permanent: 80% of the weights are zeros);
structured 30/50/70% (``ic.prune``) before and after 5 epochs of distillation from the dense model
(``ic.distill``); structured 50% distilled + INT8 (``ic.calibrate``: static Q/DQ for ONNX Runtime,
NNCF for OpenVINO). Every model goes through ``ic.convert`` (verified against torch), its accuracy
is measured on each backend, and its speed in 15 paired rounds against the dense model with one
runtime thread (``infercore.optimize.speed``: medians of per-round ratios, so the machine's drift
cancels). A pruning or INT8 row that three rounds in four do not show 1.1x faster, at batch 1 or
at its best batch, is flagged "no speedup".

Done when: structured 50% distilled >= 2x faster than dense at batch 1 on both backends within 1
point of dense accuracy; structured 50% + INT8 >= 3.5x on at least one backend within 1.5 points;
unstructured 80% flagged "no speedup".
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import infercore as ic
from _common import machine, write_json
from infercore.optimize.speed import measure_speed, speed_flag
from infercore.testing import digits

WIDTHS = (32, 64, 128)
RATIOS = (0.3, 0.5, 0.7)
UNSTRUCTURED = 0.8
BACKENDS = ("ort", "openvino")
NAMES = {"ort": "ORT", "openvino": "OV"}


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def unstructured(model: Any, amount: float) -> Any:
    """``torch.nn.utils.prune``: global L1 over every convolution and linear weight; the masks stay
    (as forward pre-hooks) until ``finish_unstructured`` makes them permanent."""
    import torch
    from torch.nn.utils import prune as tprune

    m = copy.deepcopy(model)
    params = [(mod, "weight") for mod in m.modules() if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear))]
    tprune.global_unstructured(params, pruning_method=tprune.L1Unstructured, amount=amount)
    return m


def finish_unstructured(model: Any) -> float:
    """Make the masks permanent; the share of conv/linear weights that are zero."""
    import torch
    from torch.nn.utils import prune as tprune

    zeros = total = 0
    for mod in model.modules():
        if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)) and tprune.is_pruned(mod):
            tprune.remove(mod, "weight")
        if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)):
            zeros += int((mod.weight == 0).sum())
            total += mod.weight.numel()
    return zeros / total


def accuracy(path: Path, backend: str, x: np.ndarray, y: np.ndarray) -> float:
    with ic.load(path, backend) as eng:
        name = eng.outputs[0].name
        logits = np.concatenate([eng.run({eng.inputs[0].name: x[i : i + 64]})[name] for i in range(0, len(x), 64)])
    return float((logits.argmax(axis=1) == y).mean())  # plain numpy: an independent check of the metrics code


def run(quick: bool, threads: int | None = 1) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)  # training: one thread is the fastest on a shared 2-core machine
    started = time.perf_counter()
    x_train, y_train, x_test, y_test = digits.load_split()
    x_train, x_test = digits.upscale(x_train, 32), digits.upscale(x_test, 32)
    epochs, kd_epochs, u_epochs = (3, 2, 1) if quick else (4, 5, 2)
    rounds = 5 if quick else 15
    work = Path(tempfile.mkdtemp(prefix="bench-prune-"))
    example = torch.from_numpy(x_test[:2])

    _log(f"training the dense ResNet {WIDTHS} for {epochs} epochs")
    t0 = time.perf_counter()
    dense = digits.resnet(WIDTHS).to(memory_format=torch.channels_last)  # NHWC: 2-3x faster convolutions on CPU
    ic.distill(dense, None, (x_train, y_train), epochs=epochs, lr=3e-3, progress=False)  # no teacher: plain training
    dense.to(memory_format=torch.contiguous_format).eval()
    train_s = time.perf_counter() - t0
    models: dict[str, Any] = {"dense": dense}
    info: dict[str, dict[str, Any]] = {"dense": {"train_s": round(train_s, 1)}}
    kd = {"lr": 2e-3, "progress": False}

    def recover(student: Any, epochs: int = kd_epochs) -> dict[str, Any]:
        # NHWC memory while training (2-3x faster convolutions on CPU), plain layout again for export
        for m in (student, dense):
            m.to(memory_format=torch.channels_last)
        res = ic.distill(student, dense, (x_train, y_train), epochs, **kd)
        for m in (student, dense):
            m.to(memory_format=torch.contiguous_format)
        return {"distill_s": res.report.seconds, "losses": list(res.report.losses)}

    _log(f"unstructured {UNSTRUCTURED:.0%}: global L1, fine-tuned with its masks for {u_epochs} epochs")
    u = unstructured(dense, UNSTRUCTURED)
    info[f"unstructured {UNSTRUCTURED:.0%}"] = recover(u, u_epochs)
    info[f"unstructured {UNSTRUCTURED:.0%}"]["zero_weights"] = round(finish_unstructured(u), 4)
    models[f"unstructured {UNSTRUCTURED:.0%}"] = u
    for r in RATIOS:
        _log(f"structured {r:.0%}: ic.prune, then ic.distill")
        p = ic.prune(dense, example, ratio=r)
        models[f"structured {r:.0%}"] = p.module
        info[f"structured {r:.0%}"] = {"parameters": p.report.parameter_ratio, "macs": p.report.mac_ratio}
        d = copy.deepcopy(p.module)
        info[f"structured {r:.0%} + distill"] = {**recover(d), "macs": p.report.mac_ratio}
        models[f"structured {r:.0%} + distill"] = d

    _log("converting every model (ic.convert, verified against torch)")
    files: dict[str, Path] = {}
    for i, (label, m) in enumerate(models.items()):
        res = ic.convert(m.eval(), "onnx", (example,), dynamic={"image": {0: "batch"}}, input_names=["image"],
                         output=work / f"{i:02d}.onnx", exporter="torchscript")  # fmt: skip
        files[label] = Path(res.artifact_path)
        info[label]["verified"] = res.report.verdict()
    int8_label = "structured 50% + distill + INT8"
    calib = [{"image": x_train[i : i + 32]} for i in range(0, 512, 32)]
    int8_files: dict[str, Path] = {}
    for backend in BACKENDS:
        _log(f"INT8 for {backend} (ic.calibrate)")
        suffix = ".xml" if backend == "openvino" else ".onnx"
        res_q = ic.calibrate(files["structured 50% + distill"], calib, target=backend, timing_s=0,
                             output=work / f"int8-{backend}{suffix}")  # fmt: skip
        int8_files[backend] = Path(res_q.artifact_path)

    rows: dict[str, dict[str, Any]] = {label: {"info": info.get(label, {})} for label in [*files, int8_label]}
    for backend in BACKENDS:
        _log(f"accuracy and speed on {backend} ({rounds} paired rounds)")
        measured = {**files, int8_label: int8_files[backend]}
        for label, path in measured.items():
            rows[label][f"{backend}_accuracy"] = accuracy(path, backend, x_test, y_test)
        run_ = measure_speed(dict(measured), backend, batches=(1, 32), rounds=rounds, round_s=0.15,
                             threads=threads)  # fmt: skip
        for label in measured:
            sp = run_.models[label]
            dense_row = label == "dense"
            b1 = 1.0 if dense_row else run_.ratio(label, "dense")
            best = 1.0 if dense_row else run_.best_ratio(label, "dense")
            low = 1.0 if dense_row else run_.ratio_low(label, "dense")
            best_low = 1.0 if dense_row else run_.best_ratio_low(label, "dense")
            speed_step = not dense_row and not label.endswith("+ distill")
            rows[label][backend] = {
                "p50_ms": sp.p50_ms, "p99_ms": sp.p99_ms, "best_batch": sp.best_batch,
                "best_items_per_s": sp.best_items_per_s, "x_dense_b1": b1, "x_dense_best": best,
                "x_dense_b1_low": low, "x_dense_best_low": best_low,
                "flag": speed_flag(low, best_low) if speed_step else None,
            }  # fmt: skip
    dense_acc = {b: rows["dense"][f"{b}_accuracy"] for b in BACKENDS}
    s50 = rows["structured 50% + distill"]
    q = rows[int8_label]
    u_row = rows[f"unstructured {UNSTRUCTURED:.0%}"]
    done = {
        "structured50_distilled_2x_both": all(s50[b]["x_dense_b1"] >= 2.0 for b in BACKENDS),
        "structured50_distilled_within_1pt": all(dense_acc[b] - s50[f"{b}_accuracy"] <= 0.01 for b in BACKENDS),
        "structured50_int8_3.5x_one": any(q[b]["x_dense_b1"] >= 3.5 for b in BACKENDS),
        "structured50_int8_within_1.5pt": any(
            q[b]["x_dense_b1"] >= 3.5 and dense_acc[b] - q[f"{b}_accuracy"] <= 0.015 for b in BACKENDS
        ),
        "unstructured_no_speedup": all(u_row[b]["flag"] == "no speedup" for b in BACKENDS),
    }
    return {
        "model": f"ResNet-style CNN {WIDTHS} on digits upscaled to 32x32",
        "train_samples": len(y_train), "test_samples": len(y_test), "epochs": epochs, "distill_epochs": kd_epochs,
        "unstructured_epochs": u_epochs,
        "rounds": rounds, "threads": threads, "rows": rows, "done": done, "seconds": round(time.perf_counter() - started, 1),
    }  # fmt: skip


def table(d: dict[str, Any]) -> str:
    head = ["model", "acc ORT", "acc OV", "ORT p50 b1", "ORT x dense", "ORT x best", "OV p50 b1", "OV x dense",
            "OV x best", "flag"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for label, r in d["rows"].items():
        flagged = [NAMES[b] for b in BACKENDS if r[b]["flag"]]
        flag = f"no speedup ({', '.join(flagged)})" if flagged else ""
        lines.append("| " + " | ".join([
            label, f"{100 * r['ort_accuracy']:.2f}%", f"{100 * r['openvino_accuracy']:.2f}%",
            f"{r['ort']['p50_ms']:.3f} ms", f"{r['ort']['x_dense_b1']:.2f}x", f"{r['ort']['x_dense_best']:.2f}x",
            f"{r['openvino']['p50_ms']:.3f} ms", f"{r['openvino']['x_dense_b1']:.2f}x",
            f"{r['openvino']['x_dense_best']:.2f}x", flag,
        ]) + " |")  # fmt: skip
    return "\n".join(lines)


def plot(d: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(d["rows"])
    fig, ax = plt.subplots(figsize=(11, 4))
    xs = np.arange(len(labels))
    for i, b in enumerate(BACKENDS):
        ax.bar(xs + (i - 0.5) * 0.38, [d["rows"][k][b]["x_dense_b1"] for k in labels], 0.38, label=f"{b} f32")
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xticks(xs, labels, rotation=25, ha="right", fontsize=8)
    ax.set_ylabel("speedup vs dense, batch 1")
    ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer epochs and rounds: figures indicative only")
    ap.add_argument("--json", default="results/prune.json")
    ap.add_argument("--plot", default=None)
    ap.add_argument("--threads", type=int, default=1,
                    help="runtime threads while timing (default 1: on a shared 2-core machine, two threads per "
                         "runtime time the machine's load more than the model; 0: the runtime's default)")  # fmt: skip
    args = ap.parse_args()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = run(args.quick, args.threads or None)
    print(table(d))
    print("done when: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in d["done"].items()))
    print(f"({d['seconds']:.0f} s in all)")
    out = write_json(args.json, {"machine": machine(), "infercore": ic.__version__, "prune": d})
    print(f"wrote {out}")
    if args.plot:
        plot(d, args.plot)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
