"""Feeds for every tool, by one set of rules: shapes, generated values, data files, backend specs.

``compare``, ``benchmark``, ``calibrate``, ``convert_fp16`` and the conformance kit take their inputs
from here, so that one model gets the same inputs, shapes and error messages from each of them::

    from infercore import inputs
    feeds, info = inputs.make_feeds(engine.inputs, shapes={"sequence": 128}, metadata=engine.metadata)
    feeds = inputs.load_feeds("data.npz", engine.inputs)       # .npz / .npy / a directory of them
    for batch in inputs.iter_batches("calib/", engine.inputs, batch_size=32): ...
    inputs.parse_backends("ort,openvino:bf16")                  # [BackendChoice('ort'), ...]

**Dynamic dimensions** take their size from the first rule that applies:

1. ``shapes``: an input's name maps to its whole shape, a dimension's symbolic name to its size
   (``{"x": (1, 3, 224, 224)}``, ``{"sequence": 128}``);
2. a given array (``values``, real data) fixes its input's shape;
3. a dimension whose symbolic name another input already sized takes that size (without names: an
   input with the same declared shape as one already sized takes its sizes);
4. a batch dimension (the dynamic ones named like ``*batch*``, else those named ``N``/``B``/``bs``,
   else a dynamic dimension 0) takes ``batch`` (default 1);
5. the samples dimension of a signal (the last dimension of a 2-d float input, audio) takes
   at least ``SIGNAL_SIZE`` = 512: speech front ends (STFT, strided convolutions) refuse 64 samples;
6. any other dynamic dimension takes ``dynamic_size`` (default ``DYNAMIC_SIZE`` = 64, a multiple
   of 32 as detection backbones need), and ``InputInfo.source`` says so.

**Generated values** (``seed``-reproducible) stay within each input's spec:

- floats: uniform in [-1, 1) (``distribution="normal"``: N(0, 1));
- integers, by the input's name: ``*mask*`` all ones; ``*type_id*``/``*segment*`` zeros;
  ``*position*`` 0, 1, 2... along the last axis; sample rates (``sr``, ``*sample_rate*``,
  ``*sampling_rate*``) ``SAMPLE_RATE`` = 16000; token ids (``*id*``/``*token*``) in
  [0, vocab) when the model's metadata has a ``*vocab_size`` key; 8-bit integers over their whole
  range (quantized images); any other integer in [0, 100);
- booleans: random; strings: random lowercase words;
- ``ranges`` (``{"x": (0, 255)}``, integers: high excluded) or the model's metadata key
  ``infercore.input_range.NAME = "lo:hi"`` override the value range of any numeric input;
- 0-d inputs stay 0-d.

**Given values** keep their values: a plain number fills the whole tensor (``{"sr": 16000}``); an
array of another dtype of the same kind (float64 for float32) is cast only when every value
survives the cast; another kind (float for int) is refused. Every refusal is an
``InputSpecError`` naming the tensor, the expected and the given.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import ArgumentError
from ..specs import normalize_precision
from .data import (
    LABEL_KEYS,
    Data,
    LabelledBatches,
    iter_batches,
    labelled_batches,
    load_arrays,
    load_feeds,
    model_inputs,
    name_feeds,
    read_data,
    rows,
)
from .feeds import (
    DYNAMIC_SIZE,
    SAMPLE_RATE,
    SIGNAL_SIZE,
    Feeds,
    InputInfo,
    as_feed,
    generate,
    is_batch_axis,
    is_signal_axis,
    make_feeds,
    resolve_shapes,
)

__all__ = [
    "DYNAMIC_SIZE",
    "LABEL_KEYS",
    "SAMPLE_RATE",
    "SIGNAL_SIZE",
    "BackendChoice",
    "Data",
    "Feeds",
    "InputInfo",
    "LabelledBatches",
    "as_feed",
    "default_backends",
    "generate",
    "is_batch_axis",
    "is_signal_axis",
    "iter_batches",
    "labelled_batches",
    "load_arrays",
    "load_feeds",
    "make_feeds",
    "model_inputs",
    "name_feeds",
    "parse_backend",
    "parse_backends",
    "read_data",
    "resolve_shapes",
    "rows",
]


# -- backend specs ------------------------------------------------------------------------------
@dataclass(frozen=True)
class BackendChoice:
    """One backend a tool should run, with the precision asked of it (``"openvino:bf16"``)."""

    name: str
    precision: str | None = None

    @property
    def label(self) -> str:
        return self.name if self.precision is None else f"{self.name}:{self.precision}"

    def __str__(self) -> str:
        return self.label


def parse_backend(text: str, parameter: str = "backends") -> BackendChoice:
    """``"openvino:bf16"`` -> ``BackendChoice("openvino", "bf16")``; the name must be registered."""
    from ..plugins import registry

    name, _, precision = str(text).strip().partition(":")
    name = name.strip()
    if not name:
        raise ArgumentError(parameter, f"empty backend name in {text!r}")
    registry.get(name)  # UnknownBackendError, listing the registered names
    return BackendChoice(name, normalize_precision(precision, parameter) if precision.strip() else None)


def parse_backends(
    backends: str | Sequence[str],
    *,
    precisions: str | Sequence[str | None] | None = None,
    parameter: str = "backends",
) -> list[BackendChoice]:
    """Backend specs from a list or a comma-separated string (``"ort,openvino:bf16"``).

    An entry without its own precision runs once per entry of ``precisions`` (default: the
    backend's own). The same backend and precision twice is refused.
    """
    items = [backends] if isinstance(backends, str) else list(backends)
    texts = [part for item in items for part in str(item).split(",") if part.strip()]
    if not texts:
        raise ArgumentError(parameter, f"expected at least one backend name, got {backends!r}")
    if precisions is None or isinstance(precisions, str):
        default: list[str | None] = [p for p in (precisions or "").split(",") if p.strip()] or [None]
    else:
        default = list(precisions) or [None]
    default = [normalize_precision(p, "precision") for p in default]
    out: list[BackendChoice] = []
    for text in texts:
        choice = parse_backend(text, parameter)
        out += [choice] if choice.precision is not None else [BackendChoice(choice.name, p) for p in default]
    labels = [c.label for c in out]
    twice = sorted({x for x in labels if labels.count(x) > 1})
    if twice:
        raise ArgumentError(parameter, f"{', '.join(twice)} named twice in {labels}")
    return out


def default_backends(model: str | os.PathLike[str]) -> list[str]:
    """Every installed backend that reads ``model``'s file type, best first (the ``reference``
    oracle and other negative-priority backends only when asked by name). Raises the registry's
    error, naming why each candidate is unavailable, when there is none."""
    from ..plugins import registry

    path = Path(model)
    names = [
        r.name for r in registry.candidates(path) if r.priority >= 0 and registry.probe(r.name).available
    ]
    if not names:
        registry.pick(path)  # raises UnknownBackendError / BackendUnavailableError saying why
    return names

