"""Per-sample features of a tensor: what profiles, drift tests and screening compare.

A batch of a tensor becomes a matrix ``[samples, features]`` (float64) by one of four layouts,
chosen once from the tensor's spec and a first batch, and stored in the profile so live traffic is
read the same way:

- ``scalar``: a sample is one value (a 0-d input, a ``[N]`` tensor): one feature, the value;
- ``elements``: a small sample of fixed shape (at most ``max_features`` elements, e.g. tabular rows
  ``[N, 16]``, 8x8 digits, a classifier's logits): every element is a feature;
- ``channels``: a larger sample with a channel axis (``[N, 3, H, W]`` or ``[N, H, W, 3]``): per
  channel its mean, standard deviation and texture (mean absolute difference of neighbours along the
  last spatial axis), read from at most ``_MAX_PER_CHANNEL`` (1,024) values per channel (evenly
  strided rows), so a large image costs what a small one does;
- ``summary``: anything else (token ids, variable-length sequences, embeddings beyond
  ``max_features``): mean, standard deviation, minimum, maximum, and texture for floats.

The samples of a batch are its first axis when that axis is a batch axis (dynamic, or a static 1
ahead of more axes); otherwise the whole tensor is one sample (a state tensor, a 0-d sample rate).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputSpecError
from ..specs import TensorSpec

__all__ = ["LAYOUTS", "Featurizer", "Workspace"]

LAYOUTS = ("scalar", "elements", "channels", "summary")
_MAX_CHANNELS = 64
_MAX_PER_CHANNEL = 1024


class Workspace:
    """Scratch arrays reused from one batch to the next (grown, never shrunk): the monitor's worker
    featurizes every request, and fresh temporaries of a few hundred KB each cost page faults and
    unmaps (a third of the worker's CPU under load, measured with perf) where reused ones cost
    nothing. One per thread: the arrays handed out are overwritten by the next call."""

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: Sequence[int], dtype: Any) -> np.ndarray:
        size = math.prod(shape)
        dt = np.dtype(dtype)
        buf = self._arrays.get(name)
        if buf is None or buf.dtype != dt or buf.size < size:
            buf = self._arrays[name] = np.empty(max(size, 1), dt)
        return buf[:size].reshape(shape)

    def nbytes(self) -> int:
        return sum(a.nbytes for a in self._arrays.values())


@dataclass(frozen=True)
class Featurizer:
    """How one tensor's batches become per-sample feature rows; ``names`` are the features'."""

    tensor: str
    layout: str
    batched: bool
    sample_shape: tuple[int, ...]  # elements: the sample's shape; others: () (any shape)
    channel_axis: int | None  # channels: the axis within a sample
    texture: bool
    names: tuple[str, ...]

    # -- building --------------------------------------------------------------------------------
    @classmethod
    def for_tensor(cls, spec: TensorSpec, sample: np.ndarray, max_features: int = 512) -> Featurizer:
        """The layout of ``spec``'s tensor, given one real batch ``sample`` of it."""
        arr = np.asarray(sample)
        batched = _batched(spec, arr)
        shape = arr.shape[1:] if batched else arr.shape
        size = math.prod(shape)
        ids = arr.dtype.kind in "iu" and arr.dtype.itemsize >= 4  # token ids, masks, counts
        static = all(d is not None for d in (spec.shape[1:] if batched else spec.shape))
        name = spec.name
        if size == 1 and len(shape) <= 1:
            return cls(name, "scalar", batched, (), None, False, (name,))
        if static and not ids and size <= max_features:
            names = tuple(f"{name}[{','.join(map(str, i))}]" for i in np.ndindex(*shape))
            return cls(name, "elements", batched, tuple(shape), None, False, names)
        floats = arr.dtype.kind in "fu" or (arr.dtype.kind == "i" and arr.dtype.itemsize == 1)
        if len(shape) >= 2 and not ids:
            axis = _channel_axis(spec, shape, batched)
            if axis is not None:
                channels = shape[axis]
                texture = len(shape) - 1 >= 1 and _width(shape, axis) >= 2
                stats = ["mean", "std", *(["texture"] if texture else [])]
                names = tuple(f"{name}:c{c}.{s}" for c in range(channels) for s in stats)
                return cls(name, "channels", batched, (), axis, texture, names)
        texture = floats and not ids and len(shape) >= 1 and shape[-1] >= 2
        stats = ["mean", "std", "min", "max", *(["texture"] if texture else [])]
        return cls(name, "summary", batched, (), None, texture, tuple(f"{name}:{s}" for s in stats))

    # -- (de)serializing -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "layout": self.layout,
            "batched": self.batched,
            "sample_shape": list(self.sample_shape),
            "channel_axis": self.channel_axis,
            "texture": self.texture,
            "features": list(self.names),
        }

    @classmethod
    def from_dict(cls, tensor: str, d: Mapping[str, Any]) -> Featurizer:
        layout = d["layout"]
        if layout not in LAYOUTS:
            raise ValueError(f"tensor {tensor!r}: unknown feature layout {layout!r} (known: {', '.join(LAYOUTS)})")
        axis = d.get("channel_axis")
        return cls(
            tensor,
            layout,
            bool(d["batched"]),
            tuple(int(s) for s in d.get("sample_shape", ())),
            None if axis is None else int(axis),
            bool(d.get("texture", False)),
            tuple(str(n) for n in d["features"]),
        )

    @property
    def size(self) -> int:
        return len(self.names)

    # -- reading batches -------------------------------------------------------------------------
    def samples(self, arr: np.ndarray) -> np.ndarray:
        """``arr`` with its samples along axis 0."""
        a = np.asarray(arr)
        return a if self.batched and a.ndim >= 1 else a[None]

    def rows(self, arr: np.ndarray) -> int:
        a = np.asarray(arr)
        return int(a.shape[0]) if self.batched and a.ndim >= 1 else 1

    def __call__(self, arr: np.ndarray) -> np.ndarray:
        """Feature rows ``[samples, features]`` (float64) of one batch of the tensor."""
        return self.of_samples(self.samples(arr))

    def of_samples(self, a: np.ndarray, work: Workspace | None = None) -> np.ndarray:
        """Feature rows of samples already along axis 0 (what :meth:`samples` or :meth:`thin`
        returns, or several of those concatenated). ``work``: scratch arrays to reuse (the rows
        returned are always a new array)."""
        n = a.shape[0]
        if a.dtype.kind == "b":
            a = a.astype(np.float32)
        elif a.dtype.kind not in "fiu":
            raise InputSpecError(
                f"tensor {self.tensor!r}: dtype {a.dtype} has no numeric features to monitor", tensor=self.tensor
            )
        if self.layout == "scalar":
            return a.reshape(n, -1)[:, :1].astype(np.float64)
        if self.layout == "elements":
            if tuple(a.shape[1:]) != self.sample_shape:
                raise InputSpecError(
                    f"tensor {self.tensor!r}: a sample has shape {list(a.shape[1:])}, the profile's has "
                    f"{list(self.sample_shape)}",
                    tensor=self.tensor,
                )
            return a.reshape(n, -1).astype(np.float64)
        if self.layout == "channels":
            return self._channels(a, work or Workspace())
        return self._summary(a)

    def _channels(self, a: np.ndarray, work: Workspace) -> np.ndarray:
        axis = 1 + (self.channel_axis or 0)
        if a.ndim <= axis:
            raise InputSpecError(
                f"tensor {self.tensor!r}: a sample of rank {a.ndim - 1} has no channel axis {axis - 1}",
                tensor=self.tensor,
            )
        view = np.moveaxis(self.thin(a), axis, 1)  # [n, C, ..., W]; thinning twice changes nothing
        x = view
        if x.dtype != np.float32 or not x.flags.c_contiguous:
            x = work.get("x", view.shape, np.float32)
            np.copyto(x, view, casting="unsafe")
        n, channels = x.shape[:2]
        flat = x.reshape(n, channels, -1)
        size = max(flat.shape[2], 1)
        mean = flat.sum(axis=2, dtype=np.float64) / size
        centered = np.subtract(flat, mean[:, :, None].astype(np.float32), out=work.get("centered", flat.shape, np.float32))
        std = np.sqrt(np.einsum("ncl,ncl->nc", centered, centered) / size).astype(np.float64)
        parts = [mean, std]
        if self.texture:
            d = np.subtract(x[..., 1:], x[..., :-1], out=work.get("diff", (*x.shape[:-1], x.shape[-1] - 1), np.float32))
            np.abs(d, out=d)
            d = d.reshape(n, channels, -1)
            parts.append(d.sum(axis=2, dtype=np.float64) / max(d.shape[2], 1))
        return np.stack(parts, axis=2).reshape(n, -1)

    def thin(self, a: np.ndarray) -> np.ndarray:
        """Samples (along axis 0) with at most ``_MAX_PER_CHANNEL`` values per channel (channels
        layout): every k-th row of the first spatial axis, so neighbours along a row stay
        neighbours. A view; thinning twice changes nothing."""
        index = self._thin_index(a.shape[1:])
        return a if index is None else a[index]

    def _thin_index(self, sample: tuple[int, ...]) -> tuple[slice, ...] | None:
        """The index :meth:`thin` takes of batches of ``sample``-shaped samples; None: none."""
        return _thin_index(1 + (self.channel_axis or 0), sample) if self.layout == "channels" else None

    def keep(self, arr: Any) -> np.ndarray:
        """What the features of a batch read, for holding until they are computed: a copy of the
        thinned rows when thinning leaves at most half of the tensor (the request's own memory is
        then freed with the request, and what waits is small: at most ``_MAX_PER_CHANNEL`` values
        per channel and sample), else the array itself (not copied: it must not change)."""
        a = np.asarray(arr)
        index = self._thin_index(a.shape[1:]) if self.batched and a.ndim >= 1 else None
        if index is None:
            return a
        view = a[index]
        return np.array(view) if 2 * view.size <= a.size else a

    def gather(self, arrays: Sequence[np.ndarray], work: Workspace | None = None) -> np.ndarray | None:
        """The thinned samples of several batches of this tensor, concatenated along axis 0 (into
        ``work``'s scratch when given): what :meth:`of_samples` reads for all of them in one pass.
        None when their sample shapes or dtypes differ (featurize them one by one then)."""
        first = arrays[0]
        if not (self.batched and first.ndim >= 1):
            arrays = [a[None] for a in arrays]
            first = arrays[0]
        sample, dtype = first.shape[1:], first.dtype
        rows = 0
        for a in arrays:
            if a.shape[1:] != sample or a.dtype != dtype:
                return None
            rows += a.shape[0]
        index = self._thin_index(sample)
        parts = arrays if index is None else [a[index] for a in arrays]
        if len(parts) == 1:
            return parts[0]
        shape = (rows, *parts[0].shape[1:])
        out = np.empty(shape, dtype) if work is None else work.get("batch", shape, dtype)
        return np.concatenate(parts, out=out)

    def _summary(self, a: np.ndarray) -> np.ndarray:
        n = a.shape[0]
        if a.size == 0:
            return np.full((n, self.size), np.nan)
        flat = a.reshape(n, -1)
        f = flat.astype(np.float64) if flat.dtype.itemsize < 8 or flat.dtype.kind != "f" else flat
        parts = [f.mean(axis=1), f.std(axis=1), f.min(axis=1), f.max(axis=1)]
        if self.texture:
            x = a.astype(np.float32, copy=False)
            if x.shape[-1] >= 2:
                parts.append(np.abs(np.diff(x, axis=-1)).reshape(n, -1).mean(axis=1, dtype=np.float64))
            else:
                parts.append(np.zeros(n))
        return np.stack(parts, axis=1)


@functools.lru_cache(maxsize=256)
def _thin_index(axis: int, sample: tuple[int, ...]) -> tuple[slice, ...] | None:
    """The index that thins batches of ``sample``-shaped samples with channels on ``axis`` (of the
    batch) to at most ``_MAX_PER_CHANNEL`` values per channel; None: nothing to thin."""
    ndim = len(sample) + 1
    if ndim <= axis or ndim < 4:
        return None
    per_channel = math.prod(sample) // max(sample[axis - 1], 1)
    if per_channel <= _MAX_PER_CHANNEL:
        return None
    row_axis = next(i for i in range(1, ndim) if i != axis)
    rows = sample[row_axis - 1]
    keep = max(_MAX_PER_CHANNEL // max(per_channel // max(rows, 1), 1), 1)  # rows that fit
    k = math.ceil(rows / keep)
    if k <= 1:
        return None
    index = [slice(None)] * ndim
    index[row_axis] = slice(None, None, k)
    return tuple(index)


def _batched(spec: TensorSpec, arr: np.ndarray) -> bool:
    """Whether axis 0 of ``spec``'s tensor holds samples: a dynamic batch axis, or a static 1 ahead
    of more axes (a model fixed at batch 1)."""
    from ..inputs import is_batch_axis

    if spec.rank == 0 or arr.ndim == 0:
        return False
    if spec.shape[0] is None:
        return is_batch_axis(spec, 0)
    return spec.shape[0] == 1 and spec.rank >= 2


def _width(shape: Sequence[int], channel_axis: int) -> int:
    rest = [d for i, d in enumerate(shape) if i != channel_axis]
    return rest[-1] if rest else 1


def _channel_axis(spec: TensorSpec, shape: Sequence[int], batched: bool) -> int | None:
    """The channel axis of a sample: its first axis when small (NCHW, [C, L]), else its last (NHWC)."""
    declared = spec.shape[1:] if batched else spec.shape
    first, last = shape[0], shape[-1]
    if declared and declared[0] is not None and first <= _MAX_CHANNELS and (first <= last or first <= 4):
        return 0
    if declared and declared[-1] is not None and last <= _MAX_CHANNELS:
        return len(shape) - 1
    return None
