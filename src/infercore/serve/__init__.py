"""``infercore serve``: an Open Inference Protocol (V2) server over REST and gRPC.

    from infercore.serve import InferenceServer, ServeOptions
    InferenceServer("models/", ServeOptions(http_port=8000, grpc_port=8001)).run()

Needs the ``serve`` extra (starlette, uvicorn, orjson, grpcio, protobuf, prometheus-client, pyyaml).
The server's modules import those packages; this one imports nothing until used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .repository import ModelRepository
    from .server import InferenceServer, ServeOptions, ServerThread

__all__ = ["InferenceServer", "ModelRepository", "ServeOptions", "ServerThread"]

_WHERE = {
    "InferenceServer": "server",
    "ServeOptions": "server",
    "ServerThread": "server",
    "ModelRepository": "repository",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
