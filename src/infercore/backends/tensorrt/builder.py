"""Builds a serialized engine from ONNX, through the on-disk engine and timing caches.

Precision: FP16/BF16 builder flags on TensorRT 10, the ONNX's own types in a strongly typed network
(the only way on TensorRT 11); INT8 from a Q/DQ ONNX, or on TensorRT 10 through the calibrator.
Optimization profile 0 comes from ``options["profiles"]``, else ``dynamic_dims`` for every dynamic
dimension.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ...errors import BackendError, ModelLoadError
from ...modelfiles import graph_tensors
from . import cuda
from .cache import (
    cache_key,
    default_cache_dir,
    engine_file_path,
    environment,
    external_data_hashes,
    load_cached,
    onnx_proto,
    store,
    timing_cache_file,
    write_atomic,
)
from .calibrator import make_calibrator

log = logging.getLogger(__name__)

_DEFAULT_DYNAMIC = (1, 1, 64)


def _major(trt: ModuleType) -> int:
    return int(str(trt.__version__).split(".")[0])


class EngineBuilder:
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
        self.cache_dir = Path(options.get("cache_dir") or default_cache_dir())
        self.model_bytes = path.read_bytes()
        self.calibration = self._calibration_feeds()
        # TensorRT 11 has no precision builder flags: fp16/bf16/int8 come from the ONNX's own types
        typed_default = self.major >= 11 and precision in ("fp16", "bf16", "int8")
        self.strongly_typed = bool(options.get("strongly_typed", typed_default))
        self.external_data = external_data_hashes(path)
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
        env = environment(self.trt, self.gpu)
        return cache_key(env, self.path, self.model_bytes, self.external_data, self.build_options())

    def cached_or_build(self) -> bytes:
        digest, meta = self.key()
        engine_path = engine_file_path(self.cache_dir, self.path, digest)
        if not self.options.get("rebuild"):
            cached = load_cached(engine_path, meta, environment(self.trt, self.gpu))
            if cached is not None:
                return cached
        blob = self.build()
        store(engine_path, blob, meta)
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
            calibrator = make_calibrator(trt, self.calibration, network, self._profile_shapes)
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
            write_atomic(timing_path, bytes(memoryview(config.get_timing_cache().serialize())))
        return bytes(memoryview(serialized))

    def _timing_cache_path(self) -> Path | None:
        if not self.options.get("timing_cache", True):
            return None
        return timing_cache_file(self.cache_dir, self.trt, self.gpu)

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


_ONNX_TYPES = {"fp16": 10, "bf16": 16}  # TensorProto.FLOAT16, TensorProto.BFLOAT16


def _onnx_has_type(path: Path, precision: str) -> bool | None:
    """Whether the ONNX model holds any tensor (weight, I/O, Cast target) of ``precision``; None: unknown."""
    proto = onnx_proto(path)
    if proto is None:
        return None
    code = _ONNX_TYPES[precision]
    g = proto.graph
    if any(t.data_type == code for t in graph_tensors(g)):
        return True
    if any(v.type.tensor_type.elem_type == code for v in (*g.input, *g.output, *g.value_info)):
        return True
    return any(
        a.name == "to" and a.i == code
        for n in g.node
        if n.op_type in ("Cast", "CastLike")
        for a in n.attribute
    )
