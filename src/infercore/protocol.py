"""The contract between the Engine and a backend.

A backend adapts one runtime. ``Engine`` validates every input once, in Python, before it calls
the backend, so a backend never re-validates; it translates the runtime's own exceptions into
``infercore.errors`` with the original kept as ``__cause__``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pluggy

from .specs import BackendInfo, TensorSpec

__all__ = [
    "Backend",
    "BackendFactory",
    "Binding",
    "ModelVerifier",
    "RawSession",
    "Spec",
    "VerifiedModel",
    "hookimpl",
    "hookspec",
]


@runtime_checkable
class Binding(Protocol):
    """Buffers bound to a runtime for one set of input shapes (the zero-copy path).

    ``inputs`` are arrays the caller writes into and the runtime reads (in place where the runtime
    allows, else copied in by ``run``). ``outputs`` are reused arrays the runtime writes; an entry
    may be replaced by ``run`` only when the runtime could not write into it in place (an output
    whose shape depends on the data), and then in place: the Engine holds these very dicts, so a
    backend must update them, never rebind the attributes. Not thread-safe: one binding per thread.
    """

    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]

    def run(self) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class Backend(Protocol):
    """An opened model on one runtime. ``run`` must be safe to call from several threads."""

    name: str
    device: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    metadata: Mapping[str, str]

    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        """Run on validated feeds; return the requested outputs as arrays the caller owns."""
        ...

    def bind(self, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> Binding:
        """Bind validated, C-contiguous input arrays (and optional caller-given output arrays)."""
        ...

    def close(self) -> None: ...

    # Optional, looked up with getattr by the Engine:
    #   allocate(shape, dtype) -> np.ndarray     host buffers for bind() by shape (e.g. pinned memory)
    #   accepts_device_arrays: bool              bind() passes __cuda_array_interface__/DLPack objects through
    #   concurrency: int | None                  how many runs execute at once (OpenVINO: NUM_STREAMS);
    #                                            absent or None: as many as there are calling threads


class BackendFactory(Protocol):
    """What a plugin registers: something that can say whether it works here and open models."""

    def probe(self) -> BackendInfo: ...

    def open(
        self,
        path: Path,
        *,
        device: str,
        precision: str | None,
        threads: int | None,
        options: Mapping[str, Any],
    ) -> Backend: ...


class RawSession(Protocol):
    """A model on its runtime's own API, with nothing of infercore in between: the independent
    reference the conformance kit checks a backend against, and the fallback a tool measures with.
    Each built-in backend module offers ``raw_session(path, *, threads=None) -> RawSession``."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every output, by name, as arrays the caller owns."""
        ...

    def close(self) -> None: ...


class VerifiedModel(Protocol):
    """A model's files checked against a signature, in a private copy only this process writes:
    ``path`` is the model inside the copy (what a backend opens); ``close()`` removes the copy."""

    @property
    def path(self) -> Path: ...

    def close(self) -> None: ...


@runtime_checkable
class ModelVerifier(Protocol):
    """What ``load(..., verify=)`` takes (``infercore.signing.Verifier``): the core defines the hook,
    the signing tool implements it, so the Engine never imports the tool layer."""

    def verified_copy(self, path: Path) -> VerifiedModel:
        """Copy the model at ``path`` into a private directory, verify the copy, return it; raise
        ``SignatureError`` (and leave no copy) when it does not verify."""
        ...


# -- the plugin hook: how backends (built-in and third-party) make themselves known ----------------
hookspec = pluggy.HookspecMarker("infercore")
hookimpl = pluggy.HookimplMarker("infercore")


class Spec:
    @hookspec
    def register_backends(self, register: Callable[..., None]) -> None:
        """Call ``register(name, factory, *, suffixes=(), priority=0)`` for each backend.

        ``factory`` has ``open(path, *, device, precision, threads, options) -> Backend`` and
        ``probe() -> BackendInfo``. For a file suffix, backends are tried by descending priority.
        """
