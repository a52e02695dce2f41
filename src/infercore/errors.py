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
    ├── BatchingError
    │   ├── QueueFullError                               overload: refused at once, never dropped later
    │   ├── DeadlineExceededError (also TimeoutError)
    │   └── BatcherClosedError                           submit after close, or ended by close(drain=False)
    └── CalibrationError

``EngineClosedError`` (a ``BackendError``) is raised by any call on a closed engine.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "BackendRuntimeError",
    "BackendUnavailableError",
    "BatcherClosedError",
    "BatchingError",
    "CalibrationError",
    "DeadlineExceededError",
    "EngineClosedError",
    "InfercoreError",
    "InputSpecError",
    "ModelLoadError",
    "QueueFullError",
    "UnknownBackendError",
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


class InputSpecError(InfercoreError, ValueError):
    """An input does not match the model: wrong name, dtype, rank or dimension."""

    def __init__(self, message: str, *, tensor: str | None = None) -> None:
        super().__init__(message)
        self.tensor = tensor


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
