"""Stress: overload, random cancellations and deadlines, a close in the middle: nothing is lost.

Bounded to a couple of seconds. Every accepted request must end in exactly one result (checked
against numpy) or one error, and the batcher's own counters must add up to what was accepted.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from concurrent.futures import CancelledError, Future

import numpy as np
import pytest

import infercore as ic
from infercore.batching import Batcher, BatcherClosedError
from infercore.errors import DeadlineExceededError, QueueFullError
from tests import onnx_models as m

pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("drain", [True, False])
def test_overload_cancel_deadline_close_accounts_for_every_request(tmp_path, drain):
    path, w = m.mlp(tmp_path / "mlp.onnx", d_in=64, d_hidden=8192, d_out=8)
    batcher = Batcher(
        lambda: ic.load(path, threads=1),
        instances=2,
        max_batch_size=16,
        max_queue_delay=0.001,
        max_queue_size=64,
    )
    accepted: list[tuple[Future, np.ndarray]] = []
    refused = {"full": 0, "closed": 0}
    lock = threading.Lock()
    stop = threading.Event()

    def producer(seed: int) -> None:
        rng = random.Random(seed)
        nprng = np.random.default_rng(seed)
        while not stop.is_set():
            x = nprng.standard_normal((rng.randint(1, 3), 64)).astype(np.float32)
            timeout = rng.choice([None, None, 0.002, 0.05])
            try:
                fut = batcher.submit(x, timeout=timeout, priority=rng.randint(0, 1))
            except QueueFullError:
                with lock:
                    refused["full"] += 1
                time.sleep(0.0002)
                continue
            except BatcherClosedError:
                with lock:
                    refused["closed"] += 1
                time.sleep(0.001)
                continue
            with lock:
                accepted.append((fut, x))
            if rng.random() < 0.15:
                fut.cancel()

    async_outcomes = {"ok": 0, "err": 0}

    async def async_callers(seed: int) -> None:
        rng = random.Random(seed)

        async def one(i: int) -> None:
            x = np.full((1, 64), i % 7, np.float32)
            task = asyncio.ensure_future(batcher.infer(x, timeout=rng.choice([None, 0.01])))
            if rng.random() < 0.2:
                await asyncio.sleep(0)
                task.cancel()  # a cancelled task takes its request out of the queue
            try:
                out = await task
                assert out["probs"].shape == (1, 8)
                async_outcomes["ok"] += 1
            except (asyncio.CancelledError, DeadlineExceededError, QueueFullError, BatcherClosedError):
                async_outcomes["err"] += 1

        while not stop.is_set():
            await asyncio.gather(*(one(i) for i in range(32)))

    threads = [threading.Thread(target=producer, args=(s,)) for s in range(6)]
    threads.append(threading.Thread(target=lambda: asyncio.run(async_callers(99))))
    for t in threads:
        t.start()
    time.sleep(1.0)
    batcher.close(drain=drain, timeout=10)  # close in the middle, producers still submitting
    time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join(10)

    results = errors = cancelled = 0
    kinds: dict[str, int] = {}
    rng = np.random.default_rng(0)
    for fut, x in accepted:
        assert fut.done(), "an accepted request never ended"
        if fut.cancelled():
            cancelled += 1
            with pytest.raises(CancelledError):
                fut.result(0)
            continue
        err = fut.exception(0)
        if err is None:
            results += 1
            if rng.random() < 0.05:
                ref = m.mlp_numpy(x, w)[0]
                np.testing.assert_allclose(
                    fut.result(0)["logits"], ref, rtol=1e-4, atol=1e-4 * abs(ref).max()
                )
        else:
            errors += 1
            kinds[type(err).__name__] = kinds.get(type(err).__name__, 0) + 1
            assert isinstance(err, (DeadlineExceededError, BatcherClosedError)), err

    metrics = batcher.metrics
    # the thread producers' requests are a subset of everything the batcher accepted (asyncio too)
    assert results + errors + cancelled == len(accepted)
    assert metrics.queue_depth == 0 and metrics.in_flight == 0
    assert metrics.submitted == (
        metrics.succeeded + metrics.failed + metrics.timed_out + metrics.cancelled + metrics.aborted
    )
    assert metrics.failed == 0
    assert refused["full"] > 0 and metrics.rejected >= refused["full"]  # it was overloaded
    assert refused["closed"] > 0  # submits after the close were refused
    assert metrics.timed_out > 0 and metrics.cancelled > 0
    assert async_outcomes["ok"] > 0
    attempts = len(accepted) + refused["full"] + sum(async_outcomes.values())
    print(
        f"drain={drain}: {attempts} attempts, {metrics.succeeded} ran ({attempts / max(metrics.succeeded, 1):.1f}x), {dict(kinds)}, {metrics}"
    )
    if not drain:
        assert metrics.aborted > 0 or metrics.queue_depth == 0
