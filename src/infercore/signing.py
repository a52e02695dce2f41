"""Signed models: sign a model where it is built, verify it where it runs, load only what verified.

The format and every cryptographic step are OpenSSF model-signing's (``model-signing==1.1.1``,
``pip install "infercore[sign]"``): a Sigstore bundle holding a DSSE envelope over an in-toto
manifest of every file's sha256. infercore decides which files make up a model, and makes sure
that the bytes a backend opens are the bytes that were verified.

What a signature covers (a model is all its files, ``infercore.modelfiles.model_files``):

- a directory: every regular file under it except the signature (``model.sig`` inside it by
  default) and git's files, exactly as ``model_signing sign key DIR`` signs it;
- a model of one file (``.tflite``, an ``.onnx`` without external data, a TensorRT engine): that
  file, exactly as ``model_signing sign key FILE`` signs it (default signature ``FILE.sig``);
- a model of several files (an ``.onnx`` with its external data, an ``.xml`` with its ``.bin``):
  those files, as a manifest of the directory that holds them with every other entry ignored.

A model file is also verified against a signature of its whole directory (a serve version
directory signed as a whole): the directory's signed files must then be the model's files.

Keys: elliptic-curve keys on P-256, P-384 or P-521, alone or in a certificate. model-signing 1.1.1
signs with nothing else (no RSA, no Ed25519, for the key and the certificate methods alike): such a
key is refused up front with an ``ArgumentError`` that says so. Nothing here touches the network.

``load(path, verify=Verifier(...))`` and the server do not open a model by path after checking it:
``Verifier.verified_copy`` copies the model's files into a private directory (mode 0700, under the
system's temporary directory), verifies the copy, and the backend opens the copy, whatever the
original becomes meanwhile.
"""

from __future__ import annotations

import ast
import errno
import json
import logging
import os
import re
import shutil
import stat
import tempfile
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any

from .errors import ArgumentError, ModelLoadError, SignatureError
from .modelfiles import external_data_locations, model_files
from .optional import require

__all__ = [
    "SIGNATURE_NAME",
    "Verification",
    "VerifiedCopy",
    "Verifier",
    "default_signature",
    "sign",
    "verify",
]

log = logging.getLogger(__name__)

SIGNATURE_NAME = "model.sig"  # a signed directory's signature, inside it (left out of its manifest)
_CURVES = ("secp256r1", "secp384r1", "secp521r1")
_GIT_PATHS = (".git", ".gitattributes", ".github", ".gitignore")  # model-signing leaves these out
_MAKE_KEY = "openssl ecparam -name prime256v1 -genkey -noout -out key.pem"

# Test seam: called with (the model path given, the model path inside the verified copy) once the
# copy verified and before it is handed to be opened. A test swaps the original file here to show
# that what runs is what verified.
after_verify_hook: Callable[[Path, Path], None] | None = None


def _model_signing() -> ModuleType:
    require("OpenSSL", "sign", package="pyopenssl")  # model-signing imports it without declaring it
    return require("model_signing", "sign", package="model-signing")


# -- results ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Verification:
    """A model that matched its signature: ``files`` are the signed files (relative to the
    directory for a directory signature, the file's name for a one-file signature)."""

    model: Path
    signature: Path
    files: tuple[str, ...]
    method: str  # "public_key" | "certificate"

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": str(self.model),
            "signature": str(self.signature),
            "verified": True,
            "method": self.method,
            "files": list(self.files),
        }


class VerifiedCopy:
    """A model's files, verified, in a private directory only this process's user can write.

    ``path`` is the model inside the copy (the file or directory a backend opens), ``root`` the
    private directory, ``signature`` the copy of the signature the files were verified against.
    ``close()`` removes the copy (also at garbage collection and at exit); an Engine loaded with
    ``verify=`` closes it when it closes."""

    def __init__(self, path: Path, root: Path, signature: Path, verification: Verification) -> None:
        self.path = path
        self.root = root
        self.signature = signature
        self.verification = verification
        self._finalizer = weakref.finalize(self, shutil.rmtree, str(root), True)

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def close(self) -> None:
        self._finalizer()

    def __enter__(self) -> VerifiedCopy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else str(self.path)
        return f"<VerifiedCopy of {self.verification.model}: {state}>"


# -- what a signature covers -----------------------------------------------------------------------
@dataclass(frozen=True)
class _Unit:
    """What model-signing hashes for a model: ``root`` itself (one file) or a directory ``root``
    with ``ignore`` (relative paths) left out. ``files`` are the model's own files, relative to
    ``root`` (empty for a directory model: all of it)."""

    model: Path
    root: Path
    directory: bool
    files: tuple[str, ...]
    ignore: tuple[str, ...]

    def name(self, identifier: str) -> str:
        """A manifest identifier as a user knows the file (one-file signatures call it ``.``)."""
        return self.model.name if identifier == "." else identifier


def default_signature(model_path: str | os.PathLike[str]) -> Path:
    """Where a model's signature is unless one is named: ``DIR/model.sig`` for a directory,
    ``FILE.sig`` beside a model file."""
    p = Path(model_path)
    return p / SIGNATURE_NAME if p.is_dir() else p.with_name(p.name + ".sig")


def _model(model_path: Any) -> Path:
    if not isinstance(model_path, str | os.PathLike):
        raise ArgumentError("model_path", f"expected a path, got {type(model_path).__name__} {model_path!r}")
    p = Path(model_path)
    if p.is_symlink():  # the caller's own link to a model; links inside a model are refused
        p = p.resolve()
    if not p.exists():
        raise ModelLoadError(f"model not found: {p}", path=str(p))
    if not (p.is_file() or p.is_dir()):
        raise ModelLoadError(f"{p} is neither a file nor a directory", path=str(p))
    return p


def _relative_paths(parameter: str, paths: Iterable[Any]) -> tuple[str, ...]:
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    out = []
    for p in paths:
        if not isinstance(p, str | os.PathLike):
            raise ArgumentError(parameter, f"expected relative paths, got {type(p).__name__} {p!r}")
        rel = PurePosixPath(os.fspath(p))
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise ArgumentError(parameter, f"{os.fspath(p)!r} must be a path relative to the model's directory")
        out.append(rel.as_posix())
    return tuple(out)


def _inside(path: Path, directory: Path) -> list[str]:
    """``path`` relative to ``directory`` if it lies inside it (so that it is left out), else nothing."""
    try:
        return [path.resolve().relative_to(directory.resolve()).as_posix()]
    except ValueError:
        return []


def _others(root: Path, keep: set[str]) -> list[str]:
    """Every entry under ``root`` that is neither a kept file nor a directory holding one
    (directories whole), relative to ``root``."""
    needed = {p.as_posix() for k in keep for p in PurePosixPath(k).parents if p.as_posix() != "."}
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = PurePosixPath(Path(dirpath).relative_to(root).as_posix())
        for d in list(dirnames):
            rel = (here / d).as_posix()
            if rel not in needed:
                out.append(rel)
                dirnames.remove(d)
        out += [(here / f).as_posix() for f in filenames if (here / f).as_posix() not in keep]
    return sorted(out)


def _plan(model: Path, signature: Path, ignore: Sequence[str], *, one_file: bool) -> _Unit:
    """What is hashed for ``model``: the file itself (``one_file``: a signature of that file
    alone), else a directory (the model's own, or the one holding the model's files)."""
    if model.is_dir():
        if one_file:
            raise SignatureError(
                f"{model}: its signature {signature} covers a single file, but {model} is a directory",
                reason="mismatch",
                path=str(model),
                signature=str(signature),
            )
        return _Unit(model, model, True, (), (*ignore, *_inside(signature, model)))
    files = model_files(model)
    root = model.parent
    if one_file:
        if len(files) > 1:
            others = tuple(f.relative_to(root).as_posix() for f in files[1:])
            raise SignatureError(
                f"{model}: its signature {signature} covers {model.name} alone, but the model also "
                f"reads {', '.join(others)}, which no signature covers: sign the model with infercore "
                "(infercore sign MODEL), which signs every file of it",
                reason="mismatch",
                path=str(model),
                signature=str(signature),
                extra=others,
            )
        return _Unit(model, model, False, (".",), ())
    rel = []
    for f in files:
        r = PurePosixPath(os.path.normpath(f.relative_to(root)))
        if ".." in r.parts:
            raise ArgumentError(
                "model_path",
                f"{model} reads {f}, which lies outside {root}: a signature covers one directory; "
                "keep the model's files under the directory of the model",
            )
        rel.append(r.as_posix())
    keep = set(rel)
    ignore = (*ignore, *_others(root, keep))
    return _Unit(model, root, True, tuple(rel), ignore)


# -- keys and certificates -------------------------------------------------------------------------
def _existing_file(parameter: str, value: Any) -> Path:
    if not isinstance(value, str | os.PathLike):
        raise ArgumentError(parameter, f"expected a path to a PEM file, got {type(value).__name__} {value!r}")
    p = Path(value)
    if not p.is_file():
        raise ArgumentError(parameter, f"no such file: {p}")
    return p


def _key_kind(key: Any) -> str:
    name = type(key).__name__.lower()
    for kind in ("rsa", "ed25519", "ed448", "dsa", "x25519", "x448"):
        if kind in name:
            return {"rsa": "an RSA key", "dsa": "a DSA key"}.get(kind, f"an {kind.capitalize()} key")
    curve = getattr(getattr(key, "curve", None), "name", None)
    return f"an elliptic-curve key on {curve}" if curve else f"a {type(key).__name__}"


def _check_ec(parameter: str, path: Path, key: Any) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    ok = isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) and key.curve.name in _CURVES
    if not ok:
        raise ArgumentError(
            parameter,
            f"{path} holds {_key_kind(key)}: model-signing 1.1.1 signs and verifies with elliptic-curve "
            f"keys on P-256, P-384 or P-521 only, with a key or a certificate alike; make one with: {_MAKE_KEY}",
        )


def _private_key(parameter: str, value: Any, password: bytes | None) -> Path:
    from cryptography.hazmat.primitives import serialization

    p = _existing_file(parameter, value)
    try:
        key = serialization.load_pem_private_key(p.read_bytes(), password)
    except TypeError as e:  # encrypted without a password, or a password for a plain key
        raise ArgumentError("password", f"{p}: {e}") from None
    except ValueError as e:
        raise ArgumentError(parameter, f"{p} is not a PEM private key, or the password is wrong: {e}") from None
    _check_ec(parameter, p, key)
    return p


def _public_key(value: Any) -> Path:
    from cryptography.hazmat.primitives import serialization

    p = _existing_file("public_key", value)
    try:
        key = serialization.load_pem_public_key(p.read_bytes())
    except ValueError as e:
        hint = " (that is a private key: give its public half, openssl ec -in key.pem -pubout)" if b"PRIVATE" in p.read_bytes() else ""
        raise ArgumentError("public_key", f"{p} is not a PEM public key{hint}: {e}") from None
    _check_ec("public_key", p, key)
    return p


def _certificates(parameter: str, values: Any) -> tuple[Path, ...]:
    from cryptography import x509

    if isinstance(values, str | os.PathLike):
        values = [values]
    try:
        paths = tuple(_existing_file(parameter, v) for v in values)
    except TypeError:
        raise ArgumentError(parameter, f"expected a list of PEM certificate files, got {values!r}") from None
    for p in paths:
        try:
            x509.load_pem_x509_certificates(p.read_bytes())
        except ValueError as e:
            raise ArgumentError(parameter, f"{p} holds no PEM certificate: {e}") from None
    return paths


def _password(value: Any) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    raise ArgumentError("password", f"expected str or bytes, got {type(value).__name__}")


# -- signing ---------------------------------------------------------------------------------------
def sign(
    model_path: str | os.PathLike[str],
    *,
    key: str | os.PathLike[str],
    signature: str | os.PathLike[str] | None = None,
    certificate: str | os.PathLike[str] | None = None,
    certificate_chain: Sequence[str | os.PathLike[str]] = (),
    password: str | bytes | None = None,
    ignore_paths: Sequence[str | os.PathLike[str]] = (),
) -> Path:
    """Sign the model at ``model_path`` (a file, with its companion files, or a directory) with the
    elliptic-curve private key ``key``, or with ``key`` and its ``certificate`` (``certificate_chain``:
    the intermediate and root certificates that go into the signature). Writes the signature to
    ``signature`` (default: ``DIR/model.sig``, ``FILE.sig``) and returns its path.

    ``ignore_paths`` (relative paths) leaves files of a directory out of the signature.
    """
    model = _model(model_path)
    sig = Path(signature) if signature is not None else default_signature(model)
    if sig.is_dir():
        raise ArgumentError("signature", f"{sig} is a directory; name the signature file to write")
    if not sig.parent.is_dir():
        raise ArgumentError("signature", f"the directory of {sig} does not exist")
    secret = _password(password)
    key_path = _private_key("key", key, secret)
    chain = _certificates("certificate_chain", certificate_chain) if certificate_chain else ()
    if chain and certificate is None:
        raise ArgumentError("certificate_chain", "a certificate chain goes with a certificate: give certificate too")
    cert = _certificates("certificate", certificate)[0] if certificate is not None else None
    ignore = _relative_paths("ignore_paths", ignore_paths)
    ms = _model_signing()
    unit = _plan(model, sig, ignore, one_file=not model.is_dir() and len(model_files(model)) == 1)
    config = ms.signing.Config()
    try:
        if cert is None:
            config.use_elliptic_key_signer(private_key=key_path, password=secret)
        else:
            config.use_certificate_signer(private_key=key_path, signing_certificate=cert, certificate_chain=chain)
    except ValueError as e:  # the certificate is not the key's
        raise ArgumentError("certificate", f"{cert}: {e}") from None
    config.set_hashing_config(ms.hashing.Config().set_ignored_paths(paths=list(unit.ignore)))
    part = sig.with_name(f".{sig.name}.{os.getpid()}.part")  # written after hashing, then renamed
    try:
        config.sign(unit.root, part)
        os.replace(part, sig)
    except ValueError as e:  # a link or a special file in the model
        raise ArgumentError("model_path", f"{model}: {e}") from None
    finally:
        part.unlink(missing_ok=True)
    log.info("signed %s (%s) -> %s", model, "certificate" if cert else "key", sig)
    return sig


# -- verifying -------------------------------------------------------------------------------------
def verify(
    model_path: str | os.PathLike[str],
    *,
    public_key: str | os.PathLike[str] | None = None,
    certificate_chain: Sequence[str | os.PathLike[str]] | None = None,
    signature: str | os.PathLike[str] | None = None,
    ignore_paths: Sequence[str | os.PathLike[str]] = (),
) -> Verification:
    """Check the model at ``model_path`` against its signature (default: ``DIR/model.sig``,
    ``FILE.sig``) with ``public_key`` or ``certificate_chain`` (the CA certificates to trust).

    Returns a ``Verification``; raises ``SignatureError`` naming the files when the model does not
    match (a changed byte, a missing file, an extra file), when the signature does not verify with
    the key or chain, or when there is no signature."""
    verifier = Verifier(public_key=public_key, certificate_chain=certificate_chain, ignore_paths=ignore_paths)
    return verifier.verify(model_path, signature=signature)


class Verifier:
    """How to check models: a ``public_key`` or a ``certificate_chain`` (exactly one), and optionally
    the ``signature`` file and ``ignore_paths`` (relative paths of a directory model left out).

    ``load(path, verify=Verifier(public_key="pub.pem"))`` opens only a model that verifies. A
    Verifier keeps no state between calls: each verification builds model-signing's configuration
    afresh (reusing one leaked ignored paths between calls upstream, sigstore/model-transparency#650).
    """

    def __init__(
        self,
        *,
        public_key: str | os.PathLike[str] | None = None,
        certificate_chain: Sequence[str | os.PathLike[str]] | str | os.PathLike[str] | None = None,
        signature: str | os.PathLike[str] | None = None,
        ignore_paths: Sequence[str | os.PathLike[str]] = (),
    ) -> None:
        if (public_key is None) == (not certificate_chain):
            raise ArgumentError(
                "public_key",
                "give exactly one of public_key (a PEM public key) and certificate_chain (PEM CA certificates)",
            )
        self.public_key = _public_key(public_key) if public_key is not None else None
        self.certificate_chain = _certificates("certificate_chain", certificate_chain) if certificate_chain else ()
        if signature is not None and not isinstance(signature, str | os.PathLike):
            raise ArgumentError("signature", f"expected a path, got {type(signature).__name__} {signature!r}")
        self.signature = Path(signature) if signature is not None else None
        self.ignore_paths = _relative_paths("ignore_paths", ignore_paths)

    @property
    def method(self) -> str:
        return "public_key" if self.public_key is not None else "certificate"

    def __repr__(self) -> str:
        trust = f"public_key={str(self.public_key)!r}" if self.public_key else (
            f"certificate_chain={[str(c) for c in self.certificate_chain]!r}"
        )
        return f"Verifier({trust})"

    def _trust(self) -> str:
        if self.public_key is not None:
            return f"the public key {self.public_key}"
        return f"the certificate chain {', '.join(str(c) for c in self.certificate_chain)}"

    def _signature(self, model: Path, signature: Any) -> Path:
        if signature is not None and not isinstance(signature, str | os.PathLike):
            raise ArgumentError("signature", f"expected a path, got {type(signature).__name__} {signature!r}")
        sig = Path(signature) if signature is not None else self.signature or default_signature(model)
        if not sig.is_file():
            raise SignatureError(
                f"{model}: no signature: {sig} does not exist (sign the model with: infercore sign "
                f"{model} --key KEY{'' if signature is None and self.signature is None else ' -o ' + str(sig)})",
                reason="missing",
                path=str(model),
                signature=str(sig),
            )
        return sig

    def verify(self, model_path: str | os.PathLike[str], *, signature: str | os.PathLike[str] | None = None) -> Verification:
        """Check the model in place (see ``infercore.signing.verify``)."""
        model = _model(model_path)
        sig = self._signature(model, signature)
        _model_signing()
        signed = self._read(sig, model)
        unit = _plan(model, sig, self.ignore_paths, one_file=signed.one_file)
        self._check(unit, sig, sig)
        log.info("verified %s against %s", model, sig)
        return Verification(model, sig, tuple(unit.name(f) for f in signed.files), self.method)

    def verified_copy(
        self, model_path: str | os.PathLike[str], *, signature: str | os.PathLike[str] | None = None
    ) -> VerifiedCopy:
        """Copy the model's files into a private directory, verify the copy, and return it: open
        ``copy.path``, never the original, and ``close()`` the copy when done. Raises
        ``SignatureError`` (and leaves nothing behind) when the copy does not verify."""
        model = _model(model_path)
        sig = self._signature(model, signature)
        _model_signing()
        root = Path(tempfile.mkdtemp(prefix="infercore-verified-"))  # 0700, in a sticky directory
        try:
            sig_copy = root / "signature"
            _copy_file(sig, sig_copy, sig.name, model, sig)
            signed = self._read(sig_copy, model, shown=sig)
            unit = _plan(model, sig, self.ignore_paths, one_file=signed.one_file)
            base = root / "model"
            if not unit.directory:
                inside = base / model.name
                _copy_file(model, inside, model.name, model, sig)
                copied = _Unit(model, inside, False, (".",), ())
            else:
                names = unit.files or _directory_files(model, unit.ignore, sig)
                for rel in names:
                    for parent in PurePosixPath(rel).parents:  # no link on the way, as model-signing
                        if parent.parts and (unit.root / parent).is_symlink():
                            raise _not_regular(model, sig, parent.as_posix(), "a symbolic link")
                    _copy_file(unit.root / rel, base / rel, rel, model, sig)
                if model.is_dir():
                    base.mkdir(mode=0o700, exist_ok=True)  # an empty directory model stays one
                inside = base if model.is_dir() else base / model.relative_to(unit.root)
                copied = _Unit(model, base, True, unit.files, self.ignore_paths)
            self._check(copied, sig_copy, sig)
            if after_verify_hook is not None:
                after_verify_hook(model, inside)
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        log.info("verified %s against %s (private copy %s)", model, sig, root)
        files = tuple(unit.name(f) for f in signed.files)
        return VerifiedCopy(inside, root, sig_copy, Verification(model, sig, files, self.method))

    def _read(self, sig: Path, model: Path, *, shown: Path | None = None) -> _Signed:
        signed = _read_signature(sig, model, shown=shown)
        if signed.method != self.method:
            how = {"public_key": "a key (verify it with public_key)", "certificate": "a certificate (verify it with certificate_chain)"}
            raise SignatureError(
                f"{model}: its signature {shown or sig} was made with {how[signed.method]}, "
                f"not with {how[self.method].split(' (')[0]}",
                reason="invalid",
                path=str(model),
                signature=str(shown or sig),
            )
        return signed

    def _check(self, unit: _Unit, sig: Path, shown: Path) -> None:
        """model-signing's verification of ``unit`` against ``sig`` (shown to users as ``shown``),
        with a configuration made for this call only."""
        ms = _model_signing()
        config = ms.verifying.Config()
        try:
            if self.public_key is not None:
                config.use_elliptic_key_verifier(public_key=self.public_key)
            else:
                config.use_certificate_verifier(certificate_chain=self.certificate_chain)
            config.set_hashing_config(ms.hashing.Config().set_ignored_paths(paths=list(unit.ignore)))
            config.verify(unit.root, sig)
        except Exception as e:
            raise _refusal(e, unit, shown, self._trust()) from e


@dataclass(frozen=True)
class _Signed:
    """What a signature says, read without trusting it: only to tell a one-file signature (``.``)
    from a directory's and a key's from a certificate's before model-signing verifies it, and to
    report the files after."""

    files: tuple[str, ...]
    method: str  # "public_key" | "certificate"

    @property
    def one_file(self) -> bool:
        return self.files == (".",)


def _read_signature(sig: Path, model: Path, *, shown: Path | None = None) -> _Signed:
    from model_signing._signing import sign_sigstore_pb
    from model_signing._signing import signing as ms_signing

    try:
        bundle = sign_sigstore_pb.Signature.read(sig).bundle
        envelope = bundle.dsse_envelope
        if envelope is None:
            raise ValueError("the bundle holds no DSSE envelope")
        manifest = ms_signing.dsse_payload_to_manifest(json.loads(envelope.payload))
        material = bundle.verification_material
        chain = getattr(material, "x509_certificate_chain", None)
        method = "certificate" if chain is not None and chain.certificates else "public_key"
        return _Signed(tuple(rd.identifier for rd in manifest.resource_descriptors()), method)
    except Exception as e:
        raise SignatureError(
            f"{model}: {shown or sig} is not a model-signing signature of a key or certificate "
            f"(a Sigstore bundle with a DSSE envelope): {type(e).__name__}: {e}",
            reason="invalid",
            path=str(model),
            signature=str(shown or sig),
        ) from e


def _directory_files(model: Path, ignore: Sequence[str], sig: Path) -> list[str]:
    """The files of a directory model that its signature covers (all but the ignored ones)."""
    left_out = [PurePosixPath(p) for p in (*ignore, *_GIT_PATHS)]
    out = []
    for dirpath, dirnames, filenames in os.walk(model):
        here = PurePosixPath(Path(dirpath).relative_to(model).as_posix())
        for name in [*dirnames, *filenames]:
            rel = here / name
            if any(rel == p or p in rel.parents for p in left_out):
                if name in dirnames:
                    dirnames.remove(name)
                continue
            full = Path(dirpath) / name
            if full.is_symlink():
                raise _not_regular(model, sig, rel.as_posix(), "a symbolic link")
            if name in filenames:
                out.append(rel.as_posix())
    return sorted(out)


def _not_regular(model: Path, sig: Path, rel: str, what: str) -> SignatureError:
    return SignatureError(
        f"{model}: {rel} is {what}; model-signing signs and verifies regular files only",
        reason="mismatch",
        path=str(model),
        signature=str(sig),
        extra=(rel,),
    )


def _copy_file(src: Path, dst: Path, rel: str, model: Path, sig: Path) -> None:
    """Copy one file (never through a link) into the private directory; ``rel`` names it in errors."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(src, flags)
    except FileNotFoundError:
        raise SignatureError(
            f"{model}: {rel} disappeared while it was being copied to be verified",
            reason="mismatch", path=str(model), signature=str(sig), missing=(rel,),
        ) from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise _not_regular(model, sig, rel, "a symbolic link") from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _not_regular(model, sig, rel, "not a regular file")
        dst.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            _copy_fd(fd, out)
        finally:
            os.close(out)
    finally:
        os.close(fd)


def _copy_fd(src: int, dst: int) -> None:
    """In the kernel where it can (copy_file_range: a reflink on filesystems that have them), else
    through a 1 MiB buffer."""
    copy_range = getattr(os, "copy_file_range", None)
    if copy_range is not None:
        try:
            while copy_range(src, dst, 1 << 30):
                pass
            return
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM):
                raise
    while chunk := os.read(src, 1 << 20):
        view = memoryview(chunk)
        while view:
            view = view[os.write(dst, view) :]


# -- model-signing's errors, as SignatureError -----------------------------------------------------
_MISMATCH = "Signature mismatch: "


def _refusal(e: Exception, unit: _Unit, sig: Path, trust: str) -> SignatureError:
    text = str(e)
    model, shown = str(unit.model), str(sig)
    if isinstance(e, ValueError) and text.startswith(_MISMATCH):
        return _mismatch(text[len(_MISMATCH) :], unit, sig)
    m = re.match(r"Cannot use '(.*)' because it is a symlink", text, re.S)
    if m:
        return _not_regular(unit.model, sig, _relative(m[1], unit), "a symbolic link")
    m = re.match(r"Cannot use '(.*)' as file or directory", text, re.S)
    if m:
        rel = _relative(m[1], unit)
        return SignatureError(
            f"{unit.model}: {rel} is missing or not a regular file ({text})",
            reason="mismatch", path=model, signature=shown, missing=(rel,),
        )
    name = type(e).__name__
    if name == "InvalidSignature" or text.startswith("Key mismatch"):
        why = "made with another key, or altered since"
    elif name == "X509StoreContextError" or "certificate" in text.lower():
        why = f"its certificate is not trusted: {text}"
    else:
        why = f"{name}: {text}" if text else name
    return SignatureError(
        f"{unit.model}: its signature {sig} does not verify with {trust} ({why})",
        reason="invalid", path=model, signature=shown,
    )


def _relative(path: str, unit: _Unit) -> str:
    try:
        return Path(path).relative_to(unit.root).as_posix() if unit.directory else unit.model.name
    except ValueError:
        return path


def _declared(unit: _Unit) -> set[str]:
    """The files a model file names, present or not (relative to the unit's directory)."""
    model = unit.model
    names = {model.name, *unit.files}
    if model.suffix.lower() == ".xml":
        names.add(model.with_suffix(".bin").name)
    elif model.suffix.lower() == ".onnx":
        names |= {PurePosixPath(os.path.normpath(loc)).as_posix() for loc in external_data_locations(model)}
    return names


def _mismatch(listing: str, unit: _Unit, sig: Path) -> SignatureError:
    try:
        entries = ast.literal_eval(listing)
        entries = [str(x) for x in entries] if isinstance(entries, list) else [listing]
    except (ValueError, SyntaxError):
        entries = [listing]
    changed: list[str] = []
    missing: list[str] = []
    extra: list[str] = []
    said = []
    for entry in entries:
        if m := re.match(r"Hash mismatch for '(.*?)': Expected", entry, re.S):
            changed.append(unit.name(m[1]))
            said.append(f"Hash mismatch for '{m[1]}'")  # without the digests' byte reprs
            continue
        said.append(entry)
        if m := re.match(r"Extra files found in model '.*?': (.*)", entry, re.S):
            extra += [unit.name(f) for f in m[1].split(", ")]
        elif m := re.match(r"Missing files in model '.*?': (.*)", entry, re.S):
            missing += [unit.name(f) for f in m[1].split(", ")]
    parts = []
    if changed:
        parts.append(f"changed since it was signed: {', '.join(changed)}")
    if missing:
        parts.append(f"missing: {', '.join(missing)}")
    if extra:
        parts.append(f"not in the signature: {', '.join(extra)}")
    hint = ""
    outside = [f for f in missing if unit.model.is_file() and f not in _declared(unit)]
    if outside:
        hint = (
            f"; the signature covers files that are not part of the model ({', '.join(outside)}): "
            f"verify the directory {unit.root} instead"
        )
    return SignatureError(
        f"{unit.model}: does not match its signature {sig}: {'; '.join(parts) or listing}{hint} "
        f"[model-signing: {'; '.join(said)}]",
        reason="mismatch",
        path=str(unit.model),
        signature=str(sig),
        changed=tuple(changed),
        missing=tuple(missing),
        extra=tuple(extra),
    )
