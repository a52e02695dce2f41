"""The exceptions infercore raises.

Every runtime's own exception is caught in its backend file and re-raised as one of these, with
the original kept as ``__cause__``::

    InfercoreError
    ├── BackendError
    │   ├── BackendUnavailableError (also ImportError)   names the pip extra that installs it
    │   ├── UnknownBackendError (also KeyError)          lists the registered names
    │   └── BackendRuntimeError                          the runtime failed; its error is the cause
    ├── ModelLoadError                                   path, format, and why
    ├── InputSpecError (also ValueError)                 tensor name, expected vs given dtype/shape
    ├── ArgumentError (also ValueError)                  a bad argument: names the parameter
    │   └── UsageError                                   a bad command line: names the flag (cli/ only)
    ├── BatchingError
    │   ├── QueueFullError                               overload: refused at once, never dropped later
    │   ├── DeadlineExceededError (also TimeoutError)
    │   └── BatcherClosedError                           submit after close, or ended by close(drain=False)
    ├── CalibrationError
    │   └── CalibrationDropError                         the measured drop exceeded max_drop
    ├── ProfileError (also ValueError)                   a monitoring profile that is unreadable or not the model's
    ├── MonitorWorkerError                               a Monitor's worker process could not start
    ├── SignatureError                                   a model that does not match its signature: names
    │                                                    the files, and why (missing, invalid, mismatch)
    ├── ConversionError                                  a model could not be converted
    │   └── ConversionMismatchError                      the converted model disagreed: nothing written
    ├── OptimizeError                                    pruning, distillation or the measured chain failed
    │   ├── PruningError                                 the pruned module does not run, or nothing is prunable
    │   └── OptimizeDropError                            the chain lost more than max_drop: nothing written
    └── ServeError                                       answered to a client with an HTTP/gRPC status
        ├── BadRequest (400)  ├── NotFound (404)  ├── Unauthorized (401)  ├── PayloadTooLarge (413)
        ├── Unavailable (503) ├── DeadlineExceeded (504)  └── ClientClosed (499)

``EngineClosedError`` (a ``BackendError``) is raised by any call on a closed engine;
``CudaError`` (a ``BackendRuntimeError``) by a failed CUDA runtime call. ``BenchmarkWarning`` is the
one warning category: a figure that should not be trusted as it stands.

Argument checks: every public function and class that takes an argument of the wrong type or
value raises ``ArgumentError`` whose ``parameter`` is the Python name of the argument; the CLI
turns that name into its flag (``threads`` -> ``--threads``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = [
    "ArgumentError",
    "BackendError",
    "BackendRuntimeError",
    "BackendUnavailableError",
    "BadRequest",
    "BatcherClosedError",
    "BatchingError",
    "BenchmarkWarning",
    "CalibrationDropError",
    "CalibrationError",
    "ClientClosed",
    "ConversionError",
    "ConversionMismatchError",
    "CudaError",
    "DeadlineExceeded",
    "DeadlineExceededError",
    "EngineClosedError",
    "InfercoreError",
    "InputSpecError",
    "InputsRejectedError",
    "ModelLoadError",
    "ModelUnavailable",
    "MonitorWorkerError",
    "NotFound",
    "OptimizeDropError",
    "OptimizeError",
    "PayloadTooLarge",
    "ProfileError",
    "PruningError",
    "QueueFullError",
    "RuntimeInputError",
    "ServeError",
    "SignatureError",
    "Unauthorized",
    "Unavailable",
    "UnknownBackendError",
    "UsageError",
]


class InfercoreError(Exception):
    """Base of every error infercore raises on purpose."""


class BackendError(InfercoreError):
    """Something about a backend: missing, unknown, or failing at run time."""


class BackendUnavailableError(BackendError, ImportError):
    """The runtime (or the device asked for) is not installed or not usable here."""


class UnknownBackendError(BackendError, KeyError):
    """No backend is registered under that name."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class BackendRuntimeError(BackendError):
    """The runtime raised while running; its own exception is kept as ``__cause__``."""


class EngineClosedError(BackendError):
    """A call on an engine (or bound I/O) after ``close()``."""


class ModelLoadError(InfercoreError):
    """The model file is missing, unreadable, or refused by the runtime."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class ModelUnavailable(InfercoreError, RuntimeError):
    """A real model for tests or benchmarks (``infercore.testing.models``) could not be fetched or
    built here: no access to the package index, no torch..."""


class InputSpecError(InfercoreError, ValueError):
    """An input does not match the model: wrong name, dtype, rank or dimension."""

    def __init__(self, message: str, *, tensor: str | None = None) -> None:
        super().__init__(message)
        self.tensor = tensor


class RuntimeInputError(BackendRuntimeError, InputSpecError):
    """The runtime refused the values it was given as invalid arguments (ONNX Runtime's
    INVALID_ARGUMENT: a token id beyond the vocabulary, an index out of range). A caller's error,
    not the engine's: the server answers it 400."""


class InputsRejectedError(InputSpecError):
    """The model failed on the inputs a tool ran it on (``compare``'s reference run); ``generated``
    names the inputs the tool made itself (``infercore.inputs``' rules), which real data or other
    shapes would replace. The runtime's own error is kept as ``__cause__``."""

    def __init__(self, message: str, *, tensor: str | None = None, generated: tuple[str, ...] = ()) -> None:
        super().__init__(message, tensor=tensor)
        self.generated = generated


class ArgumentError(InfercoreError, ValueError):
    """An argument of the wrong type or value. ``parameter`` is its Python name (``"threads"``);
    ``reason`` is the message without it, so that the CLI can put the flag's name in its place."""

    def __init__(self, parameter: str, reason: str) -> None:
        super().__init__(f"{parameter}: {reason}")
        self.parameter = parameter
        self.reason = reason


class UsageError(InfercoreError, ValueError):
    """A command line that parsed but is wrong (an unknown name, a malformed value); it names the
    flag. Raised by ``infercore.cli`` only; the command exits 2."""


class BatchingError(InfercoreError):
    """Base of the errors the batcher ends a request with."""


class QueueFullError(BatchingError):
    """The batcher's queue is full: the request was refused at submit, nothing was queued."""


class DeadlineExceededError(BatchingError, TimeoutError):
    """The request's deadline passed before it ran; it was not run."""


class BatcherClosedError(BatchingError):
    """The batcher is closed (or closing): a submit was refused, or a queued request was ended."""


class CalibrationError(InfercoreError):
    """Quantization failed, or its measured accuracy drop exceeded ``max_drop``."""


class CalibrationDropError(CalibrationError):
    """The quantized (or FP16) model lost more than ``max_drop``: ``report`` holds the measurement and
    ``artifact_path`` the model, which stays in the cache and is not written to ``output``."""

    def __init__(self, message: str, *, report: Any, artifact_path: Path) -> None:
        super().__init__(message)
        self.report = report
        self.artifact_path = artifact_path


class SignatureError(InfercoreError):
    """A model was refused because it does not match its signature, so it was not loaded.

    ``reason`` is one of ``"missing"`` (no signature file), ``"invalid"`` (the signature does not
    verify with the key or certificate chain given, or is not a model-signing signature) and
    ``"mismatch"`` (the signature verifies, but the model's files differ from the ones signed: a
    changed byte, a missing file, an extra file). ``files`` names the files at fault (changed,
    missing, extra, in that order), ``path`` the model and ``signature`` the signature file."""

    REASONS = ("missing", "invalid", "mismatch")

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        path: str | None = None,
        signature: str | None = None,
        changed: tuple[str, ...] = (),
        missing: tuple[str, ...] = (),
        extra: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.path = path
        self.signature = signature
        self.changed = changed
        self.missing = missing
        self.extra = extra

    @property
    def files(self) -> tuple[str, ...]:
        return (*self.changed, *self.missing, *self.extra)


class ProfileError(InfercoreError, ValueError):
    """A monitoring profile that cannot be read (missing, malformed, another format version) or that
    was built for another model (a tensor it names is not the model's)."""


class MonitorWorkerError(InfercoreError):
    """A Monitor's worker process (``worker="process"``) could not start, or failed at start."""


class ConversionError(InfercoreError):
    """A model could not be converted: the exporter failed, or the source cannot be read."""


class ConversionMismatchError(ConversionError):
    """The converted model did not agree with its source (or could not run the checked inputs):
    nothing was written at the output path. ``report`` holds every attempt and every check."""

    def __init__(self, message: str, *, report: Any) -> None:
        super().__init__(message)
        self.report = report


class OptimizeError(InfercoreError):
    """Pruning, distillation or a step of the measured optimization chain failed."""


class PruningError(OptimizeError):
    """The module could not be pruned: it cannot be traced, the pruned module no longer runs or
    changed its outputs' shapes, or nothing in it is prunable."""


class OptimizeDropError(OptimizeError):
    """The optimized model lost more than ``max_drop`` against the input model: ``report`` holds
    every step's measurement; the final model was not written to the output directory."""

    def __init__(self, message: str, *, report: Any) -> None:
        super().__init__(message)
        self.report = report


class CudaError(BackendRuntimeError):
    """A CUDA runtime call failed; ``code`` is the ``cudaError_t`` name."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


# -- the server's answers ------------------------------------------------------------------------
class ServeError(InfercoreError):
    """An error answered to the client with ``message``; never a crash of the server. Each class
    carries its HTTP status and its gRPC status code name."""

    http_status = 500
    grpc_code = "INTERNAL"

    def __init__(self, message: str) -> None:
        # a message may quote what a client sent, and JSON lets a client send a lone UTF-16
        # surrogate ("\ud800") that no UTF-8 encoder (orjson, gRPC) accepts: escape it
        try:
            message.encode("utf-8")
        except UnicodeEncodeError:
            message = message.encode("utf-8", "backslashreplace").decode("utf-8")
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
    """A missing or wrong bearer token: 401 / UNAUTHENTICATED."""

    http_status = 401
    grpc_code = "UNAUTHENTICATED"


class PayloadTooLarge(ServeError):
    """A request body beyond the server's limit: 413 / RESOURCE_EXHAUSTED."""

    http_status = 413
    grpc_code = "RESOURCE_EXHAUSTED"


class Unavailable(ServeError):
    """Overload (queue full), a model not ready, or a server draining: 503 / UNAVAILABLE, at once."""

    http_status = 503
    grpc_code = "UNAVAILABLE"


class DeadlineExceeded(ServeError):
    """The request's deadline passed before it ran: 504 / DEADLINE_EXCEEDED."""

    http_status = 504
    grpc_code = "DEADLINE_EXCEEDED"


class ClientClosed(ServeError):
    """The client went away (disconnected mid-body or while its request waited): nginx's 499.

    Not an error of the server or of the request: counted as cancelled, and the request is
    taken out of the model's queue if it was still there."""

    http_status = 499
    grpc_code = "CANCELLED"


# -- warnings ------------------------------------------------------------------------------------
class BenchmarkWarning(UserWarning):
    """A figure that should not be trusted as it stands: too few samples, too short, too noisy."""
