"""``ic.benchmark()``: honest, comparable latency and throughput across backends.

    report = ic.benchmark("model.onnx", backends=["ort", "openvino:bf16"], batch=[1, 8],
                          shapes={"sequence": 128}, duration=10)
    report.print_table()
    report.to_json("bench.json")
    report.plot("bench.png")

The package: ``harness`` (the timed loops and ``benchmark``), ``report`` (what was measured),
``machine`` (where), ``render`` (tables, Markdown, plot) and ``schema`` (the JSON). Inputs come
from ``infercore.inputs``, by the same rules ``compare`` and ``calibrate`` use.
"""

from __future__ import annotations

from ..errors import BenchmarkWarning
from .harness import benchmark, parse_duration
from .machine import MachineInfo, ModelInfo
from .report import BenchmarkReport, BenchmarkResult, HarnessOverhead, LatencyStats, RunSettings
from .schema import JSON_SCHEMA, SCHEMA_VERSION, validate_report

__all__ = [
    "JSON_SCHEMA",
    "SCHEMA_VERSION",
    "BenchmarkReport",
    "BenchmarkResult",
    "BenchmarkWarning",
    "HarnessOverhead",
    "LatencyStats",
    "MachineInfo",
    "ModelInfo",
    "RunSettings",
    "benchmark",
    "parse_duration",
    "validate_report",
]
