"""Post-training INT8 quantization with a measured accuracy report.

    import infercore as ic
    res = ic.calibrate("model.onnx", calib_batches, target="ort",
                       eval_data=(x_test, y_test), metric="accuracy", max_drop=0.01)
    res.artifact_path          # the INT8 model: Q/DQ ONNX (ort, tensorrt) or OpenVINO IR (openvino)
    print(res.report)          # fp32 vs int8 score, the drop, output cosine, speed ratio: all measured

Targets: ``ort`` writes a Q/DQ ONNX with ``onnxruntime.quantization`` (static, or dynamic; preset
``transformer`` quantizes MatMul only, dynamic and per channel); ``openvino`` runs NNCF post-training
quantization and writes IR; ``tensorrt`` writes the Q/DQ ONNX TensorRT's explicit quantization
takes (int8, symmetric, zero point 0, bias left in float), since TensorRT 11 has no calibrators;
``calibration_batches`` feeds the TensorRT 10 calibrator of the TensorRT backend.

The report is measured, never assumed: the metric on ``eval_data`` (or, without it, output cosine
on calibration batches held back from calibration), and the latency of both models on the target's
backend. ``max_drop`` turns an excessive drop into ``CalibrationDropError`` (a ``CalibrationError``)
carrying the report. Artifacts are cached by model hash, data fingerprint and options.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .datafiles import load_arrays, name_lone_array
from .errors import (
    BackendUnavailableError,
    CalibrationDropError,
    CalibrationError,
    InfercoreError,
    InputSpecError,
    ModelLoadError,
    UnknownBackendError,
)
from .optional import require
from .specs import TensorSpec

__all__ = [
    "CalibrationDropError",
    "CalibrationReport",
    "CalibrationResult",
    "calibrate",
    "calibration_batches",
    "load_data",
]

log = logging.getLogger(__name__)

TARGETS = ("ort", "openvino", "tensorrt")
METHODS = ("minmax", "entropy", "percentile")
PRESETS = ("cnn", "transformer")
EXTRA = "quantize"
_CACHE_VERSION = 1
_LABEL_KEYS = ("labels", "label")

Feeds = dict[str, np.ndarray]
Metric = str | Callable[[np.ndarray, np.ndarray | None], float]
DataSource = Any  # arrays, feed dicts, iterables of them, .npz/.npy paths, directories (see load_data)


# -- results ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CalibrationReport:
    """What quantization (or FP16 conversion) cost, measured on real data.

    ``fp32_score``/``quantized_score`` are the ``metric`` on ``eval_samples`` samples (accuracy and
    top-k as fractions; for ``cosine`` the fp32 score is 1 and the quantized score the mean
    per-sample cosine of the outputs); ``drop`` is ``fp32_score - quantized_score`` and ``passed``
    says whether it stayed within ``max_drop``. ``cosine_mean``/``cosine_min`` compare the two
    models' outputs sample by sample, whatever the metric. Latencies are medians per batch of
    ``speed_batch`` samples on ``backend``, the two models measured alternately in one run.
    """

    kind: str  # "int8" or "fp16"
    target: str
    mode: str  # "static Q/DQ", "dynamic", "nncf", "fp16"
    method: str | None
    preset: str | None
    per_channel: bool | None
    metric: str
    output: str
    fp32_score: float
    quantized_score: float
    drop: float
    max_drop: float | None
    passed: bool
    cosine_mean: float
    cosine_min: float
    eval_samples: int
    eval_source: str
    calibration_samples: int
    backend: str | None
    speed_batch: int | None
    fp32_ms: float | None
    quantized_ms: float | None
    speedup: float | None
    model: str
    artifact: str
    cached: bool = False
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["notes"] = list(self.notes)
        return d

    def _score(self, v: float) -> str:
        if self.metric == "accuracy" or self.metric.startswith("top"):
            return f"{100 * v:.2f}%"
        return f"{v:.5f}"

    def _delta(self, v: float) -> str:
        if self.metric == "accuracy" or self.metric.startswith("top"):
            return f"{100 * v:+.2f} pt"
        return f"{v:+.5f}"

    def __str__(self) -> str:
        q = self.kind.upper()
        how = [self.mode]
        if self.method:
            how.append(self.method)
        if self.preset:
            how.append(f"preset {self.preset}")
        if self.per_channel is not None:
            how.append("per-channel" if self.per_channel else "per-tensor")
        # without max_drop nothing was checked: say so rather than "ok" beside a collapsed score
        verdict = "not checked (no max_drop)" if self.max_drop is None else "ok" if self.passed else "FAILED"
        limit = f", max_drop {self._delta(self.max_drop).lstrip('+')}" if self.max_drop is not None else ""
        lines = [
            f"{q} for {self.target} ({', '.join(how)}): {Path(self.model).name} -> {self.artifact}"
            + (" (cached)" if self.cached else ""),
            f"  {self.metric} on {self.eval_samples} samples ({self.eval_source}), output {self.output!r}: "
            f"fp32 {self._score(self.fp32_score)}  {self.kind} {self._score(self.quantized_score)}  "
            f"drop {self._delta(self.drop)}{limit}  {verdict}",
            f"  output cosine vs fp32: mean {self.cosine_mean:.5f}  min {self.cosine_min:.5f}",
        ]
        if self.speedup is not None and self.fp32_ms is not None and self.quantized_ms is not None:
            lines.append(
                f"  speed on {self.backend}, batch {self.speed_batch}: fp32 {self.fp32_ms:.3f} ms  "
                f"{self.kind} {self.quantized_ms:.3f} ms  -> {self.speedup:.2f}x"
            )
        else:
            lines.append(f"  speed: not measured ({self.backend or 'no backend'})")
        if self.calibration_samples:
            lines.append(f"  calibrated on {self.calibration_samples} samples")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)


@dataclass(frozen=True)
class CalibrationResult:
    """The quantized model's path (``.onnx`` or OpenVINO ``.xml``) and its measured report."""

    artifact_path: Path
    report: CalibrationReport


# -- data ------------------------------------------------------------------------------------------
def _natural_key(p: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


def _read_npy(path: Path) -> np.ndarray:
    data = load_arrays(path)
    if not isinstance(data, np.ndarray):
        raise InputSpecError(f"{path}: expected one array (.npy), got a .npz archive of {sorted(data)}")
    return data


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    data = load_arrays(path)
    if isinstance(data, np.ndarray):
        raise InputSpecError(f"{path}: expected a .npz archive of named arrays, got one .npy array")
    if not data:
        raise InputSpecError(f"{path}: the .npz file holds no arrays")
    return data


def load_data(source: str | os.PathLike[str]) -> tuple[list[Any], np.ndarray | None]:
    """Read calibration or evaluation data from disk: (items, labels or None).

    A ``.npz`` file is one dataset (keys are input names, ``arr_0`` for a single-input model; a
    ``labels`` key is split off); a ``.npy`` file is one array. A directory holds ``.npy``/``.npz``
    files read in natural order, each one batch, and optionally ``labels.npy`` with one label per
    sample across all files in that order.
    """
    p = Path(source)
    if not p.exists():
        raise FileNotFoundError(f"calibration data not found: {p}")
    labels: np.ndarray | None = None
    if p.is_dir():
        files = sorted(
            (f for f in p.iterdir() if f.suffix in (".npy", ".npz") and f.stem not in _LABEL_KEYS),
            key=_natural_key,
        )
        if not files:
            raise CalibrationError(f"no .npy or .npz files in {p}")
        items: list[Any] = []
        for f in files:
            if f.suffix == ".npz":
                d = _read_npz(f)
                for k in _LABEL_KEYS:
                    if k in d:
                        raise CalibrationError(
                            f"{f}: labels go in {p / 'labels.npy'}, not inside batch files"
                        )
                items.append(d)
            else:
                items.append(_read_npy(f))
        for k in _LABEL_KEYS:
            if (p / f"{k}.npz").exists():
                raise CalibrationError(f"{p / f'{k}.npz'}: labels in a data directory go in {k}.npy (np.save)")
            if (p / f"{k}.npy").exists():
                labels = _read_npy(p / f"{k}.npy")
        return items, labels
    if p.suffix == ".npz":
        d = _read_npz(p)
        for k in _LABEL_KEYS:
            if k in d:
                labels = d.pop(k)
        if not d:
            raise InputSpecError(f"{p}: the .npz file holds only labels, no input arrays")
        return [_Dataset(d)], labels
    if p.suffix == ".npy":
        return [_Dataset(_read_npy(p))], None
    raise CalibrationError(f"{p}: calibration data must be a .npz or .npy file or a directory of them")


class _Dataset:
    """A whole dataset in memory (an array or a dict of arrays), to be cut into batches."""

    def __init__(self, value: np.ndarray | Mapping[str, Any]) -> None:
        self.value = value


def _to_feeds(item: Any, specs: Sequence[TensorSpec], where: str) -> Feeds:
    """One batch as a dict name -> array, checked against the model's inputs (never cast)."""
    if isinstance(item, Mapping):  # a lone arr_0 (np.savez(path, x)) is a single input's
        given = name_lone_array({str(k): v for k, v in item.items()}, [s.name for s in specs])
    elif len(specs) == 1:
        given = {specs[0].name: item}
    else:
        names = ", ".join(s.name for s in specs)
        raise InputSpecError(
            f"{where}: the model has {len(specs)} inputs ({names}); give each batch as a dict"
        )
    wanted = {s.name for s in specs}
    missing = [s.name for s in specs if s.name not in given]
    extra = sorted(k for k in given if k not in wanted)
    if missing or extra:
        raise InputSpecError(
            f"{where}: missing input(s) {missing or 'none'}, unknown key(s) {extra or 'none'}; "
            f"the model's inputs are: {', '.join(str(s) for s in specs)}",
            tensor=(missing or extra)[0],
        )
    feeds: Feeds = {}
    for s in specs:
        a = np.asarray(given[s.name])
        if a.dtype != s.dtype:
            if a.dtype.kind in "iub" and s.dtype.kind in "iu" and np.can_cast(a.dtype, s.dtype):
                a = a.astype(s.dtype)  # lossless widening of integer ids
            else:
                raise InputSpecError(
                    f"{where}: input {s.name!r} has dtype {a.dtype}, the model takes {s.dtype}; "
                    f"infercore never casts silently: cast it with x.astype(np.{s.dtype.name})",
                    tensor=s.name,
                )
        if a.ndim == s.rank - 1 and s.rank > 0:
            a = a[None]  # one sample without its batch axis
        if not s.accepts(a.shape):
            raise InputSpecError(
                f"{where}: input {s.name!r} has shape {a.shape}, the model takes {s}", tensor=s.name
            )
        feeds[s.name] = np.ascontiguousarray(a) if a.ndim else a  # keeps a 0-d input 0-d
    return feeds


def _split(ds: _Dataset, specs: Sequence[TensorSpec], batch_size: int | None) -> list[Feeds]:
    whole = _to_feeds(ds.value, specs, "dataset")
    # a 0-d input (Silero VAD's sample rate) has no samples to cut: every batch gets it as it is
    n = {a.shape[0] for a in whole.values() if a.ndim}
    if len(n) > 1:
        raise InputSpecError(f"dataset arrays disagree on the number of samples: {sorted(n)}")
    rows = n.pop() if n else 1
    step = batch_size or _default_batch(specs)
    return [{k: v[i : i + step] if v.ndim else v for k, v in whole.items()} for i in range(0, rows, step)]


def _default_batch(specs: Sequence[TensorSpec]) -> int:
    fixed = {s.shape[0] for s in specs if s.rank and s.shape[0] is not None}
    return fixed.pop() if len(fixed) == 1 else 32


def _rows(feeds: Feeds) -> int:
    a = next((a for a in feeds.values() if a.ndim), None)
    return int(a.shape[0]) if a is not None else 1


def _items(
    data: DataSource, transform: Callable[[Any], Any] | None
) -> tuple[Iterable[Any], np.ndarray | None]:
    if isinstance(data, (str, os.PathLike)):
        items, labels = load_data(data)
        return (map(transform, items) if transform else items), labels
    if isinstance(data, (np.ndarray, Mapping)):
        return [_Dataset(data if transform is None else transform(data))], None
    if isinstance(data, Iterable):
        return (map(transform, data) if transform else data), None
    raise TypeError(
        f"calibration data must be an array, a dict of arrays, an iterable of batches, a .npz/.npy path "
        f"or a directory, got {type(data).__name__}"
    )


def _check_batch_size(batch_size: int | None) -> None:
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1
    ):
        raise ValueError(
            f"batch_size must be a positive integer (or None for the default), got {batch_size!r}"
        )


def _check_finite(batches: Sequence[Feeds], what: str) -> None:
    """NaN or inf in the data makes calibration ranges (and every score) meaningless: name where."""
    for i, b in enumerate(batches):
        for name, a in b.items():
            if a.dtype.kind in "fc" and not np.isfinite(a).all():
                nan, inf = int(np.isnan(a).sum()), int(np.isinf(a).sum())
                raise InputSpecError(
                    f"{what} batch {i}, input {name!r}: {nan} NaN and {inf} inf of {a.size} values; "
                    "the data must be finite (check the preprocessing)",
                    tensor=name,
                )


def calibration_batches(
    data: DataSource,
    inputs: Sequence[TensorSpec],
    *,
    batch_size: int | None = None,
    exact: bool = False,
    transform: Callable[[Any], Any] | None = None,
) -> Iterator[Feeds]:
    """Batches as feed dicts checked against ``inputs`` (e.g. ``engine.inputs``), lazily.

    ``data``: an array or dict of arrays (a dataset, cut into ``batch_size`` rows, 32 by default or
    the model's fixed batch), an iterable of batches (arrays or dicts; a generator, a preprocessing
    pipeline's output), a ``.npz``/``.npy`` file or a directory of them (see ``load_data``).
    ``transform`` is applied to each item first. ``exact=True`` re-cuts every batch to exactly
    ``batch_size`` rows (a short tail is dropped), as TensorRT's calibrators need.
    """
    _check_batch_size(batch_size)
    if exact and not batch_size:
        raise ValueError("exact=True needs a batch_size")
    items, _ = _items(data, transform)
    pending: list[Feeds] = []
    have = 0
    for i, item in enumerate(items):
        if isinstance(item, _Dataset):
            batches = _split(item, inputs, batch_size)
        else:
            batches = [_to_feeds(item, inputs, f"batch {i}")]
        for b in batches:
            if not exact or batch_size is None:
                yield b
                continue
            pending.append(b)
            have += _rows(b)
            while have >= batch_size:
                joined = {k: np.concatenate([p[k] for p in pending]) for k in pending[0]}
                yield {k: v[:batch_size] for k, v in joined.items()}
                rest = {k: v[batch_size:] for k, v in joined.items()}
                have -= batch_size
                pending = [rest] if have else []


@dataclass
class _EvalSet:
    batches: list[Feeds]
    labels: list[np.ndarray | None]
    source: str

    @property
    def samples(self) -> int:
        return sum(_rows(b) for b in self.batches)

    @property
    def has_labels(self) -> bool:
        return bool(self.labels) and all(lab is not None for lab in self.labels)


def _align_labels(batches: list[Feeds], labels: Any) -> list[np.ndarray | None]:
    lab = np.asarray(labels)
    total = sum(_rows(b) for b in batches)
    if lab.ndim == 0 or lab.shape[0] != total:
        raise CalibrationError(f"eval labels: {lab.shape[0] if lab.ndim else 1} labels for {total} samples")
    out: list[np.ndarray | None] = []
    i = 0
    for b in batches:
        n = _rows(b)
        out.append(lab[i : i + n])
        i += n
    return out


def _eval_set(
    eval_data: Any,
    specs: Sequence[TensorSpec],
    batch_size: int | None,
    transform: Callable[[Any], Any] | None,
) -> _EvalSet:
    """eval_data forms: (data, labels); a dict with a "labels" key; a path (labels.npy / "labels" key);
    an iterable of (feeds, labels) pairs; or plain data (no labels: cosine only)."""
    labels: Any = None
    data = eval_data
    if isinstance(eval_data, tuple) and len(eval_data) == 2 and not isinstance(eval_data[1], Mapping):
        data, labels = eval_data
    elif isinstance(eval_data, Mapping):
        rest = dict(eval_data)
        for k in _LABEL_KEYS:
            if k in rest:
                labels = rest.pop(k)
        data = rest
    elif isinstance(eval_data, (str, os.PathLike)):
        items, labels = load_data(eval_data)
        data = items
    batches: list[Feeds] = []
    per_batch: list[np.ndarray | None] = []
    if isinstance(data, (np.ndarray, Mapping, str, os.PathLike)) or labels is not None:
        batches = list(calibration_batches(data, specs, batch_size=batch_size, transform=transform))
        per_batch = _align_labels(batches, labels) if labels is not None else [None] * len(batches)
        return _EvalSet(batches, per_batch, "eval_data")
    for i, item in enumerate(data):
        if isinstance(item, tuple) and len(item) == 2:
            feeds, lab = item
            b = _to_feeds(transform(feeds) if transform else feeds, specs, f"eval batch {i}")
            lab_arr = np.asarray(lab).reshape(-1) if np.ndim(lab) <= 1 else np.asarray(lab)
            if lab_arr.shape[0] != _rows(b):
                raise CalibrationError(f"eval batch {i}: {lab_arr.shape[0]} labels for {_rows(b)} samples")
            batches.append(b)
            per_batch.append(lab_arr)
        else:
            batches.extend(calibration_batches([item], specs, batch_size=batch_size, transform=transform))
            per_batch.append(None)
    per_batch += [None] * (len(batches) - len(per_batch))
    return _EvalSet(batches, per_batch, "eval_data")


def _hold_back(
    batches: list[Feeds], fraction: float, specs: Sequence[TensorSpec]
) -> tuple[list[Feeds], list[Feeds]]:
    """Split calibration batches: (for calibration, held back for the report)."""
    if len(batches) >= 2:
        n = min(len(batches) - 1, max(1, round(len(batches) * fraction)))
        return batches[:-n], batches[-n:]
    rows = _rows(batches[0])
    if rows >= 2 and all(s.rank and s.shape[0] is None for s in specs):
        cut = max(1, min(rows - 1, round(rows * (1 - fraction))))
        b = batches[0]
        return [{k: v[:cut] for k, v in b.items()}], [{k: v[cut:] for k, v in b.items()}]
    return batches, []


# -- hashing and cache -----------------------------------------------------------------------------
def _cache_root() -> Path:
    root = Path(os.environ.get("INFERCORE_CACHE", Path.home() / ".cache" / "infercore")) / "calibration"
    root.mkdir(parents=True, exist_ok=True)
    return root


def _file_hash(path: Path) -> str:
    h = hashlib.sha256()
    files = [path]
    if path.suffix == ".xml":
        files.append(path.with_suffix(".bin"))
    elif path.suffix == ".onnx":
        files += _external_data_files(path)
    for f in files:
        if f.exists():
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()


def _external_data_files(path: Path) -> list[Path]:
    onnx = require("onnx", EXTRA)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:
        return []
    locs = set()
    for t in model.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                locs.add(e.value)
    return [path.parent / loc for loc in sorted(locs)]


def _fingerprint(batches: Sequence[Feeds]) -> str:
    h = hashlib.sha256()
    for b in batches:
        for k in sorted(b):
            a = b[k]
            h.update(f"{k}|{a.dtype.str}|{a.shape}|".encode())
            h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _versions(*modules: str) -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for m in modules:
        try:
            out[m] = md.version(m)
        except md.PackageNotFoundError:
            out[m] = "absent"
    return out


@contextlib.contextmanager
def _building(entry: Path, key: str, what: str) -> Iterator[Path]:
    """A fresh directory beside the cache ``entry`` to build it in; published as ``entry`` when the
    block ends. On failure the directory goes, and a runtime's own exception becomes a
    ``CalibrationError`` saying ``what`` failed (infercore's errors pass through as they are)."""
    if entry.exists():
        shutil.rmtree(entry, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=entry.parent))
    try:
        yield tmp
        _publish(tmp, entry)
    except InfercoreError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except Exception as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CalibrationError(f"{what} failed: {type(e).__name__}: {e}") from e


def _publish(tmp: Path, final: Path) -> None:
    """Move a finished cache entry into place; a concurrent writer that won first is kept."""
    try:
        tmp.rename(final)
    except OSError:
        if not final.exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def _copy_artifact(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    if src.suffix == ".xml":
        shutil.copyfile(src.with_suffix(".bin"), dst.with_suffix(".bin"))
    return dst


# -- progress --------------------------------------------------------------------------------------
def _progress(it: Iterable[Any], total: int, desc: str, enabled: bool | None) -> Iterable[Any]:
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return it
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return it
    bar: Iterable[Any] = tqdm(it, total=total, desc=desc, unit="batch", leave=False)
    return bar


# -- runners: the fp32 and quantized models on the measuring backend ---------------------------------
class _Runner(Protocol):
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    backend: str

    def run(self, feeds: Feeds) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...


class _EngineRunner:
    def __init__(self, path: Path, backend: str, threads: int | None, **kw: Any) -> None:
        from .engine import load

        self._eng = load(path, backend, threads=threads, **kw)
        self.inputs = self._eng.inputs
        self.outputs = self._eng.outputs
        self.backend = self._eng.backend_name

    def run(self, feeds: Feeds) -> dict[str, np.ndarray]:
        return self._eng.run(feeds)

    def close(self) -> None:
        self._eng.close()


class _RawOpenVINORunner:
    """Plain OpenVINO with the f32 hint: used when infercore's openvino backend is not usable."""

    backend = "openvino (raw, f32 hint)"

    def __init__(self, path: Path, threads: int | None) -> None:
        ov = require("openvino", "openvino")
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self._compiled = ov.Core().compile_model(str(path), "CPU", config)
        self._request = self._compiled.create_infer_request()
        self.inputs = tuple(self._spec(p) for p in self._compiled.inputs)
        self.outputs = tuple(self._spec(p) for p in self._compiled.outputs)
        self._out_names = [s.name for s in self.outputs]

    @staticmethod
    def _spec(port: Any) -> TensorSpec:
        shape = tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
        return TensorSpec(port.get_any_name(), port.get_element_type().to_dtype(), shape)

    def run(self, feeds: Feeds) -> dict[str, np.ndarray]:
        res = self._request.infer(feeds)
        return {n: np.array(res[i]) for i, n in enumerate(self._out_names)}

    def close(self) -> None:
        self._request = None
        self._compiled = None


def _open_runner(
    path: Path, target: str, threads: int | None, notes: list[str], precision: str | None = None
) -> _Runner:
    """The model on the target's backend (openvino falls back to raw OpenVINO if infercore's backend
    is not usable; tensorrt falls back to ONNX Runtime for accuracy, without a speed figure)."""
    if target == "openvino":
        try:
            return _EngineRunner(path, "openvino", threads)
        except (BackendUnavailableError, UnknownBackendError) as e:
            runner = _RawOpenVINORunner(path, threads)
            note = f"infercore's openvino backend is not usable ({e}); measured with raw OpenVINO, f32 hint"
            if note not in notes:
                notes.append(note)
            return runner
    if target == "tensorrt":
        try:
            return _EngineRunner(path, "tensorrt", threads, device="cuda:0", precision=precision)
        except (BackendUnavailableError, UnknownBackendError, ModelLoadError) as e:
            note = (
                f"TensorRT not usable here ({e}); accuracy measured on ONNX Runtime (CPU), speed not measured"
            )
            if note not in notes:
                notes.append(note)
            return _EngineRunner(path, "ort", threads)
    return _EngineRunner(path, "ort", threads)


def _model_specs(model: Path) -> tuple[TensorSpec, ...]:
    """Input specs read from the file, without opening a runtime session."""
    if model.suffix == ".xml":
        ov = require("openvino", "openvino")
        try:
            m = ov.Core().read_model(str(model))
        except Exception as e:  # OpenVINO raises a bare RuntimeError for an unreadable IR
            raise ModelLoadError(f"{model}: not a readable OpenVINO IR ({e})", path=str(model)) from e
        return tuple(_RawOpenVINORunner._spec(p) for p in m.inputs)
    onnx = require("onnx", EXTRA)
    try:
        proto = onnx.load(str(model), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError, or an OSError
        raise ModelLoadError(
            f"{model}: not a readable ONNX model ({type(e).__name__}: {e})", path=str(model)
        ) from e
    if not proto.graph.node:  # protobuf decodes an empty file (and some junk) as an empty model
        raise ModelLoadError(f"{model}: not an ONNX model (no graph nodes)", path=str(model))
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
        raise ModelLoadError(f"{model}: the model has no inputs to feed", path=str(model))
    return tuple(specs)


# -- measuring -------------------------------------------------------------------------------------
def _flat(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a.reshape(a.shape[0], -1) if a.ndim >= 2 else a.reshape(-1, 1)


def _cosines(ref: np.ndarray, got: np.ndarray) -> np.ndarray:
    r, g = _flat(ref), _flat(got)
    num = (r * g).sum(axis=1)
    den = np.linalg.norm(r, axis=1) * np.linalg.norm(g, axis=1)
    same = np.isclose(r, g).all(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.where(same, 1.0, 0.0))
    return np.asarray(cos, dtype=np.float64)


def _class_labels(labels: np.ndarray, rows: int, classes: int | None = None) -> np.ndarray:
    """Labels for accuracy/topK: one integer class index per sample, shape (rows,) or (rows, 1),
    each in ``0 .. classes - 1``."""
    lab = np.asarray(labels)
    if lab.ndim == 2 and lab.shape[1] == 1:
        lab = lab[:, 0]
    if lab.ndim != 1 or lab.shape[0] != rows:
        hint = "; one-hot labels: pass labels.argmax(1)" if lab.ndim == 2 else ""
        raise CalibrationError(
            f"eval labels have shape {np.asarray(labels).shape}; accuracy and topK take one class index per "
            f"sample, shape ({rows},){hint} (a callable metric takes labels of any shape)"
        )
    if lab.dtype.kind not in "iub" and not (lab.dtype.kind == "f" and np.array_equal(lab, np.round(lab))):
        raise CalibrationError(
            f"eval labels have dtype {lab.dtype} with non-integer values; accuracy and topK take integer "
            "class indices (a callable metric takes any labels)"
        )
    if lab.dtype.kind == "b":
        raise CalibrationError(
            "eval labels are booleans; accuracy and topK take integer class indices (labels.astype(int) "
            "for a two-class model)"
        )
    if classes is not None and lab.size and (lab.min() < 0 or lab.max() >= classes):
        raise CalibrationError(
            f"eval labels run from {lab.min():g} to {lab.max():g}, but the output has {classes} classes "
            f"(0..{classes - 1}): every sample would score wrong"
        )
    return lab


def _topk(outputs: np.ndarray, labels: np.ndarray, k: int) -> float:
    logits = _flat(outputs)
    lab = _class_labels(labels, logits.shape[0], logits.shape[1])
    if k == 1:
        return float((logits.argmax(axis=1) == lab).mean())
    top = np.argpartition(-logits, min(k, logits.shape[1]) - 1, axis=1)[:, :k]
    return float((top == lab[:, None]).any(axis=1).mean())


def _metric_name(metric: Metric | None, has_labels: bool) -> str:
    if metric is None:
        return "accuracy" if has_labels else "cosine"
    if callable(metric):
        return getattr(metric, "__name__", "metric")
    m = metric.lower().replace("-", "")
    if m in ("accuracy", "top1"):
        return "accuracy"
    if m == "cosine":
        return m
    if re.fullmatch(r"top\d+", m):
        if int(m[3:]) < 1:
            raise ValueError(f"metric {metric!r}: top-k needs k >= 1 ('top1' is accuracy, 'top5' the usual)")
        return m
    raise ValueError(
        f"metric must be 'accuracy', 'topK' (e.g. 'top5'), 'cosine' or a callable, got {metric!r}"
    )


def _score(
    metric: Metric | None, name: str, outputs: np.ndarray, labels: np.ndarray | None, model: str
) -> float:
    if callable(metric):
        try:
            value = float(metric(outputs, labels))
        except Exception as e:
            raise CalibrationError(
                f"metric {name!r} failed on the {model} outputs (shape {outputs.shape}): {type(e).__name__}: {e}"
            ) from e
        if not math.isfinite(value):
            raise CalibrationError(
                f"metric {name!r} returned {value} on the {model} outputs (shape {outputs.shape}); "
                "a metric must return a finite number, higher is better"
            )
        return value
    if labels is None:
        raise CalibrationError(f"metric {name!r} needs labels: give eval_data as (data, labels)")
    k = 1 if name == "accuracy" else int(name[3:])
    return _topk(outputs, labels, k)


def _float_inputs(feeds: Feeds, specs: Sequence[TensorSpec]) -> Feeds:
    """The same feeds in the float type a converted model takes (an fp16 model without kept I/O types)."""
    want = {s.name: s.dtype for s in specs}
    return {
        k: v.astype(want[k])
        if k in want and v.dtype != want[k] and v.dtype.kind == want[k].kind == "f"
        else v
        for k, v in feeds.items()
    }


def _time(runners: Sequence[_Runner], feeds: Sequence[Feeds], budget_s: float) -> list[float]:
    """Median ms per run of each runner on its feeds, measured alternately (shared noise)."""
    for r, f in zip(runners, feeds, strict=True):
        for _ in range(2):
            r.run(f)
    times: list[list[float]] = [[] for _ in runners]
    t_end = time.perf_counter() + budget_s
    rounds = 0
    while rounds < 5 or (time.perf_counter() < t_end and rounds < 500):
        for i, (r, f) in enumerate(zip(runners, feeds, strict=True)):
            t0 = time.perf_counter()
            r.run(f)
            times[i].append(time.perf_counter() - t0)
        rounds += 1
    return [1e3 * statistics.median(t) for t in times]


@dataclass
class _Measured:
    metric: str
    output: str
    fp32_score: float
    quantized_score: float
    cosine_mean: float
    cosine_min: float
    samples: int
    backend: str | None
    speed_batch: int | None
    fp32_ms: float | None
    quantized_ms: float | None


def _measure(
    fp32: Path,
    quantized: Path,
    *,
    target: str,
    evalset: _EvalSet,
    metric: Metric | None,
    eval_output: str | None,
    threads: int | None,
    timing_s: float,
    notes: list[str],
    precision: str = "int8",
) -> _Measured:
    name = _metric_name(metric, evalset.has_labels)
    ref = _open_runner(fp32, target, threads, notes)
    try:
        q = _open_runner(quantized, target, threads, notes, precision)
    except BaseException:
        ref.close()
        raise
    try:
        out_names = [s.name for s in ref.outputs]
        output = eval_output or out_names[0]
        if output not in out_names:
            raise CalibrationError(f"eval_output {output!r} is not an output; the outputs are {out_names}")
        refs, gots = [], []
        for b in evalset.batches:
            refs.append(ref.run(b)[output])
            gots.append(q.run(_float_inputs(b, q.inputs))[output])
        cos = np.concatenate([_cosines(r, g) for r, g in zip(refs, gots, strict=True)])
        if name == "cosine":
            fp32_score, q_score = 1.0, float(cos.mean())
        else:
            labels = (
                np.concatenate([lab for lab in evalset.labels if lab is not None])
                if evalset.has_labels
                else None
            )
            r_all, g_all = _concat(refs), _concat(gots)
            fp32_score = _score(metric, name, r_all, labels, "fp32")
            q_score = _score(metric, name, g_all, labels, precision)
        speed: list[float | None] = [None, None]
        backend: str | None = ref.backend
        batch: int | None = None
        if timing_s > 0 and not (target == "tensorrt" and ref.backend == "ort"):
            feeds = max(evalset.batches, key=_rows)
            batch = _rows(feeds)
            speed = list(_time([ref, q], [feeds, _float_inputs(feeds, q.inputs)], timing_s))
        elif target == "tensorrt" and ref.backend == "ort":
            backend = "ort (accuracy only)"
        return _Measured(
            name,
            output,
            fp32_score,
            q_score,
            float(cos.mean()),
            float(cos.min()),
            evalset.samples,
            backend,
            batch,
            speed[0],
            speed[1],
        )
    finally:
        q.close()
        ref.close()


def _concat(arrays: list[np.ndarray]) -> np.ndarray:
    try:
        return np.concatenate(arrays)
    except ValueError as e:
        raise CalibrationError(
            f"outputs of the eval batches have different shapes ({[a.shape for a in arrays]}); "
            "use metric='cosine' or a callable on same-shaped batches"
        ) from e


def _report(
    m: _Measured,
    *,
    kind: str,
    target: str,
    mode: str,
    method: str | None,
    preset: str | None,
    per_channel: bool | None,
    max_drop: float | None,
    eval_source: str,
    calibration_samples: int,
    model: Path,
    artifact: Path,
    cached: bool,
    notes: list[str],
) -> CalibrationReport:
    drop = m.fp32_score - m.quantized_score
    passed = max_drop is None or (not math.isnan(drop) and drop <= max_drop)
    speedup = m.fp32_ms / m.quantized_ms if m.fp32_ms and m.quantized_ms else None
    return CalibrationReport(
        kind=kind, target=target, mode=mode, method=method, preset=preset, per_channel=per_channel,
        metric=m.metric, output=m.output, fp32_score=m.fp32_score, quantized_score=m.quantized_score,
        drop=drop, max_drop=max_drop, passed=passed, cosine_mean=m.cosine_mean, cosine_min=m.cosine_min,
        eval_samples=m.samples, eval_source=eval_source, calibration_samples=calibration_samples,
        backend=m.backend, speed_batch=m.speed_batch, fp32_ms=m.fp32_ms, quantized_ms=m.quantized_ms,
        speedup=speedup, model=str(model), artifact=str(artifact), cached=cached, notes=tuple(notes),
    )  # fmt: skip


def _deliver(report: CalibrationReport, artifact: Path, output: str | os.PathLike[str] | None) -> CalibrationResult:
    """Refuse a drop beyond ``max_drop`` (the artifact stays in the cache), else copy to ``output``."""
    final = Path(output) if output is not None else artifact
    if report.passed:
        if output is not None:
            _copy_artifact(artifact, final)
        return CalibrationResult(final, report)
    report = dataclasses.replace(report, artifact=str(artifact))
    raise CalibrationDropError(
        f"{report.kind} {report.metric} dropped by {report._delta(report.drop).lstrip('+')} "
        f"(fp32 {report._score(report.fp32_score)} -> {report._score(report.quantized_score)}), more than "
        f"max_drop {report._delta(report.max_drop or 0.0).lstrip('+')}; the artifact was not written to "
        f"output (it is at {artifact}). Try preset='transformer', exclude_ops=..., another method, or more "
        f"calibration data.\n{report}",
        report=report,
        artifact_path=artifact,
    )


# -- ONNX Runtime / TensorRT Q/DQ -------------------------------------------------------------------
def _prepare_onnx(model: Path, work: Path, per_channel: bool, notes: list[str]) -> tuple[Path, bool]:
    """Upgrade the opset to >= 13 where per-channel needs it, then ORT's quantization pre-processing."""
    onnx = require("onnx", EXTRA)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src = model
    proto = onnx.load(str(model))
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 13:
        try:
            upgraded = onnx.version_converter.convert_version(proto, 13)
            src = work / "upgraded.onnx"
            onnx.save(upgraded, str(src))
            notes.append(f"opset upgraded from {opset} to 13 for Q/DQ")
        except Exception as e:
            if per_channel:
                notes.append(f"opset {opset} could not be upgraded to 13 ({e}); per-tensor quantization used")
                per_channel = False
    pre = work / "preprocessed.onnx"
    try:
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
    except Exception as e:
        log.debug("quant_pre_process failed (%s); retrying without optimization", e)
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True, skip_optimization=True)
            notes.append(f"ORT pre-processing without graph optimization ({type(e).__name__}: {e})")
        except Exception as e2:
            notes.append(f"ORT pre-processing skipped ({type(e2).__name__}: {e2})")
            return src, per_channel
    return pre, per_channel


def _op_types(model: Path) -> set[str]:
    """Op types of the graph and of its subgraphs (If/Loop/Scan bodies)."""
    onnx = require("onnx", EXTRA)
    proto = onnx.load(str(model), load_external_data=False)
    found: set[str] = set()
    graphs = [proto.graph]
    while graphs:
        for n in graphs.pop().node:
            found.add(n.op_type)
            for a in n.attribute:
                graphs.extend([a.g] if a.HasField("g") else [])
                graphs.extend(a.graphs)
    return found


def _check_op_selection(
    present: set[str], include: Sequence[str] | None, exclude: Sequence[str] | None, model: str
) -> list[str]:
    """Refuse op type names the model lacks and a selection that leaves nothing to quantize (an
    empty op list means "every op" to ONNX Runtime); returns notes for excluded types not present."""
    if include is None and exclude is None:
        return []
    have = ", ".join(sorted(present))

    def unknown(names: Sequence[str], option: str) -> str:
        hints = {o: p for o in names for p in present if o.lower() == p.lower()}
        hint = "".join(f"; {o!r}: did you mean {p!r}?" for o, p in hints.items())
        return (
            f"{option} {list(names)} not in {model} (op types are case-sensitive{hint}); its op types: {have}"
        )

    if include is not None:
        missing = [o for o in include if o not in present]
        if missing:
            raise CalibrationError(unknown(missing, "include_ops"))
    absent = [o for o in exclude or () if o not in present]
    if any(o.lower() == p.lower() for o in absent for p in present):
        raise CalibrationError(unknown(absent, "exclude_ops"))
    left = (set(include) if include is not None else present) - set(exclude or ())
    if not left:
        raise CalibrationError(
            f"include/exclude leave no op types to quantize in {model}: include_ops "
            f"{sorted(include) if include is not None else 'all'}, exclude_ops {sorted(exclude or ())}; "
            f"its op types: {have}"
        )
    return [f"exclude_ops {absent} not in the model: nothing to exclude for them"] if absent else []


def _select_ops(
    model: Path, include: Sequence[str] | None, exclude: Sequence[str] | None
) -> list[str] | None:
    """The op types for ONNX Runtime, read on the pre-processed model (never empty: empty means all)."""
    if include is None and exclude is None:
        return None
    ops = sorted((set(include) if include is not None else _op_types(model)) - set(exclude or ()))
    if not ops:
        raise CalibrationError(
            f"exclude_ops {sorted(exclude or ())} leave no op types to quantize after ONNX Runtime's "
            f"pre-processing; its op types: {', '.join(sorted(_op_types(model)))}"
        )
    return ops


# ops a quantized model has: Q/DQ (static), integer kernels (dynamic), QOperator forms
_QUANTIZED_OPS = frozenset(
    {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger",
     "DynamicQuantizeMatMul", "MatMulIntegerToFloat"}
)  # fmt: skip


def _check_quantized(model: Path, out: Path, op_types: Sequence[str] | None, preset: str | None) -> None:
    """A model with no quantized op is the float model under an INT8 name: refuse it."""
    found = _op_types(out)
    if found & _QUANTIZED_OPS or any(o.startswith("QLinear") for o in found):
        return
    why = " (preset 'transformer' quantizes MatMul only)" if preset == "transformer" else ""
    raise CalibrationError(
        f"nothing was quantized in {model.name}: ONNX Runtime inserted no QuantizeLinear/DequantizeLinear "
        f"and no integer op for op types {list(op_types) if op_types is not None else 'all'}{why}; "
        f"the model's op types: {', '.join(sorted(_op_types(model)))}. ONNX Runtime quantizes only the op "
        "types it supports (Conv, MatMul, Gemm, ...): choose include_ops among them"
    )


class _Reader:
    """An ``onnxruntime.quantization.CalibrationDataReader`` over materialized batches."""

    def __init__(self, batches: list[Feeds], progress: bool | None) -> None:
        self._batches = batches
        self._progress = progress
        self.rewind()

    def get_next(self) -> Feeds | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(_progress(self._batches, len(self._batches), "calibrating", self._progress))

    def __len__(self) -> int:
        return len(self._batches)


def _quantize_onnx(
    model: Path,
    out: Path,
    work: Path,
    batches: list[Feeds],
    *,
    target: str,
    method: str,
    preset: str | None,
    dynamic: bool,
    per_channel: bool,
    include_ops: Sequence[str] | None,
    exclude_ops: Sequence[str] | None,
    progress: bool | None,
    notes: list[str],
) -> bool:
    q = require("onnxruntime.quantization", EXTRA, package="onnxruntime")
    src, per_channel = _prepare_onnx(model, work, per_channel, notes)
    if preset == "transformer" and include_ops is None:
        include_ops = ["MatMul"]
    op_types = _select_ops(src, include_ops, exclude_ops)
    if dynamic:
        q.quantize_dynamic(
            str(src), str(out), op_types_to_quantize=op_types, per_channel=per_channel,
            weight_type=q.QuantType.QInt8, extra_options={"MatMulConstBOnly": True},
        )  # fmt: skip
        _check_quantized(model, out, op_types, preset)
        return per_channel
    extra: dict[str, Any] = {}
    if method == "percentile":
        extra["CalibPercentile"] = 99.999
    if target == "tensorrt":
        # TensorRT's explicit quantization: int8, symmetric (zero point 0), one Q/DQ pair per
        # consumer, bias left in float (TensorRT fuses it; an int32 DequantizeLinear is refused).
        extra.update(
            ActivationSymmetric=True, WeightSymmetric=True, DedicatedQDQPair=True, QuantizeBias=False
        )
    calib = {"minmax": q.CalibrationMethod.MinMax, "entropy": q.CalibrationMethod.Entropy,
             "percentile": q.CalibrationMethod.Percentile}[method]  # fmt: skip
    q.quantize_static(
        str(src), str(out), _Reader(batches, progress), quant_format=q.QuantFormat.QDQ,
        op_types_to_quantize=op_types, per_channel=per_channel, activation_type=q.QuantType.QInt8,
        weight_type=q.QuantType.QInt8, calibrate_method=calib, calibration_providers=["CPUExecutionProvider"],
        extra_options=extra,
    )  # fmt: skip
    _check_quantized(model, out, op_types, preset)
    return per_channel


# -- OpenVINO / NNCF --------------------------------------------------------------------------------
def _quantize_openvino(
    model: Path,
    out: Path,
    batches: list[Feeds],
    *,
    method: str | None,
    preset: str | None,
    per_channel: bool,
    include_ops: Sequence[str] | None,
    exclude_ops: Sequence[str] | None,
    progress: bool | None,
    notes: list[str],
) -> None:
    ov = require("openvino", "openvino")
    nncf = require("nncf", EXTRA)
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, QuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    ov_model = ov.Core().read_model(str(model))
    ignored = None
    if include_ops is not None or exclude_ops is not None:
        present = {op.get_type_name() for op in ov_model.get_ordered_ops()}
        notes.extend(
            _check_op_selection(present, include_ops, exclude_ops, f"{model.name} (OpenVINO op types)")
        )
        skip = set(exclude_ops or ())
        if include_ops is not None:
            skip |= present - set(include_ops)
        ignored = nncf.IgnoredScope(types=sorted(skip & present), validate=False)
        notes.append("include_ops/exclude_ops name OpenVINO op types (Convolution, MatMul, ...)")
    ranges = {
        None: None,
        "minmax": RangeEstimatorParametersSet.MINMAX,
        "percentile": RangeEstimatorParametersSet.MEAN_QUANTILE,
        "entropy": RangeEstimatorParametersSet.HISTOGRAM,
    }[method]
    advanced = AdvancedQuantizationParameters(
        weights_quantization_params=QuantizationParameters(per_channel=per_channel)
    )
    if ranges is not None:
        advanced.activations_range_estimator_params = ranges
    quantized = nncf.quantize(
        ov_model,
        nncf.Dataset(list(_progress(batches, len(batches), "nncf", progress))),
        model_type=nncf.ModelType.TRANSFORMER if preset == "transformer" else None,
        preset=nncf.QuantizationPreset.MIXED
        if preset == "transformer"
        else nncf.QuantizationPreset.PERFORMANCE,
        subset_size=len(batches),  # NNCF counts dataset items, here batches
        ignored_scope=ignored,
        advanced_parameters=advanced,
    )
    if not any(op.get_type_name() in ("FakeQuantize", "FakeConvert") for op in quantized.get_ordered_ops()):
        chosen = f" (ignored op types {sorted(ignored.types)})" if ignored is not None else ""
        raise CalibrationError(
            f"nothing was quantized in {model.name}: NNCF inserted no FakeQuantize{chosen}"
        )
    ov.save_model(quantized, str(out), compress_to_fp16=False)


# -- the API ---------------------------------------------------------------------------------------
def _check_options(
    target: str, method: str | None, preset: str | None, dynamic: bool | None, max_drop: float | None
) -> None:
    if target not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
    if method is not None and method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)} (or None), got {method!r}")
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)} (or None), got {preset!r}")
    if dynamic and target != "ort":
        raise ValueError(f"dynamic quantization is an ONNX Runtime mode; target {target!r} takes static only")
    if max_drop is not None and not (max_drop >= 0):
        raise ValueError(f"max_drop must be a non-negative number, got {max_drop!r}")


def calibrate(
    model: str | os.PathLike[str],
    data: DataSource,
    *,
    target: str = "ort",
    method: str | None = None,
    preset: str | None = None,
    per_channel: bool = True,
    include_ops: Sequence[str] | None = None,
    exclude_ops: Sequence[str] | None = None,
    dynamic: bool | None = None,
    eval_data: Any = None,
    metric: Metric | None = None,
    max_drop: float | None = None,
    output: str | os.PathLike[str] | None = None,
    batch_size: int | None = None,
    transform: Callable[[Any], Any] | None = None,
    eval_output: str | None = None,
    holdout: float = 0.2,
    threads: int | None = None,
    timing_s: float = 2.0,
    cache: bool = True,
    progress: bool | None = None,
) -> CalibrationResult:
    """Quantize ``model`` to INT8 for ``target`` and measure what it cost.

    ``data``: calibration batches (see ``calibration_batches``). ``method``: ``minmax`` (the default
    for ONNX targets; NNCF's own default estimator for openvino when None), ``entropy`` or
    ``percentile``. ``preset="transformer"``: on ort, dynamic MatMul-only per-channel INT8 (static
    INT8 of every op collapses transformers); on openvino, NNCF's ``ModelType.TRANSFORMER``.
    ``dynamic`` (ort only) defaults to the preset's choice. ``include_ops``/``exclude_ops``: op types
    to quantize or leave in float. ``eval_data``: ``(data, labels)``, a dict with a ``"labels"`` key,
    a directory with ``labels.npy``, an iterable of ``(feeds, labels)`` pairs, or unlabeled data;
    without it the report uses ``holdout`` of the calibration batches, held back from calibration.
    ``metric``: ``"accuracy"`` (argmax vs labels), ``"top5"`` (any top-k), ``"cosine"`` (to the fp32
    outputs) or ``callable(outputs, labels) -> float`` (higher is better), on ``eval_output`` (the
    first output by default). ``max_drop``: the largest acceptable ``fp32 - quantized`` score
    (accuracy 0.01 = one point); exceeding it raises ``CalibrationDropError``. ``output``: where to
    write the artifact (``.onnx``, or ``.xml`` for openvino; missing parent directories are created);
    otherwise it stays in the cache.
    ``timing_s``: seconds spent timing both models (0 skips the speed measurement).
    """
    _check_options(target, method, preset, dynamic, max_drop)
    _check_batch_size(batch_size)
    _metric_name(metric, has_labels=False)  # an unknown metric is refused before quantizing
    if not 0 <= holdout < 1:
        raise ValueError(f"holdout must be in [0, 1), got {holdout!r}")
    src = Path(model)
    if not src.is_file():
        raise ModelLoadError(f"model file not found: {src}", path=str(src))
    if target in ("ort", "tensorrt") and src.suffix != ".onnx":
        raise ModelLoadError(
            f"target {target!r} quantizes ONNX models; {src.name} is not .onnx", path=str(src)
        )
    if dynamic is None:
        dynamic = target == "ort" and preset == "transformer"
    suffix = ".xml" if target == "openvino" else ".onnx"
    if output is not None and Path(output).suffix != suffix:
        raise ValueError(f"output for target {target!r} must end in {suffix}, got {output}")
    if target != "openvino" and method is None:
        method = "minmax"
    mode = "nncf" if target == "openvino" else ("dynamic" if dynamic else "static Q/DQ")

    specs = _model_specs(src)
    notes: list[str] = []
    if target != "openvino":  # openvino op types are checked on the model OpenVINO reads
        notes += _check_op_selection(_op_types(src), include_ops, exclude_ops, src.name)
    batches = list(calibration_batches(data, specs, batch_size=batch_size, transform=transform))
    if not batches:
        raise CalibrationError("no calibration batches: data is empty")
    _check_finite(batches, "calibration data")
    if eval_data is not None:
        evalset = _eval_set(eval_data, specs, batch_size, transform)
        if not evalset.batches:
            raise CalibrationError("eval_data is empty")
        _check_finite(evalset.batches, "eval_data")
        calib = batches
    else:
        calib, held = _hold_back(batches, holdout, specs) if holdout > 0 else (batches, [])
        if held:
            evalset = _EvalSet(held, [None] * len(held), "held-back calibration samples")
        else:
            evalset = _EvalSet(calib, [None] * len(calib), "calibration samples")
            notes.append(
                "too little data to hold any back: the report is measured on the calibration samples"
            )

    options = {
        "v": _CACHE_VERSION, "target": target, "method": method, "preset": preset, "per_channel": per_channel,
        "include_ops": sorted(include_ops) if include_ops is not None else None,
        "exclude_ops": sorted(exclude_ops) if exclude_ops is not None else None, "dynamic": dynamic,
        "versions": _versions("onnxruntime", "onnx", "openvino", "nncf"),
    }  # fmt: skip
    key_src = json.dumps(options, sort_keys=True) + _file_hash(src) + _fingerprint(calib)
    key = hashlib.sha256(key_src.encode()).hexdigest()[:24]
    entry = _cache_root() / key
    artifact = entry / f"model.int8{suffix}"
    meta_path = entry / "meta.json"
    cached = cache and artifact.exists() and meta_path.exists()
    if cached:
        meta = json.loads(meta_path.read_text())
        used_per_channel = bool(meta["per_channel"])
        notes.extend(meta.get("notes", []))
    else:
        build_notes: list[str] = []
        with _building(entry, key, f"{target} quantization of {src.name}") as tmp:
            out = tmp / artifact.name
            if target == "openvino":
                _quantize_openvino(
                    src, out, calib, method=method, preset=preset, per_channel=per_channel,
                    include_ops=include_ops, exclude_ops=exclude_ops, progress=progress, notes=build_notes,
                )  # fmt: skip
                used_per_channel = per_channel
            else:
                work = tmp / "work"
                work.mkdir()
                used_per_channel = _quantize_onnx(
                    src, out, work, calib, target=target, method=method or "minmax", preset=preset,
                    dynamic=dynamic, per_channel=per_channel, include_ops=include_ops,
                    exclude_ops=exclude_ops, progress=progress, notes=build_notes,
                )  # fmt: skip
                shutil.rmtree(work, ignore_errors=True)
            meta = {**options, "per_channel": used_per_channel, "notes": build_notes, "model": str(src),
                    "calibration_samples": sum(_rows(b) for b in calib)}  # fmt: skip
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        notes.extend(build_notes)

    measured = _measure(
        src, artifact, target=target, evalset=evalset, metric=metric, eval_output=eval_output,
        threads=threads, timing_s=timing_s, notes=notes,
    )  # fmt: skip
    final = Path(output) if output is not None else artifact
    report = _report(
        measured, kind="int8", target=target, mode=mode, method=method, preset=preset,
        per_channel=used_per_channel, max_drop=max_drop, eval_source=evalset.source,
        calibration_samples=sum(_rows(b) for b in calib), model=src, artifact=final, cached=cached, notes=notes,
    )  # fmt: skip
    return _deliver(report, artifact, output)
