"""The gRPC front: the V2 ``inference.GRPCInferenceService`` on ``grpc.aio``.

Inputs come in ``raw_input_contents`` (what Triton's client sends) or in the typed ``contents``
fields; outputs always go out in ``raw_output_contents``. Failures are aborted with the gRPC code
of their :class:`ServeError` (INVALID_ARGUMENT, UNAVAILABLE, ...), never an unhandled exception.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import numpy as np
from google.protobuf.message import DecodeError

from .. import __version__
from ..errors import BadRequest, ClientClosed, ServeError
from .grpc_service import METHODS, SERVICE
from .grpc_service import messages as pb
from .repository import ModelVersion
from .rest import EXTENSIONS
from .service import InferenceService, RequestTensor, new_request_id
from .tensors import (
    V2_DATATYPES,
    check_int_range,
    datatype_of,
    decode_binary,
    dtype_of,
    element_count,
    encode_binary,
)

__all__ = ["create_grpc_server"]

log = logging.getLogger("infercore.serve")

_CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}

Req = TypeVar("Req")
Resp = TypeVar("Resp")


def _param_value(p: Any) -> Any:
    which = p.WhichOneof("parameter_choice")
    return None if which is None else getattr(p, which)


async def _abort(context: grpc.aio.ServicerContext, e: ServeError) -> None:
    await context.abort(getattr(grpc.StatusCode, e.grpc_code), e.message)


def _metadata(context: grpc.aio.ServicerContext, key: str) -> str | None:
    for k, v in context.invocation_metadata() or ():
        if k == key:
            return v if isinstance(v, str) else v.decode()
    return None


class InferenceServicer:
    def __init__(self, service: InferenceService) -> None:
        self.service = service
        self.repo = service.repo

    async def _guard(
        self, context: grpc.aio.ServicerContext, fn: Callable[[], Awaitable[Resp]], auth: bool = False
    ) -> Resp:
        try:
            if auth:
                self.service.check_auth(_metadata(context, "authorization"))
            return await fn()
        except ServeError as e:
            await _abort(context, e)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            if isinstance(e, grpc.aio.AbortError):
                raise
            log.exception("unexpected error in a gRPC call")
            await _abort(context, ServeError(f"internal error: {type(e).__name__}: {e}"))
        raise AssertionError("unreachable: abort raises")

    # -- health and metadata --------------------------------------------------------------------
    async def ServerLive(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return pb.ServerLiveResponse(live=self.service.live)

    async def ServerReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return pb.ServerReadyResponse(ready=self.service.ready)

    async def ModelReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        ready = self.service.ready and self.repo.is_ready(request.name, request.version or None)
        return pb.ModelReadyResponse(ready=ready)

    async def ServerMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return pb.ServerMetadataResponse(name="infercore", version=__version__, extensions=EXTENSIONS)

    async def ModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async def run() -> Any:
            mv = self.service.model(request.name, request.version or None)
            entry = next(e for e in self.repo.models() if e.name == mv.name)

            def meta(s: Any) -> Any:
                shape = [-1 if d is None else d for d in s.shape]
                return pb.ModelMetadataResponse.TensorMetadata(
                    name=s.name, datatype=datatype_of(s.dtype), shape=shape
                )

            return pb.ModelMetadataResponse(
                name=mv.name,
                versions=[str(v) for v in sorted(entry.versions)],
                platform=mv.platform,
                inputs=[meta(s) for s in mv.inputs],
                outputs=[meta(s) for s in mv.outputs],
            )

        return await self._guard(context, run)

    # -- inference ------------------------------------------------------------------------------
    async def ModelInfer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        started = time.perf_counter()
        name = request.model_name
        request_id = request.id or _metadata(context, "x-request-id") or ""
        mv: ModelVersion | None = None
        try:
            self.service.check_auth(_metadata(context, "authorization"))
            mv = self.service.model(name, request.model_version or None)
            tensors = _inputs(request)
            parameters = {k: _param_value(v) for k, v in request.parameters.items()}
            requested = _requested(request)
            extra: dict[str, Any] = {}
            result = await self.service.infer(
                mv, tensors, requested, parameters, request_id=request_id or None, response=extra
            )
            response = pb.ModelInferResponse(model_name=mv.name, model_version=str(mv.version), id=request.id)
            for key, value in extra.items():
                _set_param(response.parameters[key], value)
            for out_name, arr in result.items():
                response.outputs.add(name=out_name, datatype=datatype_of(arr.dtype), shape=arr.shape)
                response.raw_output_contents.append(bytes(encode_binary(arr)))
        except ServeError as e:
            self.service.record(mv, name, "grpc", started, request_id or new_request_id(), e)
            await _abort(context, e)
        except asyncio.CancelledError:  # the client cancelled (or the drain ran out)
            gone = ClientClosed("the call was cancelled before the answer")
            self.service.record(mv, name, "grpc", started, request_id or new_request_id(), gone)
            raise
        except Exception as e:
            if isinstance(e, grpc.aio.AbortError):
                raise
            log.exception("unexpected error in ModelInfer", extra={"model": name, "request_id": request_id})
            err = ServeError(f"internal error: {type(e).__name__}: {e}")
            self.service.record(mv, name, "grpc", started, request_id, err)
            await _abort(context, err)
        self.service.record(mv, name, "grpc", started, request_id)
        return response

    # -- repository -----------------------------------------------------------------------------
    async def RepositoryIndex(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async def run() -> Any:
            rows = self.repo.index(request.ready)
            return pb.RepositoryIndexResponse(
                models=[pb.RepositoryIndexResponse.ModelIndex(**r) for r in rows]
            )

        return await self._guard(context, run, auth=True)

    async def RepositoryModelLoad(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async def run() -> Any:
            import orjson

            config = None
            if "config" in request.parameters:
                raw = _param_value(request.parameters["config"])
                try:
                    config = orjson.loads(raw)
                except (orjson.JSONDecodeError, TypeError) as e:
                    raise BadRequest(f"parameter 'config' is not valid JSON: {e}") from None
                if not isinstance(config, dict):
                    raise BadRequest("parameter 'config' must be a JSON object")
            await asyncio.to_thread(self.repo.load, request.model_name, config)
            return pb.RepositoryModelLoadResponse()

        return await self._guard(context, run, auth=True)

    async def RepositoryModelUnload(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async def run() -> Any:
            await asyncio.to_thread(self.repo.unload, request.model_name)
            return pb.RepositoryModelUnloadResponse()

        return await self._guard(context, run, auth=True)


def _set_param(p: Any, value: Any) -> None:
    if isinstance(value, bool):
        p.bool_param = value
    elif isinstance(value, int):
        p.int64_param = value
    elif isinstance(value, float):
        p.double_param = value
    else:
        p.string_param = str(value)


def _requested(request: Any) -> list[str] | None:
    """The requested output names (none: every output); the classification extension is refused,
    as over REST, rather than answered with raw scores."""
    for o in request.outputs:
        if "classification" in o.parameters and _param_value(o.parameters["classification"]):
            raise BadRequest(f"output {o.name!r}: the classification extension is not supported")
    return [o.name for o in request.outputs] or None


def _inputs(request: Any) -> list[RequestTensor]:
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise BadRequest(
            f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs: with raw contents, give one per input"
        )
    out = []
    for i, t in enumerate(request.inputs):
        shape = list(t.shape)
        arr = decode_binary(raw[i], t.datatype, shape, t.name) if raw else _from_contents(t, shape)
        out.append(RequestTensor(t.name, t.datatype, arr))
    return out


def _from_contents(t: Any, shape: list[int]) -> np.ndarray:
    dtype = dtype_of(t.datatype, t.name)
    field = _CONTENTS.get(t.datatype)
    if field is None:
        raise BadRequest(f"input {t.name!r}: {t.datatype} data must be sent in raw_input_contents")
    values = getattr(t.contents, field)
    count = element_count(shape, t.name)
    if len(values) != count:
        raise BadRequest(
            f"input {t.name!r}: shape {shape} needs {count} elements, contents has {len(values)}"
        )
    if t.datatype == "BYTES":
        arr = np.empty(count, dtype=object)
        arr[:] = list(values)
    elif dtype.kind in "iu":
        # int_contents and uint_contents carry 32-bit values for the 8- and 16-bit types too:
        # read them at the field's width, then refuse what the datatype cannot hold
        wide = V2_DATATYPES["UINT64" if field.startswith("uint") else "INT64"]
        arr = np.array(values, dtype=wide)
        check_int_range(arr, t.datatype, t.name)
        arr = arr.astype(dtype)
    else:
        arr = np.array(values, dtype=dtype)
    return arr.reshape(shape)


class _Undecodable:
    """A request whose bytes are not a valid message, handed to the handler in its place: the
    handler answers INVALID_ARGUMENT (grpc's own answer to a deserializer that raises is UNKNOWN)."""

    def __init__(self, type_name: str, error: Exception) -> None:
        self.type_name = type_name
        self.error = error


def _parser(message_type: Any) -> Callable[[bytes], Any]:
    name = message_type.DESCRIPTOR.full_name

    def parse(data: bytes) -> Any:
        try:
            return message_type.FromString(data)
        except DecodeError as e:  # a malformed message, or a string field that is not UTF-8
            return _Undecodable(name, e)

    return parse


def _checked(
    method: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]],
    service: InferenceService,
    *,
    inference: bool,
) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
    """``method``, refusing an :class:`_Undecodable` request (counted in the metrics if it was
    meant as an inference request, under the unknown-model label)."""

    async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, _Undecodable):
            started = time.perf_counter()
            err = BadRequest(
                f"the request is not a valid {request.type_name} (malformed protobuf, or a string "
                f"field that is not UTF-8): {request.error}"
            )
            if inference:
                service.record(None, "", "grpc", started, new_request_id(), err)
            await _abort(context, err)
        return await method(request, context)

    return handle


def create_grpc_server(service: InferenceService, *, max_message: int = 64 << 20) -> grpc.aio.Server:
    """A ``grpc.aio`` server with the V2 service added; the caller adds ports and starts it."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message),
            ("grpc.max_send_message_length", -1),
            ("grpc.so_reuseport", 0),
        ]
    )
    servicer = InferenceServicer(service)
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            _checked(getattr(servicer, name), service, inference=name == "ModelInfer"),
            request_deserializer=_parser(getattr(pb, req)),
            response_serializer=getattr(pb, resp).SerializeToString,
        )
        for name, req, resp in METHODS
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    return server
