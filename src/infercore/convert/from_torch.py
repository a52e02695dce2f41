"""PyTorch sources: an ``nn.Module``, a ``torch.export.ExportedProgram`` (or its ``.pt2`` file) or a
TorchScript module (a ``torch.jit.save`` file), to ONNX through ``torch.onnx.export`` (both
exporters) and to OpenVINO IR through ``openvino.convert_model``.

Exporters, tried in order until one converts and verifies: ``exporter="dynamo"`` (the default for
modules; ``torch.export`` underneath; the only one for an ExportedProgram) then ``"torchscript"``
(tracing; the only one for a TorchScript module), or the other way round. The dynamo exporter
refuses data-dependent control flow; the TorchScript exporter traces the branch the example inputs
take and says so only in a ``TracerWarning`` (kept in the report's notes): verification on inputs
that take the other branch is what catches it. The module runs in eval mode while it is converted
and verified, and goes back to the mode it was in.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ArgumentError, ConversionError
from ..optional import require
from ..specs import TensorSpec
from .source import Builder, Candidate, Options, Source, default_output_names
from .to_onnx import finish_onnx
from .to_openvino import convert_ir

__all__ = ["EXTRA", "is_torch_model", "open_torch", "read_torch_file"]

log = logging.getLogger(__name__)

EXTRA = "convert-torch"
EXPORTERS = ("dynamo", "torchscript")
_DEFAULT_OPSET = {"dynamo": 18, "torchscript": 17}


def _torch() -> Any:
    return require("torch", EXTRA)


def is_torch_model(model: Any) -> bool:
    """Whether ``model`` is a torch module or ExportedProgram, without importing torch."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None:
        return False
    return isinstance(model, (torch.nn.Module, torch.export.ExportedProgram))


def read_torch_file(path: Path) -> Any:
    """A ``.pt2``/``.pt`` file as an ExportedProgram (``torch.export.save``) or a TorchScript module
    (``torch.jit.save``). A pickled module or state dict is refused: it cannot be loaded without
    its class's code, and unpickling runs arbitrary code."""
    torch = _torch()
    try:
        names = zipfile.ZipFile(path).namelist()
    except (zipfile.BadZipFile, OSError) as e:
        raise ConversionError(f"{path}: not a torch.export (.pt2) or TorchScript archive: {e}") from e
    tails = {n.split("/", 1)[-1] for n in names}
    try:
        if "archive_format" in tails or "models/model.json" in tails:
            return torch.export.load(str(path))
        if "constants.pkl" in tails and any(t.startswith("code/") for t in tails):
            return torch.jit.load(str(path), map_location="cpu")
    except Exception as e:
        raise ConversionError(f"{path}: torch could not load it: {type(e).__name__}: {e}") from e
    raise ConversionError(
        f"{path} is a pickled torch object (torch.save), which cannot be converted without the code of its "
        "classes: save it with torch.export.save(torch.export.export(model, args), 'model.pt2') or "
        "torch.jit.save(torch.jit.trace(model, args), 'model.pt'), or pass the nn.Module to ic.convert"
    )


def _np_dtype(t: Any) -> np.dtype:
    torch = _torch()
    return np.dtype(torch.empty((), dtype=t.dtype).numpy().dtype)


def _as_tensor(value: Any, name: str) -> Any:
    torch = _torch()
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    try:
        return torch.from_numpy(np.ascontiguousarray(np.asarray(value)))
    except TypeError as e:
        raise ArgumentError("example_inputs", f"{name}: expected a tensor or array, got {type(value).__name__}") from e


def _forward_params(model: Any) -> list[str]:
    try:
        sig = inspect.signature(model.forward)
    except (TypeError, ValueError):
        return []
    return [p.name for p in sig.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _flatten(out: Any) -> list[Any]:
    torch = _torch()
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, Mapping):
        return [t for v in out.values() for t in _flatten(v)]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in _flatten(v)]
    if out is None:
        return []
    if hasattr(out, "to_tuple"):  # transformers' ModelOutput
        return _flatten(out.to_tuple())
    raise ConversionError(f"the model returned a {type(out).__name__}; convert handles tensors, tuples, lists and dicts of them")


def _digest(state: Mapping[str, Any]) -> str:
    import hashlib

    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name]
        if not hasattr(t, "detach"):
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(t.reshape(-1).view(_torch().uint8).numpy().tobytes())
    return h.hexdigest()


def _dynamic_from_program(ep: Any, names: Sequence[str]) -> dict[str, dict[int, str]]:
    """The dynamic dimensions an ExportedProgram's inputs were exported with, named after their
    symbols (``s17``)."""
    out: dict[str, dict[int, str]] = {}
    placeholders = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
    for user, name in zip(ep.graph_signature.user_inputs, names, strict=False):
        node = placeholders.get(user)
        val = node.meta.get("val") if node is not None else None
        shape = getattr(val, "shape", None)
        if shape is None:
            continue
        axes = {i: str(d) for i, d in enumerate(shape) if not isinstance(d, int)}
        if axes:
            out[name] = axes
    return out


def open_torch(
    model: Any,
    example_inputs: Any,
    *,
    input_names: Sequence[str] | None,
    output_names: Sequence[str] | None,
    dynamic: Mapping[str, Mapping[int, str]],
    name: str | None = None,
    sha256: str | None = None,
) -> Source:
    torch = _torch()
    kind = (
        "ExportedProgram" if isinstance(model, torch.export.ExportedProgram)
        else "TorchScript" if isinstance(model, torch.jit.ScriptModule)
        else "nn.Module"
    )  # fmt: skip
    if kind == "ExportedProgram":
        module = model.module()
        params = list(model.graph_signature.user_inputs)
        if example_inputs is None:
            stored = getattr(model, "example_inputs", None)
            if stored is None:
                raise ArgumentError("example_inputs", "this ExportedProgram keeps no example inputs: give them")
            args, kwargs = stored
            example_inputs = (*args, *kwargs.values())
    else:
        module = model
        params = _forward_params(model)
    if example_inputs is None:
        raise ArgumentError("example_inputs", "a torch model needs example inputs (a tensor, a tuple of them, or a dict by argument name)")
    if isinstance(example_inputs, Mapping):
        unknown = [k for k in example_inputs if k not in params]
        if unknown and params:
            raise ArgumentError("example_inputs", f"{unknown} are not arguments of {type(model).__name__}.forward {params}")
        order = [p for p in params if p in example_inputs] or list(example_inputs)
        default_names = order
        tensors = [_as_tensor(example_inputs[k], k) for k in order]
    else:
        items = list(example_inputs) if isinstance(example_inputs, (tuple, list)) else [example_inputs]
        tensors = [_as_tensor(v, f"example_inputs[{i}]") for i, v in enumerate(items)]
        default_names = params[: len(tensors)] if len(params) >= len(tensors) else [f"input_{i}" for i in range(len(tensors))]
    names = list(input_names) if input_names is not None else default_names
    if len(names) != len(tensors):
        raise ArgumentError("input_names", f"{len(names)} names {names} for {len(tensors)} example inputs")
    if kind == "ExportedProgram" and not dynamic:
        dynamic = _dynamic_from_program(model, names)
    for key, axes in dynamic.items():
        if key not in names:
            raise ArgumentError("dynamic", f"{key!r} is not an input; the inputs are {names}")
        rank = tensors[names.index(key)].dim()
        bad = [a for a in axes if not -rank <= a < rank]
        if bad:
            raise ArgumentError("dynamic", f"{key!r} has rank {rank}: no axis {bad}")
    specs = []
    for n, t in zip(names, tensors, strict=True):
        axes = {a % max(t.dim(), 1): d for a, d in dynamic.get(n, {}).items()}
        specs.append(TensorSpec(n, _np_dtype(t), tuple(None if i in axes else int(s) for i, s in enumerate(t.shape)),
                                tuple(axes.get(i) for i in range(t.dim()))))  # fmt: skip
    # every submodule's own mode, restored one by one: a pretrained part in eval inside a wrapper in
    # train mode stays in eval (module.train() would flip them all)
    modes = {sub: sub.training for sub in module.modules()} if kind == "nn.Module" else {}
    if modes:
        module.eval()

    def call(args: Sequence[Any]) -> list[Any]:
        with torch.no_grad():
            return _flatten(module(*args))

    try:
        first = call(tensors)
    except Exception as e:
        raise ConversionError(f"the torch model failed on its example inputs: {type(e).__name__}: {e}") from e
    outs = list(output_names) if output_names is not None else list(default_output_names(len(first)))
    if len(outs) != len(first):
        raise ArgumentError("output_names", f"{len(outs)} names {outs} for the model's {len(first)} outputs")

    def run(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in names]
        return {o: t.detach().cpu().numpy() for o, t in zip(outs, call(args), strict=True)}

    if sha256 is None:
        state = dict(model.state_dict()) if hasattr(model, "state_dict") else {}
        if kind == "ExportedProgram":
            state.update({f"constant:{k}": v for k, v in model.constants.items()})
        sha256 = _digest(state)

    dyn = {n: dict(a) for n, a in dynamic.items()}

    def close() -> None:
        for sub, training in modes.items():
            sub.training = training

    def builders(opts: Options) -> list[Builder]:
        exporters = _exporter_order(kind, opts.exporter)
        if opts.target == "onnx":
            return [Builder(f"torch.onnx.export ({e})", _onnx_builder(e, model, tensors, names, outs, dyn, opts)) for e in exporters]
        direct = Builder("openvino.convert_model (PyTorch)", _ov_builder(model, kind, tensors, specs, names, outs, opts))
        via = [
            Builder(f"torch.onnx.export ({e}) + openvino.convert_model",
                    _via_onnx_builder(e, model, tensors, names, outs, dyn, opts))
            for e in exporters
        ]  # fmt: skip
        return [direct, *via]

    return Source(
        framework="pytorch",
        version=f"torch {torch.__version__}",
        kind=kind,
        name=name or type(model).__name__,
        inputs=tuple(specs),
        outputs=tuple(outs),
        sha256=sha256,
        run=run,
        builders=builders,
        targets=("onnx", "openvino"),
        close=close,
    )


def _exporter_order(kind: str, exporter: str | None) -> list[str]:
    if kind == "ExportedProgram":
        if exporter == "torchscript":
            raise ArgumentError("exporter", "an ExportedProgram is exported by the dynamo exporter only")
        return ["dynamo"]
    if kind == "TorchScript":
        if exporter == "dynamo":
            raise ArgumentError("exporter", "a TorchScript module is exported by the torchscript exporter only")
        return ["torchscript"]
    first = exporter or "dynamo"
    return [first, *(e for e in EXPORTERS if e != first)]


def _export_onnx(exporter: str, model: Any, tensors: list[Any], names: list[str], outs: list[str],
                 dynamic: dict[str, dict[int, str]], opts: Options, path: Path) -> Candidate:  # fmt: skip
    torch = _torch()
    opset = opts.opset or _DEFAULT_OPSET[exporter]
    notes: list[str] = []
    kwargs: dict[str, Any] = {"opset_version": opset, "dynamo": exporter == "dynamo"}
    is_program = isinstance(model, torch.export.ExportedProgram)
    if dynamic and not is_program:  # a program keeps the dynamic shapes it was exported with
        kwargs["dynamic_axes"] = dynamic
    if not is_program:
        kwargs.update(input_names=names, output_names=outs)
    if exporter == "dynamo":
        kwargs.update(verbose=False, external_data=False)
    stdout = io.StringIO()
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(stdout):
        warnings.simplefilter("always")
        torch.onnx.export(model, () if is_program else tuple(tensors), str(path), **kwargs)
    for w in caught:
        if issubclass(w.category, torch.jit.TracerWarning):
            text = " ".join(str(w.message).split())[:300]
            if text not in notes:
                notes.append(f"TracerWarning: {text}")
    finish_onnx(path, input_names=names, output_names=outs, dynamic=dynamic)
    return Candidate(path, f"torch.onnx.export ({exporter})", notes=notes, opset=opset)


def _onnx_builder(exporter: str, model: Any, tensors: list[Any], names: list[str], outs: list[str],
                  dynamic: dict[str, dict[int, str]], opts: Options) -> Any:  # fmt: skip
    def build(path: Path) -> Candidate:
        return _export_onnx(exporter, model, tensors, names, outs, dynamic, opts, path)

    return build


def _via_onnx_builder(exporter: str, model: Any, tensors: list[Any], names: list[str], outs: list[str],
                      dynamic: dict[str, dict[int, str]], opts: Options) -> Any:  # fmt: skip
    def build(path: Path) -> Candidate:
        onnx_path = opts.scratch / f"via-{exporter}" / "model.onnx"
        onnx_path.parent.mkdir(parents=True, exist_ok=True)
        c = _export_onnx(exporter, model, tensors, names, outs, dynamic, opts, onnx_path)
        convert_ir(str(onnx_path), path, opts.precision)
        return Candidate(path, f"torch.onnx.export ({exporter}) + openvino.convert_model", notes=c.notes)

    return build


def _ov_builder(model: Any, kind: str, tensors: list[Any], specs: list[TensorSpec], names: list[str],
                outs: list[str], opts: Options) -> Any:  # fmt: skip
    def build(path: Path) -> Candidate:
        ov = require("openvino", "openvino")
        shapes = [ov.PartialShape([-1 if d is None else d for d in s.shape]) for s in specs]
        kwargs: dict[str, Any] = {"input": shapes}
        if kind != "ExportedProgram":
            kwargs["example_input"] = tuple(tensors)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            convert_ir(model, path, opts.precision, input_names=names, output_names=outs, **kwargs)
        return Candidate(path, "openvino.convert_model (PyTorch)")

    return build
