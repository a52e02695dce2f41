"""``convert``: build the target, verify it against the source, and only then write it.

Every attempt is built in a scratch directory beside the output (so the final move is a rename on
one file system), simplified (ONNX, onnxslim), given infercore's metadata, and verified. The first
attempt that verifies is moved into place, data files (``.bin``, ONNX external data) first and the
model file last; when none does, nothing is written at the output path and
``ConversionMismatchError`` carries the report. The metadata says ``verified`` only on a file that
was; a failed candidate, metadata and all, is deleted with the scratch directory.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..arguments import check_choice, check_int
from ..errors import ArgumentError, BackendUnavailableError, ConversionError, ConversionMismatchError
from ..inputs import as_feed, default_backends, name_feeds, parse_backends, read_data
from ..modelfiles import model_files, sha256_files
from ..specs import TensorSpec, normalize_precision
from .report import Attempt, Check, ConversionReport, ConversionResult, SourceInfo
from .source import Candidate, Options, Source
from .verify import FeedPlan, plan_feeds, reference_outputs, verify_candidate

__all__ = ["PAIRS", "TARGETS", "convert"]

TARGETS = ("onnx", "openvino", "tflite")
SUFFIXES = {"onnx": ".onnx", "openvino": ".xml", "tflite": ".tflite"}
_BY_SUFFIX = {v: k for k, v in SUFFIXES.items()}
PRECISIONS = {"onnx": ("fp32",), "openvino": ("fp32", "fp16"), "tflite": ("fp32", "fp16", "int8")}
PAIRS = (
    ("PyTorch nn.Module / ExportedProgram (.pt2) / TorchScript (.pt)", "onnx", "torch.onnx.export (dynamo, torchscript)"),
    ("PyTorch nn.Module / ExportedProgram (.pt2) / TorchScript (.pt)", "openvino", "openvino.convert_model"),
    ("Keras model (.keras) / SavedModel dir / tf.function", "onnx", "tf2onnx.convert.from_function"),
    ("Keras model (.keras) / SavedModel dir / tf.function", "tflite", "tf.lite.TFLiteConverter (fp32, fp16, int8)"),
    ("Keras model (.keras) / SavedModel dir / tf.function", "openvino", "openvino.convert_model"),
    (".tflite", "onnx", "tf2onnx.convert.from_tflite"),
    (".tflite", "openvino", "openvino.convert_model"),
    (".onnx", "onnx", "onnxslim (simplified)"),
    (".onnx", "openvino", "openvino.convert_model"),
)
"""Every source/target pair: (source, target, converter)."""


def _version() -> str:
    from .. import __version__

    return __version__


# -- arguments -------------------------------------------------------------------------------------
def _dynamic(dynamic: Any) -> dict[str, dict[int, str]]:
    """``{"x": {0: "batch"}}``, or ``{"x": [0, 1]}`` (axis 0 named ``batch``, others ``x_dim1``)."""
    if dynamic is None:
        return {}
    if not isinstance(dynamic, Mapping):
        raise ArgumentError("dynamic", f'expected a dict input name -> {{axis: name}}, e.g. {{"x": {{0: "batch"}}}}, got {dynamic!r}')
    out: dict[str, dict[int, str]] = {}
    for name, axes in dynamic.items():
        if isinstance(axes, Mapping):
            items = list(axes.items())
        elif isinstance(axes, Iterable) and not isinstance(axes, str):
            items = [(a, "batch" if a == 0 else f"{name}_dim{a}") for a in axes]
        else:
            raise ArgumentError("dynamic", f"{name!r}: expected {{axis: name}} or a list of axes, got {axes!r}")
        fixed: dict[int, str] = {}
        for axis, dim in items:
            if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
                raise ArgumentError("dynamic", f"{name!r}: axis {axis!r} is not an integer")
            if not isinstance(dim, str) or not dim.strip():
                raise ArgumentError("dynamic", f"{name!r}: axis {axis} needs a name (a non-empty string), got {dim!r}")
            fixed[int(axis)] = dim.strip()
        out[str(name)] = fixed
    return out


def _names(value: Any, parameter: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = [value] if isinstance(value, str) else list(value)
    if not items or not all(isinstance(n, str) and n for n in items) or len(set(items)) != len(items):
        raise ArgumentError(parameter, f"expected distinct non-empty names, got {value!r}")
    return tuple(items)


def _data_sets(data: Any, specs: Sequence[TensorSpec]) -> list[dict[str, np.ndarray]]:
    """The caller's data as feed dicts by the source's input names, values cast losslessly to
    each input's dtype, shapes as given (the converted model is what must accept them)."""
    if data is None:
        return []
    if isinstance(data, (str, os.PathLike)):
        read = read_data(data)
        items: list[Any] = list(read.items)
        origin = read.source
    elif isinstance(data, (Mapping, np.ndarray)):
        items, origin = [data], "data"
    elif isinstance(data, Iterable):
        items, origin = list(data), "data"
    else:
        raise ArgumentError("data", f"expected a dict of arrays, an array, a list of them or a .npz/.npy/directory path, got {type(data).__name__}")
    loose = [TensorSpec(s.name, s.dtype, (None,) * s.rank) for s in specs]
    out = []
    for i, item in enumerate(items):
        named = name_feeds(item, loose, f"{origin}[{i}]" if len(items) > 1 else origin, complete=True)
        feeds = {}
        for s in loose:
            feeds[s.name], _ = as_feed(s, named[s.name], origin=f"{origin}: ")
        out.append(feeds)
    return out


MAX_DATA_BATCHES = 64


def _cut_to_fixed_batch(data: list[dict[str, np.ndarray]], specs: Sequence[TensorSpec]) -> list[dict[str, np.ndarray]]:
    """Batches of a model file whose inputs all fix dimension 0 at ``b``: a batch of ``k * b`` rows
    becomes ``k`` batches (at most ``MAX_DATA_BATCHES`` in all), as the file itself can only run them."""
    sizes = {s.shape[0] if s.rank else None for s in specs}
    if len(sizes) != 1 or None in sizes:
        return data
    b = next(iter(sizes))
    assert b is not None
    out: list[dict[str, np.ndarray]] = []
    for feeds in data:
        rows = {int(np.shape(v)[0]) for v in feeds.values() if np.ndim(v)}
        n = rows.pop() if len(rows) == 1 else 0
        if b > 0 and n > b and n % b == 0:
            out += [{k: v[i : i + b] for k, v in feeds.items()} for i in range(0, n, b)]
        else:
            out.append(feeds)
    return out[:MAX_DATA_BATCHES]


def _data_ranges(data: Sequence[Mapping[str, np.ndarray]], specs: Sequence[TensorSpec]) -> dict[str, tuple[float, float]]:
    """Each float input's value range in the caller's data: what INT8 was calibrated for."""
    out: dict[str, tuple[float, float]] = {}
    for s in specs:
        if s.dtype.kind != "f":
            continue
        arrays = [np.asarray(d[s.name]) for d in data if np.size(d[s.name])]
        if arrays:
            lo, hi = min(float(a.min()) for a in arrays), max(float(a.max()) for a in arrays)
            if hi > lo:
                out[s.name] = (lo, hi)
    return out


# -- sources ---------------------------------------------------------------------------------------
def _open_source(model: Any, example_inputs: Any, *, input_names: tuple[str, ...] | None,
                 output_names: tuple[str, ...] | None, dynamic: dict[str, dict[int, str]]) -> tuple[Source, Path | None]:  # fmt: skip
    from . import from_files, from_tf, from_torch

    kw: dict[str, Any] = {"input_names": input_names, "output_names": output_names, "dynamic": dynamic}
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.exists():
            raise ArgumentError("model", f"{path} does not exist")
        suffix = path.suffix.lower()
        if suffix in (".onnx", ".tflite"):
            given = [k for k, v in kw.items() if v] + (["example_inputs"] if example_inputs is not None else [])
            if given:
                raise ArgumentError(given[0], f"a {suffix} file keeps its own inputs, outputs and shapes: leave {given[0]} out")
            opener = from_files.open_onnx if suffix == ".onnx" else from_files.open_tflite
            return opener(path), path
        digest = sha256_files(model_files(path))
        if suffix in (".pt", ".pt2", ".pth"):
            obj = from_torch.read_torch_file(path)
            return from_torch.open_torch(obj, example_inputs, name=str(path), sha256=digest, **kw), path
        if suffix in (".keras", ".h5") or path.is_dir():
            obj = from_tf.read_tf_path(path)
            return from_tf.open_tf(obj, example_inputs, name=str(path), sha256=digest, **kw), path
        raise ArgumentError(
            "model", f"{path.name}: expected .pt/.pt2 (PyTorch), .keras, a SavedModel directory, .tflite or .onnx"
        )
    if from_torch.is_torch_model(model):
        return from_torch.open_torch(model, example_inputs, **kw), None
    if from_tf.is_tf_model(model):
        return from_tf.open_tf(model, example_inputs, **kw), None
    raise ArgumentError(
        "model",
        f"expected a torch nn.Module or ExportedProgram, a Keras model, a tf.function, or a model file path, got {type(model).__name__}",
    )


def _output_path(output: Any, to: str | None, source_path: Path | None) -> tuple[Path, str]:
    if to is not None:
        check_choice("to", to, TARGETS)
    if output is None:
        if to is None or source_path is None:
            raise ArgumentError("output", "give the output path (.onnx, .xml or .tflite)")
        out = source_path.with_suffix(SUFFIXES[to]) if source_path.is_file() else source_path.parent / (source_path.name + SUFFIXES[to])
    else:
        out = Path(output)
    target = to or _BY_SUFFIX.get(out.suffix.lower())
    if target is None:
        raise ArgumentError("output", f"{out.name}: the target is read from the suffix (.onnx, .xml, .tflite), or give to=")
    if out.suffix.lower() != SUFFIXES[target]:
        raise ArgumentError("output", f"a {target} model is written as {SUFFIXES[target]}, got {out.name}")
    if source_path is not None and out.resolve() == source_path.resolve():
        raise ArgumentError("output", f"{out} would overwrite the source model")
    if out.is_dir():
        raise ArgumentError("output", f"{out} is a directory")
    return out, target


# -- the conversion --------------------------------------------------------------------------------
def convert(
    model: Any,
    to: str | None = None,
    example_inputs: Any = None,
    *,
    dynamic: Mapping[str, Any] | None = None,
    opset: int | None = None,
    precision: str | None = None,
    simplify: bool = True,
    verify: bool = True,
    data: Any = None,
    output: str | os.PathLike[str] | None = None,
    exporter: str | None = None,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    backends: str | Sequence[str] | None = None,
    ranges: Mapping[str, tuple[float, float]] | None = None,
    seed: int = 0,
) -> ConversionResult:
    """Convert ``model`` to ``to`` (``"onnx"``, ``"openvino"``, ``"tflite"``; default: from the
    output's suffix), verify the result against the source framework, and write it at ``output``.

    ``model``: a torch ``nn.Module`` or ``ExportedProgram``, a Keras model, a ``tf.function``, or a
    path: ``.pt2``/``.pt`` (torch.export or TorchScript), ``.keras``, a SavedModel directory,
    ``.tflite``, ``.onnx``. ``example_inputs``: a tensor, a tuple of them or a dict by argument
    name (torch modules; a tf.function without input signature). ``dynamic``: dynamic axes by
    input name, ``{"input_ids": {0: "batch", 1: "sequence"}}``. ``precision``: ``"fp16"``
    (OpenVINO weights, TFLite weights) or ``"int8"`` (TFLite full-integer, calibrated on
    ``data``); default fp32. ``simplify``: onnxslim on ONNX targets. ``data``: real inputs, a dict
    of arrays (one batch), a list of them, or a ``.npz``/``.npy``/directory path; verified on
    beside the generated sets. ``exporter``: ``"dynamo"`` or ``"torchscript"`` first (torch).
    ``backends``: the backends that verify (default: every installed one that reads the target).
    ``ranges``: value ranges of generated inputs, ``{"x": (0, 1)}``.

    Raises ``ConversionMismatchError`` (with ``.report``) when no attempt verifies: nothing is
    written at ``output``. ``verify=False`` writes the first conversion that succeeds, unchecked,
    and says so in its metadata.
    """
    check_int("opset", opset, minimum=7, optional=True)
    check_int("seed", seed, minimum=0)
    if exporter is not None:
        check_choice("exporter", exporter, ("dynamo", "torchscript"))
    for name, flag in (("simplify", simplify), ("verify", verify)):
        if not isinstance(flag, bool):
            raise ArgumentError(name, f"expected True or False, got {flag!r}")
    dyn = _dynamic(dynamic)
    ins, outs = _names(input_names, "input_names"), _names(output_names, "output_names")
    prec = normalize_precision(precision) or "fp32"
    if output is not None and not isinstance(output, (str, os.PathLike)):
        raise ArgumentError("output", f"expected a path, got {type(output).__name__}")
    source_path = Path(model) if isinstance(model, (str, os.PathLike)) else None
    out, target = _output_path(output, to, source_path)
    if prec not in PRECISIONS[target]:
        hint = " (quantize an ONNX or IR model with ic.calibrate / convert_fp16)" if target != "tflite" else ""
        raise ArgumentError("precision", f"{target} is converted to {', '.join(PRECISIONS[target])}, not {prec}{hint}")
    chosen = [c.name for c in parse_backends(backends)] if backends is not None else None
    out.parent.mkdir(parents=True, exist_ok=True)
    if not os.access(out.parent, os.W_OK):
        raise ArgumentError("output", f"cannot write in {out.parent}")

    source, _ = _open_source(model, example_inputs, input_names=ins, output_names=outs, dynamic=dyn)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        if target not in source.targets:
            raise ArgumentError("to", f"a {source.framework} {source.kind} converts to {', '.join(source.targets)}, not {target}")
        if exporter is not None and source.framework != "pytorch":
            raise ArgumentError("exporter", f"chooses a torch.onnx exporter; the source is a {source.framework} model")
        if opset is not None and (target != "onnx" or source.framework == "onnx"):
            raise ArgumentError("opset", f"applies to ONNX exported from PyTorch, TensorFlow or TFLite, not {source.framework} to {target}")
        data_sets = _data_sets(data, source.inputs)
        if source.framework in ("onnx", "tflite"):  # a file's fixed batch: a dataset is cut to it
            data_sets = _cut_to_fixed_batch(data_sets, source.inputs)
        if prec == "int8" and not data_sets:
            raise ArgumentError("data", "precision='int8' calibrates on the caller's data: give data= (representative inputs)")
        if ranges is None and prec == "int8" and data_sets:
            ranges = _data_ranges(data_sets, source.inputs)
        work = scratch / "work"
        work.mkdir()
        opts = Options(target, prec, opset, dyn, ins, outs, exporter, tuple(data_sets), work)
        return _run(source, opts, out, simplify=simplify, verify=verify, data_sets=data_sets,
                    backends=chosen, ranges=ranges, seed=seed, scratch=scratch)  # fmt: skip
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        source.close()


def _backends_for(out: Path, chosen: list[str] | None) -> list[str]:
    if chosen is not None:
        return chosen
    # TensorRT builds at its own precision policy (TF32): it verifies only when named
    return [b for b in default_backends(out) if b != "tensorrt"]


def _metadata(source: Source, exporter: str, precision: str, verdict: str) -> dict[str, str]:
    return {
        "infercore.version": _version(),
        "infercore.source": f"{source.framework} {source.kind} {source.name}",
        "infercore.source_version": source.version,
        "infercore.source_sha256": source.sha256,
        "infercore.exporter": exporter,
        "infercore.precision": precision,
        "infercore.verification": verdict,
    }


def _embed(path: Path, target: str, metadata: Mapping[str, str]) -> None:
    if target == "onnx":
        from .to_onnx import finish_onnx

        finish_onnx(path, metadata=metadata)
    elif target == "openvino":
        from .to_openvino import embed_ir_metadata

        embed_ir_metadata(path, metadata)
    else:
        from .to_tflite import embed_tflite_metadata

        embed_tflite_metadata(path, metadata)


def _facts(path: Path, target: str) -> dict[str, Any]:
    if target == "onnx":
        from .to_onnx import onnx_facts

        return onnx_facts(path)
    if target == "openvino":
        from .to_openvino import ir_facts

        return ir_facts(path)
    from .to_tflite import tflite_facts

    return tflite_facts(path)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _short(e: BaseException) -> str:
    """An exporter's error in one line: ANSI colours out, torch.export's advice skipped for its
    exception summary."""
    text = _ANSI.sub("", str(e))
    if "## Exception summary" in text:
        text = text.split("## Exception summary", 1)[1]
    text = " ".join(text.split())
    return f"{type(e).__name__}: {text[:500]}"


def _move_into_place(candidate: Path, out: Path) -> list[Path]:
    files = model_files(candidate)
    placed = []
    for f in [*files[1:], files[0]]:  # the model file last: it appears only once its data is there
        dest = out.parent / (out.name if f == candidate else f.name)
        os.replace(f, dest)
        placed.append(dest)
    return [placed[-1], *placed[:-1]]


def _run(source: Source, opts: Options, out: Path, *, simplify: bool, verify: bool,
         data_sets: list[dict[str, np.ndarray]], backends: list[str] | None,
         ranges: Mapping[str, tuple[float, float]] | None, seed: int, scratch: Path) -> ConversionResult:  # fmt: skip
    builders = source.builders(opts)
    tolerance = opts.precision
    verify_s = 0.0
    plan: FeedPlan | None = None
    refs: list[dict[str, np.ndarray]] = []
    names: list[str] = []
    if verify:
        names = _backends_for(out, backends)
        if not names:
            raise ConversionError(f"no installed backend reads {out.suffix} files to verify the conversion")
        t0 = time.perf_counter()
        plan = plan_feeds(source.inputs, data_sets, seed=seed, ranges=ranges)
        refs = reference_outputs(source, plan)
        verify_s += time.perf_counter() - t0
    info = SourceInfo(source.framework, source.version, source.kind, source.name, source.sha256,
                      source.describe_inputs(), source.outputs)  # fmt: skip
    attempts: list[Attempt] = []
    last_checks: list[Check] = []
    notes: list[str] = []
    for i, builder in enumerate(builders):
        folder = scratch / f"attempt-{i}"
        folder.mkdir()
        t0 = time.perf_counter()
        try:
            cand = builder.build(folder / out.name)
        except BackendUnavailableError:
            raise  # a missing extra is the caller's to install, not an attempt that failed
        except Exception as e:  # an exporter's own errors are of every kind
            attempts.append(Attempt(builder.exporter, "failed", _short(e), time.perf_counter() - t0))
            continue
        simplified: str | None = None
        chosen = cand
        raw: Candidate | None = None
        if opts.target == "onnx" and simplify:
            slim_dir = folder / "slim"
            slim_dir.mkdir()
            try:
                from .simplify import simplify_onnx

                simplified = simplify_onnx(cand.path, slim_dir / out.name)
                raw, chosen = cand, replace(cand, path=slim_dir / out.name)
            except Exception as e:
                simplified = f"not simplified: {_short(e)}"
        verdict = (
            f"passed: {', '.join(names)} agree with {source.framework} within {tolerance} tolerance "
            f"on {len(plan.sets)} input sets" if verify and plan is not None else "not verified (verify=False)"
        )  # fmt: skip
        try:
            for c in (chosen, raw):
                if c is not None:
                    _embed(c.path, opts.target, _metadata(source, cand.exporter, opts.precision, verdict))
        except Exception as e:
            attempts.append(Attempt(builder.exporter, "failed", f"writing metadata: {_short(e)}", time.perf_counter() - t0))
            continue
        convert_s = time.perf_counter() - t0
        checks: list[Check] = []
        if verify and plan is not None:
            t1 = time.perf_counter()
            checks = verify_candidate(chosen, source, plan, refs, backends=names, tolerance=tolerance)
            if raw is not None and not all(c.passed for c in checks):
                raw_checks = verify_candidate(raw, source, plan, refs, backends=names, tolerance=tolerance)
                if all(c.passed for c in raw_checks):
                    notes.append(f"the simplified graph disagreed ({_first_failure(checks)}): written unsimplified")
                    simplified = f"{simplified}; disagreed, not used"
                    chosen, checks = raw, raw_checks
            verify_s += time.perf_counter() - t1
            if not all(c.passed for c in checks):
                attempts.append(Attempt(builder.exporter, "mismatch", _first_failure(checks), convert_s))
                last_checks = checks
                notes.extend(f"{builder.exporter}: {n}" for n in cand.notes)
                continue
        facts = _facts(chosen.path, opts.target)
        files = _move_into_place(chosen.path, out)
        attempts.append(Attempt(builder.exporter, "written", "", convert_s))
        report = ConversionReport(
            source=info, target=opts.target, output=str(out), precision=opts.precision, exporter=cand.exporter,
            attempts=tuple(attempts), verified=verify, passed=True, tolerance=tolerance, checks=tuple(checks),
            shapes=plan.shapes if plan else (), sets=len(plan.sets) if plan else 0, backends=tuple(names),
            opset=cand.opset if opts.target == "onnx" else None, checker=facts.get("checker"),
            nodes=facts.get("nodes"), parameters=facts.get("parameters"),
            size_bytes=sum(f.stat().st_size for f in files), files=tuple(str(f) for f in files),
            convert_s=convert_s, verify_s=verify_s, simplified=simplified,
            notes=tuple([*notes, *cand.notes]),
        )  # fmt: skip
        return ConversionResult(out, report)
    tried = "; ".join(f"{a.exporter}: {a.outcome}: {a.detail}" for a in attempts)
    if not last_checks:
        raise ConversionError(f"no conversion of the {source.framework} {source.kind} to {opts.target} succeeded: {tried}")
    report = ConversionReport(
        source=info, target=opts.target, output=str(out), precision=opts.precision, exporter=None,
        attempts=tuple(attempts), verified=True, passed=False, tolerance=tolerance, checks=tuple(last_checks),
        shapes=plan.shapes if plan else (), sets=len(plan.sets) if plan else 0, backends=tuple(names),
        verify_s=verify_s, notes=tuple(notes),
    )  # fmt: skip
    raise ConversionMismatchError(
        f"the converted model disagrees with its source; nothing was written at {out}. Tried: {tried}\n{report}",
        report=report,
    )


def _first_failure(checks: Sequence[Check]) -> str:
    bad = [c for c in checks if not c.passed]
    if not bad:
        return ""
    c = bad[0]
    what = c.error or (
        f"max abs {c.max_abs:.3g}, cosine {c.cosine:.6f}" if c.max_abs is not None and c.cosine is not None
        else c.note or "mismatch"
    )  # fmt: skip
    more = f" (+{len(bad) - 1} more)" if len(bad) > 1 else ""
    return f"{c.backend} output {c.output!r} at {c.shape}: {what}{more}"

