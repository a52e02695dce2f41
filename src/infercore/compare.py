"""Run one model on several backends with the same inputs and say whether they agree.

    report = ic.compare("model.onnx", backends=["ort", "openvino"])
    report.passed            # False when any output of any backend disagrees with the first
    print(report.table())    # per output: max abs/rel error, cosine, share of mismatching elements

The first backend is the reference; every other one is compared with it, output by output. A
backend may carry a precision: ``"openvino:bf16"``. Tolerances follow the loosest precision in
the comparison (``fp32`` < ``fp16`` < ``bf16`` < ``int8``) unless ``tolerance=`` names one.

An element agrees when ``|a - b| <= atol_eff + rtol * |ref|`` with
``atol_eff = max(atol, atol_scale * scale)``, ``scale`` being the largest magnitude of the output
on either backend: differences below a small absolute floor never count, and above it an output
may differ by a small share of its own magnitude. An output passes when the share of elements
that disagree is at most ``max_mismatch`` and, if the output is not nearly zero everywhere (its
RMS is at least 10x ``atol``), its cosine similarity is at least ``min_cosine``. Relative error
and cosine mean nothing on outputs that are ~0 everywhere (a text detector on random pixels), so
there only the absolute floor judges.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .arguments import check_number
from .errors import ArgumentError, InfercoreError, InputSpecError, InputsRejectedError
from .facade import callable_module
from .inputs import InputInfo, as_feed, default_backends, load_feeds, make_feeds, name_feeds, parse_backends
from .modelfiles import quantized_ops
from .specs import PRECISIONS, normalize_precision

__all__ = [
    "PRECISION_ORDER",
    "TOLERANCES",
    "BackendRun",
    "CompareReport",
    "InputInfo",
    "OutputComparison",
    "Tolerance",
    "compare",
    "compare_arrays",
]


# -- tolerances ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tolerance:
    """When two outputs agree. See the module docstring for how the fields combine."""

    rtol: float
    atol: float
    atol_scale: float
    min_cosine: float
    max_mismatch: float
    int_atol: int = 0

    def effective_atol(self, scale: float) -> float:
        return max(self.atol, self.atol_scale * scale)


TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(rtol=1e-4, atol=1e-6, atol_scale=1e-3, min_cosine=0.9999, max_mismatch=1e-3),
    "fp16": Tolerance(rtol=5e-3, atol=1e-5, atol_scale=5e-3, min_cosine=0.999, max_mismatch=1e-2),
    "bf16": Tolerance(rtol=2e-2, atol=1e-4, atol_scale=2e-2, min_cosine=0.99, max_mismatch=2e-2),
    "int8": Tolerance(rtol=5e-2, atol=1e-3, atol_scale=5e-2, min_cosine=0.98, max_mismatch=5e-2, int_atol=1),
}
PRECISION_ORDER = PRECISIONS


# -- comparing two arrays -----------------------------------------------------------------------
@dataclass(frozen=True)
class OutputComparison:
    """One output of one backend against the reference backend."""

    output: str
    backend: str
    reference: str
    shape: tuple[int, ...]
    dtype: str
    max_abs: float | None
    max_rel: float | None  # over elements whose reference magnitude is above atol_eff
    cosine: float | None
    cosine_judged: bool
    mismatch: float  # share of elements outside tolerance
    scale: float  # largest magnitude on either side
    atol: float  # the effective absolute tolerance used
    rtol: float
    passed: bool
    note: str = ""


def _finite_max(a: np.ndarray) -> float:
    finite = a[np.isfinite(a)]
    return float(np.abs(finite).max()) if finite.size else 0.0


def compare_arrays(
    ref: np.ndarray,
    got: np.ndarray,
    tol: Tolerance,
    *,
    output: str = "",
    backend: str = "",
    reference: str = "",
) -> OutputComparison:
    """Compare one output with the reference's (see the module docstring for the rule)."""
    ref = np.asarray(ref)
    got = np.asarray(got)
    notes = []
    if ref.dtype != got.dtype:
        notes.append(f"dtype {got.dtype} vs reference {ref.dtype}")
    base = {"output": output, "backend": backend, "reference": reference, "dtype": str(ref.dtype)}
    if ref.shape != got.shape:
        return OutputComparison(
            **base,
            shape=tuple(got.shape),
            max_abs=None,
            max_rel=None,
            cosine=None,
            cosine_judged=False,
            mismatch=1.0,
            scale=0.0,
            atol=0.0,
            rtol=tol.rtol,
            passed=False,
            note=f"shape {got.shape} vs reference {ref.shape}",
        )
    if ref.size == 0:
        return OutputComparison(
            **base,
            shape=tuple(ref.shape),
            max_abs=0.0,
            max_rel=0.0,
            cosine=None,
            cosine_judged=False,
            mismatch=0.0,
            scale=0.0,
            atol=0.0,
            rtol=tol.rtol,
            passed=True,
            note="empty",
        )
    exact_kind = ref.dtype == np.bool_ or (ref.dtype.kind in "iu" and got.dtype.kind in "iub")
    a = got.astype(np.float64).ravel()  # 0-d outputs too: arithmetic on them gives scalars
    b = ref.astype(np.float64).ravel()
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf: NaN, handled below
        diff = np.abs(a - b)
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    same_special = (nan_a & nan_b) | (np.isinf(a) & np.isinf(b) & (a == b))
    diff[same_special] = 0.0
    scale = max(_finite_max(a), _finite_max(b))
    if exact_kind:
        atol_eff = float(tol.int_atol)
        close = diff <= atol_eff
        rtol = 0.0
    else:
        atol_eff = tol.effective_atol(scale)
        rtol = tol.rtol
        close = diff <= atol_eff + rtol * np.abs(b)
    close[np.isnan(diff)] = False  # NaN on one side only
    close[np.isinf(diff)] = False  # inf on one side (rtol * |inf| would call any value close)
    close[same_special] = True
    mismatch = float(1.0 - close.mean())
    finite_diff = diff[np.isfinite(diff)]
    max_abs = float(finite_diff.max()) if finite_diff.size else math.inf
    meaningful = np.abs(b) > atol_eff
    with np.errstate(invalid="ignore"):  # inf / inf where the two sides are opposite infinities
        max_rel = float((diff[meaningful] / np.abs(b[meaningful])).max()) if meaningful.any() else None
    cosine: float | None = None
    judged = False
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.any():
        na, nb = float(np.linalg.norm(a[ok])), float(np.linalg.norm(b[ok]))
        if na > 0 and nb > 0:
            cosine = float(np.dot(a[ok], b[ok]) / (na * nb))
        elif na == 0 and nb == 0:
            cosine = 1.0
        rms = float(np.sqrt(np.mean(b[ok] ** 2)))
        judged = ref.dtype != np.bool_ and rms >= 10 * tol.atol and not exact_kind
        if not judged and not exact_kind:
            notes.append("nearly zero everywhere: cosine not judged")
    passed = mismatch <= tol.max_mismatch and (
        not judged or (cosine is not None and cosine >= tol.min_cosine)
    )
    if mismatch > tol.max_mismatch:
        notes.append(f"{mismatch:.2%} of elements outside tolerance (max {tol.max_mismatch:.2%})")
    if judged and cosine is not None and cosine < tol.min_cosine:
        notes.append(f"cosine {cosine:.6f} < {tol.min_cosine}")
    return OutputComparison(
        **base,
        shape=tuple(ref.shape),
        max_abs=max_abs,
        max_rel=max_rel,
        cosine=cosine,
        cosine_judged=judged,
        mismatch=mismatch,
        scale=scale,
        atol=atol_eff,
        rtol=rtol,
        passed=passed,
        note="; ".join(notes),
    )


# -- the report ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class BackendRun:
    """One backend's run: what it was, how long its one run took, or why it failed."""

    label: str
    backend: str
    precision: str | None
    device: str
    run_ms: float | None
    error: str | None = None


@dataclass(frozen=True)
class CompareReport:
    """The result of ``ic.compare``: ``passed`` is False on any mismatch or failed backend."""

    model: str
    reference: str
    runs: tuple[BackendRun, ...]
    inputs: tuple[InputInfo, ...]
    tolerance_name: str
    tolerance: Tolerance
    comparisons: tuple[OutputComparison, ...]
    seed: int
    feeds: Mapping[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)
    notes: tuple[str, ...] = ()
    outputs: Mapping[str, Mapping[str, np.ndarray]] = field(default_factory=dict, repr=False, compare=False)

    @property
    def passed(self) -> bool:
        return all(r.error is None for r in self.runs) and all(c.passed for c in self.comparisons)

    @property
    def failed_backends(self) -> tuple[str, ...]:
        return tuple(r.label for r in self.runs if r.error is not None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the schema ``infercore compare --json`` prints (``schema`` is its version)."""
        return {
            "schema": "infercore.compare/1",
            "model": self.model,
            "passed": self.passed,
            "reference": self.reference,
            "seed": self.seed,
            "tolerance": {"name": self.tolerance_name, **asdict(self.tolerance)},
            "backends": [asdict(r) for r in self.runs],
            "inputs": [{**asdict(i), "shape": list(i.shape)} for i in self.inputs],
            "outputs": [{**asdict(c), "shape": list(c.shape)} for c in self.comparisons],
            "notes": list(self.notes),
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False, default=json_default)

    def rows(self) -> list[list[str]]:
        rows = []
        for c in self.comparisons:
            rows.append(
                [
                    c.output,
                    f"{c.backend} vs {c.reference}",
                    fmt_value(c.max_abs),
                    fmt_value(c.max_rel),
                    ("" if c.cosine_judged or c.cosine is None else "(")
                    + fmt_value(c.cosine, ".6f")
                    + ("" if c.cosine_judged or c.cosine is None else ")"),
                    f"{c.mismatch:.2%}",
                    fmt_value(c.atol),
                    "ok" if c.passed else "MISMATCH",
                    c.note,
                ]
            )
        return rows

    HEADERS = ("output", "backends", "max abs", "max rel", "cosine", "mismatch", "atol", "verdict", "note")

    def table(self) -> str:
        """A plain-text table and a one-line verdict."""
        rows = [list(self.HEADERS), *self.rows()]
        widths = [max(len(r[i]) for r in rows) for i in range(len(self.HEADERS))]
        lines = [self._title()]
        for j, r in enumerate(rows):
            lines.append("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
            if j == 0:
                lines.append("  ".join("-" * w for w in widths))
        for run in self.runs:
            if run.error:
                lines.append(f"{run.label}: FAILED: {run.error}")
        lines += [f"note: {n}" for n in self.notes]
        lines.append(self.verdict())
        return "\n".join(lines)

    def _title(self) -> str:
        ins = ", ".join(f"{i.name} {i.dtype}{list(i.shape)}" for i in self.inputs)
        return f"{self.model}: tolerance {self.tolerance_name}, seed {self.seed}, inputs {ins}"

    def verdict(self) -> str:
        if self.failed_backends:
            return f"FAILED: {', '.join(self.failed_backends)} could not run the model"
        bad = sorted({f"{c.backend}:{c.output}" for c in self.comparisons if not c.passed})
        if bad:
            return f"MISMATCH ({self.tolerance_name} tolerance): {', '.join(bad)}"
        labels = ", ".join(r.label for r in self.runs)
        return f"AGREE: {labels} within {self.tolerance_name} tolerance"

    def __str__(self) -> str:
        return self.table()


def fmt_value(v: float | None, spec: str = ".3g") -> str:
    """A figure for a table: ``spec``-formatted, or ``n/a``."""
    return "n/a" if v is None else format(v, spec)


def json_default(o: Any) -> Any:
    """``json.dumps``'s ``default`` for reports: numpy scalars as Python numbers."""
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# -- compare ------------------------------------------------------------------------------------
def _pick_tolerance(
    tolerance: str | Tolerance | None, precisions: Sequence[str | None]
) -> tuple[str, Tolerance]:
    if isinstance(tolerance, Tolerance):
        return "custom", tolerance
    if tolerance is not None:
        name = normalize_precision(tolerance, "tolerance")
        assert name is not None
        return name, TOLERANCES[name]
    name = max((p or "fp32" for p in precisions), key=PRECISION_ORDER.index)
    return name, TOLERANCES[name]


def _quantized(path: Path, engine: Any) -> str:
    """Why the model itself computes in int8 ("" when it does not): quantized ONNX ops, or
    quantized inputs/outputs (a .tflite). Runtimes round its integer steps differently."""
    ops = quantized_ops(path)
    if ops:
        return f"quantized ops {', '.join(ops)}"
    tensors = [s.name for s in (*engine.inputs, *engine.outputs) if s.quantization is not None]
    return f"quantized tensors {', '.join(tensors)}" if tensors else ""


def compare(
    model: str | os.PathLike[str],
    backends: str | Sequence[str] | None = None,
    *,
    inputs: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    shapes: Mapping[str, Sequence[int] | int] | None = None,
    seed: int = 0,
    distribution: str = "uniform",
    tolerance: str | Tolerance | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    device: str = "cpu",
    threads: int | None = None,
    keep_outputs: bool = False,
) -> CompareReport:
    """Run ``model`` on each of ``backends`` with the same inputs and compare every output.

    ``backends``: names, each optionally with a precision (``["ort", "openvino:bf16"]`` or
    ``"ort,openvino:bf16"``); the first is the reference. Default: every installed backend that
    reads the file (``infercore.inputs.default_backends``). ``inputs``: a data file (``.npz``,
    ``.npy``, a directory) or a dict name -> array (or a number that fills the tensor); inputs not
    given are generated, and ``shapes`` sizes them, by ``infercore.inputs``' rules. ``tolerance``:
    ``"fp32"``, ``"fp16"``, ``"bf16"``, ``"int8"`` or a ``Tolerance``; default the loosest
    precision among the backends. ``rtol``/``atol`` override that tolerance's fields.
    ``report.feeds`` holds the inputs used; ``keep_outputs=True`` keeps every backend's outputs in
    ``report.outputs``.
    """
    from .engine import Engine, load

    path = Path(model)
    if backends is None:
        names = default_backends(path)
        if len(names) < 2:
            raise ArgumentError(
                "backends",
                f"compare needs two backends that read {path.name}; installed: {', '.join(names)}. Name them",
            )
        backends = names
    choices = parse_backends(backends)
    if len(choices) < 2:
        raise ArgumentError("backends", f"compare needs at least two backends, got {[c.label for c in choices]}")
    labels = [c.label for c in choices]
    tol_name, tol = _pick_tolerance(tolerance, [c.precision for c in choices])
    for name, v in (("rtol", rtol), ("atol", atol)):
        check_number(name, v, optional=True)
    if rtol is not None or atol is not None:
        tol = replace(tol, rtol=tol.rtol if rtol is None else rtol, atol=tol.atol if atol is None else atol)
        tol_name += " (overridden)"

    engines: list[Engine | None] = []
    runs: list[BackendRun] = []
    try:
        for choice in choices:
            try:
                engines.append(load(path, choice.name, device=device, precision=choice.precision, threads=threads))
            except InfercoreError as e:
                if not engines:
                    raise  # the reference must load: nothing to compare against
                engines.append(None)
                runs.append(
                    BackendRun(choice.label, choice.name, choice.precision, device, None, f"{type(e).__name__}: {e}")
                )
                continue
            runs.append(BackendRun(choice.label, choice.name, choice.precision, device, None))
        ref_engine = engines[0]
        assert ref_engine is not None
        notes: list[str] = []
        why = _quantized(path, ref_engine) if tolerance is None else ""
        if why and PRECISION_ORDER.index(tol_name.split()[0]) < PRECISION_ORDER.index("int8"):
            tol_name, base = "int8", TOLERANCES["int8"]
            tol = replace(base, rtol=base.rtol if rtol is None else rtol, atol=base.atol if atol is None else atol)
            if rtol is not None or atol is not None:
                tol_name += " (overridden)"
            notes.append(f"int8 tolerance: the model itself is quantized ({why}); a tolerance named explicitly overrides it")
        given = (
            load_feeds(inputs, ref_engine.inputs)
            if isinstance(inputs, (str, os.PathLike))
            else name_feeds(inputs or {}, ref_engine.inputs, "inputs")
        )
        feeds, info = make_feeds(
            ref_engine.inputs,
            values=given,
            shapes=shapes,
            seed=seed,
            metadata=ref_engine.metadata,
            distribution=distribution,
        )
        results: dict[str, dict[str, np.ndarray]] = {}
        for i, (eng, label) in enumerate(zip(engines, labels, strict=True)):
            if eng is None:
                continue
            try:
                these = _feeds_for(eng, feeds)
                t0 = time.perf_counter()
                results[label] = eng.run(these)
                runs[i] = replace(runs[i], run_ms=(time.perf_counter() - t0) * 1e3)
            except InfercoreError as e:
                if i == 0:
                    generated = tuple(k for k, v in info.items() if v.source.startswith("generated"))
                    used = "; ".join(f"{k} {list(v.shape)} {v.source}" for k, v in info.items())
                    raise InputsRejectedError(
                        f"{label} (the reference) failed on the inputs ({used}): {e}. Give real inputs "
                        f"(inputs=) or other shapes (shapes=) for {', '.join(generated) or 'them'}",
                        tensor=(generated or tuple(info))[0] if info else None,
                        generated=generated,
                    ) from e
                runs[i] = replace(runs[i], error=f"{type(e).__name__}: {e}")
    finally:
        for eng in engines:
            if eng is not None:
                eng.close()

    comparisons = []
    ref_label = labels[0]
    ref_out = results[ref_label]
    for label in labels[1:]:
        if label not in results:
            continue
        got = results[label]
        pairs = _pair_outputs(ref_out, got)
        for ref_name, got_name, note in pairs:
            c = compare_arrays(
                ref_out[ref_name], got[got_name], tol, output=ref_name, backend=label, reference=ref_label
            )
            if note:
                c = replace(c, note="; ".join(x for x in (note, c.note) if x))
            comparisons.append(c)
        if len(ref_out) != len(got):
            comparisons.append(
                OutputComparison(
                    "(outputs)",
                    label,
                    ref_label,
                    (),
                    "",
                    None,
                    None,
                    None,
                    False,
                    1.0,
                    0.0,
                    0.0,
                    tol.rtol,
                    False,
                    f"{len(got)} outputs vs {len(ref_out)} on the reference",
                )
            )
    return CompareReport(
        model=str(path),
        reference=ref_label,
        runs=tuple(runs),
        inputs=tuple(info.values()),
        tolerance_name=tol_name,
        tolerance=tol,
        comparisons=tuple(comparisons),
        seed=seed,
        feeds=feeds,
        outputs=results if keep_outputs else {},
        notes=tuple(notes),
    )


def _feeds_for(eng: Any, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The reference's inputs, cast where another backend declares a different dtype of the same kind.

    The cast keeps every value or is refused: int64 ids beyond int32 never wrap on the way.
    """
    out = {}
    for spec in eng.inputs:
        if spec.name not in feeds:
            raise InputSpecError(
                f"{eng.backend_name} names its inputs {[s.name for s in eng.inputs]}, the reference {list(feeds)}",
                tensor=spec.name,
            )
        out[spec.name], _ = as_feed(spec, feeds[spec.name])  # refused (this backend fails) if a value changes
    return out


def _pair_outputs(ref: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray]) -> list[tuple[str, str, str]]:
    """Outputs matched by name, or by position when the runtimes name them differently."""
    if set(ref) == set(got):
        return [(n, n, "") for n in ref]
    return [(r, g, "" if r == g else f"matched by position: {g!r}") for r, g in zip(ref, got, strict=False)]



callable_module(__name__, "compare")  # ic.compare stays callable once this module is imported
