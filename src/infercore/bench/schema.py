"""The JSON a benchmark report is written as (``schema_version`` 1), and a dependency-free
validator of it; see docs/bench.md."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .report import RunSettings

__all__ = ["JSON_SCHEMA", "SCHEMA_VERSION", "validate_report"]

SCHEMA_VERSION = 1


_NUM = {"type": "number"}


_NUM_OR_NULL = {"type": ["number", "null"]}


_INT = {"type": "integer"}


_STR = {"type": "string"}


_STR_OR_NULL = {"type": ["string", "null"]}


_LATENCY = {
    "type": ["object", "null"],
    "required": ["count", "min", "mean", "std", "p50", "p90", "p95", "p99", "max", "cv"],
    "properties": {
        "count": _INT,
        **{k: _NUM for k in ("min", "mean", "std", "p50", "p90", "p95", "p99", "max", "cv")},
    },
}


JSON_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "infercore benchmark report",
    "type": "object",
    "required": ["schema_version", "created", "infercore_version", "model", "machine", "settings", "results"],
    "properties": {
        "schema_version": {"type": "integer", "const": SCHEMA_VERSION},
        "created": _STR,
        "infercore_version": _STR,
        "model": {
            "type": "object",
            "required": ["path", "name", "format", "size_bytes", "sha256"],
            "properties": {
                "path": _STR,
                "name": _STR,
                "format": _STR,
                "size_bytes": {"type": ["integer", "null"]},
                "sha256": _STR_OR_NULL,
            },
        },
        "machine": {
            "type": "object",
            "required": [
                "cpu_model",
                "cores_physical",
                "cores_logical",
                "cores_usable",
                "flags",
                "memory_gb",
                "os",
                "python",
                "numpy",
                "loadavg",
                "description",
            ],
            "properties": {
                "cpu_model": _STR,
                "cores_physical": {"type": ["integer", "null"]},
                "cores_logical": _INT,
                "cores_usable": _INT,
                "flags": {"type": "array", "items": _STR},
                "memory_gb": _NUM_OR_NULL,
                "os": _STR,
                "python": _STR,
                "numpy": _STR,
                "loadavg": {"type": ["array", "null"], "items": _NUM},
                "description": _STR,
            },
        },
        "settings": {
            "type": "object",
            "required": list(RunSettings.__dataclass_fields__),
            "properties": {
                "warmup_s": _NUM,
                "duration_s": _NUM_OR_NULL,
                "iterations": {"type": ["integer", "null"]},
                "bound": {"type": "boolean"},
                "device": _STR,
                "threads": {"type": ["integer", "null"]},
                "seed": _INT,
                "input_source": _STR,
                "cv_threshold": _NUM,
                "min_samples": _INT,
                "min_duration_s": _NUM,
                "rss_scope": {"type": "string", "enum": ["since-load", "process"]},
            },
        },
        "skipped": {"type": "array", "items": _STR},
        "results": {
            "type": "array",
            "items": {
                "type": "object",
                "required": [
                    "backend",
                    "precision",
                    "device",
                    "threads",
                    "backend_version",
                    "batch",
                    "concurrency",
                    "bound",
                    "inputs",
                    "latency_ms",
                    "p50_net_ms",
                    "overhead",
                    "throughput",
                    "iterations",
                    "warmup_iterations",
                    "warmup_s",
                    "measured_s",
                    "peak_rss_mb",
                    "warnings",
                    "error",
                ],
                "properties": {
                    "backend": _STR,
                    "precision": _STR_OR_NULL,
                    "device": _STR,
                    "threads": {"type": ["integer", "null"]},
                    "backend_version": _STR_OR_NULL,
                    "batch": _INT,
                    "concurrency": _INT,
                    "bound": {"type": "boolean"},
                    "inputs": {"type": "object"},
                    "latency_ms": _LATENCY,
                    "p50_net_ms": _NUM_OR_NULL,
                    "overhead": {
                        "type": ["object", "null"],
                        "required": ["latency_us", "iteration_us", "iterations"],
                        "properties": {"latency_us": _NUM, "iteration_us": _NUM, "iterations": _INT},
                    },
                    "throughput": {
                        "type": "object",
                        "required": ["inferences_per_s", "items_per_s"],
                        "properties": {"inferences_per_s": _NUM_OR_NULL, "items_per_s": _NUM_OR_NULL},
                    },
                    "iterations": _INT,
                    "warmup_iterations": _INT,
                    "warmup_s": _NUM,
                    "measured_s": _NUM,
                    "peak_rss_mb": _NUM_OR_NULL,
                    "warnings": {"type": "array", "items": _STR},
                    "error": _STR_OR_NULL,
                    "samples_ms": {"type": "array", "items": _NUM},
                },
            },
        },
    },
}


_JSON_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def validate_report(obj: Any, schema: Mapping[str, Any] | None = None, where: str = "$") -> list[str]:
    """Check a decoded report against ``JSON_SCHEMA`` (the subset it uses: type, required,
    properties, items, enum, const). Returns the problems found, empty when valid. Use the
    ``jsonschema`` package for a full validator; this one keeps infercore free of it."""
    schema = JSON_SCHEMA if schema is None else schema
    problems: list[str] = []
    types = schema.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else list(types)
        if not any(_JSON_TYPES[t](obj) for t in names):
            return [f"{where}: expected {' or '.join(names)}, got {type(obj).__name__}"]
    if "const" in schema and obj != schema["const"]:
        problems.append(f"{where}: expected {schema['const']!r}, got {obj!r}")
    if "enum" in schema and obj not in schema["enum"]:
        problems.append(f"{where}: expected one of {schema['enum']}, got {obj!r}")
    if isinstance(obj, dict):
        problems += [f"{where}: missing {k!r}" for k in schema.get("required", ()) if k not in obj]
        for key, sub in schema.get("properties", {}).items():
            if key in obj:
                problems += validate_report(obj[key], sub, f"{where}.{key}")
    if isinstance(obj, list) and "items" in schema:
        for i, item in enumerate(obj):
            problems += validate_report(item, schema["items"], f"{where}[{i}]")
    return problems
