"""The engines a batcher runs: one given Engine shared by its instances, one per instance from a
zero-argument factory, or, from a factory taking ``threads``, those of a given ``Layout`` or of the
one ``probe_layout`` picks on this machine; and the ``Instance`` (a worker thread) that runs each."""

from __future__ import annotations

import inspect
import logging
import queue
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from ..engine import BoundIO, Engine
from ..errors import BatchingError
from ..layout import Layout, MeasureStopped, available_cores, probe_layout, remeasure_batch
from .request import Request, deliver, settled
from .second_look import SecondLook
from .stats import RING, LatencyRing

__all__ = ["Instance", "layout_engines", "make_engines", "remeasure", "takes_no_args", "takes_threads"]

log = logging.getLogger("infercore.batching")


def takes_no_args(factory: Callable[..., Any]) -> bool:
    """Whether ``factory()`` can be called with no arguments."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return True
    return all(p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params)


def takes_threads(factory: Callable[..., Any]) -> bool:
    """Whether an engine factory accepts ``threads=`` (then the batcher may choose its layout)."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature
        return False
    return any(
        p.kind is p.VAR_KEYWORD or (p.name == "threads" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
        for p in params
    )


def _close_all(engines: list[Engine]) -> None:
    for e in engines:
        e.close()


def layout_engines(
    factory: Callable[..., Engine],
    layout: Layout | str,
    *,
    cores: int | None,
    probe_feeds: Mapping[str, Any] | None,
    max_batch_size: int,
    name: str,
) -> tuple[list[Engine], Engine | None, Layout]:
    """The load engines, the lone engine (or None) and the layout: ``layout`` itself, or the one
    the probe picks (``"auto"``; a failed probe falls back to one engine of every core)."""

    def open_engine(threads: int) -> Engine:
        e = factory(threads=threads)
        if not isinstance(e, Engine):
            raise TypeError(f"the engine factory returned {type(e).__name__}, not an infercore Engine")
        if e.closed:
            raise BatchingError("the engine factory returned a closed engine")
        return e

    if isinstance(layout, Layout):
        made: list[Engine] = []
        try:
            if layout.lone_threads is not None:
                made.append(open_engine(layout.lone_threads))
            for _ in range(layout.instances):
                made.append(open_engine(layout.threads))
        except BaseException:
            _close_all(made)
            raise
        if layout.lone_threads is not None:
            return made[1:], made[0], layout
        return made, None, layout
    cores = available_cores() if cores is None else cores
    try:
        chosen, load, lone = probe_layout(open_engine, cores=cores, feeds=probe_feeds, max_batch_size=max_batch_size)
    except Exception as e:
        why = f"{type(e).__name__}: {e}"
        log.warning("batcher %r: the layout probe failed (%s); running one engine of %d threads", name, why, cores)
        return [open_engine(cores)], None, Layout(cores, 1, cores, source="fallback", probe={"error": why})
    log.info("batcher %r: %s", name, chosen.describe())
    return load, lone, chosen


def remeasure(
    layout: Layout,
    load: list[Engine],
    feeds: Mapping[str, np.ndarray],
    max_batch_size: int,
    name: str,
    look: SecondLook,
) -> tuple[int | None, Layout, str]:
    """The load engines' best batch size on ``feeds`` (a served request; the probe's were a guess),
    the layout that records it under ``probe["reprobe"]``, and the outcome for ``look.finish``:
    ``"done"``, or ``"failed"`` / ``"stopped"`` with size None (the probe's pick stays)."""
    size: int | None = None
    try:
        size, record = remeasure_batch(
            load, feeds, cores=layout.cores, max_batch_size=max_batch_size, stop=lambda: look.stop
        )
    except MeasureStopped:
        outcome, record = "stopped", {"stopped": "a request that could not wait for it came"}
        log.info("batcher %r: measuring the batch size on the served shapes gave way to a request", name)
    except Exception as e:
        outcome, record = "failed", {"error": f"{type(e).__name__}: {e}"}
        log.warning("batcher %r: measuring the batch size on the served shapes failed: %s", name, record["error"])
    else:
        outcome = "done"
        log.info(
            "batcher %r: batch size %d on the served shapes %s (the probe guessed %s: batch %s)",
            name, size, record["shapes"], layout.probe.get("shapes"), layout.batch_size,
        )  # fmt: skip
    record = look.record(outcome, record)
    picked = {} if size is None else {"batch_size": size, "short_batch": record["short_batch"]}
    return size, replace(layout, probe={**layout.probe, "reprobe": record}, **picked), outcome


def make_engines(engine: Engine | Callable[[], Engine], instances: int) -> tuple[list[Engine], bool]:
    """``instances`` engines (the given one shared, or one per instance from a factory) and
    whether the batcher made them (then it closes them)."""
    if isinstance(engine, Engine):
        if engine.closed:
            raise BatchingError("the engine given to Batcher is closed")
        return [engine] * instances, False
    if not callable(engine):
        raise TypeError(f"engine must be an Engine or a zero-argument callable returning one, got {engine!r}")
    made: list[Engine] = []
    try:
        for _ in range(instances):
            e = engine()
            if not isinstance(e, Engine):
                raise TypeError(f"the engine factory returned {type(e).__name__}, not an infercore Engine")
            made.append(e)
    except BaseException:
        _close_all(made)
        raise
    return made, True


class Instance:
    """One worker thread (``target(self)``, not yet started) with its engine and its own cache of
    bound I/O.

    ``cores``: the cores its engine uses while it runs (0: not counted, as in a layout the batcher
    did not choose); ``lone``: it runs only a request that is alone (see ``Layout``)."""

    def __init__(
        self,
        target: Callable[[Instance], None],
        name: str,
        index: int,
        engine: Engine,
        cores: int = 0,
        lone: bool = False,
    ) -> None:
        self.index = index
        self.engine = engine
        self.cores = cores
        self.lone = lone
        self.inbox: queue.SimpleQueue[list[Request] | None] = queue.SimpleQueue()
        self.bound: OrderedDict[tuple[Any, ...], BoundIO] = OrderedDict()
        self.succeeded = 0
        self.failed = 0
        self.batches = 0
        self.items = 0
        self.sizes: dict[int, int] = {}
        self.exec = LatencyRing()
        self.busy = False
        # (start, end) of the latest batches, for checks that engines never overlap past the cores
        self.spans: deque[tuple[float, float]] = deque(maxlen=RING)
        self.thread = threading.Thread(target=target, args=(self,), name=name, daemon=True)

    def answer(self, answers: list[tuple[Request, dict[str, np.ndarray] | None, BaseException | None]]) -> None:
        """Hand each caller of a batch its answer, in batch order; a future the caller keeps holds
        its result, not the request's inputs."""
        done = [(req, out) for req, out, err in answers if err is None]
        if len(done) == len(answers):
            deliver([req for req, _ in done], [out for _, out in done])  # type: ignore[misc]
        else:
            for req, out, err in answers:
                if err is None:
                    req.future.set_result(out)  # type: ignore[arg-type]
                else:
                    log.debug("batcher request failed: %s", err)
                    req.future.set_exception(err)
        self.succeeded += len(done)
        self.failed += len(answers) - len(done)
        for req, _, _ in answers:
            settled(req)
