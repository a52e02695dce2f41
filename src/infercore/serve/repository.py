"""The model repository: ``REPO/<model>/<version>/model.<suffix>`` + ``config.yaml``.

A version directory's model file is the ``model.*`` whose suffix a registered backend reads
(``model.onnx``, ``model.xml``, ``model.tflite``, ``model.engine``, ``model.plan``, or a plugin's
own suffix), or, when the config names a backend, a ``model.*`` that backend reads or the only
``model.*`` there is. A version directory without such a file is listed UNAVAILABLE with why.

A model's optional ``REPO/<model>/config.yaml`` is read by ``serve.config`` (its keys are listed there).

Loading builds every selected version completely before it replaces what was served, so a reload
(or a rollback: a policy that selects an older version) never leaves a model half-loaded; the
versions it replaces finish their accepted requests before they close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..engine import Engine, load
from ..errors import BadRequest, InfercoreError, NotFound, QueueFullError, Unavailable
from ..specs import TensorSpec
from . import autotune
from .config import (
    BatchingConfig,
    ModelConfig,
    SignatureConfig,
    TensorOverride,
    VersionPolicy,
    apply_overrides,
    read_config,
)
from .monitoring import open_watch
from .signatures import VersionSignatures, close_copies

__all__ = [
    "BatchingConfig",
    "ModelConfig",
    "ModelRepository",
    "ModelVersion",
    "SignatureConfig",
    "TensorOverride",
    "VersionPolicy",
]

log = logging.getLogger("infercore.serve")

# when a version directory holds several readable model files, the first of these wins
_PREFERRED_FILES = ("model.onnx", "model.xml", "model.tflite", "model.engine", "model.plan")


# -- running one version ---------------------------------------------------------------------------
class Runner(Protocol):
    async def infer(
        self, feeds: dict[str, np.ndarray], *, timeout: float | None, priority: int
    ) -> dict[str, np.ndarray]: ...

    def close(self, drain: bool = True, timeout: float | None = None) -> None: ...


class DirectRunner:
    """One ``Engine.run`` per request on a small thread pool: for models without a batch dimension."""

    def __init__(self, engine: Engine, *, max_queue_size: int, workers: int) -> None:
        self.engine = engine
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="infercore-direct")
        self._max = max_queue_size
        self._inflight = 0
        self._lock = threading.Lock()
        self._closed = False

    async def infer(
        self, feeds: dict[str, np.ndarray], *, timeout: float | None, priority: int
    ) -> dict[str, np.ndarray]:
        with self._lock:
            if self._closed:
                raise Unavailable("the model is unloading")
            if self._inflight >= self._max:
                raise QueueFullError(f"{self._inflight} requests in flight (max_queue_size {self._max})")
            self._inflight += 1
        try:
            fut = asyncio.get_running_loop().run_in_executor(self._pool, self.engine.run, feeds)
            return await (asyncio.wait_for(fut, timeout) if timeout else fut)
        finally:
            with self._lock:
                self._inflight -= 1

    def close(self, drain: bool = True, timeout: float | None = None) -> None:
        with self._lock:
            self._closed = True
        self._pool.shutdown(wait=drain, cancel_futures=not drain)
        self.engine.close()


@dataclass
class ModelVersion:
    """One served version: its specs (after the config's overrides) and what runs it."""

    name: str
    version: int
    path: Path
    backend: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    runner: Any  # a Batcher or a DirectRunner
    batching: BatchingConfig | None
    engine: Engine | None = None
    watch: Any = None  # a serve.monitoring.Watch: the version's Monitor and Screen, when configured
    verified: Any = None  # the verified private copy the engines were opened from (signing.VerifiedCopy)
    input_map: dict[str, TensorSpec] = field(default_factory=dict)
    output_names: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        self.input_map = {s.name: s for s in self.inputs}
        self.output_names = frozenset(s.name for s in self.outputs)

    @property
    def platform(self) -> str:
        return f"infercore_{self.backend}"


@dataclass
class ModelEntry:
    name: str
    state: str = "UNAVAILABLE"  # READY, LOADING, UNLOADING, UNAVAILABLE
    reason: str = ""
    versions: dict[int, ModelVersion] = field(default_factory=dict)

    @property
    def latest(self) -> ModelVersion | None:
        return self.versions[max(self.versions)] if self.versions else None


# -- the repository ----------------------------------------------------------------------------
class ModelRepository:
    """Models on disk and the versions loaded from them; load, unload and reload at run time."""

    def __init__(self, root: str | os.PathLike[str], *, batcher_factory: Callable[..., Any] | None = None,
                 signature: SignatureConfig | None = None, defaults: Mapping[str, Any] | None = None,
                 autotune: bool = True) -> None:  # fmt: skip
        self.defaults = dict(defaults or {})  # config keys for models whose config.yaml lacks them
        ModelConfig.from_dict(self.defaults, "repository defaults")  # a bad one fails before any load
        self.root = Path(root)
        self.autotune = autotune  # False: a model without threads/instances runs as before the probe
        self._layouts: dict[Any, Any] = {}  # probed layouts, reused by a reload of the same file
        if not self.root.is_dir():
            raise FileNotFoundError(f"model repository {self.root} is not a directory")
        self.signatures = VersionSignatures(signature)  # --require-signatures, and what it refused
        self._models: dict[str, ModelEntry] = {}
        self._state_lock = threading.Lock()
        self._load_lock = threading.Lock()
        self._batcher_factory = batcher_factory
        self._reported: set[tuple[str, int, str]] = set()
        self._unusable: dict[str, dict[int, str]] = {}  # from the last scan, for error messages
        self.on_change: Callable[[], None] | None = None

    # -- reading the disk ----------------------------------------------------------------------
    def scan(self) -> dict[str, dict[int, Path]]:
        """Every model on disk with a usable version: name -> {version: model file}."""
        return self._scan()[0]

    def _scan(self) -> tuple[dict[str, dict[int, Path]], dict[str, dict[int, str]]]:
        """The usable versions of every model, and the version directories that are not usable
        (name -> {version: why})."""
        found: dict[str, dict[int, Path]] = {}
        unusable: dict[str, dict[int, str]] = {}
        for model_dir in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            try:
                backend, config_read = read_config(model_dir).backend, True
            except ValueError:  # listed all the same: load() reports the config's error
                backend, config_read = None, False
            versions, problems = _versions(model_dir, backend, any_single_file=not config_read)
            if versions:
                found[model_dir.name] = versions
            if problems:
                unusable[model_dir.name] = problems
                for v, why in problems.items():
                    if (model_dir.name, v, why) not in self._reported:
                        self._reported.add((model_dir.name, v, why))
                        log.warning("model version not usable: %s", why, extra={"model": model_dir.name})
        self._unusable = unusable
        return found, unusable

    def layout_problem(self) -> str | None:
        """None when the repository holds a servable model; otherwise why not, naming the
        expected layout and what was found instead (an empty directory, model files at the wrong
        depth, suffixes no backend reads)."""
        found, unusable = self._scan()
        if found:
            return None
        from ..plugins import registry

        suffixes = sorted({s for n in registry.names() for s in registry.get(n).suffixes})
        expected = (
            f"expected {self.root}/<model>/<version>/model.<suffix>, e.g. {self.root}/mymodel/1/model.onnx "
            f"(suffixes read here: {', '.join(suffixes)})"
        )
        seen: list[str] = []
        for entry in sorted(self.root.iterdir()):
            if entry.name.startswith("."):
                continue
            if entry.is_file():
                seen.append(f"{entry.name}: a file at the top; move it to <model>/1/")
                continue
            for sub in sorted(entry.iterdir()):
                if sub.is_file() and sub.name not in ("config.yaml", "config.yml"):
                    seen.append(f"{entry.name}/{sub.name}: a file outside a version directory; move it to {entry.name}/1/")
                elif sub.is_dir() and not sub.name.isdigit():
                    seen.append(f"{entry.name}/{sub.name}/: not a version directory (versions are numbers: 1, 2, ...)")
        for problems in unusable.values():
            seen.extend(problems.values())
        if not seen:
            return f"no servable model in {self.root}: it is empty; {expected}"
        listed = "; ".join(seen[:8]) + (f"; and {len(seen) - 8} more" if len(seen) > 8 else "")
        return f"no servable model in {self.root}: {expected}. Found: {listed}"

    def index(self, ready_only: bool = False) -> list[dict[str, str]]:
        """Triton's repository index: one row per loaded version, one per model not loaded, and
        one (UNAVAILABLE, with why) per version directory that has no usable model file."""
        on_disk, unusable = self._scan()
        with self._state_lock:
            entries = dict(self._models)
            refused = {n: dict(r) for n, r in self.signatures.refused.items() if r}
        rows: list[dict[str, str]] = []
        for name in sorted(set(on_disk) | set(entries) | set(unusable) | set(refused)):
            entry = entries.get(name)
            if entry is not None and entry.versions:
                for v in sorted(entry.versions):
                    rows.append(
                        {"name": name, "version": str(v), "state": entry.state, "reason": entry.reason}
                    )
            elif not ready_only and (entry is not None or name in on_disk):
                state, reason = (entry.state, entry.reason) if entry else ("UNAVAILABLE", "unloaded")
                rows.append({"name": name, "version": "", "state": state, "reason": reason})
            if not ready_only:  # a refused version still served (its verified copy) is listed READY
                refused_now = {v: y for v, y in refused.get(name, {}).items() if not (entry and v in entry.versions)}
                for v, why in sorted({**refused_now, **unusable.get(name, {})}.items()):
                    rows.append({"name": name, "version": str(v), "state": "UNAVAILABLE", "reason": why})
        return rows

    # -- serving -----------------------------------------------------------------------------------
    def models(self) -> list[ModelEntry]:
        with self._state_lock:
            return [e for e in self._models.values() if e.versions]

    def get(self, name: str, version: str | None = None) -> ModelVersion:
        """The version a request names, or the newest one served; BadRequest if none is ready."""
        entry = self._models.get(name)
        if entry is None or not entry.versions:
            if entry is not None and entry.state in ("LOADING", "UNLOADING"):
                raise Unavailable(f"model {name!r} is {entry.state.lower()}")
            problems = {**self.signatures.refused.get(name, {}), **self._unusable.get(name, {})}
            if problems:
                raise BadRequest(f"model {name!r} is not served: {'; '.join(problems.values())}")
            raise BadRequest(f"unknown model {name!r}: {self._known()}")
        if not version:
            mv = entry.latest
            assert mv is not None
            return mv
        if not version.isdigit() or int(version) not in entry.versions:
            served = ", ".join(str(v) for v in sorted(entry.versions))
            raise BadRequest(f"model {name!r} has no ready version {version!r}; versions served: {served}")
        return entry.versions[int(version)]

    def is_ready(self, name: str, version: str | None = None) -> bool:
        try:
            self.get(name, version)
        except (BadRequest, Unavailable):
            return False
        return True

    def knows(self, name: str) -> bool:
        """Whether ``name`` was ever loaded (served now or not): bounded by the models on disk."""
        return name in self._models

    def _known(self) -> str:
        names = sorted(n for n, e in self._models.items() if e.versions)
        return f"models served: {', '.join(names)}" if names else "no model is loaded"

    # -- loading ---------------------------------------------------------------------------------
    def load(self, name: str, config: Mapping[str, Any] | None = None) -> ModelEntry:
        """Load (or reload) a model: build every selected version, then swap it in. Blocking."""
        found, unusable = self._scan()
        if name not in found and name not in unusable:
            raise NotFound(
                f"no model {name!r} in {self.root} (a model is <name>/<version>/model.<suffix>, a "
                "suffix a registered backend reads, or any with `backend:` in its config.yaml)"
                f"; the repository has: {', '.join(sorted({*found, *unusable})) or 'nothing'}"
            )
        with self._load_lock:
            try:
                cfg = read_config(self.root / name, self.defaults)
                if config:
                    cfg = cfg.merged(config, f"load request for {name!r}")
            except ValueError as e:
                raise BadRequest(str(e)) from None
            # the files again with the backend this load uses (a load request may name another)
            versions, problems = _versions(self.root / name, cfg.backend)
            if not versions:
                raise BadRequest(f"model {name!r} has no usable version: " + "; ".join(problems.values()))
            checks = self.signatures.checks(name, cfg.signature, self.root / name)
            copies = self.signatures.select(name, versions, cfg.version_policy, checks) if checks else {}
            selected = sorted(copies) if checks else cfg.version_policy.select(list(versions))
            if not selected:
                self.signatures.raise_if_refused(name, self._served(name), self._set_state)
                raise BadRequest(
                    f"model {name!r}: version_policy selects none of the usable versions on disk "
                    f"({', '.join(str(v) for v in sorted(versions))})"
                    + "".join(f"; {why}" for why in problems.values())
                )
            self._set_state(name, "LOADING", "")
            built: dict[int, ModelVersion] = {}
            try:
                for v in selected:
                    built[v] = self._open(name, v, versions[v], cfg, copies.get(v))
            except Exception as e:
                for mv in built.values():
                    _close_quietly(mv)
                close_copies({v: c for v, c in copies.items() if v not in built})
                self._set_state(name, "READY" if self._served(name) else "UNAVAILABLE", f"load failed: {e}")
                if isinstance(e, InfercoreError | ValueError | OSError):
                    raise BadRequest(f"model {name!r}: load failed: {e}") from e
                raise
            with self._state_lock:
                old = self._models.get(name)
                entry = ModelEntry(name, "READY", "", built)
                self._models[name] = entry
            if old is not None:
                for mv in old.versions.values():
                    _close_quietly(mv)
            fields = {"model": name, "versions": selected, "backend": entry.latest and entry.latest.backend}
            log.info("model loaded", extra={**fields, **autotune.log_fields(built.values())})
            if self.on_change is not None:
                self.on_change()
            return entry

    def unload(self, name: str) -> None:
        with self._load_lock:
            with self._state_lock:
                entry = self._models.get(name)
                if entry is None or not entry.versions:
                    found, unusable = self._scan()
                    if name not in found and name not in unusable:
                        raise NotFound(f"no model {name!r} in the repository")
                    return
                self._models[name] = ModelEntry(name, "UNLOADING", "")
            for mv in entry.versions.values():
                _close_quietly(mv)
            self._set_state(name, "UNAVAILABLE", "unloaded")
            log.info("model unloaded", extra={"model": name})
            if self.on_change is not None:
                self.on_change()

    def close(self, drain: bool = True) -> None:
        with self._state_lock:
            entries, self._models = list(self._models.values()), {}
        for entry in entries:
            for mv in entry.versions.values():
                _close_quietly(mv, drain)

    def _served(self, name: str) -> bool:
        entry = self._models.get(name)
        return bool(entry and entry.versions)

    def _set_state(self, name: str, state: str, reason: str) -> None:
        with self._state_lock:
            entry = self._models.get(name)
            if entry is None:
                self._models[name] = ModelEntry(name, state, reason)
            else:
                entry.state, entry.reason = state, reason

    def _open(self, name: str, version: int, path: Path, cfg: ModelConfig, verified: Any = None) -> ModelVersion:
        opened = verified.path / path.name if verified is not None else path  # the verified private copy

        def open_engine(threads: int | None = cfg.threads, options: Mapping[str, Any] | None = None) -> Engine:
            return load(
                opened,
                cfg.backend,
                device=cfg.device,
                precision=cfg.precision,
                threads=threads,
                options=cfg.options if options is None else options,
            )

        cores = autotune.cores(cfg, self.autotune)  # None: the config (or --no-autotune) decides
        engine = open_engine(cores or cfg.threads)
        watch = None
        try:
            inputs = apply_overrides(engine.inputs, cfg.inputs, "inputs")
            outputs = apply_overrides(engine.outputs, cfg.outputs, "outputs")
            watch = open_watch(cfg.monitoring, cfg.screen, self.root / name, opened.parent, name, version, inputs, outputs)
            batching = cfg.batching
            batchable = all(
                s.rank >= 1 and s.shape[0] is None and not s.dtype.hasobject for s in engine.inputs
            )
            if cores is not None and batching is not None and autotune.runs(engine):
                tuned = autotune.batcher(
                    engine, open_engine, cores, batching, inputs, f"{name}/{version}", self._batcher_factory,
                    cfg.options, self._layouts, autotune.layout_key(path, cfg, cores),
                )
                return ModelVersion(name, version, path, engine.backend_name, inputs, outputs, tuned, batching,
                                    tuned.engine, watch, verified)  # fmt: skip
            if batching is not None and not batchable:
                if cfg.batching_explicit:
                    raise ValueError(
                        "batching is configured but the model has no dynamic batch dimension "
                        f"(inputs: {', '.join(str(s) for s in engine.inputs)}); set batching: false"
                    )
                batching = None
            runner: Any
            if batching is None:
                runner = DirectRunner(engine, max_queue_size=_queue_size(cfg), workers=cfg.instances)
            else:
                pending = [engine]

                def factory() -> Engine:
                    return pending.pop() if pending else open_engine()

                make = self._batcher_factory or _batcher_class()
                runner = make(
                    factory,
                    max_batch_size=batching.max_batch_size,
                    preferred_batch_sizes=batching.preferred_batch_sizes,
                    max_queue_delay=batching.max_queue_delay_ms / 1000.0,
                    quiet=None if batching.quiet_ms is None else batching.quiet_ms / 1000.0,
                    max_queue_size=batching.max_queue_size,
                    timeout=None if batching.timeout_ms is None else batching.timeout_ms / 1000.0,
                    instances=cfg.instances,
                    pad=batching.pad,
                    name=f"{name}/{version}",
                )
        except BaseException:
            engine.close()
            if watch is not None:
                watch.close()
            raise
        return ModelVersion(
            name, version, path, engine.backend_name, inputs, outputs, runner, batching, engine, watch, verified
        )


def _versions(
    model_dir: Path, backend: str | None, *, any_single_file: bool = False
) -> tuple[dict[int, Path], dict[int, str]]:
    """A model's version directories: {version: model file} for the usable ones and
    {version: why not} for the others.

    The model file is a ``model.*`` that ``backend`` reads (by its registered suffixes), else any
    registered backend reads when no backend is named; else, with a backend named (or
    ``any_single_file``), the one ``model.*`` there is (that backend decides whether it reads it).
    """
    from ..errors import UnknownBackendError
    from ..plugins import registry

    suffixes: tuple[str, ...] = ()
    registered = True
    if backend is not None:
        try:
            suffixes = registry.get(backend).suffixes
        except UnknownBackendError:
            registered = False  # one model file still loads, and the load names the registered backends
    usable: dict[int, Path] = {}
    problems: dict[int, str] = {}
    for vdir in sorted(model_dir.iterdir()):
        if not (vdir.is_dir() and vdir.name.isdigit()):
            continue
        v = int(vdir.name)
        files = sorted(
            (f for f in vdir.iterdir() if f.name.startswith("model.")),
            key=lambda f: (_PREFERRED_FILES.index(f.name) if f.name in _PREFERRED_FILES else 99, f.name),
        )
        if backend is not None:
            readable = [f for f in files if f.name.lower().endswith(suffixes)] if suffixes else []
        else:
            readable = [f for f in files if registry.candidates(f)]
        if readable:
            usable[v] = readable[0]
        elif (backend is not None or any_single_file) and len(files) == 1:
            usable[v] = files[0]
        else:
            problems[v] = _why_unusable(model_dir.name, vdir, files, backend, suffixes, registered)
    return usable, problems


def _why_unusable(
    name: str,
    vdir: Path,
    files: Sequence[Path],
    backend: str | None,
    suffixes: Sequence[str],
    registered: bool,
) -> str:
    from ..plugins import registry

    where = f"{name}/{vdir.name}"
    found = ", ".join(f.name for f in files)
    if not files:
        return f"{where}: no model file (expected model.<suffix>, e.g. model.onnx)"
    if backend is not None:
        if not registered:
            reads = f"it is not a registered backend: {', '.join(registry.names())}"
        else:
            reads = f"it reads {', '.join(suffixes)}" if suffixes else "it registered no suffix"
        return (
            f"{where}: several model files ({found}) and none that the configured backend "
            f"{backend!r} reads ({reads}); keep one model file in the version directory"
        )
    known = sorted({s for n in registry.names() for s in registry.get(n).suffixes})
    return (
        f"{where}: no registered backend reads {found} (readable suffixes: {', '.join(known)}); "
        "install the plugin that reads it, or name its backend in config.yaml (backend: NAME)"
    )


def _queue_size(cfg: ModelConfig) -> int:
    return cfg.batching.max_queue_size if cfg.batching is not None else 1024


def _batcher_class() -> Any:
    from ..batching import Batcher

    return Batcher


def _close_quietly(mv: ModelVersion, drain: bool = True) -> None:
    try:
        mv.runner.close(drain=drain)
    except Exception:
        log.exception("closing model version failed", extra={"model": mv.name, "version": mv.version})
    with contextlib.suppress(Exception):
        if mv.engine is not None:
            mv.engine.close()
    if mv.watch is not None:
        mv.watch.close()
    if mv.verified is not None:
        mv.verified.close()
