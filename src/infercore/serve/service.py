"""What the REST and gRPC fronts share: model lookup, input checks, the call into the Batcher, the
mapping of every failure to a :class:`ServeError`, metrics, request ids and structured logs."""

from __future__ import annotations

import asyncio
import hmac
import itertools
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import (
    BadRequest,
    BatchingError,
    ClientClosed,
    DeadlineExceeded,
    DeadlineExceededError,
    EngineClosedError,
    InfercoreError,
    InputSpecError,
    QueueFullError,
    ServeError,
    Unauthorized,
    Unavailable,
)
from ..specs import format_shape
from .metrics import ServeMetrics
from .repository import ModelRepository, ModelVersion
from .tensors import datatype_of, shown

__all__ = ["MAX_TIMEOUT_US", "UNKNOWN_MODEL", "InferenceService", "RequestTensor", "new_request_id"]

log = logging.getLogger("infercore.serve")
access_log = logging.getLogger("infercore.serve.access")

MAX_TIMEOUT_US = 86_400_000_000  # the largest request ``timeout`` parameter: one day, in microseconds
UNKNOWN_MODEL = "_unknown"  # the metrics label of requests for a model that is not in the repository

_ids = itertools.count(1)
_prefix = f"{os.getpid():x}"


def new_request_id() -> str:
    """A short id unique within this server's life, for requests that bring none."""
    return f"{_prefix}-{next(_ids):x}"


@dataclass(frozen=True)
class RequestTensor:
    name: str
    datatype: str
    array: np.ndarray


class InferenceService:
    """Protocol-independent serving: both fronts decode a request, then call :meth:`infer`."""

    def __init__(
        self, repo: ModelRepository, metrics: ServeMetrics | None = None, *, token: str | None = None
    ) -> None:
        self.repo = repo
        self.metrics = metrics or ServeMetrics(repo)
        self._token = token.encode() if token else None
        self.draining = False

    # -- health -----------------------------------------------------------------------------------
    @property
    def live(self) -> bool:
        return True

    @property
    def ready(self) -> bool:
        return not self.draining

    # -- auth -------------------------------------------------------------------------------------
    @property
    def auth_required(self) -> bool:
        return self._token is not None

    def check_auth(self, authorization: str | None) -> None:
        """``Authorization: Bearer <token>``, compared in constant time; a no-op without ``--token``."""
        if self._token is None:
            return
        scheme, _, credentials = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer":  # auth schemes are case-insensitive (RFC 7235)
            raise Unauthorized("this endpoint needs 'Authorization: Bearer <token>'")
        if not hmac.compare_digest(credentials.strip().encode(), self._token):
            raise Unauthorized("invalid bearer token")

    # -- inference --------------------------------------------------------------------------------
    def model(self, name: str, version: str | None) -> ModelVersion:
        if not name:
            raise BadRequest("the request names no model")
        return self.repo.get(name, version)

    async def infer(
        self,
        mv: ModelVersion,
        tensors: Sequence[RequestTensor],
        requested: Sequence[str] | None,
        parameters: Mapping[str, Any],
        *,
        request_id: str | None = None,
        response: dict[str, Any] | None = None,
    ) -> dict[str, np.ndarray]:
        """Check the inputs against the served specs, run through the model's Batcher, pick outputs.

        With monitoring configured (``mv.watch``): the inputs are screened first (``reject``
        raises BadRequest; ``flag`` puts its parameters in ``response``), and the request is
        offered to the version's monitor, with ``request_id`` kept for feedback."""
        feeds = self._feeds(mv, tensors)
        watch = mv.watch
        if watch is not None:
            watch.before(feeds, response)
        if requested is not None:
            for i, name in enumerate(requested):
                if name in requested[:i]:
                    raise BadRequest(f"output {name!r} is requested twice")
                if name not in mv.output_names:
                    raise BadRequest(
                        f"model {mv.name!r} has no output {name!r}; its outputs are: "
                        f"{', '.join(s.name for s in mv.outputs)}"
                    )
        timeout, priority = _scheduling(parameters)
        try:
            result: dict[str, np.ndarray] = await mv.runner.infer(feeds, timeout=timeout, priority=priority)
        except QueueFullError as e:
            raise Unavailable(f"model {mv.name!r} version {mv.version} is overloaded: {e}") from None
        except (DeadlineExceededError, asyncio.TimeoutError) as e:
            raise DeadlineExceeded(
                f"model {mv.name!r}: the request's deadline passed before it ran ({e})"
            ) from None
        except InputSpecError as e:
            raise BadRequest(f"model {mv.name!r}: {e}") from None
        except EngineClosedError as e:
            raise Unavailable(f"model {mv.name!r} version {mv.version} is unloading: {e}") from None
        except BatchingError as e:
            raise Unavailable(f"model {mv.name!r} version {mv.version}: {e}") from None
        except ServeError:
            raise
        except InfercoreError as e:
            # the runtime's message names its node, not the input: say what this request gave
            given = ", ".join(f"{k} {datatype_of(v.dtype)} {list(v.shape)}" for k, v in feeds.items())
            raise ServeError(f"model {mv.name!r} version {mv.version} failed on inputs {given}: {e}") from e
        if watch is not None:
            watch.after(feeds, result, request_id, response)
        if requested is not None:
            return {name: result[name] for name in requested}
        return result

    def _feeds(self, mv: ModelVersion, tensors: Sequence[RequestTensor]) -> dict[str, np.ndarray]:
        specs = mv.input_map
        feeds: dict[str, np.ndarray] = {}
        for t in tensors:
            spec = specs.get(t.name)
            if spec is None:
                raise BadRequest(
                    f"model {mv.name!r} has no input {t.name!r}; its inputs are: "
                    f"{', '.join(str(s.name) for s in mv.inputs)}"
                )
            if t.name in feeds:
                raise BadRequest(f"input {t.name!r} is given twice")
            want = datatype_of(spec.dtype)
            if t.datatype != want:
                raise BadRequest(
                    f"input {t.name!r}: model {mv.name!r} takes {want}, the request sent {t.datatype}"
                )
            shape = t.array.shape
            if not spec.accepts(shape):
                raise BadRequest(
                    f"input {t.name!r}: model {mv.name!r} takes shape "
                    f"{format_shape(spec.shape, spec.dim_names)}, the request sent {list(shape)}"
                )
            arr = t.array
            if spec.dtype.hasobject and arr.size and isinstance(arr.flat[0], bytes):
                arr = _utf8(arr, t.name)
            feeds[t.name] = arr
        if len(feeds) != len(specs):
            missing = [s.name for s in mv.inputs if s.name not in feeds]
            raise BadRequest(f"model {mv.name!r}: missing input(s) {', '.join(map(repr, missing))}")
        return feeds

    # -- bookkeeping --------------------------------------------------------------------------------
    def record(
        self,
        mv: ModelVersion | None,
        model: str,
        protocol: str,
        started: float,
        request_id: str,
        error: ServeError | None = None,
    ) -> None:
        """Metrics and the access log of one inference request, answered or refused."""
        elapsed = time.perf_counter() - started
        version = str(mv.version) if mv is not None else ""
        # a label per name a client sends would grow /metrics without bound: names that are not
        # in the repository share one label
        label = mv.name if mv is not None else model if self.repo.knows(model) else UNKNOWN_MODEL
        if error is None:
            self.metrics.success(label, version, protocol, elapsed)
        elif isinstance(error, ClientClosed):
            self.metrics.cancelled(label, version, protocol, elapsed)
        else:
            self.metrics.failure(label, version, protocol, type(error).__name__, elapsed)
        if error is not None and error.http_status >= 500:
            log.warning(
                error.message,
                extra={
                    "request_id": request_id,
                    "model": model,
                    "version": version,
                    "protocol": protocol,
                    "status": error.http_status,
                },
            )
        elif access_log.isEnabledFor(logging.INFO):
            access_log.info(
                "infer",
                extra={
                    "request_id": request_id,
                    "model": model,
                    "version": version,
                    "protocol": protocol,
                    "status": error.http_status if error else 200,
                    "duration_ms": round(elapsed * 1e3, 3),
                    **({"error": error.message} if error else {}),
                },
            )


def _scheduling(parameters: Mapping[str, Any]) -> tuple[float | None, int]:
    """Triton's request parameters: ``timeout`` in microseconds (0: none; at most one day),
    ``priority`` 0 (normal) or 1 (high)."""
    timeout = parameters.get("timeout")
    priority = parameters.get("priority", 0)
    if timeout is not None:
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not 0 <= timeout <= MAX_TIMEOUT_US  # also refuses NaN
        ):
            raise BadRequest(
                f"parameter 'timeout' must be a number of microseconds in [0, {MAX_TIMEOUT_US}] "
                f"(0: no deadline; at most one day), got {shown(timeout)}"
            )
        timeout = timeout / 1e6 if timeout else None
    if isinstance(priority, bool) or priority not in (0, 1):
        raise BadRequest(f"parameter 'priority' must be 0 (normal) or 1 (high), got {shown(priority)}")
    return timeout, priority


def _utf8(arr: np.ndarray, name: str) -> np.ndarray:
    """String tensors of a model are text: decode BYTES elements as UTF-8."""
    out = np.empty(arr.shape, dtype=object)
    try:
        out.flat[:] = [v.decode("utf-8") if isinstance(v, bytes) else v for v in arr.flat]
    except UnicodeDecodeError as e:
        raise BadRequest(f"input {name!r}: the model's string input needs UTF-8 text: {e}") from None
    return out
