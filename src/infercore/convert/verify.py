"""The parity gate: a converted model is written only if it agrees with its source.

Inputs: at least ``MIN_SETS`` sets generated within each input's spec by ``infercore.inputs``
(seeded), spread over two batch sizes when the batch axis is dynamic and two sizes of every other
dynamic dimension (sequence length, image side), plus every batch of the caller's ``data=`` at its
own shape. The source framework runs each set once; every backend that reads the converted file
(ONNX Runtime and OpenVINO in f32 for ONNX and IR, LiteRT and OpenVINO for ``.tflite``) runs it
too, through ``ic.load``. Each output is compared with ``compare.compare_arrays`` under
``compare.TOLERANCES`` for the precision converted to. A backend that cannot load the file or run
a set fails the check, naming the shape: a model whose batch axis was not declared dynamic fails at
the other batch size.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..compare import TOLERANCES, OutputComparison, compare_arrays
from ..errors import ConversionError, InfercoreError
from ..inputs import as_feed, is_batch_axis, make_feeds
from ..specs import TensorSpec
from .report import Check
from .source import Candidate, Source

__all__ = ["BATCH_SIZES", "DYNAMIC_SIZES", "MIN_SETS", "FeedPlan", "plan_feeds", "verify_candidate"]

log = logging.getLogger(__name__)

MIN_SETS = 16
BATCH_SIZES = (1, 3)
DYNAMIC_SIZES = (32, 64)

Feeds = dict[str, np.ndarray]


@dataclass(frozen=True)
class FeedPlan:
    """The input sets every backend runs: (shape label, feeds by the source's input names)."""

    sets: tuple[tuple[str, Feeds], ...]
    shapes: tuple[str, ...]


def shape_label(feeds: Mapping[str, np.ndarray]) -> str:
    """``x=3x3x32x32``; inputs of one shape share a label: ``input_ids,attention_mask=3x64``."""
    groups: dict[str, list[str]] = {}
    for name, a in feeds.items():
        groups.setdefault("x".join(map(str, np.shape(a))) or "scalar", []).append(name)
    return ", ".join(f"{','.join(names)}={shape}" for shape, names in groups.items())


def plan_feeds(
    specs: Sequence[TensorSpec],
    data: Sequence[Feeds] = (),
    *,
    seed: int = 0,
    ranges: Mapping[str, tuple[float, float]] | None = None,
    min_sets: int = MIN_SETS,
) -> FeedPlan:
    """``min_sets`` generated sets over every combination of the batch sizes (a dynamic batch axis)
    and the other dynamic sizes, then the caller's data, each batch at its own shape."""
    batch_dynamic = any(is_batch_axis(s, i) for s in specs for i in range(s.rank))
    other_dynamic = any(d is None and not is_batch_axis(s, i) for s in specs for i, d in enumerate(s.shape))
    batches: tuple[int | None, ...] = BATCH_SIZES if batch_dynamic else (None,)
    sizes: tuple[int, ...] = DYNAMIC_SIZES if other_dynamic else (DYNAMIC_SIZES[0],)
    configs = list(itertools.product(batches, sizes))
    per = math.ceil(min_sets / len(configs))
    sets: list[tuple[str, Feeds]] = []
    k = 0
    for batch, size in configs:
        for _ in range(per):
            feeds, _info = make_feeds(specs, batch=batch, dynamic_size=size, seed=seed + k, ranges=ranges)
            k += 1
            sets.append((shape_label(feeds), feeds))
    for feeds in data:
        sets.append((f"{shape_label(feeds)} (data)", dict(feeds)))
    shapes = tuple(dict.fromkeys(label for label, _ in sets))
    return FeedPlan(tuple(sets), shapes)


def reference_outputs(source: Source, plan: FeedPlan) -> list[dict[str, np.ndarray]]:
    """The source framework's outputs for every set; a set the source itself cannot run is the
    caller's to fix (``ranges=`` or ``data=``)."""
    out = []
    for label, feeds in plan.sets:
        try:
            got = source.run(feeds)
        except Exception as e:
            hint = (
                "check the data" if label.endswith("(data)")
                else "give data= with real inputs, or ranges= for the generated values"
            )  # fmt: skip
            raise ConversionError(
                f"the source {source.framework} model failed on the inputs {label}: {type(e).__name__}: "
                f"{' '.join(str(e).split())[:400]}; {hint}"
            ) from e
        out.append({k: np.asarray(v) for k, v in got.items()})
    return out


def _pick(names: Sequence[str], wanted: str, mapped: Mapping[str, str], position: int) -> str | None:
    name = mapped.get(wanted, wanted)
    if name in names:
        return name
    for n in names:  # TensorFlow's "x:0"
        if n.split(":")[0] == wanted:
            return n
    return names[position] if position < len(names) else None


def _target_feeds(specs: Sequence[TensorSpec], feeds: Feeds, candidate: Candidate) -> dict[str, np.ndarray]:
    names = [s.name for s in specs]
    by_name = {s.name: s for s in specs}
    out: dict[str, np.ndarray] = {}
    if len(feeds) != len(specs):
        raise ConversionError(
            f"the converted model has {len(specs)} inputs ({', '.join(names)}), the source {len(feeds)} ({', '.join(feeds)})"
        )
    for i, (name, value) in enumerate(feeds.items()):
        target = _pick(names, name, candidate.input_map, i)
        assert target is not None
        spec = by_name[target]
        q = candidate.quantization.get(target)
        if q is not None and spec.dtype.kind in "iu" and np.asarray(value).dtype.kind == "f":
            value = q.quantize(np.asarray(value, np.float32), spec.dtype)  # the source's floats, as int8
        out[target], _ = as_feed(spec, value)
    return out


def _as_source(got: np.ndarray, ref: np.ndarray, q: Any) -> np.ndarray:
    """An integer output of a quantized model in the source's float values."""
    if q is not None and got.dtype.kind in "iu" and ref.dtype.kind == "f":
        return np.asarray(q.dequantize(got), ref.dtype)
    return got


def _worst(cs: list[OutputComparison]) -> tuple[float | None, float | None, float | None, float]:
    def mx(values: list[float | None]) -> float | None:
        vs = [v for v in values if v is not None]
        return max(vs) if vs else None

    cos = [c.cosine for c in cs if c.cosine is not None]
    return mx([c.max_abs for c in cs]), mx([c.max_rel for c in cs]), (min(cos) if cos else None), max(c.mismatch for c in cs)


def verify_candidate(
    candidate: Candidate,
    source: Source,
    plan: FeedPlan,
    references: Sequence[Mapping[str, np.ndarray]],
    *,
    backends: Sequence[str],
    tolerance: str,
) -> list[Check]:
    """Every backend runs every set of ``plan`` on ``candidate.path``; one ``Check`` per backend,
    output and shape label."""
    from ..engine import load

    tol = TOLERANCES[tolerance]
    checks: list[Check] = []
    for backend in backends:
        try:
            eng = load(candidate.path, backend, precision=None)
        except InfercoreError as e:
            checks.append(Check(backend, "*", "(load)", 0, None, None, None, 1.0, False, error=_short(e)))
            continue
        try:
            out_names = [s.name for s in eng.outputs]
            grouped: dict[tuple[str, str], list[OutputComparison]] = {}
            errors: dict[str, str] = {}
            for (label, feeds), ref in zip(plan.sets, references, strict=True):
                if label in errors:
                    continue
                try:
                    got = eng.run(_target_feeds(eng.inputs, feeds, candidate))
                except (InfercoreError, ValueError) as e:
                    errors[label] = _short(e)
                    continue
                if len(got) != len(ref):
                    errors[label] = f"{len(got)} outputs ({', '.join(got)}) where the source has {len(ref)} ({', '.join(ref)})"
                    continue
                for i, (name, r) in enumerate(ref.items()):
                    target = _pick(out_names, name, candidate.output_map, i)
                    if target is None or target not in got:
                        errors[label] = f"no output for the source's {name!r} among {', '.join(got)}"
                        break
                    value = _as_source(got[target], r, candidate.quantization.get(target))
                    c = compare_arrays(r, value, tol, output=name, backend=backend, reference=source.framework)
                    grouped.setdefault((name, label), []).append(c)
            for label, err in errors.items():
                n = sum(1 for lab, _ in plan.sets if lab == label)
                checks.append(Check(backend, "*", label, n, None, None, None, 1.0, False, error=err))
            for (name, label), cs in grouped.items():
                if label in errors:
                    continue
                max_abs, max_rel, cosine, mismatch = _worst(cs)
                failed = [c for c in cs if not c.passed]
                worst = min(failed, key=lambda c: c.cosine if c.cosine is not None else -2.0) if failed else None
                note = f"{len(failed)} of {len(cs)} sets: {worst.note}" if worst is not None else ""
                scale = max(c.scale for c in cs)
                checks.append(
                    Check(backend, name, label, len(cs), max_abs, max_rel, cosine, mismatch, not failed, note=note, scale=scale)
                )
        finally:
            eng.close()
    return checks


def _short(e: BaseException) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())[:400]}"


def target_specs(path: Path, backend: str) -> tuple[TensorSpec, ...]:
    from ..engine import load

    with load(path, backend) as eng:
        return tuple(eng.inputs)
