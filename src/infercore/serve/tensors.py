"""V2 tensors: datatype names, JSON data, the binary tensor data extension, BYTES framing.

Every decoding failure raises :class:`BadRequest` naming the tensor and what was expected, so the
REST and gRPC fronts turn it into a 400 / INVALID_ARGUMENT and never into a 500.
"""

from __future__ import annotations

import reprlib
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

from ..errors import BadRequest

__all__ = [
    "MAX_ELEMENTS",
    "MAX_RANK",
    "V2_DATATYPES",
    "check_int_range",
    "datatype_of",
    "decode_binary",
    "decode_bytes",
    "decode_json",
    "dtype_of",
    "element_count",
    "encode_binary",
    "encode_bytes",
    "json_data",
    "shown",
]

V2_DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
try:  # bfloat16 has no numpy dtype of its own; ml_dtypes provides the one runtimes use
    import ml_dtypes

    V2_DATATYPES["BF16"] = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - ml_dtypes ships with onnx and openvino
    pass

_BY_DTYPE: dict[np.dtype, str] = {d: name for name, d in V2_DATATYPES.items()}
_LE = {name: d.newbyteorder("<") for name, d in V2_DATATYPES.items() if name != "BYTES"}
_LEN = struct.Struct("<I")
MAX_RANK = 32  # the most dimensions a request tensor may have (numpy 1.x's limit; no model comes close)
# the most elements a shape may declare, zero dimensions left out: numpy cannot even make an empty
# array of shape (0, 2**62, 2**62), and no request body comes near it
MAX_ELEMENTS = (2**63 - 1) // 16

_SHOWN = reprlib.Repr()
_SHOWN.maxlevel, _SHOWN.maxlist, _SHOWN.maxdict = 3, 8, 8
_SHOWN.maxstring, _SHOWN.maxlong, _SHOWN.maxother = 120, 40, 60


def shown(value: Any) -> str:
    """How an error message quotes a value from a request: ``repr`` cut short, so that a value
    nested thousands of levels deep cannot overflow the stack and a huge one cannot flood a log."""
    return _SHOWN.repr(value)


def datatype_of(dtype: np.dtype) -> str:
    """The V2 datatype name of a numpy dtype (``str``/``bytes`` arrays are ``BYTES``)."""
    name = _BY_DTYPE.get(dtype)
    if name is not None:
        return name
    if dtype.kind in "USO":
        return "BYTES"
    raise BadRequest(f"numpy dtype {dtype} has no Open Inference Protocol datatype")


def dtype_of(datatype: str, tensor: str) -> np.dtype:
    try:
        return V2_DATATYPES[datatype]
    except (KeyError, TypeError):
        raise BadRequest(
            f"tensor {tensor!r}: unknown datatype {datatype!r}; V2 datatypes are {', '.join(V2_DATATYPES)}"
        ) from None


def element_count(shape: Sequence[int], tensor: str) -> int:
    if len(shape) > MAX_RANK:
        raise BadRequest(
            f"tensor {tensor!r}: shape has {len(shape)} dimensions, at most {MAX_RANK} are accepted"
        )
    n = nonzero = 1
    for i, d in enumerate(shape):
        if type(d) is not int or d < 0:
            raise BadRequest(
                f"tensor {tensor!r}: shape must be a list of non-negative ints, got {shown(d)} "
                f"at index {i}"
            )
        n *= d
        nonzero *= d or 1
    if nonzero > MAX_ELEMENTS:
        raise BadRequest(
            f"tensor {tensor!r}: shape {list(shape)} declares more elements than an array can hold"
        )
    return n


def check_int_range(arr: np.ndarray, datatype: str, tensor: str) -> None:
    """Refuse integers that ``datatype`` cannot hold, instead of letting a cast wrap them around."""
    if not arr.size:
        return
    info = np.iinfo(V2_DATATYPES[datatype])
    lo, hi = arr.min(), arr.max()
    bad = lo if lo < info.min else hi if hi > info.max else None
    if bad is not None:
        raise BadRequest(
            f"tensor {tensor!r}: value {int(bad)} is out of range for {datatype} [{info.min}, {info.max}]"
        )


# -- JSON --------------------------------------------------------------------------------------
def decode_json(data: Any, datatype: str, shape: Sequence[int], tensor: str) -> np.ndarray:
    """The ``data`` member of a JSON tensor (flat or nested, row-major) as an array of ``shape``.

    Numbers that ``datatype`` cannot represent (an INT8 of 300, a UINT64 of -1, an FP32 of 1e300)
    are refused, never wrapped around or turned into infinity."""
    dtype = dtype_of(datatype, tensor)
    count = element_count(shape, tensor)
    if not isinstance(data, list):
        data = [data]
    try:
        if datatype == "BYTES":
            flat = _flatten(data)
            arr = np.empty(len(flat), dtype=object)
            arr[:] = flat
            for i, v in enumerate(flat):
                if not isinstance(v, str):
                    raise BadRequest(
                        f"tensor {tensor!r}: BYTES data must be strings, element {i} is {shown(v)}"
                    )
                if not v.isascii():
                    _check_text(v, i, tensor)
        elif datatype == "BOOL":
            arr = np.asarray(data)
            if arr.size and arr.dtype != np.bool_:
                raise BadRequest(f"tensor {tensor!r}: BOOL data must be true/false, got {arr.dtype} values")
            arr = arr.astype(np.bool_)
        else:
            arr = np.asarray(data)
            if arr.dtype == np.bool_ or (data and not isinstance(data[0], list) and bool in set(map(type, data))):
                # JSON true/false is not a number (Triton refuses it too); numpy would read it as 1/0
                raise BadRequest(f"tensor {tensor!r}: {datatype} data must be numbers, got true/false")
            if dtype.kind in "iu" and arr.dtype.kind in "fO":
                # integers beyond int64 (UINT64's upper half, or out of every range) make numpy
                # guess float64 or object: read them as Python ints and check them exactly
                arr = _json_ints(data, datatype, tensor)
            if arr.size and arr.dtype.kind not in "biuf":
                raise BadRequest(
                    f"tensor {tensor!r}: {datatype} data must be numbers, got {arr.dtype} values"
                )
            if dtype.kind in "iu":
                check_int_range(arr, datatype, tensor)
                arr = arr.astype(dtype)
            else:
                arr = _to_float(arr, dtype, datatype, tensor)
    except BadRequest:
        raise
    except (ValueError, TypeError, OverflowError) as e:
        raise BadRequest(f"tensor {tensor!r}: cannot read data as {datatype}: {e}") from None
    if arr.size != count:
        raise BadRequest(
            f"tensor {tensor!r}: shape {list(shape)} needs {count} elements, the data has {arr.size}"
        )
    return arr.reshape(tuple(shape))


def _json_ints(data: list[Any], datatype: str, tensor: str) -> np.ndarray:
    flat = _flatten(data)
    info = np.iinfo(V2_DATATYPES[datatype])
    for i, v in enumerate(flat):
        if type(v) is float:
            # JSON parsers hand integers beyond 64 bits over as floats: those are out of range
            if not (v.is_integer() and not info.min <= v <= info.max):
                raise BadRequest(f"tensor {tensor!r}: {datatype} data must be integers, got {v!r}")
            flat[i] = int(v)
        elif type(v) is not int and type(v) is not bool:
            raise BadRequest(
                f"tensor {tensor!r}: {datatype} data must be numbers, got {type(v).__name__} values"
            )
    for v in flat:
        if not info.min <= v <= info.max:
            raise BadRequest(
                f"tensor {tensor!r}: value {shown(v)} is out of range for {datatype} "
                f"[{info.min}, {info.max}]"
            )
    if len(flat) != np.asarray(data, dtype=object).size:
        raise BadRequest(f"tensor {tensor!r}: nested data must be a regular (non-ragged) list")
    return np.array(flat, dtype=V2_DATATYPES[datatype])


def _check_text(v: str, i: int, tensor: str) -> None:
    """A JSON string may hold a lone UTF-16 surrogate (``"\\ud800"``): text no model can take."""
    try:
        v.encode("utf-8")
    except UnicodeEncodeError as e:
        raise BadRequest(
            f"tensor {tensor!r}: BYTES element {i} is not valid Unicode text: {e.reason} at "
            f"character {e.start}"
        ) from None


def _to_float(arr: np.ndarray, dtype: np.dtype, datatype: str, tensor: str) -> np.ndarray:
    """A cast to FP16/BF16/FP32/FP64 that refuses finite values too large for the type."""
    with np.errstate(over="ignore", invalid="ignore"):
        out = arr.astype(dtype)
    if out.size and not np.isfinite(out).all():
        src = arr.astype(np.float64)
        overflow = ~np.isfinite(out.astype(np.float64)) & np.isfinite(src)
        if overflow.any():
            bad = float(src[overflow][0])
            biggest = float(_finfo(dtype).max)
            raise BadRequest(
                f"tensor {tensor!r}: value {bad!r} is out of range for {datatype} "
                f"(largest finite magnitude {biggest:.6g})"
            )
    return out


def _flatten(data: list[Any]) -> list[Any]:
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for v in stack[-1]:
            if isinstance(v, list):
                stack.append(iter(v))
                break
            out.append(v)
        else:
            stack.pop()
    return out


def _finfo(dtype: np.dtype) -> Any:
    if dtype.name == "bfloat16":
        import ml_dtypes

        return ml_dtypes.finfo(dtype)
    return np.finfo(dtype)


def json_data(arr: np.ndarray) -> Any:
    """A flat, JSON-ready view of an output (orjson serializes numeric numpy arrays natively).

    JSON has no infinity or NaN, and orjson would write them as ``null``; like Triton, outputs
    that hold them are written with the tokens ``NaN``, ``Infinity`` and ``-Infinity``, which
    Python's ``json``, ``rapidjson`` (``tritonclient.http``) and JavaScript's JSON5 parsers read."""
    if arr.dtype.hasobject or arr.dtype.kind in "US":
        return [
            v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in arr.ravel().tolist()
        ]
    if arr.dtype.name == "bfloat16":
        arr = arr.astype(np.float32)
    flat = np.ascontiguousarray(arr).ravel()
    if flat.dtype.kind != "f":
        return flat
    finite = np.isfinite(flat)
    if finite.all():
        return flat
    parts = orjson.dumps(np.where(finite, flat, 0), option=orjson.OPT_SERIALIZE_NUMPY)[1:-1].split(b",")
    for i in np.flatnonzero(~finite).tolist():
        v = flat[i]
        parts[i] = b"NaN" if np.isnan(v) else b"Infinity" if v > 0 else b"-Infinity"
    return orjson.Fragment(b"[" + b",".join(parts) + b"]")


# -- binary ------------------------------------------------------------------------------------
def decode_binary(raw: bytes | memoryview, datatype: str, shape: Sequence[int], tensor: str) -> np.ndarray:
    """Raw little-endian tensor bytes (BYTES: 4-byte length-prefixed elements) as an array."""
    count = element_count(shape, tensor)
    if datatype == "BYTES":
        return decode_bytes(raw, count, tensor).reshape(tuple(shape))
    dtype = _LE.get(datatype)
    if dtype is None:
        dtype_of(datatype, tensor)  # raises with the list of datatypes
        raise AssertionError
    want = count * dtype.itemsize
    if len(raw) != want:
        raise BadRequest(
            f"tensor {tensor!r}: {datatype} {list(shape)} is {want} bytes, the binary data has {len(raw)}"
        )
    arr = np.frombuffer(raw, dtype=dtype).reshape(tuple(shape))
    return arr if dtype.isnative else arr.astype(dtype.newbyteorder("="))


def decode_bytes(raw: bytes | memoryview, count: int, tensor: str) -> np.ndarray:
    mv = memoryview(raw)
    if 4 * count > len(mv):  # before allocating: a huge count with a tiny body is a bad request
        raise BadRequest(
            f"tensor {tensor!r}: {count} BYTES elements need at least {4 * count} bytes, "
            f"the binary data has {len(mv)}"
        )
    out = np.empty(count, dtype=object)
    pos, end = 0, len(mv)
    for i in range(count):
        if pos + 4 > end:
            raise BadRequest(f"tensor {tensor!r}: BYTES data ends after {i} of {count} elements")
        (n,) = _LEN.unpack_from(mv, pos)
        pos += 4
        if pos + n > end:
            raise BadRequest(
                f"tensor {tensor!r}: BYTES element {i} claims {n} bytes, only {end - pos} remain"
            )
        out[i] = bytes(mv[pos : pos + n])
        pos += n
    if pos != end:
        raise BadRequest(f"tensor {tensor!r}: {end - pos} bytes left after {count} BYTES elements")
    return out


def encode_bytes(arr: np.ndarray) -> bytes:
    parts: list[bytes] = []
    for v in arr.ravel().tolist():
        b = v if isinstance(v, bytes) else str(v).encode("utf-8")
        parts.append(_LEN.pack(len(b)))
        parts.append(b)
    return b"".join(parts)


def encode_binary(arr: np.ndarray) -> bytes | memoryview:
    """An output's raw bytes, little-endian, row-major (no copy for contiguous native arrays)."""
    if arr.dtype.hasobject or arr.dtype.kind in "US":
        return encode_bytes(arr)
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return np.ascontiguousarray(arr).reshape(-1).view(np.uint8).data
