"""Fuzzing the server's own decoders: thousands of requests mutated from valid seeds, against a real
server on the tiny models of ``conftest``. No mutated request may get a 5xx (REST) or an
INTERNAL/UNKNOWN status (gRPC), nor hang; afterwards the server still answers a valid request with
the outputs of the raw runtime and of numpy.

The mutations are drawn from a seeded ``random.Random``, so a failure reproduces: each message
names the decoder and the index of the case (``_rest_cases(SEED, REST_CASES)`` etc. rebuild the same
list). The default run sends 2000 requests per decoder in a few seconds; for a longer hunt, set
``INFERCORE_FUZZ_SCALE=20`` (20 times as many) and ``INFERCORE_FUZZ_SEED`` (other mutations).
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from .conftest import affine

httpx = pytest.importorskip("httpx")
grpc = pytest.importorskip("grpc")
ort = pytest.importorskip("onnxruntime")

from infercore.serve.grpc_service import messages as pb  # noqa: E402

SEED = int(os.environ.get("INFERCORE_FUZZ_SEED", "20261214"))
_SCALE = int(os.environ.get("INFERCORE_FUZZ_SCALE", "1"))
REST_CASES = BINARY_CASES = GRPC_CASES = 2000 * _SCALE
TIMEOUT = 20  # seconds for one request: a hang fails the test instead of stalling the suite

X = (np.arange(8, dtype=np.float32).reshape(2, 4) - 3.5) / 2
STRINGS = ["a", "héllo", ""]


# -- nasty values ------------------------------------------------------------------------------------
class Raw:
    """JSON text spliced in verbatim: nesting deeper than a serializer allows, NaN tokens, junk."""

    def __init__(self, text: str) -> None:
        self.text = text


def _deep(depth: int, inner: str = "1", kind: str = "[") -> Raw:
    close = "]" if kind == "[" else "}"
    if kind == "{":
        return Raw('{"a":' * depth + inner + close * depth)
    return Raw(kind * depth + inner + close * depth)


NASTY: list[Any] = [
    None, True, False, 0, -1, 1, 3, 2**31, 2**32 + 4, 2**53 + 1, 2**63 - 1, 2**63, 2**64, -(2**63) - 1,
    10**30, -(10**30), 1.5, -0.0, 1e308, 5e-324, -1e308, math.nan, math.inf, -math.inf,
    "", "x", "y", "idx", "s", "FP32", "FP16", "BF16", "FP64", "INT8", "UINT64", "BOOL", "BYTES",
    "fp32", "STRING", "\ud800", "x\udfff\ud800", "\x00", "é€𝄞", "\u202e", "a" * 5000, "1", "-1",
    [], {}, [[]], [None], [-1], [0], [-1, 4], [2**63 - 1, 4], [0, 2**62, 2**62], [2**40, 4], [1] * 40,
    [1.5, 4], ["2", "4"], [True, 4], [[2], [4]], {"a": 1}, {"binary_data_size": 2**62},
    {"binary_data_size": -1}, {"classification": 2}, {"binary_data": "yes"}, {"timeout": "1"},
    Raw("NaN"), Raw("-Infinity"), Raw("1e999"), Raw("-0"), Raw("123456789012345678901234567890"),
    Raw('"\\ud800"'), Raw('"\\udc00\\ud800x"'), Raw('"\\u0000"'), Raw("[1,2"), Raw("{"),
    _deep(100), _deep(1000), _deep(1000, kind="{"), _deep(1023), _deep(1025), _deep(5000), _deep(50_000),
    _deep(3000, kind="{"),
    _deep(900, '"\\ud800"'), _deep(30, "[" * 2 + "]" * 2),
]


UNICODE_EDGES = ["\ud800", "a\udfff", "\udc00\ud800", "\x00", "\u202e", "é€𝄞", "\ufeff", "\uffff", "\U0010ffff",
                 "a\r\nb: c", "\\", '"', "\u0301"]
SHAPES = [[2**40, 4], [0, 2**62, 2**62], [0, 2**63], [2**62, 2**62], [2**63 - 1], [-1, 4], [-2, -4], [0], [],
          [1] * 40, [2, 4, 0, 2**62], [3], [1, 2**31], [10**6, 10**6], [8], [4, 2], [0, 4], [1, 3]]
NUMBER_EDGES = [0, -1, 1, -0.0, 0.5, 2**31, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63) - 1, 10**25, 1e308,
                -1e308, 5e-324, 65505.0, 3.5e38, math.nan, math.inf, -math.inf, True]


def _dumps(obj: Any, rng: random.Random) -> bytes:
    """JSON bytes, with :class:`Raw` parts spliced in and lone surrogates written as the escapes
    a client would send (or, now and then, as invalid CESU-8 bytes)."""
    raws: list[str] = []

    def default(o: Any) -> Any:
        if isinstance(o, Raw):
            raws.append(o.text)
            return f"@@RAW{len(raws) - 1}@@"
        raise TypeError(type(o))

    ascii_only = rng.random() < 0.7
    text = json.dumps(obj, default=default, ensure_ascii=ascii_only, allow_nan=True)
    for i, r in enumerate(raws):
        text = text.replace(f'"@@RAW{i}@@"', r, 1)
    return text.encode("utf-8", "surrogatepass")


# -- structural mutations of a JSON document -----------------------------------------------------
def _nodes(obj: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    yield path, obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _nodes(v, (*path, k))
    elif isinstance(obj, list) and len(obj) <= 64:
        for i, v in enumerate(obj):
            yield from _nodes(v, (*path, i))


def _set(obj: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    parent = obj
    for k in path[:-1]:
        parent = parent[k]
    parent[path[-1]] = value
    return obj


def _delete(obj: Any, path: tuple) -> Any:
    if not path:
        return obj
    parent = obj
    for k in path[:-1]:
        parent = parent[k]
    del parent[path[-1]]
    return obj


def _mutate_tree(obj: Any, rng: random.Random) -> Any:
    obj = copy.deepcopy(obj)
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        nodes = list(_nodes(obj))
        path, node = rng.choice(nodes)
        op = rng.random()
        leaves = [(p, v) for p, v in nodes if isinstance(v, str | int | float)]
        data = [(p, v) for p, v in leaves if "data" in p]
        shapes = [(p, v) for p, v in nodes if p and p[-1] == "shape"]
        if op < 0.1 and shapes:  # a declared shape that cannot be right
            obj = _set(obj, rng.choice(shapes)[0], copy.deepcopy(rng.choice(SHAPES)))
        elif op < 0.3 and leaves:  # a leaf (often a tensor element) swapped for an edge case of its kind
            path, node = rng.choice(data if data and rng.random() < 0.5 else leaves)
            edges = UNICODE_EDGES if isinstance(node, str) else NUMBER_EDGES
            obj = _set(obj, path, rng.choice(edges) if rng.random() < 0.8 else f"{node}{rng.choice(edges)}")
        elif op < 0.5:
            obj = _set(obj, path, copy.deepcopy(rng.choice(NASTY)))
        elif op < 0.6 and path:
            obj = _delete(obj, path)
        elif op < 0.7 and isinstance(node, dict):
            key = rng.choice(["data", "parameters", "shape", "datatype", "name", "id", "inputs", "outputs",
                              "binary_data_size", "timeout", "priority", "zz", "\ud800"])
            node[key] = copy.deepcopy(rng.choice(NASTY))
        elif op < 0.8 and isinstance(node, list) and node:
            node.insert(rng.randrange(len(node) + 1), copy.deepcopy(rng.choice(node)))
        elif op < 0.87:
            obj = _set(obj, path, [node])  # wrap
        elif op < 0.94 and isinstance(node, list | dict) and node:
            obj = _set(obj, path, next(iter(node.values())) if isinstance(node, dict) else node[0])
        else:  # type swap
            swapped = (
                str(node) if isinstance(node, int | float) and not isinstance(node, bool)
                else list(node.values()) if isinstance(node, dict)
                else {str(i): v for i, v in enumerate(node)} if isinstance(node, list)
                else len(node) if isinstance(node, str)
                else "true"
            )
            obj = _set(obj, path, swapped)
    return obj


def _mutate_bytes(raw: bytes, rng: random.Random) -> bytes:
    b = bytearray(raw)
    for _ in range(rng.choice((1, 1, 2, 4))):
        op = rng.random()
        i = rng.randrange(len(b) + 1)
        if op < 0.3 and b:
            j = min(i, len(b) - 1)
            b[j] ^= 1 << rng.randrange(8)
        elif op < 0.5 and b:
            j = min(i, len(b) - 1)
            b[j] = rng.choice(b'"[]{},:\\0\x00\xff\xc0\xed-eE.')
        elif op < 0.65:
            del b[i:]
        elif op < 0.8:
            b[i:i] = rng.choice([b"[", b"]", b"{", b'"', b"\\u", b"\\ud800", b"NaN", b",", b"\xf0\x9f",
                                 b"9" * 30, b"-", b"\x00" * 4, b"\xff\xff\xff\xff"])
        elif b:
            j = rng.randrange(len(b))
            k = min(len(b), j + rng.randrange(1, 16))
            if rng.random() < 0.5:
                del b[j:k]
            else:
                b[j:j] = b[j:k]
    return bytes(b)


# -- REST JSON -----------------------------------------------------------------------------------
def _rest_seeds() -> list[tuple[str, dict[str, Any]]]:
    return [
        ("affine", {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 4], "data": X.ravel().tolist()}]}),
        (
            "affine",
            {
                "id": "r-1",
                "inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 4], "data": X.tolist()}],
                "outputs": [{"name": "y"}, {"name": "idx", "parameters": {"binary_data": False}}],
                "parameters": {"timeout": 10_000_000, "priority": 1, "binary_data_output": False},
            },
        ),
        ("affine", {"inputs": [{"name": "x", "datatype": "INT64", "shape": [1, 4], "data": [1, 2, 3, 4]}]}),
        ("affine", {"inputs": [{"name": "x", "datatype": "BOOL", "shape": [4], "data": [True, False, True, True]}]}),
        ("affine", {"inputs": [{"name": "x", "datatype": "UINT64", "shape": [1, 2], "data": [2**64 - 1, 0]}]}),
        ("affine", {"inputs": [{"name": "x", "datatype": "FP16", "shape": [1, 4], "data": [0.5, -1, 65504, 0]}]}),
        ("affine", {"inputs": [{"name": "x", "datatype": "FP32", "shape": [0, 4], "data": []}]}),
        ("strings", {"inputs": [{"name": "s", "datatype": "BYTES", "shape": [3], "data": STRINGS}]}),
        ("strings", {"inputs": [{"name": "s", "datatype": "BYTES", "shape": [0], "data": []}]}),
        ("strings", {"id": "s", "inputs": [{"name": "s", "datatype": "BYTES", "shape": [1, 3], "data": [STRINGS]}],
                     "outputs": [{"name": "out", "parameters": {"binary_data": True}}]}),
    ]


Case = tuple[str, bytes, dict[str, Any]]  # (path, body, headers)
VERSIONS = ["2", "1", "0", "abc", "99999999999999999999", "-1", "%00", "%ED%A0%80", "%C3%A9", "2%20"]


def _infer_path(model: str, rng: random.Random) -> str:
    if rng.random() < 0.05:
        return f"/v2/models/{model}/versions/{rng.choice(VERSIONS)}/infer"
    return f"/v2/models/{model}/infer"


def _rest_cases(seed: int, n: int) -> list[Case]:
    """Inference requests (and, one in twenty, repository index requests) mutated as JSON trees,
    as bytes, or both."""
    rng = random.Random(seed)
    cases = []
    for _ in range(n):
        if rng.random() < 0.05:
            path, body = "/v2/repository/index", {"ready": True}
        else:
            model, body = rng.choice(_rest_seeds())
            path = _infer_path(model, rng)
        how = rng.random()
        if how < 0.6:
            raw = _dumps(_mutate_tree(body, rng), rng)
        elif how < 0.85:
            raw = _mutate_bytes(_dumps(body, rng), rng)
        else:
            raw = _mutate_bytes(_dumps(_mutate_tree(body, rng), rng), rng)
        headers = {"content-type": "application/json"}
        if rng.random() < 0.03:
            headers["content-encoding"] = rng.choice(["gzip", "br", "identity", ""])
        cases.append((path, raw, headers))
    return cases


# -- the binary tensor data extension -----------------------------------------------------------
def _bytes_elements(values: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


def _binary_seeds() -> list[tuple[str, dict[str, Any], bytes]]:
    def one(model: str, name: str, datatype: str, shape: list[int], blob: bytes, **extra: Any):
        t = {"name": name, "datatype": datatype, "shape": shape, "parameters": {"binary_data_size": len(blob)}}
        return model, {"inputs": [t], **extra}, blob

    seeds = [
        one("affine", "x", "FP32", [2, 4], X.tobytes(),
            outputs=[{"name": "y", "parameters": {"binary_data": True}}, {"name": "idx"}]),
        one("affine", "x", "FP32", [2, 4], X.tobytes(), parameters={"binary_data_output": True}),
        one("strings", "s", "BYTES", [3], _bytes_elements([s.encode() for s in STRINGS]),
            outputs=[{"name": "out", "parameters": {"binary_data": True}}]),
        one("strings", "s", "BYTES", [2], _bytes_elements([b"\xff\xfe", b"ok"])),  # not UTF-8
        one("strings", "s", "BYTES", [0], b""),
        one("affine", "x", "FP32", [0, 4], b""),
    ]
    for datatype, dtype in [("FP64", np.float64), ("FP16", np.float16), ("BF16", np.uint16),
                            ("INT8", np.int8), ("UINT32", np.uint32), ("BOOL", np.bool_)]:
        seeds.append(one("affine", "x", datatype, [2, 4], np.ones(8, dtype).tobytes()))
    # two inputs back to back (the second unknown to the model), one in JSON beside a binary one
    _, header, blob = seeds[0]
    header = copy.deepcopy(header)
    header["inputs"].append({"name": "z", "datatype": "INT32", "shape": [3], "parameters": {"binary_data_size": 12}})
    seeds.append(("affine", header, blob + np.arange(3, dtype=np.int32).tobytes()))
    header = copy.deepcopy(header)
    header["inputs"][1] = {"name": "z", "datatype": "INT32", "shape": [3], "data": [1, 2, 3]}
    seeds.append(("affine", header, blob))
    return seeds


def _binary_cases(seed: int, n: int) -> list[Case]:
    rng = random.Random(seed)
    seeds = _binary_seeds()
    cases = []
    for _ in range(n):
        model, header, blob = rng.choice(seeds)
        header = copy.deepcopy(header)
        inputs = header["inputs"]
        t = rng.choice(inputs)
        op = rng.random()
        if op < 0.12:  # a declared shape that does not match the bytes: huge, negative, many dims
            t["shape"] = copy.deepcopy(rng.choice([*SHAPES, [2, 4, 0, 2**70], [2, "4"], [2.0, 4]]))
        elif op < 0.22:  # the datatype says one size, the bytes are another's
            t["datatype"] = rng.choice(["FP64", "FP16", "BF16", "INT8", "UINT64", "BOOL", "BYTES", "FP32",
                                        "INT4", "", "fp32"])
        elif op < 0.34:  # binary_data_size wrong
            size = t.get("parameters", {}).get("binary_data_size", 0)
            t.setdefault("parameters", {})["binary_data_size"] = rng.choice(
                [size + 1, size - 1, 0, -1, 2**31, 2**64, len(blob) * 2, 1.5, "8", None, True]
            )
        elif op < 0.44 and model == "strings":  # BYTES elements whose length prefixes lie
            pos = rng.choice([0, 4 + 1, 4 + 1 + 4 + 6]) if len(blob) > 16 else 0
            bad = rng.choice([0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, len(blob), max(0, len(blob) - pos - 3), 0])
            blob = blob[:pos] + struct.pack("<I", bad) + blob[pos + 4 :]
        elif op < 0.56:  # the binary section cut short, or longer than the header says
            blob = blob[: rng.randrange(len(blob) + 1)] if rng.random() < 0.6 else blob + bytes(rng.randrange(1, 9))
        elif op < 0.66:  # bytes flipped inside the tensor data
            b = bytearray(blob)
            for _ in range(rng.randrange(1, 5)):
                if b:
                    b[rng.randrange(len(b))] ^= 0xFF
            blob = bytes(b)
        elif op < 0.76:  # JSON data beside binary_data_size, or neither
            if rng.random() < 0.5:
                t["data"] = [1, 2, 3, 4, 5, 6, 7, 8]
            else:
                t.get("parameters", {}).pop("binary_data_size", None)
        else:
            header = _mutate_tree(header, rng)
        head = _dumps(header, rng)
        hlen: Any = len(head)
        if rng.random() < 0.2:  # Inference-Header-Content-Length itself wrong
            hlen = rng.choice([hlen + 1, hlen - 1, 0, len(head) + len(blob) + 1, -1, "abc", "1 2", "1e3",
                               "99999999999999999999999", "", "0x10", "١٢"])
        body = head + blob
        if rng.random() < 0.15:
            body = _mutate_bytes(body, rng)
        headers = {"content-type": "application/octet-stream", "inference-header-content-length": str(hlen).encode()}
        cases.append((_infer_path(model, rng), body, headers))
    return cases


# -- gRPC ModelInferRequest --------------------------------------------------------------------
def _grpc_seeds() -> list[Any]:
    def req(model: str, **kw: Any) -> Any:
        return pb.ModelInferRequest(model_name=model, **kw)

    T = pb.ModelInferRequest.InferInputTensor
    raw_x = req("affine", id="g1", inputs=[T(name="x", datatype="FP32", shape=[2, 4])],
                raw_input_contents=[X.tobytes()])
    typed_x = req("affine", inputs=[T(name="x", datatype="FP32", shape=[2, 4],
                                      contents=pb.InferTensorContents(fp32_contents=X.ravel().tolist()))])
    typed_x.outputs.add(name="idx")
    typed_x.parameters["timeout"].int64_param = 10_000_000
    typed_x.parameters["priority"].int64_param = 1
    raw_s = req("strings", inputs=[T(name="s", datatype="BYTES", shape=[3])],
                raw_input_contents=[_bytes_elements([s.encode() for s in STRINGS])])
    typed_s = req("strings", model_version="1",
                  inputs=[T(name="s", datatype="BYTES", shape=[3],
                            contents=pb.InferTensorContents(bytes_contents=[s.encode() for s in STRINGS]))])
    int_x = req("affine", inputs=[T(name="x", datatype="INT8", shape=[1, 4],
                                    contents=pb.InferTensorContents(int_contents=[1, -2, 3, 127]))])
    empty_x = req("affine", inputs=[T(name="x", datatype="FP32", shape=[0, 4])], raw_input_contents=[b""])
    empty_s = req("strings", inputs=[T(name="s", datatype="BYTES", shape=[0])])
    return [raw_x, typed_x, raw_s, typed_s, int_x, empty_x, empty_s]


_CONTENT_FIELDS = {
    "bool_contents": [True, False], "int_contents": [1, -(2**31), 2**31 - 1, 300],
    "int64_contents": [2**63 - 1, -(2**63)], "uint_contents": [0, 2**32 - 1], "uint64_contents": [2**64 - 1],
    "fp32_contents": [math.nan, math.inf, 3.4e38, -0.0], "fp64_contents": [1e308, math.nan, -math.inf],
    "bytes_contents": [b"", b"\xff", "é".encode()],
}


def _set_param(p: Any, rng: random.Random) -> None:
    which = rng.choice(["bool_param", "int64_param", "string_param", "double_param", "uint64_param"])
    value = {
        "bool_param": rng.choice([True, False]),
        "int64_param": rng.choice([0, -1, 1, 2**63 - 1, -(2**63), 86_400_000_001]),
        "string_param": rng.choice(["", "1", "high", "é€", "{", '{"a": 1}', "\x00"]),
        "double_param": rng.choice([math.nan, math.inf, -math.inf, -1.0, 0.5, 1e300, 86_400_000_000.0]),
        "uint64_param": rng.choice([0, 1, 2**64 - 1, 2**63]),
    }[which]
    setattr(p, which, value)


def _mutate_grpc(request: Any, rng: random.Random) -> Any:
    r = pb.ModelInferRequest()
    r.CopyFrom(request)
    for _ in range(rng.choice((1, 1, 2, 3))):
        op = rng.random()
        t = rng.choice(r.inputs) if r.inputs else r.inputs.add(name="x", datatype="FP32")
        if op < 0.14:
            del t.shape[:]
            shape = rng.choice([*SHAPES, [-(2**63)], [2**62, 2**62, 2**62]])
            t.shape.extend(d if d < 2**63 else 2**63 - 1 for d in shape)  # int64 on the wire
        elif op < 0.26:
            t.datatype = rng.choice(["FP64", "FP16", "BF16", "INT8", "INT64", "UINT64", "BOOL", "BYTES", "FP32",
                                     "UINT8", "INT4", "", "fp32", "FP32\x00", "é"])
        elif op < 0.4:  # raw_input_contents: one too many or too few, cut, grown, flipped
            raw = list(r.raw_input_contents)
            kind = rng.random()
            if kind < 0.25:
                raw.append(bytes(rng.randrange(0, 33)))
            elif kind < 0.4 and raw:
                raw.pop()
            elif raw:
                i = rng.randrange(len(raw))
                b = bytearray(raw[i])
                if kind < 0.6:
                    del b[rng.randrange(len(b) + 1) :]
                elif kind < 0.75:
                    b += bytes(rng.randrange(1, 9))
                elif kind < 0.85 and len(b) >= 4:
                    b[0:4] = struct.pack("<I", rng.choice([0xFFFFFFFF, 0x7FFFFFFF, len(b), 0]))
                elif b:
                    b[rng.randrange(len(b))] ^= 0xFF
                raw[i] = bytes(b)
            else:
                raw = [X.tobytes()]
            del r.raw_input_contents[:]
            r.raw_input_contents.extend(raw)
        elif op < 0.55:  # typed contents in the wrong field, in several fields, beside raw contents
            field = rng.choice(list(_CONTENT_FIELDS))
            if rng.random() < 0.15:
                t.ClearField("contents")
            getattr(t.contents, field).extend([rng.choice(_CONTENT_FIELDS[field])] * rng.randrange(1, 9))
        elif op < 0.67:  # request, input and output parameters of every kind
            where = rng.random()
            if where < 0.6:
                key = rng.choice(["timeout", "priority", "binary_data_output", "sequence_id", "é"])
                _set_param(r.parameters[key], rng)
            elif where < 0.8:
                _set_param(t.parameters[rng.choice(["binary_data_size", "shared_memory_region", "x"])], rng)
            else:
                o = r.outputs.add(name=rng.choice(["y", "idx", "out", "", "nope"]))
                _set_param(o.parameters[rng.choice(["classification", "binary_data"])], rng)
        elif op < 0.77:  # model, version, id
            kind = rng.random()
            if kind < 0.4:
                r.model_version = rng.choice(["0", "1", "2", "3", "-1", "abc", " 2", "٢", "99999999999999999999999"])
            elif kind < 0.7:
                r.model_name = rng.choice(["", "nope", "affine ", "../affine", "é€𝄞", "affine\x00"])
            else:
                r.id = rng.choice(["", "é€𝄞", "a\r\nb: c", "x" * 5000, "\x00"])
        elif op < 0.87:  # inputs: renamed, duplicated, removed, added
            kind = rng.random()
            if kind < 0.3:
                t.name = rng.choice(["", "y", "s", "x", "é", "x\x00"])
            elif kind < 0.6:
                r.inputs.add().CopyFrom(t)
            elif kind < 0.8:
                del r.inputs[rng.randrange(len(r.inputs))]
            else:
                r.inputs.add(name="z", datatype="INT32", shape=[2], contents=pb.InferTensorContents(int_contents=[1, 2]))
        else:  # outputs
            r.outputs.add(name=rng.choice(["y", "idx", "out", "", "nope", "y"]))
    return r


def _grpc_cases(seed: int, n: int) -> list[tuple[str, bool, bytes]]:
    """``(method, mutated on the wire, serialized request)``: most mutations are of the message,
    some of its serialized bytes (then the server's deserializer is what is fuzzed, for ModelInfer
    and, now and then, for the read-only ModelMetadata and ModelReady)."""
    rng = random.Random(seed)
    seeds = _grpc_seeds()
    cases = []
    for _ in range(n):
        request = rng.choice(seeds)
        if rng.random() < 0.85:
            cases.append(("ModelInfer", False, _mutate_grpc(request, rng).SerializeToString()))
        else:
            raw = request.SerializeToString() if rng.random() < 0.5 else _mutate_grpc(request, rng).SerializeToString()
            method = "ModelInfer" if rng.random() < 0.8 else rng.choice(["ModelMetadata", "ModelReady"])
            cases.append((method, True, _mutate_bytes(raw, rng)))
    return cases


# -- the checks ----------------------------------------------------------------------------------
def _raw_runtime(repo: Path) -> dict[str, Callable[..., dict[str, np.ndarray]]]:
    """The served models run by ONNX Runtime itself: the reference the server must match."""

    def session(path: Path) -> Callable[..., dict[str, np.ndarray]]:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        return lambda **feeds: dict(zip(names, sess.run(None, feeds), strict=True))

    return {"affine": session(repo / "affine" / "2" / "model.onnx"), "strings": session(repo / "strings" / "1" / "model.onnx")}


def _still_serves(server: Any, repo: Path) -> None:
    """A valid request over each front answers what the raw runtime and numpy answer."""
    ref = _raw_runtime(repo)
    x = np.random.default_rng(7).standard_normal((3, 4)).astype(np.float32)
    want = ref["affine"](x=x)
    np.testing.assert_allclose(want["y"], affine(x, 3.0)["y"], rtol=1e-6)  # the reference is right
    np.testing.assert_array_equal(want["idx"], affine(x, 3.0)["idx"])
    base = f"http://127.0.0.1:{server.ports['http']}/v2/models"
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [3, 4], "data": x.ravel().tolist()}]}
    r = httpx.post(f"{base}/affine/infer", json=body, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    got = {o["name"]: np.array(o["data"]).reshape(o["shape"]) for o in r.json()["outputs"]}
    np.testing.assert_allclose(got["y"], want["y"], rtol=1e-6)
    np.testing.assert_array_equal(got["idx"], want["idx"])
    s = np.array(["héllo", "", "€"], dtype=object)
    r = httpx.post(f"{base}/strings/infer", json={"inputs": [{"name": "s", "datatype": "BYTES", "shape": [3],
                                                              "data": s.tolist()}]}, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == ref["strings"](s=s)["out"].tolist()
    with grpc.insecure_channel(f"127.0.0.1:{server.ports['grpc']}") as channel:
        call = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        T = pb.ModelInferRequest.InferInputTensor
        resp = call(
            pb.ModelInferRequest(model_name="affine", inputs=[T(name="x", datatype="FP32", shape=[3, 4])],
                                 raw_input_contents=[x.tobytes()]),
            timeout=TIMEOUT,
        )
    out = {o.name: (o, raw) for o, raw in zip(resp.outputs, resp.raw_output_contents, strict=True)}
    y = np.frombuffer(out["y"][1], np.float32).reshape(list(out["y"][0].shape))
    np.testing.assert_allclose(y, want["y"], rtol=1e-6)
    np.testing.assert_array_equal(np.frombuffer(out["idx"][1], np.int64), want["idx"])


def _well_answered(r: Any, path: str) -> bool:
    """A 400 with a JSON error message, or a 200 whose answer parses (the index's rows; an
    inference's JSON header, and binary outputs whose sizes add up to the body); a request deadline
    (the ``timeout`` parameter) that passes is the one 5xx a mutation may earn."""
    try:
        if r.status_code in (400, 504):
            error = r.json()["error"]
            return isinstance(error, str) and bool(error) and (r.status_code == 400 or "deadline passed" in error)
        if r.status_code != 200:
            return False
        if path == "/v2/repository/index":
            return all(row["state"] == "READY" for row in r.json()) and bool(r.json())
        hlen = int(r.headers.get("inference-header-content-length", len(r.content)))
        head = json.loads(r.content[:hlen])
        sizes = [o.get("parameters", {}).get("binary_data_size", 0) for o in head["outputs"]]
        return bool(head["outputs"]) and sum(sizes) == len(r.content) - hlen
    except (ValueError, KeyError, TypeError, AttributeError):
        return False


def _http_fuzz(server: Any, cases: list[Case], what: str) -> None:
    base = f"http://127.0.0.1:{server.ports['http']}"
    failures = []
    with httpx.Client(timeout=TIMEOUT) as client:
        for i, (path, body, headers) in enumerate(cases):
            try:
                r = client.post(base + path, content=body, headers=headers)
            except httpx.HTTPError as e:
                failures.append(f"{what} case {i} {path}: {type(e).__name__}: {e}; body[:200]={body[:200]!r}")
                continue
            if not _well_answered(r, path):
                failures.append(f"{what} case {i} {path}: {r.status_code} {r.text[:300]}; body[:200]={body[:200]!r}")
    assert not failures, f"{len(failures)} of {len(cases)} {what} requests failed:\n" + "\n".join(failures[:25])


def test_fuzz_rest_json(server, repo):
    _http_fuzz(server, _rest_cases(SEED, REST_CASES), "REST JSON")
    _still_serves(server, repo)


def test_fuzz_binary_tensor_extension(server, repo):
    _http_fuzz(server, _binary_cases(SEED + 1, BINARY_CASES), "binary extension")
    _still_serves(server, repo)


def test_fuzz_grpc_model_infer(server, repo):
    cases = _grpc_cases(SEED + 2, GRPC_CASES)
    allowed = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}
    failures = []
    with grpc.insecure_channel(f"127.0.0.1:{server.ports['grpc']}") as channel:
        calls = {  # bytes in, bytes out
            m: channel.unary_unary(f"/inference.GRPCInferenceService/{m}")
            for m in ("ModelInfer", "ModelMetadata", "ModelReady")
        }
        for i, (method, wire, raw) in enumerate(cases):
            try:
                calls[method](raw, timeout=TIMEOUT)
            except grpc.RpcError as e:
                code = e.code()
                # the server's own answer to a passed `timeout` parameter, not the client giving up
                deadline = code == grpc.StatusCode.DEADLINE_EXCEEDED and "deadline passed" in (e.details() or "")
                if not (code in allowed or deadline) or not e.details():
                    failures.append(
                        f"gRPC case {i} {method} (wire={wire}): {code} {e.details()!r:.300}; raw[:200]={raw[:200]!r}"
                    )
    assert not failures, f"{len(failures)} of {len(cases)} gRPC requests failed:\n" + "\n".join(failures[:25])
    _still_serves(server, repo)
