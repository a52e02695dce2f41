"""Per-request input screening: how unlike the reference a request's tensors are.

For each screened tensor, a sample's features (see :mod:`.features`) are standardized with the
reference's mean and spread and whitened with the reference's shrunk correlation matrix (up to 128
features; beyond, each feature is scaled alone); the RMS of that vector is the sample's distance.
The profile holds the distances of reference samples that the model was not fitted on, so the
distance becomes a tail probability ``p``: the share of reference samples at least that far
(interpolated up to the 95th percentile, an exponential tail beyond). Over several tensors the
smallest ``p`` counts, times the number of tensors (Bonferroni). The **score** is ``-log10(p)``:

- a score of 2 is as far as 1 reference sample in 100, 3 as 1 in 1,000;
- so on data like the reference, ``threshold: t`` flags about ``10**-t`` of the requests (the
  measured rate on held-out data is in docs/monitoring.md);
- a non-finite value scores infinity.

``Screen.check`` scores every sample of a request and reports the worst.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..arguments import check_choice, check_number
from ..errors import ArgumentError
from .profile import Profile

__all__ = ["ACTIONS", "Screen", "ScreenResult"]

ACTIONS = ("flag", "reject")


@dataclass(frozen=True)
class ScreenResult:
    score: float  # the worst sample's -log10(p)
    flagged: bool
    tensor: str | None  # the tensor that scored worst
    row: int  # its sample
    reason: str

    def parameters(self) -> dict[str, Any]:
        """The response parameters of a flagged request."""
        return {"screen_flagged": self.flagged, "screen_score": _json_score(self.score)}


class Screen:
    """Scores requests against a profile; counts what it passed, flagged and rejected."""

    def __init__(
        self,
        profile: Profile,
        *,
        threshold: float = 3.0,
        action: str = "flag",
        tensors: Sequence[str] | None = None,
    ) -> None:
        self.threshold = float(check_number("threshold", threshold, minimum=0.0, inclusive=False) or 0.0)
        self.action = check_choice("action", action, ACTIONS)
        if tensors is None:
            tensors = [n for n, t in profile.tensors.items() if t.kind == "input" and t.screen is not None]
        unknown = [n for n in tensors if n not in profile.tensors]
        if unknown:
            raise ArgumentError(
                "tensors", f"the profile has no tensor {', '.join(map(repr, unknown))}; it has {', '.join(profile.tensors)}"
            )
        missing = [n for n in tensors if profile.tensors[n].screen is None]
        if missing:
            raise ArgumentError(
                "tensors",
                f"the profile has no screening statistics for {', '.join(map(repr, missing))} "
                "(a profile needs at least 40 reference samples of a tensor to screen it)",
            )
        if not tensors:
            raise ArgumentError("tensors", "no tensor of the profile can be screened")
        self.profile = profile
        self.tensors = tuple(tensors)
        self.inputs_only = all(profile.tensors[n].kind == "input" for n in self.tensors)
        self.passed = 0
        self.flagged = 0
        self.rejected = 0

    def scores(self, tensors: Mapping[str, np.ndarray]) -> np.ndarray:
        """Per sample, the screening score: ``-log10`` of the Bonferroni-combined tail probability
        over the screened tensors present in ``tensors``."""
        per = self.per_tensor(tensors)
        if not per:
            return np.zeros(0)
        worst = np.max(np.stack(list(per.values())), axis=0)  # the smallest tail probability
        return np.maximum(worst - math.log10(len(per)), 0.0)

    def per_tensor(self, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Each screened tensor's own score per sample (no combination across tensors)."""
        out = {}
        for name in self.tensors:
            if name in tensors:
                t = self.profile.tensors[name]
                assert t.screen is not None
                d = t.screen.distance(t.featurizer(np.asarray(tensors[name])))
                out[name] = np.where(np.isinf(d), np.inf, -np.log10(t.screen.tail_p(d)))
        return out

    def check(self, tensors: Mapping[str, np.ndarray], count: bool = True) -> ScreenResult:
        """Score a request; ``flagged`` when its worst sample reaches the threshold."""
        per = self.per_tensor(tensors)
        if not per:
            return ScreenResult(0.0, False, None, 0, "")
        worst_tensor, worst_row, worst = None, 0, -math.inf
        for name, s in per.items():
            if s.size and float(s.max()) > worst:
                worst_tensor, worst_row, worst = name, int(s.argmax()), float(s.max())
        combined = max(worst - math.log10(len(per)), 0.0)
        flagged = combined >= self.threshold
        reason = ""
        if flagged:
            reason = (
                f"input screening: sample {worst_row} of tensor {worst_tensor!r} is unlike the data the model "
                f"was profiled on (score {_text_score(combined)} >= threshold {self.threshold:g}: about "
                f"{_rate(combined)} of reference samples are as far)"
            )
        if count:
            if not flagged:
                self.passed += 1
            elif self.action == "reject":
                self.rejected += 1
            else:
                self.flagged += 1
        return ScreenResult(combined, flagged, worst_tensor, worst_row, reason)

    def counts(self) -> dict[str, int]:
        return {"passed": self.passed, "flagged": self.flagged, "rejected": self.rejected}


def _json_score(v: float) -> float:
    return round(v, 3) if math.isfinite(v) else 1e308


def _text_score(v: float) -> str:
    return f"{v:.2f}" if math.isfinite(v) else "inf (non-finite values)"


def _rate(score: float) -> str:
    if not math.isfinite(score):
        return "none"
    return f"1 in {10**score:,.0f}" if score < 15 else "none"
