"""A torch module as the optimize tools see it: its inputs by name, its call on numpy feeds, its
first output as numpy, and a module read from a file.

Inputs are batched on their first axis: ``example_inputs`` (a tensor or array, a tuple of them, or
a dict by argument name) fixes every other dimension, dtype and the names (the ``forward``
signature's for positional inputs), so ``infercore.inputs`` can read the caller's data for it.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import metrics
from ..errors import ArgumentError, InputSpecError, ModelLoadError
from ..inputs import Feeds, LabelledBatches
from ..optional import require
from ..specs import TensorSpec

__all__ = [
    "EXTRA",
    "ModuleInputs",
    "as_tensor",
    "call",
    "eval_mode",
    "flat_outputs",
    "load_module",
    "module_inputs",
    "predict",
    "score_module",
    "torch",
    "torch_pruning",
]

EXTRA = "prune"


def torch() -> Any:
    """``torch``, or ``BackendUnavailableError`` naming ``pip install "infercore[prune]"``."""
    return require("torch", EXTRA)


def torch_pruning() -> Any:
    return require("torch_pruning", EXTRA, package="torch-pruning")


def as_tensor(value: Any, name: str, parameter: str = "example_inputs") -> Any:
    """``value`` (a tensor or an array) as a CPU tensor, detached."""
    t = torch()
    if isinstance(value, t.Tensor):
        return value.detach()
    a = np.asarray(value)
    if a.dtype == object or a.dtype.kind not in "biuf":
        raise ArgumentError(parameter, f"{name}: expected a tensor or a numeric array, got {type(value).__name__}")
    return t.from_numpy(np.ascontiguousarray(a))


def _np_dtype(tensor: Any) -> np.dtype:
    return np.dtype(torch().empty((), dtype=tensor.dtype).numpy().dtype)


def _forward_params(module: Any) -> list[str]:
    try:
        sig = inspect.signature(module.forward)
    except (TypeError, ValueError):
        return []
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p.name for p in sig.parameters.values() if p.kind in kinds]


@dataclass(frozen=True)
class ModuleInputs:
    """A module's inputs: names, specs (first axis dynamic: the batch) and the example tensors;
    ``keyword``: the module is called with keyword arguments (a dict was given)."""

    names: tuple[str, ...]
    specs: tuple[TensorSpec, ...]
    example: tuple[Any, ...]
    keyword: bool

    def args(self, tensors: Sequence[Any] | None = None) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Positional and keyword arguments that call the module on ``tensors`` (default: the example)."""
        ts = tuple(self.example if tensors is None else tensors)
        if self.keyword:
            return (), dict(zip(self.names, ts, strict=True))
        return ts, {}

    def example_for_tracing(self) -> Any:
        """The example in the form torch-pruning and the exporters take: a dict or a tuple."""
        return dict(zip(self.names, self.example, strict=True)) if self.keyword else self.example

    def tensors(self, feeds: Mapping[str, np.ndarray]) -> list[Any]:
        t = torch()
        return [t.from_numpy(np.ascontiguousarray(feeds[n])) for n in self.names]


def module_inputs(module: Any, example_inputs: Any, parameter: str = "example_inputs") -> ModuleInputs:
    """Read ``example_inputs`` for ``module``: a tensor or array, a tuple/list of them, or a dict by
    argument name. ``ArgumentError`` naming ``parameter`` when it is none of these."""
    if example_inputs is None:
        raise ArgumentError(parameter, "give example inputs: a tensor, a tuple of tensors or a dict by argument name")
    if isinstance(example_inputs, Mapping):
        if not example_inputs or not all(isinstance(k, str) for k in example_inputs):
            raise ArgumentError(parameter, "a dict of example inputs maps argument names (strings) to tensors")
        names = tuple(example_inputs)
        values = [as_tensor(v, k, parameter) for k, v in example_inputs.items()]
        keyword = True
    else:
        items = list(example_inputs) if isinstance(example_inputs, (tuple, list)) else [example_inputs]
        if not items:
            raise ArgumentError(parameter, "no example inputs given")
        params = _forward_params(module)
        names = tuple(params[i] if i < len(params) else f"input_{i}" for i in range(len(items)))
        values = [as_tensor(v, n, parameter) for n, v in zip(names, items, strict=True)]
        keyword = False
    specs = []
    for name, v in zip(names, values, strict=True):
        if v.dim() == 0:
            raise ArgumentError(parameter, f"{name}: a 0-d tensor has no batch axis; inputs are batched on axis 0")
        specs.append(TensorSpec(name, _np_dtype(v), (None, *v.shape[1:]), ("batch",) + (None,) * (v.dim() - 1)))
    return ModuleInputs(names, tuple(specs), tuple(values), keyword)


def flat_outputs(out: Any) -> list[Any]:
    """Every tensor a module returned, in order (tuples, lists, dicts, transformers' ModelOutput)."""
    t = torch()
    if isinstance(out, t.Tensor):
        return [out]
    if isinstance(out, Mapping):
        return [x for v in out.values() for x in flat_outputs(v)]
    if isinstance(out, (list, tuple)):
        return [x for v in out for x in flat_outputs(v)]
    if hasattr(out, "to_tuple"):
        return flat_outputs(out.to_tuple())
    return []


def call(module: Any, inputs: ModuleInputs, tensors: Sequence[Any] | None = None) -> Any:
    args, kwargs = inputs.args(tensors)
    return module(*args, **kwargs)


@contextlib.contextmanager
def eval_mode(module: Any) -> Iterator[None]:
    """The module in eval mode, without gradients, back in its own mode afterwards."""
    t = torch()
    was = module.training
    module.eval()
    try:
        with t.no_grad():
            yield
    finally:
        module.train(was)


def predict(module: Any, inputs: ModuleInputs, evalset: LabelledBatches, output: int = 0) -> np.ndarray:
    """The module's output number ``output`` on every batch of ``evalset``, concatenated."""
    outs = []
    with eval_mode(module):
        for b in evalset.batches:
            flat = flat_outputs(call(module, inputs, inputs.tensors(_fit(b, inputs))))
            if output >= len(flat):
                raise InputSpecError(f"the module returned {len(flat)} tensors; output {output} does not exist")
            outs.append(flat[output].detach().cpu().numpy())
    return np.concatenate(outs) if outs else np.zeros((0,), np.float32)


def score_module(module: Any, inputs: ModuleInputs, evalset: LabelledBatches | None,
                 reference: Any = None) -> dict[str, float]:  # fmt: skip
    """The module's accuracy, precision, recall and F1 (``infercore.metrics``) on a labelled
    ``evalset``; without labels, the mean cosine of its outputs to ``reference``'s."""
    if evalset is None or not evalset.batches:
        return {}
    out = predict(module, inputs, evalset)
    labels = evalset.all_labels()
    if labels is not None:
        scores = metrics.classification(out, labels)
        return {k: scores[k] for k in ("accuracy", "precision", "recall", "f1")}
    if reference is None:
        return {}
    ref = predict(reference, inputs, evalset)
    return {"cosine": float(metrics.cosines(ref, out).mean())}


def _fit(feeds: Feeds, inputs: ModuleInputs) -> Feeds:
    missing = [n for n in inputs.names if n not in feeds]
    if missing:
        raise InputSpecError(f"data has no input(s) {missing}; the module takes {list(inputs.names)}", tensor=missing[0])
    return feeds


# -- a module from a file -------------------------------------------------------------------------
def load_module(path: str | os.PathLike[str], example_inputs: Any = None) -> tuple[Any, Any]:
    """A module read from ``path``, ready to prune and train, and the example inputs saved with it
    (or ``example_inputs``): a ``torch.export`` program (``.pt2``) or a TorchScript archive
    (``.pt``, read through ``example_inputs``, which it needs), either rebuilt as a GraphModule whose convolutions, linear layers and norms are ``nn`` modules again
    (``infercore.optimize.lift``). A pickled module (``torch.save(model)``) is refused: unpickling
    runs the file's code and needs its classes."""
    t = torch()
    p = Path(path)
    if not p.is_file():
        raise ModelLoadError(f"model file not found: {p}", path=str(p))
    try:
        names = zipfile.ZipFile(p).namelist()
    except (zipfile.BadZipFile, OSError) as e:
        raise ModelLoadError(f"{p}: not a torch.export (.pt2) or TorchScript (.pt) archive: {e}", path=str(p)) from e
    tails = {n.split("/", 1)[-1] for n in names}
    from .lift import lift_exported, lift_torchscript

    if "archive_format" in tails or "models/model.json" in tails:
        try:
            ep = t.export.load(str(p))
        except Exception as e:
            raise ModelLoadError(f"{p}: torch.export.load failed: {type(e).__name__}: {e}", path=str(p)) from e
        saved = getattr(ep, "example_inputs", None)
        if example_inputs is None and saved is not None:
            args, kwargs = saved
            example_inputs = dict(kwargs) if kwargs and not args else tuple(args)
        return lift_exported(ep), example_inputs
    if "constants.pkl" in tails and any(n.startswith("code/") for n in tails):
        try:
            script = t.jit.load(str(p), map_location="cpu")
        except Exception as e:
            raise ModelLoadError(f"{p}: torch.jit.load failed: {type(e).__name__}: {e}", path=str(p)) from e
        if example_inputs is None:
            raise ArgumentError("example_inputs", f"{p.name} is TorchScript, which keeps no example inputs: give them")
        return lift_torchscript(script, example_inputs), example_inputs
    raise ModelLoadError(
        f"{p} is a pickled torch object (torch.save), which cannot be read without its classes' code (and "
        "unpickling runs that code): save the model with torch.export.save(torch.export.export(model, args), "
        "'model.pt2') or torch.jit.save(torch.jit.trace(model, args), 'model.pt'), or pass the nn.Module to "
        "ic.optimize",
        path=str(p),
    )
