"""The fakes offer only what the real bindings have (surfaces extracted by ``extract_surface.py``).

A fake name missing from the real version it claims to be fails here: that is how the fake stays
honest (for example, TensorRT 11.4 has no ``IInt8EntropyCalibrator2`` and no ``BuilderFlag.FP16``).
The backend's own calls are checked against every real version it supports.
"""

from __future__ import annotations

import enum
import inspect
import json
import re
from pathlib import Path
from typing import Any

import fake_cuda
import fake_tensorrt
import pytest

from conftest import VERSIONS

SURFACE = Path(__file__).resolve().parent / "surface"
TRT_SURFACES = sorted(SURFACE.glob("tensorrt-*.json"))
CUDA_SURFACES = sorted(SURFACE.glob("cuda-bindings-*.json"))
_BUILTIN_BASES = (object, enum.Enum, bytes, int, enum.IntEnum, fake_tensorrt._Enum, fake_cuda._Handle)


def _surface(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _params(fn: Any) -> list[str]:
    sig = inspect.signature(fn)
    return [p.name for p in sig.parameters.values() if p.name not in ("self", "cls")]


def _real_params(entry: list[list[str]]) -> list[list[str]]:
    """Each overload's names, and its prefixes that leave out only defaulted parameters."""
    out = []
    for overload in entry:
        names = [p.rstrip("=") for p in overload]
        out.append(names)
        for cut in range(len(overload) - 1, -1, -1):
            if not overload[cut].endswith("="):
                break
            out.append(names[:cut])
    return out


def _own_names(cls: type) -> dict[str, Any]:
    names: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        if klass in _BUILTIN_BASES or klass.__module__ == "builtins":
            continue
        for k, v in vars(klass).items():
            if not k.startswith("_"):
                names[k] = v
    return names


def _compare_module(fake: Any, real: dict[str, Any], label: str) -> list[str]:
    problems = []
    for name in (n for n in dir(fake) if not n.startswith("_")):
        obj = getattr(fake, name)
        if inspect.isclass(obj):
            real_cls = real["classes"].get(name)
            if real_cls is None:
                problems.append(f"{label}: class {name} does not exist")
                continue
            problems += _compare_class(obj, real_cls, f"{label}: {name}")
        elif callable(obj):
            if name not in real["functions"]:
                problems.append(f"{label}: function {name} does not exist")
            elif _params(obj) not in _real_params(real["functions"][name]):
                problems.append(f"{label}: {name}{tuple(_params(obj))} vs real {real['functions'][name]}")
        elif name not in real["values"]:
            problems.append(f"{label}: value {name} does not exist")
    return problems


def _compare_class(cls: type, real: dict[str, Any], label: str) -> list[str]:
    problems = []
    members = set(real.get("members") or ())
    if issubclass(cls, enum.Enum):
        extra = sorted(m.name for m in cls if m.name not in members)  # type: ignore[var-annotated]
        if extra:
            problems.append(f"{label}: enum members {extra} do not exist")
    attrs = real["attrs"]
    for name, value in _own_names(cls).items():
        if issubclass(cls, enum.Enum) and name in members:
            continue
        if inspect.isclass(value):  # nested class (ILogger.Severity) is an attribute of the real one
            if name not in attrs:
                problems.append(f"{label}.{name} does not exist")
            continue
        entry = attrs.get(name)
        if entry is None:
            problems.append(f"{label}.{name} does not exist")
        elif isinstance(value, property):
            if entry["kind"] != "property":
                problems.append(f"{label}.{name} is a {entry['kind']}, not a property")
            elif value.fset is not None and not entry["writable"]:
                problems.append(f"{label}.{name} is read-only in the real API")
        elif callable(value):
            if entry["kind"] not in ("method", "staticmethod", "function"):
                problems.append(f"{label}.{name} is a {entry['kind']}, not callable")
            elif entry.get("params") and _params(value) not in _real_params(entry["params"]):
                problems.append(f"{label}.{name}{tuple(_params(value))} vs real {entry['params']}")
    return problems


def _versions_claimed() -> list[str]:
    return [*VERSIONS, "10.0.1"]


@pytest.mark.parametrize("version", _versions_claimed())
def test_fake_tensorrt_offers_only_real_names(version: str) -> None:
    path = SURFACE / f"tensorrt-{version}.json"
    assert path.exists(), f"no extracted surface for {version}: run tests/trt/extract_surface.py"
    problems = _compare_module(fake_tensorrt.build(version), _surface(path), f"tensorrt {version}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", CUDA_SURFACES, ids=lambda p: p.stem)
def test_fake_cuda_offers_only_real_names(path: Path) -> None:
    problems = _compare_module(fake_cuda.make_module(), _surface(path), path.stem)
    assert not problems, "\n".join(problems)


def test_the_check_catches_a_name_11_lacks() -> None:
    real = _surface(SURFACE / "tensorrt-11.4.0.106.json")
    assert "IInt8EntropyCalibrator2" not in real["classes"]
    assert "FP16" not in real["classes"]["BuilderFlag"]["members"]
    liar = fake_tensorrt.build("10.16.1.11")  # offers the calibrator and FP16, as 10.x does
    problems = _compare_module(liar, real, "10.x fake claiming 11.4")
    assert any("IInt8EntropyCalibrator2" in p for p in problems)
    assert any("FP16" in p for p in problems)


# What the backend calls, by class: it must exist in every supported real version.
BACKEND_USES = {
    "ICudaEngine": [
        "num_io_tensors",
        "get_tensor_name",
        "get_tensor_mode",
        "get_tensor_dtype",
        "get_tensor_shape",
        "get_tensor_profile_shape",
        "create_execution_context",
    ],
    "IExecutionContext": ["set_input_shape", "get_tensor_shape", "set_tensor_address", "execute_async_v3"],
    "Runtime": ["deserialize_cuda_engine"],
    "Builder": [
        "create_network",
        "create_builder_config",
        "create_optimization_profile",
        "build_serialized_network",
    ],
    "IBuilderConfig": [
        "set_memory_pool_limit",
        "add_optimization_profile",
        "create_timing_cache",
        "set_timing_cache",
        "get_timing_cache",
        "builder_optimization_level",
        "set_flag",
    ],
    "INetworkDefinition": ["num_inputs", "get_input"],
    "ITensor": ["name", "shape"],
    "IOptimizationProfile": ["set_shape"],
    "OnnxParser": ["parse", "num_errors", "get_error"],
    "ParserError": ["code", "desc", "node", "node_name", "node_operator"],
    "ITimingCache": ["serialize"],
    "ILogger": ["log", "Severity"],
}
VERSION_10_ONLY = {"IInt8EntropyCalibrator2", "int8_calibrator", "set_calibration_profile"}


@pytest.mark.parametrize("path", TRT_SURFACES, ids=lambda p: p.stem)
def test_backend_calls_exist_in_every_supported_version(path: Path) -> None:
    real = _surface(path)
    for cls, names in BACKEND_USES.items():
        attrs = real["classes"][cls]["attrs"]
        missing = [n for n in names if n not in attrs]
        assert not missing, f"{path.stem}: {cls} lacks {missing}"
    package = Path(__file__).resolve().parents[2] / "src/infercore/backends/tensorrt"
    source = "\n".join(f.read_text() for f in sorted(package.glob("*.py")))
    used = set(re.findall(r"\btrt\.([A-Za-z_][A-Za-z0-9_]*)", source)) - {"__version__"}
    missing = sorted(
        n
        for n in used
        if n not in real["classes"] and n not in real["functions"] and n not in VERSION_10_ONLY
    )
    assert not missing, f"{path.stem}: the backend uses trt.{missing}"
    if real["version"].startswith("10."):
        assert "IInt8EntropyCalibrator2" in real["classes"]
        assert {"set_calibration_profile", "int8_calibrator"} <= set(
            real["classes"]["IBuilderConfig"]["attrs"]
        )
