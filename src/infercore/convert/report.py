"""What ``convert`` did, in one report: the source, each attempt, the file written and every check.

``report.to_dict()`` is the schema ``infercore convert --json`` prints (``schema``:
``infercore.convert/1``); ``str(report)`` is a plain-text summary with one line per backend, output
and checked shape.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from ..compare import fmt_value, json_default

__all__ = ["Attempt", "Check", "ConversionReport", "ConversionResult", "SourceInfo"]


@dataclass(frozen=True)
class SourceInfo:
    """The model converted: its framework (and version), what kind of object or file it was."""

    framework: str  # "pytorch", "keras", "tensorflow", "tflite", "onnx"
    version: str  # "torch 2.13.0"
    kind: str  # "nn.Module", "ExportedProgram", "keras.Model", "SavedModel", "tf.function", ".tflite", ".onnx"
    name: str  # class name or path
    sha256: str  # of the source's weights (in-memory models) or files
    inputs: tuple[str, ...]  # "x: float32 [batch, 3, 32, 32]"
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class Check:
    """One output of the converted model on one backend at one shape, over ``sets`` input sets,
    against the source framework's own output: the worst error seen and the lowest cosine."""

    backend: str
    output: str
    shape: str  # the inputs' shapes, "x=3x3x32x32"
    sets: int
    max_abs: float | None
    max_rel: float | None
    cosine: float | None
    mismatch: float  # largest share of elements outside tolerance over the sets
    passed: bool
    error: str | None = None  # the backend could not load or run the converted model
    note: str = ""
    scale: float | None = None  # the output's largest magnitude over the sets (max_abs / scale: relative)


@dataclass(frozen=True)
class Attempt:
    """One way of producing the target that was tried, and what came of it."""

    exporter: str
    outcome: str  # "written", "verified", "skipped", "failed", "mismatch"
    detail: str = ""
    seconds: float = 0.0


@dataclass(frozen=True)
class ConversionReport:
    """The result of ``ic.convert``; ``passed`` is False when the written file did not verify
    (that report comes with ``ConversionMismatchError``, and nothing was written)."""

    source: SourceInfo
    target: str  # "onnx", "openvino", "tflite"
    output: str
    precision: str  # "fp32", "fp16", "int8"
    exporter: str | None  # the attempt whose file was kept
    attempts: tuple[Attempt, ...]
    verified: bool  # False when verify=False
    passed: bool
    tolerance: str
    checks: tuple[Check, ...]
    shapes: tuple[str, ...]  # every input shape checked
    sets: int  # input sets run through each backend: generated + the caller's data
    backends: tuple[str, ...]
    opset: int | None = None
    checker: str | None = None  # ONNX checker: "passed" or its error
    nodes: int | None = None
    parameters: int | None = None
    size_bytes: int | None = None
    files: tuple[str, ...] = ()
    convert_s: float = 0.0
    verify_s: float = 0.0
    simplified: str | None = None  # "onnxslim 0.1.98: 120 -> 61 nodes", or why not
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {"schema": "infercore.convert/1", **d}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False, default=json_default)

    def max_error(self) -> tuple[float | None, float | None]:
        """The largest abs error over every check, and the largest abs error relative to its
        output's scale (None when nothing was compared)."""
        errs = [c.max_abs for c in self.checks if c.max_abs is not None]
        rel = [c.max_abs / c.scale for c in self.checks if c.max_abs is not None and c.scale]
        return (max(errs) if errs else None), (max(rel) if rel else None)

    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def verdict(self) -> str:
        if not self.verified:
            return "NOT VERIFIED (verify=False)"
        bad = self.failures()
        if not bad:
            verb = "agrees" if len(self.backends) == 1 else "agree"
            return f"VERIFIED: {', '.join(self.backends)} {verb} with {self.source.framework} within {self.tolerance} tolerance"
        first = bad[0]
        what = first.error or f"max abs {fmt_value(first.max_abs)}, cosine {fmt_value(first.cosine, '.6f')}"
        more = f" (+{len(bad) - 1} more)" if len(bad) > 1 else ""
        return f"MISMATCH: {first.backend} output {first.output!r} at {first.shape}: {what}{more}"

    def __str__(self) -> str:
        s = self.source
        lines = [
            f"{s.framework} {s.kind} {s.name} ({s.version}) -> {self.target} {self.output}",
            f"  exporter: {self.exporter or 'none'}; precision {self.precision}"
            + (f"; opset {self.opset}" if self.opset is not None else ""),
        ]
        for a in self.attempts:
            lines.append(f"  attempt {a.exporter}: {a.outcome}" + (f": {a.detail}" if a.detail else ""))
        facts = []
        if self.checker is not None:
            facts.append(f"checker {self.checker}")
        if self.nodes is not None:
            facts.append(f"{self.nodes} nodes")
        if self.parameters is not None:
            facts.append(f"{self.parameters:,} parameters")
        if self.size_bytes is not None:
            facts.append(f"{self.size_bytes / 1e6:.2f} MB")
        facts.append(f"converted in {self.convert_s:.2f} s, verified in {self.verify_s:.2f} s")
        lines.append("  " + "; ".join(facts))
        if self.simplified:
            lines.append(f"  simplified: {self.simplified}")
        if self.verified:
            lines.append(
                f"  checked {self.sets} input sets on {', '.join(self.backends) or 'no backend'} at "
                f"{', '.join(self.shapes)} ({self.tolerance} tolerance)"
            )
            rows = [["backend", "output", "shape", "sets", "max abs", "max rel", "cosine", "verdict"]]
            for c in self.checks:
                rows.append([c.backend, c.output, c.shape, str(c.sets), fmt_value(c.max_abs), fmt_value(c.max_rel),
                             fmt_value(c.cosine, ".6f"), "ok" if c.passed else f"FAIL {c.error or c.note}".strip()])  # fmt: skip
            widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
            for r in rows:
                lines.append("  " + "  ".join(x.ljust(w) for x, w in zip(r, widths, strict=False)) + "  " + r[-1])
        for n in self.notes:
            lines.append(f"  note: {n}")
        lines.append(self.verdict())
        return "\n".join(lines)


@dataclass(frozen=True)
class ConversionResult:
    """What ``ic.convert`` returns: the file written (``.onnx``, ``.xml`` beside its ``.bin``, or
    ``.tflite``) and the report."""

    artifact_path: Any  # pathlib.Path
    report: ConversionReport
