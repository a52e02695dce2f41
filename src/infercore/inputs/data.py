"""Data from files and datasets: ``.npz``/``.npy`` files and directories, read without pickle, cut
into batches, with labels. A file that cannot be read is an ``InputSpecError`` naming it, never a raw
``EOFError`` or ``BadZipFile``."""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ..arguments import check_int
from ..errors import ArgumentError, InputSpecError, ModelLoadError
from ..specs import TensorSpec
from .feeds import Feeds, as_feed, is_batch_axis

V = TypeVar("V")
LABEL_KEYS = ("labels", "label")


def load_arrays(
    path: str | os.PathLike[str], *, tensor: str | None = None
) -> np.ndarray | dict[str, np.ndarray]:
    """The array of a ``.npy`` file, or the named arrays of a ``.npz``, read without pickle.

    A file that is missing, empty, truncated or not in NumPy's format raises ``InputSpecError``
    naming the file (and ``tensor``, the input it was meant for, when given).
    """
    p = Path(path)
    what = f"input {tensor!r}: " if tensor else ""
    if not p.is_file():
        raise InputSpecError(
            f"{what}{p}: {'is not a file' if p.exists() else 'file not found'}; expected a .npy or .npz file",
            tensor=tensor,
        )
    if p.stat().st_size == 0:
        raise InputSpecError(f"{what}{p} is empty (0 bytes); expected a .npy or .npz file", tensor=tensor)
    with open(p, "rb") as f:
        head = f.read(6)
    if head != b"\x93NUMPY" and not head.startswith(b"PK"):  # neither .npy's magic nor a zip (.npz)
        raise InputSpecError(
            f"{what}{p} is not a .npy or .npz file (it starts with {head!r}); save arrays with np.save / np.savez",
            tensor=tensor,
        )
    try:
        data = np.load(p, allow_pickle=False)
        if isinstance(data, np.ndarray):
            return data
        with data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError) as e:
        reason = "truncated" if isinstance(e, EOFError) else str(e).split(". ")[0]
        raise InputSpecError(
            f"{what}cannot read {p} as a .npy/.npz file ({p.stat().st_size} bytes): {reason}", tensor=tensor
        ) from e


def name_lone_array(data: Mapping[str, V], inputs: Sequence[str]) -> dict[str, V]:
    """``np.savez(path, x)`` names a lone array ``arr_0``: for a single-input model it is that
    input's, whatever its name. Anything else is returned as it is."""
    if len(inputs) == 1 and set(data) == {"arr_0"}:
        return {inputs[0]: data["arr_0"]}
    return dict(data)


# -- data files ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Data:
    """What a ``.npz``/``.npy`` file or a directory of them holds.

    ``items``: one whole dataset (``whole``, from a single file: to be cut into batches) or one
    batch per file of a directory, each an array or a dict name -> array. ``labels``: split off
    from a ``labels`` key of a ``.npz``, or read from ``labels.npy`` in the directory.
    """

    items: tuple[np.ndarray | dict[str, np.ndarray], ...]
    labels: np.ndarray | None
    whole: bool
    source: str


def _natural_key(p: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


def _read_one(path: Path, want: str) -> np.ndarray | dict[str, np.ndarray]:
    data = load_arrays(path)  # InputSpecError naming the file when missing, empty or corrupt
    if want == "npy" and not isinstance(data, np.ndarray):
        raise InputSpecError(f"{path}: expected one array (.npy), got a .npz archive of {sorted(data)}")
    if want == "npz" and isinstance(data, np.ndarray):
        raise InputSpecError(f"{path}: expected a .npz archive of named arrays, got one .npy array")
    if isinstance(data, dict) and not data:
        raise InputSpecError(f"{path}: the .npz file holds no arrays")
    return data


def read_data(source: str | os.PathLike[str]) -> Data:
    """Read a ``.npz`` (keys are input names, ``arr_0`` for a single-input model; a ``labels`` key is
    split off), a ``.npy`` (one array), or a directory of ``.npy``/``.npz`` files read in natural
    order, each one batch, with an optional ``labels.npy`` (one label per sample across the files)."""
    p = Path(source)
    if not p.exists():
        raise InputSpecError(f"data not found: {p} (expected a .npz or .npy file or a directory of them)")
    if p.is_dir():
        files = sorted(
            (f for f in p.iterdir() if f.suffix in (".npy", ".npz") and f.stem not in LABEL_KEYS),
            key=_natural_key,
        )
        if not files:
            raise InputSpecError(f"no .npy or .npz files in {p}")
        items = []
        for f in files:
            d = _read_one(f, f.suffix[1:])
            if isinstance(d, dict) and any(k in d for k in LABEL_KEYS):
                raise InputSpecError(f"{f}: labels go in {p / 'labels.npy'}, not inside batch files")
            items.append(d)
        labels = None
        for k in LABEL_KEYS:
            if (p / f"{k}.npz").exists():
                raise InputSpecError(f"{p / f'{k}.npz'}: labels in a data directory go in {k}.npy (np.save)")
            if (p / f"{k}.npy").exists():
                labels = _read_one(p / f"{k}.npy", "npy")
        return Data(tuple(items), labels, False, str(p))  # type: ignore[arg-type]
    if p.suffix not in (".npz", ".npy"):
        raise InputSpecError(f"{p}: data must be a .npz or .npy file or a directory of them")
    d = _read_one(p, p.suffix[1:])
    labels = None
    if isinstance(d, dict):
        for k in LABEL_KEYS:
            if k in d:
                labels = d.pop(k)
        if not d:
            raise InputSpecError(f"{p}: the .npz file holds only labels, no input arrays")
    return Data((d,), labels, True, str(p))


def name_feeds(
    given: np.ndarray | Mapping[str, Any], specs: Sequence[TensorSpec], origin: str = "data", *, complete: bool = False
) -> dict[str, Any]:
    """``given`` by input name: one array for a single-input model, or a mapping whose keys are
    input names (a lone ``arr_0``, as ``np.savez(path, x)`` writes, for a single-input model).
    Keys the model does not take raise ``InputSpecError``, and so do missing inputs when
    ``complete``; otherwise they are left out (to be generated)."""
    names = [s.name for s in specs]
    if not isinstance(given, Mapping):
        if len(specs) != 1:
            raise InputSpecError(
                f"{origin} holds one array but the model has {len(specs)} inputs ({', '.join(names)}): "
                "give them as a .npz or dict, one array per input name"
            )
        return {names[0]: given}
    out = name_lone_array({str(k): v for k, v in given.items()}, names)
    extra = sorted(set(out) - set(names))
    missing = [n for n in names if n not in out] if complete else []
    if extra or missing:
        said = [f"missing input(s) {missing}"] if missing else []
        said += [f"unknown key(s) {extra}, which the model does not take"] if extra else []
        raise InputSpecError(
            f"{origin}: {'; '.join(said)}; the model's inputs are: {', '.join(str(s) for s in specs)}",
            tensor=(missing or extra)[0],
        )
    return out


def load_feeds(source: str | os.PathLike[str] | Data, specs: Sequence[TensorSpec]) -> Feeds:
    """One feed per input named in a data file or what ``read_data`` read (a directory's batches
    are concatenated, labels are left out), not yet cast: give it to ``make_feeds(values=...)``."""
    data = source if isinstance(source, Data) else read_data(source)
    named = [name_feeds(item, specs, data.source) for item in data.items]
    if len(named) == 1:
        return {k: np.asarray(v) for k, v in named[0].items()}
    out: Feeds = {}
    for k in named[0]:
        parts = [np.asarray(n[k]) for n in named if k in n]
        try:
            out[k] = parts[0] if parts[0].ndim == 0 else np.concatenate(parts)
        except ValueError as e:
            raise InputSpecError(
                f"{data.source}: the batches of input {k!r} do not concatenate: {e}", tensor=k
            ) from e
    return out


# -- batches of a dataset -------------------------------------------------------------------------
def rows(feeds: Mapping[str, np.ndarray]) -> int:
    """Samples in a batch: the first dimension of its first input that has one (1 for 0-d only)."""
    a = next((a for a in feeds.values() if np.ndim(a)), None)
    return int(np.shape(a)[0]) if a is not None else 1


def _batch_feeds(item: Any, specs: Sequence[TensorSpec], where: str) -> Feeds:
    """One batch, every input present, each value read by ``as_feed``'s rule; an input one
    dimension short (one sample without its batch axis) gets that axis."""
    given = name_feeds(item, specs, where, complete=True)
    feeds: Feeds = {}
    for s in specs:
        a = np.asarray(given[s.name]) if not isinstance(given[s.name], (bool, int, float)) else given[s.name]
        if np.ndim(a) == s.rank - 1 and s.rank > 0:
            a = np.asarray(a)[None]
        feeds[s.name], _ = as_feed(s, a, origin=f"{where}: ")
    return feeds


def _sample_axis(spec: TensorSpec) -> int:
    """The axis a dataset's samples run along: the input's batch dimension (Silero VAD's state
    [2, batch, 128] has it second), else the first."""
    return next((i for i in range(spec.rank) if is_batch_axis(spec, i)), 0)


def _cut(whole: Feeds, batch_size: int, specs: Sequence[TensorSpec]) -> list[Feeds]:
    axes = {s.name: _sample_axis(s) for s in specs}
    counts = {k: a.shape[axes[k]] for k, a in whole.items() if a.ndim}  # a 0-d input: every batch gets it
    if len(set(counts.values())) > 1:
        said = ", ".join(f"{k} {v} (axis {axes[k]})" for k, v in counts.items())
        raise InputSpecError(f"dataset arrays disagree on the number of samples: {said}")
    total = next(iter(counts.values()), 1)

    def part(k: str, v: np.ndarray, i: int) -> np.ndarray:
        return np.ascontiguousarray(v[(slice(None),) * axes[k] + (slice(i, i + batch_size),)]) if v.ndim else v

    return [{k: part(k, v, i) for k, v in whole.items()} for i in range(0, total, batch_size)]


def _default_batch(specs: Sequence[TensorSpec]) -> int:
    fixed = {s.shape[0] for s in specs if s.rank and s.shape[0] is not None}
    return int(fixed.pop() or 32) if len(fixed) == 1 else 32


def _items(data: Any) -> tuple[list[Any] | Iterable[Any], bool, np.ndarray | None]:
    """(items, whole dataset?, labels) of any accepted data form."""
    if isinstance(data, (str, os.PathLike)):
        d = read_data(data)
        return list(d.items), d.whole, d.labels
    if isinstance(data, (np.ndarray, Mapping)):
        return [data], True, None
    if isinstance(data, Iterable):
        return data, False, None
    raise ArgumentError(
        "data",
        "expected an array, a dict of arrays, an iterable of batches, a .npz/.npy path or a directory, "
        f"got {type(data).__name__}",
    )


def iter_batches(
    data: Any,
    specs: Sequence[TensorSpec],
    *,
    batch_size: int | None = None,
    exact: bool = False,
    transform: Callable[[Any], Any] | None = None,
) -> Iterator[Feeds]:
    """Batches of ``data`` as feed dicts checked against ``specs``, lazily.

    ``data``: an array or dict of arrays (a dataset, cut into ``batch_size`` rows: 32 by default,
    or the model's fixed batch), an iterable of batches (arrays or dicts; a generator, a
    preprocessing pipeline's output), or a path (see ``read_data``). ``transform`` is applied to
    each item first. ``exact=True`` re-cuts every batch to exactly ``batch_size`` rows (a short
    tail is dropped), as TensorRT's calibrators need.
    """
    check_int("batch_size", batch_size, optional=True)
    if exact and not batch_size:
        raise ArgumentError("exact", "exact=True needs a batch_size")
    items, whole, _ = _items(data)
    pending: list[Feeds] = []
    have = 0
    for i, item in enumerate(items):
        if transform is not None:
            item = transform(item)
        if whole:
            batches = _cut(_batch_feeds(item, specs, "dataset"), batch_size or _default_batch(specs), specs)
        else:
            batches = [_batch_feeds(item, specs, f"batch {i}")]
        for b in batches:
            if not exact or batch_size is None:
                yield b
                continue
            pending.append(b)
            have += rows(b)
            while have >= batch_size:
                joined = {k: np.concatenate([p[k] for p in pending]) for k in pending[0]}
                yield {k: v[:batch_size] for k, v in joined.items()}
                have -= batch_size
                pending = [{k: v[batch_size:] for k, v in joined.items()}] if have else []


@dataclass
class LabelledBatches:
    """Evaluation batches with their labels (``None`` for a batch given without)."""

    batches: list[Feeds]
    labels: list[np.ndarray | None]
    source: str

    @property
    def samples(self) -> int:
        return sum(rows(b) for b in self.batches)

    @property
    def has_labels(self) -> bool:
        return bool(self.labels) and all(lab is not None for lab in self.labels)

    def all_labels(self) -> np.ndarray | None:
        return np.concatenate([lab for lab in self.labels if lab is not None]) if self.has_labels else None


def _align_labels(batches: list[Feeds], labels: Any) -> list[np.ndarray | None]:
    lab = np.asarray(labels)
    total = sum(rows(b) for b in batches)
    if lab.ndim == 0 or lab.shape[0] != total:
        raise InputSpecError(f"labels: {lab.shape[0] if lab.ndim else 1} labels for {total} samples")
    out: list[np.ndarray | None] = []
    i = 0
    for b in batches:
        n = rows(b)
        out.append(lab[i : i + n])
        i += n
    return out


def labelled_batches(
    data: Any,
    specs: Sequence[TensorSpec],
    *,
    batch_size: int | None = None,
    transform: Callable[[Any], Any] | None = None,
    source: str = "eval_data",
) -> LabelledBatches:
    """Batches with labels from: ``(data, labels)``; a dict with a ``labels`` key; a path (a
    ``labels`` key in the ``.npz``, ``labels.npy`` in a directory); an iterable of
    ``(feeds, labels)`` pairs; or data without labels (every label ``None``)."""
    labels: Any = None
    if isinstance(data, tuple) and len(data) == 2 and not isinstance(data[1], Mapping):
        data, labels = data
    elif isinstance(data, Mapping):
        rest = dict(data)
        for k in LABEL_KEYS:
            if k in rest:
                labels = rest.pop(k)
        data = rest
    elif isinstance(data, (str, os.PathLike)):
        d = read_data(data)
        data, labels = (d.items[0] if d.whole else list(d.items)), d.labels
    batches: list[Feeds] = []
    per_batch: list[np.ndarray | None] = []
    if isinstance(data, (np.ndarray, Mapping)) or labels is not None:
        batches = list(iter_batches(data, specs, batch_size=batch_size, transform=transform))
        per_batch = _align_labels(batches, labels) if labels is not None else [None] * len(batches)
        return LabelledBatches(batches, per_batch, source)
    for i, item in enumerate(data):
        if isinstance(item, tuple) and len(item) == 2:
            feeds, lab = item
            b = _batch_feeds(transform(feeds) if transform else feeds, specs, f"{source} batch {i}")
            lab_arr = np.asarray(lab).reshape(-1) if np.ndim(lab) <= 1 else np.asarray(lab)
            if lab_arr.shape[0] != rows(b):
                raise InputSpecError(f"{source} batch {i}: {lab_arr.shape[0]} labels for {rows(b)} samples")
            batches.append(b)
            per_batch.append(lab_arr)
        else:
            more = list(iter_batches([item], specs, batch_size=batch_size, transform=transform))
            batches += more
            per_batch += [None] * len(more)
    return LabelledBatches(batches, per_batch, source)



# -- a model's inputs without a session ---------------------------------------------------------------
def model_inputs(model: str | os.PathLike[str]) -> tuple[TensorSpec, ...]:
    """The input specs of an ONNX file read with ``onnx`` (no runtime session: cheap for big
    models), of any other file through ``ic.load`` on its default backend."""
    path = Path(model)
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path}", path=str(path))
    if path.suffix.lower() != ".onnx":
        from ..engine import load

        with load(path) as eng:
            return eng.inputs
    from ..optional import require

    onnx = require("onnx", "onnx")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError, or an OSError
        raise ModelLoadError(
            f"{path}: not a readable ONNX model ({type(e).__name__}: {e})", path=str(path)
        ) from e
    if not proto.graph.node:  # protobuf decodes an empty file (and some junk) as an empty model
        raise ModelLoadError(f"{path}: not an ONNX model (no graph nodes)", path=str(path))
    inits = {t.name for t in proto.graph.initializer}
    specs = []
    for vi in proto.graph.input:
        if vi.name in inits:
            continue
        t = vi.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim)
        names = tuple(d.dim_param or None for d in t.shape.dim)
        specs.append(TensorSpec(vi.name, onnx.helper.tensor_dtype_to_np_dtype(t.elem_type), dims, names))
    if not specs:
        raise ModelLoadError(f"{path}: the model has no inputs to feed", path=str(path))
    return tuple(specs)
