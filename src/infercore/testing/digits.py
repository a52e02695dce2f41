"""A small CNN trained on scikit-learn's handwritten digits, exported to ONNX: a real model with
real labels for quantization tests and benchmarks, built in seconds on a CPU.

    from infercore.testing import digits
    case = digits.digits_cnn()          # trains once (torch 2.13.0 CPU), then served from the cache
    case.path                           # ONNX, input "image" float32 [batch, 1, 8, 8] -> "logits" [batch, 10]
    case.x_test, case.y_test            # held-out images (float32, scaled to [0, 1]) and labels (int64)
    case.fp32_accuracy                  # accuracy of the exported model on the held-out set (ONNX Runtime)

The split is fixed (seeded), the training deterministic on one thread, so two runs build the same
model up to float rounding. Needs ``torch`` and ``scikit-learn`` (and ``onnx`` for the export).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .models import ModelUnavailable, cache_dir, locked

__all__ = ["DigitsCase", "digits_cnn", "load_split", "train_and_export"]

INPUT = "image"
OUTPUT = "logits"
_ARCH = "conv32-conv64-pool-conv128-fc128-fc10"  # part of the cache key: change it when the model changes


@dataclass(frozen=True)
class DigitsCase:
    """The exported model and its data: train split (for calibration) and held-out split (for eval)."""

    path: Path
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    fp32_accuracy: float

    def batches(self, x: np.ndarray, batch: int = 64) -> list[dict[str, np.ndarray]]:
        """Feed dicts of ``batch`` images each (the last one may be shorter)."""
        return [{INPUT: x[i : i + batch]} for i in range(0, len(x), batch)]


def load_split(
    test_fraction: float = 0.25, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's 1797 digits as float32 [n, 1, 8, 8] in [0, 1] with int64 labels, split with a fixed seed."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise ModelUnavailable("the digits data needs scikit-learn: pip install scikit-learn") from e
    ds = load_digits()
    x = (np.asarray(ds.images, dtype=np.float32) / 16.0).reshape(-1, 1, 8, 8)
    y = np.asarray(ds.target, dtype=np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = round(len(x) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


def train_and_export(path: Path, x: np.ndarray, y: np.ndarray, *, epochs: int = 8, seed: int = 0) -> None:
    """Train the CNN on (x, y) with torch (one thread, seeded) and export it with a dynamic batch axis."""
    try:
        import torch
        from torch import nn
    except ImportError as e:
        raise ModelUnavailable("training the digits CNN needs torch: pip install torch==2.13.0") from e

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        model = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(128 * 4 * 4, 128),
            nn.ReLU(),
            nn.Linear(128, 10),
        )
        opt = torch.optim.Adam(model.parameters(), lr=2e-3)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        gen = torch.Generator().manual_seed(seed)
        model.train()
        for _ in range(epochs):
            for idx in torch.randperm(len(xt), generator=gen).split(64):
                opt.zero_grad()
                loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
                loss.backward()
                opt.step()
        model.eval()
        path.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter, on purpose
            _export(torch, model, path)
    finally:
        torch.set_num_threads(threads)


def _export(torch: Any, model: Any, path: Path) -> None:
    torch.onnx.export(
        model,
        (torch.zeros(1, 1, 8, 8),),
        str(path),
        input_names=[INPUT],
        output_names=[OUTPUT],
        dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )


def _accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = sess.run([OUTPUT], {INPUT: x})[0]
    return float((np.asarray(logits).argmax(axis=1) == y).mean())


def digits_cnn(*, epochs: int = 8, seed: int = 0, directory: Path | None = None) -> DigitsCase:
    """Train (once) and export the digits CNN; later calls load it from the cache."""
    x_train, y_train, x_test, y_test = load_split(seed=seed)
    key = hashlib.sha256(f"{_ARCH}/{epochs}/{seed}/{len(x_train)}".encode()).hexdigest()[:16]
    out_dir = directory or cache_dir() / "models" / "digits"
    path = out_dir / f"digits-cnn-{key}.onnx"
    meta = path.with_suffix(".json")
    with locked(f"digits-{key}"):
        if not (path.exists() and meta.exists()):
            tmp = path.with_suffix(".part.onnx")
            train_and_export(tmp, x_train, y_train, epochs=epochs, seed=seed)
            acc = _accuracy(tmp, x_test, y_test)
            tmp.replace(path)
            meta.write_text(json.dumps({"fp32_accuracy": acc, "epochs": epochs, "seed": seed}))
    info: dict[str, Any] = json.loads(meta.read_text())
    return DigitsCase(path, x_train, y_train, x_test, y_test, float(info["fp32_accuracy"]))
