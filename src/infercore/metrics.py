"""Quality metrics shared by every tool that measures a model: calibration and FP16 reports,
pruning and distillation, live monitoring. numpy only.

Classifier outputs are read as one row of class scores (logits or probabilities) per sample;
labels as one integer class index per sample::

    metrics.accuracy(logits, labels)                     # top-1, a fraction
    metrics.classification(logits, labels)               # accuracy, precision, recall, F1, ROC AUC
    metrics.cosines(reference, outputs)                  # per-sample cosine of two models' outputs

``precision``/``recall``/``f1`` are macro averages over the classes present in the labels or the
predictions (scikit-learn's ``average="macro"`` with ``zero_division=0``); ``roc_auc`` is the
binary AUC (the score of class 1), or for more classes the macro one-vs-rest AUC over the classes
present in the labels (scikit-learn's ``multi_class="ovr"``), computed from ranks with ties
averaged.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from .errors import ArgumentError, InputSpecError

__all__ = [
    "METRICS",
    "Metric",
    "accuracy",
    "class_labels",
    "classification",
    "confusion_matrix",
    "cosines",
    "metric_name",
    "precision_recall_f1",
    "roc_auc",
    "score",
    "topk_accuracy",
]

Metric = str | Callable[[np.ndarray, np.ndarray | None], float]
METRICS = ("accuracy", "topK", "precision", "recall", "f1", "roc_auc", "cosine")


def _flat(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a.reshape(a.shape[0], -1) if a.ndim >= 2 else a.reshape(-1, 1)


def cosines(ref: np.ndarray, got: np.ndarray) -> np.ndarray:
    """Per-sample cosine similarity of two outputs of the same shape (rows are samples); 1 where
    both rows are zero, 0 where one is."""
    r, g = _flat(ref), _flat(got)
    num = (r * g).sum(axis=1)
    den = np.linalg.norm(r, axis=1) * np.linalg.norm(g, axis=1)
    same = np.isclose(r, g).all(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.where(same, 1.0, 0.0))
    return np.asarray(cos, dtype=np.float64)


def class_labels(labels: Any, rows: int, classes: int | None = None) -> np.ndarray:
    """Labels as one integer class index per sample, shape ``(rows,)``, each in ``0..classes-1``;
    ``InputSpecError`` saying what is wrong otherwise (one-hot, floats, booleans, out of range)."""
    lab = np.asarray(labels)
    if lab.ndim == 2 and lab.shape[1] == 1:
        lab = lab[:, 0]
    if lab.ndim != 1 or lab.shape[0] != rows:
        hint = "; one-hot labels: pass labels.argmax(1)" if lab.ndim == 2 else ""
        raise InputSpecError(
            f"labels have shape {np.asarray(labels).shape}; class metrics take one class index per sample, "
            f"shape ({rows},){hint} (a callable metric takes labels of any shape)"
        )
    if lab.dtype.kind == "b":
        raise InputSpecError(
            "labels are booleans; class metrics take integer class indices (labels.astype(int) for two classes)"
        )
    if lab.dtype.kind not in "iu" and not (lab.dtype.kind == "f" and np.array_equal(lab, np.round(lab))):
        raise InputSpecError(
            f"labels have dtype {lab.dtype} with non-integer values; class metrics take integer class indices"
        )
    if classes is not None and lab.size and (lab.min() < 0 or lab.max() >= classes):
        raise InputSpecError(
            f"labels run from {lab.min():g} to {lab.max():g}, but the output has {classes} classes "
            f"(0..{classes - 1}): every sample would score wrong"
        )
    return lab.astype(np.int64)


def _scores(outputs: np.ndarray) -> np.ndarray:
    """Class scores, one row per sample; a single column is a binary model's P(class 1)."""
    s = _flat(outputs)
    return np.concatenate([1.0 - s, s], axis=1) if s.shape[1] == 1 else s


def topk_accuracy(outputs: np.ndarray, labels: Any, k: int = 1) -> float:
    """Share of samples whose label is among the ``k`` highest scores."""
    s = _scores(outputs)
    lab = class_labels(labels, s.shape[0], s.shape[1])
    if k == 1:
        return float((s.argmax(axis=1) == lab).mean())
    top = np.argpartition(-s, min(k, s.shape[1]) - 1, axis=1)[:, :k]
    return float((top == lab[:, None]).any(axis=1).mean())


def accuracy(outputs: np.ndarray, labels: Any) -> float:
    """Top-1 accuracy, a fraction."""
    return topk_accuracy(outputs, labels, 1)


def confusion_matrix(labels: Any, predicted: Any, classes: int) -> np.ndarray:
    """``m[i, j]``: samples of class ``i`` predicted as ``j``."""
    lab = np.asarray(labels, dtype=np.int64).reshape(-1)
    pred = np.asarray(predicted, dtype=np.int64).reshape(-1)
    return np.bincount(lab * classes + pred, minlength=classes * classes).reshape(classes, classes)


def precision_recall_f1(labels: Any, predicted: Any, classes: int) -> tuple[float, float, float]:
    """Macro precision, recall and F1 over the classes present in the labels or the predictions."""
    m = confusion_matrix(labels, predicted, classes).astype(np.float64)
    tp = np.diag(m)
    predicted_n, actual_n = m.sum(axis=0), m.sum(axis=1)
    present = (predicted_n + actual_n) > 0
    if not present.any():
        return 0.0, 0.0, 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(predicted_n > 0, tp / predicted_n, 0.0)
        r = np.where(actual_n > 0, tp / actual_n, 0.0)
        f = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
    return float(p[present].mean()), float(r[present].mean()), float(f[present].mean())


def _binary_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """Mann-Whitney AUC from average ranks (ties share their rank); NaN without both classes."""
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(score.size, dtype=np.float64)
    sorted_scores = score[order]
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], score.size]
    for a, b in zip(starts, ends, strict=True):  # ties: the mean of the ranks they span (1-based)
        ranks[order[a:b]] = (a + b + 1) / 2.0
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_auc(outputs: np.ndarray, labels: Any) -> float:
    """Binary ROC AUC on the score of class 1, or the macro one-vs-rest AUC of several classes
    (over the classes present in the labels); NaN when the labels hold a single class."""
    s = _scores(outputs)
    lab = class_labels(labels, s.shape[0], s.shape[1])
    if s.shape[1] == 2:
        return _binary_auc(lab == 1, s[:, 1])
    aucs = [_binary_auc(lab == c, s[:, c]) for c in np.unique(lab)]
    aucs = [a for a in aucs if not math.isnan(a)]
    return float(np.mean(aucs)) if aucs else math.nan


def classification(outputs: np.ndarray, labels: Any) -> dict[str, float]:
    """accuracy, precision, recall, f1 (macro) and roc_auc of a classifier's outputs."""
    s = _scores(outputs)
    lab = class_labels(labels, s.shape[0], s.shape[1])
    pred = s.argmax(axis=1)
    p, r, f = precision_recall_f1(lab, pred, s.shape[1])
    return {
        "accuracy": float((pred == lab).mean()) if lab.size else math.nan,
        "precision": p,
        "recall": r,
        "f1": f,
        "roc_auc": roc_auc(s, lab),
    }


def metric_name(metric: Metric | None, has_labels: bool) -> str:
    """The canonical name of ``metric`` (``"top1"`` -> ``"accuracy"``); ``None`` is accuracy with
    labels, cosine without. An unknown name raises ``ArgumentError`` before any work."""
    if metric is None:
        return "accuracy" if has_labels else "cosine"
    if callable(metric):
        return getattr(metric, "__name__", "metric")
    m = str(metric).lower().replace("-", "")
    if m in ("accuracy", "top1"):
        return "accuracy"
    if m in ("cosine", "precision", "recall", "f1", "roc_auc", "auc"):
        return "roc_auc" if m == "auc" else m
    if re.fullmatch(r"top\d+", m):
        if int(m[3:]) < 1:
            raise ArgumentError("metric", f"{metric!r}: top-k needs k >= 1 ('top1' is accuracy, 'top5' the usual)")
        return m
    raise ArgumentError(
        "metric",
        f"expected one of accuracy, topK (e.g. top5), precision, recall, f1, roc_auc, cosine or a callable, "
        f"got {metric!r}",
    )


def score(metric: Metric | None, outputs: np.ndarray, labels: Any, *, model: str = "the model") -> float:
    """``metric`` (a name or a callable ``(outputs, labels) -> float``, higher is better) on
    ``outputs``; a named class metric needs labels. Not for ``"cosine"``, which compares two models."""
    name = metric_name(metric, labels is not None)
    if callable(metric):
        try:
            value = float(metric(outputs, labels))
        except Exception as e:
            raise InputSpecError(
                f"metric {name!r} failed on the {model} outputs (shape {np.shape(outputs)}): {type(e).__name__}: {e}"
            ) from e
        if not math.isfinite(value):
            raise InputSpecError(
                f"metric {name!r} returned {value} on the {model} outputs (shape {np.shape(outputs)}); "
                "a metric must return a finite number, higher is better"
            )
        return value
    if name == "cosine":
        raise ArgumentError("metric", "'cosine' compares two models' outputs; use cosines(reference, outputs)")
    if labels is None:
        raise InputSpecError(f"metric {name!r} needs labels: give the data as (data, labels)")
    if name == "accuracy" or name.startswith("top"):
        return topk_accuracy(outputs, labels, 1 if name == "accuracy" else int(name[3:]))
    return classification(outputs, labels)[name]
