"""Where a benchmark ran: the CPU (model, cores, the SIMD features that matter for inference),
memory, OS, Python; and what it ran: the model's files and digest."""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..modelfiles import model_files, sha256_files

__all__ = ["MachineInfo", "ModelInfo", "simd_summary"]

_CPU_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "asimd",
    "asimddp",
    "asimdhp",
    "sve",
    "sve2",
    "bf16",
    "i8mm",
)


@dataclass(frozen=True)
class MachineInfo:
    cpu_model: str
    cores_physical: int | None
    cores_logical: int
    cores_usable: int
    flags: tuple[str, ...]
    memory_gb: float | None
    os: str
    python: str
    numpy: str
    loadavg: tuple[float, float, float] | None

    @classmethod
    def collect(cls) -> MachineInfo:
        model, flags = _cpuinfo()
        logical = os.cpu_count() or 1
        try:
            usable = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            usable = logical
        physical: int | None = None
        memory: float | None = None
        try:
            import psutil

            physical = psutil.cpu_count(logical=False)
            memory = round(psutil.virtual_memory().total / 2**30, 1)
        except ImportError:
            physical = _physical_cores()
        try:
            la = os.getloadavg()
            load_avg: tuple[float, float, float] | None = (round(la[0], 2), round(la[1], 2), round(la[2], 2))
        except (AttributeError, OSError):
            load_avg = None
        return cls(
            cpu_model=model,
            cores_physical=physical,
            cores_logical=logical,
            cores_usable=usable,
            flags=flags,
            memory_gb=memory,
            os=f"{platform.system()} {platform.release()} {platform.machine()}",
            python=platform.python_version(),
            numpy=np.__version__,
            loadavg=load_avg,
        )

    def describe(self) -> str:
        """One line: CPU, cores, the SIMD features that matter for inference, memory, OS."""
        cores = f"{self.cores_physical or '?'} cores / {self.cores_logical} threads"
        if self.cores_usable != self.cores_logical:
            cores += f" ({self.cores_usable} usable)"
        simd = simd_summary(self.flags)
        mem = f", {self.memory_gb:g} GiB" if self.memory_gb else ""
        return f"{self.cpu_model}, {cores}{', ' + simd if simd else ''}{mem}, {self.os}, Python {self.python}"


def _cpuinfo() -> tuple[str, tuple[str, ...]]:
    model = ""
    flags: set[str] = set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    if not model:
        model = platform.processor() or platform.machine() or "unknown CPU"
    return model, tuple(f for f in _CPU_FLAGS if f in flags)


def _physical_cores() -> int | None:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    cores = set()
    phys = core = ""
    for line in [*text.splitlines(), ""]:
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "physical id":
            phys = value.strip()
        elif key == "core id":
            core = value.strip()
        elif not line.strip() and core:
            cores.add((phys, core))
            phys = core = ""
    return len(cores) or None


def simd_summary(flags: Sequence[str]) -> str:
    have = set(flags)
    parts = []
    if "avx512f" in have:
        parts.append("AVX-512")
    elif "avx2" in have:
        parts.append("AVX2")
    elif "asimd" in have:
        parts.append("NEON")
    if have & {"avx512_vnni", "avx_vnni", "asimddp"}:
        parts.append("VNNI" if have & {"avx512_vnni", "avx_vnni"} else "dot-product")
    if have & {"avx512_bf16", "amx_bf16", "bf16"}:
        parts.append("BF16")
    if "amx_tile" in have:
        parts.append("AMX")
    return " ".join(parts)


@dataclass(frozen=True)
class ModelInfo:
    """The model benchmarked: ``size_bytes`` and ``sha256`` cover all its files (an ``.xml``'s
    ``.bin``, an ``.onnx``'s external data)."""

    path: str
    name: str
    format: str
    size_bytes: int | None
    sha256: str | None

    @classmethod
    def of(cls, path: Path | None) -> ModelInfo:
        if path is None:
            return cls("", "<engine>", "", None, None)
        try:
            files = model_files(path)
            size: int | None = sum(f.stat().st_size for f in files)
            sha: str | None = sha256_files(files) if len(files) > 1 else _sha256(files[0])
        except OSError:
            size, sha = None, None
        return cls(str(path), path.name, path.suffix.lstrip(".").lower(), size, sha)


def _sha256(path: Path) -> str:
    from ..modelfiles import sha256_file

    return sha256_file(path)
