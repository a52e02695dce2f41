"""Input screening on the digits CNN: ROC AUC of the screening score, clean held-out digits against
adversarial and out-of-distribution inputs.

    python benchmarks/screening.py [--json results/screening.json]

The model is ``infercore.testing.digits`` (a CNN trained on scikit-learn's 8x8 digits, exported to
ONNX); its profile is built from the training split with labels; the clean set is the held-out
split (449 digits the profile never saw). Perturbed sets, each the same size:

- FGSM at eps 0.05, 0.1, 0.2 (pixels in [0, 1]): ``x + eps * sign(grad_x cross_entropy)``, clipped
  to [0, 1], with the gradients of the model's own weights: the ONNX initializers loaded into the
  same torch architecture (checked against ONNX Runtime to 1e-4 first);
- uniform noise in [0, 1];
- another dataset: 8x8 patches of the two photographs scikit-learn ships (load_sample_images),
  grey, block-averaged from 32x32, scaled to [0, 1];
- rendered letters: A-Z and a-z drawn with Pillow's default font, scaled to 8x8.

Scores: the inputs only (what ``screen:`` checks before running the model by default), the
outputs only (logits and probabilities of the classifier), and both. The AUC is the probability
that a perturbed input scores higher than a clean one (0.5: no better than chance). Also: the
share of clean held-out digits flagged at thresholds 2 and 3, and of each perturbed set at 3.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import infercore as ic
from _common import machine, write_json
from infercore import metrics
from infercore.monitor import Profile, Screen
from infercore.testing import digits


def torch_model(path: Path) -> Any:
    """The digits CNN in torch with the exported model's own weights."""
    import onnx
    import torch
    from onnx import numpy_helper
    from torch import nn

    model = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(128 * 4 * 4, 128), nn.ReLU(),
        nn.Linear(128, 10),
    )
    weights = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}
    state = {k: torch.from_numpy(np.array(v)) for k, v in weights.items()}
    model.load_state_dict(state)
    return model.eval()


def fgsm(model: Any, x: np.ndarray, y: np.ndarray, eps: float) -> np.ndarray:
    import torch

    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(model(xt), torch.from_numpy(y))
    loss.backward()
    assert xt.grad is not None
    return np.clip(x + eps * np.sign(xt.grad.numpy()), 0.0, 1.0).astype(np.float32)


def photo_patches(n: int, rng: np.random.Generator) -> np.ndarray:
    from sklearn.datasets import load_sample_images

    out = []
    for img in load_sample_images().images:
        grey = np.asarray(img, dtype=np.float32).mean(axis=2) / 255.0
        for _ in range(n // 2 + 1):
            r = int(rng.integers(0, grey.shape[0] - 32))
            c = int(rng.integers(0, grey.shape[1] - 32))
            out.append(grey[r : r + 32, c : c + 32].reshape(8, 4, 8, 4).mean(axis=(1, 3)))
    return np.stack(out[:n])[:, None].astype(np.float32)


def letters(n: int) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    chars = [chr(c) for c in range(ord("A"), ord("Z") + 1)] + [chr(c) for c in range(ord("a"), ord("z") + 1)]
    out = []
    for ch in chars:
        im = Image.new("L", (16, 16), 0)
        ImageDraw.Draw(im).text((3, 1), ch, fill=255, font=font)
        box = im.getbbox() or (0, 0, 16, 16)
        side = max(box[2] - box[0], box[3] - box[1], 1)
        crop = im.crop((box[0], box[1], box[0] + side, box[1] + side)).resize((6, 6), Image.BILINEAR)
        canvas = np.zeros((8, 8), np.float32)
        canvas[1:7, 1:7] = np.asarray(crop, np.float32) / 255.0
        out.append(canvas)
    reps = int(np.ceil(n / len(out)))
    return np.stack((out * reps)[:n])[:, None].astype(np.float32)


def auc(clean: np.ndarray, other: np.ndarray) -> float:
    scores = np.concatenate([clean, other])
    scores = np.where(np.isfinite(scores), scores, 1e9)
    labels = np.concatenate([np.zeros(clean.size, np.int64), np.ones(other.size, np.int64)])
    return metrics.roc_auc(scores[:, None], labels)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", default="results/screening.json")
    ap.add_argument("--quick", action="store_true", help="accepted for run_all.py; the run is already short")
    args = ap.parse_args()
    t0 = time.time()
    case = digits.digits_cnn()
    profile = Profile.build(case.path, (case.x_train, case.y_train))
    engine = ic.load(case.path)
    model = torch_model(case.path)
    import torch

    with torch.no_grad():
        gap = float(np.abs(model(torch.from_numpy(case.x_test)).numpy() - engine.run({"image": case.x_test})["logits"]).max())
    assert gap < 1e-4, f"the torch copy disagrees with the exported model by {gap}"
    rng = np.random.default_rng(0)
    n = len(case.x_test)
    sets: dict[str, np.ndarray] = {}
    for eps in (0.05, 0.1, 0.2):
        sets[f"FGSM eps {eps}"] = fgsm(model, case.x_test, case.y_test, eps)
    sets["uniform noise"] = rng.uniform(0, 1, case.x_test.shape).astype(np.float32)
    sets["photo patches"] = photo_patches(n, rng)
    sets["rendered letters"] = letters(n)
    screens = {
        "inputs": Screen(profile, tensors=["image"]),
        "outputs": Screen(profile, tensors=["logits"]),
        "inputs+outputs": Screen(profile, tensors=["image", "logits"]),
    }

    def scores(x: np.ndarray) -> dict[str, np.ndarray]:
        out = engine.run({"image": x})
        tensors = {"image": x, **out}
        return {k: s.scores(tensors) for k, s in screens.items()}

    clean = scores(case.x_test)
    report: dict[str, Any] = {
        "machine": machine(),
        "model": "infercore.testing.digits CNN",
        "clean_accuracy": float((engine.run({"image": case.x_test})["logits"].argmax(1) == case.y_test).mean()),
        "profile_samples": profile.samples,
        "clean": {k: {"flagged_at_2": float((v >= 2).mean()), "flagged_at_3": float((v >= 3).mean())}
                  for k, v in clean.items()},
        "sets": {},
    }
    print(f"digits CNN: {n} clean held-out digits, accuracy {report['clean_accuracy']:.3f}; profile from "
          f"{profile.samples} training digits")
    for k, v in report["clean"].items():
        print(f"  clean flagged ({k}): {v['flagged_at_2']:.1%} at threshold 2, {v['flagged_at_3']:.1%} at 3")
    print(f"  {'set':18s} {'model acc':>9s}  " + "  ".join(f"{k + ' AUC':>18s}" for k in screens)
          + "   flagged at 3 (inputs+outputs)")
    for name, x in sets.items():
        s = scores(x)
        acc = None
        if name.startswith("FGSM"):
            acc = float((engine.run({"image": x})["logits"].argmax(1) == case.y_test).mean())
        row = {
            "model_accuracy": acc,
            # FGSM leaves a digit unchanged where the model is so sure that the gradient is exactly 0
            "unchanged": float(np.all(x == case.x_test, axis=(1, 2, 3)).mean()) if name.startswith("FGSM") else None,
            "auc": {k: auc(clean[k], s[k]) for k in screens},
            "flagged_at_3": {k: float((s[k] >= 3).mean()) for k in screens},
        }
        report["sets"][name] = row
        accs = f"{acc:9.3f}" if acc is not None else f"{'-':>9s}"
        print(f"  {name:18s} {accs}  " + "  ".join(f"{row['auc'][k]:18.3f}" for k in screens)
              + f"   {row['flagged_at_3']['inputs+outputs']:.1%}"
              + (f" ({row['unchanged']:.1%} left unchanged: zero gradient)" if row["unchanged"] else ""))
    chance = [f"{name} ({k})" for name, row in report["sets"].items() for k, a in row["auc"].items() if a < 0.6]
    report["no_better_than_chance"] = chance
    if chance:
        print("  no better than chance (AUC < 0.6): " + ", ".join(chance))
    report["seconds"] = round(time.time() - t0, 1)
    print(f"wrote {write_json(args.json, report)}")


if __name__ == "__main__":
    main()
