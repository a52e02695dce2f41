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
from collections.abc import Mapping, Sequence
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
    InputSpecError,
    ModelLoadError,
)
from ..specs import BackendInfo, TensorSpec, format_shape
from . import check_options, require

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
        cuda.set_device(index)
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
        self.strongly_typed = bool(options.get("strongly_typed", self.major >= 11 and precision == "int8"))
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
        feeds = [{str(k): np.ascontiguousarray(v) for k, v in dict(f).items()} for f in data]
        if not feeds:
            raise BackendError("tensorrt: calibration_data is empty; give at least one feeds dict")
        return feeds

    def _check_precision(self) -> None:
        trt, p = self.trt, self.precision
        flags = trt.BuilderFlag.__members__
        if p in ("fp16", "bf16") and p.upper() not in flags:
            raise BackendError(
                f"tensorrt: TensorRT {trt.__version__} has no {p.upper()} builder flag (TensorRT 11 removed "
                f"implicit precision): export the ONNX model in {p} and build it strongly typed "
                "(options={'strongly_typed': True})"
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
            calibrator = _make_calibrator(trt, self.calibration, network)
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


def _make_calibrator(trt: ModuleType, feeds: list[dict[str, np.ndarray]], network: Any) -> Any:
    """A TensorRT 10 entropy calibrator fed batch by batch from device buffers."""
    names = [network.get_input(i).name for i in range(network.num_inputs)]
    missing = [n for n in names if n not in feeds[0]]
    if missing:
        raise BackendError(f"tensorrt: calibration_data feeds lack input(s) {missing}; inputs are {names}")

    class _Calibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[name-defined]
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.batches = iter(feeds)
            self.buffers: dict[str, cuda.DeviceBuffer] = {}
            self.cache: bytes | None = None

        def get_batch_size(self) -> int:
            return 1  # explicit-batch networks: the batch is in the shapes

        def get_batch(self, names: list[str]) -> list[int] | None:
            batch = next(self.batches, None)
            if batch is None:
                return None
            ptrs = []
            for name in names:
                host = np.ascontiguousarray(batch[name])
                buf = self.buffers.get(name)
                if buf is None or buf.nbytes < host.nbytes:
                    buf = self.buffers[name] = cuda.DeviceBuffer(host.nbytes)
                rt = cuda.runtime()
                kind = rt.cudaMemcpyKind.cudaMemcpyHostToDevice
                cuda._check(rt, rt.cudaMemcpy(buf.ptr, host.ctypes.data, host.nbytes, kind), "cudaMemcpy")
                ptrs.append(buf.ptr)
            return ptrs

        def read_calibration_cache(self) -> bytes | None:
            return self.cache

        def write_calibration_cache(self, cache: Any) -> None:
            self.cache = bytes(memoryview(cache))

    return _Calibrator()


# -- backend -----------------------------------------------------------------------------------------------
class TensorRTBackend:
    name = "tensorrt"

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
        self._local = threading.local()
        self._all_run_bindings: list[TensorRTBinding] = []
        self._lock = threading.Lock()
        self.metadata = {
            "tensorrt": str(trt.__version__),
            "gpu": f"{gpu.name} ({gpu.sm})",
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

    # -- run ---------------------------------------------------------------------------------------------
    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        engine = self._engine
        if engine is None:
            raise BackendRuntimeError("tensorrt: engine is closed")
        key = tuple(feeds[s.name].shape for s in self.inputs)
        cache: collections.OrderedDict[tuple[Any, ...], TensorRTBinding] | None = getattr(
            self._local, "bindings", None
        )
        if cache is None:
            cache = self._local.bindings = collections.OrderedDict()
        binding = cache.get(key)
        if binding is None:
            self.check_profile({n: a.shape for n, a in feeds.items()})
            binding = TensorRTBinding(self, {n: a.shape for n, a in feeds.items()}, {}, cuda_graph=False)
            cache[key] = binding
            with self._lock:
                self._all_run_bindings.append(binding)
            while len(cache) > _RUN_BINDINGS_PER_THREAD:
                _, old = cache.popitem(last=False)
                old.close()
        else:
            cache.move_to_end(key)
        for name, array in feeds.items():
            np.copyto(binding.inputs[name], array, casting="no")
        binding.run()
        return {name: np.array(binding.outputs[name], copy=True) for name in outputs}

    # -- bind --------------------------------------------------------------------------------------------
    def allocate(self, shape: Sequence[int], dtype: np.dtype) -> np.ndarray:
        """A pinned host array for a bound input (what ``io.inputs`` should be)."""
        return cuda.pinned_empty(shape, dtype)

    def bind(self, inputs: dict[str, Any], outputs: dict[str, Any]) -> TensorRTBinding:
        if self._engine is None:
            raise BackendRuntimeError("tensorrt: engine is closed")
        self.check_profile({n: getattr(a, "shape", a) for n, a in inputs.items()})
        return TensorRTBinding(self, inputs, outputs, cuda_graph=self._cuda_graph)

    def close(self) -> None:
        with self._lock:
            bindings, self._all_run_bindings = self._all_run_bindings, []
        for b in bindings:
            b.close()
        self._engine = None
        self._runtime = None


class _Tensor:
    """One bound tensor: the array the user sees, and where it lives on the device."""

    __slots__ = ("device", "host", "nbytes", "owned", "ptr")

    def __init__(self, host: np.ndarray | None, device: cuda.DeviceBuffer | cuda.DeviceArray) -> None:
        self.host = host  # None: the tensor is a caller's device array, never copied
        self.device = device
        self.ptr = int(device.ptr)
        self.nbytes = int(device.nbytes)


class TensorRTBinding:
    """One execution context and one stream bound to fixed shapes.

    Host-side tensors are the arrays bound (the caller's, used in place), page-locked with
    ``cudaHostRegister`` unless already pinned; outputs not given are pinned arrays allocated here.
    An array CUDA cannot lock stays pageable and its copies are synchronous but still correct. A
    device array given by the caller is used by pointer with no copy. ``run`` queues one H2D copy per
    host input, ``execute_async_v3``, one D2H copy per host output, and waits for the stream.
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
        engine = backend._engine
        self._stream = cuda.Stream()
        self._context: Any = engine.create_execution_context()
        if self._context is None:
            raise BackendRuntimeError(
                f"tensorrt: could not create an execution context: {backend._logger.take() or 'out of GPU memory?'}"
            )
        self._tensors: list[_Tensor] = []
        self._registered: list[np.ndarray] = []
        self._h2d: list[tuple[int, np.ndarray]] = []
        self._d2h: list[tuple[np.ndarray, int]] = []
        self.inputs: dict[str, np.ndarray] = {}
        self.outputs: dict[str, np.ndarray] = {}
        ctx = self._context
        for spec in backend.inputs:
            value = inputs[spec.name]
            shape = tuple(int(d) for d in getattr(value, "shape", value))
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
                self.inputs[spec.name] = value
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
                self.outputs[spec.name] = value  # type: ignore[assignment]
        for spec, t in zip((*backend.inputs, *backend.outputs), self._tensors, strict=True):
            if not ctx.set_tensor_address(spec.name, t.ptr):
                raise BackendRuntimeError(
                    f"tensorrt: set_tensor_address({spec.name!r}) failed: {backend._logger.take()}"
                )
        self._graph: cuda.GraphExec | None = None
        pageable = [t for t in self._tensors if t.host is not None and not cuda.is_pinned(t.host)]
        if cuda_graph and pageable:
            log.warning(
                "tensorrt: cuda_graph skipped for this binding: %d bound array(s) could not be page-locked "
                "(a CUDA graph cannot capture pageable copies); bind larger or pinned arrays",
                len(pageable),
            )
        elif cuda_graph:
            self._enqueue()  # TensorRT finishes deferred setup on the first enqueue, outside capture
            self._stream.synchronize()
            self._graph = cuda.capture_graph(self._stream, self._enqueue)

    def _attach(self, spec: TensorSpec, value: Any, shape: tuple[int, ...], *, is_input: bool) -> _Tensor:
        if cuda.is_device_array(value):
            arr = cuda.as_device_array(value, spec.name, self._stream)
            if arr.dtype != spec.dtype or arr.shape != shape:
                raise InputSpecError(
                    f"{'input' if is_input else 'output'} {spec.name!r}: the device array is {arr.dtype} {arr.shape}, "
                    f"the engine needs {spec.dtype} {shape}",
                    tensor=spec.name,
                )
            t = _Tensor(None, arr)
        else:
            host = value if isinstance(value, np.ndarray) else None
            if host is None:  # not given: ours, pinned
                host = cuda.pinned_empty(shape, spec.dtype)
            elif not cuda.is_pinned(host):  # the caller's array, used in place: page-lock it if CUDA can
                if cuda.register(host):
                    self._registered.append(host)
                else:
                    log.debug(
                        "tensorrt: %r stays pageable (its pages are already locked); copies are sync",
                        spec.name,
                    )
            nbytes = int(np.prod(shape, dtype=np.int64)) * spec.dtype.itemsize
            t = _Tensor(host, cuda.DeviceBuffer(nbytes))
        self._tensors.append(t)
        return t

    def _enqueue(self) -> None:
        stream = self._stream
        for dst, src in self._h2d:
            cuda.memcpy_htod_async(dst, src, stream)
        if not self._context.execute_async_v3(int(stream)):
            raise BackendRuntimeError(
                f"tensorrt: execute_async_v3 failed on {self._backend.path.name}: "
                f"{self._backend._logger.take() or 'no message'}"
            )
        for dst_host, src_ptr in self._d2h:
            cuda.memcpy_dtoh_async(dst_host, src_ptr, stream)

    def run(self) -> None:
        if self._context is None:
            raise BackendRuntimeError("tensorrt: binding is closed")
        if self._graph is not None:
            self._graph.launch(self._stream)
        else:
            self._enqueue()
        self._stream.synchronize()

    def close(self) -> None:
        if self._context is None:
            return
        if self._graph is not None:
            self._graph.destroy()
            self._graph = None
        try:
            self._stream.synchronize()
        finally:
            self._context = None
            for t in self._tensors:
                if isinstance(t.device, cuda.DeviceBuffer):
                    t.device.free()
            self._tensors.clear()
            for host in self._registered:
                cuda.unregister(host)
            self._registered.clear()
            self._h2d.clear()
            self._d2h.clear()
            self._stream.destroy()
