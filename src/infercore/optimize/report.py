"""What ``ic.optimize`` measured: one row per state of the model, the input first.

``report.to_dict()`` is the JSON ``infercore optimize --json`` prints (``schema``:
``infercore.optimize/1``); ``report.table()`` a plain-text table, ``report.markdown()`` the same in
Markdown, ``report.plot(path)`` latency and accuracy per step as a PNG (matplotlib).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..optional import require

__all__ = ["OptimizeReport", "OptimizeResult", "StepReport"]


@dataclass(frozen=True)
class StepReport:
    """One state of the model, measured on the target's backend.

    ``kind``: ``"input"`` (the model as given, converted), ``"speed"`` (pruning, INT8: flagged
    ``"no speedup"`` below ``min_speedup``), ``"recovery"`` (distillation) or ``"format"`` (the
    conversion the later steps start from: the same file as the state before it). Speed ratios
    are against the row before (``speedup``) and against the input (``total``): latency p50 at
    batch 1, and items per second at each model's best batch; medians of per-round ratios, and
    (``*_low``) their lower quartiles, which the ``"no speedup"`` flag reads.
    """

    step: str
    kind: str
    description: str
    artifact: str
    size_bytes: int
    metrics: dict[str, float]
    p50_ms: float
    p99_ms: float
    best_batch: int
    best_p50_ms: float
    best_p99_ms: float
    best_items_per_s: float
    speedup: float | None
    speedup_best: float | None
    speedup_low: float | None  # lower quartiles of the per-round ratios: what the flag reads
    speedup_best_low: float | None
    total: float
    total_best: float
    flag: str | None
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OptimizeReport:
    """The chain's every state, the metric's drop from the input to the last, and the verdict."""

    target: str
    backend: str
    metric: str
    eval_samples: int
    eval_source: str
    steps: tuple[StepReport, ...]
    drop: float
    max_drop: float | None
    passed: bool
    batches: tuple[int, ...]
    rounds: int
    output_dir: str
    final: str | None  # the final model written to output_dir (None when refused)
    min_speedup: float
    created: str
    notes: tuple[str, ...] = ()

    # -- data -------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"schema": "infercore.optimize/1", **_finite(asdict(self))}

    def to_json(self, path: str | os.PathLike[str] | None = None, indent: int | None = 2) -> str:
        text = json.dumps(self.to_dict(), indent=indent, allow_nan=False, default=str)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    def step(self, name: str) -> StepReport:
        """The last row of step ``name`` (``"input"``, ``"prune"``, ``"distill"``, ``"convert"``, ``"int8"``)."""
        for s in reversed(self.steps):
            if s.step == name:
                return s
        raise KeyError(f"no step {name!r}; the steps are {[s.step for s in self.steps]}")

    # -- text -------------------------------------------------------------------------------------
    def _score(self, s: StepReport) -> str:
        v = s.metrics.get(self.metric)
        if v is None:
            return "-"
        return f"{100 * v:.2f}%" if self.metric != "cosine" else f"{v:.5f}"

    def _rows(self) -> tuple[list[str], list[list[str]]]:
        head = ["step", self.metric, "size", "p50 b1 ms", "p99 b1 ms", "best batch", "items/s",
                "x prev b1", "x prev best", "x input b1", "x input best", "flag"]  # fmt: skip
        rows = []
        for s in self.steps:
            rows.append([
                s.step,
                self._score(s), _size(s.size_bytes), f"{s.p50_ms:.3f}", f"{s.p99_ms:.3f}", str(s.best_batch),
                f"{s.best_items_per_s:,.0f}", _x(s.speedup), _x(s.speedup_best), _x(s.total), _x(s.total_best),
                s.flag or "",
            ])  # fmt: skip
        return head, rows

    def verdict(self) -> str:
        """One line: the metric from the input to the last step, the drop, and what max_drop said."""
        pts = self.metric != "cosine"
        drop = f"{100 * self.drop:+.2f} pt" if pts else f"{self.drop:+.5f}"
        first, last = self.steps[0], self.steps[-1]
        head = f"{self.metric} {self._score(first)} -> {self._score(last)} (drop {drop}"
        if self.max_drop is None:
            return head + ", not checked: no max_drop)"
        limit = f"{100 * self.max_drop:.2f} pt" if pts else f"{self.max_drop:.5f}"
        return head + f", max_drop {limit}): " + ("ok" if self.passed else "REFUSED, final model not written")

    def table(self) -> str:
        head, rows = self._rows()
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip()
                 for r in [head, *rows]]  # fmt: skip
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def markdown(self) -> str:
        head, rows = self._rows()
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)

    def __str__(self) -> str:
        lines = [
            f"optimize for {self.target} ({self.backend}): {' -> '.join(s.step for s in self.steps)}",
            f"  {self.metric} on {self.eval_samples} samples ({self.eval_source}); speed in {self.rounds} paired rounds "
            f"at batches {', '.join(map(str, self.batches))}; 'no speedup': a speed step below {self.min_speedup:g}x",
            "",
            self.table(),
            "",
            *[f"{s.step}: {s.description}" + (f" ({s.seconds:.1f} s)" if s.seconds else "") for s in self.steps],
            "",
            self.verdict(),
        ]
        if self.final:
            lines.append(f"final model: {self.final}")
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)

    # -- plot -------------------------------------------------------------------------------------
    def plot(self, path: str | os.PathLike[str]) -> Path:
        """Latency at batch 1 (bars, with the speedup against the input) and the metric per step."""
        matplotlib = require("matplotlib", "bench")
        matplotlib.use("Agg")
        plt = require("matplotlib.pyplot", "bench")
        names = [s.step for s in self.steps]
        fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(names) + 2), 3.6))
        try:
            bars = ax.bar(names, [s.p50_ms for s in self.steps], color="#4c72b0")
            for b, s in zip(bars, self.steps, strict=True):
                label = f"{s.total:.2f}x" + (f"\n{s.flag}" if s.flag else "")
                ax.annotate(label, (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom", fontsize=8)
            ax.set_ylabel(f"p50 latency, batch 1 (ms) on {self.backend}")
            ax.set_title(f"infercore optimize: {self.target}")
            scores = [s.metrics.get(self.metric, math.nan) for s in self.steps]
            if any(math.isfinite(v) for v in scores):
                ax2 = ax.twinx()
                scale = 100 if self.metric != "cosine" else 1
                ax2.plot(names, [v * scale for v in scores], color="#dd8452", marker="o")
                ax2.set_ylabel(self.metric + (" (%)" if scale == 100 else ""))
            fig.tight_layout()
            out = Path(path)
            out.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(out, dpi=110)
        finally:
            plt.close(fig)
        return out


@dataclass(frozen=True)
class OptimizeResult:
    """The final torch module (after the torch steps), the final model file (None when ``max_drop``
    refused it) and the report."""

    module: Any
    artifact_path: Path | None
    report: OptimizeReport


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def _size(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"


def _finite(obj: Any) -> Any:
    """NaN and infinity as None: JSON has neither."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj
