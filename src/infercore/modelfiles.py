"""What files make up a model, and their digests.

A model is all its files: an ``.onnx`` with its external-data files, an OpenVINO ``.xml`` with its
``.bin``, a ``.tflite``, a TensorRT engine (with the JSON sidecar infercore writes beside it), or
every file of a directory. Caches key on these
digests, benchmark reports record them, and signing covers every one of them.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "external_data_locations", "graph_op_types", "graph_tensors", "model_files", "onnx_op_types", "quantized_ops", "sha256_file",
    "sha256_files",
]  # fmt: skip

log = logging.getLogger(__name__)
_CHUNK = 1 << 20


def graph_tensors(graph: Any) -> Iterator[Any]:
    """Every TensorProto of a graph: initializers, Constant/attribute tensors, subgraphs'."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from graph_tensors(attr.g)
            for g in attr.graphs:
                yield from graph_tensors(g)


def external_data_locations(path: str | os.PathLike[str]) -> list[str]:
    """The external-data file names an ONNX model refers to (relative to its directory), sorted.

    Read with the ``onnx`` package; without it (a TensorRT-only install), the files beside the model
    whose names its bytes hold. A file ``onnx`` cannot parse names none: the runtime that opens it
    says why, in its own words."""
    p = Path(path)
    try:
        import onnx
    except ImportError:
        try:
            data = p.read_bytes()
        except OSError:
            return []
        if b"location" not in data:
            return []
        return sorted(f.name for f in p.parent.iterdir() if f.is_file() and f != p and f.name.encode() in data)
    try:
        proto = onnx.load(str(p), load_external_data=False)
    except Exception as e:
        log.debug("onnx could not read %s: %s", p, e)
        return []
    return sorted({e.value for t in graph_tensors(proto.graph) for e in t.external_data if e.key == "location"})


_QUANTIZED_OPS = frozenset(
    {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger",
     "DynamicQuantizeMatMul", "MatMulIntegerToFloat"}
)  # fmt: skip
_QUANTIZED_PREFIXES = ("QLinear", "DynamicQuantize", "QGemm", "QAttention", "MatMulNBits")


def onnx_op_types(path: str | os.PathLike[str]) -> set[str] | None:
    """The op types of an ONNX model, its subgraphs' (If/Loop/Scan bodies) included; None when the
    ``onnx`` package is not installed or cannot read the file."""
    try:
        import onnx
    except ImportError:
        return None
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        log.debug("onnx could not read %s: %s", path, e)
        return None
    return graph_op_types(proto.graph)


def graph_op_types(graph: Any) -> set[str]:
    """The op types of an ONNX graph (a ``GraphProto``) and of its subgraphs."""
    found: set[str] = set()
    graphs = [graph]
    while graphs:
        for node in graphs.pop().node:
            found.add(node.op_type)
            for attr in node.attribute:
                graphs.extend([attr.g] if attr.HasField("g") else [])
                graphs.extend(attr.graphs)
    return found


def quantized_ops(path: str | os.PathLike[str]) -> list[str]:
    """The quantized op types of an ONNX model (QuantizeLinear, ConvInteger, QLinearConv...),
    sorted: empty for a float model, another format, or without the ``onnx`` package."""
    if Path(path).suffix.lower() != ".onnx":
        return []
    ops = onnx_op_types(path) or set()
    return sorted(o for o in ops if o in _QUANTIZED_OPS or o.startswith(_QUANTIZED_PREFIXES))


def model_files(path: str | os.PathLike[str]) -> list[Path]:
    """The files of the model at ``path``: itself, plus an ``.xml``'s ``.bin``, an ``.onnx``'s
    external data and a TensorRT engine's ``.json`` sidecar (those that exist), or every regular
    file under a directory, sorted."""
    p = Path(path)
    if p.is_dir():
        return sorted(f for f in p.rglob("*") if f.is_file())
    files = [p]
    suffix = p.suffix.lower()
    if suffix == ".xml":
        files.append(p.with_suffix(".bin"))
    elif suffix == ".onnx":
        files += [p.parent / loc for loc in external_data_locations(p)]
    elif suffix in (".engine", ".plan"):
        files.append(p.with_name(p.name + ".json"))  # the sidecar that vouches for a built engine
    return [f for i, f in enumerate(files) if i == 0 or f.is_file()]


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_files(paths: Iterable[str | os.PathLike[str]]) -> str:
    """One digest over the contents of ``paths`` in order (a file that is missing counts as such)."""
    h = hashlib.sha256()
    for f in paths:
        h.update(os.fsencode(Path(f).name) + b"\0")
        try:
            h.update(bytes.fromhex(sha256_file(f)))
        except FileNotFoundError:
            h.update(b"missing")
    return h.hexdigest()
