"""Errors the server answers with: each carries its HTTP status and its gRPC status code name."""

from __future__ import annotations

__all__ = [
    "BadRequest",
    "ClientClosed",
    "DeadlineExceeded",
    "NotFound",
    "PayloadTooLarge",
    "ServeError",
    "Unauthorized",
    "Unavailable",
]


class ServeError(Exception):
    """An error answered to the client with ``message``; never a crash of the server."""

    http_status = 500
    grpc_code = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(ServeError):
    """Malformed request, unknown model or tensor, wrong datatype, shape or size: 400 / INVALID_ARGUMENT."""

    http_status = 400
    grpc_code = "INVALID_ARGUMENT"


class NotFound(ServeError):
    """A model that is not in the repository (repository endpoints): 404 / NOT_FOUND."""

    http_status = 404
    grpc_code = "NOT_FOUND"


class Unauthorized(ServeError):
    http_status = 401
    grpc_code = "UNAUTHENTICATED"


class PayloadTooLarge(ServeError):
    http_status = 413
    grpc_code = "RESOURCE_EXHAUSTED"


class Unavailable(ServeError):
    """Overload (queue full), a model not ready, or a server draining: 503 / UNAVAILABLE, at once."""

    http_status = 503
    grpc_code = "UNAVAILABLE"


class DeadlineExceeded(ServeError):
    http_status = 504
    grpc_code = "DEADLINE_EXCEEDED"


class ClientClosed(ServeError):
    """The client went away (disconnected mid-body or while its request waited): nginx's 499.

    Not an error of the server or of the request: counted as cancelled, and the request is
    taken out of the model's queue if it was still there."""

    http_status = 499
    grpc_code = "CANCELLED"
