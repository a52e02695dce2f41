"""A small CNN trained on scikit-learn's handwritten digits, exported to ONNX: a real model with
real labels for quantization tests and benchmarks, built in seconds on a CPU.

    from infercore.testing import digits
    case = digits.digits_cnn()          # trains once (torch 2.13.0 CPU), then served from the cache
    case.path                           # ONNX, input "image" float32 [batch, 1, 8, 8] -> "logits" [batch, 10]
    case.x_test, case.y_test            # held-out images (float32, scaled to [0, 1]) and labels (int64)
    case.fp32_accuracy                  # accuracy of the exported model on the held-out set (ONNX Runtime)

    model = digits.digits_module()      # the same CNN as a trained torch module (cached state dict)
    net = digits.resnet((16, 32, 64), grouped=True)   # a ResNet-style CNN: residual, grouped, depthwise
    x32 = digits.upscale(case.x_train, 32)            # the images at 32 x 32, so compute dominates

The split is fixed (seeded), the training deterministic on one thread, so two runs build the same
model up to float rounding. Needs ``torch`` and ``scikit-learn`` (and ``onnx`` for the export).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .models import ModelUnavailable, cache_dir, locked

__all__ = [
    "DigitsCase",
    "build_cnn",
    "digits_cnn",
    "digits_module",
    "load_split",
    "resnet",
    "train",
    "train_and_export",
    "upscale",
]

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


def _torch() -> Any:
    try:
        import torch
    except ImportError as e:
        raise ModelUnavailable("the digits models need torch: pip install torch==2.13.0") from e
    return torch


def build_cnn() -> Any:
    """The digits CNN, untrained: conv32-conv64-pool-conv128-fc128-fc10 on [batch, 1, 8, 8]."""
    nn = _torch().nn
    return nn.Sequential(
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


def train(model: Any, x: np.ndarray, y: np.ndarray, *, epochs: int = 8, seed: int = 0, lr: float = 2e-3,
          batch_size: int = 64, channels_last: bool = False) -> Any:  # fmt: skip
    """Train ``model`` on (x, y) with Adam and cross entropy, on one thread (deterministic, and the
    fastest on a shared 2-core machine); returned in eval mode. ``channels_last``: NHWC memory,
    2-3x faster for convolutions on CPU."""
    torch = _torch()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        gen = torch.Generator().manual_seed(seed)
        model.train()
        for _ in range(epochs):
            for idx in torch.randperm(len(xt), generator=gen).split(batch_size):
                if len(idx) < 2:
                    continue  # batch norm needs two samples
                xb = xt[idx].contiguous(memory_format=torch.channels_last) if channels_last else xt[idx]
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(model(xb), yt[idx])
                loss.backward()
                opt.step()
        model.eval()
        if channels_last:
            model = model.to(memory_format=torch.contiguous_format)
        return model
    finally:
        torch.set_num_threads(threads)


def train_and_export(path: Path, x: np.ndarray, y: np.ndarray, *, epochs: int = 8, seed: int = 0) -> None:
    """Train the CNN on (x, y) with torch (one thread, seeded) and export it with a dynamic batch axis."""
    torch = _torch()
    model = train(build_cnn_seeded(seed), x, y, epochs=epochs, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter, on purpose
        _export(torch, model, path)


def build_cnn_seeded(seed: int) -> Any:
    _torch().manual_seed(seed)
    return build_cnn()


def digits_module(*, epochs: int = 8, seed: int = 0, directory: Path | None = None) -> Any:
    """The digits CNN as a trained torch module (eval mode): trained once, then its state dict is
    read from the cache (``torch.load(weights_only=True)``)."""
    torch = _torch()
    x_train, y_train, _, _ = load_split(seed=seed)
    key = hashlib.sha256(f"{_ARCH}/{epochs}/{seed}/{len(x_train)}/torch".encode()).hexdigest()[:16]
    path = (directory or cache_dir() / "models" / "digits") / f"digits-cnn-{key}.pt"
    model = build_cnn_seeded(seed)
    with locked(f"digits-{key}-torch"):
        if not path.exists():
            trained = train(model, x_train, y_train, epochs=epochs, seed=seed)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".part")
            torch.save(trained.state_dict(), tmp)
            tmp.replace(path)
    model.load_state_dict(torch.load(path, weights_only=True))
    return model.eval()


def upscale(x: np.ndarray, size: int = 32) -> np.ndarray:
    """Images [n, c, h, w] resized to ``size`` x ``size`` (bilinear), float32."""
    torch = _torch()
    t = torch.nn.functional.interpolate(torch.from_numpy(np.ascontiguousarray(x)), size=(size, size),
                                        mode="bilinear", align_corners=False)  # fmt: skip
    return np.ascontiguousarray(t.numpy(), dtype=np.float32)


def resnet(widths: tuple[int, ...] = (32, 64, 128), *, in_channels: int = 1, classes: int = 10,
           grouped: bool = False, seed: int = 0) -> Any:  # fmt: skip
    """A ResNet-style CNN, untrained: a stem, one residual block per width (the first at full
    resolution, then stride 2, a 1x1 projection on the shortcut), global average pooling and a
    linear classifier. ``grouped``: the first block's first convolution is grouped (4 groups) and a
    depthwise-separable residual block (depthwise 3x3, pointwise 1x1) follows it."""
    torch = _torch()
    nn, F = torch.nn, torch.nn.functional

    class Block(nn.Module):  # type: ignore[name-defined]
        def __init__(self, cin: int, cout: int, stride: int = 1, groups: int = 1) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, groups=groups, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.shortcut = (
                nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                if stride != 1 or cin != cout else None
            )  # fmt: skip

        def forward(self, x: Any) -> Any:
            y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
            return F.relu(y + (x if self.shortcut is None else self.shortcut(x)))

    class Separable(nn.Module):  # type: ignore[name-defined]
        def __init__(self, c: int) -> None:
            super().__init__()
            self.depthwise = nn.Conv2d(c, c, 3, 1, 1, groups=c, bias=False)
            self.bn1 = nn.BatchNorm2d(c)
            self.pointwise = nn.Conv2d(c, c, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(c)

        def forward(self, x: Any) -> Any:
            return F.relu(x + self.bn2(self.pointwise(F.relu(self.bn1(self.depthwise(x))))))

    class ResNet(nn.Module):  # type: ignore[name-defined]
        def __init__(self) -> None:
            super().__init__()
            w0 = widths[0]
            self.stem = nn.Sequential(nn.Conv2d(in_channels, w0, 3, 1, 1, bias=False), nn.BatchNorm2d(w0), nn.ReLU())
            blocks: list[Any] = [Block(w0, w0, groups=4 if grouped else 1)]
            if grouped:
                blocks.append(Separable(w0))
            for cin, cout in itertools.pairwise(widths):
                blocks.append(Block(cin, cout, stride=2))
            self.blocks = nn.Sequential(*blocks)
            self.fc = nn.Linear(widths[-1], classes)

        def forward(self, image: Any) -> Any:
            x = self.blocks(self.stem(image))
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    torch.manual_seed(seed)
    return ResNet()


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
