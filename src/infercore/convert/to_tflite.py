"""TFLite files: infercore's metadata in the model's own metadata table (one ``infercore.KEY``
entry per key, its buffer the UTF-8 value, as TFLite keeps ``min_runtime_version``), and the facts
the report gives (operators, parameters)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..optional import require

__all__ = ["embed_tflite_metadata", "tflite_facts"]

EXTRA = "convert-tf"


def embed_tflite_metadata(path: Path, metadata: Mapping[str, str]) -> None:
    fb = require("tensorflow.lite.tools.flatbuffer_utils", EXTRA, package="tensorflow")
    schema = require("tensorflow.lite.python.schema_py_generated", EXTRA, package="tensorflow")
    model = fb.read_model(str(path))
    keep = [m for m in (model.metadata or []) if not (m.name or b"").decode("utf-8", "replace").startswith("infercore.")]
    model.metadata = keep
    for key, value in metadata.items():
        buf = schema.BufferT()
        buf.data = np.frombuffer(str(value).encode("utf-8"), dtype=np.uint8)
        model.buffers.append(buf)
        entry = schema.MetadataT()
        entry.name = key
        entry.buffer = len(model.buffers) - 1
        model.metadata.append(entry)
    tmp = path.with_name(path.name + ".meta")
    fb.write_model(model, str(tmp))
    tmp.replace(path)


def _schema() -> Any:
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        schema = require("tensorflow.lite.python.schema_py_generated", EXTRA, package="tensorflow")
    return schema


def tflite_facts(path: Path) -> dict[str, Any]:
    """Operators (every subgraph) and parameters (elements of tensors that hold constant data)."""
    schema = _schema()
    model = schema.Model.GetRootAs(path.read_bytes(), 0)
    ops = 0
    params = 0
    for s in range(model.SubgraphsLength()):
        g = model.Subgraphs(s)
        ops += g.OperatorsLength()
        for t in range(g.TensorsLength()):
            tensor = g.Tensors(t)
            buf = model.Buffers(tensor.Buffer())
            has_data = (buf.DataLength() > 0) or (hasattr(buf, "Size") and buf.Size() > 0)
            if has_data and tensor.ShapeLength():
                params += int(np.prod(tensor.ShapeAsNumpy()))
    return {"nodes": ops, "parameters": params}
