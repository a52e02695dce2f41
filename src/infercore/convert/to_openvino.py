"""OpenVINO IR (``.xml`` + ``.bin``) through ``openvino.convert_model`` and ``openvino.save_model``.

``save_model`` compresses weights to FP16 unless told not to: here the weights stay fp32 unless
``precision="fp16"`` is asked for (an fp16 rounding of every weight is a change the caller did
not request). infercore's metadata goes in the model's ``rt_info`` under ``infercore``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConversionError
from ..optional import require

__all__ = ["EXTRA", "convert_ir", "embed_ir_metadata", "ir_facts", "save_ir"]

EXTRA = "openvino"


def _ov() -> Any:
    return require("openvino", EXTRA)


def name_ports(model: Any, input_names: Sequence[str] | None, output_names: Sequence[str] | None) -> None:
    """Give the model's inputs and outputs these tensor names, by position (OpenVINO's PyTorch
    frontend leaves outputs unnamed)."""
    for ports, names, what in ((model.inputs, input_names, "inputs"), (model.outputs, output_names, "outputs")):
        if names is None:
            continue
        if len(ports) != len(names):
            raise ConversionError(
                f"openvino converted a model with {len(ports)} {what} where {len(names)} names {list(names)} were given"
            )
        for port, name in zip(ports, names, strict=True):
            if port.get_names() != {name}:
                port.get_tensor().set_names({name})


def save_ir(model: Any, path: Path, precision: str) -> None:
    if path.suffix != ".xml":
        raise ConversionError(f"an OpenVINO IR is written as .xml (+ .bin), not {path.name}")
    _ov().save_model(model, str(path), compress_to_fp16=precision == "fp16")


def convert_ir(
    source: Any,
    path: Path,
    precision: str,
    *,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    **kwargs: Any,
) -> None:
    """``openvino.convert_model(source, **kwargs)`` saved as IR at ``path``."""
    ov = _ov()
    model = ov.convert_model(source, **kwargs)
    name_ports(model, input_names, output_names)
    save_ir(model, path, precision)


def embed_ir_metadata(path: Path, metadata: Mapping[str, str]) -> None:
    """Set ``metadata`` in the IR's ``rt_info`` (key ``infercore.x`` under ``infercore``/``x``)
    and save it again, weights as they are."""
    ov = _ov()
    core = ov.Core()
    model = core.read_model(str(path))
    for key, value in metadata.items():
        model.set_rt_info(str(value), key.split(".", 1) if "." in key else [key])
    tmp = path.with_name(path.stem + ".meta.xml")
    ov.save_model(model, str(tmp), compress_to_fp16=False)
    del model
    tmp.replace(path)
    tmp.with_suffix(".bin").replace(path.with_suffix(".bin"))


def ir_facts(path: Path) -> dict[str, Any]:
    ov = _ov()
    model = ov.Core().read_model(str(path))
    ops = model.get_ops()
    params = 0
    for op in ops:
        if op.get_type_name() == "Constant":
            shape = op.get_output_partial_shape(0)
            if shape.is_static:
                size = 1
                for d in shape.to_shape():
                    size *= int(d)
                if size > 1:
                    params += size
    return {"nodes": len(ops), "parameters": params}
