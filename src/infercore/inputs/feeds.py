"""Shapes and values of feeds: the rules the package docstring states, in code."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..arguments import check_choice, check_int
from ..errors import ArgumentError, InputSpecError
from ..specs import TensorSpec, is_symbol

Feeds = dict[str, np.ndarray]

DYNAMIC_SIZE = 64
"""Size of a dynamic dimension that is not a batch dimension and that nothing else sizes."""
SIGNAL_SIZE = 512
"""Least size of the samples dimension of a signal (the last dimension of a 2-d float input,
``[batch, samples]``: audio): 64 samples are too few for the STFT or convolution front ends of speech models (Silero VAD
pads by 64 on each side and wants 256 or 512 samples; openWakeWord's melspectrogram takes >= 512)."""
SAMPLE_RATE = 16000
"""The value of a generated integer sample-rate input (``sr``, ``*sample_rate*``): speech models
branch on it and refuse or misread other rates."""
_SAMPLE_RATE_NAME = re.compile(r"sr|.*sampl(e|ing)_?rate.*")
_BATCH_NAME = re.compile(r".*batch.*")
_BATCH_LETTER = re.compile(r"n|b|bs")
_DISTRIBUTIONS = ("uniform", "normal")


# -- shapes -------------------------------------------------------------------------------------
def is_batch_axis(spec: TensorSpec, axis: int) -> bool:
    """Whether dimension ``axis`` of ``spec`` is a dynamic batch dimension: the dynamic dimensions
    named like ``*batch*`` if any, else those named ``N``/``B``/``bs``, else dimension 0."""
    if spec.shape[axis] is None:
        dynamic = [(i, n.lower()) for i, n in enumerate(spec.dim_names) if n and spec.shape[i] is None]
        for pattern in (_BATCH_NAME, _BATCH_LETTER):
            named = [i for i, n in dynamic if pattern.fullmatch(n)]
            if named:
                return axis in named
        return axis == 0
    return False


def _shape_of(spec: TensorSpec, given: Sequence[int] | int, parameter: str) -> tuple[int, ...]:
    dims = (int(given),) if isinstance(given, (int, np.integer)) else tuple(int(d) for d in given)
    if any(d < 0 for d in dims) or not spec.accepts(dims):
        raise ArgumentError(
            parameter, f"{spec.name}={_x(dims)} does not fit input {spec}; a dynamic dimension takes any size"
        )
    return dims


def is_signal_axis(spec: TensorSpec, axis: int) -> bool:
    """Whether dimension ``axis`` of ``spec`` is the samples dimension of a signal: the last
    dimension of a 2-d floating-point input (``[batch, samples]``, audio)."""
    return spec.rank == 2 and axis == 1 and _kind(spec.dtype) == "float"


def _x(dims: Sequence[int]) -> str:
    return "x".join(map(str, dims)) or "(0-d)"


def resolve_shapes(
    specs: Sequence[TensorSpec],
    *,
    shapes: Mapping[str, Sequence[int] | int] | None = None,
    batch: int | None = None,
    given: Mapping[str, Sequence[int]] | None = None,
    dynamic_size: int = DYNAMIC_SIZE,
) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """Concrete shapes for ``specs`` by the module's rule, and for each input a note on how its
    dynamic dimensions were sized (empty when it has none).

    ``given``: the shapes of arrays given for some inputs. ``batch`` replaces every batch dimension
    (given arrays included: their rows are repeated or cut to fit, see ``make_feeds``); asking for a
    batch when no input has a dynamic batch dimension raises ``ArgumentError``.
    """
    check_int("batch", batch, optional=True)
    check_int("dynamic_size", dynamic_size)
    shapes = dict(shapes or {})
    arrays = {k: tuple(int(d) for d in v) for k, v in (given or {}).items()}
    by_name = {s.name: s for s in specs}
    dim_names = {n for s in specs for n in s.dim_names if n}
    for key, value in shapes.items():
        if key in by_name:
            continue
        if key not in dim_names:
            raise ArgumentError(
                "shapes",
                f"{key!r} is neither an input nor a dimension name of the model; its inputs: "
                f"{', '.join(str(s) for s in specs)}; its dimension names: {', '.join(sorted(dim_names)) or 'none'}",
            )
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ArgumentError(
                "shapes", f"dimension {key!r} takes one size (an integer >= 0), got {value!r}"
            )
    for name in arrays:
        if name not in by_name:
            raise InputSpecError(
                f"the model has no input {name!r}; its inputs are: {', '.join(by_name)}", tensor=name
            )

    fixed: dict[str, tuple[int, ...]] = {}
    for spec in specs:
        if spec.name in shapes:
            fixed[spec.name] = _shape_of(spec, shapes[spec.name], "shapes")
        elif spec.name in arrays:
            dims = arrays[spec.name]
            if not spec.accepts(dims):
                raise InputSpecError(
                    f"input {spec.name!r}: given shape {dims} does not fit the model's {spec}",
                    tensor=spec.name,
                )
            if batch is not None:  # the batch asked for wins over the data's own row count
                dims = tuple(batch if is_batch_axis(spec, i) else int(d) for i, d in enumerate(dims))
            fixed[spec.name] = dims
    named: dict[str, int] = {k: int(v) for k, v in shapes.items() if k not in by_name}  # type: ignore[arg-type]
    patterns: dict[tuple[int | None, ...], tuple[int, ...]] = {}
    for name, dims in fixed.items():
        spec = by_name[name]
        patterns.setdefault(spec.shape, dims)
        for d, n, size in zip(spec.shape, spec.dim_names, dims, strict=True):
            if d is None and is_symbol(n):
                named.setdefault(n, size)  # type: ignore[arg-type]

    out: dict[str, tuple[int, ...]] = {}
    notes: dict[str, str] = {}
    batch_seen = False
    for spec in specs:
        said: list[str] = []
        if spec.name in fixed:
            out[spec.name] = fixed[spec.name]
            batch_seen |= any(is_batch_axis(spec, i) for i in range(spec.rank))
            notes[spec.name] = ""
            continue
        sizes: list[int] = []
        for i, (d, n) in enumerate(zip(spec.shape, spec.dim_names, strict=True)):
            label = n if is_symbol(n) else f"dim {i}"
            if d is not None:
                sizes.append(d)
                continue
            batch_seen |= is_batch_axis(spec, i)
            if is_symbol(n) and n in named:
                size = named[n]
                if n not in shapes:
                    said.append(f"{label}={size} (as in another input)")
            elif not is_symbol(n) and spec.shape in patterns:
                size = patterns[spec.shape][i]
                said.append(f"{label}={size} (as the input of the same shape)")
            elif is_batch_axis(spec, i):
                size = batch if batch is not None else 1
                said.append(f"{label}={size} (batch)")
            elif is_signal_axis(spec, i) and dynamic_size < SIGNAL_SIZE:
                size = SIGNAL_SIZE
                said.append(f"{label}={size} (samples of a signal: the last dimension of a 2-d float input)")
            else:
                size = dynamic_size
                said.append(f"{label}={size} (default size of a dynamic dimension)")
            if is_symbol(n):
                named.setdefault(n, size)  # type: ignore[arg-type]
            sizes.append(size)
        out[spec.name] = tuple(sizes)
        patterns.setdefault(spec.shape, out[spec.name])
        notes[spec.name] = "; ".join(said)
    if batch is not None and not batch_seen:
        first = next((s for s in specs if s.rank), None)
        raise ArgumentError(
            "batch",
            f"{batch} asked, but no input has a dynamic batch dimension ({first or 'the inputs are 0-d'}); "
            "export the model with a dynamic batch axis, or leave the batch out",
        )
    return out, notes


# -- values -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InputInfo:
    """One input as fed, and where its values and shape came from."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    source: str  # "given", "generated: uniform [-1, 1)", "data file", ...


def _kind(dt: np.dtype) -> str:
    """The kind a value keeps when it is cast: bool, integer, float, complex or string."""
    if dt == np.bool_:
        return "bool"
    if dt.kind in "iu":
        return "integer"
    if dt.kind == "f" or dt.name == "bfloat16":
        return "float"
    if dt.kind == "c":
        return "complex"
    return "string" if dt.kind in "USO" else dt.kind


def _finite_max(a: np.ndarray) -> float:
    finite = np.abs(a[np.isfinite(a)]) if a.size else a
    return float(finite.max()) if finite.size else 0.0


def _number_for(spec: TensorSpec, value: bool | int | float) -> np.ndarray:
    """A plain number as a 0-d array of the input's dtype, refused unless it fits exactly."""
    dt = spec.dtype
    kind = _kind(dt)
    if kind == "bool":
        if value in (0, 1):
            return np.asarray(bool(value))
        raise InputSpecError(
            f"input {spec.name!r} is bool: expected true, false, 0 or 1, got {value!r}", tensor=spec.name
        )
    if kind == "integer":
        info = np.iinfo(dt)
        if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
            raise InputSpecError(
                f"input {spec.name!r} takes {dt} integers: expected a whole number, got {value!r}",
                tensor=spec.name,
            )
        if not info.min <= value <= info.max:
            raise InputSpecError(
                f"input {spec.name!r}: {value!r} is outside the range of {dt} [{info.min}, {info.max}]",
                tensor=spec.name,
            )
        return np.asarray(int(value), dt)
    if kind in ("float", "complex"):
        out_of_range = InputSpecError(
            f"input {spec.name!r}: {value!r} is outside the range of {dt}", tensor=spec.name
        )
        try:
            number = float(value)
        except OverflowError:  # an int beyond float64
            raise out_of_range from None
        with np.errstate(over="ignore"):
            a = np.asarray(number).astype(dt)
        if math.isfinite(number) and not np.isfinite(a):
            raise out_of_range
        return a
    raise InputSpecError(
        f"input {spec.name!r} is a {dt} tensor: a number cannot fill it; give an array", tensor=spec.name
    )


def _cast(spec: TensorSpec, a: np.ndarray, origin: str) -> np.ndarray:
    """``a`` as the input's dtype: same kind only, every value kept (no wrap-around, no inf)."""
    dt = spec.dtype
    if _kind(a.dtype) != _kind(dt):
        raise InputSpecError(
            f"{origin}input {spec.name!r}: given dtype {a.dtype} cannot become the model's {dt} without "
            f"changing kind ({_kind(a.dtype)} to {_kind(dt)}); cast it with .astype(np.{dt.name})",
            tensor=spec.name,
        )
    if _kind(dt) == "integer" and a.size:
        info = np.iinfo(dt)
        lo, hi = a.min(), a.max()
        if lo < info.min or hi > info.max:
            raise InputSpecError(
                f"{origin}input {spec.name!r}: given {a.dtype} values span [{lo}, {hi}], outside the "
                f"model's {dt} range [{info.min}, {info.max}]",
                tensor=spec.name,
            )
    with np.errstate(over="ignore"):
        out = a.astype(dt)
    if _kind(dt) in ("float", "complex") and bool(np.any(np.isfinite(a) & ~np.isfinite(out))):
        raise InputSpecError(
            f"{origin}input {spec.name!r}: given {a.dtype} values up to {_finite_max(a):g} overflow the model's {dt}",
            tensor=spec.name,
        )
    return out


def as_feed(spec: TensorSpec, value: Any, *, origin: str = "") -> tuple[np.ndarray, str]:
    """A given value as ``spec``'s input, and how it was read (``"given"``, ``"given (float64 cast
    to float32)"``...). A plain number fills the tensor with ``spec``'s concrete shape (dynamic
    dimensions 1); see ``make_feeds`` for a number filling a resolved shape. ``origin`` prefixes
    error messages (``"data.npz: "``)."""
    if isinstance(value, (bool, int, float)) and not isinstance(value, np.generic):
        a, source = _number_for(spec, value), "given"  # a plain number has no dtype of its own
    else:
        a, source = np.asarray(value), "given"
        if a.dtype != spec.dtype:
            source = f"given ({a.dtype} cast to {spec.dtype})"
            a = _cast(spec, a, origin)
    if a.ndim == 0 and spec.rank > 0:
        return a, f"given (fills the tensor with {a.item()!r})"
    if not spec.accepts(a.shape):
        raise InputSpecError(
            f"{origin}input {spec.name!r}: given shape {a.shape} does not fit the model's {spec}",
            tensor=spec.name,
        )
    return (np.ascontiguousarray(a) if a.ndim else a), source


def _vocab_size(metadata: Mapping[str, str]) -> int | None:
    for key, value in metadata.items():
        if key.lower().endswith("vocab_size"):
            try:
                return int(value)
            except ValueError:
                continue
    return None


def _range_of(
    spec: TensorSpec, ranges: Mapping[str, tuple[float, float]], metadata: Mapping[str, str]
) -> tuple[tuple[float, float] | None, str]:
    if spec.name in ranges:
        return tuple(ranges[spec.name]), "given range"  # type: ignore[return-value]
    raw = metadata.get(f"infercore.input_range.{spec.name}")
    if raw:
        lo, _, hi = raw.partition(":")
        try:
            return (float(lo), float(hi)), "model metadata"
        except ValueError:
            pass
    return None, ""


def generate(
    spec: TensorSpec,
    shape: tuple[int, ...],
    rng: np.random.Generator,
    *,
    ranges: Mapping[str, tuple[float, float]] | None = None,
    metadata: Mapping[str, str] | None = None,
    distribution: str = "uniform",
) -> tuple[np.ndarray, str]:
    """Values for one input of ``shape`` by the module's rule, and a description of them."""
    dt = spec.dtype
    name = spec.name.lower()
    metadata = metadata or {}
    bounds, why = _range_of(spec, ranges or {}, metadata)
    kind = _kind(dt)
    if kind == "string":
        letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
        words = ["".join(rng.choice(letters, int(n))) for n in rng.integers(1, 9, int(np.prod(shape)))]
        return np.array(words, dtype=object).reshape(shape).astype(dt), "generated: random words"
    if kind == "bool":
        return rng.integers(0, 2, shape).astype(np.bool_), "generated: random bool"
    if kind in ("float", "complex"):
        if bounds is not None:
            lo, hi = bounds
            return rng.uniform(lo, hi, shape).astype(dt), f"generated: uniform [{lo:g}, {hi:g}) ({why})"
        if distribution == "normal":
            return rng.standard_normal(shape).astype(dt), "generated: normal(0, 1)"
        return rng.uniform(-1.0, 1.0, shape).astype(dt), "generated: uniform [-1, 1)"
    if kind != "integer":
        raise InputSpecError(f"input {spec.name!r}: cannot generate dtype {dt}; give it", tensor=spec.name)
    info = np.iinfo(dt)
    if bounds is not None:
        lo, hi = max(int(bounds[0]), int(info.min)), min(int(bounds[1]), int(info.max) + 1)
        if hi <= lo:
            raise ArgumentError("ranges", f"input {spec.name!r}: empty integer range {bounds} for {dt}")
        return rng.integers(lo, hi, shape, dtype=np.int64).astype(
            dt
        ), f"generated: integers [{lo}, {hi}) ({why})"
    if "mask" in name:
        return np.ones(shape, dt), "generated: ones (a mask)"
    if "type_id" in name or "segment" in name:
        return np.zeros(shape, dt), "generated: zeros (token types)"
    if _SAMPLE_RATE_NAME.fullmatch(name) and info.min <= SAMPLE_RATE <= info.max:
        return np.full(shape, SAMPLE_RATE, dt), f"generated: {SAMPLE_RATE} (a sample rate)"
    if "position" in name and len(shape):
        return np.broadcast_to(np.minimum(np.arange(shape[-1]), int(info.max)), shape).astype(dt), (
            "generated: positions 0, 1, 2... along the last axis"
        )
    vocab = _vocab_size(metadata)
    if vocab is not None and ("id" in name or "token" in name):
        return rng.integers(0, vocab, shape).astype(dt), f"generated: token ids [0, {vocab}) (model metadata)"
    if dt.itemsize == 1:
        return rng.integers(info.min, int(info.max) + 1, shape).astype(
            dt
        ), f"generated: [{info.min}, {info.max}]"
    return rng.integers(0, 100, shape).astype(dt), "generated: integers [0, 100)"


def _fit_rows(spec: TensorSpec, a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A given array brought to ``shape`` along its batch axis: rows repeated or cut."""
    if a.shape == shape:
        return a
    axes = [i for i in range(spec.rank) if a.shape[i] != shape[i]]
    if len(axes) == 1 and is_batch_axis(spec, axes[0]) and a.shape[axes[0]] > 0:
        ax = axes[0]
        return np.ascontiguousarray(np.take(a, np.arange(shape[ax]) % a.shape[ax], axis=ax))
    raise InputSpecError(f"input {spec.name!r}: given shape {a.shape} does not fit {shape}", tensor=spec.name)


def make_feeds(
    specs: Sequence[TensorSpec],
    *,
    values: Mapping[str, Any] | None = None,
    shapes: Mapping[str, Sequence[int] | int] | None = None,
    batch: int | None = None,
    seed: int = 0,
    ranges: Mapping[str, tuple[float, float]] | None = None,
    metadata: Mapping[str, str] | None = None,
    distribution: str = "uniform",
    dynamic_size: int = DYNAMIC_SIZE,
    values_from: str = "given",
) -> tuple[Feeds, dict[str, InputInfo]]:
    """Feeds for every input of ``specs``, and where each came from.

    ``values``: given arrays or numbers for some inputs (see ``as_feed``); a given array fixes its
    input's shape, except that ``batch`` repeats or cuts its rows. The rest are generated from
    ``seed`` (see the module for the shape and value rules). ``metadata`` is the model's
    (``engine.metadata``): it may carry a vocabulary size or value ranges. ``values_from`` names
    where ``values`` came from in ``InputInfo.source`` (``"data file"``).
    """
    check_choice("distribution", distribution, _DISTRIBUTIONS)
    check_int("seed", seed, minimum=0)
    by_name = {s.name: s for s in specs}
    for name in [*(values or {}), *(ranges or {})]:
        if name not in by_name:
            raise InputSpecError(
                f"the model has no input {name!r}; its inputs are: {', '.join(by_name)}", tensor=name
            )
    read: dict[str, tuple[np.ndarray, str]] = {k: as_feed(by_name[k], v) for k, v in (values or {}).items()}
    arrays = {k: a.shape for k, (a, src) in read.items() if not src.startswith("given (fills")}
    resolved, notes = resolve_shapes(
        specs, shapes=shapes, batch=batch, given=arrays, dynamic_size=dynamic_size
    )
    rng = np.random.default_rng(seed)
    feeds: Feeds = {}
    info: dict[str, InputInfo] = {}
    for spec in specs:
        shape = resolved[spec.name]
        if spec.name in read:
            a, source = read[spec.name]
            source = values_from + source.removeprefix("given")
            a = np.full(shape, a, spec.dtype) if a.ndim == 0 and spec.rank else _fit_rows(spec, a, shape)
        else:
            a, source = generate(
                spec, shape, rng, ranges=ranges, metadata=metadata, distribution=distribution
            )
        if notes.get(spec.name):
            source += f"; {notes[spec.name]}"
        feeds[spec.name] = a
        info[spec.name] = InputInfo(spec.name, str(a.dtype), tuple(a.shape), source)
    return feeds, info

