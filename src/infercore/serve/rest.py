"""The REST front: Open Inference Protocol V2 over HTTP, with the binary tensor data extension.

Starlette on uvicorn; JSON through orjson. A request body is read in chunks and refused with 413
as soon as it passes ``max_body`` (or at once, from its ``Content-Length``). Every error is a JSON
``{"error": "..."}`` with the status of its :class:`ServeError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from .. import __version__
from ..errors import BadRequest, ClientClosed, PayloadTooLarge, ServeError, Unauthorized, Unavailable
from .dashboard import dashboard_routes
from .monitoring import monitoring_routes
from .repository import ModelVersion
from .service import InferenceService, RequestTensor, new_request_id
from .tensors import datatype_of, decode_binary, decode_json, encode_binary, json_data, shown

__all__ = ["EXTENSIONS", "create_app", "guarded", "json_response", "loads_json", "read_body"]

log = logging.getLogger("infercore.serve")

EXTENSIONS = ["binary_tensor_data", "model_repository", "monitoring", "parameters", "statistics"]
_HEADER_LEN = "inference-header-content-length"
_JSON = "application/json"
_OPT = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """``obj`` as a JSON response (orjson; numpy arrays and scalars included)."""
    return Response(orjson.dumps(obj, option=_OPT), status, headers, media_type=_JSON)


def _error(e: ServeError, headers: dict[str, str] | None = None) -> Response:
    """``{"error": message}`` with the error's status (its message is always valid UTF-8)."""
    if isinstance(e, Unauthorized):  # RFC 7235: a 401 names the scheme it wants
        headers = {**(headers or {}), "www-authenticate": "Bearer"}
    return json_response({"error": e.message}, e.http_status, headers)


Handler = Callable[[Request], Awaitable[Response]]


def guarded(fn: Handler) -> Handler:
    """A ServeError becomes its status; anything else is logged and answered 500, never a crash."""

    async def endpoint(request: Request) -> Response:
        try:
            return await fn(request)
        except ServeError as e:
            return _error(e)
        except ClientDisconnect:
            return Response(status_code=ClientClosed.http_status)  # nobody is left to read it
        except Exception as e:
            log.exception("unexpected error", extra={"path": request.url.path})
            return _error(ServeError(f"internal error: {type(e).__name__}: {e}"))

    endpoint.__name__ = fn.__name__
    return endpoint


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with 413 before it is read past ``limit`` bytes."""
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise BadRequest(f"invalid Content-Length {length!r}")
        if int(length) > limit:
            raise PayloadTooLarge(
                f"request body of {length} bytes exceeds the server's limit of {limit} bytes (max_body)"
            )
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"request body exceeds the server's limit of {limit} bytes (max_body)")
            chunks.append(chunk)
    except ClientDisconnect:
        raise ClientClosed(f"the client disconnected after sending {size} bytes of the body") from None
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def loads_json(raw: bytes | memoryview, what: str) -> Any:
    """A JSON request body; BadRequest naming ``what`` when it is not JSON."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        # tritonclient (rapidjson) writes non-finite floats as NaN / Infinity / -Infinity and
        # Triton parses them (kParseNanAndInfFlag); orjson is strict, Python's json reads them.
        # Python's json recurses: JSON nested deeper than orjson's 1024 levels overflows its stack
        try:
            return json.loads(bytes(raw))
        except (ValueError, RecursionError):
            raise BadRequest(f"{what} is not valid JSON: {e}") from None


def create_app(
    service: InferenceService, *, max_body: int = 64 << 20, model_control: str | None = None
) -> Starlette:
    """The Starlette application serving ``service`` under ``/v2``.

    ``model_control``: ``None`` lets clients load and unload models (the repository extension);
    a reason (``"...redeploy instead"``) refuses those requests with 400 and says it: one of many
    replicas of a scaled-out server must not change its models alone."""
    repo = service.repo

    def check_model_control(request: Request) -> None:
        if model_control is not None:
            raise BadRequest(f"{request.url.path}: loading and unloading models is off here: {model_control}")

    # -- health and metadata ------------------------------------------------------------------
    async def server_metadata(request: Request) -> Response:
        return json_response({"name": "infercore", "version": __version__, "extensions": EXTENSIONS})

    # The status code is the answer (the V2 protocol); the JSON body says it too, as KServe's
    # own server does and its InferenceRESTClient requires ({"live": true}, {"ready": true}).
    async def live(request: Request) -> Response:
        return json_response({"live": service.live}, 200 if service.live else 400)

    async def ready(request: Request) -> Response:
        return json_response({"ready": service.ready}, 200 if service.ready else 400)

    async def model_metadata(request: Request) -> Response:
        p = request.path_params
        mv = service.model(p["model"], p.get("version"))
        entry = next(e for e in repo.models() if e.name == mv.name)
        return json_response(
            {
                "name": mv.name,
                "versions": [str(v) for v in sorted(entry.versions)],
                "platform": mv.platform,
                "inputs": [_tensor_meta(s) for s in mv.inputs],
                "outputs": [_tensor_meta(s) for s in mv.outputs],
            }
        )

    async def model_ready(request: Request) -> Response:
        p = request.path_params
        ok = service.ready and repo.is_ready(p["model"], p.get("version"))
        return json_response({"name": p["model"], "ready": ok}, 200 if ok else 400)

    async def model_stats(request: Request) -> Response:
        p = request.path_params
        mv = service.model(p["model"], p.get("version"))
        stats = mv.engine.stats if mv.engine is not None else None
        snap = getattr(mv.runner, "metrics", None)
        body: dict[str, Any] = {"name": mv.name, "version": str(mv.version)}
        if stats is not None:
            body["engine"] = {k: getattr(stats, k) for k in stats.__dataclass_fields__}
        if snap is not None and hasattr(snap, "__dataclass_fields__"):
            body["batcher"] = {k: getattr(snap, k) for k in snap.__dataclass_fields__}
        return json_response({"model_stats": [body]})

    # -- inference ------------------------------------------------------------------------------
    async def infer(request: Request) -> Response:
        started = time.perf_counter()
        p = request.path_params
        name = p["model"]
        request_id = request.headers.get("x-request-id") or ""
        mv: ModelVersion | None = None
        try:
            service.check_auth(request.headers.get("authorization"))
            body = await read_body(request, max_body)
            # the model is resolved once the body is in: a reload while the body arrives must not
            # send the request to the version it replaced
            mv = service.model(name, p.get("version"))
            header, binary = _split(request, body)
            request_id = _request_id(header) or request_id
            tensors, binary_end = _inputs(header, binary)
            if binary_end != len(binary):
                raise BadRequest(
                    f"{len(binary) - binary_end} bytes of binary data follow the last input's "
                    "binary_data_size"
                )
            requested, binary_out = _outputs(header)
            parameters = header.get("parameters") or {}
            extra: dict[str, Any] = {}
            work = service.infer(
                mv,
                tensors,
                [n for n, _ in requested] if requested else None,
                parameters,
                request_id=request_id or None,
                response=extra,
            )
            result = await _unless_disconnected(request, work)
            response = _encode(mv, header, result, requested, binary_out, extra)
        except ServeError as e:
            rid = request_id or new_request_id()
            service.record(mv, name, "http", started, rid, e)
            return _error(e, {"x-request-id": _header_value(rid)})
        except asyncio.CancelledError:
            if not service.draining:
                raise
            # the drain ran out (drain_timeout) and uvicorn cancelled us: answer in JSON, as
            # every other error, rather than uvicorn's plain-text 500
            cut = Unavailable(
                f"model {name!r}: the server shut down before the request finished (drain_timeout ran out)"
            )
            rid = request_id or new_request_id()
            service.record(mv, name, "http", started, rid, cut)
            return _error(cut, {"x-request-id": _header_value(rid)})
        except Exception as e:  # a bug of ours: answer 500 with the reason, keep serving
            log.exception("unexpected error in infer", extra={"model": name, "request_id": request_id})
            err = ServeError(f"internal error: {type(e).__name__}: {e}")
            service.record(mv, name, "http", started, request_id, err)
            return _error(err)
        service.record(mv, name, "http", started, request_id)
        return response

    # -- repository -------------------------------------------------------------------------------
    async def repo_index(request: Request) -> Response:
        service.check_auth(request.headers.get("authorization"))
        body = await read_body(request, 1 << 20)
        params = loads_json(body, "request body") if body.strip() else {}
        if not isinstance(params, dict):
            raise BadRequest(
                f'a repository index request body is {{"ready": true|false}}, got {shown(params)}'
            )
        ready_only = params.get("ready", False)
        if not isinstance(ready_only, bool):
            raise BadRequest(f"'ready' must be true or false, got {shown(ready_only)}")
        return json_response(repo.index(ready_only))

    async def repo_load(request: Request) -> Response:
        service.check_auth(request.headers.get("authorization"))
        check_model_control(request)
        body = await read_body(request, 16 << 20)
        config = None
        if body.strip():
            params = loads_json(body, "request body")
            params = params.get("parameters", {}) if isinstance(params, dict) else None
            if not isinstance(params, dict):
                raise BadRequest('a load request body is {"parameters": {...}}')
            raw = params.get("config")
            if raw is not None:
                try:
                    text = raw.encode() if isinstance(raw, str) else orjson.dumps(raw)
                except (UnicodeEncodeError, orjson.JSONEncodeError) as e:
                    raise BadRequest(f"parameter 'config' is not valid JSON text: {e}") from None
                config = loads_json(text, "parameter 'config'")
                if not isinstance(config, dict):
                    raise BadRequest("parameter 'config' must be a JSON object")
        await asyncio.to_thread(repo.load, request.path_params["model"], config)
        return Response(status_code=200)

    async def repo_unload(request: Request) -> Response:
        service.check_auth(request.headers.get("authorization"))
        check_model_control(request)
        await read_body(request, 1 << 20)
        await asyncio.to_thread(repo.unload, request.path_params["model"])
        return Response(status_code=200)

    g = guarded
    routes = [
        Route("/v2", g(server_metadata), methods=["GET"]),
        Route("/v2/health/live", g(live), methods=["GET"]),
        Route("/v2/health/ready", g(ready), methods=["GET"]),
        Route("/v2/models/{model}", g(model_metadata), methods=["GET"]),
        Route("/v2/models/{model}/versions/{version}", g(model_metadata), methods=["GET"]),
        Route("/v2/models/{model}/ready", g(model_ready), methods=["GET"]),
        Route("/v2/models/{model}/versions/{version}/ready", g(model_ready), methods=["GET"]),
        Route("/v2/models/{model}/stats", g(model_stats), methods=["GET"]),
        Route("/v2/models/{model}/versions/{version}/stats", g(model_stats), methods=["GET"]),
        Route("/v2/models/{model}/infer", infer, methods=["POST"]),
        Route("/v2/models/{model}/versions/{version}/infer", infer, methods=["POST"]),
        Route("/v2/repository/index", g(repo_index), methods=["POST"]),
        Route("/v2/repository/models/{model}/load", g(repo_load), methods=["POST"]),
        Route("/v2/repository/models/{model}/unload", g(repo_unload), methods=["POST"]),
        *monitoring_routes(service),
        *dashboard_routes(service),
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        return json_response({"error": f"no endpoint {request.method} {request.url.path}"}, 404)

    async def bad_method(request: Request, exc: Exception) -> Response:
        return json_response({"error": f"{request.method} is not allowed on {request.url.path}"}, 405)

    return Starlette(routes=routes, exception_handlers={404: not_found, 405: bad_method})


async def _unless_disconnected(request: Request, work: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """Await ``work`` unless the client disconnects first: then cancel it (which takes the request
    out of the model's queue) and raise :class:`ClientClosed`."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((task, watch), return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            task.cancel()
        watch.cancel()
    if not task.done():
        with contextlib.suppress(asyncio.CancelledError):
            await task  # let the cancellation reach the batcher before we answer
        raise ClientClosed("the client disconnected before the answer")
    return task.result()


async def _disconnected(request: Request) -> None:
    """Returns when the client is gone; the body is already read, so the next message says so."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


# -- decoding ---------------------------------------------------------------------------------------
def _tensor_meta(spec: Any) -> dict[str, Any]:
    return {
        "name": spec.name,
        "datatype": datatype_of(spec.dtype),
        "shape": [-1 if d is None else d for d in spec.shape],
    }


def _split(request: Request, body: bytes) -> tuple[dict[str, Any], memoryview]:
    """The JSON header and the binary section after it (``Inference-Header-Content-Length``)."""
    encoding = request.headers.get("content-encoding")
    if encoding and encoding.lower() != "identity":
        raise BadRequest(f"Content-Encoding {encoding!r} is not supported; send the body uncompressed")
    hlen = request.headers.get(_HEADER_LEN)
    view = memoryview(body)
    if hlen is None:
        header, binary = loads_json(body, "request body"), view[len(view) :]
    else:
        if not hlen.isdigit() or int(hlen) > len(body):
            raise BadRequest(
                f"Inference-Header-Content-Length {hlen!r} does not fit a body of {len(body)} bytes"
            )
        n = int(hlen)
        header, binary = loads_json(view[:n], "the JSON header"), view[n:]
    if not isinstance(header, dict):
        raise BadRequest("an inference request is a JSON object with 'inputs'")
    return header, binary


def _request_id(header: dict[str, Any]) -> str:
    rid = header.get("id")
    if rid is None:
        return ""
    if not isinstance(rid, str):
        raise BadRequest(f"'id' must be a string, got {shown(rid)}")
    if not rid.isascii():
        try:
            rid.encode("utf-8")  # echoed in the answer: a lone surrogate ("\ud800") cannot be
        except UnicodeEncodeError as e:
            raise BadRequest(f"'id' is not valid Unicode text: {e.reason} at character {e.start}") from None
    return rid


def _header_value(text: str) -> str:
    """``text`` as an HTTP header value: printable ASCII kept, anything else backslash-escaped
    (a request id from the JSON body may hold any character, CR and LF included)."""
    if text.isascii() and text.isprintable():
        return text
    return text.encode("unicode_escape").decode("ascii")


def _inputs(header: dict[str, Any], binary: memoryview) -> tuple[list[RequestTensor], int]:
    inputs = header.get("inputs")
    if not isinstance(inputs, list):  # an empty one: the model's check names what is missing
        raise BadRequest("the request has no 'inputs' list")
    out = []
    pos = 0
    for i, t in enumerate(inputs):
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            raise BadRequest(f"inputs[{i}] must be an object with a 'name'")
        name = t["name"]
        datatype, shape = t.get("datatype"), t.get("shape")
        if not isinstance(datatype, str):
            raise BadRequest(f"input {name!r} has no 'datatype'")
        if not isinstance(shape, list):
            raise BadRequest(f"input {name!r} has no 'shape' list")
        params = t.get("parameters") or {}
        if not isinstance(params, dict):
            raise BadRequest(f"input {name!r}: 'parameters' must be an object")
        size = params.get("binary_data_size")
        if size is not None:
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise BadRequest(
                    f"input {name!r}: binary_data_size must be an int >= 0, got {shown(size)}"
                )
            if "data" in t:
                raise BadRequest(f"input {name!r} has both 'data' and binary_data_size")
            if pos + size > len(binary):
                raise BadRequest(
                    f"input {name!r}: binary_data_size {size} but only {len(binary) - pos} bytes of "
                    "binary data remain (check Inference-Header-Content-Length)"
                )
            arr = decode_binary(binary[pos : pos + size], datatype, shape, name)
            pos += size
        else:
            if "data" not in t:
                raise BadRequest(f"input {name!r} has neither 'data' nor binary_data_size")
            arr = decode_json(t["data"], datatype, shape, name)
        out.append(RequestTensor(name, datatype, arr))
    return out, pos


def _outputs(header: dict[str, Any]) -> tuple[list[tuple[str, bool]] | None, bool]:
    params = header.get("parameters") or {}
    if not isinstance(params, dict):
        raise BadRequest("'parameters' must be an object")
    binary_out = params.get("binary_data_output", False)
    if not isinstance(binary_out, bool):
        raise BadRequest(f"parameter binary_data_output must be true or false, got {shown(binary_out)}")
    outputs = header.get("outputs")
    if outputs is None or outputs == []:  # Triton: no requested outputs means every output
        return None, binary_out
    if not isinstance(outputs, list):
        raise BadRequest("'outputs' must be a list")
    requested = []
    for i, o in enumerate(outputs):
        if not isinstance(o, dict) or not isinstance(o.get("name"), str):
            raise BadRequest(f"outputs[{i}] must be an object with a 'name'")
        oparams = o.get("parameters") or {}
        if not isinstance(oparams, dict):
            raise BadRequest(f"output {o['name']!r}: 'parameters' must be an object")
        if oparams.get("classification"):
            raise BadRequest(f"output {o['name']!r}: the classification extension is not supported")
        binary = oparams.get("binary_data", binary_out)
        if not isinstance(binary, bool):
            raise BadRequest(f"output {o['name']!r}: binary_data must be true or false")
        requested.append((o["name"], binary))
    return requested, binary_out


def _encode(
    mv: ModelVersion,
    header: dict[str, Any],
    result: dict[str, Any],
    requested: list[tuple[str, bool]] | None,
    binary_out: bool,
    parameters: dict[str, Any] | None = None,
) -> Response:
    order = requested if requested is not None else [(name, binary_out) for name in result]
    outputs = []
    blobs: list[Any] = []
    for name, binary in order:
        arr = result[name]
        meta: dict[str, Any] = {"name": name, "datatype": datatype_of(arr.dtype), "shape": list(arr.shape)}
        if binary:
            blob = encode_binary(arr)
            meta["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            meta["data"] = json_data(arr)
        outputs.append(meta)
    body: dict[str, Any] = {"model_name": mv.name, "model_version": str(mv.version), "outputs": outputs}
    if "id" in header:
        body["id"] = header["id"]
    if parameters:
        body["parameters"] = parameters
    head = orjson.dumps(body, option=_OPT)
    if not blobs:
        return Response(head, media_type=_JSON)
    return Response(
        b"".join([head, *blobs]),
        headers={"Inference-Header-Content-Length": str(len(head))},
        media_type="application/octet-stream",
    )
