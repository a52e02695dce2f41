"""Batcher: results against numpy, shape grouping, padding, priorities, and every way a request ends."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import CancelledError

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import infercore as ic
from infercore.batching import Batcher, BatcherClosedError
from infercore.engine import Engine
from infercore.errors import BackendRuntimeError, DeadlineExceededError, InputSpecError, QueueFullError
from infercore.specs import TensorSpec
from tests import onnx_models as m

pytest.importorskip("onnxruntime")


# -- a gated numpy backend: lets a test hold the instance busy, so the queue fills deterministically
class _GatedBinding:
    def __init__(self, backend: GatedBackend, inputs: dict[str, np.ndarray]) -> None:
        self.backend = backend
        self.inputs = inputs
        self.outputs: dict[str, np.ndarray] = {}

    def run(self) -> None:
        b = self.backend
        b.started.set()
        b.gate.wait(10)
        x = self.inputs["x"]
        b.batches.append(x.copy())
        if (x < 0).any():
            raise BackendRuntimeError("negative input") from ValueError("x < 0")
        self.outputs.update(y=x * 2, s=x.sum(axis=1, keepdims=True))

    def close(self) -> None:
        pass


class GatedBackend:
    name = "gated"
    device = "cpu"
    metadata: dict[str, str] = {}

    def __init__(self, n: int = 4) -> None:
        self.inputs = (TensorSpec("x", np.float32, (None, n), ("batch", None)),)
        self.outputs = (
            TensorSpec("y", np.float32, (None, n), ("batch", None)),
            TensorSpec("s", np.float32, (None, 1), ("batch", None)),
        )
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()
        self.batches: list[np.ndarray] = []

    def run(self, feeds, outputs):
        x = feeds["x"]
        return {"y": x * 2, "s": x.sum(axis=1, keepdims=True)}

    def bind(self, inputs, outputs):
        return _GatedBinding(self, inputs)

    def close(self) -> None:
        pass


def _hold(backend: GatedBackend, b: Batcher, n: int = 1) -> object:
    """Occupy the single instance with one request, so later ones wait in the queue."""
    backend.gate.clear()
    backend.started.clear()
    fut = b.submit(np.zeros((n, 4), np.float32))
    assert backend.started.wait(5)
    return fut


@pytest.fixture
def gated():
    backend = GatedBackend()
    return backend, Engine(backend)


@pytest.fixture
def mlp(tmp_path):
    path, w = m.mlp(tmp_path / "mlp.onnx")
    return path, w


# -- results ---------------------------------------------------------------------------------------
def test_results_match_numpy_for_many_concurrent_callers(mlp):
    path, w = mlp
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((int(rng.integers(1, 4)), 8)).astype(np.float32) for _ in range(200)]
    with Batcher(
        lambda: ic.load(path, threads=1), instances=2, max_batch_size=16, max_queue_delay=0.005
    ) as b:
        futs = [b.submit(x) for x in xs]
        outs = [f.result(10) for f in futs]
        metrics = b.metrics
    for x, out in zip(xs, outs, strict=True):
        logits, probs = m.mlp_numpy(x, w)
        np.testing.assert_allclose(out["logits"], logits, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(out["probs"], probs, rtol=1e-5, atol=1e-6)
        assert out["probs"].flags.owndata or out["probs"].base is None  # caller-owned, not a buffer view
    assert metrics.submitted == metrics.succeeded == 200
    assert metrics.items == sum(len(x) for x in xs)
    assert metrics.batches < 200  # requests were actually batched
    assert max(metrics.batch_sizes) <= 16


def test_results_are_not_views_of_reused_buffers(gated):
    _, eng = gated
    with Batcher(eng, max_queue_delay=0) as b:
        first = b.run(np.ones((1, 4), np.float32))
        b.run(np.full((1, 4), 5, np.float32))
    np.testing.assert_array_equal(first["y"], np.full((1, 4), 2, np.float32))


def test_multi_item_requests_with_several_idle_instances(mlp):
    # sharing the queue among idle instances must never cut a batch below its head request's items
    path, w = mlp
    x = np.random.default_rng(5).random((7, 8), dtype=np.float32)
    with Batcher(ic.load(path, threads=1), instances=3, max_batch_size=8) as b:
        for n in (2, 3, 7):
            got = b.run(x[:n], timeout=10)["probs"]
            np.testing.assert_allclose(got, m.mlp_numpy(x[:n], w)[1], rtol=1e-5, atol=1e-6)


def test_asyncio_infer_and_blocking_run(mlp):
    path, w = mlp
    x = np.random.default_rng(1).standard_normal((64, 8)).astype(np.float32)

    async def main(b: Batcher):
        return await asyncio.gather(*(b.infer(x[i : i + 1]) for i in range(64)))

    with Batcher(ic.load(path), max_batch_size=8) as b:
        outs = asyncio.run(main(b))
        one = b.run(x[:3])
    np.testing.assert_allclose(
        np.concatenate([o["logits"] for o in outs]), m.mlp_numpy(x, w)[0], rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(one["logits"], m.mlp_numpy(x[:3], w)[0], rtol=1e-5, atol=1e-5)


def test_requests_of_different_shapes_are_batched_apart(tmp_path):
    path = m.identity(tmp_path / "id.onnx", onnx_float(), shape=("batch", "seq"))
    eng = ic.load(path)
    xs = [np.full((1, 3 + i % 3), i, np.float32) for i in range(30)]
    with Batcher(eng, max_batch_size=8, max_queue_delay=0.01) as b:
        outs = [f.result(5) for f in [b.submit(x) for x in xs]]
    for x, out in zip(xs, outs, strict=True):
        np.testing.assert_array_equal(out["y"], x)


def onnx_float() -> int:
    from onnx import TensorProto

    return TensorProto.FLOAT


def test_padding_along_named_dims_and_output_crop(tmp_path):
    path = m.identity(tmp_path / "id.onnx", onnx_float(), shape=("batch", "seq"))
    eng = ic.load(path)
    backend_batches = []
    xs = [np.arange(1, 2 + i, dtype=np.float32)[None] for i in range(6)]  # lengths 1..6
    with Batcher(eng, max_batch_size=8, max_queue_delay=0.05, pad=["seq"]) as b:
        outs = [f.result(5) for f in [b.submit(x) for x in xs]]
        backend_batches.append(b.metrics.batch_sizes)
    for x, out in zip(xs, outs, strict=True):
        np.testing.assert_array_equal(out["y"], x)  # "y" has dim name "seq" too: cut back
    assert sum(k * v for k, v in backend_batches[0].items()) == 6
    with pytest.raises(ValueError, match="no input has"):
        Batcher(eng, pad=["channels"])


def test_unnamed_dims_pad_independently_and_uncroppable_outputs_are_refused(tmp_path):
    """An image model [N, 3, ?, ?]: H and W are two unnamed dims, not one dim called '?'. With
    ReduceSum over them, zero padding leaves the answer unchanged, so it must equal Engine.run."""
    f = TensorProto.FLOAT
    path = m.save(
        tmp_path / "sum.onnx",
        [helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=0)],
        [m.vi("x", f, ["N", 3, "?", None])],
        [m.vi("y", f, ["N", 3])],
        [numpy_helper.from_array(np.array([2, 3], np.int64), "axes")],
    )
    rng = np.random.default_rng(0)
    xs = [rng.random((1, 3, h, w), np.float32) for h, w in ((48, 192), (48, 100), (32, 32), (5, 7))]
    with ic.load(path) as eng, Batcher(eng, max_batch_size=8, max_queue_delay=0.05, pad=True) as b:
        outs = [fut.result(5) for fut in [b.submit(x) for x in xs]]
        for x, out in zip(xs, outs, strict=True):
            np.testing.assert_allclose(out["y"], eng.run(x)["y"], rtol=1e-5)
    relu = m.save(tmp_path / "relu.onnx", [helper.make_node("Relu", ["x"], ["y"])],
                  [m.vi("x", f, ["N", None, None])], [m.vi("y", f, ["N", None, None])])
    with ic.load(relu) as eng, pytest.raises(ValueError, match=r"output 'y'.*unnamed dynamic axes \[1, 2\]"):
        Batcher(eng, pad=True)  # padded outputs could not be cut back: refused, not answered padded


def test_preferred_batch_sizes(gated):
    backend, eng = gated
    with Batcher(eng, max_batch_size=8, preferred_batch_sizes=(4,), max_queue_delay=5.0) as b:
        held = _hold(backend, b, n=4)  # a preferred size: dispatched without waiting the delay
        futs = [b.submit(np.full((1, 4), i, np.float32)) for i in range(5)]
        backend.gate.set()
        for f in futs[:4]:
            f.result(5)  # the preferred size 4 goes at once, without waiting the 5 s delay
        held.result(5)
        assert len(backend.batches[1]) == 4
        b.close(drain=True)
    assert futs[4].result(1)["y"][0, 0] == 8


def test_a_queue_past_max_batch_size_still_goes_in_preferred_batches(gated):
    """Triton's rule: with more queued than max_batch_size, the batch is the largest preferred size,
    not max_batch_size (which then only bounds a single request)."""
    backend, eng = gated
    with Batcher(eng, max_batch_size=8, preferred_batch_sizes=(2,), max_queue_delay=0) as b:
        held = _hold(backend, b)
        futs = [b.submit(np.full((1, 4), i, np.float32)) for i in range(12)]
        backend.gate.set()
        held.result(5)
        for i, f in enumerate(futs):
            np.testing.assert_array_equal(f.result(5)["y"], np.full((1, 4), 2 * i, np.float32))
        big = b.submit(np.zeros((7, 4), np.float32))  # a request larger than the preferred size runs
        assert big.result(5)["y"].shape == (7, 4)
    assert [len(x) for x in backend.batches[1:7]] == [2] * 6
    assert len(backend.batches[7]) == 7


def test_with_quiet_a_head_that_waited_for_an_instance_still_gets_its_fill_window(gated):
    backend, eng = gated
    with Batcher(eng, max_batch_size=8, max_queue_delay=0.5, quiet=0.45) as b:
        held = _hold(backend, b)
        early = b.submit(np.full((1, 4), 1, np.float32))
        time.sleep(0.6)  # the head is now past its delay, but no instance was free
        backend.gate.set()
        held.result(5)
        time.sleep(0.05)  # the instance is free again; the head's own delay is long past
        late = b.submit(np.full((1, 4), 2, np.float32))
        for f in (early, late):
            f.result(5)
    # the head did not leave alone the instant the instance was free: the late one joined it
    assert [len(x) for x in backend.batches] == [1, 2]
    assert backend.batches[1][:, 0].tolist() == [1, 2]


def test_quiet_sends_a_batch_once_arrivals_stop(gated):
    _, eng = gated
    with Batcher(eng, max_batch_size=32, max_queue_delay=30.0, quiet=0.2) as b:
        futs = [b.submit(np.full((1, 4), i, np.float32)) for i in range(5)]  # one burst
        for f in futs:
            f.result(10)  # long before the 30 s delay: 0.2 s without a new request sends it
        assert b.metrics.batch_sizes == {5: 1}  # and the burst went as one batch
    with pytest.raises(ic.ArgumentError, match=r"^quiet: expected a finite number"):
        Batcher(eng, quiet=-1)


def test_high_priority_is_served_first(gated):
    backend, eng = gated
    with Batcher(eng, max_batch_size=2, max_queue_delay=0) as b:
        held = _hold(backend, b)
        normal = [b.submit(np.full((1, 4), i, np.float32)) for i in range(1, 4)]
        high = b.submit(np.full((1, 4), 100, np.float32), priority=1)
        backend.gate.set()
        for f in [held, high, *normal]:
            f.result(5)
    assert backend.batches[1][0, 0] == 100  # high went in the first batch after the held one
    with pytest.raises(ic.ArgumentError, match=r"^priority: expected 0"):
        Batcher(eng).submit(np.zeros((1, 4), np.float32), priority=5)


# -- validation at submit ------------------------------------------------------------------------
def test_bad_requests_are_refused_at_submit_naming_the_tensor(tmp_path):
    eng = ic.load(m.two_inputs(tmp_path / "two.onnx"))
    specs = {s.name: s for s in eng.inputs}
    with Batcher(eng, max_batch_size=4) as b:
        names = list(specs)
        good = {n: np.zeros((1, *s.concrete()[1:]), s.dtype) for n, s in specs.items()}
        b.run(good)
        with pytest.raises(InputSpecError, match=names[0]) as e:
            b.submit({**good, names[0]: good[names[0]].astype(np.float64)})
        assert e.value.tensor == names[0]
        with pytest.raises(InputSpecError, match="missing"):
            b.submit({names[0]: good[names[0]]})
        # both inputs name their batch dim 'batch': the engine's shared-name check refuses it
        with pytest.raises(InputSpecError, match=r"share the dimension 'batch'.*batch=2.*batch=1"):
            b.submit({names[0]: np.repeat(good[names[0]], 2, 0), names[1]: good[names[1]]})
        with pytest.raises(InputSpecError, match="max_batch_size=4"):
            b.submit({n: np.repeat(a, 5, 0) for n, a in good.items()})
        assert b.metrics.submitted == 1


def test_model_without_batch_dimension_is_refused(tmp_path):
    path, _ = m.add_bias(tmp_path / "fixed.onnx", batch=1)
    eng = ic.load(path)
    with pytest.raises(InputSpecError, match=r"fixed batch dimension.*max_batch_size=1"):
        Batcher(eng)
    with Batcher(eng, max_batch_size=1) as b:
        np.testing.assert_array_equal(b.run(np.ones((1, 16), np.float32))["y"], 1 + np.arange(16)[None])


# -- nothing lost ----------------------------------------------------------------------------------
def test_queue_full_is_refused_at_once(gated):
    backend, eng = gated
    with Batcher(eng, max_queue_size=3, max_queue_delay=0) as b:
        held = _hold(backend, b)
        futs = [b.submit(np.zeros((1, 4), np.float32)) for _ in range(3)]
        with pytest.raises(QueueFullError, match="queue full"):
            b.submit(np.zeros((1, 4), np.float32))
        assert b.metrics.rejected == 1 and b.metrics.queue_depth == 3
        backend.gate.set()
        for f in [held, *futs]:
            f.result(5)


def test_deadline_ends_queued_request_without_running_it(gated):
    backend, eng = gated
    with Batcher(eng, max_batch_size=1, max_queue_delay=0) as b:
        held = _hold(backend, b)
        late = b.submit(np.full((1, 4), 7, np.float32), timeout=0.05)
        with pytest.raises(DeadlineExceededError, match="not run"):
            late.result(5)  # ended by the scheduler while the instance is still busy
        with pytest.raises(TimeoutError):
            b.run(np.full((1, 4), 8, np.float32), timeout=0.05)
        backend.gate.set()
        held.result(5)
        metrics = b.metrics
    assert metrics.timed_out == 2
    assert not any((x == 7).any() or (x == 8).any() for x in backend.batches)


def test_huge_infinite_and_nan_timeouts(gated):
    """A deadline far in the future once overflowed Condition.wait and killed the scheduler: every
    later request hung, and close() with it."""
    _, eng = gated
    x = np.ones((1, 4), np.float32)
    with Batcher(eng, max_batch_size=4, max_queue_delay=0) as b:
        for timeout in (1e20, float("inf"), 1e300):
            np.testing.assert_array_equal(b.submit(x, timeout=timeout).result(5)["y"], x * 2)
        np.testing.assert_array_equal(b.submit(x * 3).result(5)["y"], x * 6)  # still scheduling
        for bad in (float("nan"), 0, -1.0, "soon"):
            with pytest.raises(ic.ArgumentError, match=r"^timeout: expected seconds > 0"):
                b.submit(x, timeout=bad)
    assert Batcher(eng, timeout=float("inf")).timeout is None
    assert Batcher(eng, max_queue_delay=float("inf")).max_queue_delay == float("inf")  # wait for a full batch
    with pytest.raises(ic.ArgumentError, match=r"^max_queue_delay: "):
        Batcher(eng, max_queue_delay=float("nan"))


def test_finished_requests_are_not_kept_until_their_deadline(gated):
    """A deadline heap entry held each finished request, its inputs and its result, for the whole
    timeout: memory grew with rate x timeout (1.3 GB for 1500 requests of 0.9 MB at 120 s)."""
    _, eng = gated
    with Batcher(eng, max_batch_size=4, max_queue_delay=0, timeout=120) as b:
        for i in range(300):
            np.testing.assert_array_equal(b.run(np.full((1, 4), i, np.float32))["y"], np.full((1, 4), 2 * i))
        assert len(b._deadlines) <= 64 + 1  # compacted as requests finish
        alive = sum(ref() is not None for _, _, ref in b._deadlines)
        assert alive <= 2  # at most the last batch, still named by the scheduler's and instance's locals
        x = np.ones((1, 4), np.float32)
        held = b.submit(x)
        held.result(5)
        assert held._request is None  # a future the caller keeps holds its result, not the request


def test_a_failing_scheduler_ends_every_request_and_close_returns(gated, monkeypatch, caplog):
    backend, eng = gated
    b = Batcher(eng, max_batch_size=4, max_queue_delay=0)
    held = _hold(backend, b)
    queued = b.submit(np.ones((1, 4), np.float32))

    def broken(*args):
        raise RuntimeError("scheduler bug")

    monkeypatch.setattr(b, "_form", broken)
    backend.gate.set()  # the held batch finishes; forming the next one raises
    np.testing.assert_array_equal(held.result(5)["y"], np.zeros((1, 4), np.float32))
    with pytest.raises(BatcherClosedError, match=r"scheduler failed .*scheduler bug"):
        queued.result(5)
    with pytest.raises(BatcherClosedError):
        b.submit(np.ones((1, 4), np.float32))
    t0 = time.perf_counter()
    b.close()
    assert time.perf_counter() - t0 < 5
    assert "scheduler failed" in caplog.text


def test_cancelled_future_leaves_the_queue(gated):
    backend, eng = gated
    with Batcher(eng, max_queue_delay=0) as b:
        held = _hold(backend, b)
        fut = b.submit(np.full((1, 4), 9, np.float32))
        assert b.metrics.queue_depth == 1
        assert fut.cancel()
        assert b.metrics.queue_depth == 0 and b.metrics.cancelled == 1
        backend.gate.set()
        held.result(5)
    assert not any((x == 9).any() for x in backend.batches)
    with pytest.raises(CancelledError):
        fut.result(0)


def test_cancelled_future_wakes_concurrent_futures_wait(gated):
    import concurrent.futures as cf

    backend, eng = gated
    with Batcher(eng, max_queue_delay=0) as b:
        held = _hold(backend, b)
        futs = [b.submit(np.full((1, 4), v, np.float32)) for v in (1, 2)]
        assert futs[1].cancel()
        backend.gate.set()
        t0 = time.perf_counter()
        _, not_done = cf.wait([held, *futs], timeout=5)
        assert not not_done and time.perf_counter() - t0 < 4
        assert len(list(cf.as_completed([held, *futs], timeout=5))) == 3


def test_a_backend_raising_base_exception_fails_its_batch_and_the_instance_goes_on(gated):
    class Stop(BaseException):
        pass

    _, eng = gated
    real = _GatedBinding.run

    def run(self):
        if (self.inputs["x"] == 13).any():
            raise Stop("framework cancellation")
        real(self)

    with Batcher(eng, max_batch_size=1, max_queue_delay=0) as b:
        _GatedBinding.run = run
        try:
            with pytest.raises(Stop):
                b.submit(np.full((1, 4), 13, np.float32)).result(5)
            np.testing.assert_array_equal(b.submit(np.ones((1, 4), np.float32)).result(5)["y"], 2)
        finally:
            _GatedBinding.run = real
        t0 = time.perf_counter()
    assert time.perf_counter() - t0 < 5  # close() returned


def test_close_from_a_done_callback(tmp_path):
    path, _ = m.mlp(tmp_path / "mlp.onnx")
    b = Batcher(lambda: ic.load(path), max_queue_delay=0)
    engines = [inst.engine for inst in b._instances]
    closed = threading.Event()
    errors = []

    def close_batcher(fut):
        try:
            b.close()
        except Exception as e:
            errors.append(e)
        closed.set()

    b.submit(np.ones((1, 8), np.float32)).add_done_callback(close_batcher)
    assert closed.wait(5) and not errors and b.closed
    for _ in range(100):  # the instance thread closes the engine it was made with as it exits
        if all(e.closed for e in engines):
            break
        time.sleep(0.02)
    assert all(e.closed for e in engines)


def test_cancelled_asyncio_task_leaves_the_queue(gated):
    backend, eng = gated

    async def main(b: Batcher) -> None:
        task = asyncio.ensure_future(b.infer(np.full((1, 4), 9, np.float32)))
        await asyncio.sleep(0.05)
        assert b.metrics.queue_depth == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with Batcher(eng, max_queue_delay=0) as b:
        held = _hold(backend, b)
        asyncio.run(main(b))
        assert b.metrics.cancelled == 1 and b.metrics.queue_depth == 0
        backend.gate.set()
        held.result(5)
    assert not any((x == 9).any() for x in backend.batches)


def test_a_failing_request_fails_alone_not_its_batch(gated):
    """A batch that fails is run again request by request, so only the request that causes the
    error gets it (each its own exception object), and the others get their results."""
    backend, eng = gated
    with Batcher(eng, max_batch_size=2, max_queue_delay=0) as b:
        held = _hold(backend, b)
        # two batches of two: the first holds a negative input, which the backend refuses
        futs = [b.submit(np.full((1, 4), v, np.float32)) for v in (-1, 1, 2, 3)]
        backend.gate.set()
        held.result(5)
        with pytest.raises(BackendRuntimeError, match="negative") as e:
            futs[0].result(5)
        assert isinstance(e.value.__cause__, ValueError)
        assert [f.result(5)["y"][0, 0] for f in futs[1:]] == [2, 4, 6]
        metrics = b.metrics
    assert metrics.failed == 1 and metrics.succeeded == 4
    # the failed batch of 2 ran once together, then each of its requests alone
    assert [len(x) for x in backend.batches[1:]] == [2, 1, 1, 2]


def test_close_drain_finishes_everything_accepted(gated):
    backend, eng = gated
    b = Batcher(eng, max_batch_size=2, max_queue_delay=0)
    held = _hold(backend, b)
    futs = [b.submit(np.full((1, 4), i, np.float32)) for i in range(5)]
    threading.Timer(0.1, backend.gate.set).start()
    b.close(drain=True)
    assert [f.result(0)["y"][0, 0] for f in futs] == [0, 2, 4, 6, 8]
    held.result(0)
    with pytest.raises(BatcherClosedError, match="closed"):
        b.submit(np.zeros((1, 4), np.float32))
    b.close()  # idempotent


def test_close_timeout_values(gated):
    backend, eng = gated
    b = Batcher(eng, max_batch_size=1, max_queue_delay=0)
    held = _hold(backend, b)
    queued = [b.submit(np.full((1, 4), v, np.float32)) for v in (1, 2)]
    for bad in (float("nan"), -1.0):
        with pytest.raises(ic.ArgumentError, match=r"^timeout: expected seconds >= 0"):
            b.close(timeout=bad)
    assert not b.closed
    threading.Timer(0.2, backend.gate.set).start()
    b.close(timeout=float("inf"))  # waits without limit: everything accepted runs
    assert held.result(0) and [f.result(0)["y"][0, 0] for f in queued] == [2, 4]


def test_close_without_drain_ends_queued_requests(gated):
    backend, eng = gated
    b = Batcher(eng, max_queue_delay=0)
    held = _hold(backend, b)
    futs = [b.submit(np.zeros((1, 4), np.float32)) for _ in range(3)]
    threading.Timer(0.1, backend.gate.set).start()
    b.close(drain=False)
    held.result(0)  # the batch already running finishes
    for f in futs:
        with pytest.raises(BatcherClosedError, match="without draining"):
            f.result(0)
    metrics = b.metrics
    assert metrics.aborted == 3 and metrics.succeeded == 1 and metrics.in_flight == 0


def test_factory_engines_are_closed_and_a_shared_engine_is_not(mlp):
    path, _ = mlp
    made = []

    def factory():
        made.append(ic.load(path, threads=1))
        return made[-1]

    with Batcher(factory, instances=2) as b:
        assert b.inputs == made[0].inputs and b.outputs == made[0].outputs
    assert len(made) == 2 and all(e.closed for e in made)
    shared = ic.load(path)
    Batcher(shared, instances=2).close()
    assert not shared.closed


def test_metrics_snapshot(mlp):
    path, _ = mlp
    with Batcher(ic.load(path), max_batch_size=4) as b:
        for f in [b.submit(np.zeros((1, 8), np.float32)) for _ in range(10)]:
            f.result(5)
        time.sleep(0.01)
        metrics = b.metrics
    assert metrics.succeeded == 10 and metrics.queue_ms.count == 10
    assert metrics.exec_ms.count == metrics.batches == sum(metrics.batch_sizes.values())
    assert metrics.mean_batch_size is not None and 1 <= metrics.mean_batch_size <= 4
    assert metrics.queue_ms.p50_ms is not None and metrics.queue_ms.p99_ms >= metrics.queue_ms.p50_ms


def test_instances_beyond_openvino_streams_are_warned_about(mlp, caplog):
    pytest.importorskip("openvino", reason="openvino is not installed")
    path, w = mlp
    x = np.random.default_rng(3).random((5, 8), dtype=np.float32)
    assert ic.load(path, backend="ort").concurrency is None  # each calling thread runs its own
    one = ic.load(path, backend="openvino")  # latency hint: one stream
    assert one.concurrency == 1
    with caplog.at_level("WARNING", logger="infercore.batching"):
        Batcher(one, instances=2, name="one-stream").close()
    assert "2 instances share one openvino engine that runs 1 request(s) at once" in caplog.text
    assert "num_streams': 2" in caplog.text
    caplog.clear()
    two = ic.load(path, backend="openvino", threads=2, options={"num_streams": 2})
    assert two.concurrency == 2
    with caplog.at_level("WARNING", logger="infercore.batching"), Batcher(two, instances=2) as b:
        got = [f.result(10)["probs"] for f in [b.submit(x[i : i + 1]) for i in range(5)]]
    assert caplog.text == ""
    np.testing.assert_allclose(np.concatenate(got), m.mlp_numpy(x, w)[1], rtol=1e-5, atol=1e-6)


def test_the_bound_buffers_kept_per_engine_are_bounded_in_bytes(tmp_path, monkeypatch) -> None:
    """Requests of many sizes (images of any size) each bind buffers of their own shape; the
    least recently used go once an engine keeps more than BIND_CACHE_BYTES of them (by count
    alone, 128 PP-OCR det sizes held 1.5 GB per engine). Answers stay right across evictions."""
    from infercore.batching import plan

    monkeypatch.setattr(plan, "BIND_CACHE_BYTES", 4 << 20, raising=False)
    path = m.identity(tmp_path / "id.onnx", TensorProto.FLOAT, ("batch", "h", "w"))
    rng = np.random.default_rng(0)
    with Batcher(ic.load(path), max_batch_size=1) as b:
        (inst,) = b._instances
        for i in range(40):  # 40 sizes of 160-470 kB in, as much out: 6-15 MB in all
            x = rng.standard_normal((1, 200 + 5 * i, 200 + 5 * i), dtype=np.float32)
            np.testing.assert_array_equal(b.run(x)["y"], x)
            held = [plan._held(io) for io in inst.bound.values()]
            assert sum(held[:-1]) <= 4 << 20, held  # the newest one's outputs count once it ran
        assert 1 < len(inst.bound) < 10
        x = rng.standard_normal((1, 200, 200), dtype=np.float32)  # an evicted size binds again
        np.testing.assert_array_equal(b.run(x)["y"], x)


@pytest.mark.parametrize("pad", [False, True])
def test_key_of_a_measured_shape_is_the_key_its_requests_get(tmp_path, pad) -> None:
    """The shapes a probe measured map to the queue key of requests of those shapes (padded
    dimensions included), so that shape keeps its preferred batch size (pace.py)."""
    path = m.identity(tmp_path / "id.onnx", TensorProto.FLOAT, ("batch", "seq"))
    with Batcher(ic.load(path), pad=pad) as b:
        for n in (3, 7):
            req = b._plan.request({"x": np.ones((1, n), np.float32)})
            assert b._plan.key_of({"x": [n]}) == req.key
        assert b._plan.key_of({"y": [3]}) is None
