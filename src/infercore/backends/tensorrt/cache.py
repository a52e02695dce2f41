"""The on-disk engine cache, and the sidecar that vouches for a built engine.

Layout, under ``options["cache_dir"]`` (default ``$INFERCORE_CACHE/tensorrt``, else
``~/.cache/infercore/tensorrt``): ``<model stem>-<digest>.engine`` beside
``<model stem>-<digest>.engine.json``, and one ``timing-<TensorRT>-<GPU>-<sm>.cache`` per
TensorRT version and GPU. The digest keys the model's sha256 (and every external-data file's),
the TensorRT version, the GPU and the build options; the JSON sidecar records the same and the
engine's own sha256, and is checked before any deserialization, for cached engines and for
``.engine`` files a user loads alike.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from ...errors import ModelLoadError
from ...modelfiles import external_data_locations, sha256_file
from . import cuda

log = logging.getLogger(__name__)

SIDECAR_FORMAT = "infercore-tensorrt-engine/1"


def default_cache_dir() -> Path:
    base = os.environ.get("INFERCORE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "infercore")
    return Path(base) / "tensorrt"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def _sidecar_path(engine_path: Path) -> Path:
    return engine_path.with_name(engine_path.name + ".json")


def environment(trt: ModuleType, gpu: cuda.DeviceInfo) -> dict[str, str]:
    return {
        "tensorrt": str(trt.__version__),
        "gpu": gpu.name,
        "compute_capability": f"{gpu.compute_capability[0]}.{gpu.compute_capability[1]}",
    }


def _check_sidecar(path: Path, meta: Mapping[str, Any], env: Mapping[str, str]) -> list[str]:
    """What about a stored engine does not match this machine (empty: it matches)."""
    if meta.get("format") != SIDECAR_FORMAT:
        return [f"sidecar format {meta.get('format')!r} is not {SIDECAR_FORMAT!r}"]
    problems = [
        f"{key} {meta.get(key)!r} (built) vs {value!r} (here)"
        for key, value in env.items()
        if meta.get(key) != value
    ]
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != meta.get("engine_sha256"):
        problems.append(
            "the engine file's sha256 differs from the one recorded when it was built (stale or edited)"
        )
    return problems


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def load_engine_file(path: Path, trt: ModuleType, gpu: cuda.DeviceInfo) -> bytes:
    """Read a built engine; with a sidecar, refuse it unless it was built here, for this TensorRT."""
    sidecar = _sidecar_path(path)
    if sidecar.exists():
        try:
            meta = json.loads(sidecar.read_text())
        except (OSError, ValueError) as e:
            raise ModelLoadError(
                f"{sidecar} is not valid JSON ({e}); delete it or rebuild the engine", path=str(path)
            ) from e
        problems = _check_sidecar(path, meta, environment(trt, gpu))
        if problems:
            source = meta.get("model") or "its ONNX model"
            raise ModelLoadError(
                f"{path.name} was built for another setup and is refused (TensorRT engines are specific to one "
                f"TensorRT version and GPU): {'; '.join(problems)}. Rebuild it here from {source} "
                "with ic.load('model.onnx', backend='tensorrt', device='cuda')",
                path=str(path),
            )
    else:
        log.debug("tensorrt: %s has no infercore sidecar; TensorRT's own version check applies", path)
    return path.read_bytes()


def cache_key(
    env: Mapping[str, str],
    model: Path,
    model_bytes: bytes,
    external_data: Mapping[str, str],
    build_options: Mapping[str, Any],
) -> tuple[str, dict[str, Any]]:
    """The digest naming a cached engine, and the sidecar it is stored with (less ``engine_sha256``).

    The model's path is recorded (for messages) but left out of the digest.
    """
    meta: dict[str, Any] = {
        "format": SIDECAR_FORMAT,
        **env,
        "model": str(model),
        "model_sha256": hashlib.sha256(model_bytes).hexdigest(),
        "external_data": external_data,
        "build_options": build_options,
    }
    keyed = {k: v for k, v in meta.items() if k != "model"}
    digest = hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:24]
    return digest, meta


def engine_file_path(cache_dir: Path, model: Path, digest: str) -> Path:
    return cache_dir / f"{_slug(model.stem)}-{digest}.engine"


def timing_cache_file(cache_dir: Path, trt: ModuleType, gpu: cuda.DeviceInfo) -> Path:
    return cache_dir / f"timing-{trt.__version__}-{_slug(gpu.name)}-{gpu.sm}.cache"


def load_cached(engine_path: Path, meta: Mapping[str, Any], env: Mapping[str, str]) -> bytes | None:
    """The cached engine if its sidecar matches ``meta`` and this machine; None: absent or stale."""
    sidecar = _sidecar_path(engine_path)
    if not (engine_path.exists() and sidecar.exists()):
        return None
    try:
        stored = json.loads(sidecar.read_text())
        problems = _check_sidecar(engine_path, stored, env)
        if stored.get("model_sha256") != meta["model_sha256"]:
            problems.append("the model changed")
        if stored.get("external_data") != meta["external_data"]:
            problems.append("the model's external data files changed")
        if stored.get("build_options") != meta["build_options"]:
            problems.append("the build options changed")
    except (OSError, ValueError) as e:
        problems = [f"unreadable sidecar ({e})"]
    if not problems:
        log.debug("tensorrt: using cached engine %s", engine_path)
        return engine_path.read_bytes()
    log.warning(
        "tensorrt: cached engine %s is stale (%s); rebuilding", engine_path, "; ".join(problems)
    )
    return None


def store(engine_path: Path, blob: bytes, meta: Mapping[str, Any]) -> None:
    """Write the engine, then its sidecar with the engine's sha256 (each atomically)."""
    write_atomic(engine_path, blob)
    meta = {**meta, "engine_sha256": hashlib.sha256(blob).hexdigest()}
    write_atomic(_sidecar_path(engine_path), json.dumps(meta, indent=1, sort_keys=True).encode())


# -- what of the ONNX model is keyed ---------------------------------------------------------------------
def onnx_proto(path: Path) -> Any | None:
    """The ONNX model without its external data, or None when the onnx package is missing."""
    try:
        import onnx
    except ImportError:
        return None
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as e:  # TensorRT's parser reports a broken model with its own words
        log.debug("tensorrt: onnx could not read %s: %s", path, e)
        return None


def external_data_hashes(path: Path) -> dict[str, str]:
    """sha256 of every external-data file the ONNX model names (they hold its weights)."""
    out = {}
    for loc in external_data_locations(path):
        try:
            out[loc] = sha256_file(path.parent / loc)
        except OSError:
            out[loc] = "missing"
    return out
