"""Reference profiles: what a model's inputs and outputs looked like on the data it was built on.

    import infercore as ic
    profile = ic.monitor.Profile.build("model.onnx", "calib/")        # the calibration data, one line
    profile.save("profile.json")                                       # versioned JSON
    profile = ic.monitor.Profile.load("profile.json")

Per input and output tensor (see :mod:`.features` for how a tensor becomes per-sample features):

- per feature: count, non-finite count, mean, standard deviation, minimum, maximum, 201 quantiles
  (every half percent: the KS test's reference CDF and the sequential detector's normal scores)
  and decile bins with their reference proportions (PSI);
- for classifier outputs: class frequencies (chi-square) and the distribution of the top-class
  probability (``confidence``), and, when the data has labels, the reference accuracy, precision,
  recall, F1 and ROC AUC (the baseline of the live quality detector);
- for screening: the features' means, scales and a whitening matrix of their (shrunk) correlations,
  and the distribution of reference samples' distances, measured on the half of the reference rows
  the model of the distances was not fitted on.

Quantiles and screening statistics come from a uniform reservoir of at most ``max_samples`` rows
per tensor; means, extremes and class counts from every row.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..arguments import check_int
from ..errors import ArgumentError, InputSpecError, ProfileError
from ..specs import TensorSpec
from .features import Featurizer

__all__ = ["PROFILE_FORMAT", "PROFILE_VERSION", "QUANTILE_LEVELS", "ClassStats", "FeatureStats", "Profile",
           "ScreenStats", "TensorProfile"]

PROFILE_FORMAT = "infercore.profile"
PROFILE_VERSION = 1
QUANTILE_LEVELS = np.linspace(0.0, 1.0, 201)
_PSI_BINS = 10
_CLASSIFIER_NAME = re.compile(r"logit|prob|score|softmax|class|cls|pred|label", re.I)
_COVARIANCE_MAX = 128  # screening whitens up to this many features, else scales each one alone
_SHRINK = 0.1


# -- statistics ------------------------------------------------------------------------------------
@dataclass
class FeatureStats:
    """Reference statistics of a tensor's features (arrays over the features)."""

    count: np.ndarray  # finite values seen
    nonfinite: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    minimum: np.ndarray
    maximum: np.ndarray
    quantiles: np.ndarray  # [features, len(QUANTILE_LEVELS)]
    bins: list[np.ndarray]  # inner decile edges per feature (PSI)
    props: list[np.ndarray]  # reference proportion per bin
    sampled: int  # reservoir rows the quantiles come from: the reference's size for the tests

    def to_dict(self) -> dict[str, Any]:
        return {
            "count": self.count.tolist(),
            "nonfinite": self.nonfinite.tolist(),
            "mean": _floats(self.mean),
            "std": _floats(self.std),
            "min": _floats(self.minimum),
            "max": _floats(self.maximum),
            "quantiles": [_floats(q) for q in self.quantiles],
            "bins": [_floats(b) for b in self.bins],
            "props": [_floats(p) for p in self.props],
            "sampled": self.sampled,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FeatureStats:
        q = np.array(d["quantiles"], dtype=np.float64)
        return cls(
            np.array(d["count"], dtype=np.int64),
            np.array(d["nonfinite"], dtype=np.int64),
            np.array(d["mean"], dtype=np.float64),
            np.array(d["std"], dtype=np.float64),
            np.array(d["min"], dtype=np.float64),
            np.array(d["max"], dtype=np.float64),
            q.reshape(len(d["quantiles"]), len(QUANTILE_LEVELS)),
            [np.array(b, dtype=np.float64) for b in d["bins"]],
            [np.array(p, dtype=np.float64) for p in d["props"]],
            int(d["sampled"]),
        )


@dataclass
class ClassStats:
    """A classifier output: how often each class was predicted and how sure the model was."""

    classes: int
    counts: np.ndarray
    probabilities: bool  # the output holds probabilities (else logits: softmax / sigmoid first)
    confidence: FeatureStats  # one feature: the top-class probability

    def to_dict(self) -> dict[str, Any]:
        return {
            "classes": self.classes,
            "counts": self.counts.tolist(),
            "probabilities": self.probabilities,
            "confidence": self.confidence.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ClassStats:
        return cls(
            int(d["classes"]),
            np.array(d["counts"], dtype=np.int64),
            bool(d["probabilities"]),
            FeatureStats.from_dict(d["confidence"]),
        )

    def probs(self, out: np.ndarray) -> np.ndarray:
        """Class probabilities ``[rows, classes]`` of a batch of this output."""
        return class_probabilities(out, self.probabilities)


@dataclass
class ScreenStats:
    """The outlier model of a tensor's features: standardize, whiten, take the RMS distance; the
    reference distances' quantiles (and an exponential tail past the 95th) make it a tail
    probability."""

    center: np.ndarray
    scale: np.ndarray
    whiten: np.ndarray | None  # lower-triangular inverse Cholesky factor, or None: scales only
    distances: np.ndarray  # quantiles of the reference distances at QUANTILE_LEVELS
    tail_scale: float  # mean excess of the reference distances over their 95th percentile
    calibrated_on: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "center": _floats(self.center),
            "scale": _floats(self.scale),
            "whiten": None if self.whiten is None else [_floats(r) for r in self.whiten],
            "distances": _floats(self.distances),
            "tail_scale": self.tail_scale,
            "calibrated_on": self.calibrated_on,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ScreenStats:
        w = d.get("whiten")
        return cls(
            np.array(d["center"], dtype=np.float64),
            np.array(d["scale"], dtype=np.float64),
            None if w is None else np.array(w, dtype=np.float64),
            np.array(d["distances"], dtype=np.float64),
            float(d["tail_scale"]),
            int(d["calibrated_on"]),
        )

    def distance(self, rows: np.ndarray) -> np.ndarray:
        """RMS standardized (and whitened) distance of each feature row from the reference."""
        z = (rows - self.center) / self.scale
        if self.whiten is not None:
            z = z @ self.whiten.T
        with np.errstate(over="ignore", invalid="ignore"):
            d = np.sqrt(np.mean(z * z, axis=1))
        return np.where(np.isfinite(d), d, np.inf)

    def tail_p(self, d: np.ndarray) -> np.ndarray:
        """The share of reference samples at least as far as ``d``: interpolated from the quantiles
        up to the 95th percentile, an exponential tail beyond."""
        q = self.distances
        d95 = float(np.interp(0.95, QUANTILE_LEVELS, q))
        body = 1.0 - reference_cdf(q, d)
        with np.errstate(over="ignore", invalid="ignore"):
            tail = 0.05 * np.exp(-(d - d95) / max(self.tail_scale, 1e-12))
        p = np.where(d <= d95, np.maximum(body, 0.05), tail)
        return np.clip(np.nan_to_num(p, nan=0.0), 1e-300, 1.0)


@dataclass
class TensorProfile:
    name: str
    kind: str  # "input" or "output"
    dtype: str
    shape: tuple[int | None, ...]
    featurizer: Featurizer
    stats: FeatureStats
    classes: ClassStats | None = None
    screen: ScreenStats | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "dtype": self.dtype,
            "shape": [-1 if d is None else d for d in self.shape],
            **self.featurizer.to_dict(),
            "stats": self.stats.to_dict(),
            "classes": None if self.classes is None else self.classes.to_dict(),
            "screen": None if self.screen is None else self.screen.to_dict(),
        }

    @classmethod
    def from_dict(cls, name: str, d: Mapping[str, Any]) -> TensorProfile:
        return cls(
            name,
            str(d["kind"]),
            str(d["dtype"]),
            tuple(None if s == -1 else int(s) for s in d["shape"]),
            Featurizer.from_dict(name, d),
            FeatureStats.from_dict(d["stats"]),
            None if d.get("classes") is None else ClassStats.from_dict(d["classes"]),
            None if d.get("screen") is None else ScreenStats.from_dict(d["screen"]),
        )


# -- the profile -----------------------------------------------------------------------------------
@dataclass
class Profile:
    """A model's reference profile; see the module docstring. Build, save, load."""

    tensors: dict[str, TensorProfile]
    samples: int
    model: dict[str, Any] = field(default_factory=dict)
    quality: dict[str, Any] | None = None
    created: str = ""
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def classifier(self) -> TensorProfile | None:
        """The classifier output whose predictions feedback labels are matched with."""
        name = (self.quality or {}).get("output")
        if name in self.tensors:
            return self.tensors[name]
        return next((t for t in self.tensors.values() if t.classes is not None), None)

    # -- building --------------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        engine_or_model: Any,
        data: Any,
        *,
        backend: str | None = None,
        batch_size: int | None = None,
        outputs: bool = True,
        classifier: str | bool | None = None,
        max_features: int = 512,
        max_samples: int = 20_000,
        seed: int = 0,
    ) -> Profile:
        """Run ``data`` (anything :func:`infercore.inputs.labelled_batches` reads: a path, arrays,
        ``(data, labels)``, an iterable of batches) through the model and profile every input and,
        with ``outputs``, every output. ``classifier``: the output to read as class scores (None:
        outputs named like logits/probs/scores/class of shape [N, K]; False: none)."""
        from .. import engine as engine_module
        from ..inputs import labelled_batches

        check_int("max_features", max_features)
        check_int("max_samples", max_samples, minimum=10)
        check_int("batch_size", batch_size, optional=True)
        if classifier is not None and not isinstance(classifier, str | bool):
            raise ArgumentError("classifier", f"expected an output name, False or None, got {classifier!r}")
        owned = not isinstance(engine_or_model, engine_module.Engine)
        eng = engine_module.load(engine_or_model, backend) if owned else engine_or_model
        try:
            if isinstance(classifier, str) and classifier not in {s.name for s in eng.outputs}:
                raise ArgumentError(
                    "classifier",
                    f"the model has no output {classifier!r}; its outputs: {', '.join(s.name for s in eng.outputs)}",
                )
            batches = labelled_batches(data, eng.inputs, batch_size=batch_size, source="data")
            if not batches.batches:
                raise InputSpecError("data: no batches to profile")
            builder = _Builder(eng.inputs, eng.outputs if outputs else (), classifier, max_features, max_samples, seed)
            for feeds, labels in zip(batches.batches, batches.labels, strict=True):
                result = eng.run(feeds) if outputs or labels is not None else {}
                builder.add(feeds, result, labels)
            path = getattr(eng, "path", None)
            model = {"file": Path(path).name if path else None, "backend": eng.backend_name}
            sha = _sha256(path)
            if sha:
                model["sha256"] = sha
            return builder.finish(model)
        finally:
            if owned:
                eng.close()

    @classmethod
    def from_arrays(
        cls,
        inputs: Mapping[str, np.ndarray],
        outputs: Mapping[str, np.ndarray] | None = None,
        *,
        labels: Any = None,
        classifier: str | bool | None = None,
        max_features: int = 512,
        max_samples: int = 20_000,
        seed: int = 0,
    ) -> Profile:
        """A profile of tensors already at hand (axis 0: samples), without a model: data logged
        elsewhere, or a model's outputs computed by other means."""
        check_int("max_features", max_features)
        check_int("max_samples", max_samples, minimum=10)
        outputs = dict(outputs or {})

        def spec(name: str, a: np.ndarray) -> TensorSpec:
            a = np.asarray(a)
            if a.ndim == 0:
                raise InputSpecError(f"tensor {name!r}: give the samples along axis 0, got a 0-d array", tensor=name)
            return TensorSpec(name, a.dtype, (None, *a.shape[1:]))

        if isinstance(classifier, str) and classifier not in outputs:
            raise ArgumentError("classifier", f"no output {classifier!r}; outputs given: {', '.join(outputs) or 'none'}")
        builder = _Builder([spec(k, v) for k, v in inputs.items()], [spec(k, v) for k, v in outputs.items()],
                           classifier, max_features, max_samples, seed)
        builder.add({k: np.asarray(v) for k, v in inputs.items()}, {k: np.asarray(v) for k, v in outputs.items()},
                    labels)
        return builder.finish({})

    # -- files -----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PROFILE_FORMAT,
            "version": PROFILE_VERSION,
            "created": self.created,
            "model": self.model,
            "samples": self.samples,
            "quality": self.quality,
            "skipped": self.skipped,
            "tensors": {name: t.to_dict() for name, t in self.tensors.items()},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "profile") -> Profile:
        if not isinstance(d, Mapping) or d.get("format") != PROFILE_FORMAT:
            raise ProfileError(f"{source}: not an infercore profile (no \"format\": \"{PROFILE_FORMAT}\")")
        version = d.get("version")
        if version != PROFILE_VERSION:
            raise ProfileError(
                f"{source}: profile format version {version!r}; this infercore reads version {PROFILE_VERSION} "
                "(build the profile again with `infercore profile`)"
            )
        try:
            tensors = {name: TensorProfile.from_dict(name, t) for name, t in d["tensors"].items()}
            return cls(tensors, int(d["samples"]), dict(d.get("model") or {}), d.get("quality"),
                       str(d.get("created", "")), dict(d.get("skipped") or {}))
        except (KeyError, TypeError, ValueError) as e:
            raise ProfileError(f"{source}: malformed profile: {type(e).__name__}: {e}") from None

    def save(self, path: str | os.PathLike[str]) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".part")
        tmp.write_text(json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False))
        tmp.replace(p)
        return p

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Profile:
        p = Path(path)
        try:
            raw = json.loads(p.read_text())
        except FileNotFoundError:
            raise ProfileError(f"profile not found: {p}") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ProfileError(f"{p}: cannot read the profile: {e}") from None
        return cls.from_dict(raw, str(p))

    def check(self, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> None:
        """Refuse a profile built for another model: every profiled tensor must be one of the
        model's, of the same dtype and layout."""
        specs = {s.name: s for s in (*inputs, *outputs)}
        for name, t in self.tensors.items():
            spec = specs.get(name)
            if spec is None:
                raise ProfileError(
                    f"the profile has tensor {name!r}, which the model has not (its tensors: {', '.join(specs)}): "
                    "was it built for another model?"
                )
            if str(spec.dtype) != t.dtype:
                raise ProfileError(f"tensor {name!r}: the profile's dtype is {t.dtype}, the model's {spec.dtype}")

    def summary(self) -> dict[str, Any]:
        """What was profiled, in a few lines' worth of JSON."""
        out: dict[str, Any] = {"samples": self.samples, "tensors": {}}
        for name, t in self.tensors.items():
            row: dict[str, Any] = {"kind": t.kind, "layout": t.featurizer.layout, "features": t.featurizer.size}
            if t.classes is not None:
                row["classes"] = t.classes.classes
            if t.screen is not None:
                row["screening"] = "whitened" if t.screen.whiten is not None else "scaled"
            out["tensors"][name] = row
        if self.quality:
            out["quality"] = self.quality
        if self.skipped:
            out["skipped"] = self.skipped
        return out


# -- building --------------------------------------------------------------------------------------
class _Accumulator:
    """Moments over every row, a uniform reservoir of rows for quantiles and screening."""

    def __init__(self, width: int, max_rows: int, rng: np.random.Generator) -> None:
        self.width = width
        self.max_rows = max_rows
        self.rng = rng
        self.seen = 0
        self.count = np.zeros(width, np.int64)
        self.nonfinite = np.zeros(width, np.int64)
        self.total = np.zeros(width)
        self.minimum = np.full(width, np.inf)
        self.maximum = np.full(width, -np.inf)
        self.reservoir = np.empty((0, width))

    def add(self, rows: np.ndarray) -> None:
        finite = np.isfinite(rows)
        self.count += finite.sum(axis=0)
        self.nonfinite += (~finite).sum(axis=0)
        clean = np.where(finite, rows, 0.0)
        self.total += clean.sum(axis=0)
        if finite.any():
            self.minimum = np.minimum(self.minimum, np.where(finite, rows, np.inf).min(axis=0))
            self.maximum = np.maximum(self.maximum, np.where(finite, rows, -np.inf).max(axis=0))
        room = self.max_rows - self.reservoir.shape[0]
        if room > 0:
            self.reservoir = np.concatenate([self.reservoir, rows[:room]])
            self.seen += min(room, rows.shape[0])
            rows = rows[room:]
        for row in rows:  # reservoir sampling (Algorithm R)
            self.seen += 1
            j = int(self.rng.integers(0, self.seen))
            if j < self.max_rows:
                self.reservoir[j] = row

    def stats(self) -> FeatureStats:
        r = self.reservoir
        width = self.width
        quantiles = np.zeros((width, len(QUANTILE_LEVELS)))
        bins: list[np.ndarray] = []
        props: list[np.ndarray] = []
        std = np.zeros(width)
        mean = np.where(self.count > 0, self.total / np.maximum(self.count, 1), np.nan)
        for f in range(width):
            col = r[:, f]
            col = col[np.isfinite(col)]
            if col.size == 0:
                quantiles[f] = np.nan
                bins.append(np.array([]))
                props.append(np.array([1.0]))
                std[f] = np.nan
                continue
            quantiles[f] = np.quantile(col, QUANTILE_LEVELS)
            std[f] = float(col.std())
            edges = np.unique(np.quantile(col, np.linspace(0, 1, _PSI_BINS + 1)[1:-1]))
            bins.append(edges)
            counts = np.bincount(np.searchsorted(edges, col, side="right"), minlength=edges.size + 1)
            props.append(counts / col.size)
        return FeatureStats(self.count.copy(), self.nonfinite.copy(), mean, std,
                            np.where(np.isfinite(self.minimum), self.minimum, np.nan),
                            np.where(np.isfinite(self.maximum), self.maximum, np.nan),
                            quantiles, bins, props, int(r.shape[0]))


class _Builder:
    def __init__(
        self,
        inputs: Sequence[TensorSpec],
        outputs: Sequence[TensorSpec],
        classifier: str | bool | None,
        max_features: int,
        max_samples: int,
        seed: int,
    ) -> None:
        self.specs = {**{s.name: ("input", s) for s in inputs}, **{s.name: ("output", s) for s in outputs}}
        self.classifier = classifier
        self.max_features = max_features
        self.max_samples = max_samples
        self.rng = np.random.default_rng(seed)
        self.featurizers: dict[str, Featurizer] = {}
        self.acc: dict[str, _Accumulator] = {}
        self.class_counts: dict[str, np.ndarray] = {}
        self.class_probabilities: dict[str, bool] = {}
        self.confidence: dict[str, _Accumulator] = {}
        self.skipped: dict[str, str] = {}
        self.samples = 0
        self.quality_scores: list[np.ndarray] = []
        self.quality_labels: list[np.ndarray] = []
        self.quality_output: str | None = None

    def _start(self, name: str, arr: np.ndarray) -> None:
        kind, spec = self.specs[name]
        if arr.dtype.kind not in "fiub":
            self.skipped[name] = f"dtype {arr.dtype}: no numeric features"
            return
        fz = Featurizer.for_tensor(spec, arr, self.max_features)
        self.featurizers[name] = fz
        self.acc[name] = _Accumulator(fz.size, self.max_samples, self.rng)
        if kind == "output" and self._is_classifier(spec, arr, fz):
            k = 2 if arr.shape[-1] == 1 else int(arr.shape[-1])
            self.class_counts[name] = np.zeros(k, np.int64)
            self.class_probabilities[name] = _looks_like_probabilities(arr)
            self.confidence[name] = _Accumulator(1, self.max_samples, self.rng)

    def _is_classifier(self, spec: TensorSpec, arr: np.ndarray, fz: Featurizer) -> bool:
        if self.classifier is False:
            return False
        shaped = fz.batched and arr.ndim == 2 and arr.dtype.kind == "f" and 1 <= arr.shape[1] <= 100_000
        if isinstance(self.classifier, str):
            if spec.name == self.classifier and not shaped:
                raise ArgumentError(
                    "classifier", f"output {spec.name!r} has shape {list(arr.shape)}: class scores are [N, classes]"
                )
            return spec.name == self.classifier
        return shaped and bool(_CLASSIFIER_NAME.search(spec.name)) and (arr.shape[1] >= 2 or _in_unit(arr))

    def add(self, feeds: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray], labels: Any) -> None:
        tensors = {**{k: v for k, v in feeds.items() if k in self.specs},
                   **{k: v for k, v in outputs.items() if k in self.specs}}
        for name, value in tensors.items():
            arr = np.asarray(value)
            if name not in self.featurizers and name not in self.skipped:
                self._start(name, arr)
            fz = self.featurizers.get(name)
            if fz is None:
                continue
            self.acc[name].add(fz(arr))
            if name in self.class_counts:
                probs = class_probabilities(arr, self.class_probabilities[name])
                self.class_counts[name] += np.bincount(probs.argmax(axis=1), minlength=probs.shape[1])
                self.confidence[name].add(probs.max(axis=1, keepdims=True))
                if labels is not None and self.quality_output in (None, name):
                    self.quality_output = name
                    self.quality_scores.append(probs)
                    self.quality_labels.append(np.asarray(labels))
        first = next(iter(self.featurizers.values()), None)
        if first is not None and first.tensor in tensors:
            self.samples += first.rows(np.asarray(tensors[first.tensor]))

    def finish(self, model: dict[str, Any]) -> Profile:
        from .. import metrics

        tensors: dict[str, TensorProfile] = {}
        for name, fz in self.featurizers.items():
            kind, spec = self.specs[name]
            acc = self.acc[name]
            classes = None
            if name in self.class_counts:
                classes = ClassStats(len(self.class_counts[name]), self.class_counts[name],
                                     self.class_probabilities[name], self.confidence[name].stats())
            tensors[name] = TensorProfile(
                name, kind, str(spec.dtype), spec.shape, fz, acc.stats(), classes, _screen_stats(acc.reservoir)
            )
        quality = None
        if self.quality_output is not None and self.quality_labels:
            scores = np.concatenate(self.quality_scores)
            labels = np.concatenate(self.quality_labels)
            quality = {"output": self.quality_output, "labels": int(labels.shape[0]),
                       **{k: _finite(v) for k, v in metrics.classification(scores, labels).items()}}
        return Profile(tensors, self.samples, model, quality,
                       time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), self.skipped)


def _screen_stats(reservoir: np.ndarray) -> ScreenStats | None:
    """Fit the outlier model on the even reference rows, take the distance quantiles on the odd
    ones (in-sample distances would understate how far new clean samples fall)."""
    rows = reservoir[np.isfinite(reservoir).all(axis=1)]
    if rows.shape[0] < 40:
        return None
    fit, calib = rows[0::2], rows[1::2]
    center = fit.mean(axis=0)
    spread = fit.std(axis=0)
    floor = 1e-6 * np.maximum(1.0, np.abs(center))
    scale = np.where(spread > floor, spread, floor)
    whiten = None
    width = rows.shape[1]
    if 1 < width <= _COVARIANCE_MAX:
        z = (fit - center) / scale
        corr = np.cov(z, rowvar=False) if fit.shape[0] > 1 else np.eye(width)
        corr = np.atleast_2d(np.nan_to_num(corr))
        shrunk = (1 - _SHRINK) * corr + _SHRINK * np.eye(width)
        try:
            chol = np.linalg.cholesky(shrunk)
            whiten = np.linalg.inv(chol)
        except np.linalg.LinAlgError:
            whiten = None
    stats = ScreenStats(center, scale, whiten, np.zeros(len(QUANTILE_LEVELS)), 1.0, int(calib.shape[0]))
    d = stats.distance(calib)
    d = d[np.isfinite(d)]
    stats.distances = np.quantile(d, QUANTILE_LEVELS)
    d95 = float(np.quantile(d, 0.95))
    excess = d[d > d95] - d95
    stats.tail_scale = float(excess.mean()) if excess.size else max(d95 * 0.1, 1e-6)
    return stats


# -- helpers ---------------------------------------------------------------------------------------
def class_probabilities(out: np.ndarray, probabilities: bool) -> np.ndarray:
    """Rows of class probabilities from a classifier's output ``[N, K]`` (``[N, 1]``: binary)."""
    s = np.asarray(out, dtype=np.float64).reshape(np.shape(out)[0], -1)
    if s.shape[1] == 1:
        p1 = s[:, 0] if probabilities else 1.0 / (1.0 + np.exp(-np.clip(s[:, 0], -500, 500)))
        return np.stack([1.0 - p1, p1], axis=1)
    if probabilities:
        return s
    e = np.exp(s - s.max(axis=1, keepdims=True))
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def _in_unit(arr: np.ndarray) -> bool:
    return bool(arr.size) and bool(np.all((arr >= 0) & (arr <= 1)))


def _looks_like_probabilities(arr: np.ndarray) -> bool:
    a = np.asarray(arr, dtype=np.float64)
    if a.shape[-1] == 1:
        return _in_unit(a)
    return bool(np.all(a >= 0)) and bool(np.allclose(a.sum(axis=-1), 1.0, atol=1e-3))


def reference_cdf(quantiles: np.ndarray, x: np.ndarray, side: Literal["left", "right"] = "right") -> np.ndarray:
    """The reference CDF at ``x`` from its quantiles (a step where quantiles repeat); ``side="left"``:
    just below ``x``."""
    q = quantiles
    k = np.searchsorted(q, x, side=side)
    lo = np.clip(k - 1, 0, len(q) - 1)
    hi = np.clip(k, 0, len(q) - 1)
    span = q[hi] - q[lo]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(span > 0, (x - q[lo]) / np.where(span > 0, span, 1.0), 0.0)
    levels = QUANTILE_LEVELS
    f = levels[lo] + (levels[hi] - levels[lo]) * frac
    return np.where(k == 0, 0.0, np.where(k >= len(q), 1.0, f))


def _floats(a: Any) -> list[Any]:
    """A JSON list; NaN and infinities (which JSON has not) become null."""
    arr = np.asarray(a, dtype=np.float64).ravel()
    return [float(v) if math.isfinite(v) else None for v in arr.tolist()]


def _finite(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def _sha256(path: Any) -> str | None:
    if not path:
        return None
    try:
        from ..modelfiles import model_files, sha256_files

        return sha256_files(model_files(path))
    except Exception:
        return None
