"""Shared bits of the benchmark scripts: timing rounds, machine facts, JSON output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def per_call_ns(fn: Callable[[], object], calls: int) -> float:
    """Mean ns per call over one round of ``calls`` back-to-back calls."""
    t0 = time.perf_counter_ns()
    for _ in range(calls):
        fn()
    return (time.perf_counter_ns() - t0) / calls


def interleaved(cases: dict[str, Callable[[], object]], calls: int, rounds: int, warmup: int = 200) -> dict[str, dict]:
    """Time each case in alternating rounds (A B A B ...) so machine noise hits all cases alike.

    Returns per case the median, min and max of the per-round mean ns per call.
    """
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for r in range(rounds):
        order = list(cases.items()) if r % 2 == 0 else list(reversed(cases.items()))
        for name, fn in order:
            samples[name].append(per_call_ns(fn, calls))
    return {
        name: {"median_ns": statistics.median(s), "min_ns": min(s), "max_ns": max(s), "rounds": len(s), "calls": calls}
        for name, s in samples.items()
    }


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    flags: list[str] = []
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if (line.startswith("model name") and not cpu) or line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    flags = sorted(f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile") if f in have)
                    break
    except OSError:
        pass
    return {"cpu": cpu, "flags": flags, "cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def write_json(path: str | os.PathLike[str], payload: dict[str, Any]) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2, default=str))
    return out


def paired(cases: dict[str, Callable[[], object]], calls: int, warmup: int = 5) -> dict[str, dict]:
    """Time single calls, cycling through the cases (A B C, B C A, ...), for slow models.

    Neighbouring calls see the same machine state, so medians (and the median of per-cycle
    ratios) are robust to the slow drifts a shared machine has. Returns per case the median,
    min and max ns of one call.
    """
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    items = list(cases.items())
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for i in range(calls):
        k = i % len(items)
        for name, fn in items[k:] + items[:k]:
            t0 = time.perf_counter_ns()
            fn()
            samples[name].append(time.perf_counter_ns() - t0)
    return {
        name: {"median_ns": statistics.median(s), "min_ns": min(s), "max_ns": max(s), "calls": len(s)}
        for name, s in samples.items()
    }
