"""``Engine``: one API over every backend.

The Engine validates inputs once, in Python, then calls the backend, which never re-validates.
``run()`` is the convenient path (copies are allowed, outputs are owned by the caller);
``bind()`` is the zero-copy path (inputs written in place, outputs in reused buffers, nothing
allocated per run).
"""

from __future__ import annotations

import math
import operator
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .arguments import check_int
from .buffers import BufferMap, aligned_zeros, check_bound_array
from .errors import (
    ArgumentError,
    BackendRuntimeError,
    EngineClosedError,
    InfercoreError,
    InputSpecError,
    ModelLoadError,
)
from .protocol import Backend, Binding, ModelVerifier
from .specs import TensorSpec, format_shape, is_symbol, normalize_precision

__all__ = ["BoundIO", "Engine", "EngineStats", "load"]

_RING = 4096  # latencies kept for percentiles (the most recent sampled runs)
_RING_MASK = _RING - 1
_SAMPLE = 7  # every 8th call is timed: the one made when (count & _SAMPLE) == _SAMPLE
_perf_ns = time.perf_counter_ns


@dataclass(frozen=True)
class EngineStats:
    """Counts since load and latency percentiles (ms) over the most recent runs (both paths).

    ``runs`` counts successful ``run()`` calls, ``bound_runs`` successful ``io.run()`` calls,
    ``errors`` failed calls of either kind; ``window`` is how many latencies the percentiles use.
    One call in eight is timed, so the latency fields are ``None`` (and ``window`` 0) until one is.
    """

    runs: int
    errors: int
    bound_runs: int
    mean_ms: float | None
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    window: int


class _Stats:
    """Lock-free counters, exact under concurrent runs.

    A count is bumped only after its call returns (``stats.runs += 1``: a read and a write with
    nothing between them that lets another thread run, under the GIL), never read before a
    backend call and written back after it. Every 8th call of each path is timed (two clock reads
    and a store cost as much as a tiny model's whole run), so percentiles come from a systematic
    sample of the recent calls; the call is picked by reading the count before it, which under
    concurrency only changes which calls are timed (an ``itertools.count`` would make that exact,
    at 1.5% of a tiny model's bound run).
    """

    __slots__ = ("bound_runs", "errors", "lat", "pos", "runs")

    def __init__(self) -> None:
        self.runs = 0
        self.bound_runs = 0
        self.errors = 0
        self.pos = 0  # ring position of the last timed call
        # int64 slots: storing a latency converts it in place, so the ring never retains objects
        self.lat = np.zeros(_RING, dtype=np.int64)

    def snapshot(self) -> EngineStats:
        runs = self.runs
        if runs + self.bound_runs == 0:
            return EngineStats(runs, self.errors, self.bound_runs, None, None, None, None, None, 0)
        timed = self.lat[self.lat > 0]
        if not timed.size:  # runs, but none of them sampled yet (every 8th is): no latency to report
            return EngineStats(runs, self.errors, self.bound_runs, None, None, None, None, None, 0)
        lat = timed.astype(np.float64) / 1e6
        p50, p90, p99 = np.percentile(lat, [50, 90, 99])
        return EngineStats(
            runs,
            self.errors,
            self.bound_runs,
            float(lat.mean()),
            float(p50),
            float(p90),
            float(p99),
            float(lat.max()),
            int(lat.size),
        )


class _InputCheck:
    """Precomputed facts about one input, so a check costs a few attribute reads."""

    __slots__ = ("dtype", "fixed", "name", "rank", "spec", "static", "strides", "strings")

    def __init__(self, spec: TensorSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.dtype = spec.dtype
        self.strings = spec.dtype.hasobject  # a string tensor: its elements are checked per call
        self.rank = spec.rank
        self.static: tuple[int, ...] | None = spec.concrete() if spec.is_static else None
        self.strides = _c_strides(self.static, spec.dtype.itemsize) if self.static is not None else None
        self.fixed = tuple((i, d) for i, d in enumerate(spec.shape) if d is not None)


def _c_strides(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """The strides of a C-contiguous array of this shape (a cheap contiguity test for static inputs)."""
    strides = []
    step = itemsize
    for d in reversed(shape):
        strides.append(step)
        step *= max(d, 1)
    return tuple(reversed(strides))


def _shared_dims(
    inputs: Sequence[TensorSpec],
) -> tuple[tuple[str, tuple[str, int], tuple[tuple[str, int], ...]], ...]:
    """Symbolic dimension names that more than one input uses: (name, (input, axis) of the first
    input that has it, the same for each other input). In ONNX one ``dim_param`` is one size
    across the graph. Placeholder names (``?``, ``unk__12``, numbers) are not symbols: exporters
    write them for every unknown dimension, and an input whose axes share a name is not checked
    against itself (PP-OCR names both its height and width ``?``)."""
    places: dict[str, list[tuple[str, int]]] = {}
    for spec in inputs:
        for axis, (d, name) in enumerate(zip(spec.shape, spec.dim_names, strict=True)):
            if d is not None or name is None or not is_symbol(name):
                continue
            seen = places.setdefault(name, [])
            if all(t != spec.name for t, _ in seen):
                seen.append((spec.name, axis))
    return tuple((name, p[0], tuple(p[1:])) for name, p in places.items() if len(p) > 1)


def _dtype_error(check: _InputCheck, given: np.dtype) -> InputSpecError:
    want = check.dtype
    if want.hasobject:
        how = "pass an array of Python str (dtype object or a numpy str_ dtype)"
    else:
        how = f"cast it with x.astype(np.{want.name})"
    return InputSpecError(
        f"input {check.name!r}: expected dtype {want}, got {given}; infercore never casts silently: {how}",
        tensor=check.name,
    )


def _as_strings(c: _InputCheck, a: np.ndarray) -> np.ndarray:
    """A numpy str_, bytes_ or StringDType array for a string tensor, as an array of Python str
    (bytes read as UTF-8)."""
    if a.dtype.kind == "S":
        try:
            a = np.char.decode(a, "utf-8")
        except UnicodeDecodeError as e:
            where = next(i for i, b in np.ndenumerate(a) if not _is_utf8(b))
            raise InputSpecError(
                f"input {c.name!r} is a string tensor and bytes are read as UTF-8, but element {where} "
                f"({bytes(a[where])!r}) is not UTF-8 ({e.reason}): decode it yourself and pass str",
                tensor=c.name,
            ) from e
    return a.astype(object)


def _only_strings(c: _InputCheck, a: np.ndarray) -> np.ndarray:
    """An object array for a string tensor holds str (bytes are read as UTF-8), nothing else:
    the runtime would turn 1.5, True or None into text."""
    if all(type(v) is str for v in a.flat):
        return a
    out = np.empty(a.shape, object)
    for i, v in np.ndenumerate(a):
        if isinstance(v, bytes):
            if not _is_utf8(v):
                raise InputSpecError(
                    f"input {c.name!r} is a string tensor and bytes are read as UTF-8, but element {i} "
                    f"({v!r}) is not UTF-8: decode it yourself and pass str",
                    tensor=c.name,
                )
            v = v.decode("utf-8")
        elif not isinstance(v, str):
            raise InputSpecError(
                f"input {c.name!r} is a string tensor: element {i} is {type(v).__name__} {v!r}, not str; "
                "pass text (str(x) yourself if a number is meant as text)",
                tensor=c.name,
            )
        out[i] = v
    return out


def _is_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _check_values_kept(c: _InputCheck, given: np.ndarray, cast: np.ndarray) -> None:
    """A Python number cast to the model's dtype must keep its value: no wrapped int, no float
    turned to inf."""
    want = c.dtype
    if want.kind in "iu" and given.dtype.kind in "iu":
        info = np.iinfo(want)
        if int(given.min()) < info.min or int(given.max()) > info.max:
            bad = int(given[(given < info.min) | (given > info.max)].flat[0])
            raise InputSpecError(
                f"input {c.name!r}: value {bad} is out of range for {want} ({info.min} to {info.max}); "
                "infercore never wraps a value: pass values in range",
                tensor=c.name,
            )
    elif want.kind in "fc":
        overflow = np.isinf(cast) & np.isfinite(given)
        if overflow.any():
            bad = given[overflow].flat[0]
            raise InputSpecError(
                f"input {c.name!r}: value {bad.item()!r} overflows {want} (largest finite magnitude "
                f"{np.finfo(want).max.item()!r}) and would become inf: pass values in range",
                tensor=c.name,
            )


def _bind_shape(check: _InputCheck, value: Any) -> tuple[int, ...]:
    """A shape given to bind(): a sequence of ints (numpy ints too); 2.7 or True is not a size."""
    what = "a shape (a tuple of ints) or a numpy array"
    try:
        dims = tuple(value)
    except TypeError:
        raise InputSpecError(f"input {check.name!r}: bind() takes {what}, got {value!r}", tensor=check.name) from None
    for d in dims:
        if isinstance(d, (bool, np.bool_)) or not hasattr(type(d), "__index__"):
            raise InputSpecError(
                f"input {check.name!r}: bind() takes {what}, got {value!r}: dimension {d!r} is not an int",
                tensor=check.name,
            )
    return tuple(operator.index(d) for d in dims)


def _shape_error(check: _InputCheck, shape: tuple[int, ...]) -> InputSpecError:
    spec = check.spec
    want = format_shape(spec.shape, spec.dim_names)
    if len(shape) != spec.rank:
        why = f"rank {len(shape)} where the model takes rank {spec.rank}"
    else:
        why = "; ".join(
            f"dimension {i} is {s}, and a size cannot be negative" if s < 0 else f"dimension {i} must be {d}, got {s}"
            for i, (d, s) in enumerate(zip(spec.shape, shape, strict=True))
            if s < 0 or (d is not None and d != s)
        )
    return InputSpecError(f"input {spec.name!r}: expected shape {want}, got {shape}: {why}", tensor=spec.name)


class Engine:
    """A model opened on one backend. Thread-safe for ``run``; use one ``bind`` per thread."""

    def __init__(
        self,
        backend: Backend,
        *,
        path: Path | None = None,
        backend_name: str | None = None,
        precision: str | None = None,
    ) -> None:
        self._backend: Backend | None = backend
        self.path = path
        self.backend_name = backend_name or backend.name
        self._failing = f"{self.backend_name} failed running {path.name if path is not None else 'the model'}"
        self.device = backend.device
        self.precision = precision
        self.inputs: tuple[TensorSpec, ...] = tuple(backend.inputs)
        self.outputs: tuple[TensorSpec, ...] = tuple(backend.outputs)
        self.metadata: Mapping[str, str] = dict(backend.metadata)
        self._checks = {s.name: _InputCheck(s) for s in self.inputs}
        self._check_list = tuple(self._checks.values())
        self._output_names = tuple(s.name for s in self.outputs)
        self._output_set = frozenset(self._output_names)
        self._single = self.inputs[0].name if len(self.inputs) == 1 else None
        self._shared = _shared_dims(self.inputs)
        self._stats = _Stats()
        self._bindings: weakref.WeakSet[BoundIO] = weakref.WeakSet()
        self._close_lock = threading.Lock()
        # run after the backend closed: e.g. removing the verified private copy the model was opened from
        self._on_close: list[Callable[[], None]] = []

    # -- introspection -----------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._backend is None

    @property
    def concurrency(self) -> int | None:
        """How many runs this engine executes at once, where its runtime fixes that (OpenVINO: the
        compiled model's streams); ``None`` where concurrent calls each run on their own thread
        (ONNX Runtime, LiteRT). More concurrent callers than this queue inside the runtime."""
        value = getattr(self._backend, "concurrency", None)
        return None if value is None else int(value)

    @property
    def stats(self) -> EngineStats:
        return self._stats.snapshot()

    def input(self, name: str) -> TensorSpec:
        try:
            return self._checks[name].spec
        except KeyError:
            raise InputSpecError(
                f"the model has no input {name!r}; its inputs are: {', '.join(self._checks)}", tensor=name
            ) from None

    def __repr__(self) -> str:
        state = "closed" if self.closed else self.device
        ins = ", ".join(str(s) for s in self.inputs)
        outs = ", ".join(str(s) for s in self.outputs)
        return f"<Engine {self.backend_name} {state} {self.path or ''} inputs=({ins}) outputs=({outs})>"

    # -- validation --------------------------------------------------------------------------
    def _check_feeds(self, feeds: Any) -> dict[str, np.ndarray]:
        if type(feeds) is not dict:
            if isinstance(feeds, Mapping):
                feeds = dict(feeds)
            elif self._single is None:
                names = ", ".join(self._checks)
                raise InputSpecError(
                    f"the model has {len(self.inputs)} inputs ({names}); pass a dict name -> array"
                )
            else:
                feeds = {self._single: feeds}
        if len(feeds) != len(self._check_list):
            self._name_error(feeds)
        out = feeds  # handed to the backend as is unless an entry has to change
        for c in self._check_list:
            try:
                a = feeds[c.name]
            except KeyError:
                self._name_error(feeds)
            if type(a) is not np.ndarray:
                a = self._coerce(c, a)
            if a.dtype is not c.dtype and a.dtype != c.dtype:
                if c.dtype.hasobject and a.dtype.kind in "UST":
                    a = _as_strings(c, a)
                else:
                    raise _dtype_error(c, a.dtype)
            elif c.strings:  # an object array for a string tensor: str (or UTF-8 bytes) only
                a = _only_strings(c, a)
            if c.static is not None:
                if a.shape != c.static:
                    raise _shape_error(c, a.shape)
                if a.strides != c.strides and not a.flags.c_contiguous:
                    a = np.ascontiguousarray(a)  # run() may copy; 0-d arrays are always contiguous
            else:
                shape = a.shape
                if len(shape) != c.rank:
                    raise _shape_error(c, shape)
                for i, d in c.fixed:
                    if shape[i] != d:
                        raise _shape_error(c, shape)
                if not a.flags.c_contiguous:
                    a = np.ascontiguousarray(a)
            if a is not feeds[c.name]:
                if out is feeds:
                    out = dict(feeds)
                out[c.name] = a
        if self._shared:
            self._check_shared_dims({c.name: out[c.name].shape for c in self._check_list})
        return out

    def _check_shared_dims(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        """Inputs the model gives one symbolic dimension name (``batch``) must agree on its size."""
        for dim, (first, axis0), rest in self._shared:
            size = shapes[first][axis0]
            for tensor, axis in rest:
                if shapes[tensor][axis] != size:
                    raise InputSpecError(
                        f"inputs {first!r} and {tensor!r} share the dimension {dim!r} (axis {axis0} of "
                        f"{first!r}, axis {axis} of {tensor!r}), which has one size: got {dim}={size} in "
                        f"{first!r} {tuple(shapes[first])} but {dim}={shapes[tensor][axis]} in {tensor!r} "
                        f"{tuple(shapes[tensor])}",
                        tensor=tensor,
                    )

    def _name_error(self, feeds: Mapping[str, Any]) -> None:
        given = set(feeds)
        want = set(self._checks)
        missing = [n for n in self._checks if n not in given]
        extra = sorted(str(n) for n in given - want)
        parts = []
        if missing:
            parts.append(f"missing input(s) {', '.join(map(repr, missing))}")
        if extra:
            parts.append(f"unknown input(s) {', '.join(map(repr, extra))}")
        raise InputSpecError(
            "; ".join(parts) + f". The model's inputs are: {', '.join(str(s) for s in self.inputs)}",
            tensor=(missing or extra or [""])[0] or None,
        )

    @staticmethod
    def _coerce(c: _InputCheck, value: Any) -> np.ndarray:
        """Python scalars and lists have no dtype of their own: take the model's, if lossless in kind
        and every value survives the cast (no wrapped int, no float turned to inf, no bool as a number)."""
        if isinstance(value, np.ndarray):  # an ndarray subclass
            return np.asarray(value)
        if isinstance(value, np.generic):
            return np.asarray(value)
        if hasattr(value, "__array__") or hasattr(value, "__dlpack__"):
            try:
                return np.asarray(value)
            except Exception as e:
                raise InputSpecError(
                    f"input {c.name!r}: cannot read {type(value).__name__} as a numpy array: {e}",
                    tensor=c.name,
                ) from e
        try:
            probe = np.asarray(value)
        except Exception as e:
            raise InputSpecError(
                f"input {c.name!r}: expected a numpy array, got {type(value).__name__} ({e})", tensor=c.name
            ) from e
        if probe.dtype.hasobject and not c.dtype.hasobject:
            raise InputSpecError(
                f"input {c.name!r}: expected a numpy array of {c.dtype}, got {type(value).__name__} that "
                "numpy reads as dtype object (ragged nesting, mixed types, or an int beyond 64 bits?)",
                tensor=c.name,
            )
        if c.dtype.hasobject:
            if probe.dtype.kind in "UST":
                return _as_strings(c, probe)
            if probe.dtype.hasobject:
                return _only_strings(c, probe)
            raise _dtype_error(c, probe.dtype)  # numbers or bools for a string tensor
        if probe.dtype.kind == "b" and c.dtype.kind != "b":
            raise InputSpecError(
                f"input {c.name!r}: expected {c.dtype} values, got Python bools; True/False are not read "
                f"as numbers: pass numbers, or np.asarray(value).astype(np.{c.dtype.name}) to mean it",
                tensor=c.name,
            )
        if not np.can_cast(probe.dtype, c.dtype, casting="same_kind") and not (
            probe.dtype.kind in "iu" and c.dtype.kind in "iu"  # ints to uint8: each value is checked below
        ):
            raise _dtype_error(c, probe.dtype)
        with np.errstate(over="ignore", invalid="ignore"):
            out = probe.astype(c.dtype)
        if probe.size:
            _check_values_kept(c, probe, out)
        return out

    def _pick_outputs(self, outputs: Sequence[str] | None) -> Sequence[str]:
        if outputs is None:
            return self._output_names
        if isinstance(outputs, str):
            outputs = (outputs,)
        if not outputs:
            raise InputSpecError(
                f"outputs={outputs!r} asks for no output; pass None (the default) for all of them, or name "
                f"some of: {', '.join(self._output_names)}"
            )
        for name in outputs:
            if name not in self._output_set:
                raise InputSpecError(
                    f"the model has no output {name!r}; its outputs are: {', '.join(self._output_names)}",
                    tensor=name,
                )
        return tuple(outputs)

    # -- running -----------------------------------------------------------------------------
    def run(self, feeds: Any, outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Run once. ``feeds``: a dict name -> array, or one array for a single-input model.

        Returns the requested outputs (all by default) as arrays the caller owns.
        """
        backend = self._backend
        if backend is None:
            raise EngineClosedError(f"engine for {self.path} is closed")
        checked = self._check_feeds(feeds)
        names = self._output_names if outputs is None else self._pick_outputs(outputs)
        stats = self._stats
        try:
            if ~stats.runs & _SAMPLE:  # the 8th, 16th, ... call: a racy read only skews which are timed
                result = backend.run(checked, names)
            else:
                t0 = _perf_ns()
                result = backend.run(checked, names)
                pos = stats.pos = (stats.pos + 1) & _RING_MASK
                stats.lat[pos] = _perf_ns() - t0
        except BaseException as e:
            stats.errors += 1
            if isinstance(e, InfercoreError) or not isinstance(e, Exception):
                raise
            # a backend that let its runtime's (or its own) exception through: one error tree
            raise BackendRuntimeError(f"{self._failing}: {e!r}") from e
        stats.runs += 1  # after the call, never a value read before it: concurrent runs all count
        return result

    __call__ = run

    def bind(
        self,
        inputs: Mapping[str, Sequence[int] | np.ndarray],
        outputs: Mapping[str, np.ndarray] | None = None,
    ) -> BoundIO:
        """Bind input buffers for fixed shapes: the zero-copy path.

        ``inputs`` maps every input name to a shape (infercore allocates an aligned buffer) or to
        a C-contiguous writable array of the right dtype (used in place). ``outputs`` may give
        arrays the runtime writes into. Write inputs with ``io.inputs[name][...] = x``, call
        ``io.run()``, read ``io.outputs[name]`` (valid until the next run).
        """
        backend = self._backend
        if backend is None:
            raise EngineClosedError(f"engine for {self.path} is closed")
        if not isinstance(inputs, Mapping):
            if self._single is None:
                raise InputSpecError("bind() takes a dict name -> shape or array for a multi-input model")
            inputs = {self._single: inputs}
        if set(inputs) != set(self._checks):
            self._name_error(inputs)
        arrays: dict[str, Any] = {}
        allocate = getattr(backend, "allocate", None)  # e.g. pinned host memory for TensorRT
        device_arrays = getattr(backend, "accepts_device_arrays", False)
        for c in self._check_list:
            value = inputs[c.name]
            if isinstance(value, np.ndarray):
                arrays[c.name] = check_bound_array("input", c.spec, value)
                continue
            if device_arrays and (hasattr(value, "__cuda_array_interface__") or hasattr(value, "__dlpack__")):
                arrays[c.name] = value  # device-resident: the backend checks and binds it in place
                continue
            shape = _bind_shape(c, value)
            if any(d < 0 for d in shape) or not c.spec.accepts(shape):
                raise _shape_error(c, shape)
            if c.dtype.hasobject:
                raise InputSpecError(
                    f"input {c.name!r} is a string tensor: strings have no fixed-size buffer, use run()",
                    tensor=c.name,
                )
            try:
                arrays[c.name] = allocate(shape, c.dtype) if allocate is not None else aligned_zeros(shape, c.dtype)
            except (MemoryError, ValueError) as e:  # numpy: "Unable to allocate", "array is too big"
                nbytes = math.prod(shape) * c.dtype.itemsize
                raise InputSpecError(
                    f"input {c.name!r}: cannot allocate a buffer of shape {shape} ({nbytes:,} bytes of "
                    f"{c.dtype}): {str(e) or type(e).__name__}",
                    tensor=c.name,
                ) from e
        if self._shared:
            shapes: dict[str, Any] = {name: getattr(a, "shape", None) for name, a in arrays.items()}
            if None not in shapes.values():  # a device array without .shape: its backend checks it
                self._check_shared_dims(shapes)
        out_arrays: dict[str, Any] = {}
        for name, arr in (outputs or {}).items():
            spec = next((s for s in self.outputs if s.name == name), None)
            if spec is None:
                raise InputSpecError(
                    f"the model has no output {name!r}; its outputs are: {', '.join(self._output_names)}",
                    tensor=name,
                )
            if device_arrays and not isinstance(arr, np.ndarray) and (
                hasattr(arr, "__cuda_array_interface__") or hasattr(arr, "__dlpack__")
            ):
                out_arrays[name] = arr
                continue
            out_arrays[name] = check_bound_array("output", spec, arr)
        try:
            binding = backend.bind(arrays, out_arrays)
        except InfercoreError:
            raise
        except Exception as e:
            raise BackendRuntimeError(f"{self.backend_name}: bind() failed: {e}") from e
        io = BoundIO(self, binding)
        self._bindings.add(io)
        return io

    # -- lifetime ----------------------------------------------------------------------------
    def close(self) -> None:
        """Release the runtime. Idempotent; bound I/O of this engine stops working."""
        with self._close_lock:
            backend, self._backend = self._backend, None
            if backend is None:
                return
            for io in list(self._bindings):
                io.close()
            try:
                backend.close()
            finally:
                for cleanup in self._on_close:
                    cleanup()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            if self._backend is not None:
                self.close()
        except Exception:
            pass


def _closed_run() -> None:
    raise EngineClosedError("this bound I/O is closed (or its engine is): bind again on an open engine")


class BoundIO:
    """Buffers bound for one set of shapes. ``run()`` moves no data through Python."""

    __slots__ = ("__weakref__", "_binding", "_engine_stats", "_failing", "_run", "inputs", "outputs")

    def __init__(self, engine: Engine, binding: Binding) -> None:
        self._binding: Binding | None = binding
        self._run = binding.run
        self._engine_stats = engine._stats
        self._failing = engine._failing
        self.inputs = BufferMap(binding.inputs, "input")
        self.outputs = BufferMap(binding.outputs, "output")

    def run(self) -> None:
        """Run on what is in ``inputs`` now; results land in ``outputs``."""
        stats = self._engine_stats
        run = self._run  # a local: CPython 3.11 cannot specialize a method call on a slot, ~10 ns a call
        try:
            if ~stats.bound_runs & _SAMPLE:
                run()
            else:
                t0 = _perf_ns()
                run()
                pos = stats.pos = (stats.pos + 1) & _RING_MASK
                stats.lat[pos] = _perf_ns() - t0
        except BaseException as e:
            stats.errors += 1
            if isinstance(e, InfercoreError) or not isinstance(e, Exception):
                raise
            raise BackendRuntimeError(f"{self._failing}: {e!r}") from e
        stats.bound_runs += 1

    __call__ = run

    @property
    def closed(self) -> bool:
        return self._binding is None

    def close(self) -> None:
        binding, self._binding = self._binding, None
        self._run = _closed_run
        if binding is not None:
            binding.close()

    def __enter__(self) -> BoundIO:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load(
    path: str | os.PathLike[str],
    backend: str | None = None,
    *,
    device: str | None = None,
    precision: str | None = None,
    threads: int | None = None,
    options: Mapping[str, Any] | None = None,
    verify: ModelVerifier | None = None,
) -> Engine:
    """Open a model file on a backend and return an ``Engine``.

    ``backend=None`` picks one from the file's suffix (``.onnx`` → ort, ``.xml`` → openvino,
    ``.tflite`` → litert, ``.engine``/``.plan`` → tensorrt), the highest-priority one installed.
    ``device=None`` is the backend's default (``cpu``; ``cuda:0`` for TensorRT).

    ``verify=infercore.signing.Verifier(public_key=...)`` loads only a model that matches its
    signature: its files are copied into a private directory, the copy is verified, and the backend
    opens the copy (``Engine.path``), which is removed when the engine closes. A model that does
    not verify raises ``SignatureError`` and nothing is opened.
    """
    from .plugins import open_backend, registry

    p = Path(path)
    if not p.exists():
        raise ModelLoadError(f"model file not found: {p}", path=str(p))
    if p.is_dir():
        raise ModelLoadError(f"{p} is a directory; pass the model file inside it", path=str(p))
    precision = normalize_precision(precision)
    check_int("threads", threads, optional=True)
    reg = registry.get(backend) if backend is not None else registry.pick(p)
    if device is None:
        device = getattr(reg.factory, "default_device", None) or "cpu"
    if verify is None:
        impl = open_backend(
            reg, p, device=device, precision=precision, threads=threads, options=dict(options or {})
        )
        return Engine(impl, path=p, backend_name=reg.name, precision=precision)
    if not callable(getattr(verify, "verified_copy", None)):
        raise ArgumentError(
            "verify", f"expected an infercore.signing.Verifier, got {type(verify).__name__} {verify!r}"
        )
    # what is verified is what is loaded: the backend opens the verified private copy, never `p`
    verified = verify.verified_copy(p)
    try:
        impl = open_backend(
            reg, verified.path, device=device, precision=precision, threads=threads, options=dict(options or {})
        )
        engine = Engine(impl, path=verified.path, backend_name=reg.name, precision=precision)
    except BaseException:
        verified.close()
        raise
    engine._on_close.append(verified.close)
    return engine
