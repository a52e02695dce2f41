"""Structured channel pruning on torch-pruning: whole channels, features and attention heads
removed, so the pruned model is smaller in every dimension a runtime computes.

    res = ic.prune(model, torch.randn(1, 3, 32, 32), ratio=0.5)
    res.module                  # a pruned copy (the caller's module is left as it was)
    print(res.report)           # parameters and MACs before/after, channels per layer, what was kept

Torch-Pruning's dependency graph keeps the graph consistent: the layers coupled by a residual
addition, a concatenation, a grouped or depthwise convolution, a norm or a reshape lose the same
channels. On top of it, ``prune``:

- keeps the model's outputs: every layer whose channels reach an output (the classifier, an
  embedding's hidden size, the residual stream of a transformer that returns its hidden states)
  is left alone, and the report says so;
- finds attention modules (an ``nn.Module`` with a head count such as ``num_attention_heads`` or
  ``num_heads`` and per-head query/key/value ``nn.Linear`` children) and removes whole heads, the
  same share as ``ratio``, rather than dimensions inside heads; their head counts are updated;
- leaves alone a group of layers torch-pruning fails on (an op it maps wrongly, such as a GLU
  halving the channels), starting again from the module as given, and says so;
- runs the pruned module on the example inputs and refuses (``PruningError``) a module that no
  longer runs or whose outputs changed shape.

Importance: ``"l2"`` (group L2 norm, the default), ``"l1"``, ``"fpgm"``, ``"lamp"``, ``"random"``,
``"taylor"`` (first-order Taylor: needs ``data`` to compute gradients on), or a torch-pruning
``Importance`` object.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from ..arguments import check_int
from ..errors import ArgumentError, InputSpecError, PruningError
from ..inputs import labelled_batches
from .torchmodel import ModuleInputs, call, eval_mode, flat_outputs, module_inputs, torch, torch_pruning

__all__ = ["IMPORTANCES", "LayerChannels", "LeftAlone", "PruneReport", "PruneResult", "check_ratio", "prune"]

IMPORTANCES = ("l2", "l1", "taylor", "fpgm", "lamp", "random")

_HEAD_ATTRS = ("num_attention_heads", "num_heads", "n_heads", "n_head", "num_attention_heads_per_partition")
_KV_ATTRS = ("num_key_value_heads", "num_kv_heads", "n_kv_heads")
_DIM_ATTRS = ("attention_head_size", "head_dim", "head_size", "d_head", "d_k")
_INNER_ATTRS = ("all_head_size", "inner_dim", "inner_size")


@dataclass(frozen=True)
class LayerChannels:
    """One layer's width before and after: output channels (convolutions), output features
    (linear layers), heads (attention), and its input width."""

    name: str
    kind: str  # "Conv2d", "Linear", "attention heads", ...
    before: int
    after: int
    inputs_before: int | None = None
    inputs_after: int | None = None


@dataclass(frozen=True)
class LeftAlone:
    """A layer pruning did not narrow, and why."""

    name: str
    reason: str


@dataclass(frozen=True)
class PruneReport:
    """What ``prune`` did: sizes before and after, every layer it narrowed, every prunable layer it
    left alone and why. MACs are torch-pruning's count for the example inputs' shapes."""

    ratio: float
    importance: str
    round_to: int | None
    parameters_before: int
    parameters_after: int
    macs_before: int
    macs_after: int
    layers: tuple[LayerChannels, ...]
    left_alone: tuple[LeftAlone, ...]
    example: str  # the shapes MACs were counted at
    seconds: float
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def parameter_ratio(self) -> float:
        return self.parameters_after / self.parameters_before if self.parameters_before else 1.0

    @property
    def mac_ratio(self) -> float:
        return self.macs_after / self.macs_before if self.macs_before else 1.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["schema"] = "infercore.prune/1"
        d["parameter_ratio"] = self.parameter_ratio
        d["mac_ratio"] = self.mac_ratio
        return d

    def __str__(self) -> str:
        lines = [
            f"structured pruning, ratio {self.ratio:g}, importance {self.importance}"
            + (f", channels rounded to multiples of {self.round_to}" if self.round_to else ""),
            f"  parameters {self.parameters_before:,} -> {self.parameters_after:,} ({self.parameter_ratio:.1%})",
            f"  MACs at {self.example}: {self.macs_before:,} -> {self.macs_after:,} ({self.mac_ratio:.1%})",
        ]
        if self.layers:
            w = max(len(x.name) for x in self.layers)
            lines.append(f"  {len(self.layers)} layers narrowed:")
            for x in self.layers:
                ins = f"  (inputs {x.inputs_before} -> {x.inputs_after})" if x.inputs_before != x.inputs_after else ""
                lines.append(f"    {x.name.ljust(w)}  {x.kind:<16} {x.before:>5} -> {x.after:<5}{ins}")
        if self.left_alone:
            w = max(len(x.name) for x in self.left_alone)
            lines.append(f"  {len(self.left_alone)} left alone:")
            lines.extend(f"    {x.name.ljust(w)}  {x.reason}" for x in self.left_alone)
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)


@dataclass(frozen=True)
class PruneResult:
    """The pruned module and what pruning did to it."""

    module: Any
    report: PruneReport


# -- arguments -----------------------------------------------------------------------------------
def check_ratio(ratio: Any) -> float:
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not math.isfinite(ratio):
        raise ArgumentError("ratio", f"expected the share of channels to remove, a number in (0, 1), got {ratio!r}")
    if not 0 < ratio < 1:
        raise ArgumentError("ratio", f"expected the share of channels to remove, in (0, 1) (0.5 halves each layer), got {ratio!r}")
    return float(ratio)


def _importance(importance: Any) -> tuple[Any, str]:
    tp = torch_pruning()
    if isinstance(importance, tp.importance.Importance):
        return importance, type(importance).__name__
    if not isinstance(importance, str) or importance.lower() not in IMPORTANCES:
        raise ArgumentError(
            "importance", f"expected one of {', '.join(IMPORTANCES)} or a torch_pruning Importance, got {importance!r}"
        )
    name = importance.lower()
    imp = {
        "l2": lambda: tp.importance.GroupMagnitudeImportance(p=2),
        "l1": lambda: tp.importance.GroupMagnitudeImportance(p=1),
        "taylor": lambda: tp.importance.GroupTaylorImportance(),
        "fpgm": lambda: tp.importance.FPGMImportance(),
        "lamp": lambda: tp.importance.LAMPImportance(),
        "random": lambda: tp.importance.RandomImportance(),
    }[name]()
    return imp, name


def _ignored(original: Any, module: Any, ignore: Any) -> tuple[list[Any], set[Any]]:
    """The submodules of ``module`` that ``ignore`` names (submodules of ``original``, which
    ``module`` may be a copy of, their dotted names, or classes), expanded to their submodules;
    and the named ones themselves, for the report."""
    t = torch()
    if ignore is None:
        return [], set()
    items = [ignore] if isinstance(ignore, (str, t.nn.Module, type)) else list(ignore)
    by_name = dict(module.named_modules())
    name_of = {id(m): n for n, m in original.named_modules()}
    named: set[Any] = set()
    for item in items:
        if isinstance(item, t.nn.Module):
            if id(item) not in name_of:
                raise ArgumentError("ignore", f"{type(item).__name__} is not a submodule of the module being pruned")
            item = name_of[id(item)]
        if isinstance(item, str):
            if item not in by_name:
                close = [n for n in by_name if n and (item in n or n.endswith(item))][:5]
                hint = f"; close: {', '.join(close)}" if close else ""
                raise ArgumentError("ignore", f"the module has no submodule named {item!r}{hint}")
            named.add(by_name[item])
        elif isinstance(item, type) and issubclass(item, t.nn.Module):
            found = [m for m in module.modules() if isinstance(m, item)]
            if not found:
                raise ArgumentError("ignore", f"the module has no {item.__name__} submodule")
            named.update(found)
        else:
            raise ArgumentError("ignore", f"expected submodules, their dotted names or a module class, got {item!r}")
    expanded = []
    for m in named:
        expanded.extend(m.modules())
    return expanded, named


# -- attention heads -----------------------------------------------------------------------------
@dataclass
class _Attention:
    name: str
    module: Any
    heads_attr: str | None
    heads: int
    kv_attr: str | None
    kv_heads: int
    head_dim: int
    projections: dict[Any, int]  # q/k/v Linear -> its head count


def _int_attr(obj: Any, names: Iterable[str]) -> tuple[str | None, int | None]:
    for n in names:
        v = getattr(obj, n, None)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return n, v
    return None, None


def _attention_modules(module: Any) -> tuple[list[_Attention], list[tuple[str, str]]]:
    """Attention modules whose heads can be cut whole: a head count, and per-head q/k/v linears
    among their direct children. Also those seen but left alone, with why."""
    t = torch()
    found, skipped = [], []
    for name, m in module.named_modules():
        if isinstance(m, t.nn.MultiheadAttention):
            continue  # torch-pruning's own pruner handles nn.MultiheadAttention
        heads_attr, heads = _int_attr(m, _HEAD_ATTRS)
        config = getattr(m, "config", None)
        if heads is None and config is not None:
            _, heads = _int_attr(config, ("num_attention_heads",))
        if heads is None:
            continue
        kv_attr, kv = _int_attr(m, _KV_ATTRS)
        if kv is None and config is not None:
            _, kv = _int_attr(config, ("num_key_value_heads",))
        kv = kv or heads
        linears = [c for c in m.children() if isinstance(c, t.nn.Linear)]
        if not linears:
            continue
        _, dim = _int_attr(m, _DIM_ATTRS)
        dim = dim or (linears[0].out_features // heads if linears[0].out_features % heads == 0 else None)
        if not dim:
            continue
        projections = {}
        for lin in linears:
            if lin.out_features == heads * dim:
                projections[lin] = heads
            elif lin.out_features == kv * dim and kv != heads:
                projections[lin] = kv
        fused = [lin for lin in linears if lin.out_features in (3 * heads * dim, (heads + 2 * kv) * dim)]
        if len(projections) >= 2 and not fused:
            found.append(_Attention(name, m, heads_attr, heads, kv_attr, kv, dim, projections))
        elif fused:
            skipped.append((name, f"attention with a fused QKV projection ({heads} heads): whole heads cannot be "
                                  "cut out of it safely, so its heads are kept"))  # fmt: skip
    return found, skipped


def _update_heads(att: _Attention, num_heads: Mapping[Any, int]) -> int:
    """Set the attention module's head counts to what is left; the heads left."""
    left = max(num_heads[lin] for lin in att.projections)
    kv_left = min(num_heads[lin] for lin in att.projections)
    if att.heads_attr:
        setattr(att.module, att.heads_attr, left)
    if att.kv_attr:
        setattr(att.module, att.kv_attr, kv_left)
    for attr in _INNER_ATTRS:
        if getattr(att.module, attr, None) == att.heads * att.head_dim:
            setattr(att.module, attr, left * att.head_dim)
    if isinstance(getattr(att.module, "num_key_value_groups", None), int) and kv_left:
        att.module.num_key_value_groups = left // kv_left
    return left


# -- outputs ---------------------------------------------------------------------------------------
def _output_layers(dg: Any, outputs: list[Any]) -> set[Any]:
    """Modules whose output channels reach a model output: walk back from each output through
    everything that keeps the channel axis (norms, activations, additions, reshapes, depthwise
    convolutions), stopping at the layers that make channels (convolutions, linear layers,
    embeddings, recurrent layers): those, and the norms on the way, are kept."""
    t = torch()
    by_fn = {n.grad_fn: n for n in dg.module2node.values() if n.grad_fn is not None}
    producers = (t.nn.Linear, t.nn.Embedding, t.nn.RNNBase, t.nn.MultiheadAttention)
    kept: set[Any] = set()
    stack = [by_fn[o.grad_fn] for o in outputs if getattr(o, "grad_fn", None) in by_fn]
    seen: set[Any] = set()
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        mod = node.module
        if isinstance(mod, t.nn.Module) and any(True for _ in mod.parameters(recurse=False)):
            kept.add(mod)
        if isinstance(mod, t.nn.modules.conv._ConvNd) and not (mod.groups == mod.in_channels == mod.out_channels):
            continue
        if isinstance(mod, producers):
            continue
        stack.extend(node.inputs)
    return kept


# -- gradients for Taylor importance ----------------------------------------------------------------
def _taylor_gradients(module: Any, inputs: ModuleInputs, data: Any, loss_fn: Callable[..., Any] | None,
                      max_batches: int = 16) -> int:  # fmt: skip
    """Accumulate the loss gradients Taylor importance reads; the samples used."""
    t = torch()
    if data is None:
        raise ArgumentError("data", "importance='taylor' needs data to compute gradients on: (inputs, labels)")
    evalset = labelled_batches(data, inputs.specs, source="data")
    if not evalset.batches:
        raise ArgumentError("data", "is empty")
    module.zero_grad()
    samples = 0
    for feeds, labels in list(zip(evalset.batches, evalset.labels, strict=True))[:max_batches]:
        out = flat_outputs(call(module, inputs, inputs.tensors(feeds)))
        if loss_fn is not None:
            loss = loss_fn(out[0], None if labels is None else t.from_numpy(labels))
        elif labels is None:
            raise ArgumentError("data", "importance='taylor' needs labels (inputs, labels), or a loss_fn")
        else:
            loss = t.nn.functional.cross_entropy(out[0], t.from_numpy(labels).long())
        loss.backward()
        samples += len(next(iter(feeds.values())))
    return samples


# -- prune -----------------------------------------------------------------------------------------
def _widths(module: Any) -> dict[str, tuple[str, int, int]]:
    t = torch()
    out = {}
    for name, m in module.named_modules():
        if isinstance(m, t.nn.modules.conv._ConvNd):
            out[name] = (type(m).__name__, m.out_channels, m.in_channels)
        elif isinstance(m, t.nn.Linear):
            out[name] = ("Linear", m.out_features, m.in_features)
        elif isinstance(m, t.nn.Embedding):
            out[name] = ("Embedding", m.embedding_dim, m.num_embeddings)
    return out


def _count(tp: Any, module: Any, inputs: ModuleInputs) -> tuple[int, int]:
    with contextlib.redirect_stdout(io.StringIO()):  # the counter prints its own warnings
        macs, params = tp.utils.count_ops_and_params(module, inputs.example_for_tracing())
    return int(macs), int(params)


def _shapes(out: list[Any]) -> list[tuple[int, ...]]:
    return [tuple(o.shape) for o in out]


class _Guarded:
    """An importance that records the groups it cannot rank (torch-pruning maps some ops wrongly:
    a GLU halving the channels) and returns None for them, which torch-pruning skips."""

    def __init__(self, imp: Any, names: dict[Any, str], failed: dict[str, str]) -> None:
        self.imp, self.names, self.failed = imp, names, failed

    def __call__(self, group: Any) -> Any:
        try:
            return self.imp(group)
        except Exception as e:
            for dep, _ in group:
                name = self.names.get(dep.target.module)
                if name is not None:
                    self.failed.setdefault(name, f"torch-pruning could not rank its group's channels ({type(e).__name__}: {e})")
            return None

    def __getattr__(self, name: str) -> Any:  # what a pruner reads of its importance (OBDC hooks)
        return getattr(self.imp, name)


def _group_names(group: Any, names: dict[Any, str]) -> list[str]:
    return [names[dep.target.module] for dep, _ in group if dep.target.module in names]


def prune(
    module: Any,
    example_inputs: Any,
    ratio: float = 0.5,
    *,
    ignore: Any = None,
    importance: Any = "l2",
    round_to: int | None = None,
    heads: bool = True,
    data: Any = None,
    loss_fn: Callable[..., Any] | None = None,
) -> PruneResult:
    """Remove ``ratio`` of the channels of every prunable layer group of ``module`` (and of the
    heads of every attention module), keeping the graph consistent; return a pruned copy and its
    report (``module`` is left as it was).

    ``example_inputs``: a tensor or array, a tuple of them, or a dict by argument name (batched on
    axis 0). ``ignore``: submodules (objects, dotted names, or a class) to leave as they are.
    ``importance``: ``"l2"``, ``"l1"``, ``"taylor"`` (with ``data``: ``(inputs, labels)`` or any
    form ``infercore.inputs.labelled_batches`` reads; ``loss_fn(output, labels)`` for other
    losses than cross entropy), ``"fpgm"``, ``"lamp"``, ``"random"`` or a torch-pruning
    ``Importance``. ``round_to``: keep channel counts multiples of it (8 or 16 suit SIMD kernels).
    ``heads``: remove whole attention heads (False: leave attention projections alone).

    A group of layers torch-pruning fails on (an op it maps wrongly) is left alone, and the report
    says so: the pruning starts again from the module as given, without that group.
    """
    t = torch()
    tp = torch_pruning()
    if not isinstance(module, t.nn.Module):
        raise ArgumentError("module", f"expected a torch nn.Module, got {type(module).__name__}")
    ratio = check_ratio(ratio)
    imp, imp_name = _importance(importance)
    check_int("round_to", round_to, optional=True)
    if not isinstance(heads, bool):
        raise ArgumentError("heads", f"expected True or False, got {heads!r}")
    started = time.perf_counter()
    inputs = module_inputs(module, example_inputs)
    _ignored(module, module, ignore)  # a wrong name fails before any work
    with eval_mode(module):
        try:
            before_out = flat_outputs(call(module, inputs))
        except Exception as e:
            raise InputSpecError(f"the module does not run on the example inputs: {type(e).__name__}: {e}") from e
    if not before_out:
        raise PruningError("the module returned no tensors: nothing to keep consistent")
    macs_before, params_before = _count(tp, module, inputs)
    widths_before = _widths(module)
    failed: dict[str, str] = {}  # module name -> why torch-pruning could not prune its group
    for _ in range(8):
        work = copy.deepcopy(module)
        attempt = _attempt(work, module, inputs, ratio, imp, imp_name, ignore, round_to, heads, data, loss_fn, failed)
        if attempt is not None:
            break
    else:
        raise PruningError("torch-pruning failed on group after group: " + "; ".join(f"{n}: {r}" for n, r in failed.items()))
    kept, named_ignored, tied, fused, attentions, heads_after, notes = attempt

    with eval_mode(work):
        try:
            after_out = flat_outputs(call(work, inputs))
        except Exception as e:
            hint = (f"; attention heads were cut in {', '.join(a.name for a in attentions[:3])}: if its forward "
                    "derives the head size from another attribute, try heads=False") if attentions else ""  # fmt: skip
            raise PruningError(
                f"the pruned module no longer runs ({type(e).__name__}: {e}); a layer whose width its forward "
                f"code assumes (a reshape to fixed sizes, a hard-coded head count) was pruned: leave it alone "
                f"with ignore=[...]{hint}"
            ) from e
    if _shapes(after_out) != _shapes(before_out):
        raise PruningError(
            f"pruning changed the outputs' shapes from {_shapes(before_out)} to {_shapes(after_out)}: "
            "leave the layers that make them alone with ignore=[...]"
        )
    bad = [i for i, o in enumerate(after_out) if o.is_floating_point() and not bool(t.isfinite(o).all())]
    if bad:
        raise PruningError(f"the pruned module's output {bad[0]} holds NaN or infinity on the example inputs")
    macs_after, params_after = _count(tp, work, inputs)

    widths_after = _widths(work)
    layers = [
        LayerChannels(name, kind, b_out, widths_after[name][1], b_in, widths_after[name][2])
        for name, (kind, b_out, b_in) in widths_before.items()
        if name in widths_after and widths_after[name][1:] != (b_out, b_in)
    ]
    layers += [LayerChannels(a.name, "attention heads", a.heads, heads_after[a.name]) for a in attentions
               if heads_after[a.name] != a.heads]  # fmt: skip
    names = {m: n for n, m in work.named_modules()}
    left = _left_alone(widths_before, widths_after, names, kept, named_ignored, tied, fused, failed, ratio, work)
    if not layers:
        raise PruningError(
            "nothing was pruned: " + ("; ".join(f"{x.name}: {x.reason}" for x in left[:6]) or "no prunable layer found")
        )
    example = ", ".join(f"{s.name} {tuple(v.shape)}" for s, v in zip(inputs.specs, inputs.example, strict=True))
    report = PruneReport(
        ratio=ratio, importance=imp_name, round_to=round_to, parameters_before=params_before,
        parameters_after=params_after, macs_before=macs_before, macs_after=macs_after, layers=tuple(layers),
        left_alone=tuple(left), example=example, seconds=round(time.perf_counter() - started, 3), notes=tuple(notes),
    )  # fmt: skip
    return PruneResult(work, report)


def _attempt(work: Any, original: Any, inputs: ModuleInputs, ratio: float, imp: Any, imp_name: str, ignore: Any,
             round_to: int | None, heads: bool, data: Any, loss_fn: Any, failed: dict[str, str]) -> Any:  # fmt: skip
    """Prune ``work`` (a fresh copy of ``original``) in place, leaving the groups in ``failed``
    alone. None when torch-pruning failed on a group while pruning it: ``failed`` then names that
    group, and ``work`` is spoiled."""
    t = torch()
    tp = torch_pruning()
    ignored, named_ignored = _ignored(original, work, ignore)
    by_name = dict(work.named_modules())
    names = {m: n for n, m in by_name.items() if n}
    skipped = [by_name[n] for n in failed if n in by_name]
    for m in skipped:
        ignored.extend(m.modules())
    attentions, fused = (_attention_modules(work) if heads else ([], []))
    attentions = [a for a in attentions if a.module not in named_ignored and a.module not in skipped]
    num_heads = {lin: n for a in attentions for lin, n in a.projections.items()}
    captured: dict[str, Any] = {}
    notes: list[str] = []

    def keep_outputs(out: Any) -> Any:
        captured["out"] = out
        return out

    was_training = work.training
    work.eval()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                pruner = tp.pruner.BasePruner(
                    work, inputs.example_for_tracing(), importance=_Guarded(imp, names, failed), pruning_ratio=ratio,
                    ignored_layers=ignored, round_to=round_to, num_heads=num_heads,
                    prune_num_heads=bool(num_heads), prune_head_dims=not num_heads,
                    head_pruning_ratio=ratio if num_heads else 0.0, output_transform=keep_outputs,
                )  # fmt: skip
            except Exception as e:
                raise PruningError(f"torch-pruning could not trace the module: {type(e).__name__}: {e}") from e
        notes += sorted({str(w.message).strip() for w in caught if "nwrapped" in str(w.message)})
        outputs = [o for o in flat_outputs(captured.get("out")) if isinstance(o, t.Tensor)]
        kept = _output_layers(pruner.DG, outputs)
        pruner.ignored_layers.extend(m for m in kept if m not in pruner.ignored_layers)
        tied = _tied(pruner.DG, kept, named_ignored)
        if imp_name == "taylor":
            work.train(was_training)
            used = _taylor_gradients(work, inputs, data, loss_fn)
            work.eval()
            notes.append(f"Taylor importance from gradients on {used} samples of data")
        group = None
        try:
            for group in pruner.step(interactive=True):
                group.prune()
        except Exception as e:
            where = _group_names(group, names) if group is not None else []
            if not where or all(n in failed for n in where):
                raise PruningError(f"torch-pruning failed while pruning: {type(e).__name__}: {e}") from e
            for n in where:
                failed.setdefault(n, f"torch-pruning failed on its group ({type(e).__name__}: {e})")
            return None
        finally:
            work.zero_grad(set_to_none=True)
        heads_after = {a.name: _update_heads(a, pruner.num_heads) for a in attentions}
    finally:
        work.train(was_training)
    return kept, named_ignored, tied, fused, attentions, heads_after, notes


def _tied(dg: Any, kept: set[Any], named_ignored: set[Any]) -> dict[Any, Any]:
    """Layers whose output channels are coupled (a residual, a concatenation) to a kept one: the
    layer -> the kept layer it is tied to."""
    t = torch()
    roots = (t.nn.modules.conv._ConvNd, t.nn.Linear)
    out: dict[Any, Any] = {}
    held = kept | {m for x in named_ignored for m in x.modules()}
    for group in dg.get_all_groups(ignored_layers=[], root_module_types=roots):
        members = [dep.target.module for dep, _ in group if dg.is_out_channel_pruning_fn(dep.handler)]
        anchor = next((m for m in members if m in held and isinstance(m, roots)), None)
        anchor = anchor or next((m for m in members if m in held), None)
        if anchor is None:
            continue
        for m in members:
            if m is not anchor and m not in held:
                out[m] = anchor
    return out


def _left_alone(before: dict[str, tuple[str, int, int]], after: dict[str, tuple[str, int, int]],
                names: dict[Any, str], kept: set[Any], named_ignored: set[Any], tied: dict[Any, Any],
                fused: list[tuple[str, str]], failed: dict[str, str], ratio: float, module: Any) -> list[LeftAlone]:  # fmt: skip
    t = torch()
    by_name = dict(module.named_modules())
    ignored_names = {names[m] for m in named_ignored if m in names}
    out = [LeftAlone(n, "ignored by the caller") for n in sorted(ignored_names)]
    out += [LeftAlone(n, reason) for n, reason in fused]
    for name, (kind, b_out, _) in before.items():
        if name not in after or after[name][1] != b_out:
            continue
        if any(name == n or name.startswith(n + ".") for n in ignored_names):
            continue
        m = by_name.get(name)
        if name in failed:
            why = failed[name]
        elif m in kept:
            why = ("its output channels reach the model's output (directly, or through norms and the residual "
                   "stream): their number is the output's")  # fmt: skip
        elif m in tied:
            why = f"its channels are tied to {names.get(tied[m], '?')} (a residual, concatenation or shared axis), which is kept"
        elif isinstance(m, t.nn.modules.conv._ConvNd) and m.groups == m.in_channels == m.out_channels:
            why = "depthwise: its channels follow its input's, which were kept"
        elif kind == "Embedding":
            why = "an embedding's width is pruned only with the layers it feeds"
        elif int(b_out * (1 - ratio)) in (0, b_out) or b_out <= 1:
            why = f"too few channels ({b_out}) to remove {ratio:.0%} of them"
        else:
            why = "not reached by the traced graph (not called in forward, or called through an op torch-pruning cannot follow)"
        out.append(LeftAlone(name, why))
    return out
