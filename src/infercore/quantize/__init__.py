"""Making a model smaller and faster at the same answers, measured: INT8 post-training quantization
(``calibrate``) and FP16 conversion (``convert_fp16``), both reported by the same measuring core
(``measure``) and cached by model digest, data fingerprint and options (``cache``)."""

from __future__ import annotations

from ..errors import CalibrationDropError
from .calibration import METHODS, PRESETS, TARGETS, calibrate, calibration_batches
from .fp16 import convert_fp16
from .measure import CalibrationReport, CalibrationResult

__all__ = [
    "METHODS",
    "PRESETS",
    "TARGETS",
    "CalibrationDropError",
    "CalibrationReport",
    "CalibrationResult",
    "calibrate",
    "calibration_batches",
    "convert_fp16",
]
