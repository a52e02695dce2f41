"""A saved program made prunable again: its convolutions, linear layers, norms and embeddings
become ``nn`` modules.

``torch.export`` (``.pt2``) keeps a module's parameters but calls ``aten.conv2d(x, w, b, ...)`` on
them; structured pruning (torch-pruning) and training need ``nn.Conv2d`` and friends that own
their weights. ``lift_exported`` rewrites each such call of the program's GraphModule into a call
of an ``nn`` module holding the very same parameters (and buffers), named after the submodule
that held them, so that the result prunes, trains (batch norms train in train mode) and exports
like the module it came from. A TorchScript archive (``.pt``) goes through
``torch._export.converter`` to an ExportedProgram first.

Calls whose weights are computed (not parameters of the program) stay as they are: pruning
leaves their channels alone. ``train()``/``eval()`` switch the lifted batch norms; what else the
program captured in one mode (dropout) stays as captured.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import ModelLoadError
from .torchmodel import torch

__all__ = ["lift_exported", "lift_torchscript"]


def _tuple(value: Any, n: int) -> tuple[int, ...]:
    v = list(value) if isinstance(value, (list, tuple)) else [value]
    return tuple(int(x) for x in (v * n if len(v) == 1 else v))


def _attr(gm: Any, node: Any) -> Any:
    """The parameter or buffer a ``get_attr`` node reads, or None."""
    if node is None or getattr(node, "op", None) != "get_attr":
        return None
    try:
        return gm.get_parameter(node.target)
    except AttributeError:
        try:
            return gm.get_buffer(node.target)
        except AttributeError:
            return None


def _rank(node: Any) -> int | None:
    val = node.meta.get("val") if hasattr(node, "meta") else None
    return val.dim() if val is not None and hasattr(val, "dim") else None


def _conv(gm: Any, node: Any) -> tuple[Any, list[Any], list[Any]] | None:
    t = torch()
    args = list(node.args) + [None] * 7
    x, w_node, b_node = args[0], args[1], node.kwargs.get("bias", args[2])
    w, b = _attr(gm, w_node), _attr(gm, b_node)
    if w is None or (b_node is not None and b is None):
        return None
    n = w.dim() - 2
    stride = node.kwargs.get("stride", args[3] if args[3] is not None else 1)
    padding = node.kwargs.get("padding", args[4] if args[4] is not None else 0)
    dilation = node.kwargs.get("dilation", args[5] if args[5] is not None else 1)
    groups = int(node.kwargs.get("groups", args[6] if args[6] is not None else 1))
    cls = {1: t.nn.Conv1d, 2: t.nn.Conv2d, 3: t.nn.Conv3d}.get(n)
    if cls is None:
        return None
    pad = padding if isinstance(padding, str) else _tuple(padding, n)
    m = cls(w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]), stride=_tuple(stride, n), padding=pad,
            dilation=_tuple(dilation, n), groups=groups, bias=b is not None)  # fmt: skip
    return m, [x], [w_node, b_node]


def _convolution(gm: Any, node: Any) -> tuple[Any, list[Any], list[Any]] | None:
    """``aten.convolution(x, w, b, stride, padding, dilation, transposed, output_padding, groups)``
    (TorchScript's form): a plain convolution unless transposed."""
    args = list(node.args) + [None] * 9
    if args[6]:
        return None
    return _conv(gm, _Args(node, [args[0], args[1], args[2], args[3], args[4], args[5], args[8]]))


class _Args:
    """A node seen with other positional arguments (one calling convention for two ops)."""

    def __init__(self, node: Any, args: list[Any]) -> None:
        self.args, self.meta = args, node.meta
        self.kwargs: dict[str, Any] = {}


def _linear(gm: Any, node: Any) -> tuple[Any, list[Any], list[Any]] | None:
    t = torch()
    args = [*node.args, None]
    x, w_node, b_node = args[0], args[1], node.kwargs.get("bias", args[2])
    w, b = _attr(gm, w_node), _attr(gm, b_node)
    if w is None or w.dim() != 2 or (b_node is not None and b is None):
        return None
    return t.nn.Linear(w.shape[1], w.shape[0], bias=b is not None), [x], [w_node, b_node]


def _batch_norm(gm: Any, node: Any) -> tuple[Any, list[Any], list[Any]] | None:
    t = torch()
    args = list(node.args) + [None] * 8
    x, w_node, b_node, rm_node, rv_node = args[:5]
    momentum = args[6] if args[6] is not None else 0.1
    eps = args[7] if args[7] is not None else 1e-5
    w, b, rm, rv = (_attr(gm, n) for n in (w_node, b_node, rm_node, rv_node))
    if rm is None or rv is None or (w_node is not None and w is None) or (b_node is not None and b is None):
        return None
    rank = _rank(x)
    cls = {2: t.nn.BatchNorm1d, 3: t.nn.BatchNorm1d, 4: t.nn.BatchNorm2d, 5: t.nn.BatchNorm3d}.get(rank or 0)
    if cls is None:
        return None
    m = cls(rm.shape[0], eps=float(eps), momentum=float(momentum), affine=w is not None)
    m.train(bool(args[5]))  # as the program ran it: eval unless it was exported in training
    return m, [x], [w_node, b_node, rm_node, rv_node]


def _layer_norm(gm: Any, node: Any) -> tuple[Any, list[Any], list[Any]] | None:
    t = torch()
    args = list(node.args) + [None] * 5
    x, shape, w_node, b_node = args[:4]
    eps = args[4] if args[4] is not None else 1e-5
    w, b = _attr(gm, w_node), _attr(gm, b_node)
    if (w_node is not None and w is None) or (b_node is not None and b is None):
        return None
    m = t.nn.LayerNorm(tuple(int(s) for s in shape), eps=float(eps), elementwise_affine=w is not None, bias=b is not None)
    return m, [x], [w_node, b_node]


def _group_norm(gm: Any, node: Any) -> tuple[Any, list[Any], list[Any]] | None:
    t = torch()
    args = list(node.args) + [None] * 5
    x, groups, w_node, b_node = args[:4]
    eps = args[4] if args[4] is not None else 1e-5
    w, b = _attr(gm, w_node), _attr(gm, b_node)
    if w is None or b is None:
        return None
    return t.nn.GroupNorm(int(groups), w.shape[0], eps=float(eps)), [x], [w_node, b_node]


def _embedding(gm: Any, node: Any) -> tuple[Any, list[Any], list[Any]] | None:
    t = torch()
    args = list(node.args) + [None] * 3
    w_node, idx, padding_idx = args[0], args[1], args[2]
    w = _attr(gm, w_node)
    if w is None or w.dim() != 2:
        return None
    pad = int(padding_idx) if padding_idx is not None and int(padding_idx) >= 0 else None
    return t.nn.Embedding(w.shape[0], w.shape[1], padding_idx=pad), [idx], [w_node]


def _rules() -> dict[Any, tuple[str, Callable[[Any, Any], Any], tuple[str, ...]]]:
    aten = torch().ops.aten
    rules: dict[Any, tuple[str, Callable[[Any, Any], Any], tuple[str, ...]]] = {
        aten.linear.default: ("linear", _linear, ("weight", "bias")),
        aten.batch_norm.default: ("bn", _batch_norm, ("weight", "bias", "running_mean", "running_var")),
        aten.layer_norm.default: ("ln", _layer_norm, ("weight", "bias")),
        aten.group_norm.default: ("gn", _group_norm, ("weight", "bias")),
        aten.embedding.default: ("embedding", _embedding, ("weight",)),
        aten.convolution.default: ("conv", _convolution, ("weight", "bias")),
    }
    for op in (aten.conv1d, aten.conv2d, aten.conv3d):
        rules[op.default] = ("conv", _conv, ("weight", "bias"))
        if hasattr(op, "padding"):
            rules[op.padding] = ("conv", _conv, ("weight", "bias"))
    return rules


def _owner(gm: Any, target: str) -> tuple[Any, str, str]:
    path, _, leaf = target.rpartition(".")
    return (gm.get_submodule(path) if path else gm), path, leaf


def _place(gm: Any, path: str, kind: str, module: Any) -> str:
    """Register ``module`` where the tensors' holder was (when nothing else is left in it), else
    beside it; the name it got."""
    t = torch()
    holder = gm.get_submodule(path) if path else None
    empty = holder is not None and type(holder) is t.nn.Module and not any(
        True for _ in holder.named_parameters(recurse=False)
    ) and not any(True for _ in holder.named_buffers(recurse=False)) and not any(True for _ in holder.children())
    if empty:
        parent_path, _, leaf = path.rpartition(".")
        parent = gm.get_submodule(parent_path) if parent_path else gm
        setattr(parent, leaf, module)
        return path
    base = f"{path}_{kind}" if path else kind
    name, i = base, 1
    while True:
        try:
            gm.get_submodule(name)
        except AttributeError:
            break
        i += 1
        name = f"{base}_{i}"
    parent_path, _, leaf = name.rpartition(".")
    parent = gm.get_submodule(parent_path) if parent_path else gm
    parent.add_module(leaf, module)
    return name


def lift_exported(ep: Any) -> Any:
    """``ep.module()`` with its aten convolution, linear, norm and embedding calls turned into ``nn``
    modules that own the program's parameters."""
    t = torch()
    try:
        gm = ep.module()
    except Exception as e:
        raise ModelLoadError(f"the exported program has no runnable module: {type(e).__name__}: {e}") from e
    # torch.export forbids train()/eval() on its module (its graph was captured in one mode); the
    # lifted norms follow the mode, which is what fine-tuning needs (dropout stays as captured)
    for name in ("train", "eval"):
        gm.__dict__.pop(name, None)
    rules = _rules()
    graph = gm.graph
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target not in rules:
            continue
        kind, build, slots = rules[node.target]
        built = build(gm, node)
        if built is None:
            continue
        module, inputs, tensor_nodes = built
        # the tensors the call read, moved into the new module (the same Parameter objects)
        holder_path = None
        moved = []
        for slot, tn in zip(slots, tensor_nodes, strict=False):
            if tn is None:
                continue
            owner, path, leaf = _owner(gm, tn.target)
            value = getattr(owner, leaf)
            moved.append((slot, value, owner, leaf, tn))
            holder_path = path if holder_path is None else holder_path
        for slot, value, _, _, _ in moved:
            if slot in module._parameters:  # a weight the program kept as a constant is trainable again
                setattr(module, slot, value if isinstance(value, t.nn.Parameter) else t.nn.Parameter(value))
            elif slot in module._buffers:
                module._buffers[slot] = value.detach() if isinstance(value, t.nn.Parameter) else value
            else:
                module.register_buffer(slot, value)
        if kind == "bn" and moved:  # the step counter travels with the running statistics
            owner = moved[0][2]
            counter = getattr(owner, "num_batches_tracked", None)
            if isinstance(counter, t.Tensor) and "num_batches_tracked" in dict(owner.named_buffers(recurse=False)):
                module.register_buffer("num_batches_tracked", counter)
                delattr(owner, "num_batches_tracked")
        # the holder loses the tensors only when no other call reads them (a tied weight stays)
        for _, _, owner, leaf, tn in moved:
            if all(u is node for u in tn.users):
                delattr(owner, leaf)
        name = _place(gm, holder_path or "", kind, module)
        with graph.inserting_before(node):
            new = graph.call_module(name, tuple(inputs))
        new.meta = dict(node.meta)
        node.replace_all_uses_with(new)
        graph.erase_node(node)
        for _, _, _, _, tn in moved:
            if not tn.users:
                graph.erase_node(tn)
    for node in list(graph.nodes):  # reads of what moved (the batch norms' step counters)
        if node.op == "get_attr" and not node.users:
            graph.erase_node(node)
    graph.lint()
    gm.recompile()
    return gm


def lift_torchscript(script: Any, example_inputs: Any) -> Any:
    """A TorchScript module as a lifted GraphModule (through ``torch._export.converter``)."""
    try:
        from torch._export.converter import TS2EPConverter

        args = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
        ep = TS2EPConverter(script, args).convert()
    except Exception as e:
        raise ModelLoadError(
            f"the TorchScript module could not be read as a program ({type(e).__name__}: {e}); save it with "
            "torch.export.save(torch.export.export(model, args), 'model.pt2') instead"
        ) from e
    return lift_exported(ep)
