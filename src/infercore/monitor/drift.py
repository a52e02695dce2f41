"""Drift tests of a window of live features against a reference profile, and a sequential detector.

Per window, for every feature of a tensor:

- **PSI** (population stability index) over the reference's decile bins, counts smoothed by half a
  sample per bin: ``sum((w - r) * ln(w / r))``;
- **KS**: the largest gap between the window's empirical CDF and the reference CDF (from its 201
  quantiles), with the two-sample p-value (:func:`ks_p`, at ``n * m / (n + m)``, ``m`` the
  reference rows), so a small reference is not mistaken for the truth;
- for a classifier output, **chi-square** on the predicted-class counts against the reference's
  (a 2 x K contingency test; classes the reference saw rarely are pooled so no cell expects fewer
  than 5), with the PSI of the class proportions as its effect size.

**Decision** (:func:`decide`): a tensor drifts in a window when one of its tests is significant
after a Bonferroni correction over every test of the model in that window (``p < alpha / m``) AND
its PSI reaches ``psi_floor`` (default 0.05: a 0.3 sd mean shift of a normal feature gives about
0.08). The correction bounds the share of stationary windows that raise drift by ``alpha``; the
effect-size floor keeps large windows from reporting shifts too small to matter.

**Sequential** (:class:`Cusum`): a two-sided CUSUM per feature on normal scores
(``Phi^-1`` of the reference CDF at each value, mid-rank for ties) with reference value
``k = 0.15 + 3 / sqrt(m)`` sd (tuned to a 0.3 sd shift, widened by the reference's own uncertainty
for ``m`` reference rows). It runs on every sample, so it answers before the next window test: a
2 sd shift in tens of samples, 0.3 sd in a few hundred. Its threshold ``h`` comes from Siegmund's
approximation of the in-control run length, set so that all its one-sided statistics together
raise a false alarm in a window of ``window`` samples with probability at most its share of
``alpha``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..optional import require
from .profile import QUANTILE_LEVELS, FeatureStats, reference_cdf

__all__ = ["Cusum", "FeatureTest", "class_test", "cusum_threshold", "decide", "ks_test", "psi", "round_sig"]

_SMOOTH = 0.5


@dataclass
class FeatureTest:
    """One feature's (or a class histogram's) result in one window."""

    feature: str
    test: str  # "ks" or "chi2"
    statistic: float
    p: float
    psi: float
    mean_shift: float | None = None  # (window mean - reference mean) / reference sd
    significant: bool = False
    drift: bool = False

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "feature": self.feature,
            "test": self.test,
            "statistic": round_sig(self.statistic),
            "p": float(f"{self.p:.3g}"),
            "psi": round_sig(self.psi),
            "drift": self.drift,
        }
        if self.mean_shift is not None:
            out["mean_shift_sd"] = round_sig(self.mean_shift)
        return out


def psi(window: np.ndarray, bins: np.ndarray, props: np.ndarray) -> float:
    """PSI of ``window`` (one feature's finite values) in the reference bins."""
    counts = np.bincount(np.searchsorted(bins, window, side="right"), minlength=len(props)).astype(np.float64)
    w = (counts + _SMOOTH) / (counts.sum() + _SMOOTH * len(props))
    r = np.maximum(props, 1e-4)
    r = r / r.sum()
    return float(np.sum((w - r) * np.log(w / r)))


def ks_statistic(window_sorted: np.ndarray, quantiles: np.ndarray) -> float:
    """sup |F_window - F_reference| over both one-sided limits at every window value."""
    n = window_sorted.size
    if n == 0:
        return 0.0
    x = window_sorted
    right = np.searchsorted(x, x, side="right") / n
    left = np.searchsorted(x, x, side="left") / n
    if np.all(quantiles[1:] > quantiles[:-1]):  # no ties: a continuous reference CDF, one interpolation
        ref_right = ref_left = np.interp(x, quantiles, QUANTILE_LEVELS)
    else:
        ref_right = reference_cdf(quantiles, x)
        ref_left = reference_cdf(quantiles, x, "left")
    return float(max(np.max(np.abs(right - ref_right)), np.max(np.abs(left - ref_left))))


def ks_p(d: float, n: int, m: int) -> float:
    """Two-sample KS p-value of ``d`` for samples of ``n`` and ``m``: Kolmogorov's limiting
    distribution (scipy.special.kolmogorov) at ``(sqrt(en) + 0.12 + 0.11 / sqrt(en)) * d``,
    ``en = n * m / (n + m)`` (Stephens' small-sample correction; exact enough for the windows here
    and a thousand times cheaper than the exact distribution)."""
    special = require("scipy.special", "monitor", package="scipy")
    if n == 0 or d <= 0.0:
        return 1.0
    en = n * m / (n + m)
    root = math.sqrt(en)
    return float(min(1.0, special.kolmogorov((root + 0.12 + 0.11 / root) * d)))


def ks_test(window_sorted: np.ndarray, quantiles: np.ndarray, reference_rows: int) -> tuple[float, float]:
    """(D, p): the KS statistic and its two-sample p-value (:func:`ks_p`)."""
    d = ks_statistic(window_sorted, quantiles)
    return d, ks_p(d, window_sorted.size, max(int(reference_rows), 1))


def class_test(window_counts: np.ndarray, reference_counts: np.ndarray) -> tuple[float, float, float]:
    """(chi-square statistic, p, PSI of the class proportions) of the window's predicted classes."""
    stats = require("scipy.stats", "monitor", package="scipy")
    w = np.asarray(window_counts, dtype=np.float64)
    r = np.asarray(reference_counts, dtype=np.float64)
    n, m = w.sum(), r.sum()
    if n == 0 or m == 0:
        return 0.0, 1.0, 0.0
    # pool the classes the reference saw too rarely for a chi-square cell (expected < 5 in the window)
    expected = r / m * n
    rare = expected < 5
    if rare.any():
        w = np.append(w[~rare], w[rare].sum())
        r = np.append(r[~rare], r[rare].sum())
    keep = (w + r) > 0
    w, r = w[keep], r[keep]
    k = w.size
    pw = (w + _SMOOTH) / (n + _SMOOTH * k)
    pr = (r + _SMOOTH) / (m + _SMOOTH * k)
    effect = float(np.sum((pw - pr) * np.log(pw / pr)))
    if k < 2:
        return 0.0, 1.0, effect
    table = np.stack([w, r])
    chi2, p, _, _ = stats.chi2_contingency(table, correction=False)
    return float(chi2), float(p), effect


def feature_tests(window: np.ndarray, ref: FeatureStats, names: tuple[str, ...]) -> list[FeatureTest]:
    """KS and PSI of every feature of a window ``[rows, features]``."""
    out = []
    for f, name in enumerate(names):
        col = window[:, f]
        col = np.sort(col[np.isfinite(col)])
        if col.size == 0 or not np.isfinite(ref.quantiles[f]).all():
            out.append(FeatureTest(name, "ks", 0.0, 1.0, 0.0))
            continue
        d, p = ks_test(col, ref.quantiles[f], ref.sampled)
        shift = None
        if ref.std[f] > 0:
            shift = float((col.mean() - ref.mean[f]) / ref.std[f])
        out.append(FeatureTest(name, "ks", d, p, psi(col, ref.bins[f], ref.props[f]), shift))
    return out


def decide(tests: list[FeatureTest], total: int, alpha: float, psi_floor: float) -> bool:
    """Mark each test significant (Bonferroni over ``total`` tests at ``alpha``) and drifting
    (significant and PSI >= ``psi_floor``); whether any drifts."""
    level = alpha / max(total, 1)
    any_drift = False
    for t in tests:
        t.significant = t.p < level
        t.drift = t.significant and t.psi >= psi_floor
        any_drift |= t.drift
    return any_drift


# -- sequential ------------------------------------------------------------------------------------
def siegmund_arl(k: float, h: float) -> float:
    """In-control average run length of a one-sided CUSUM with reference ``k`` and threshold ``h``
    on unit-variance normal increments (Siegmund's approximation)."""
    b = h + 1.166
    x = 2.0 * k * b
    return float((math.exp(x) - x - 1.0) / (2.0 * k * k))


def cusum_reference(reference_rows: int) -> float:
    """The CUSUM's reference value ``k`` (sd) for a profile of ``reference_rows`` samples."""
    return 0.15 + 3.0 / math.sqrt(max(reference_rows, 1))


def cusum_threshold(features: int, window: int, alpha: float, k: float = 0.2) -> float:
    """The ``h`` at which ``2 * features`` one-sided CUSUMs raise a false alarm within ``window``
    samples with probability about ``alpha`` at most."""
    want = 2.0 * features * window / max(alpha, 1e-12)
    lo, hi = 0.0, 200.0
    for _ in range(80):
        mid = (lo + hi) / 2
        if siegmund_arl(k, mid) < want:
            lo = mid
        else:
            hi = mid
    return hi


@dataclass
class Cusum:
    """Two-sided CUSUM on normal scores of each feature; ``update`` returns the features that
    alarmed (statistics reset after an alarm)."""

    stats: FeatureStats
    h: float
    k: float = 0.2
    upper: np.ndarray = field(init=False)
    lower: np.ndarray = field(init=False)
    peak: np.ndarray = field(init=False)
    usable: np.ndarray = field(init=False)
    strict: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        width = self.stats.quantiles.shape[0]
        self.upper = np.zeros(width)
        self.lower = np.zeros(width)
        self.peak = np.zeros(width)
        q = self.stats.quantiles
        # a feature the reference holds constant has no scale to score against: the window tests
        # catch it moving
        self.usable = np.isfinite(q).all(axis=1) & (q[:, -1] > q[:, 0])
        self.strict = self.usable & np.all(np.diff(q, axis=1) > 0, axis=1)

    def scores(self, rows: np.ndarray) -> np.ndarray:
        """Normal scores ``[rows, features]`` of feature rows (mid-rank CDF, clipped to +-3.7)."""
        special = require("scipy.special", "monitor", package="scipy")
        q = self.stats.quantiles
        u = np.empty(rows.shape)
        for f in range(rows.shape[1]):
            col = rows[:, f]
            if self.strict[f]:  # no ties: the CDF is the interpolation of the quantiles
                u[:, f] = np.interp(col, q[f], QUANTILE_LEVELS)
            else:
                u[:, f] = 0.5 * (reference_cdf(q[f], col) + reference_cdf(q[f], col, "left"))
        u = np.clip(np.nan_to_num(u, nan=0.5), 1e-4, 1 - 1e-4)
        z: np.ndarray = special.ndtri(u)
        z[:, ~self.usable] = 0.0
        return z

    def update(self, rows: np.ndarray) -> tuple[np.ndarray, int | None]:
        """Feed feature rows in order: the indices of the features that alarmed, and the row of
        the first alarm (None: no alarm). A feature's statistics restart after its alarm.

        Vectorized over rows: the recursion ``S_t = max(0, S_{t-1} + y_t)`` is
        ``D_t - min(0, min_{s<=t} D_s)`` with ``D`` the running sum from ``S_0`` (Lindley), so a
        chunk costs a few numpy calls; only an alarm (rare) cuts the chunk there."""
        z = self.scores(rows)
        alarmed = np.zeros(z.shape[1], dtype=bool)
        first = None
        start = 0
        while start < z.shape[0]:
            y = z[start:]
            up = _lindley(self.upper, y - self.k)
            low = _lindley(self.lower, -y - self.k)
            hit = (up >= self.h) | (low >= self.h)
            if not hit.any():
                self.upper, self.lower = up[-1].copy(), low[-1].copy()
                break
            row = int(np.argmax(hit.any(axis=1)))
            features = hit[row]
            alarmed |= features
            if first is None:
                first = start + row
            self.upper, self.lower = up[row].copy(), low[row].copy()
            self.upper[features] = 0.0
            self.lower[features] = 0.0
            start += row + 1
        self.peak = np.maximum(self.peak, np.maximum(self.upper, self.lower))
        return np.flatnonzero(alarmed), first

    def level(self) -> float:
        """The largest statistic now, as a fraction of ``h``."""
        return float(np.max(np.maximum(self.upper, self.lower), initial=0.0) / self.h)


def _lindley(start: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Every ``S_t = max(0, S_{t-1} + steps_t)`` from ``S_0 = start`` (>= 0), rows of ``steps``."""
    d = start + np.cumsum(steps, axis=0)
    return d - np.minimum(np.minimum.accumulate(d, axis=0), 0.0)


def round_sig(v: float) -> float:
    """A figure for a report: four significant digits (inf and NaN as they are)."""
    return float(f"{v:.4g}") if math.isfinite(v) else v
