"""Signed version directories: which versions the server may load.

A model's ``config.yaml`` (or the server's ``--require-signatures PUB``, for every model)::

    signature:
      public_key: /etc/infercore/models.pub     # or certificate_chain: [ca.pem, ...]
      required: true          # false: an unsigned version loads (logged); a signed one must verify

A version directory is signed as a whole (``infercore sign REPO/<model>/<version>``), its signature
inside it as ``model.sig``. The server's setting (``--require-signatures PUB``) and a model's own
(``signature:`` in its ``config.yaml``) each give a ``Verifier``; a version must pass every one that
applies. Versions are verified newest first for ``latest: N`` (all the policy names otherwise) until
the policy is met, so a refused version does not count for it. Each accepted version comes as its
verified private copy (``infercore.signing.VerifiedCopy``), which the server opens instead of the
repository's files.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BadRequest, InfercoreError, SignatureError

if TYPE_CHECKING:
    from .config import VersionPolicy

__all__ = ["SignatureConfig", "VersionSignatures", "close_copies", "no_signature_override", "select_verified"]

log = logging.getLogger("infercore.serve")


@dataclass(frozen=True)
class SignatureConfig:
    """How version directories are verified: against ``model.sig`` inside each, with a public key or
    a certificate chain; ``required: false`` lets an unsigned version load (a signed one must
    still verify). Relative paths are read from the model's directory."""

    public_key: Path | None = None
    certificate_chain: tuple[Path, ...] = ()
    required: bool = True

    @classmethod
    def parse(cls, value: Any) -> SignatureConfig | None:
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise ValueError(f"signature must be a Mapping, got {value!r}")
        value = dict(value)
        known = {"public_key", "certificate_chain", "required"}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(
                f"signature: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(known))}"
            )
        key, chain = value.get("public_key"), value.get("certificate_chain")
        if (key is None) == (chain is None):
            raise ValueError("signature needs exactly one of public_key (a PEM file) and certificate_chain (a list)")
        if chain is not None:
            if isinstance(chain, str):
                chain = [chain]
            if not isinstance(chain, list) or not chain or not all(isinstance(c, str) for c in chain):
                raise ValueError(f"signature.certificate_chain must be a list of PEM file paths, got {chain!r}")
        required = value.get("required", True)
        if not isinstance(required, bool):
            raise ValueError(f"signature.required must be true or false, got {required!r}")
        return cls(
            Path(_string(key, "signature.public_key")) if key is not None else None,
            tuple(Path(c) for c in chain or ()),
            required,
        )

    def verifier(self, base: Path | None = None) -> Any:
        """An ``infercore.signing.Verifier`` for this setting, relative paths read from ``base``."""
        from ..signing import Verifier

        def at(p: Path) -> Path:
            return p if base is None or p.is_absolute() else base / p

        if self.public_key is not None:
            return Verifier(public_key=at(self.public_key))
        return Verifier(certificate_chain=[at(c) for c in self.certificate_chain])


def _string(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a str, got {value!r}")
    return value


def select_verified(
    name: str, versions: Mapping[int, Path], policy: VersionPolicy, checks: list[tuple[Any, bool]]
) -> tuple[dict[int, Any], dict[int, SignatureError]]:
    """({version: its verified copy, or None for an unsigned one a ``required: false`` setting lets
    load}, {version: why it was refused}) for the versions ``policy`` serves among those that
    verify. ``versions`` maps a version to its model file; ``checks`` are (verifier, required)."""
    if policy.kind == "latest":
        order, want = sorted(versions, reverse=True), policy.versions[0]
    else:
        order = policy.select(list(versions))
        want = len(order)
    accepted: dict[int, Any] = {}
    refused: dict[int, SignatureError] = {}
    try:
        for v in order:
            if len(accepted) >= want:
                break
            try:
                accepted[v] = _verify_version(versions[v].parent, checks)
            except SignatureError as e:
                refused[v] = e
    except BaseException:
        close_copies(accepted)
        raise
    return accepted, refused


def _verify_version(vdir: Path, checks: list[tuple[Any, bool]]) -> Any:
    from ..signing import SIGNATURE_NAME

    sig = vdir / SIGNATURE_NAME
    if not sig.exists() and not any(required for _, required in checks):
        return None  # the caller logs an unsigned version it loads
    copy = checks[0][0].verified_copy(vdir, signature=sig)
    try:
        for verifier, _ in checks[1:]:
            verifier.verify(copy.path, signature=copy.signature)
    except BaseException:
        copy.close()
        raise
    return copy


class VersionSignatures:
    """The server's signature setting, and what it refused: ``refused`` (model -> {version: why},
    from each model's last load: the index's UNAVAILABLE rows), ``failures`` (refusals counted by
    (model, version, reason) since start: ``infercore_signature_failure_total``)."""

    def __init__(self, server: SignatureConfig | None) -> None:
        self.server = server
        self._server_verifier = server.verifier() if server is not None else None
        self.refused: dict[str, dict[int, str]] = {}
        self.last: dict[str, SignatureError] = {}  # the latest refusal per model: a failed load's cause
        self.failures: collections.Counter[tuple[str, str, str]] = collections.Counter()
        self._lock = threading.Lock()

    def checks(self, name: str, own: SignatureConfig | None, model_dir: Path) -> list[tuple[Any, bool]]:
        """(verifier, required) for every setting that applies: the server's, then the model's own.
        A setting whose key cannot be read fails the load (it is not a version's refusal)."""
        checks: list[tuple[Any, bool]] = []
        if self._server_verifier is not None and self.server is not None:
            checks.append((self._server_verifier, self.server.required))
        if own is not None:
            try:
                checks.append((own.verifier(model_dir), own.required))
            except InfercoreError as e:
                raise BadRequest(f"model {name!r}: config.yaml signature: {e}") from e
        return checks

    def select(
        self, name: str, versions: Mapping[int, Path], policy: VersionPolicy, checks: list[tuple[Any, bool]]
    ) -> dict[int, Any]:
        """``select_verified``, with the refused versions recorded, logged and counted."""
        accepted, refused = select_verified(name, versions, policy, checks)
        for v, copy in accepted.items():
            if copy is None:
                log.warning("unsigned model version loaded (signature.required: false)", extra={"model": name, "version": v})
        for v, e in refused.items():
            log.warning(
                "model version refused: %s", e, extra={"model": name, "version": v, "reason": e.reason, "files": list(e.files)}
            )
        with self._lock:
            for v, e in refused.items():
                self.failures[(name, str(v), e.reason)] += 1
                self.last[name] = e
            self.refused[name] = {v: f"{name}/{v}: signature {e.reason}: {e}" for v, e in refused.items()}
        return accepted

    def raise_if_refused(self, name: str, served: bool, set_state: Callable[[str, str, str], None]) -> None:
        """When a load selected no version because their signatures failed: keep what is served
        (its reason says the reload was refused) or mark the model UNAVAILABLE, and raise."""
        refused = self.refused.get(name, {})
        if not refused:
            return
        why = "; ".join(refused[v] for v in sorted(refused, reverse=True))
        set_state(name, *(("READY", f"reload refused: {why}") if served else ("UNAVAILABLE", why)))
        raise BadRequest(
            f"model {name!r}: no version that the version policy selects passed signature verification: {why}"
        ) from self.last.pop(name, None)


def no_signature_override(override: Mapping[str, Any], source: str) -> None:
    """A load request cannot change how versions are verified."""
    if "signature" in override:
        raise ValueError(
            f"{source}: signature cannot be changed by a load request; it comes from the model's "
            "config.yaml and the server's --require-signatures"
        )


def close_copies(copies: Mapping[int, Any]) -> None:
    for copy in copies.values():
        if copy is not None:
            copy.close()
