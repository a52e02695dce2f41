"""Convert a model out of its training framework, and write it only once it has been shown to agree.

    res = ic.convert(model, "onnx", (x,), dynamic={"x": {0: "batch"}}, output="model.onnx")
    res.artifact_path        # model.onnx, verified on ONNX Runtime and OpenVINO against torch
    print(res.report)        # exporter, opset, checker, nodes, parameters, size, and every check

Sources and targets (``PAIRS``): PyTorch (``nn.Module``, ``ExportedProgram``, ``.pt2``, TorchScript
``.pt``) to ONNX and OpenVINO IR; Keras 3 / TensorFlow (a Keras model, ``.keras``, a SavedModel
directory, a ``tf.function``) to ONNX, ``.tflite`` (fp32, fp16, full-integer INT8) and IR;
``.tflite`` to ONNX and IR; ``.onnx`` to simplified ONNX and IR. See ``api.convert`` for the
parameters, ``verify`` for the parity gate, ``report`` for what the report holds.
"""

from __future__ import annotations

from ..facade import callable_module
from .api import PAIRS, TARGETS, convert
from .report import Attempt, Check, ConversionReport, ConversionResult, SourceInfo

__all__ = ["PAIRS", "TARGETS", "Attempt", "Check", "ConversionReport", "ConversionResult", "SourceInfo", "convert"]

callable_module(__name__, "convert")  # ic.convert stays callable once this package is imported
