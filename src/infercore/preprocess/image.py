"""Image preprocessing: decode, resize, letterbox, center-crop, normalize, HWC→CHW, dtype.

Images are HWC ``uint8`` arrays (RGB unless decoded otherwise) until ``Normalize``; every function
takes ``out=`` and writes there (a view is fine, e.g. one item of a bound batch buffer).
Resizing is Pillow's bilinear filter (``Image.resize(..., BILINEAR)``, which antialiases when
shrinking) and the result is Pillow's, bit for bit: ``Image.fromarray(img).resize(...)`` for
uint8 images with 1-4 channels (L, LA, RGB, RGBA; Pillow premultiplies LA and RGBA by alpha),
otherwise each channel alone in the mode Pillow gives it: "L" for uint8, "I" (int32, rounded) for
other integers, "F" (float32) for floats. Pillow is imported on first use (extra ``image``).
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ArgumentError, InputSpecError
from ..optional import require
from .pipeline import Pipeline, Prepared

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CenterCrop",
    "Decode",
    "ImagePipeline",
    "Letterbox",
    "LetterboxInfo",
    "Normalize",
    "Resize",
    "ToCHW",
    "ToDType",
    "center_crop",
    "decode",
    "hwc_to_chw",
    "letterbox",
    "normalize",
    "resize",
    "to_dtype",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Size = tuple[int, int]  # (height, width)


def _pil() -> Any:
    return require("PIL.Image", "image", package="pillow")


def _side(v: Any, what: str, given: Any) -> int:
    """``what``: the parameter, after the step's name if any (``"Resize size"``)."""
    owner, _, parameter = what.rpartition(" ")
    step = f"{owner}: " if owner else ""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise ArgumentError(parameter, f"{step}expected an int or a (height, width) pair of ints, got {given!r}")
    if v < 1:
        raise ArgumentError(parameter, f"{step}must be positive, got {given!r}")
    return int(v)


def _size(size: int | Sequence[int], what: str = "size") -> Size:
    """An int (a square) or (height, width), each a positive int."""
    if isinstance(size, (int, np.integer)):
        d = _side(size, what, size)
        return (d, d)
    if isinstance(size, np.ndarray) and size.ndim == 0:  # np.array(8): a 0-d array of one side
        return _size(size.item(), what)
    if isinstance(size, (str, bytes)) or not isinstance(size, (Sequence, np.ndarray)) or len(size) != 2:
        return (_side(None, what, size), 0)  # refused, with the step's name
    return (_side(size[0], what, size), _side(size[1], what, size))


def _size_or_side(size: int | Sequence[int], what: str = "size") -> int | Size:
    """Resize's size: an int (the shorter side) or (height, width)."""
    if isinstance(size, np.ndarray) and size.ndim == 0:
        size = size.item()
    if isinstance(size, (int, np.integer)):
        return _side(size, what, size)
    return _size(size, what)


# Channels of Pillow's modes (Image.MODES), for Decode's mode and arrays passed through it.
_MODE_BANDS = {
    "1": 1, "L": 1, "P": 1, "I": 1, "F": 1, "I;16": 1, "I;16B": 1, "I;16L": 1, "I;16N": 1,
    "LA": 2, "La": 2, "PA": 2, "RGB": 3, "YCbCr": 3, "LAB": 3, "HSV": 3, "RGBA": 4, "RGBa": 4,
    "RGBX": 4, "CMYK": 4,
}  # fmt: skip


_EXIF_ORIENTATION = 0x0112


def _check_mode(mode: str) -> str:
    if mode not in _MODE_BANDS:
        raise ArgumentError("mode", f"unknown image mode {mode!r}; Pillow's modes: {', '.join(_MODE_BANDS)}")
    return mode


def _chw_hint(shape: tuple[int, ...], channels: int) -> str:
    if len(shape) == 3 and shape[0] == channels and shape[2] != channels:
        return "; it looks CHW: pass HWC images (array.transpose(1, 2, 0))"
    return ""


def _check_image(img: np.ndarray, what: str = "image") -> np.ndarray:
    if not isinstance(img, np.ndarray):
        raise InputSpecError(f"{what}: expected a numpy array (HWC), got {type(img).__name__}")
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3:
        raise InputSpecError(
            f"{what}: expected an HWC image (rank 3, or 2 for grayscale), got shape {img.shape}"
        )
    if 0 in img.shape:
        raise InputSpecError(f"{what}: empty image, shape {img.shape} (height, width, channels)")
    return img


def _into(result: np.ndarray, out: np.ndarray | None) -> np.ndarray:
    if out is None:
        return result
    if out.shape != result.shape:
        raise InputSpecError(f"out= has shape {out.shape}, the result is {result.shape}")
    out[...] = result
    return out


# -- functions ---------------------------------------------------------------------------------
def decode(data: Any, mode: str = "RGB", *, exif_transpose: bool = False) -> np.ndarray:
    """Bytes, a path, a PIL image or an array -> HWC array in ``mode`` ("RGB", "L", ...).

    Arrays pass through unconverted, but must have the mode's channel count. ``exif_transpose``:
    turn the image upright as its EXIF Orientation tag says (``ImageOps.exif_transpose``), as
    viewers show photos from phones and cameras; off by default, like ``Image.open`` and
    torchvision's loaders.
    """
    bands = _MODE_BANDS[_check_mode(mode)]
    if isinstance(data, np.ndarray):
        img_a = _check_image(data)
        if img_a.shape[2] != bands:
            raise InputSpecError(
                f"decode to {mode!r}: an array passes through unconverted and must have {bands} "
                f"channel(s) (HWC), got shape {data.shape} ({img_a.shape[2]} channels)"
                f"{_chw_hint(data.shape, bands)}; convert it first (e.g. Image.fromarray(a).convert({mode!r})) "
                f"or decode to the mode it has"
            )
        return img_a
    Image = _pil()
    if isinstance(data, (bytes, bytearray, memoryview)):
        try:
            img = Image.open(io.BytesIO(bytes(data)))
            img.load()
        except Exception as e:
            raise InputSpecError(f"could not decode {len(data)} bytes as an image: {e}") from e
    elif isinstance(data, (str, os.PathLike)):
        try:
            img = Image.open(data)
            img.load()
        except Exception as e:
            raise InputSpecError(f"could not read image {os.fspath(data)!r}: {e}") from e
    elif isinstance(data, Image.Image):
        img = data
    else:
        raise InputSpecError(
            f"cannot decode {type(data).__name__}: pass bytes, a path, a PIL image or an array"
        )
    if exif_transpose and img.getexif().get(_EXIF_ORIENTATION, 1) != 1:
        img = require("PIL.ImageOps", "image", package="pillow").exif_transpose(img)
    if img.mode != mode:
        img = img.convert(mode)
    return _check_image(np.asarray(img))


def _band_dtype(img: np.ndarray) -> np.dtype:
    """The dtype of one channel in the Pillow mode that resizes it: "1", "L", "I" or "F"."""
    dt = img.dtype
    if dt == np.bool_ or dt == np.uint8:
        return dt
    if np.issubdtype(dt, np.integer):
        if dt.itemsize > 4 or dt == np.uint32:
            lo, hi = (int(img.min()), int(img.max())) if img.size else (0, 0)
            info = np.iinfo(np.int32)
            if lo < info.min or hi > info.max:
                raise InputSpecError(
                    f"resize: {dt} image with values in [{lo}, {hi}]; Pillow resizes integers as int32 "
                    f"(mode 'I'), convert the image to float32 first"
                )
        return np.dtype(np.int32)
    if np.issubdtype(dt, np.floating):
        return np.dtype(np.float32)
    raise InputSpecError(f"resize: images of dtype {dt} are not supported (integer, float or bool)")


def _resize_exact(img: np.ndarray, size: Size) -> np.ndarray:
    """``Image.fromarray(img).resize(size, BILINEAR)``; channels Pillow has no mode for one by one."""
    h, w = size
    if img.shape[:2] == (h, w):
        return img
    Image = _pil()
    bilinear = Image.Resampling.BILINEAR
    c = img.shape[2]
    if img.dtype == np.uint8 and c <= 4:  # Pillow's L, LA, RGB, RGBA (LA, RGBA: alpha premultiplied)
        src = np.ascontiguousarray(img[:, :, 0] if c == 1 else img)
        res = np.asarray(Image.fromarray(src).resize((w, h), bilinear))
        return res.reshape(h, w, c)
    band = _band_dtype(img)  # each channel alone as Pillow's "1", "L", "I" or "F" image
    chans = [
        np.asarray(Image.fromarray(np.ascontiguousarray(img[:, :, k], band)).resize((w, h), bilinear))
        for k in range(c)
    ]
    return np.stack(chans, axis=2).astype(img.dtype, copy=False)


def _shorter_side(shape: tuple[int, ...], side: int) -> Size:
    h, w = shape[:2]
    if h <= w:
        return (side, max(1, int(side * w / h)))
    return (max(1, int(side * h / w)), side)


def resize(img: np.ndarray, size: int | Sequence[int], *, out: np.ndarray | None = None) -> np.ndarray:
    """Bilinear resize (Pillow's filter). ``size``: (height, width), or an int for the shorter side
    (aspect kept, the longer side truncated like torchvision's ``Resize(int)``)."""
    img = _check_image(img)
    side = _size_or_side(size, "resize size")
    target = _shorter_side(img.shape, side) if isinstance(side, int) else side
    return _into(_resize_exact(img, target), out)


@dataclass(frozen=True)
class LetterboxInfo:
    """How ``letterbox`` placed the image: original pixel = (letterboxed - (left, top)) / scale."""

    scale: float
    top: int
    left: int
    height: int  # of the resized image inside the canvas
    width: int

    def to_original(self, xy: np.ndarray) -> np.ndarray:
        """Map (..., 2) x, y points in the letterboxed image back to the original image."""
        pts = np.asarray(xy, dtype=np.float32)
        res: np.ndarray = (pts - np.array([self.left, self.top], np.float32)) / self.scale
        return res


def letterbox(
    img: np.ndarray, size: int | Sequence[int], *, color: int = 114, out: np.ndarray | None = None
) -> tuple[np.ndarray, LetterboxInfo]:
    """Resize keeping the aspect ratio to fit ``size``, centred on a ``color`` canvas.

    scale = min(H / h, W / w); the resized image is round(h * scale) x round(w * scale), placed at
    top = (H - nh) // 2, left = (W - nw) // 2.
    """
    img = _check_image(img)
    H, W = _size(size, "letterbox size")
    h, w = img.shape[:2]
    scale = min(H / h, W / w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    top, left = (H - nh) // 2, (W - nw) // 2
    if out is None:
        out = np.empty((H, W, img.shape[2]), img.dtype)
    elif out.shape != (H, W, img.shape[2]):
        raise InputSpecError(f"out= has shape {out.shape}, the letterboxed image is {(H, W, img.shape[2])}")
    out[...] = color
    out[top : top + nh, left : left + nw] = _resize_exact(img, (nh, nw))
    return out, LetterboxInfo(scale, top, left, nh, nw)


def center_crop(img: np.ndarray, size: int | Sequence[int], *, out: np.ndarray | None = None) -> np.ndarray:
    """Crop ``size`` from the centre: top = round((H - h) / 2), left = round((W - w) / 2) (torchvision)."""
    img = _check_image(img)
    h, w = _size(size, "center_crop size")
    H, W = img.shape[:2]
    if h > H or w > W:
        raise InputSpecError(f"center_crop to {(h, w)} needs an image at least that large, got {(H, W)}")
    top, left = round((H - h) / 2.0), round((W - w) / 2.0)
    return _into(img[top : top + h, left : left + w], out)


def _normalize_terms(
    mean: float | Sequence[float], std: float | Sequence[float], scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """Validated (scale / std, -mean / std) as float32: one value, or one per channel."""
    mean_a = np.asarray(mean, np.float32)
    std_a = np.asarray(std, np.float32)
    for name, a, given in (("mean", mean_a, mean), ("std", std_a, std)):
        if a.ndim > 1 or a.size == 0:
            raise ArgumentError(name, f"Normalize: must be a number or one number per channel, got {given!r}")
        if not np.all(np.isfinite(a)):
            raise ArgumentError(name, f"Normalize: must be finite (in float32), got {given!r}")
    if np.any(std_a == 0):
        raise ArgumentError("std", f"Normalize: must be non-zero (in float32), got {std!r}")
    if mean_a.size > 1 and std_a.size > 1 and mean_a.size != std_a.size:
        raise ArgumentError(
            "std",
            f"Normalize: mean has {mean_a.size} values and std {std_a.size}; give one per channel for both"
        )
    if not np.isfinite(np.float32(scale)):
        raise ArgumentError("scale", f"Normalize: must be finite, got {scale!r}")
    with np.errstate(over="ignore"):
        mul = (np.float32(scale) / std_a).astype(np.float32)
        add = (-mean_a / std_a).astype(np.float32)
    if not (np.all(np.isfinite(mul)) and np.all(np.isfinite(add))):
        raise ArgumentError("std", f"Normalize: {std!r} is too small for float32 (scale / std overflows)")
    return mul, add


def normalize(
    img: np.ndarray,
    mean: float | Sequence[float],
    std: float | Sequence[float],
    *,
    scale: float = 1 / 255,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """(img * scale - mean) / std per channel (last axis), as float32, computed as one multiply-add."""
    mul, add = _normalize_terms(mean, std, scale)
    return _normalize_with(img, mul, add, out)


def _normalize_with(img: np.ndarray, mul: np.ndarray, add: np.ndarray, out: np.ndarray | None) -> np.ndarray:
    n = max(mul.size, add.size)
    if n > 1 and (img.ndim == 0 or img.shape[-1] != n):
        raise InputSpecError(
            f"normalize: {n} mean/std values, one per channel (the last axis), but the image has "
            f"shape {img.shape}{_chw_hint(img.shape, n)}"
        )
    if out is None:
        out = np.empty(img.shape, np.float32)
    elif out.shape != img.shape:
        raise InputSpecError(f"normalize: out= has shape {out.shape}, the image is {img.shape}")
    np.multiply(img, mul, out=out, casting="unsafe")
    np.add(out, add, out=out, casting="unsafe")
    return out


def hwc_to_chw(img: np.ndarray, *, out: np.ndarray | None = None) -> np.ndarray:
    img = _check_image(img)
    if out is None:
        return np.ascontiguousarray(img.transpose(2, 0, 1))
    out[...] = img.transpose(2, 0, 1)
    return out


def to_dtype(img: np.ndarray, dtype: Any, *, out: np.ndarray | None = None) -> np.ndarray:
    if out is None:
        return img.astype(dtype)
    np.copyto(out, img, casting="unsafe")
    return out


# -- steps -------------------------------------------------------------------------------------
class Decode:
    """Bytes / path / PIL image -> HWC uint8 in ``mode`` (arrays pass through; see ``decode``)."""

    stage = "prepare"

    def __init__(self, mode: str = "RGB", *, exif_transpose: bool = False) -> None:
        self.mode = _check_mode(mode)
        self.channels = _MODE_BANDS[mode]
        self.exif_transpose = exif_transpose

    def run(self, x: Any, meta: dict[str, Any]) -> np.ndarray:
        return decode(x, self.mode, exif_transpose=self.exif_transpose)


class Resize:
    stage = "prepare"

    def __init__(self, size: int | Sequence[int]) -> None:
        self.size = _size_or_side(size, "Resize size")

    def run(self, x: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
        return resize(x, self.size)


class Letterbox:
    """Letterbox to ``size``; the item's ``LetterboxInfo`` goes to ``Prepared.meta[i]["letterbox"]``."""

    stage = "prepare"

    def __init__(self, size: int | Sequence[int], color: int = 114) -> None:
        self.size = _size(size, "Letterbox size")
        self.color = color

    def run(self, x: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
        img, info = letterbox(x, self.size, color=self.color)
        meta["letterbox"] = info
        return img


class CenterCrop:
    stage = "prepare"

    def __init__(self, size: int | Sequence[int]) -> None:
        self.size = _size(size, "CenterCrop size")

    def run(self, x: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
        return center_crop(x, self.size)


class Normalize:
    stage = "fill"

    def __init__(
        self, mean: float | Sequence[float], std: float | Sequence[float], scale: float = 1 / 255
    ) -> None:
        self._mul, self._add = _normalize_terms(mean, std, scale)
        self.mean, self.std, self.scale = mean, std, scale
        n = max(self._mul.size, self._add.size)
        self.channels: int | None = n if n > 1 else None  # None: one value for every channel

    def out_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return shape

    def out_dtype(self, dtype: np.dtype) -> np.dtype:
        return np.dtype(np.float32)

    def __call__(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        return _normalize_with(x, self._mul, self._add, out)


class ToCHW:
    stage = "fill"

    def out_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (shape[2], shape[0], shape[1])

    def out_dtype(self, dtype: np.dtype) -> np.dtype:
        return dtype

    def __call__(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        return hwc_to_chw(x, out=out)


class ToDType:
    stage = "fill"

    def __init__(self, dtype: Any) -> None:
        self.dtype = np.dtype(dtype)

    def out_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return shape

    def out_dtype(self, dtype: np.dtype) -> np.dtype:
        return self.dtype

    def __call__(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        return to_dtype(x, self.dtype, out=out)


_NOT_UINT8_MODES = frozenset({"1", "I", "F", "I;16", "I;16B", "I;16L", "I;16N"})

_PrepareStep = Decode | Resize | Letterbox | CenterCrop
_FillStep = Normalize | ToCHW | ToDType


class ImagePipeline(Pipeline):
    """Raw image(s) -> one model input ``[n, ...]``.

    ``steps``: prepare steps (Decode, Resize, Letterbox, CenterCrop) then fill steps (Normalize,
    ToCHW, ToDType). ``prepare`` runs in the caller's thread and keeps uint8 images; ``fill`` writes
    the rest straight into the output buffer (a trailing ToCHW is folded: Normalize writes through a
    transposed view, one pass). Raw input: one image (bytes, path, PIL image, HWC array) or a list
    of them, or an NHWC uint8 array; every image must end at the same size.
    """

    def __init__(self, steps: Sequence[_PrepareStep | _FillStep], *, input: str) -> None:
        prep: list[_PrepareStep] = []
        fill: list[_FillStep] = []
        for st in steps:
            if st.stage == "prepare":
                if fill:
                    raise ArgumentError("steps", f"{type(st).__name__} must come before {type(fill[0]).__name__}")
                prep.append(st)  # type: ignore[arg-type]
            else:
                fill.append(st)  # type: ignore[arg-type]
        self._prep = tuple(prep)
        self._fill = tuple(fill)
        self._channels = self._check_channels(prep, fill)
        dtype = np.dtype(np.uint8)
        for f in fill:
            dtype = f.out_dtype(dtype)
        self.input = input
        self.inputs = (input,)
        self.dtypes = {input: dtype}
        self._fold = (
            len(fill) >= 2 and isinstance(fill[-1], ToCHW) and fill[-2].out_dtype(np.dtype(np.uint8)) == dtype
        )

    @staticmethod
    def _check_channels(prep: Sequence[_PrepareStep], fill: Sequence[_FillStep]) -> int | None:
        """Refuse step orders that cannot be right; return the channel count Normalize needs (or None)."""
        chw = False
        for f in fill:
            if isinstance(f, ToCHW):
                if chw:
                    raise ArgumentError("steps", "ToCHW is given twice")
                chw = True
            elif isinstance(f, Normalize) and chw and f.channels is not None:
                raise ArgumentError(
                    "steps",
                    f"Normalize with {f.channels} per-channel mean/std must come before ToCHW: after ToCHW "
                    f"the last axis is the image width, not its channels"
                )
        needs = {f.channels for f in fill if isinstance(f, Normalize) and f.channels is not None}
        if len(needs) > 1:
            raise ArgumentError("steps", f"Normalize steps disagree on the channel count: {sorted(needs)}")
        channels = needs.pop() if needs else None
        decodes = [st for st in prep if isinstance(st, Decode)]
        if decodes:
            d = decodes[-1]
            if d.mode in _NOT_UINT8_MODES:
                raise ArgumentError(
                    "steps",
                    f"Decode({d.mode!r}) does not give uint8 images, which image pipelines take; use a "
                    f"mode such as 'L', 'RGB' or 'RGBA'"
                )
            if channels is not None and d.channels != channels:
                raise ArgumentError(
                    "steps",
                    f"Decode({d.mode!r}) gives {d.channels}-channel images but Normalize has {channels} "
                    f"mean/std values (one per channel); decode to a {channels}-channel mode or give "
                    f"{d.channels} value(s)"
                )
        return channels

    def prepare(self, raw: Any) -> Prepared:
        if isinstance(raw, np.ndarray) and raw.ndim == 4:
            items: Sequence[Any] = list(raw)
        elif isinstance(raw, (list, tuple)):
            items = raw
        else:
            items = [raw]
        if not items:
            raise InputSpecError(f"input {self.input!r}: no images given", tensor=self.input)
        images: list[np.ndarray] = []
        metas: list[Any] = []
        for k, item in enumerate(items):
            where = f"input {self.input!r}" + (f", image {k}" if len(items) > 1 else "")
            meta: dict[str, Any] = {}
            x = item
            try:
                for st in self._prep:
                    x = st.run(x, meta)
                if not isinstance(x, np.ndarray):
                    x = decode(x)  # no Decode step given: decode anyway
                x = _check_image(x)
            except InputSpecError as e:
                raise InputSpecError(f"{where}: {e}", tensor=self.input) from e
            if x.dtype != np.uint8:
                raise InputSpecError(
                    f"{where}: image pipelines take uint8 images, got {x.dtype}", tensor=self.input
                )
            if self._channels is not None and x.shape[2] != self._channels:
                given = item.shape if isinstance(item, np.ndarray) else x.shape
                raise InputSpecError(
                    f"{where}: Normalize has {self._channels} mean/std values, one per channel, but the "
                    f"image has {x.shape[2]} channel(s): HWC shape {x.shape}"
                    + (f", given as an array of shape {given}" if given != x.shape else "")
                    + _chw_hint(given, self._channels),
                    tensor=self.input,
                )
            if images and x.shape != images[0].shape:
                raise InputSpecError(
                    f"input {self.input!r}: images of one request end at different sizes {images[0].shape} and "
                    f"{x.shape}; add a Resize or Letterbox step",
                    tensor=self.input,
                )
            images.append(x)
            metas.append(meta)
        shape: tuple[int, ...] = images[0].shape
        for f in self._fill:
            shape = f.out_shape(shape)
        return Prepared({self.input: (len(images), *shape)}, images, metas)

    def fill(self, prepared: Prepared, out: Mapping[str, np.ndarray]) -> None:
        buf = out[self.input]
        steps = self._fill
        for i, x in enumerate(prepared.data):
            target = buf[i]
            run: Sequence[_FillStep] = steps
            if self._fold:
                target = target.transpose(1, 2, 0)  # HWC view of this item's CHW memory
                run = steps[:-1]
            if not run:
                target[...] = x
                continue
            last = len(run) - 1
            for j, st in enumerate(run):
                x = st(x, out=target if j == last else None)
