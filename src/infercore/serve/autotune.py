"""The automatic layout in the server: a model whose ``config.yaml`` names neither ``threads`` nor
``instances`` runs on the engines a short probe picks at load (``infercore.layout``): one engine
with all the model's cores for a request that comes alone, narrower engines side by side under
concurrent load, batches at the size where the model's items/s peaked. ``auto: false`` in the
config, or ``infercore serve --no-autotune``, turns it off; batching keys the config writes win
over the probe's picks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from ..engine import Engine
from ..layout import available_cores
from ..specs import TensorSpec

__all__ = ["batcher", "cores", "layout_key", "log_fields", "runs"]

log = logging.getLogger("infercore.serve")


def cores(cfg: Any, enabled: bool) -> int | None:
    """The cores a model's engines share when its layout is probed; None when the config (or
    ``--no-autotune``) decides the layout."""
    if not (enabled and cfg.auto and cfg.batching is not None) or {"threads", "instances"} & cfg.given:
        return None
    return int(cfg.cores or available_cores())


def runs(engine: Engine) -> bool:
    """Whether the probed layout applies: a CPU engine whose inputs carry a batch dimension
    (dynamic, or fixed at 1: such a model still gains from the split, one request per batch)."""
    if not str(engine.device).lower().startswith("cpu"):
        return False  # one accelerator: no cores to split
    return all(s.rank >= 1 and s.shape[0] in (None, 1) and not s.dtype.hasobject for s in engine.inputs)


def batcher(
    first: Engine,
    open_engine: Callable[..., Engine],
    cores: int,
    batching: Any,
    inputs: Sequence[TensorSpec],
    name: str,
    make: Callable[..., Any] | None = None,
    options: Mapping[str, Any] | None = None,
    known: dict[Any, Any] | None = None,
    key: Any = None,
) -> Any:
    """A Batcher over engines of the probed layout. ``first``: the engine opened with ``cores``
    threads to read the model's specs, reused as the wide one, or closed when the engines open
    with other options (``open_engine(threads, options)``; ``options``: the config's).

    ``known``: layouts probed before, by ``key`` (the model file and its config): a reload or a
    rollback of the same file reuses its layout instead of probing again under live traffic."""
    extra = _engine_options(first.backend_name, options or {})
    pending = [first] if extra is None else []
    if extra is not None:
        first.close()  # opened as configured: the engines below open with the options above

    def factory(threads: int) -> Engine:
        if pending and threads == cores:
            return pending.pop()
        return open_engine(threads, extra)

    given = batching.given
    kwargs: dict[str, Any] = {
        "max_queue_size": batching.max_queue_size,
        "timeout": None if batching.timeout_ms is None else batching.timeout_ms / 1000.0,
        "pad": batching.pad,
        "name": name,
    }
    if "max_batch_size" in given:
        kwargs["max_batch_size"] = batching.max_batch_size
    if "preferred_batch_sizes" in given:
        kwargs["preferred_batch_sizes"] = batching.preferred_batch_sizes
    if "max_queue_delay_ms" in given:
        kwargs["max_queue_delay"] = batching.max_queue_delay_ms / 1000.0
    if "quiet_ms" in given:
        kwargs["quiet"] = batching.quiet_ms / 1000.0
    if make is None:
        from ..batching import Batcher

        make = Batcher
    layout = known.get(key) if known is not None else None
    try:
        if layout is not None:
            return make(factory, layout=layout, **kwargs)
        batcher = make(factory, layout="auto", cores=cores, probe_feeds=_feeds(first, inputs), **kwargs)
        chosen = getattr(batcher, "layout", None)
        if known is not None and chosen is not None and chosen.source == "probe":
            known[key] = replace(chosen, source="probe, reused", probe={**chosen.probe})
        return batcher
    finally:
        for e in pending:  # the probe failed before it took the first engine
            e.close()


def layout_key(path: Any, cfg: Any, cores: int) -> Any:
    """What a probed layout depends on: the model file as it is on disk and the config's engine
    and batching settings (a changed file or config probes again)."""
    try:
        st = path.stat()
        where = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    except OSError:
        where = (str(path), 0, 0)
    return (*where, cores, repr(cfg))


def _engine_options(backend: str, options: Mapping[str, Any]) -> dict[str, Any] | None:
    """Options for the layout's engines where the runtime needs them (None: open them as
    configured; what the config sets wins):

    - ONNX Runtime: ``share_weights``, so the engines read one copy of the weights (MiniLM, three
      sessions: 285 MB against 372 MB); and ``session.force_spinning_stop``, so that the wide
      engine's pool threads stop spinning when its run ends (onnxruntime spins them for tens of
      milliseconds by default, burning the cores the narrow engines and the event loop need next;
      within a run they still spin)."""
    if backend != "ort":
        return None
    session_config = {"session.force_spinning_stop": "1", **dict(options.get("session_config") or {})}
    return {"share_weights": True, **options, "session_config": session_config}


def _feeds(engine: Engine, inputs: Sequence[TensorSpec]) -> dict[str, Any] | None:
    """One request of the served shapes (the config's overrides narrow the model's), or None to
    let the probe generate one from the model's own specs: also when a served shape is still
    dynamic past the batch axis, so that the probe knows its sizes are a guess."""
    from ..inputs import make_feeds

    if any(None in s.shape[1:] for s in inputs):
        return None

    try:
        feeds, _ = make_feeds(inputs, batch=1, metadata=engine.metadata)
    except Exception as e:  # a dtype the generator cannot make: the probe says why
        log.debug("probe inputs not generated: %s", e)
        return None
    return feeds


def log_fields(versions: Iterable[Any]) -> dict[str, Any]:
    """``layout`` for the "model loaded" log line: version -> the layout in one line."""
    layouts = {
        str(mv.version): lay.describe()
        for mv in versions
        if (lay := getattr(mv.runner, "layout", None)) is not None
    }
    return {"layout": layouts} if layouts else {}
