"""Load-adaptive layouts: the probe, the Batcher's choice of engine, and the cores it may use.

The dispatcher tests run a numpy backend that sleeps for its "compute" (GIL released), so that
the order of dispatch and the overlap of engines are read from the backend's own record; the
CPU test runs real ONNX Runtime sessions and reads each thread's CPU time from /proc.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import infercore as ic
from infercore.batching import Batcher
from infercore.engine import Engine
from infercore.errors import ArgumentError
from infercore.layout import Layout, _peak, _short, available_cores, probe_layout
from infercore.specs import TensorSpec
from tests import onnx_models as m

pytest.importorskip("onnxruntime")


# -- a backend that takes time and records what ran where ------------------------------------------
class _Clock:
    """What every engine of one test ran: (start, end, threads, the x[:, 0] values), in order."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.runs: list[tuple[float, float, int, tuple[float, ...]]] = []


class _SlowBinding:
    def __init__(self, backend: SlowBackend, inputs: dict[str, np.ndarray]) -> None:
        self.backend = backend
        self.inputs = inputs
        self.outputs: dict[str, np.ndarray] = {}

    def run(self) -> None:
        b = self.backend
        x = self.inputs["x"]
        t0 = time.perf_counter()
        # "compute": per item, less with more threads (as a compute-bound model on more cores)
        time.sleep(b.item_s * len(x) / b.threads)
        t1 = time.perf_counter()
        with b.clock.lock:
            b.clock.runs.append((t0, t1, b.threads, tuple(float(v) for v in x[:, 0])))
        self.outputs.update(y=x * 2)

    def close(self) -> None:
        pass


class SlowBackend:
    name = "slow"
    device = "cpu"
    metadata: dict[str, str] = {}

    def __init__(self, clock: _Clock, threads: int, item_s: float = 0.004) -> None:
        self.clock = clock
        self.threads = threads
        self.item_s = item_s
        self.inputs = (TensorSpec("x", np.float32, (None, 2), ("batch", None)),)
        self.outputs = (TensorSpec("y", np.float32, (None, 2), ("batch", None)),)

    def run(self, feeds, outputs):
        return {"y": feeds["x"] * 2}

    def bind(self, inputs, outputs):
        return _SlowBinding(self, inputs)

    def close(self) -> None:
        pass


def _slow_factory(clock: _Clock, item_s: float = 0.004):
    def open_engine(threads: int) -> Engine:
        return Engine(SlowBackend(clock, threads, item_s))

    return open_engine


TWO = Layout(cores=2, instances=2, threads=1, lone_threads=2)


def _max_cores_in_use(runs: list[tuple[float, float, int, tuple[float, ...]]]) -> int:
    events = sorted([(t0, w) for t0, _, w, _ in runs] + [(t1, -w) for _, t1, w, _ in runs], key=lambda e: (e[0], e[1]))
    used = peak = 0
    for _, w in events:  # ends sort before starts at the same instant
        used += w
        peak = max(peak, used)
    return peak


# -- Layout -----------------------------------------------------------------------------------------
def test_layout_refuses_more_threads_than_cores() -> None:
    with pytest.raises(ArgumentError, match=r"instances.*need 4 cores, more than cores=2"):
        Layout(cores=2, instances=2, threads=2)
    with pytest.raises(ArgumentError, match=r"lone_threads.*3 is more than cores=2"):
        Layout(cores=2, instances=2, threads=1, lone_threads=3)


def test_layout_describes_itself() -> None:
    assert TWO.describe() == "lone request: 1 x 2 threads; under load: 2 x 1 thread (given)"
    assert TWO.as_dict()["summary"] == TWO.describe()
    assert TWO.engines == 3


def test_the_batch_sizes_for_a_deep_and_a_short_queue() -> None:
    # batch 1 and 2 as the second look measured MiniLM at sequence 128; batch 4 within 1% of 2
    rates = {1: 120.3, 2: 126.9, 4: 125.9}
    assert _peak(rates) == 4  # the largest within 1% of the best
    assert _short(rates) == 1  # the smallest within 10%
    assert (_peak({1: 164.0, 2: 156.0, 4: 118.0}), _short({1: 164.0, 2: 156.0, 4: 118.0})) == (1, 1)
    assert _short({1: 50.0, 2: 89.0, 4: 99.0, 8: 100.0}) == 4
    lay = Layout(cores=2, instances=2, threads=1, batch_size=4, short_batch=1)
    assert lay.describe() == "engines: 2 x 1 thread, batch 4 (1 on a short queue) (given)"


def test_available_cores_is_the_affinity() -> None:
    assert available_cores() == len(os.sched_getaffinity(0))


# -- the dispatcher ---------------------------------------------------------------------------------
def test_a_lone_request_runs_on_the_wide_engine_and_a_load_on_the_narrow_ones() -> None:
    clock = _Clock()
    with Batcher(_slow_factory(clock), layout=TWO, max_batch_size=4) as b:
        for i in range(5):  # one at a time: each is alone
            np.testing.assert_array_equal(b.run(np.full((1, 2), i, np.float32))["y"], np.full((1, 2), 2 * i))
        lone_runs = [r for r in clock.runs if r[2] == 2]
        assert len(lone_runs) == 5
        clock.runs.clear()
        futs = [b.submit(np.full((1, 2), i, np.float32)) for i in range(16)]
        for i, f in enumerate(futs):
            np.testing.assert_array_equal(f.result(10)["y"], np.full((1, 2), 2 * i))
        widths = [r[2] for r in clock.runs]
        # the first of the burst may find the batcher empty and go alone; the rest are a load
        assert widths[1:] == [1] * (len(widths) - 1)
        engines = b.metrics.engines
    assert [e["role"] for e in engines] == ["load", "load", "lone"]
    assert [e["threads"] for e in engines] == [1, 1, 2]
    assert engines[2]["batches"] >= 5


def test_switching_loses_nothing_keeps_fifo_and_never_oversubscribes() -> None:
    """Bursts, lulls with lone requests and bursts again, from threads and asyncio: every request
    answered exactly once with its own result, dispatched in arrival order within its priority,
    and the engines running at any instant never hold more threads than the 2 cores."""
    clock = _Clock()
    answers: dict[int, list[float]] = {}
    lock = threading.Lock()

    def record(seq: int, out: dict[str, np.ndarray]) -> None:
        with lock:
            answers.setdefault(seq, []).append(float(out["y"][0, 0]))

    priority_of: dict[int, int] = {}
    lone_seqs: list[int] = []
    with Batcher(_slow_factory(clock, 0.002), layout=TWO, max_batch_size=4) as b:
        seq = 0
        for phase in range(3):
            futs = []
            for _ in range(40):  # a burst: submitted back to back, some high priority
                p = int(seq % 7 == 3)
                priority_of[seq] = p
                futs.append((seq, b.submit(np.full((1, 2), seq, np.float32), priority=p)))
                seq += 1
            for s, f in futs:
                record(s, f.result(10))
            time.sleep(0.1)  # a lull, longer than _LONE_AFTER and 4 batch times: the load is over
            for _ in range(5):  # lone requests
                priority_of[seq] = 0
                lone_seqs.append(seq)
                record(seq, b.run(np.full((1, 2), seq, np.float32)))
                seq += 1
                time.sleep(0.005)
            if phase == 1:  # and a burst from asyncio callers

                async def burst(first: int) -> None:
                    outs = await asyncio.gather(
                        *(b.infer(np.full((1, 2), first + k, np.float32)) for k in range(20))
                    )
                    for k, out in enumerate(outs):
                        record(first + k, out)

                for k in range(20):
                    priority_of[seq + k] = 0
                asyncio.run(burst(seq))
                seq += 20
        metrics = b.metrics
    assert sorted(answers) == list(range(seq))
    assert all(v == [2.0 * s] for s, v in answers.items()), "each request answered once, with its own result"
    assert metrics.submitted == metrics.succeeded == seq
    ran = sorted(v for *_, xs in clock.runs for v in xs)
    assert ran == [float(s) for s in range(seq)], "each request ran once"
    # FIFO within a priority: each batch takes the oldest queued requests of a priority, in order,
    # so per priority the batches hold runs of consecutive arrivals that never interleave (two
    # engines may start batches in the other order than they were dispatched: no start order here)
    for p in (0, 1):
        blocks = [[v for v in xs if priority_of[int(v)] == p] for *_, xs in clock.runs]
        blocks = sorted((b for b in blocks if b), key=min)
        assert all(b == sorted(b) for b in blocks), f"priority {p}: a batch out of arrival order"
        flat = [v for b in blocks for v in b]
        assert flat == sorted(flat), f"priority {p}: batches interleave, so one took a younger request first"
    width_of = {int(v): w for _, _, w, xs in clock.runs for v in xs}
    assert [width_of[s] for s in lone_seqs] == [2] * len(lone_seqs), "after a lull, lone requests run wide"
    assert sum(w == 1 for w in width_of.values()) >= 100, "bursts run on the narrow engines"
    assert _max_cores_in_use(clock.runs) <= 2


def test_two_callers_stay_on_the_narrow_engines() -> None:
    """Two callers whose requests were batched together come back one after the other, each to an
    empty batcher: they are still a load of two, and must not take turns on the wide engine."""
    clock = _Clock()
    with Batcher(_slow_factory(clock), layout=TWO, max_batch_size=4) as b:

        def caller(k: int) -> None:
            for i in range(30):
                x = np.full((1, 2), 100 * k + i, np.float32)
                np.testing.assert_array_equal(b.run(x)["y"], 2 * x)

        threads = [threading.Thread(target=caller, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    wide = sum(len(xs) for *_, w, xs in clock.runs if w == 2)
    assert wide <= 2, f"{wide} of 60 requests ran on the wide engine"


def test_a_request_that_comes_during_a_lone_run_waits_for_it_then_runs_narrow() -> None:
    clock = _Clock()
    with Batcher(_slow_factory(clock, 0.05), layout=TWO, max_batch_size=4) as b:
        first = b.submit(np.zeros((1, 2), np.float32))
        time.sleep(0.01)  # the first runs alone on the wide engine (25 ms)
        second = b.submit(np.ones((1, 2), np.float32))
        first.result(5)
        second.result(5)
    (a, b_) = sorted(clock.runs)
    assert (a[2], b_[2]) == (2, 1)
    assert b_[0] >= a[1]  # the narrow run started only after the wide one ended


def test_the_lone_request_goes_where_it_runs_faster() -> None:
    """A wide engine slower than a narrow one (a host busy with other work): once both were timed,
    lone requests go to the narrow engine."""

    class Slower(SlowBackend):
        def __init__(self, clock: _Clock, threads: int) -> None:
            super().__init__(clock, threads, 0.004)
            if threads == 2:
                self.threads = 1  # takes as long as a narrow engine...
                self.item_s = 0.012  # ...three times over

    clock = _Clock()

    def factory(threads: int) -> Engine:
        return Engine(Slower(clock, threads))

    with Batcher(factory, layout=TWO) as b:
        for i in range(600):  # every 128th lone request tries the other engine: by the 3rd, the faster wins
            b.run(np.full((1, 2), i, np.float32))
        engines = b.metrics.engines
    load = engines[0]["batches"] + engines[1]["batches"]
    assert load > 150, engines  # from request 384 on, the narrow engine runs them


def test_the_lone_requests_choice_follows_the_host_back_within_seconds() -> None:
    """The routing record alone, on a clock of its own: the wide engine slowed by a busy host sends
    lone requests to a narrow one. After a pause the host is quiet again: the wide engine's figures
    are all stale, and it is timed again once a second until every figure is fresh, so the choice
    comes back within a few seconds (a fresh figure used to end the re-timing, and the two stale
    ones outvoted it for another STALE seconds)."""
    from infercore.batching.request import EXPLORE_S, SAMPLES, STALE, Solo

    solo = Solo()
    for k in range(SAMPLES):  # quiet host: wide 10 ms an item, narrow 12 ms
        solo.timed(0.010, float(k), lone=True)
        solo.timed(0.012, float(k), lone=False)
    solo.explored_at = float(SAMPLES)
    assert solo.prefers_lone(3.5)
    for k in range(SAMPLES):  # busy host: the wide engine slows most
        solo.timed(0.014, 4.0 + k, lone=True)
    assert not solo.prefers_lone(7.5)
    t, wide_runs, runs = 7.5, 0, 0
    while t < 7.5 + STALE + 3:  # still busy: the narrow engine serves; the wide one is timed again
        t += 0.05  # now and then, and is still slower
        wide = solo.prefers_lone(t)
        solo.timed(0.014 if wide else 0.012, t, lone=wide)
        wide_runs, runs = wide_runs + wide, runs + 1
    assert wide_runs <= 0.05 * runs
    t += STALE + 2  # no requests for a while (the server between bursts); the host is quiet now
    quiet_from = t
    streak = 0
    while streak < 5 and t < quiet_from + 2 * STALE:  # quiet host: explorations time the wide engine at 10 ms
        t += 0.05
        wide = solo.prefers_lone(t)
        solo.timed(0.010 if wide else 0.012, t, lone=wide)
        streak = streak + 1 if wide else 0
    took = t - quiet_from
    assert streak == 5 and took <= EXPLORE_S * (SAMPLES + 1) + 0.5, f"lone requests went narrow {took:.1f} s on"


def test_explicit_instances_or_layout_none_turn_the_probe_off(tmp_path: Path) -> None:
    path, _ = m.mlp(tmp_path / "mlp.onnx")
    with Batcher(lambda threads: ic.load(path, threads=threads), instances=2) as b:
        assert b.layout is None and len(b.metrics.engines) == 2
        assert b.max_queue_delay == 0.002 and b.max_batch_size == 32
    with Batcher(functools.partial(ic.load, path, threads=1), layout=None) as b:
        assert b.layout is None and len(b.metrics.engines) == 1
    with Batcher(lambda: ic.load(path, threads=1)) as b:  # no threads=: nothing to choose
        assert b.layout is None


def test_a_layout_needs_a_factory_taking_threads(tmp_path: Path) -> None:
    path, _ = m.mlp(tmp_path / "mlp.onnx")
    with pytest.raises(TypeError, match="factory taking threads="):
        Batcher(lambda: ic.load(path), layout=TWO)


# -- the probe, on a real runtime --------------------------------------------------------------------
def test_the_probe_picks_a_valid_layout_within_its_budget_and_answers_right(tmp_path: Path) -> None:
    path, w = m.mlp(tmp_path / "mlp.onnx", d_in=64, d_hidden=256)
    t0 = time.perf_counter()
    with Batcher(lambda threads: ic.load(path, threads=threads), cores=2) as b:
        took = time.perf_counter() - t0
        lay = b.layout
        assert lay is not None and lay.source == "probe"
        assert lay.instances * lay.threads <= 2 and (lay.lone_threads or 0) <= 2
        assert len(b.metrics.engines) == lay.engines
        assert set(lay.probe) >= {"shapes", "items_per_s", "seconds", "rss_mb", "engines_opened"}
        assert lay.probe["seconds"] <= 3.5  # the budget, and one point past it at most
        if lay.batch_size and lay.batch_size < b.max_batch_size:
            assert b.preferred_batch_sizes == (lay.batch_size,)
        assert b.max_queue_delay == 0.0
        x = np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32)
        logits, _ = m.mlp_numpy(x, w)
        np.testing.assert_allclose(b.run(x)["logits"], logits, rtol=1e-4, atol=1e-5)
    assert took < 10


def test_a_model_with_a_fixed_batch_dimension_is_probed_at_batch_1(tmp_path: Path) -> None:
    """MediaPipe's models take [1, 224, 224, 3]: the probe measures them at batch 1 (it used to
    fail asking the input generator for a batch, and the Batcher fell back to one engine)."""
    path, bias = m.add_bias(tmp_path / "fixed.onnx", n=256, batch=1)
    with Batcher(lambda threads: ic.load(path, threads=threads), cores=2) as b:
        lay = b.layout
        assert lay is not None and lay.source == "probe" and "error" not in lay.probe, lay.probe
        assert lay.probe["shapes"] == {"x": [256]} and lay.batch_size == 1
        assert all(set(r) == {"1"} for r in lay.probe["items_per_s"].values())  # batch 1 only
        xs = np.random.default_rng(1).standard_normal((6, 1, 256)).astype(np.float32)
        futures = [b.submit(x) for x in xs]
        for x, f in zip(xs, futures, strict=True):
            np.testing.assert_allclose(f.result(10)["y"], x + bias, rtol=1e-6)


def test_a_short_queue_goes_in_the_short_batch_and_a_deep_one_in_the_preferred() -> None:
    """Preferred batch 4 on two engines, 1 on a short queue: a queue of fewer than 4 x 2 items runs
    one at a time (a request does not wait behind a batch of 4 that gains little), a deep one in
    batches of 4; every request is answered with its own result."""
    clock = _Clock()
    lay = Layout(cores=2, instances=2, threads=1, batch_size=4, short_batch=1)
    with Batcher(_slow_factory(clock, 0.01), layout=lay) as b:
        assert b.preferred_batch_sizes == (4,)
        xs = [np.full((1, 2), i, np.float32) for i in range(5)]  # 2 take the engines, 3 queue
        for x, f in zip(xs, [b.submit(x) for x in xs], strict=True):
            np.testing.assert_array_equal(f.result(10)["y"], x * 2)
        assert [len(r[3]) for r in clock.runs] == [1] * 5
        clock.runs.clear()
        xs = [np.full((1, 2), 10 + i, np.float32) for i in range(24)]
        for x, f in zip(xs, [b.submit(x) for x in xs], strict=True):
            np.testing.assert_array_equal(f.result(10)["y"], x * 2)
    sizes = [len(r[3]) for r in sorted(clock.runs)]
    assert sum(sizes) == 24 and set(sizes) <= {1, 4}, sizes
    # the first two find the engines idle and the queue short; the 22 behind them go in batches of
    # 4 while 8 or more are queued, the last 7 or fewer one at a time
    assert sizes.count(4) >= 3 and sizes.count(1) <= 2 + 7, sizes
    # without a short batch (a layout that names none, or sizes given), batches as before
    clock.runs.clear()
    with Batcher(_slow_factory(clock, 0.01), layout=Layout(cores=2, instances=2, threads=1, batch_size=4)) as b:
        for f in [b.submit(np.full((1, 2), i, np.float32)) for i in range(5)]:
            f.result(10)
    assert sum(len(r[3]) for r in clock.runs) == 5 and max(len(r[3]) for r in clock.runs) >= 2


def test_a_quiet_period_given_alone_keeps_a_window_to_end() -> None:
    """With a chosen layout batches go at once (no delay, no quiet); a caller's quiet= alone keeps
    the usual 2 ms window, which it can end early, instead of being silently dropped."""
    with Batcher(_slow_factory(_Clock()), layout=TWO) as b:
        assert (b.max_queue_delay, b.quiet) == (0.0, None)
    with Batcher(_slow_factory(_Clock()), layout=TWO, quiet=0.001) as b:
        assert (b.max_queue_delay, b.quiet) == (0.002, 0.001)


def test_the_wide_engine_stays_when_the_probe_guessed_a_dimension() -> None:
    """A wide engine no faster than a narrow one on the probe's inputs is dropped, unless the probe
    had to guess a dynamic dimension's size: traffic of another size (a 320 x 320 image where it
    ran 64 x 64) may gain from every core, and the Batcher times both engines as it serves."""
    clock = _Clock()

    def equal_engines(shape: tuple[int | None, ...]):
        def open_engine(threads: int) -> Engine:
            backend = SlowBackend(clock, 1, 0.002)  # as fast with 1 thread as with 2
            backend.inputs = (TensorSpec("x", np.float32, shape, ("batch", "n")),)
            backend.outputs = (TensorSpec("y", np.float32, shape, ("batch", "n")),)
            return Engine(backend)

        return open_engine

    fixed, load, lone = probe_layout(equal_engines((None, 2)), cores=2, seconds=0.5)
    for e in [*load, *([lone] if lone else [])]:
        e.close()
    assert fixed.probe["shapes_guessed"] is False
    assert fixed.lone_threads is None and lone is None, fixed.probe
    guessed, load, lone = probe_layout(equal_engines((None, None)), cores=2, seconds=0.5)
    for e in [*load, *([lone] if lone else [])]:
        e.close()
    assert guessed.probe["shapes_guessed"] is True  # [batch, n] float: n sized as a signal, 512
    assert guessed.lone_threads == 2 and lone is not None and guessed.instances == 2


class _ShapedBinding(_SlowBinding):
    def run(self) -> None:
        b = self.backend
        x = self.inputs["x"]
        n = len(x)
        # a batch of n wide rows (the probe's guessed width) costs n + 3 items' time: items/s climbs
        # with the batch; a batch of narrow rows (what is served) costs n * n: it falls from batch 1
        t0 = time.perf_counter()
        time.sleep(b.item_s * ((n + 3) if x.shape[1] > 16 else n * n) / b.threads)
        t1 = time.perf_counter()
        with b.clock.lock:
            b.clock.runs.append((t0, t1, b.threads, tuple(float(v) for v in x[:, 0])))
        self.outputs.update(y=x * 2)


def _shaped_factory(clock: _Clock, item_s: float = 0.002):
    class Shaped(SlowBackend):
        def bind(self, inputs, outputs):
            return _ShapedBinding(self, inputs)

    def open_engine(threads: int) -> Engine:
        backend = Shaped(clock, threads, item_s)
        backend.inputs = (TensorSpec("x", np.float32, (None, None), ("batch", "n")),)
        backend.outputs = (TensorSpec("y", np.float32, (None, None), ("batch", "n")),)
        return Engine(backend)

    return open_engine


def _look_over(b: Batcher, attempt: int = 1, timeout: float = 10.0) -> dict:
    """The second look's record once its ``attempt``-th try has ended (it runs on its own thread
    once the batcher is idle, after the requests that were waiting)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        lay = b.layout
        record = lay.probe.get("reprobe") if lay is not None else None
        if record is not None and record["attempt"] >= attempt and b._look.thread is None:
            return record
        time.sleep(0.01)
    raise AssertionError(f"no second look within {timeout} s: {b.layout}")


def _look_running(b: Batcher, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while b._look.thread is None:
        assert time.monotonic() < end, "the second look did not start"
        time.sleep(0.001)


def test_a_guessed_probe_measures_the_batch_size_again_once_the_batcher_is_idle() -> None:
    """The probe sized the dynamic width itself and found items/s climbing with the batch; served
    rows of width 4 run best one at a time. The requests that brought the new shape are answered
    first (in the probe's batches); once the batcher is idle the load engines are measured on the
    shape, and what comes next runs in batches of the new size. Every request is answered once,
    and the cores were never oversubscribed, measuring included."""
    clock = _Clock()
    with Batcher(_shaped_factory(clock), cores=2) as b:
        probed = b.layout
        assert probed is not None and probed.probe["shapes_guessed"] is True
        assert probed.batch_size is not None and probed.batch_size > 1, probed.probe
        first = [np.full((1, 4), i + 1, np.float32) for i in range(40)]
        for x, f in zip(first, [b.submit(x) for x in first], strict=True):
            np.testing.assert_array_equal(f.result(30)["y"], x * 2)
        again = _look_over(b)
        lay = b.layout
        assert lay is not None and again["outcome"] == "done" and again["attempt"] == 1
        assert again["shapes"] == {"x": [4]}
        assert again["batch_size"] == lay.batch_size == 1, again
        assert b.preferred_batch_sizes == (1,)
        assert b.metrics.layout is not None and b.metrics.layout["probe"]["reprobe"]["batch_size"] == 1
        assert lay.probe["shapes"] == probed.probe["shapes"]  # what the probe ran stays on record
        t = time.perf_counter()
        later = [np.full((1, 4), 101 + i, np.float32) for i in range(40)]
        for x, f in zip(later, [b.submit(x) for x in later], strict=True):
            np.testing.assert_array_equal(f.result(30)["y"], x * 2)
    served = [r for r in clock.runs if any(v > 1 for v in r[3])]  # the measuring ran copies of first[0]
    want = [float(i + 1) for i in range(1, 40)] + [101.0 + i for i in range(40)]
    assert sorted(v for r in served for v in r[3]) == want  # each ran once
    assert all(len(r[3]) == 1 for r in served if r[0] >= t)  # after the look: batches of 1
    assert _max_cores_in_use(clock.runs) <= 2


def test_the_second_look_gives_way_to_a_request_with_a_deadline() -> None:
    """A request whose deadline falls before the look would end stops it (it is answered in time,
    not after the look); the look is taken again at the next idle moment."""
    clock = _Clock()
    with Batcher(_shaped_factory(clock, item_s=0.005), cores=2) as b:
        x = np.ones((1, 4), np.float32)
        t = time.perf_counter()
        np.testing.assert_array_equal(b.run(x)["y"], x * 2)  # brings the shape: answered at once
        assert time.perf_counter() - t < 0.2
        _look_running(b)
        # the look's longest run (4 narrow rows) takes 80 ms: the request waits for that at most
        np.testing.assert_array_equal(b.run(x * 3, timeout=0.3)["y"], x * 6)
        again = _look_over(b, attempt=2)
        assert again["outcome"] == "done" and again["batch_size"] == 1, again
        assert b.preferred_batch_sizes == (1,)
    assert _max_cores_in_use(clock.runs) <= 2


class _BigBinding(_SlowBinding):
    def run(self) -> None:
        x = self.inputs["x"]
        t0 = time.perf_counter()
        # the probe's guessed width runs fast; a served row of width 4 takes 0.3 s an item
        time.sleep((0.001 if x.shape[1] > 16 else 0.3) * len(x))
        with self.backend.clock.lock:
            self.backend.clock.runs.append((t0, time.perf_counter(), self.backend.threads, ()))
        self.outputs.update(y=x * 2)


def test_a_long_first_run_is_the_second_look() -> None:
    """One item of the served shape takes longer than a batch may (a 1600 x 1600 image): its first
    run decides (batch 1) instead of a window of runs on every engine, so the hold stays short."""
    clock = _Clock()

    class Big(SlowBackend):
        def bind(self, inputs, outputs):
            return _BigBinding(self, inputs)

    def open_engine(threads: int) -> Engine:
        backend = Big(clock, threads)
        backend.inputs = (TensorSpec("x", np.float32, (None, None), ("batch", "n")),)
        backend.outputs = (TensorSpec("y", np.float32, (None, None), ("batch", "n")),)
        return Engine(backend)

    with Batcher(open_engine, cores=2) as b:
        x = np.ones((1, 4), np.float32)
        np.testing.assert_array_equal(b.run(x)["y"], x * 2)
        t = time.perf_counter()
        again = _look_over(b)
        assert again["outcome"] == "done" and again["batch_size"] == 1 and list(again["items_per_s"]) == ["1"]
        assert time.perf_counter() - t < 0.9, again  # one run of 0.3 s, not a first run and a window on each


def test_the_second_look_measures_what_a_preprocess_pipeline_makes() -> None:
    from infercore.preprocess.pipeline import Pipeline, Prepared

    class Rows(Pipeline):
        """A list of numbers -> one row of them."""

        inputs = ("x",)
        dtypes = {"x": np.dtype(np.float32)}

        def prepare(self, raw):
            return Prepared({"x": (1, len(raw))}, np.asarray(raw, np.float32))

        def fill(self, prepared, out):
            out["x"][0] = prepared.data

    clock = _Clock()
    with Batcher(_shaped_factory(clock), cores=2, preprocess=Rows()) as b:
        futs = [b.submit([float(i + 1)] * 4) for i in range(8)]
        for i, f in enumerate(futs):
            np.testing.assert_array_equal(f.result(30)["y"], np.full((1, 4), 2.0 * (i + 1), np.float32))
        assert _look_over(b)["shapes"] == {"x": [4]}
    measured = [r for r in clock.runs if r[3] and all(v == 1.0 for v in r[3]) and len(r[3]) > 1]
    assert measured, "the measuring ran batches of the first request's filled row"


class _WidthBinding(_SlowBinding):
    def run(self) -> None:
        b = self.backend
        x = self.inputs["x"]
        # a batch costs 3 items' overhead plus its items, each in proportion to its width: at width
        # 4 items/s climbs with the batch; a width-64 item costs 16 times as much
        t0 = time.perf_counter()
        time.sleep(b.item_s * (len(x) + 3) * x.shape[1] / 4 / b.threads)
        t1 = time.perf_counter()
        with b.clock.lock:
            b.clock.runs.append((t0, t1, x.shape[1], tuple(float(v) for v in x[:, 0])))
        self.outputs.update(y=x * 2)


def _width_factory(clock: _Clock, binding: type[_SlowBinding]):
    """Engines over rows of any width (``[batch, n]``) whose runs ``binding`` times."""

    def open_engine(threads: int) -> Engine:
        backend = SlowBackend(clock, threads, 0.001)
        backend.bind = lambda inputs, outputs: binding(backend, inputs)  # type: ignore[method-assign]
        backend.inputs = (TensorSpec("x", np.float32, (None, None), ("batch", "n")),)
        backend.outputs = (TensorSpec("y", np.float32, (None, None), ("batch", "n")),)
        return Engine(backend)

    return open_engine


def test_a_heavier_shape_is_batched_within_the_measured_batchs_time() -> None:
    """The probe measured width 4, where items/s climbs with the batch. Rows of width 64 cost 16
    times as much per item: batched by count they would run 10-item batches of 0.5 s while a batch
    of one already gets most of the throughput. They are batched up to what fits in 1.5 times the
    measured batch's time (pace.py); width 4 keeps the measured size. Everything is answered once."""
    clock = _Clock()
    x4 = np.ones((1, 4), np.float32)
    with Batcher(_width_factory(clock, _WidthBinding), cores=2, probe_feeds={"x": x4}) as b:
        lay = b.layout
        assert lay is not None and lay.instances == 2 and lay.batch_size is not None and lay.batch_size >= 4, lay
        # the measured batch on one 1-thread engine: 3 + batch items of 1 ms (sleeps overrun a little)
        assert b.metrics.batch_budget_ms == pytest.approx(lay.batch_size + 3, rel=0.5)
        t = time.perf_counter()
        wide = [np.full((1, 64), i + 1, np.float32) for i in range(24)]
        for x, f in zip(wide, [b.submit(x) for x in wide], strict=True):
            np.testing.assert_array_equal(f.result(30)["y"], x * 2)
        narrow = [np.full((1, 4), 101 + i, np.float32) for i in range(4 * lay.batch_size)]
        futs = [b.submit(x) for x in narrow]
        for x, f in zip(narrow, futs, strict=True):
            np.testing.assert_array_equal(f.result(30)["y"], x * 2)
    served = [r for r in clock.runs if r[0] >= t]
    wide_runs = [r for r in served if r[2] == 64]
    assert sorted(v for r in wide_runs for v in r[3]) == [float(i + 1) for i in range(24)]
    # 1.5 x the measured batch's time (35 ms at most, batch 32) over a width-64 item's (16 ms at
    # least, in any batch): 3 at most; by count, 12 per engine
    assert max(len(r[3]) for r in wide_runs) <= 3, [len(r[3]) for r in wide_runs]
    narrow_runs = [r for r in served if r[2] == 4]
    assert max(len(r[3]) for r in narrow_runs) == lay.batch_size  # the measured shape keeps its size


class _HeavyWideBinding(_SlowBinding):
    def run(self) -> None:
        b = self.backend
        x = self.inputs["x"]
        n, w = x.shape
        # width 64: a batch of n costs n * n items (items/s falls from batch 1); width 4: 3 items'
        # overhead plus n (items/s climbs with the batch)
        t0 = time.perf_counter()
        time.sleep(b.item_s * (16 * n * n if w > 4 else n + 3) / b.threads)
        t1 = time.perf_counter()
        with b.clock.lock:
            b.clock.runs.append((t0, t1, w, tuple(float(v) for v in x[:, 0])))
        self.outputs.update(y=x * 2)


def test_a_lighter_shape_is_not_held_to_the_measured_batch_size() -> None:
    """Measured on width 64, where batch 1 is best: rows of width 4, where items/s climbs with the
    batch, are batched up to what fits in the measured batch's time, not one at a time (MiniLM
    measured at sequence 256 then serving 32: 0.64x the items/s by count)."""
    clock = _Clock()
    x64 = np.ones((1, 64), np.float32)
    with Batcher(_width_factory(clock, _HeavyWideBinding), cores=2, probe_feeds={"x": x64}) as b:
        assert b.layout is not None and b.layout.batch_size == 1 and b.preferred_batch_sizes == (1,), b.layout
        t = time.perf_counter()
        for wave in range(3):  # the first batch of the new shape times it; the next ones grow
            xs = [np.full((1, 4), 100 * wave + i + 1, np.float32) for i in range(40)]
            for x, f in zip(xs, [b.submit(x) for x in xs], strict=True):
                np.testing.assert_array_equal(f.result(30)["y"], x * 2)
    runs = [r for r in clock.runs if r[0] >= t]
    assert sorted(v for r in runs for v in r[3]) == [float(100 * w + i + 1) for w in range(3) for i in range(40)]
    # 1.5 x 16 ms over a width-4 item's 1.2-4 ms: batches of 6 or more once timed; by count, 1
    assert max(len(r[3]) for r in runs) >= 4, [len(r[3]) for r in runs]


def test_no_second_look_when_the_shapes_were_not_guessed_or_the_sizes_were_given() -> None:
    x = np.ones((1, 4), np.float32)
    with Batcher(_shaped_factory(_Clock()), cores=2, probe_feeds={"x": x}) as b:
        assert b.layout is not None and b.layout.probe["shapes_guessed"] is False
        b.run(x)
        time.sleep(0.1)
        assert "reprobe" not in b.layout.probe and b._look.thread is None
    with Batcher(_shaped_factory(_Clock()), cores=2, preferred_batch_sizes=[2]) as b:
        b.run(x)
        time.sleep(0.1)
        assert b.layout is not None and "reprobe" not in b.layout.probe and b.preferred_batch_sizes == (2,)
        assert b.metrics.batch_budget_ms is None  # sizes given: no shape is bounded by time either


def test_closing_during_the_second_look_loses_nothing(caplog: pytest.LogCaptureFixture) -> None:
    """Requests that came while the look ran wait for it; a close stops the look at once and
    ends them (drain=False) or runs them; the engines close after the measuring, not under it."""
    clock = _Clock()
    b = Batcher(_shaped_factory(clock, item_s=0.005), cores=2)  # the look's runs: 80 ms at most
    b.run(np.ones((1, 4), np.float32))
    _look_running(b)
    xs = [np.full((1, 4), i + 2, np.float32) for i in range(6)]
    futs = [b.submit(x) for x in xs]
    t = time.perf_counter()
    b.close(drain=False)
    assert time.perf_counter() - t < 0.5  # the look gave way
    done = aborted = 0
    for x, f in zip(xs, futs, strict=True):
        try:
            np.testing.assert_array_equal(f.result(30)["y"], x * 2)
            done += 1
        except ic.BatcherClosedError:
            aborted += 1
    assert done + aborted == 6 and aborted >= 1
    assert all(e.closed for e in (i.engine for i in b._instances))
    assert "failed" not in caplog.text  # the engines closed after the measuring, not under it


def test_a_failing_second_look_is_tried_again_then_keeps_the_probes_pick(monkeypatch: pytest.MonkeyPatch) -> None:
    """A look that fails (the model refused the request it was given) waits for another request
    and tries again; after ATTEMPTS failures the probe's pick stays."""
    from infercore.batching import engines
    from infercore.batching.second_look import ATTEMPTS

    real, calls = engines.remeasure_batch, []

    def flaky(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 1:
            raise RuntimeError("no second look")
        return real(*args, **kwargs)

    monkeypatch.setattr(engines, "remeasure_batch", flaky)
    x = np.ones((3, 4), np.float32)
    with Batcher(_shaped_factory(_Clock()), cores=2) as b:
        np.testing.assert_array_equal(b.run(x)["y"], x * 2)
        failed = _look_over(b)
        assert failed["outcome"] == "failed" and "RuntimeError: no second look" in failed["error"]
        np.testing.assert_array_equal(b.run(x * 2)["y"], x * 4)  # another request: another look
        again = _look_over(b, attempt=2)
        assert again["outcome"] == "done" and b.preferred_batch_sizes == (again["batch_size"],)
        assert [f["x"][0, 0] for f in calls] == [1.0, 2.0]  # each look on its own request

    def broken(*args, **kwargs):
        raise RuntimeError("no second look")

    monkeypatch.setattr(engines, "remeasure_batch", broken)
    with Batcher(_shaped_factory(_Clock()), cores=2) as b:
        before = (b.layout.batch_size if b.layout else None, b.preferred_batch_sizes)
        for i in range(ATTEMPTS + 2):
            np.testing.assert_array_equal(b.run(x * i)["y"], x * i * 2)
            _look_over(b, attempt=min(i + 1, ATTEMPTS))
        assert b.layout is not None and b.layout.probe["reprobe"]["attempt"] == ATTEMPTS
        assert (b.layout.batch_size, b.preferred_batch_sizes) == before and not b._look.wanted


def test_probe_closes_the_engines_the_layout_does_not_use(tmp_path: Path) -> None:
    path, _ = m.mlp(tmp_path / "mlp.onnx")
    opened: list[Engine] = []

    def factory(threads: int) -> Engine:
        e = ic.load(path, threads=threads)
        opened.append(e)
        return e

    lay, load, lone = probe_layout(factory, cores=2, seconds=0.5)
    kept = [*load, *([lone] if lone is not None else [])]
    assert len(kept) == lay.engines
    assert all(e.closed for e in opened if e not in kept)
    assert not any(e.closed for e in kept)
    for e in kept:
        e.close()


def test_a_failing_probe_falls_back_to_one_engine(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = m.add_bias(tmp_path / "bias.onnx", n=4)[0]
    with Batcher(lambda threads: ic.load(path, threads=threads), probe_feeds={"nope": np.zeros((1, 4))}, cores=2) as b:
        assert b.layout is not None and b.layout.source == "fallback"
        assert "nope" in b.layout.probe["error"] or "x" in b.layout.probe["error"]
        assert len(b.metrics.engines) == 1
        np.testing.assert_allclose(b.run(np.ones((1, 4), np.float32))["y"].shape, (1, 4))
    assert "probe failed" in caplog.text


# -- cores, measured in /proc ------------------------------------------------------------------------
def _thread_cpu() -> dict[int, float]:
    """CPU seconds (user + system) of each thread of this process, from /proc/self/task."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / tick
    return out


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")
def test_proc_cpu_the_wide_engine_idles_under_load_and_the_narrow_ones_idle_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from infercore.batching import request
    from infercore.testing import models

    # no timing of lone requests on a narrow engine here (the test above covers it): alone, only the
    # wide engine may run
    monkeypatch.setattr(request, "EXPLORE", 10**9)
    monkeypatch.setattr(request, "EXPLORE_S", 1e9)
    path = models.ppocr_det()
    x = np.random.default_rng(0).random((1, 3, 320, 320), dtype=np.float32)
    before = set(_thread_cpu())
    # as the server opens them: the wide engine's pool stops spinning when a run ends
    spin = {"session_config": {"session.force_spinning_stop": "1"}}
    with Batcher(lambda threads: ic.load(path, threads=threads, options=spin), layout=TWO, max_batch_size=2) as b:
        python = {t.native_id for t in threading.enumerate()}
        insts = {i.index: i.thread.native_id for i in b._instances}
        lone_tid = insts[2]
        narrow_tids = {insts[0], insts[1]}
        # ONNX Runtime's own pool threads: only the 2-thread (wide) session has any
        pool = set(_thread_cpu()) - before - python - {t for t in insts.values()}
        b.run(x)

        def phase(work) -> dict[int, float]:
            c0 = _thread_cpu()
            work()
            c1 = _thread_cpu()
            return {t: c1.get(t, 0.0) - c0.get(t, 0.0) for t in c1}

        def alone() -> None:
            for _ in range(40):
                b.run(x)

        def loaded() -> None:
            futs = [b.submit(x) for _ in range(120)]
            for f in futs:
                f.result(60)

        quiet = phase(alone)
        after = phase(lambda: time.sleep(0.3))  # what the wide engine burns once its run is over
        busy = phase(loaded)
        engines = b.metrics.engines
    wide_alone = quiet[lone_tid] + sum(quiet.get(t, 0) for t in pool)
    narrow_alone = sum(quiet[t] for t in narrow_tids)
    wide_busy = busy[lone_tid] + sum(busy.get(t, 0) for t in pool)
    narrow_busy = sum(busy[t] for t in narrow_tids)
    assert engines[2]["batches"] >= 41
    assert pool and sum(after.get(t, 0) for t in pool) <= 0.01, "the wide engine's threads spin on after its runs"
    assert narrow_alone <= 0.05 * wide_alone + 0.02, (narrow_alone, wide_alone)
    # under load the wide engine (and its pool) at most finishes the run that was going on
    assert wide_busy <= 0.05 * narrow_busy + 0.03, (wide_busy, narrow_busy)
