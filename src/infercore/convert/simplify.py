"""Graph simplification of a converted ONNX model with onnxslim (constant folding, dead nodes,
fusions). The simplified graph is verified like any other: one that disagrees is not written."""

from __future__ import annotations

import importlib.metadata
import logging
from pathlib import Path

from ..optional import require

__all__ = ["EXTRA", "simplify_onnx"]

log = logging.getLogger(__name__)

EXTRA = "convert-torch"


def _version() -> str:
    try:
        return importlib.metadata.version("onnxslim")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - imported, so installed
        return "?"


def simplify_onnx(src: Path, out: Path) -> str:
    """Write the simplified graph of ``src`` at ``out``; returns what changed, in words
    ("onnxslim 0.1.98: 120 -> 61 nodes"). Raises whatever onnxslim raises."""
    onnx = require("onnx", "onnx")
    onnxslim = require("onnxslim", EXTRA)
    from .to_onnx import save_onnx

    before = onnx.load(str(src), load_external_data=True)
    n_before = len(before.graph.node)
    props = [(p.key, p.value) for p in before.metadata_props]
    slim = onnxslim.slim(before)
    if slim is None:  # onnxslim returns None when it writes to a path; never here
        raise RuntimeError("onnxslim returned no model")
    if props and not slim.metadata_props:
        for k, v in props:
            slim.metadata_props.add(key=k, value=v)
    save_onnx(slim, out)
    return f"onnxslim {_version()}: {n_before} -> {len(slim.graph.node)} nodes"
