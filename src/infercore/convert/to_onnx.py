"""Finishing an ONNX file an exporter wrote: the caller's tensor and dimension names, infercore's
metadata (``metadata_props``), and the facts the report gives (opset, checker, nodes, parameters)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConversionError
from ..modelfiles import graph_tensors
from ..optional import require

__all__ = ["finish_onnx", "onnx_facts", "save_onnx"]

log = logging.getLogger(__name__)

EXTRA = "onnx"
_PROTOBUF_LIMIT = 1_800_000_000  # beyond ~2 GB a model must keep its weights as external data


def _load(path: Path) -> Any:
    onnx = require("onnx", EXTRA)
    return onnx.load(str(path), load_external_data=True)


def save_onnx(proto: Any, path: Path) -> None:
    """Save ``proto`` at ``path``; weights go to ``<name>.data`` beside it when the model is too
    large for one protobuf."""
    onnx = require("onnx", EXTRA)
    for f in path.parent.glob(path.name + ".data"):
        f.unlink()
    if proto.ByteSize() > _PROTOBUF_LIMIT:
        onnx.save(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=path.name + ".data", size_threshold=1024)  # fmt: skip
    else:
        onnx.save(proto, str(path))


def _rename_in_graph(graph: Any, old: str, new: str) -> None:
    for node in graph.node:
        for i, n in enumerate(node.input):
            if n == old:
                node.input[i] = new
        for i, n in enumerate(node.output):
            if n == old:
                node.output[i] = new
        for attr in node.attribute:
            if attr.HasField("g"):
                _rename_in_graph(attr.g, old, new)
            for g in attr.graphs:
                _rename_in_graph(g, old, new)
    for vi in (*graph.input, *graph.output, *graph.value_info):
        if vi.name == old:
            vi.name = new
    for t in graph.initializer:
        if t.name == old:
            t.name = new


def _all_names(graph: Any) -> set[str]:
    names = {vi.name for vi in (*graph.input, *graph.output, *graph.value_info)}
    names |= {t.name for t in graph.initializer}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
    return names


def rename_tensors(graph: Any, renames: Mapping[str, str]) -> None:
    """Rename graph tensors (inputs, outputs) everywhere they appear; a new name that another
    tensor already holds moves that tensor aside first."""
    renames = {o: n for o, n in renames.items() if o != n}
    if not renames:
        return
    taken = _all_names(graph)
    for i, (old, new) in enumerate(renames.items()):
        if new in taken and new not in renames:
            _rename_in_graph(graph, new, f"{new}__{i}")
        tmp = f"__infercore_rename_{i}"
        _rename_in_graph(graph, old, tmp)
    for i, (_old, new) in enumerate(renames.items()):
        _rename_in_graph(graph, f"__infercore_rename_{i}", new)


def _rename_dims(graph: Any, dynamic: Mapping[str, Mapping[int, str]]) -> None:
    """Give the dynamic dimensions the caller named their names, in the inputs and wherever the
    exporter's own symbol for them appears (outputs, value_info)."""
    symbols: dict[str, str] = {}
    for vi in graph.input:
        axes = dynamic.get(vi.name)
        if not axes:
            continue
        dims = vi.type.tensor_type.shape.dim
        for axis, name in axes.items():
            if not -len(dims) <= axis < len(dims):
                continue
            d = dims[axis]
            if d.dim_param and d.dim_param != name:
                symbols[d.dim_param] = name
            d.ClearField("dim_value")
            d.dim_param = name
    if not symbols:
        return
    for vi in (*graph.input, *graph.output, *graph.value_info):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape"):
            for d in vi.type.tensor_type.shape.dim:
                if d.dim_param in symbols:
                    d.dim_param = symbols[d.dim_param]


def finish_onnx(
    path: Path,
    *,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    dynamic: Mapping[str, Mapping[int, str]] | None = None,
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Rewrite the ONNX file at ``path``: graph inputs/outputs renamed to ``input_names`` and
    ``output_names`` by position (when given and they differ), dynamic axes named after
    ``dynamic``, ``metadata`` set in ``metadata_props``."""
    proto = _load(path)
    graph = proto.graph
    inits = {t.name for t in graph.initializer}
    real_inputs = [vi.name for vi in graph.input if vi.name not in inits]
    renames: dict[str, str] = {}
    for have, want in ((real_inputs, input_names), ([vi.name for vi in graph.output], output_names)):
        if want is None:
            continue
        if len(want) != len(have):
            raise ConversionError(
                f"the exported ONNX graph has {len(have)} tensors {have} where {len(want)} names {list(want)} were given"
            )
        renames.update({h: w for h, w in zip(have, want, strict=True) if h != w})
    rename_tensors(graph, renames)
    if dynamic:
        _rename_dims(graph, dynamic)
    if metadata:
        keep = [p for p in proto.metadata_props if p.key not in metadata]
        del proto.metadata_props[:]
        for p in keep:
            proto.metadata_props.add(key=p.key, value=p.value)
        for k, v in metadata.items():
            proto.metadata_props.add(key=k, value=v)
    save_onnx(proto, path)


def onnx_facts(path: Path) -> dict[str, Any]:
    """opset (default domain), the ONNX checker's verdict (full check, shape inference included),
    node count (subgraphs included) and parameter count (initializers' elements)."""
    onnx = require("onnx", EXTRA)
    proto = onnx.load(str(path), load_external_data=False)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    try:
        onnx.checker.check_model(str(path), full_check=True)
        checker = "passed"
    except Exception as e:  # the checker's own error classes vary by version
        checker = f"failed: {' '.join(str(e).split())[:300]}"

    def count(graph: Any) -> int:
        n = 0
        for node in graph.node:
            n += 1
            for attr in node.attribute:
                if attr.HasField("g"):
                    n += count(attr.g)
                n += sum(count(g) for g in attr.graphs)
        return n

    params = 0
    for t in graph_tensors(proto.graph):
        size = 1
        for d in t.dims:
            size *= int(d)
        params += size
    return {"opset": opset, "checker": checker, "nodes": count(proto.graph), "parameters": params}
