"""Knowledge distillation: a pruned (or any smaller) student learns from the model it came from.

    res = ic.distill(pruned, dense, (x_train, y_train), epochs=10, eval_data=(x_test, y_test))
    res.module                  # the student, trained in place
    print(res.report)           # loss per epoch, and accuracy/precision/recall/F1 before and after

The loss is Hinton's: KL divergence between the teacher's and the student's logits softened by
``temperature`` (scaled by T²), weighted ``alpha``, plus ``1 - alpha`` times the task loss (cross
entropy against the labels) when the data has labels. ``loss_fn(student_out, teacher_out, labels)``
replaces it (a regression or embedding model); ``fine_tune(student, teacher, data)`` replaces the
whole loop with the caller's own. Without a teacher the loop fine-tunes on the labels alone.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..arguments import check_int, check_number
from ..errors import ArgumentError, OptimizeError
from ..inputs import LabelledBatches, labelled_batches, read_data
from ..progress import Progress
from .torchmodel import ModuleInputs, call, flat_outputs, module_inputs, score_module, torch

__all__ = ["DistillReport", "DistillResult", "as_numpy_data", "distill", "example_from_data"]


@dataclass(frozen=True)
class DistillReport:
    """What recovery did: how (``method``: ``"distillation"``, ``"fine-tuning"`` without a teacher,
    ``"caller's fine_tune"``), on how much data, the loss per epoch, and the student's metrics on
    ``eval_data`` before and after (empty without it)."""

    method: str
    epochs: int
    steps: int
    samples: int
    batch_size: int
    temperature: float | None
    alpha: float | None
    lr: float | None
    losses: tuple[float, ...]
    before: dict[str, float]
    after: dict[str, float]
    teacher: dict[str, float]
    eval_samples: int
    seconds: float
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": "infercore.distill/1", **asdict(self)}

    def __str__(self) -> str:
        how = self.method
        if self.method == "distillation":
            how += f" (temperature {self.temperature:g}, alpha {self.alpha:g})"
        lines = [f"{how}: {self.epochs} epochs, {self.steps} steps of {self.batch_size} over {self.samples} samples "
                 f"in {self.seconds:.1f} s"]  # fmt: skip
        if self.losses:
            lines.append("  loss per epoch: " + " ".join(f"{v:.4f}" for v in self.losses))
        for key in ("accuracy", "precision", "recall", "f1", "cosine"):
            if key in self.after:
                pts = key != "cosine"
                fmt = (lambda v: f"{100 * v:.2f}%") if pts else (lambda v: f"{v:.5f}")
                teacher = f"  (teacher {fmt(self.teacher[key])})" if key in self.teacher else ""
                lines.append(f"  {key} on {self.eval_samples} samples: {fmt(self.before[key])} -> {fmt(self.after[key])}{teacher}")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)


@dataclass(frozen=True)
class DistillResult:
    module: Any
    report: DistillReport


def example_from_data(data: Any) -> Any:
    """The first two samples of ``data`` (any form ``labelled_batches`` reads), as example inputs:
    an array, or a dict of arrays by input name."""
    if isinstance(data, tuple) and len(data) == 2 and not isinstance(data[1], Mapping):
        data = data[0]
    elif isinstance(data, Mapping):
        data = {k: v for k, v in data.items() if k not in ("labels", "label", "y")}
    elif isinstance(data, str) or hasattr(data, "__fspath__"):
        d = read_data(data)
        data = d.items[0]
    elif not hasattr(data, "shape"):
        try:
            first = next(iter(data))
        except (TypeError, StopIteration) as e:
            raise ArgumentError("data", f"expected (inputs, labels), a dict of arrays, a path or batches, got {type(data).__name__}") from e
        data = first[0] if isinstance(first, tuple) and len(first) == 2 else first
    if isinstance(data, Mapping):
        return {k: np.asarray(_numpy(v))[:2] for k, v in data.items()}
    if isinstance(data, (tuple, list)):
        return tuple(np.asarray(_numpy(v))[:2] for v in data)
    return np.asarray(_numpy(data))[:2]


def _numpy(v: Any) -> Any:
    return v.detach().cpu().numpy() if hasattr(v, "detach") else v


def as_numpy_data(data: Any) -> Any:
    """Tensors in the caller's data as arrays (``infercore.inputs`` reads numpy)."""
    if isinstance(data, tuple) and len(data) == 2 and not isinstance(data[1], Mapping):
        x, y = data
        x = {k: _numpy(v) for k, v in x.items()} if isinstance(x, Mapping) else _numpy(x)
        return (x, _numpy(y))
    if isinstance(data, Mapping):
        return {k: _numpy(v) for k, v in data.items()}
    return _numpy(data)


def _stack(batches: LabelledBatches, inputs: ModuleInputs) -> tuple[list[Any], Any]:
    t = torch()
    tensors = [t.from_numpy(np.concatenate([b[n] for b in batches.batches])) for n in inputs.names]
    labels = batches.all_labels()
    return tensors, (None if labels is None else t.from_numpy(np.asarray(labels)))


def _kd_loss(student_out: Any, teacher_out: Any, labels: Any, temperature: float, alpha: float) -> Any:
    t = torch()
    f = t.nn.functional
    s = student_out.flatten(1) if student_out.dim() > 2 else student_out
    loss = None
    if teacher_out is not None:
        tt = teacher_out.flatten(1) if teacher_out.dim() > 2 else teacher_out
        kl = f.kl_div(f.log_softmax(s / temperature, dim=-1), f.softmax(tt / temperature, dim=-1), reduction="batchmean")
        loss = kl * temperature**2
    if labels is not None:
        task = f.cross_entropy(s, labels.long())
        loss = task if loss is None else alpha * loss + (1 - alpha) * task
    return loss


def distill(
    student: Any,
    teacher: Any,
    data: Any,
    epochs: int = 5,
    *,
    example_inputs: Any = None,
    eval_data: Any = None,
    temperature: float = 4.0,
    alpha: float = 0.7,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    batch_size: int = 64,
    loss_fn: Callable[[Any, Any, Any], Any] | None = None,
    fine_tune: Callable[[Any, Any, Any], Any] | None = None,
    seed: int = 0,
    progress: bool | None = None,
) -> DistillResult:
    """Train ``student`` (in place) to match ``teacher`` on ``data`` for ``epochs``.

    ``data``: ``(inputs, labels)`` (arrays or tensors; inputs a dict by argument name for several),
    a dict with a ``labels`` key, a ``.npz``/directory path, batches of ``(feeds, labels)``, or
    inputs alone (distillation only). ``teacher``: the model to learn from, or None to fine-tune on
    the labels alone. ``eval_data`` (same forms, labelled): the student's accuracy, precision, recall
    and F1 before and after (cosine to the teacher's outputs without labels). ``alpha`` weighs the
    softened-logit KL against the task loss; ``temperature`` softens both logits. ``loss_fn(student_out,
    teacher_out, labels) -> loss`` replaces that loss; ``fine_tune(student, teacher, data)`` replaces
    the loop (its return value, if a module, becomes the result). Adam with cosine-decayed ``lr``.
    """
    t = torch()
    if not isinstance(student, t.nn.Module):
        raise ArgumentError("student", f"expected a torch nn.Module, got {type(student).__name__}")
    if teacher is not None and not isinstance(teacher, t.nn.Module):
        raise ArgumentError("teacher", f"expected a torch nn.Module or None, got {type(teacher).__name__}")
    if teacher is student:
        raise ArgumentError("teacher", "is the student itself: distill from the model before pruning (prune works on a copy)")
    check_int("epochs", epochs, minimum=0)
    check_int("batch_size", batch_size)
    check_int("seed", seed, minimum=0)
    check_number("temperature", temperature, inclusive=False)
    check_number("lr", lr, inclusive=False)
    check_number("weight_decay", weight_decay)
    if not (isinstance(alpha, (int, float)) and 0 <= alpha <= 1):
        raise ArgumentError("alpha", f"expected the weight of the distillation loss, in [0, 1], got {alpha!r}")
    for name, fn in (("loss_fn", loss_fn), ("fine_tune", fine_tune)):
        if fn is not None and not callable(fn):
            raise ArgumentError(name, f"expected a callable, got {type(fn).__name__}")
    started = time.perf_counter()
    data = as_numpy_data(data)
    inputs = module_inputs(student, example_inputs if example_inputs is not None else example_from_data(data))
    evalset = None
    if eval_data is not None:
        evalset = labelled_batches(as_numpy_data(eval_data), inputs.specs, batch_size=256)
        if not evalset.batches:
            raise ArgumentError("eval_data", "is empty")
    teacher_scores = score_module(teacher, inputs, evalset) if teacher is not None and evalset else {}
    reference = None
    if evalset is not None and not evalset.has_labels:
        if teacher is None:
            raise ArgumentError("eval_data", "has no labels and there is no teacher to compare with: give (inputs, labels)")
        reference = teacher
    before = score_module(student, inputs, evalset, reference=reference) if evalset else {}
    notes: list[str] = []

    if fine_tune is not None:
        was = student.training
        returned = fine_tune(student, teacher, data)
        student.train(was)
        if returned is not None:
            if not isinstance(returned, t.nn.Module):
                raise ArgumentError("fine_tune", f"returned a {type(returned).__name__}; return the module, or None")
            student = returned
        after = score_module(student, inputs, evalset, reference=reference) if evalset else {}
        report = DistillReport("caller's fine_tune", epochs, 0, 0, batch_size, None, None, None, (), before, after,
                               _plain(teacher_scores), evalset.samples if evalset else 0,
                               round(time.perf_counter() - started, 3), ())  # fmt: skip
        return DistillResult(student, report)

    train = labelled_batches(data, inputs.specs, batch_size=batch_size, source="data")
    if not train.batches:
        raise ArgumentError("data", "is empty")
    x_all, y_all = _stack(train, inputs)
    if y_all is None and teacher is None:
        raise ArgumentError("data", "has no labels and there is no teacher: nothing to learn from")
    if y_all is None and loss_fn is None:
        notes.append("data has no labels: distillation loss only")
    n = int(x_all[0].shape[0])
    method = "distillation" if teacher is not None else "fine-tuning"
    gen = t.Generator().manual_seed(seed)
    opt = t.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(n / batch_size)
    total = max(epochs * steps_per_epoch, 1)
    sched = t.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    losses: list[float] = []
    was_training = student.training
    if teacher is not None:
        teacher_was = teacher.training
        teacher.eval()
    steps = 0
    try:
        with Progress(epochs, method, enabled=progress) as bar:
            for _epoch in range(epochs):
                student.train()
                order = t.randperm(n, generator=gen)
                total_loss, seen = 0.0, 0
                for idx in order.split(batch_size):
                    if len(idx) < 2 and n >= 2:
                        continue  # a batch of one breaks batch norm in train mode
                    xb = [x[idx] for x in x_all]
                    yb = None if y_all is None else y_all[idx]
                    s_out = flat_outputs(call(student, inputs, xb))
                    t_out = None
                    if teacher is not None:
                        with t.no_grad():
                            t_out = flat_outputs(call(teacher, inputs, xb))[0]
                    if loss_fn is not None:
                        loss = loss_fn(s_out[0], t_out, yb)
                    else:
                        loss = _kd_loss(s_out[0], t_out, yb, temperature, alpha)
                    if not bool(t.isfinite(loss)):
                        raise OptimizeError(f"the {method} loss became {float(loss)} at step {steps}: lower lr")
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                    steps += 1
                    total_loss += float(loss.detach()) * len(idx)
                    seen += len(idx)
                losses.append(total_loss / max(seen, 1))
                bar.advance()
    finally:
        student.train(was_training)
        student.zero_grad(set_to_none=True)
        if teacher is not None:
            teacher.train(teacher_was)
    after = score_module(student, inputs, evalset, reference=reference) if evalset else {}
    report = DistillReport(
        method=method, epochs=epochs, steps=steps, samples=n, batch_size=batch_size,
        temperature=float(temperature) if teacher is not None else None,
        alpha=float(alpha) if teacher is not None else None, lr=float(lr), losses=tuple(round(v, 6) for v in losses),
        before=_plain(before), after=_plain(after), teacher=_plain(teacher_scores),
        eval_samples=evalset.samples if evalset else 0, seconds=round(time.perf_counter() - started, 3), notes=tuple(notes),
    )  # fmt: skip
    return DistillResult(student, report)


def _plain(scores: Mapping[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in scores.items() if math.isfinite(v)}
