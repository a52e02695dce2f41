"""A strict fake of the TensorRT Python API (10.x and 11.x) that executes ONNX graphs on numpy.

``make_module(version)`` returns a module with the names that version has (checked against
``surface/tensorrt-<version>.json`` by ``test_surface.py``): TensorRT 11 has no FP16/INT8 builder
flags and no INT8 calibrator classes. Objects use ``__slots__``, so an unknown attribute raises
``AttributeError``. Failure modes follow the documentation: calls that fail in TensorRT return
``False``/``None`` and log an error through the ``ILogger`` instead of raising; ``execute_async_v3``
fails when a shape or an address is missing; device pointers are the fake CUDA's (``fake_cuda``),
and the work runs on the stream when it is synchronized. "Engines" are the ONNX model plus a JSON
header (version, compute capability, I/O, profiles); deserialization refuses another TensorRT
version or another GPU, as the real runtime does.
"""

from __future__ import annotations

import enum
import json
import sys
import threading
import types
from typing import Any

import fake_cuda
import numpy as np
import onnx
import onnxruntime as ort

MAGIC = b"FTRT"
BUILDS: list[dict[str, Any]] = []  # one entry per successful build (tests count rebuilds)


class _Enum(enum.Enum):
    """pybind11 enums convert to int (``int(flag)``, ``1 << flag``) and have name/value."""

    def __int__(self) -> int:
        return int(self.value)

    def __index__(self) -> int:
        return int(self.value)


class DataType(_Enum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    BF16 = 7
    INT64 = 8


_ONNX_TO_TRT = {
    onnx.TensorProto.FLOAT: DataType.FLOAT,
    onnx.TensorProto.FLOAT16: DataType.HALF,
    onnx.TensorProto.INT8: DataType.INT8,
    onnx.TensorProto.INT32: DataType.INT32,
    onnx.TensorProto.BOOL: DataType.BOOL,
    onnx.TensorProto.UINT8: DataType.UINT8,
    onnx.TensorProto.INT64: DataType.INT64,
}
_NP = {
    DataType.FLOAT: np.float32,
    DataType.HALF: np.float16,
    DataType.INT8: np.int8,
    DataType.INT32: np.int32,
    DataType.BOOL: np.bool_,
    DataType.UINT8: np.uint8,
    DataType.INT64: np.int64,
}


class TensorIOMode(_Enum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class MemoryPoolType(_Enum):
    WORKSPACE = 0
    DLA_MANAGED_SRAM = 1
    DLA_LOCAL_DRAM = 2
    DLA_GLOBAL_DRAM = 3
    TACTIC_DRAM = 4


class ErrorCode(_Enum):
    SUCCESS = 0
    INTERNAL_ERROR = 1
    MEM_ALLOC_FAILED = 2
    MODEL_DESERIALIZE_FAILED = 3
    INVALID_VALUE = 4
    INVALID_GRAPH = 5
    INVALID_NODE = 6
    UNSUPPORTED_GRAPH = 7
    UNSUPPORTED_NODE = 8


class ILogger:
    class Severity(_Enum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    def __init__(self) -> None:
        pass

    def log(self, severity: Any, msg: str) -> None:
        raise NotImplementedError


class Logger(ILogger):
    __slots__ = ("min_severity",)

    def __init__(self, min_severity: Any = ILogger.Severity.WARNING) -> None:
        super().__init__()
        self.min_severity = min_severity

    def log(self, severity: Any, msg: str) -> None:
        pass


def _error(logger: ILogger, msg: str) -> None:
    logger.log(ILogger.Severity.ERROR, msg)


class Dims:
    """Sequence-like, like ``trt.Dims``: ``len``, indexing, iteration through ``__getitem__``."""

    __slots__ = ("_d",)
    MAX_DIMS = 8

    def __init__(self, shape: Any = ()) -> None:
        self._d = tuple(int(x) for x in shape)

    def __len__(self) -> int:
        return len(self._d)

    def __getitem__(self, i: int) -> int:
        return self._d[i]

    def __eq__(self, other: object) -> bool:
        try:
            return self._d == tuple(other)  # type: ignore[arg-type]
        except TypeError:
            return NotImplemented

    def __repr__(self) -> str:
        return repr(self._d)


class ITensor:
    __slots__ = ("_dtype", "_name", "_shape")

    def __init__(self) -> None:
        raise TypeError("No constructor defined!")

    @classmethod
    def _make(cls, name: str, dtype: DataType, shape: tuple[int, ...]) -> ITensor:
        t = object.__new__(cls)
        t._name, t._dtype, t._shape = name, dtype, Dims(shape)
        return t

    name = property(lambda self: self._name)
    dtype = property(lambda self: self._dtype)
    shape = property(lambda self: self._shape)


class INetworkDefinition:
    __slots__ = ("_flags", "_inputs", "_model", "_outputs")

    def __init__(self) -> None:
        raise TypeError("No constructor defined!")

    num_inputs = property(lambda self: len(self._inputs))
    num_outputs = property(lambda self: len(self._outputs))

    def get_input(self, index: int) -> ITensor | None:
        return self._inputs[index] if 0 <= index < len(self._inputs) else None

    def get_output(self, index: int) -> ITensor | None:
        return self._outputs[index] if 0 <= index < len(self._outputs) else None


class ParserError:
    __slots__ = ("_code", "_desc", "_node", "_node_name", "_op")

    def __init__(self) -> None:
        raise TypeError("No constructor defined!")

    @classmethod
    def _make(cls, code: ErrorCode, desc: str, node: int = -1, name: str = "", op: str = "") -> ParserError:
        e = object.__new__(cls)
        e._code, e._desc, e._node, e._node_name, e._op = code, desc, node, name, op
        return e

    def code(self) -> ErrorCode:
        return self._code

    def desc(self) -> str:
        return self._desc

    def node(self) -> int:
        return self._node

    def node_name(self) -> str:
        return self._node_name

    def node_operator(self) -> str:
        return self._op


SUPPORTED_OPS = {
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Relu",
    "MatMul",
    "Gemm",
    "Sigmoid",
    "Identity",
    "Cast",
    "QuantizeLinear",
    "DequantizeLinear",
    "Conv",
    "Reshape",
    "Transpose",
    "ReduceSum",
    "Softmax",
}


class OnnxParser:
    __slots__ = ("_errors", "_logger", "_network")

    def __init__(self, network: INetworkDefinition, logger: ILogger) -> None:
        self._network, self._logger, self._errors = network, logger, []

    num_errors = property(lambda self: len(self._errors))

    def get_error(self, index: int) -> ParserError | None:
        return self._errors[index] if 0 <= index < len(self._errors) else None

    def clear_errors(self) -> None:
        self._errors.clear()

    def parse(self, model: bytes, path: str | None = None) -> bool:
        try:
            proto = onnx.load_from_string(bytes(model))
        except Exception as e:
            self._errors.append(
                ParserError._make(
                    ErrorCode.MODEL_DESERIALIZE_FAILED, f"Failed to parse ONNX model from file: {path}! {e}"
                )
            )
            return False
        for i, node in enumerate(proto.graph.node):
            if node.domain not in ("", "ai.onnx") or node.op_type not in SUPPORTED_OPS:
                self._errors.append(
                    ParserError._make(
                        ErrorCode.UNSUPPORTED_NODE,
                        f"No importer registered for op: {node.op_type}. Attempting to import as plugin.",
                        i,
                        node.name,
                        node.op_type,
                    )
                )
        if self._errors:
            return False
        init = {t.name for t in proto.graph.initializer}
        net = self._network
        net._model = proto.SerializeToString()
        for vi in proto.graph.input:
            if vi.name in init:
                continue
            tt = vi.type.tensor_type
            dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim)
            net._inputs.append(ITensor._make(vi.name, _ONNX_TO_TRT[tt.elem_type], dims))
        for vi in proto.graph.output:
            tt = vi.type.tensor_type
            dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim)
            net._outputs.append(ITensor._make(vi.name, _ONNX_TO_TRT[tt.elem_type], dims))
        return True


class IOptimizationProfile:
    __slots__ = ("_shapes",)

    def __init__(self) -> None:
        self._shapes: dict[str, tuple[tuple[int, ...], ...]] = {}

    def set_shape(self, input: str, min: Any, opt: Any, max: Any) -> None:
        self._shapes[input] = tuple(tuple(int(d) for d in s) for s in (min, opt, max))

    def get_shape(self, input: str) -> list[Dims]:
        return [Dims(s) for s in self._shapes.get(input, ())]


class ITimingCache:
    __slots__ = ("_entries", "_version")

    def __init__(self) -> None:
        raise TypeError("No constructor defined!")

    def serialize(self) -> IHostMemory:
        return IHostMemory._make(b"FTC1" + json.dumps({"v": self._version, "n": self._entries}).encode())

    def combine(self, input_cache: ITimingCache, ignore_mismatch: bool) -> bool:
        self._entries += input_cache._entries
        return True

    def reset(self) -> bool:
        self._entries = 0
        return True


class IHostMemory(bytes):
    """Serialized data; supports the buffer protocol like the real one. Only nbytes/dtype besides."""

    def __getattribute__(self, name: str) -> Any:
        if not name.startswith("__") and name not in ("nbytes", "dtype", "_make"):
            raise AttributeError(f"'tensorrt.IHostMemory' object has no attribute '{name}'")
        return super().__getattribute__(name)

    @classmethod
    def _make(cls, data: bytes) -> IHostMemory:
        return cls(data)

    @property
    def nbytes(self) -> int:
        return len(self)

    @property
    def dtype(self) -> DataType:
        return DataType.UINT8


def _current_cc() -> tuple[int, int]:
    g = fake_cuda.STATE.gpus[fake_cuda.STATE.current]
    return (g.major, g.minor)


def build(version: str) -> types.ModuleType:
    """The fake ``tensorrt`` module for ``version`` ("10.16.1.11", "11.4.0.106", ...)."""
    major = int(version.split(".")[0])
    flags = ["TF32", "GPU_FALLBACK", "REFIT", "DEBUG", "SPARSE_WEIGHTS", "VERSION_COMPATIBLE"]
    if major < 11:
        flags += ["FP16", "BF16", "INT8", "FP8", "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS"]
    builder_flag = _Enum("BuilderFlag", [(f, i) for i, f in enumerate(flags)])  # type: ignore[misc]
    creation = ["STRONGLY_TYPED"] + (["EXPLICIT_BATCH"] if major < 11 else [])
    net_flag = _Enum("NetworkDefinitionCreationFlag", [(f, i) for i, f in enumerate(reversed(creation))])  # type: ignore[misc]

    class IBuilderConfig:
        __slots__ = ("_calib", "_calib_profile", "_flags", "_level", "_pools", "_profiles", "_timing")

        def __init__(self) -> None:
            raise TypeError("No constructor defined!")

        @classmethod
        def _make(cls) -> IBuilderConfig:
            c = object.__new__(cls)
            c._flags, c._pools, c._profiles, c._timing, c._level = set(), {}, [], None, 3
            c._calib = c._calib_profile = None
            return c

        def set_memory_pool_limit(self, pool: MemoryPoolType, pool_size: int) -> None:
            if not isinstance(pool, MemoryPoolType) or int(pool_size) < 0:
                raise TypeError("set_memory_pool_limit(): incompatible function arguments")
            self._pools[pool] = int(pool_size)

        def get_memory_pool_limit(self, pool: MemoryPoolType) -> int:
            return self._pools.get(pool, 80 * 2**30)

        def set_flag(self, flag: Any) -> None:
            if not isinstance(flag, builder_flag):
                raise TypeError("set_flag(): incompatible function arguments")
            self._flags.add(flag)

        def get_flag(self, flag: Any) -> bool:
            return flag in self._flags

        def clear_flag(self, flag: Any) -> None:
            self._flags.discard(flag)

        def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
            self._profiles.append(profile)
            return len(self._profiles) - 1

        num_optimization_profiles = property(lambda self: len(self._profiles))

        def create_timing_cache(self, serialized_timing_cache: bytes) -> ITimingCache | None:
            data = bytes(serialized_timing_cache)
            cache = object.__new__(ITimingCache)
            cache._version, cache._entries = version, 0
            if data:
                if not data.startswith(b"FTC1"):
                    return None
                meta = json.loads(data[4:])
                cache._entries = int(meta["n"])
                cache._version = meta["v"]
            return cache

        def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
            if cache._version != version and not ignore_mismatch:
                return False
            self._timing = cache
            return True

        def get_timing_cache(self) -> ITimingCache | None:
            return self._timing

        def _get_level(self) -> int:
            return self._level

        def _set_level(self, value: int) -> None:
            if not 0 <= int(value) <= 5:
                raise ValueError("builder_optimization_level must be 0..5")
            self._level = int(value)

        builder_optimization_level = property(_get_level, _set_level)

        if major < 11:

            def _get_calib(self) -> Any:
                return self._calib

            def _set_calib(self, value: Any) -> None:
                self._calib = value

            int8_calibrator = property(_get_calib, _set_calib)

            def set_calibration_profile(self, profile: IOptimizationProfile) -> bool:
                self._calib_profile = profile
                return True

            def get_calibration_profile(self) -> IOptimizationProfile | None:
                return self._calib_profile

    class Builder:
        __slots__ = ("_logger",)

        def __init__(self, logger: ILogger) -> None:
            self._logger = logger

        def create_network(self, flags: int = 0) -> INetworkDefinition:
            net = object.__new__(INetworkDefinition)
            net._flags, net._inputs, net._outputs, net._model = int(flags), [], [], b""
            return net

        def create_builder_config(self) -> IBuilderConfig:
            return IBuilderConfig._make()

        def create_optimization_profile(self) -> IOptimizationProfile:
            return IOptimizationProfile()

        def build_serialized_network(
            self, network: INetworkDefinition, config: IBuilderConfig
        ) -> IHostMemory | None:
            log = self._logger
            strongly = bool(network._flags & (1 << net_flag.STRONGLY_TYPED.value))
            if strongly and config._flags & {f for f in builder_flag if f.name in ("FP16", "BF16", "INT8")}:
                _error(
                    log,
                    "Error Code 4: API Usage Error (Builder flags FP16/BF16/INT8 are not allowed for a "
                    "strongly typed network)",
                )
                return None
            profiles: dict[str, list[list[int]]] = {}
            for t in network._inputs:
                dims = tuple(t.shape)
                shapes = next((p._shapes[t.name] for p in config._profiles if t.name in p._shapes), None)
                if shapes is None:
                    if any(d < 0 for d in dims):
                        _error(
                            log,
                            "Error Code 4: API Usage Error (Network has dynamic or shape inputs, but no "
                            "optimization profile has been defined.)",
                        )
                        return None
                    continue
                lo, opt, hi = shapes
                ok = all(len(s) == len(dims) for s in shapes) and all(
                    a <= b <= c and (d < 0 or a == c == d)
                    for a, b, c, d in zip(lo, opt, hi, dims, strict=True)
                )
                if not ok:
                    _error(
                        log,
                        f"Error Code 4: API Usage Error ({t.name}: invalid optimization profile "
                        f"min {lo} opt {opt} max {hi} for dimensions {dims})",
                    )
                    return None
                profiles[t.name] = [list(lo), list(opt), list(hi)]
            precision = "fp32"
            proto = onnx.load_from_string(network._model)
            if "QuantizeLinear" in str(proto.graph.node):
                precision = "int8-qdq"
            elif strongly and any(t.data_type == onnx.TensorProto.FLOAT16 for t in proto.graph.initializer):
                precision = "fp16-typed"  # strongly typed: the ONNX's own float16 tensors stay float16
            if major < 11 and builder_flag.INT8 in config._flags:
                calib = config._calib
                if calib is None:
                    _error(log, "Error Code 2: Internal Error (INT8 requested without a calibrator or Q/DQ)")
                    return None
                count = _calibrate(
                    calib, network, config._calib_profile or (config._profiles or [None])[0], log
                )
                if count == 0:
                    _error(log, "Error Code 2: Internal Error (calibrator returned no batch)")
                    return None
                precision = f"int8-calibrated-{count}"
            elif major < 11 and builder_flag.FP16 in config._flags:
                precision = "fp16"
            if config._timing is not None:
                config._timing._entries += len(onnx.load_from_string(network._model).graph.node)
            header = {
                "version": version,
                "cc": list(_current_cc()),
                "precision": precision,
                "io": [[t.name, "INPUT", t.dtype.name, list(t.shape)] for t in network._inputs]
                + [[t.name, "OUTPUT", t.dtype.name, list(t.shape)] for t in network._outputs],
                "profiles": profiles,
                "workspace": config._pools.get(MemoryPoolType.WORKSPACE),
            }
            BUILDS.append(header)
            head = json.dumps(header).encode()
            return IHostMemory._make(MAGIC + len(head).to_bytes(4, "little") + head + network._model)

    class Runtime:
        __slots__ = ("_logger",)

        def __init__(self, logger: ILogger) -> None:
            self._logger = logger

        def deserialize_cuda_engine(self, serialized_engine: Any) -> ICudaEngine | None:
            data = bytes(serialized_engine)
            if not data.startswith(MAGIC):
                _error(
                    self._logger,
                    "IRuntime::deserializeCudaEngine: Error Code 1: Serialization (Serialization "
                    "assertion magicTagRead == kMAGIC_TAG failed.Magic tag does not match)",
                )
                return None
            n = int.from_bytes(data[4:8], "little")
            header = json.loads(data[8 : 8 + n])
            if header["version"] != version:
                _error(
                    self._logger,
                    "IRuntime::deserializeCudaEngine: Error Code 1: Serialization (Serialization "
                    "assertion stdVersionRead == kSERIALIZATION_VERSION failed.Version tag does not "
                    f"match. Note: Current Version: {version}, Serialized Engine Version: "
                    f"{header['version']})",
                )
                return None
            if tuple(header["cc"]) != _current_cc():
                a, b = header["cc"], _current_cc()
                _error(
                    self._logger,
                    "IRuntime::deserializeCudaEngine: Error Code 1: Serialization (The engine plan "
                    f"file is generated on an incompatible device, expecting compute {b[0]}.{b[1]} "
                    f"got compute {a[0]}.{a[1]}, please rebuild.)",
                )
                return None
            return ICudaEngine._make(header, data[8 + n :], self._logger)

    class ICudaEngine:
        __slots__ = ("_device", "_header", "_io", "_logger", "_model", "_session", "_shape_cache")

        def __init__(self) -> None:
            raise TypeError("No constructor defined!")

        @classmethod
        def _make(cls, header: dict[str, Any], model: bytes, logger: ILogger) -> ICudaEngine:
            e = object.__new__(cls)
            e._header, e._model, e._logger = header, model, logger
            e._device = fake_cuda.STATE.current  # an engine lives on the device current at deserialization
            e._io = {
                name: (TensorIOMode[mode], DataType[dt], tuple(shape))
                for name, mode, dt, shape in header["io"]
            }
            e._session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
            e._shape_cache = {}
            return e

        num_io_tensors = property(lambda self: len(self._io))
        num_optimization_profiles = property(lambda self: 1)
        name = property(lambda self: "fake_engine")

        def get_tensor_name(self, index: int) -> str:
            names = list(self._io)
            if not 0 <= index < len(names):
                raise IndexError(index)
            return names[index]

        def _io_of(self, name: str) -> tuple[TensorIOMode, DataType, tuple[int, ...]]:
            if name not in self._io:
                raise RuntimeError(f"tensor {name!r} not found")  # real: logs and returns garbage
            return self._io[name]

        def get_tensor_mode(self, name: str) -> TensorIOMode:
            return self._io.get(name, (TensorIOMode.NONE,))[0]  # type: ignore[return-value]

        def get_tensor_dtype(self, name: str) -> DataType:
            return self._io_of(name)[1]

        def get_tensor_shape(self, name: str) -> Dims:
            return Dims(self._io_of(name)[2])

        def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[Dims]:
            if profile_index != 0 or self._io_of(name)[0] != TensorIOMode.INPUT:
                raise RuntimeError("invalid profile index or not an input")
            shapes = self._header["profiles"].get(name)
            if shapes is None:
                s = self._io_of(name)[2]
                return [Dims(s), Dims(s), Dims(s)]
            return [Dims(s) for s in shapes]

        def create_execution_context(self, strategy: Any = None) -> IExecutionContext | None:
            if fake_cuda.STATE.current != self._device:
                _error(
                    self._logger,
                    "IExecutionContext::createExecutionContext: Error Code 1: Cuda Runtime (the current "
                    f"device cuda:{fake_cuda.STATE.current} is not the engine's device cuda:{self._device})",
                )
                return None
            return IExecutionContext._make(self)

        def serialize(self) -> IHostMemory:
            head = json.dumps(self._header).encode()
            return IHostMemory._make(MAGIC + len(head).to_bytes(4, "little") + head + self._model)

        def _output_shapes(self, shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
            key = tuple(sorted(shapes.items()))
            if key not in self._shape_cache:
                feeds = {n: np.zeros(s, _NP[self._io[n][1]]) for n, s in shapes.items()}
                outs = [n for n, v in self._io.items() if v[0] == TensorIOMode.OUTPUT]
                values = self._session.run(outs, feeds)
                self._shape_cache[key] = {n: tuple(v.shape) for n, v in zip(outs, values, strict=True)}
            result: dict[str, tuple[int, ...]] = self._shape_cache[key]
            return result

    class IExecutionContext:
        __slots__ = ("_addresses", "_engine", "_owner", "_pending", "_shapes")

        def __init__(self) -> None:
            raise TypeError("No constructor defined!")

        @classmethod
        def _make(cls, engine: ICudaEngine) -> IExecutionContext:
            c = object.__new__(cls)
            c._engine, c._addresses, c._pending = engine, {}, 0
            c._shapes = {
                n: v[2] for n, v in engine._io.items() if v[0] == TensorIOMode.INPUT and -1 not in v[2]
            }
            c._owner = None
            return c

        engine = property(lambda self: self._engine)

        def _claim(self) -> bool:
            """A context must not be used from two threads while work of one is pending."""
            me = threading.get_ident()
            if self._pending and self._owner not in (None, me):
                _error(self._engine._logger, "IExecutionContext used concurrently from two threads")
                return False
            self._owner = me
            return True

        @property
        def all_binding_shapes_specified(self) -> bool:
            return all(n in self._shapes for n, v in self._engine._io.items() if v[0] == TensorIOMode.INPUT)

        def set_input_shape(self, name: str, shape: Any) -> bool:
            if not self._claim():
                return False
            e = self._engine
            if name not in e._io or e._io[name][0] != TensorIOMode.INPUT:
                _error(
                    e._logger,
                    f"IExecutionContext::setInputShape: Error Code 3: API Usage Error (Parameter "
                    f"check failed, condition: mEngine.bindingIsInput(bindingIndex). {name} is not an input)",
                )
                return False
            dims = tuple(int(d) for d in shape)
            decl = e._io[name][2]
            lo, _, hi = e.get_tensor_profile_shape(name, 0)
            ok = len(dims) == len(decl) and all(
                (d < 0 or d == s) and a <= s <= b for d, s, a, b in zip(decl, dims, lo, hi, strict=True)
            )
            if not ok:
                _error(
                    e._logger,
                    f"IExecutionContext::setInputShape: Error Code 3: API Usage Error (Parameter check "
                    f"failed, condition: satisfyProfile. Set dimension {dims} for tensor {name} does not "
                    f"satisfy any optimization profiles. Valid range: min {tuple(lo)} max {tuple(hi)})",
                )
                return False
            self._shapes[name] = dims
            return True

        def get_tensor_shape(self, name: str) -> Dims:
            e = self._engine
            mode, _, decl = e._io_of(name)
            if mode == TensorIOMode.INPUT:
                return Dims(self._shapes.get(name, decl))
            if not self.all_binding_shapes_specified:
                return Dims(tuple(-1 if d < 0 else d for d in decl))
            return Dims(e._output_shapes(self._input_shapes())[name])

        def _input_shapes(self) -> dict[str, tuple[int, ...]]:
            return {n: self._shapes[n] for n, v in self._engine._io.items() if v[0] == TensorIOMode.INPUT}

        def set_tensor_address(self, name: str, memory: int) -> bool:
            if name not in self._engine._io:
                _error(
                    self._engine._logger,
                    f"IExecutionContext::setTensorAddress: Error Code 3: API Usage Error "
                    f"(tensor {name} not found)",
                )
                return False
            if int(memory) % 256:  # NvInferRuntime.h: "The pointer must have at least 256-byte alignment."
                _error(
                    self._engine._logger,
                    f"IExecutionContext::setTensorAddress: Error Code 3: API Usage Error (Parameter check "
                    f"failed, condition: (reinterpret_cast<uintptr_t>(data) % 256) == 0. Address "
                    f"{int(memory):#x} of tensor {name} is not aligned to 256 bytes)",
                )
                return False
            self._addresses[name] = int(memory)
            return True

        def get_tensor_address(self, name: str) -> int:
            return self._addresses.get(name, 0)

        def execute_async_v3(self, stream_handle: int) -> bool:
            if not isinstance(stream_handle, int):
                raise TypeError(
                    "execute_async_v3(): incompatible function arguments. The following argument "
                    "types are supported: (self, stream_handle: int) -> bool"
                )
            e = self._engine
            if not self._claim():
                return False
            if not self.all_binding_shapes_specified:
                missing = [
                    n for n, v in e._io.items() if v[0] == TensorIOMode.INPUT and n not in self._shapes
                ]
                _error(
                    e._logger,
                    "IExecutionContext::enqueueV3: Error Code 3: API Usage Error (Parameter check "
                    f"failed, condition: inputDimensionSpecified. Input shape of {missing[0]} not set)",
                )
                return False
            unset = [n for n in e._io if not self._addresses.get(n)]
            if unset:
                _error(
                    e._logger,
                    "IExecutionContext::enqueueV3: Error Code 3: API Usage Error (Parameter check "
                    f"failed, condition: mContext.profileObliviousBindings.at(profileObliviousIndex) "
                    f"|| getPtrOrNull(mOutputAllocators, profileObliviousIndex). Neither address or "
                    f"allocator is set for I/O tensor {unset[0]})",
                )
                return False
            if fake_cuda.stream_device(stream_handle) not in (None, e._device):
                _error(
                    e._logger,
                    "IExecutionContext::enqueueV3: Error Code 1: Cuda Runtime (invalid device context: "
                    f"the stream is not on the engine's device cuda:{e._device})",
                )
                return False
            shapes = self._input_shapes()
            out_shapes = e._output_shapes(shapes)
            addresses = dict(self._addresses)
            self._pending += 1

            def compute() -> None:
                try:
                    feeds = {}
                    for n, s in shapes.items():
                        dt = np.dtype(_NP[e._io[n][1]])
                        raw = fake_cuda.STATE.find_device(
                            addresses[n], int(np.prod(s, dtype=np.int64)) * dt.itemsize
                        )
                        if raw is None or fake_cuda.STATE.device_of_pointer(addresses[n]) != e._device:
                            fake_cuda.illegal_address()
                            return
                        feeds[n] = raw.view(dt).reshape(s).copy()
                    outs = list(out_shapes)
                    for n, v in zip(outs, e._session.run(outs, feeds), strict=True):
                        dt = np.dtype(_NP[e._io[n][1]])
                        raw = fake_cuda.STATE.find_device(addresses[n], v.size * dt.itemsize)
                        if raw is None or fake_cuda.STATE.device_of_pointer(addresses[n]) != e._device:
                            fake_cuda.illegal_address()
                            return
                        raw[...] = np.ascontiguousarray(v, dtype=dt).view(np.uint8).reshape(-1)
                finally:
                    self._pending -= 1

            if not fake_cuda.enqueue_work(stream_handle, compute):
                self._pending -= 1
                _error(
                    e._logger,
                    "IExecutionContext::enqueueV3: Error Code 1: Cuda Runtime (invalid resource handle)",
                )
                return False
            return True

    ns: dict[str, Any] = {
        "__version__": version,
        "DataType": DataType,
        "TensorIOMode": TensorIOMode,
        "MemoryPoolType": MemoryPoolType,
        "ErrorCode": ErrorCode,
        "ILogger": ILogger,
        "Logger": Logger,
        "Dims": Dims,
        "ITensor": ITensor,
        "INetworkDefinition": INetworkDefinition,
        "ParserError": ParserError,
        "OnnxParser": OnnxParser,
        "IOptimizationProfile": IOptimizationProfile,
        "ITimingCache": ITimingCache,
        "IHostMemory": IHostMemory,
        "BuilderFlag": builder_flag,
        "NetworkDefinitionCreationFlag": net_flag,
        "IBuilderConfig": IBuilderConfig,
        "Builder": Builder,
        "Runtime": Runtime,
        "ICudaEngine": ICudaEngine,
        "IExecutionContext": IExecutionContext,
    }
    if major < 11:
        ns["IInt8Calibrator"] = IInt8Calibrator
        ns["IInt8EntropyCalibrator2"] = IInt8EntropyCalibrator2
    mod = types.ModuleType("tensorrt", f"fake tensorrt {version} (tests/trt/fake_tensorrt.py)")
    mod.__dict__.update(ns)
    return mod


class IInt8Calibrator:
    """TensorRT 10's calibrator base: subclasses implement the four methods."""

    def __init__(self) -> None:
        pass

    def get_batch_size(self) -> int:
        raise NotImplementedError

    def get_batch(self, names: list[str]) -> list[int] | None:
        raise NotImplementedError

    def read_calibration_cache(self) -> bytes | None:
        raise NotImplementedError

    def write_calibration_cache(self, cache: Any) -> None:
        raise NotImplementedError


class IInt8EntropyCalibrator2(IInt8Calibrator):
    pass


def _swallowed(what: str, call: Any, default: Any) -> Any:
    """What pyInt8.cpp does around every Python override: an exception is printed and swallowed."""
    try:
        return call()
    except Exception as e:
        print(f"[ERROR] Exception caught in {what}(): {e}", file=sys.stderr)
        return default


def _calibrate(
    calib: IInt8Calibrator,
    network: INetworkDefinition,
    profile: IOptimizationProfile | None,
    logger: ILogger,
) -> int:
    """Drive a calibrator as TensorRT 10 does: batches at the profile's opt shape, read from device memory.

    As in the real bindings (python/src/infer/pyInt8.cpp), an exception raised by ``get_batch`` is
    printed and taken as "no more batches": calibration goes on with what it has.
    """
    if _swallowed("read_calibration_cache", calib.read_calibration_cache, None):
        return 1
    _swallowed("get_batch_size", calib.get_batch_size, -1)
    names = [t.name for t in network._inputs]
    count = 0
    while True:
        ptrs = _swallowed("get_batch", lambda: calib.get_batch(names), None)
        if not ptrs:
            break
        if len(ptrs) != len(names):
            raise RuntimeError("get_batch returned the wrong number of pointers")
        for t, p in zip(network._inputs, ptrs, strict=True):
            shape = tuple(t.shape)
            if profile is not None and t.name in profile._shapes:
                shape = profile._shapes[t.name][1]
            nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(_NP[t.dtype]).itemsize
            if fake_cuda.STATE.find_device(int(p), nbytes) is None:
                fake_cuda.illegal_address()  # TensorRT reads nbytes from the pointer, past the buffer
                _error(
                    logger,
                    f"Error Code 1: Cuda Runtime (an illegal memory access was encountered reading {t.name})",
                )
                return 0
        count += 1
    _swallowed(
        "write_calibration_cache",
        lambda: calib.write_calibration_cache(IHostMemory._make(b"calib:%d" % count)),
        None,
    )
    return count
