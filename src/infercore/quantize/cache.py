"""The on-disk cache of quantized and converted models: one entry per model digest, data
fingerprint and options, built in a fresh directory and published with one rename, so that
concurrent builders and interrupted runs never leave a half-written entry."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from ..errors import CalibrationError, InfercoreError
from ..modelfiles import model_files, sha256_files

__all__ = ["building", "cache_root", "copy_artifact", "fingerprint", "model_digest", "versions"]


def cache_root() -> Path:
    root = Path(os.environ.get("INFERCORE_CACHE", Path.home() / ".cache" / "infercore")) / "calibration"
    root.mkdir(parents=True, exist_ok=True)
    return root


def model_digest(path: Path) -> str:
    """sha256 over every file of the model (an ``.xml``'s ``.bin``, an ``.onnx``'s external data)."""
    return sha256_files(model_files(path))


def fingerprint(batches: Sequence[Mapping[str, np.ndarray]]) -> str:
    h = hashlib.sha256()
    for b in batches:
        for k in sorted(b):
            a = b[k]
            h.update(f"{k}|{a.dtype.str}|{a.shape}|".encode())
            h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def versions(*modules: str) -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for m in modules:
        try:
            out[m] = md.version(m)
        except md.PackageNotFoundError:
            out[m] = "absent"
    return out


@contextlib.contextmanager
def building(entry: Path, key: str, what: str) -> Iterator[Path]:
    """A fresh directory beside the cache ``entry`` to build it in; published as ``entry`` when the
    block ends. On failure the directory goes, and a runtime's own exception becomes a
    ``CalibrationError`` saying ``what`` failed (infercore's errors pass through as they are)."""
    if entry.exists():
        shutil.rmtree(entry, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=entry.parent))
    try:
        yield tmp
        _publish(tmp, entry)
    except InfercoreError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except Exception as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CalibrationError(f"{what} failed: {type(e).__name__}: {e}") from e


def _publish(tmp: Path, final: Path) -> None:
    """Move a finished cache entry into place; a concurrent writer that won first is kept."""
    try:
        tmp.rename(final)
    except OSError:
        if not final.exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def copy_artifact(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    if src.suffix == ".xml":
        shutil.copyfile(src.with_suffix(".bin"), dst.with_suffix(".bin"))
    return dst
