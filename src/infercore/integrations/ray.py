"""Scale out on Ray Serve: ``ic_deployment(model_or_repo, ...)`` returns a Ray Serve application.

    from ray import serve
    from infercore.integrations.ray import ic_deployment

    handle = serve.run(ic_deployment("models/", num_replicas=2))   # HTTP on Ray's proxy, port 8000
    out = handle.infer.remote({"x": x}, "affine").result()           # callers inside Ray

Each replica holds a model repository (``infercore serve``'s: every model behind its own Batcher)
whose engines run as many runtime threads as the replica has CPUs (``ray_actor_options
num_cpus``, 1 by default): ``threads`` engine instances of one thread each, the layout that
measured best for throughput here. It answers:

- the Open Inference Protocol (V2) over REST, through Ray's HTTP proxy: the routes and decoders of
  ``infercore serve`` itself (``serve/rest.py``), so ``tritonclient.http`` (binary tensor extension
  included) and KServe's ``InferenceRESTClient`` work unchanged. Loading and unloading models
  through the API is refused: one replica must not change its models alone; redeploy instead.
- ``infer(inputs, model=None, *, version=None, outputs=None, timeout=None, priority=0)`` for a
  ``DeploymentHandle`` (``handle.infer.remote(...)``): numpy arrays in and out, the same checks
  and the same Batcher, errors raised as infercore's own (``BadRequest``, ``Unavailable``...);
  ``describe()`` says which node, process, CPUs and models a replica has.

One batcher: infercore's, not Ray's ``@serve.batch`` on top of it (benchmarks/scale.py measures
both; docs/scale-out.md has the figures). ``build_app(args)`` is the builder that ``serve run`` /
``serve deploy`` config files name (``deploy/ray/*.yaml``).

Needs ``pip install "infercore[ray]"``; importing this module imports nothing of Ray.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..arguments import check_int, check_number
from ..errors import ArgumentError, BadRequest, ServeError

__all__ = [
    "DEFAULT_MAX_ONGOING_REQUESTS",
    "ReplicaFailover",
    "build_app",
    "ic_deployment",
    "proxy_middlewares",
]

log = logging.getLogger("infercore.integrations.ray")

# requests Ray sends one replica at a time. Ray's own default, 5, starves a batcher; and requests
# over the limit wait in Ray's proxy, whose router keeps polling the replicas for them: 64 MiniLM
# clients on one replica of 1 CPU measured 10.5-13.5 req/s with 32 here, 15.0-17.1 with 96 (the
# replica's Batcher queues them for nothing). Autoscaled deployments want less (docs/scale-out.md).
DEFAULT_MAX_ONGOING_REQUESTS = 128
_MODEL_CONTROL_OFF = (
    "the models of a Ray Serve deployment are those it was deployed with; redeploy to change them"
)
_FROM_CONFIG = "config"  # batching=: each model's config.yaml decides (the default)


def ic_deployment(
    model_or_repo: str | os.PathLike[str],
    *,
    name: str = "infercore",
    model_name: str | None = None,
    models: Sequence[str] | None = None,
    num_replicas: int | str | None = None,
    autoscaling_config: Mapping[str, Any] | None = None,
    num_cpus: float = 1.0,
    threads: int | None = None,
    batching: Mapping[str, Any] | bool | str = _FROM_CONFIG,
    max_ongoing_requests: int = DEFAULT_MAX_ONGOING_REQUESTS,
    max_replicas_per_node: int | None = None,
    ray_actor_options: Mapping[str, Any] | None = None,
    max_body: int = 64 << 20,
    token: str | None = None,
    access_log: bool = False,
) -> Any:
    """A Ray Serve application (``ray.serve.Application``) serving ``model_or_repo``.

    ``model_or_repo``: what ``infercore serve`` takes: a model repository, a model file, or with
    ``model_name`` one model's directory (``infercore.serve.layout``). The path must be
    readable on every node that runs a replica (a shared volume, the same files on each, or
    relative to a ``runtime_env`` working_dir); one that exists here is made absolute.
    ``models``: the models of a repository to load (default: all).
    ``num_replicas`` (an int, or ``"auto"``) or ``autoscaling_config`` (Ray's dict:
    ``min_replicas``, ``max_replicas``, ``target_ongoing_requests``...): how many replicas.
    ``num_cpus``: each replica's CPUs (Ray reserves them). ``threads``: runtime threads per
    replica (default: its CPUs, rounded up), as that many one-thread engine instances.
    ``batching``: ``"config"`` (each model's ``config.yaml``, else infercore's defaults), a
    dict of batcher settings (``max_batch_size``, ``max_queue_delay_ms``...) or ``False``.
    ``max_ongoing_requests``: requests Ray sends a replica at a time. ``max_replicas_per_node``:
    at most this many replicas on one node (1 spreads them, so a node lost takes one). ``ray_actor_options``:
    more Ray actor options (``resources``, ``runtime_env``...). ``max_body`` and ``token`` as in
    ``infercore serve`` (``--max-body``, ``--token``). ``access_log``: Ray's line per request in
    the replicas' logs (off, as ``infercore serve`` without ``--access-log``: it costs CPU on every
    request; the proxy's own is Ray's global ``logging_config``).
    """
    serve = _serve()
    path = Path(os.path.expanduser(os.fspath(model_or_repo)))
    if path.exists():
        path = path.resolve()  # replicas run in other directories
    else:
        # it may exist only where replicas run (a volume of the worker nodes, or relative to a
        # runtime_env working_dir): a replica that cannot find it fails to start and says so
        log.warning("model path %s does not exist here; each replica's node must have it", path)
    if not isinstance(name, str) or not name:
        raise ArgumentError("name", f"expected a non-empty deployment name, got {name!r}")
    if num_replicas is not None and autoscaling_config is not None:
        raise ArgumentError("num_replicas", "give num_replicas or autoscaling_config, not both")
    if num_replicas is not None and num_replicas != "auto":
        check_int("num_replicas", num_replicas)
    if autoscaling_config is not None and not isinstance(autoscaling_config, Mapping):
        raise ArgumentError("autoscaling_config", f"expected a dict, got {autoscaling_config!r}")
    check_number("num_cpus", num_cpus, minimum=0.0, inclusive=False)
    check_int("threads", threads, optional=True)
    check_int("max_ongoing_requests", max_ongoing_requests)
    check_int("max_replicas_per_node", max_replicas_per_node, optional=True)
    check_int("max_body", max_body)
    if models is not None and (isinstance(models, str) or not all(isinstance(m, str) for m in models)):
        raise ArgumentError("models", f"expected a list of model names, got {models!r}")
    settings = {
        "model_name": model_name,
        "models": list(models) if models is not None else None,
        "threads": threads,
        "batching": _batching(batching),
        "max_body": max_body,
        "token": token,
    }
    options: dict[str, Any] = {
        "name": name,
        "max_ongoing_requests": max_ongoing_requests,
        "logging_config": {"enable_access_log": bool(access_log)},
        "ray_actor_options": {"num_cpus": float(num_cpus), **dict(ray_actor_options or {})},
    }
    if num_replicas is not None:
        options["num_replicas"] = num_replicas
    if autoscaling_config is not None:
        options["autoscaling_config"] = dict(autoscaling_config)
    if max_replicas_per_node is not None:
        options["max_replicas_per_node"] = max_replicas_per_node
    deployment = serve.deployment(_replica_class(), **options)
    return deployment.bind(str(path), settings)


def build_app(args: Mapping[str, Any]) -> Any:
    """The application builder for ``serve run`` / ``serve deploy`` config files::

        import_path: infercore.integrations.ray:build_app
        args: {model: /models/minilm, batching: {max_batch_size: 4}}

    ``args``: ``model`` (the path), then any keyword of :func:`ic_deployment`. The file's
    ``deployments:`` section (``num_replicas``, ``ray_actor_options``...) overrides the options
    of the deployment named ``name`` (``infercore``)."""
    args = dict(args or {})
    model = args.pop("model", None)
    if model is None:
        raise ArgumentError("model", "the application's args need 'model': a model repository or model path")
    import inspect

    known = set(inspect.signature(ic_deployment).parameters) - {"model_or_repo"}
    unknown = sorted(set(args) - known)
    if unknown:
        raise ArgumentError(
            unknown[0],
            f"unknown application arg(s) {', '.join(unknown)}; known: model, {', '.join(sorted(known))}",
        )
    return ic_deployment(model, **args)


def _batching(value: Any) -> dict[str, Any] | bool | str:
    if value == _FROM_CONFIG or value is False:
        return value
    if value is True:
        return {}
    if isinstance(value, Mapping):
        from ..serve.config import ModelConfig

        try:
            ModelConfig.from_dict({"batching": dict(value)}, "batching")
        except ValueError as e:
            raise ArgumentError("batching", str(e)) from None
        return dict(value)
    raise ArgumentError(
        "batching", f"expected 'config', False, True or a dict of batcher settings, got {value!r}"
    )


def _serve() -> Any:
    from ..optional import require

    return require("ray.serve", "ray", package="ray[serve]")


# -- the replica -------------------------------------------------------------------------------------
_REPLICA: Any = None


def _replica_class() -> Any:
    """The deployment class, made once per process (it needs Ray): module attribute
    ``InfercoreReplica``, so that Ray pickles it by reference and each replica imports it."""
    global _REPLICA
    if _REPLICA is None:
        serve = _serve()
        cls = serve.ingress()(_Replica)
        cls.__name__ = cls.__qualname__ = "InfercoreReplica"
        _REPLICA = cls
    return _REPLICA


def __getattr__(name: str) -> Any:
    if name == "InfercoreReplica":
        return _replica_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _Replica:
    """One replica: a model repository behind the V2 REST routes and ``infer`` for handles."""

    def __init__(self, model_or_repo: str, settings: dict[str, Any]) -> None:
        from ..serve.layout import repository_for
        from ..serve.repository import ModelRepository
        from ..serve.service import InferenceService

        self._settings = settings
        self._served = repository_for(model_or_repo, settings.get("model_name"))
        try:
            self.cpus = _assigned_cpus()
            self.threads = settings.get("threads") or max(1, math.ceil(self.cpus))
            # the replica's CPUs as one-thread engine instances, unless a model's config.yaml says
            # otherwise; ``threads=`` given to ic_deployment decides for every model
            layout = {"threads": 1, "instances": self.threads}
            explicit = bool(settings.get("threads"))
            self.repo = ModelRepository(self._served.root, defaults=None if explicit else layout)
            overrides: dict[str, Any] = dict(layout) if explicit else {}
            if settings.get("batching", _FROM_CONFIG) != _FROM_CONFIG:
                overrides["batching"] = settings["batching"]
            names = settings.get("models") or list(self._served.models) or list(self.repo.scan())
            if not names:
                raise ValueError(f"{model_or_repo}: no model to serve")
            for model in names:
                self.repo.load(model, overrides)
            self.service = InferenceService(self.repo, token=settings.get("token"))
        except BaseException:
            self._served.cleanup()
            raise
        log.info(
            "replica ready",
            extra={
                "models": names,
                "cpus": self.cpus,
                "threads": self.threads,
                "root": str(self._served.root),
            },
        )

    def __serve_build_asgi_app__(self) -> Any:
        from ..serve.rest import create_app

        return create_app(
            self.service, max_body=self._settings.get("max_body", 64 << 20), model_control=_MODEL_CONTROL_OFF
        )

    async def infer(
        self,
        inputs: Mapping[str, np.ndarray] | np.ndarray,
        model: str | None = None,
        *,
        version: str | int | None = None,
        outputs: Sequence[str] | None = None,
        timeout: float | None = None,
        priority: int = 0,
    ) -> dict[str, np.ndarray]:
        """Run ``inputs`` (name -> array; a lone array for a one-input model) through ``model``
        (optional when the deployment serves one) and return its outputs (``outputs``: a subset).
        ``timeout`` in seconds, ``priority`` 0 or 1, as the V2 request parameters."""
        from ..serve.service import RequestTensor, new_request_id
        from ..serve.tensors import datatype_of

        started = time.perf_counter()
        name = model or ""
        mv = None
        try:
            mv = self.service.model(self._model_name(model), None if version is None else str(version))
            name = mv.name
            if isinstance(inputs, np.ndarray):
                if len(mv.inputs) != 1:
                    raise BadRequest(
                        f"model {mv.name!r} has {len(mv.inputs)} inputs "
                        f"({', '.join(s.name for s in mv.inputs)}): pass a dict of arrays"
                    )
                inputs = {mv.inputs[0].name: inputs}
            if not isinstance(inputs, Mapping):
                raise BadRequest(f"inputs must be a dict of numpy arrays, got {type(inputs).__name__}")
            tensors = []
            for key, value in inputs.items():
                arr = np.asarray(value)
                tensors.append(RequestTensor(str(key), datatype_of(arr.dtype), arr))
            parameters: dict[str, Any] = {"priority": priority}
            if timeout is not None:
                parameters["timeout"] = timeout * 1e6 if isinstance(timeout, int | float) else timeout
            requested = list(outputs) if outputs is not None else None
            result = await self.service.infer(mv, tensors, requested, parameters)
        except ServeError as e:
            self.service.record(mv, name, "ray", started, new_request_id(), e)
            raise
        self.service.record(mv, name, "ray", started, "")
        return result

    def _model_name(self, model: str | None) -> str:
        if model is not None:
            return model
        served = [e.name for e in self.repo.models()]
        if len(served) != 1:
            raise BadRequest(f"this deployment serves {len(served)} models ({', '.join(served)}): name one")
        return served[0]

    def describe(self) -> dict[str, Any]:
        """This replica: its node, process, CPUs, runtime threads, and per model the versions
        served and the tensors ``(name, dtype, shape)`` (``handle.describe.remote()``)."""
        import ray

        ctx = ray.get_runtime_context()
        models = {}
        for entry in self.repo.models():
            mv = entry.latest
            assert mv is not None
            models[entry.name] = {
                "versions": sorted(entry.versions),
                "inputs": [(s.name, str(s.dtype), list(s.shape)) for s in mv.inputs],
                "outputs": [(s.name, str(s.dtype), list(s.shape)) for s in mv.outputs],
            }
        return {
            "node_id": ctx.get_node_id(),
            "actor_id": ctx.get_actor_id(),
            "pid": os.getpid(),
            "cpus": self.cpus,
            "threads": self.threads,
            "models": models,
        }

    def check_health(self) -> None:
        """Ray calls this periodically: a replica whose models are gone is restarted."""
        if not self.repo.models():
            raise RuntimeError("no model is served")

    async def __del__(self) -> None:
        # Ray waits for the replica's ongoing requests before it calls this (graceful shutdown)
        repo = getattr(self, "repo", None)
        if repo is not None:
            await asyncio.to_thread(repo.close, True)
        served = getattr(self, "_served", None)
        if served is not None:
            served.cleanup()


def _assigned_cpus() -> float:
    """The CPUs Ray gave this actor (its ``num_cpus``); 1 outside an actor."""
    try:
        import ray

        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    except Exception:  # not in a Ray worker (a unit test constructing the class)
        cpus = None
    return float(cpus) if cpus else 1.0


# -- the proxy: a request whose replica died is sent again ----------------------------------------------
_REPLAYED = "x-infercore-replayed"
_IDEMPOTENT = re.compile(r"(^|/)v2(/models/[^/]+(/versions/[^/]+)?/infer|/repository/index)$")


class ReplicaFailover:
    """ASGI middleware for Ray Serve's HTTP proxy: a V2 request whose replica died before it
    answered (Ray's proxy then answers a bare ``500 Internal Server Error``) is sent again, to a
    live replica or to the one Ray starts in its place, up to ``retries`` times; after that, or
    when the body was too large to keep (``max_body``), it is answered ``503`` with
    ``Retry-After: 1``, an error a client retries.

    Only requests that may run twice are sent again: ``GET`` and ``HEAD`` under ``/v2``,
    ``POST .../v2/models/<name>[/versions/<v>]/infer`` (inference has no side effects) and
    ``.../v2/repository/index``; every other request passes through untouched. An answer that
    needed a second send carries ``x-infercore-replayed: <sends - 1>``.

    Install it with the proxy callback Ray reads on every node when it starts::

        RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=infercore.integrations.ray:proxy_middlewares ray start ...
    """

    def __init__(self, app: Any, retries: int = 3, max_body: int = 64 << 20, backoff: float = 0.2) -> None:
        self.app = app
        self.retries = retries
        self.max_body = max_body
        self.backoff = backoff

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not self._replayable(scope):
            await self.app(scope, receive, send)
            return
        body: list[dict[str, Any]] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left before its request was whole: nobody to answer
            body.append(message)
            size += len(message.get("body", b""))
            if not message.get("more_body") or size > self.max_body:
                break
        whole = not body[-1].get("more_body")
        gone = False  # the client hung up: Ray's proxy then returns without an answer too
        for attempt in range(self.retries + 1 if whole else 1):
            started = False
            replay = iter(body)

            async def replayed_receive(replay: Any = replay) -> dict[str, Any]:
                nonlocal gone
                for message in replay:
                    return message
                message = dict(await receive())  # after the body: the client's disconnect, if any
                gone = gone or message["type"] == "http.disconnect"
                return message

            async def watched_send(message: dict[str, Any], attempt: int = attempt) -> None:
                nonlocal started
                if message["type"] == "http.response.start":
                    started = True
                    if attempt:
                        message = {
                            **message,
                            "headers": [
                                *message.get("headers", []),
                                (_REPLAYED.encode(), str(attempt).encode()),
                            ],
                        }
                await send(message)

            await self.app(scope, replayed_receive, watched_send)
            if started or gone:  # answered, or no one left to answer: not a dead replica
                return
            log.warning(
                "the replica serving %s %s died before it answered: %s",
                scope.get("method"),
                scope.get("path"),
                f"sending it again ({attempt + 1} of {self.retries})"
                if whole and attempt < self.retries
                else "answering 503",
            )
            if whole and attempt < self.retries:
                await asyncio.sleep(self.backoff * (attempt + 1))
        why = (
            f"the replica serving this request died before it answered, {self.retries + 1} times"
            if whole
            else f"the replica serving this request died before it answered, and a body over {self.max_body} bytes is not kept to send again"
        )
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [(b"content-type", b"application/json"), (b"retry-after", b"1")],
            }
        )
        await send({"type": "http.response.body", "body": json.dumps({"error": f"{why}; retry"}).encode()})

    @staticmethod
    def _replayable(scope: dict[str, Any]) -> bool:
        method = scope.get("method", "")
        path = scope.get("path", "").rstrip("/")
        if method in ("GET", "HEAD"):
            return "/v2" in path
        return method == "POST" and _IDEMPOTENT.search(path) is not None


def proxy_middlewares() -> list[Any]:
    """Ray's HTTP proxy callback (``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH``): the proxy's
    middlewares, :class:`ReplicaFailover`."""
    from starlette.middleware import Middleware

    return [Middleware(ReplicaFailover)]
