"""TensorRT backend (TensorRT 10 and 11), on the name-based I/O API only.

Spec discovery walks ``num_io_tensors`` / ``get_tensor_name`` / ``get_tensor_mode`` /
``get_tensor_dtype`` / ``get_tensor_shape``; dynamic dimensions come back as ``None`` and their
bounds from optimization profile 0. ``open`` loads a ``.engine``/``.plan`` or builds one from ONNX
(cached on disk, keyed by model hash, TensorRT version, GPU and build options, with a JSON sidecar
checked before any deserialization). ``bind`` owns one execution context and one stream: inputs
and outputs live in pinned host arrays, one ``cudaMemcpyAsync`` per tensor each way around
``execute_async_v3``, optionally replayed as a CUDA graph. ``run`` keeps one such binding per
thread and shape, so each thread has its own execution context.
"""

from __future__ import annotations

import collections
import hashlib
import importlib.metadata
import json
import logging
import os
import re
import tempfile
import threading
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from .. import cuda
from ..errors import (
    BackendError,
    BackendRuntimeError,
    BackendUnavailableError,
    EngineClosedError,
    InputSpecError,
    ModelLoadError,
)
from ..optional import require
from ..specs import BackendInfo, TensorSpec, format_shape
from . import check_options

log = logging.getLogger(__name__)

EXTRA = "tensorrt"
SIDECAR_FORMAT = "infercore-tensorrt-engine/1"
_RUN_BINDINGS_PER_THREAD = 4  # shapes remembered by run() per thread

_OPTIONS = {
    "workspace": "int bytes: builder workspace limit (MemoryPoolType.WORKSPACE)",
    "profiles": "dict input -> (min, opt, max) shapes for the optimization profile",
    "dynamic_dims": "(min, opt, max) used for every dynamic dimension without a profile (default (1, 1, 64))",
    "cache_dir": "directory for built engines and timing caches (default ~/.cache/infercore/tensorrt)",
    "rebuild": "bool: build even if a cached engine matches",
    "timing_cache": "bool: reuse and update the on-disk timing cache (default True)",
    "builder_optimization_level": "int 0-5",
    "strongly_typed": "bool: build a strongly typed network (types from the ONNX, default for int8 on 11)",
    "calibration_data": "iterable of feeds dicts: INT8 calibration on TensorRT 10",
    "cuda_graph": "bool: replay bound runs as a CUDA graph (fixed shapes)",
}
_DEFAULT_DYNAMIC = (1, 1, 64)


def _trt() -> ModuleType:
    return require("tensorrt", EXTRA)


def _major(trt: ModuleType) -> int:
    return int(str(trt.__version__).split(".")[0])


# -- spec discovery ------------------------------------------------------------------------------
def _numpy_dtype(trt: ModuleType, dt: Any, name: str) -> np.dtype:
    table = {
        "FLOAT": "float32",
        "HALF": "float16",
        "INT8": "int8",
        "INT32": "int32",
        "INT64": "int64",
        "BOOL": "bool",
        "UINT8": "uint8",
    }
    key = getattr(dt, "name", str(dt))
    if key == "BF16":
        try:
            import ml_dtypes
        except ImportError as e:
            raise BackendUnavailableError(
                f"tensor {name!r} is bfloat16, which numpy reads through ml_dtypes: pip install ml_dtypes"
            ) from e
        return np.dtype(ml_dtypes.bfloat16)
    if key not in table:
        raise ModelLoadError(
            f"tensor {name!r} has TensorRT type {key}, which has no numpy equivalent for I/O"
        )
    return np.dtype(table[key])


@dataclass(frozen=True)
class _Profile:
    """Optimization profile 0's bounds for one input: ``min``/``opt``/``max`` shapes."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def contains(self, shape: Sequence[int]) -> bool:
        return all(lo <= s <= hi for lo, s, hi in zip(self.min, shape, self.max, strict=True))

    def __str__(self) -> str:
        return f"min {self.min}, opt {self.opt}, max {self.max}"


def _discover(
    trt: ModuleType, engine: Any
) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...], dict[str, _Profile]]:
    inputs, outputs, profiles = [], [], {}
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        mode = engine.get_tensor_mode(name)
        dims = tuple(int(d) for d in engine.get_tensor_shape(name))
        spec = TensorSpec(name, _numpy_dtype(trt, engine.get_tensor_dtype(name), name), dims)
        if mode == trt.TensorIOMode.INPUT:
            inputs.append(spec)
            if not spec.is_static:
                lo, opt, hi = (tuple(int(d) for d in s) for s in engine.get_tensor_profile_shape(name, 0))
                profiles[name] = _Profile(lo, opt, hi)
        elif mode == trt.TensorIOMode.OUTPUT:
            outputs.append(spec)
    return tuple(inputs), tuple(outputs), profiles


# -- logger ----------------------------------------------------------------------------------------
def _make_logger(trt: ModuleType) -> Any:
    """A TensorRT logger that forwards to ``logging`` and keeps the recent errors for our messages."""

    class _Logger(trt.ILogger):  # type: ignore[name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: collections.deque[str] = collections.deque(maxlen=16)

        def log(self, severity: Any, msg: str) -> None:
            if severity in (trt.ILogger.Severity.ERROR, trt.ILogger.Severity.INTERNAL_ERROR):
                self.errors.append(msg)
                log.error("tensorrt: %s", msg)
            elif severity == trt.ILogger.Severity.WARNING:
                log.warning("tensorrt: %s", msg)
            else:
                log.debug("tensorrt: %s", msg)

        def take(self) -> str:
            text = "; ".join(self.errors)
            self.errors.clear()
            return text

    return _Logger()


# -- device ------------------------------------------------------------------------------------------
def _device_index(device: str) -> int:
    d = device.strip().lower()
    m = re.fullmatch(r"(cuda|gpu)(?::(\d+))?", d)
    if m:
        return int(m.group(2) or 0)
    if d in ("cpu", "cpu:0"):
        raise BackendError(
            "tensorrt runs on NVIDIA GPUs only: pass device='cuda' (or 'cuda:N'); "
            "for the CPU use backend='ort' or 'openvino'"
        )
    raise BackendError(f"tensorrt: unknown device {device!r}; use 'cuda' or 'cuda:N'")


# -- engine cache ---------------------------------------------------------------------------------------
def _default_cache_dir() -> Path:
    base = os.environ.get("INFERCORE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "infercore")
    return Path(base) / "tensorrt"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def _sidecar_path(engine_path: Path) -> Path:
    return engine_path.with_name(engine_path.name + ".json")


def _environment(trt: ModuleType, gpu: cuda.DeviceInfo) -> dict[str, str]:
    return {
        "tensorrt": str(trt.__version__),
        "gpu": gpu.name,
        "compute_capability": f"{gpu.compute_capability[0]}.{gpu.compute_capability[1]}",
    }


def _check_sidecar(path: Path, meta: Mapping[str, Any], env: Mapping[str, str]) -> list[str]:
    """What about a stored engine does not match this machine (empty: it matches)."""
    if meta.get("format") != SIDECAR_FORMAT:
        return [f"sidecar format {meta.get('format')!r} is not {SIDECAR_FORMAT!r}"]
    problems = [
        f"{key} {meta.get(key)!r} (built) vs {value!r} (here)"
        for key, value in env.items()
        if meta.get(key) != value
    ]
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != meta.get("engine_sha256"):
        problems.append(
            "the engine file's sha256 differs from the one recorded when it was built (stale or edited)"
        )
    return problems


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


# -- factory --------------------------------------------------------------------------------------------
class TensorRTFactory:
    """Registered as ``tensorrt``; opens ``.engine``/``.plan`` files and builds from ``.onnx``."""

    extra = EXTRA

    def probe(self) -> BackendInfo:
        try:
            trt = _trt()
            cuda.runtime()
        except BackendUnavailableError as e:
            return BackendInfo("tensorrt", False, reason=str(e), extra=EXTRA)
        try:
            gpu = cuda.device_info(0)
        except BackendUnavailableError as e:
            return BackendInfo("tensorrt", False, reason=str(e), version=str(trt.__version__), extra=EXTRA)
        try:
            count = cuda.runtime().cudaGetDeviceCount()[1]
        except Exception:
            count = 1
        return BackendInfo(
            "tensorrt",
            True,
            version=_dist_version(trt),
            devices=tuple(f"cuda:{i}" for i in range(count)),
            extra=EXTRA,
            details={"gpu": f"{gpu.name} ({gpu.sm})"},
        )

    def open(
        self,
        path: Path,
        *,
        device: str,
        precision: str | None,
        threads: int | None,
        options: Mapping[str, Any],
    ) -> TensorRTBackend:
        _check_options(options)
        index = _device_index(device)
        trt = _trt()
        gpu = cuda.device_info(index)
        with cuda.device_scope(index):  # build and deserialize on that GPU; the thread's own comes back
            return self._open(trt, gpu, path, precision, options)

    def _open(
        self,
        trt: ModuleType,
        gpu: cuda.DeviceInfo,
        path: Path,
        precision: str | None,
        options: Mapping[str, Any],
    ) -> TensorRTBackend:
        logger = _make_logger(trt)
        suffix = path.suffix.lower()
        if suffix in (".engine", ".plan", ".trt"):
            if precision is not None:
                raise BackendError(
                    f"tensorrt: {path.name} is a built engine and runs in the precision it was built with; "
                    "precision= applies when building from an .onnx file"
                )
            blob = _load_engine_file(path, trt, gpu)
        elif suffix == ".onnx":
            blob = _EngineBuilder(trt, logger, gpu, path, precision, options).cached_or_build()
        else:
            raise ModelLoadError(
                f"tensorrt opens .engine/.plan or .onnx files, not {path.name}", path=str(path)
            )
        runtime = trt.Runtime(logger)
        engine = runtime.deserialize_cuda_engine(blob)
        if engine is None:
            raise ModelLoadError(
                f"TensorRT {trt.__version__} could not deserialize {path.name}: {logger.take() or 'no message'}",
                path=str(path),
            )
        return TensorRTBackend(
            trt, runtime, engine, logger, gpu, path, bool(options.get("cuda_graph", False))
        )


def _dist_version(trt: ModuleType) -> str:
    for dist in ("tensorrt", "tensorrt-cu12", "tensorrt-cu13"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return str(trt.__version__)


def _check_options(options: Mapping[str, Any]) -> None:
    check_options("tensorrt", options, _OPTIONS)


def _load_engine_file(path: Path, trt: ModuleType, gpu: cuda.DeviceInfo) -> bytes:
    """Read a built engine; with a sidecar, refuse it unless it was built here, for this TensorRT."""
    sidecar = _sidecar_path(path)
    if sidecar.exists():
        try:
            meta = json.loads(sidecar.read_text())
        except (OSError, ValueError) as e:
            raise ModelLoadError(
                f"{sidecar} is not valid JSON ({e}); delete it or rebuild the engine", path=str(path)
            ) from e
        problems = _check_sidecar(path, meta, _environment(trt, gpu))
        if problems:
            source = meta.get("model") or "its ONNX model"
            raise ModelLoadError(
                f"{path.name} was built for another setup and is refused (TensorRT engines are specific to one "
                f"TensorRT version and GPU): {'; '.join(problems)}. Rebuild it here from {source} "
                "with ic.load('model.onnx', backend='tensorrt', device='cuda')",
                path=str(path),
            )
    else:
        log.debug("tensorrt: %s has no infercore sidecar; TensorRT's own version check applies", path)
    return path.read_bytes()


class _EngineBuilder:
    """Builds a serialized engine from ONNX, through the on-disk engine and timing caches."""

    def __init__(
        self,
        trt: ModuleType,
        logger: Any,
        gpu: cuda.DeviceInfo,
        path: Path,
        precision: str | None,
        options: Mapping[str, Any],
    ) -> None:
        self.trt, self.logger, self.gpu, self.path = trt, logger, gpu, path
        self.precision = precision
        self.options = options
        self.major = _major(trt)
        self.cache_dir = Path(options.get("cache_dir") or _default_cache_dir())
        self.model_bytes = path.read_bytes()
        self.calibration = self._calibration_feeds()
        # TensorRT 11 has no precision builder flags: fp16/bf16/int8 come from the ONNX's own types
        typed_default = self.major >= 11 and precision in ("fp16", "bf16", "int8")
        self.strongly_typed = bool(options.get("strongly_typed", typed_default))
        self.external_data = _external_data_hashes(path, self.model_bytes)
        self._profile_shapes: dict[str, tuple[tuple[int, ...], ...]] = {}
        self._check_precision()

    # cache key and lookup
    def build_options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {
            "precision": self.precision,
            "workspace": self.options.get("workspace"),
            "profiles": {
                k: [list(map(int, s)) for s in v]
                for k, v in sorted(dict(self.options.get("profiles") or {}).items())
            },
            "dynamic_dims": list(self.options.get("dynamic_dims") or _DEFAULT_DYNAMIC),
            "builder_optimization_level": self.options.get("builder_optimization_level"),
            "strongly_typed": self.strongly_typed,
        }
        if self.calibration is not None:
            h = hashlib.sha256()
            for feeds in self.calibration:
                for name in sorted(feeds):
                    h.update(name.encode())
                    h.update(np.ascontiguousarray(feeds[name]).tobytes())
            opts["calibration_sha256"] = h.hexdigest()
        return opts

    def key(self) -> tuple[str, dict[str, Any]]:
        env = _environment(self.trt, self.gpu)
        meta: dict[str, Any] = {
            "format": SIDECAR_FORMAT,
            **env,
            "model": str(self.path),
            "model_sha256": hashlib.sha256(self.model_bytes).hexdigest(),
            "external_data": self.external_data,
            "build_options": self.build_options(),
        }
        keyed = {k: v for k, v in meta.items() if k != "model"}
        digest = hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:24]
        return digest, meta

    def cached_or_build(self) -> bytes:
        digest, meta = self.key()
        engine_path = self.cache_dir / f"{_slug(self.path.stem)}-{digest}.engine"
        sidecar = _sidecar_path(engine_path)
        if not self.options.get("rebuild") and engine_path.exists() and sidecar.exists():
            try:
                stored = json.loads(sidecar.read_text())
                problems = _check_sidecar(engine_path, stored, _environment(self.trt, self.gpu))
                if stored.get("model_sha256") != meta["model_sha256"]:
                    problems.append("the model changed")
                if stored.get("external_data") != meta["external_data"]:
                    problems.append("the model's external data files changed")
                if stored.get("build_options") != meta["build_options"]:
                    problems.append("the build options changed")
            except (OSError, ValueError) as e:
                problems = [f"unreadable sidecar ({e})"]
            if not problems:
                log.debug("tensorrt: using cached engine %s", engine_path)
                return engine_path.read_bytes()
            log.warning(
                "tensorrt: cached engine %s is stale (%s); rebuilding", engine_path, "; ".join(problems)
            )
        blob = self.build()
        _write_atomic(engine_path, blob)
        meta["engine_sha256"] = hashlib.sha256(blob).hexdigest()
        _write_atomic(sidecar, json.dumps(meta, indent=1, sort_keys=True).encode())
        return blob

    # precision and calibration
    def _calibration_feeds(self) -> list[dict[str, np.ndarray]] | None:
        data = self.options.get("calibration_data")
        if data is None:
            return None
        if isinstance(data, Mapping):
            data = [data]
        feeds = [
            {str(k): np.ascontiguousarray(v) if np.ndim(v) else np.asarray(v) for k, v in dict(f).items()}
            for f in data
        ]  # a 0-d input stays 0-d (np.ascontiguousarray makes it (1,))
        if not feeds:
            raise BackendError("tensorrt: calibration_data is empty; give at least one feeds dict")
        return feeds

    def _check_precision(self) -> None:
        trt, p = self.trt, self.precision
        flags = trt.BuilderFlag.__members__
        if p in ("fp16", "bf16"):
            convert = (
                "ic.convert_fp16(model) writes one" if p == "fp16" else "export it with bfloat16 weights"
            )
            if self.strongly_typed:
                typed = _onnx_has_type(self.path, p)
                if typed is False:
                    why = (
                        f"TensorRT {trt.__version__} has no {p.upper()} builder flag, so types come from the ONNX"
                        if p.upper() not in flags
                        else "a strongly typed network (strongly_typed=True) takes every type from the ONNX"
                    )
                    hint = (
                        f"; or drop strongly_typed to let TensorRT {trt.__version__} pick {p} kernels "
                        f"(BuilderFlag.{p.upper()})"
                        if p.upper() in flags
                        else ""
                    )
                    raise BackendError(
                        f"tensorrt: precision={p!r}: {why}, and {self.path.name} has no {p} tensors, so the "
                        f"engine would be float32. Load an ONNX model in {p} ({convert}){hint}"
                    )
                if typed is None:
                    log.warning(
                        "tensorrt: cannot check that %s holds %s tensors (pip install onnx); a strongly typed "
                        "build keeps the ONNX's own types",
                        self.path.name,
                        p,
                    )
            elif p.upper() not in flags:
                raise BackendError(
                    f"tensorrt: TensorRT {trt.__version__} has no {p.upper()} builder flag (TensorRT 11 removed "
                    f"implicit precision), so strongly_typed=False cannot give {p}: load an ONNX model in {p} "
                    f"({convert}) and leave strongly_typed at its default"
                )
        if p == "int8":
            if self.major >= 11 or self.strongly_typed:
                if self.calibration is not None:
                    raise BackendError(
                        f"tensorrt: TensorRT {trt.__version__} has no INT8 calibrator; calibrate first with "
                        "ic.calibrate(model, data) and load the Q/DQ ONNX it writes"
                    )
                if b"QuantizeLinear" not in self.model_bytes:
                    raise BackendError(
                        f"tensorrt: precision='int8' on TensorRT {trt.__version__} needs an ONNX model with "
                        f"QuantizeLinear/DequantizeLinear nodes, and {self.path.name} has none: make one with "
                        "ic.calibrate(model, data) and load that"
                    )
            elif self.calibration is None and b"QuantizeLinear" not in self.model_bytes:
                raise BackendError(
                    "tensorrt: precision='int8' needs calibration data on TensorRT 10: pass "
                    "options={'calibration_data': [feeds, ...]} or load a Q/DQ ONNX from ic.calibrate()"
                )

    # the build itself
    def build(self) -> bytes:
        trt, logger = self.trt, self.logger
        builder = trt.Builder(logger)
        flags = 0
        if self.strongly_typed:
            flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(self.model_bytes, str(self.path)):
            raise ModelLoadError(_parser_errors(parser, self.path), path=str(self.path))
        config = builder.create_builder_config()
        workspace = self.options.get("workspace")
        if workspace is not None:
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace))
        level = self.options.get("builder_optimization_level")
        if level is not None:
            config.builder_optimization_level = int(level)
        if self.precision in ("fp16", "bf16") and not self.strongly_typed:
            config.set_flag(getattr(trt.BuilderFlag, self.precision.upper()))
        profile = self._profile(builder, network)
        if profile is not None:
            config.add_optimization_profile(profile)
        calibrator = None
        if self.precision == "int8" and not self.strongly_typed and self.calibration is not None:
            config.set_flag(trt.BuilderFlag.INT8)
            calibrator = _make_calibrator(trt, self.calibration, network, self._profile_shapes)
            config.int8_calibrator = calibrator
            if profile is not None:
                config.set_calibration_profile(profile)
        timing_path = self._timing_cache_path()
        if timing_path is not None:
            data = timing_path.read_bytes() if timing_path.exists() else b""
            cache = config.create_timing_cache(data)
            if cache is None or not config.set_timing_cache(cache, False):
                log.warning("tensorrt: timing cache %s refused; starting an empty one", timing_path)
                config.set_timing_cache(config.create_timing_cache(b""), False)
        serialized = builder.build_serialized_network(network, config)
        if calibrator is not None and calibrator.error is not None:
            # TensorRT prints and swallows an exception from get_batch (pyInt8.cpp), ending calibration
            # early: an engine calibrated on fewer batches than given is refused, not returned
            index, error = calibrator.error
            raise ModelLoadError(
                f"tensorrt: INT8 calibration failed on calibration_data[{index}] of {len(self.calibration or ())}: "
                f"{error}",
                path=str(self.path),
            ) from error
        if serialized is None:
            raise ModelLoadError(
                f"TensorRT {trt.__version__} failed to build {self.path.name}: {logger.take() or 'no message'}",
                path=str(self.path),
            )
        if timing_path is not None:
            _write_atomic(timing_path, bytes(memoryview(config.get_timing_cache().serialize())))
        return bytes(memoryview(serialized))

    def _timing_cache_path(self) -> Path | None:
        if not self.options.get("timing_cache", True):
            return None
        gpu = self.gpu
        return self.cache_dir / f"timing-{self.trt.__version__}-{_slug(gpu.name)}-{gpu.sm}.cache"

    def _profile(self, builder: Any, network: Any) -> Any:
        given = {
            k: tuple(tuple(int(d) for d in s) for s in v)
            for k, v in dict(self.options.get("profiles") or {}).items()
        }
        lo, opt, hi = (int(d) for d in (self.options.get("dynamic_dims") or _DEFAULT_DYNAMIC))
        names = []
        profile = None
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            names.append(tensor.name)
            dims = tuple(int(d) for d in tensor.shape)
            if tensor.name in given:
                shapes = given[tensor.name]
                if len(shapes) != 3 or any(len(s) != len(dims) for s in shapes):
                    raise BackendError(
                        f"tensorrt: profiles[{tensor.name!r}] must be (min, opt, max) shapes of rank {len(dims)}, "
                        f"got {shapes}"
                    )
            elif any(d < 0 for d in dims):
                shapes = tuple(tuple(v if d < 0 else d for d in dims) for v in (lo, opt, hi))
            else:
                continue
            if profile is None:
                profile = builder.create_optimization_profile()
            profile.set_shape(tensor.name, *shapes)
            self._profile_shapes[tensor.name] = shapes
        unknown = [k for k in given if k not in names]
        if unknown:
            raise BackendError(f"tensorrt: profiles name unknown input(s) {unknown}; inputs are {names}")
        return profile


def _parser_errors(parser: Any, path: Path) -> str:
    lines = []
    for i in range(parser.num_errors):
        e = parser.get_error(i)
        where = f"node {e.node()} ({e.node_name()}, {e.node_operator()})" if e.node() >= 0 else "model"
        lines.append(f"{where}: {e.desc()} [{getattr(e.code(), 'name', e.code())}]")
    detail = "\n  ".join(lines) or "no message"
    return f"TensorRT's ONNX parser rejected {path.name}:\n  {detail}"


def _make_calibrator(
    trt: ModuleType,
    feeds: list[dict[str, np.ndarray]],
    network: Any,
    profile: Mapping[str, tuple[tuple[int, ...], ...]],
) -> Any:
    """A TensorRT 10 entropy calibrator fed batch by batch from device buffers.

    TensorRT reads each batch at the calibration profile's ``opt`` shape in the network's input
    type, so every feed is checked (and safely cast) first. An exception inside ``get_batch`` is
    kept in ``error`` as ``(index, exception)``: TensorRT would swallow it.
    """
    tensors = [network.get_input(i) for i in range(network.num_inputs)]
    want = {
        t.name: (
            _numpy_dtype(trt, t.dtype, t.name),
            tuple(profile[t.name][1]) if t.name in profile else tuple(int(d) for d in t.shape),
        )
        for t in tensors
    }
    checked = [_check_calibration_feed(i, f, want) for i, f in enumerate(feeds)]

    class _Calibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[name-defined]
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.batches = iter(enumerate(checked))
            self.buffers: dict[str, cuda.DeviceBuffer] = {}
            self.cache: bytes | None = None
            self.error: tuple[int, BaseException] | None = None

        def get_batch_size(self) -> int:
            return 1  # explicit-batch networks: the batch is in the shapes

        def get_batch(self, names: list[str]) -> list[int] | None:
            index, batch = next(self.batches, (len(checked), None))
            if batch is None or self.error is not None:
                return None
            try:
                ptrs = []
                for name in names:
                    host = batch[name]
                    buf = self.buffers.get(name)
                    if buf is None or buf.nbytes < host.nbytes:
                        buf = self.buffers[name] = cuda.DeviceBuffer(host.nbytes)
                    rt = cuda.runtime()
                    kind = rt.cudaMemcpyKind.cudaMemcpyHostToDevice
                    cuda._check(rt, rt.cudaMemcpy(buf.ptr, host.ctypes.data, host.nbytes, kind), "cudaMemcpy")
                    ptrs.append(buf.ptr)
                return ptrs
            except BaseException as e:
                self.error = (index, e)
                return None

        def read_calibration_cache(self) -> bytes | None:
            return self.cache

        def write_calibration_cache(self, cache: Any) -> None:
            self.cache = bytes(memoryview(cache))

    return _Calibrator()


def _check_calibration_feed(
    index: int, feeds: Mapping[str, np.ndarray], want: Mapping[str, tuple[np.dtype, tuple[int, ...]]]
) -> dict[str, np.ndarray]:
    """One calibration batch as TensorRT will read it: every input, its dtype, the profile's opt shape."""
    missing = [n for n in want if n not in feeds]
    extra = [n for n in feeds if n not in want]
    if missing or extra:
        raise InputSpecError(
            f"calibration_data[{index}] has inputs {sorted(feeds)}; the network's inputs are {list(want)}"
            f"{f' (missing {missing})' if missing else ''}{f' (unknown {extra})' if extra else ''}",
            tensor=(missing or extra)[0],
        )
    out = {}
    for name, (dtype, shape) in want.items():
        a = np.asarray(feeds[name])
        if a.shape != shape:
            raise InputSpecError(
                f"calibration_data[{index}][{name!r}] has shape {a.shape}; TensorRT 10 calibrates at the "
                f"calibration profile's opt shape {shape}: give batches of exactly that shape, or build with "
                f"options={{'profiles': {{{name!r}: (min, opt, max)}}}} whose opt is your batch shape",
                tensor=name,
            )
        if a.dtype != dtype:
            if not (np.can_cast(a.dtype, dtype, "safe") or (a.dtype.kind == dtype.kind == "f")):
                raise InputSpecError(
                    f"calibration_data[{index}][{name!r}] is {a.dtype}; the network input is {dtype}, and "
                    f"{a.dtype} does not convert to it safely: pass {dtype} arrays",
                    tensor=name,
                )
            a = a.astype(dtype)
        out[name] = np.ascontiguousarray(a) if a.ndim else a  # keeps a 0-d input 0-d
    return out


def _onnx_proto(path: Path) -> Any | None:
    """The ONNX model without its external data, or None when the onnx package is missing."""
    try:
        import onnx
    except ImportError:
        return None
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as e:  # TensorRT's parser reports a broken model with its own words
        log.debug("tensorrt: onnx could not read %s: %s", path, e)
        return None


def _graph_tensors(graph: Any) -> Iterator[Any]:
    """Every TensorProto of a graph: initializers, Constant/attribute tensors, subgraphs'."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _graph_tensors(attr.g)
            for g in attr.graphs:
                yield from _graph_tensors(g)


def _external_data_hashes(path: Path, model_bytes: bytes) -> dict[str, str]:
    """sha256 of every external-data file the ONNX model names (they hold its weights)."""
    proto = _onnx_proto(path)
    if proto is not None:
        locations = {
            e.value for t in _graph_tensors(proto.graph) for e in t.external_data if e.key == "location"
        }
    elif b"location" in model_bytes:  # no onnx package: the files beside it whose names the model holds
        locations = {f.name for f in path.parent.iterdir() if f.is_file() and f.name.encode() in model_bytes}
        locations.discard(path.name)
    else:
        locations = set()
    out = {}
    for loc in sorted(locations):
        f = path.parent / loc
        h = hashlib.sha256()
        try:
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
            out[loc] = h.hexdigest()
        except OSError:
            out[loc] = "missing"
    return out


_ONNX_TYPES = {"fp16": 10, "bf16": 16}  # TensorProto.FLOAT16, TensorProto.BFLOAT16


def _onnx_has_type(path: Path, precision: str) -> bool | None:
    """Whether the ONNX model holds any tensor (weight, I/O, Cast target) of ``precision``; None: unknown."""
    proto = _onnx_proto(path)
    if proto is None:
        return None
    code = _ONNX_TYPES[precision]
    g = proto.graph
    if any(t.data_type == code for t in _graph_tensors(g)):
        return True
    if any(v.type.tensor_type.elem_type == code for v in (*g.input, *g.output, *g.value_info)):
        return True
    return any(
        a.name == "to" and a.i == code
        for n in g.node
        if n.op_type in ("Cast", "CastLike")
        for a in n.attribute
    )


# -- backend -----------------------------------------------------------------------------------------------
class TensorRTBackend:
    """One deserialized engine on one GPU.

    Memory model: every binding owns one execution context, and TensorRT gives each context its own
    activation memory (``createExecutionContext``'s default ``kSTATIC`` strategy), plus device
    buffers and pinned host arrays for its I/O. ``run()`` keeps, per thread, the bindings of the 4
    most recent input shapes: older ones are closed when a fifth shape arrives, and the bindings of
    threads that have exited are closed when any thread next needs a new one. ``close()`` waits for
    runs in flight and then releases everything.
    """

    name = "tensorrt"
    accepts_device_arrays = True  # Engine.bind passes torch/cupy/DLPack arrays through, bound in place

    def __init__(
        self,
        trt: ModuleType,
        runtime: Any,
        engine: Any,
        logger: Any,
        gpu: cuda.DeviceInfo,
        path: Path,
        cuda_graph: bool,
    ) -> None:
        self._trt = trt
        self._runtime = runtime
        self._engine: Any = engine
        self._logger = logger
        self.gpu = gpu
        self.path = path
        self.device = f"cuda:{gpu.index}"
        self._cuda_graph = cuda_graph
        self.inputs, self.outputs, self.profiles = _discover(trt, engine)
        self._lock = threading.Lock()  # guards _closed, _bindings and _per_thread
        self._closed = False
        self._bindings: weakref.WeakSet[TensorRTBinding] = weakref.WeakSet()  # every live binding
        self._per_thread: dict[int, collections.OrderedDict[tuple[Any, ...], TensorRTBinding]] = {}
        self.metadata = {
            "tensorrt": str(trt.__version__),
            "gpu": f"{gpu.name} ({gpu.sm})",
            "cuda_graph": "on" if cuda_graph else "off",
            **{f"profile:{k}": str(v) for k, v in self.profiles.items()},
        }

    def check_profile(self, shapes: Mapping[str, Sequence[int]]) -> None:
        """Raise ``InputSpecError`` for a shape outside optimization profile 0 (the Engine knows only None)."""
        for name, profile in self.profiles.items():
            shape = tuple(int(d) for d in shapes[name])
            if not profile.contains(shape):
                spec = next(s for s in self.inputs if s.name == name)
                bad = [
                    f"dimension {i} is {s}, the profile allows {lo}..{hi}"
                    for i, (lo, s, hi) in enumerate(zip(profile.min, shape, profile.max, strict=True))
                    if not lo <= s <= hi
                ]
                raise InputSpecError(
                    f"input {name!r}: shape {shape} is outside the engine's optimization profile for "
                    f"{format_shape(spec.shape, spec.dim_names)} ({profile}): {'; '.join(bad)}. Rebuild with "
                    "options={'profiles': {name: (min, opt, max)}} to cover it",
                    tensor=name,
                )

    def _closed_error(self) -> EngineClosedError:
        return EngineClosedError(f"tensorrt: the engine for {self.path.name} is closed")

    # -- run ---------------------------------------------------------------------------------------------
    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        if self._closed:
            raise self._closed_error()
        key = tuple(feeds[s.name].shape for s in self.inputs)
        cache = self._per_thread.get(threading.get_ident())
        binding = cache.get(key) if cache is not None else None
        if binding is None:
            binding = self._new_run_binding(key, feeds)
        elif cache is not None:
            cache.move_to_end(key)
        return binding.run_feeds(feeds, outputs)

    def _new_run_binding(self, key: tuple[Any, ...], feeds: Mapping[str, np.ndarray]) -> TensorRTBinding:
        self.check_profile({n: a.shape for n, a in feeds.items()})
        threading.current_thread()  # registers a thread started outside threading, so it counts as alive
        me = threading.get_ident()
        with self._lock:
            if self._closed:
                raise self._closed_error()
            alive = {t.ident for t in threading.enumerate()}
            stale = [
                b
                for ident in [i for i in self._per_thread if i not in alive]
                for b in self._per_thread.pop(ident).values()
            ]
            binding = TensorRTBinding(self, {n: a.shape for n, a in feeds.items()}, {}, cuda_graph=False)
            self._bindings.add(binding)
            cache = self._per_thread.setdefault(me, collections.OrderedDict())
            cache[key] = binding
            while len(cache) > _RUN_BINDINGS_PER_THREAD:
                stale.append(cache.popitem(last=False)[1])
            for b in stale:
                self._bindings.discard(b)
        for b in stale:  # outside the lock; none is running: their threads are gone, or it is this one
            b.close()
        return binding

    # -- bind --------------------------------------------------------------------------------------------
    def allocate(self, shape: Sequence[int], dtype: np.dtype) -> np.ndarray:
        """A pinned host array for a bound input (what ``io.inputs`` should be)."""
        return cuda.pinned_empty(shape, dtype)

    def bind(self, inputs: dict[str, Any], outputs: dict[str, Any]) -> TensorRTBinding:
        if self._closed:
            raise self._closed_error()
        inputs = {n: cuda.as_device_array(v, n) if cuda.is_device_array(v) else v for n, v in inputs.items()}
        outputs = {
            n: cuda.as_device_array(v, n) if cuda.is_device_array(v) else v for n, v in outputs.items()
        }
        self.check_profile({n: v.shape if hasattr(v, "shape") else v for n, v in inputs.items()})
        with self._lock:
            if self._closed:
                raise self._closed_error()
            binding = TensorRTBinding(self, inputs, outputs, cuda_graph=self._cuda_graph)
            self._bindings.add(binding)
        return binding

    def close(self) -> None:
        """Release every binding (each waits for its run in flight), then the engine; idempotent.

        A binding that fails to close (a sticky CUDA error) does not stop the others or the engine
        from being released; the first such error is raised at the end.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            bindings = list(self._bindings)
            self._bindings = weakref.WeakSet()
            self._per_thread.clear()
        errors: list[BaseException] = []
        try:
            for b in bindings:
                try:
                    b.close()
                except Exception as e:
                    errors.append(e)
        finally:
            self._engine = None  # after every context: TensorRT destroys contexts before their engine
            self._runtime = None
        for other in errors[1:]:
            log.error("tensorrt: another binding also failed to close: %s", other)
        if errors:
            raise errors[0]


class _Tensor:
    """One bound tensor: the array the user sees, and where it lives on the device."""

    __slots__ = ("device", "host", "nbytes", "owned", "ptr")

    def __init__(self, host: np.ndarray | None, device: cuda.DeviceBuffer | cuda.DeviceArray) -> None:
        self.host = host  # None: the tensor is a caller's device array, never copied
        self.device = device
        self.ptr = int(device.ptr)
        self.nbytes = int(device.nbytes)


_ALIGNMENT = 256  # NvInferRuntime.h, setTensorAddress: "The pointer must have at least 256-byte alignment."


class TensorRTBinding:
    """One execution context and one stream bound to fixed shapes.

    Host-side tensors are the arrays bound (the caller's, used in place), page-locked with
    ``cudaHostRegister`` unless already pinned; outputs not given are pinned arrays allocated here.
    An array CUDA cannot lock (its page is already locked, e.g. by a small neighbouring array) stays
    pageable: its copies are synchronous but still correct, a warning names it, and ``cuda_graph``
    is then skipped for the binding (``self.cuda_graph`` says whether a graph is replayed). A device
    array given by the caller is used by pointer with no copy; every ``run`` first orders the
    binding's stream after the array's producer. ``run`` queues one H2D copy per host input,
    ``execute_async_v3``, one D2H copy per host output, and waits for the stream. ``close`` waits
    for a run in flight (one lock per binding) and makes later runs raise ``EngineClosedError``.
    """

    def __init__(
        self,
        backend: TensorRTBackend,
        inputs: Mapping[str, Any],
        outputs: Mapping[str, Any],
        *,
        cuda_graph: bool,
    ) -> None:
        self._backend = backend
        self._index = backend.gpu.index
        self._lock = threading.Lock()
        self._stream: cuda.Stream | None = None
        self._event: cuda.Event | None = None
        self._context: Any = None
        self._graph: cuda.GraphExec | None = None
        self._tensors: list[_Tensor] = []
        self._registered: list[np.ndarray] = []
        self._h2d: list[tuple[int, np.ndarray]] = []
        self._d2h: list[tuple[np.ndarray, int]] = []
        self._device_arrays: list[cuda.DeviceArray] = []
        self.inputs: dict[str, Any] = {}
        self.outputs: dict[str, Any] = {}
        self.cuda_graph = False
        self.pageable: tuple[str, ...] = ()
        try:
            with cuda.device_scope(self._index):
                self._setup(inputs, outputs, cuda_graph)
        except BaseException:
            try:
                self._release()  # a failed bind leaves nothing locked or allocated behind
            except Exception as e:
                log.debug("tensorrt: cleanup after a failed bind also failed: %s", e)
            raise

    def _setup(self, inputs: Mapping[str, Any], outputs: Mapping[str, Any], cuda_graph: bool) -> None:
        backend = self._backend
        self._stream = cuda.Stream()
        self._context = backend._engine.create_execution_context()
        if self._context is None:
            raise BackendRuntimeError(
                f"tensorrt: could not create an execution context: {backend._logger.take() or 'out of GPU memory?'}"
            )
        ctx = self._context
        for spec in backend.inputs:
            value = inputs[spec.name]
            shape = tuple(int(d) for d in (value.shape if hasattr(value, "shape") else value))
            if not ctx.set_input_shape(spec.name, shape):
                raise InputSpecError(
                    f"input {spec.name!r}: TensorRT refused shape {shape}: {backend._logger.take()}",
                    tensor=spec.name,
                )
            t = self._attach(spec, value, shape, is_input=True)
            if t.host is not None:
                self._h2d.append((t.ptr, t.host))
                self.inputs[spec.name] = t.host
            else:
                self.inputs[spec.name] = _user_object(value)
        for spec in backend.outputs:
            shape = tuple(int(d) for d in ctx.get_tensor_shape(spec.name))
            if any(d < 0 for d in shape):
                raise BackendError(
                    f"tensorrt: output {spec.name!r} has a data-dependent shape {shape}; such outputs need an "
                    "output allocator, which infercore does not support yet"
                )
            value = outputs.get(spec.name)
            t = self._attach(spec, value if value is not None else shape, shape, is_input=False)
            if t.host is not None:
                self._d2h.append((t.host, t.ptr))
                self.outputs[spec.name] = t.host
            else:
                self.outputs[spec.name] = _user_object(value)
        for spec, t in zip((*backend.inputs, *backend.outputs), self._tensors, strict=True):
            if not ctx.set_tensor_address(spec.name, t.ptr):
                raise BackendRuntimeError(
                    f"tensorrt: set_tensor_address({spec.name!r}, {t.ptr:#x}) failed: {backend._logger.take()}"
                )
        if self._device_arrays:
            self._event = cuda.Event(timing=False)
        names = [s.name for s in (*backend.inputs, *backend.outputs)]
        self.pageable = tuple(
            n
            for n, t in zip(names, self._tensors, strict=True)
            if t.host is not None and not cuda.is_pinned(t.host)
        )
        if cuda_graph and self.pageable:
            log.warning(
                "tensorrt: cuda_graph skipped for this binding: %s could not be page-locked (a CUDA graph "
                "cannot capture pageable copies); bind pinned arrays (eng.bind with shapes allocates them)",
                ", ".join(repr(n) for n in self.pageable),
            )
        elif cuda_graph:
            self._enqueue()  # TensorRT finishes deferred setup on the first enqueue, outside capture
            self._stream.synchronize()
            self._graph = cuda.capture_graph(self._stream, self._enqueue)
            self.cuda_graph = True

    def _attach(self, spec: TensorSpec, value: Any, shape: tuple[int, ...], *, is_input: bool) -> _Tensor:
        role = "input" if is_input else "output"
        if isinstance(value, cuda.DeviceArray) or cuda.is_device_array(value):
            arr = value if isinstance(value, cuda.DeviceArray) else cuda.as_device_array(value, spec.name)
            if arr.dtype != spec.dtype or arr.shape != shape:
                raise InputSpecError(
                    f"{role} {spec.name!r}: the device array is {arr.dtype} {arr.shape}, "
                    f"the engine needs {spec.dtype} {shape}",
                    tensor=spec.name,
                )
            if arr.device >= 0 and arr.device != self._index:
                raise InputSpecError(
                    f"{role} {spec.name!r}: the device array is on cuda:{arr.device}, the engine runs on "
                    f"cuda:{self._index}: move it there first (torch: x.to('cuda:{self._index}'))",
                    tensor=spec.name,
                )
            if arr.ptr % _ALIGNMENT:
                raise InputSpecError(
                    f"{role} {spec.name!r}: the device array's address {arr.ptr:#x} is not {_ALIGNMENT}-byte "
                    f"aligned, which TensorRT requires: pass a fresh allocation (x.clone()), not an offset view",
                    tensor=spec.name,
                )
            self._device_arrays.append(arr)
            assert self._stream is not None
            cuda.order_after(arr, self._stream)
            t = _Tensor(None, arr)
        else:
            host = value if isinstance(value, np.ndarray) else None
            if host is None:  # not given: ours, pinned
                host = cuda.pinned_empty(shape, spec.dtype)
            else:
                if host.shape != shape or host.dtype != spec.dtype:
                    raise InputSpecError(
                        f"{role} {spec.name!r}: the array bound is {host.dtype} {host.shape}, TensorRT "
                        f"{'reads' if is_input else 'computes'} {spec.dtype} {shape} for these input shapes",
                        tensor=spec.name,
                    )
                if not host.flags.c_contiguous or (not is_input and not host.flags.writeable):
                    raise InputSpecError(
                        f"{role} {spec.name!r}: the array bound must be C-contiguous"
                        f"{'' if is_input else ' and writable'}; pass np.ascontiguousarray(x)",
                        tensor=spec.name,
                    )
                if not cuda.is_pinned(host):  # the caller's array, used in place: page-lock it if CUDA can
                    if cuda.register(host):
                        self._registered.append(host)
                    elif host.nbytes:
                        log.warning(
                            "tensorrt: %s %r stays pageable (a page it lies on is already locked, e.g. by a "
                            "neighbouring array): its copies are synchronous; bind a pinned array to avoid it",
                            role,
                            spec.name,
                        )
            nbytes = int(np.prod(shape, dtype=np.int64)) * spec.dtype.itemsize
            t = _Tensor(host, cuda.DeviceBuffer(nbytes))
        self._tensors.append(t)
        return t

    def _enqueue(self) -> None:
        stream = self._stream
        assert stream is not None
        for dst, src in self._h2d:
            cuda.memcpy_htod_async(dst, src, stream)
        if not self._context.execute_async_v3(int(stream)):
            raise BackendRuntimeError(
                f"tensorrt: execute_async_v3 failed on {self._backend.path.name}: "
                f"{self._backend._logger.take() or 'no message'}"
            )
        for dst_host, src_ptr in self._d2h:
            cuda.memcpy_dtoh_async(dst_host, src_ptr, stream)

    def _run_locked(self) -> None:
        stream = self._stream
        if self._context is None or stream is None:
            raise EngineClosedError("tensorrt: this binding is closed (or its engine is)")
        with cuda.device_scope(self._index):
            for arr in self._device_arrays:  # the producer may have written since the last run
                cuda.order_after(arr, stream, self._event)
            if self._graph is not None:
                self._graph.launch(stream)
            else:
                self._enqueue()
            stream.synchronize()

    def run(self) -> None:
        with self._lock:
            self._run_locked()

    def run_feeds(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        """Copy ``feeds`` in, run, and return copies of ``outputs`` (what ``TensorRTBackend.run`` does)."""
        with self._lock:
            if self._context is None:
                raise EngineClosedError("tensorrt: this binding is closed (or its engine is)")
            for name, array in feeds.items():
                np.copyto(self.inputs[name], array, casting="no")
            self._run_locked()
            return {name: np.array(self.outputs[name], copy=True) for name in outputs}

    def close(self) -> None:
        """Wait for a run in flight, then release the context, stream and buffers; idempotent."""
        with self._lock:
            self._release()

    def _release(self) -> None:
        stream, self._stream = self._stream, None
        if stream is None and self._context is None:
            return
        first: BaseException | None = None
        try:
            with cuda.device_scope(self._index):
                if stream is not None:
                    stream.synchronize()  # no copy or kernel may still touch what is freed below
        except Exception as e:
            first = e
        graph, self._graph = self._graph, None
        if graph is not None:
            graph.destroy()
        self._context = None  # the context goes before the engine (TensorRTBackend.close)
        for t in self._tensors:
            if isinstance(t.device, cuda.DeviceBuffer):
                t.device.free()
        self._tensors.clear()
        for host in self._registered:
            cuda.unregister(host)
        self._registered.clear()
        self._h2d.clear()
        self._d2h.clear()
        self._device_arrays.clear()
        if self._event is not None:
            self._event.destroy()
            self._event = None
        if stream is not None:
            stream.destroy()
        # Drop our references; a BoundIO keeps its own view of the arrays for as long as it lives.
        self.inputs, self.outputs = {}, {}
        if first is not None:
            raise first

    def __del__(self) -> None:
        try:
            if self._stream is not None and not self._lock.locked():
                self.close()  # e.g. registered host memory of a binding dropped without close()
        except Exception:
            pass


def _user_object(value: Any) -> Any:
    """What the caller bound: the producer's object behind a parsed device array."""
    if isinstance(value, cuda.DeviceArray):
        return value.owner[0] if value.dlpack else value.owner
    return value
