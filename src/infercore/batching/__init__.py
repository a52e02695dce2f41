"""``Batcher``: dynamic batching over any Engine, for many callers at once (threads or asyncio).

Modelled on Triton's dynamic batcher. Callers submit requests (each carrying ``n >= 1`` items
along dimension 0); one scheduler thread groups queued requests of the same non-batch shape into
a batch as soon as an instance is free, waiting at most ``max_queue_delay`` (from the head's
arrival) for a batch to fill, or dispatching at once when it reaches ``max_batch_size`` or a
preferred size. With ``quiet``, the window is adaptive: it opens when the head arrives or, if the
head had to wait for a free instance, when one frees, and the batch goes once no request has
arrived for ``quiet`` seconds (``max_queue_delay`` still caps it). Each instance
thread copies its requests once, straight into the bound input buffers of that batch size
(``Engine.bind``, cached per size and shape), runs, and hands each caller its own slice of the
outputs as arrays the caller owns.

Given an engine factory that takes ``threads``, the batcher picks its engines itself
(``infercore.layout``): one with every core for a request that comes alone, narrower ones side by
side under load, never more threads running than cores; when the probe had to guess a dynamic
dimension, the batch size is measured again on the first served shape once the batcher is idle.

Modules: ``batcher`` (the scheduler and the instance threads), ``request`` (one request and how its
answer reaches the caller), ``plan`` (how requests map onto a batch's buffers), ``engines`` (which
engines run, and the thread that runs each), ``second_look`` (when the batch size is measured again
on a served shape), ``pace`` (other shapes batched within the measured batch's time), ``stats``
(what the batcher reports).

Nothing is lost: every accepted request ends in exactly one result or one error.

- a full queue refuses at submit (``QueueFullError``), nothing is queued;
- a request whose deadline passes while queued ends with ``DeadlineExceededError`` and is not run;
- a cancelled future (or a cancelled asyncio task awaiting ``infer``) leaves the queue;
- a failing batch fails only its own requests, with the runtime's exception;
- ``close(drain=True)`` finishes everything accepted, ``close(drain=False)`` ends what is still
  queued with ``BatcherClosedError``; a submit after close raises ``BatcherClosedError``.

    b = Batcher(lambda threads: ic.load("minilm.onnx", threads=threads))   # probes its layout
    fut = b.submit({"input_ids": ids, "attention_mask": mask, "token_type_ids": types})
    emb = fut.result()["embedding"]          # or: await b.infer(feeds); or: b.run(feeds)
    b.close()
"""

from __future__ import annotations

from ..errors import BatcherClosedError
from ..layout import Layout
from .batcher import AUTO_QUEUE_DELAY, AUTO_QUIET, Batcher
from .stats import BatcherMetrics, LatencySummary

__all__ = ["AUTO_QUEUE_DELAY", "AUTO_QUIET", "Batcher", "BatcherClosedError", "BatcherMetrics", "LatencySummary", "Layout"]
