"""The ``Pipeline`` contract shared by image and text preprocessing (and the Batcher)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..buffers import aligned_empty
from ..errors import InputSpecError

if TYPE_CHECKING:
    from ..engine import BoundIO

__all__ = ["Pipeline", "Prepared"]


@dataclass
class Prepared:
    """What ``Pipeline.prepare`` made of one raw request.

    ``shapes``: input name -> the full shape ``fill`` writes (dimension 0 is the item count);
    ``data``: the pipeline's own intermediate (decoded images, token ids); ``meta``: per-item facts a
    caller may need to map results back (a letterbox's scale and padding).
    """

    shapes: dict[str, tuple[int, ...]]
    data: Any
    meta: list[Any] = field(default_factory=list)


class Pipeline(ABC):
    """Raw input -> model feeds. ``prepare`` decides shapes; ``fill`` writes into given buffers."""

    inputs: tuple[str, ...]
    dtypes: dict[str, np.dtype]

    @abstractmethod
    def prepare(self, raw: Any) -> Prepared:
        """Decode/tokenize one request (one item or a list of items); validate it; fix its shapes."""

    @abstractmethod
    def fill(self, prepared: Prepared, out: Mapping[str, np.ndarray]) -> None:
        """Write the prepared request into ``out[name]``, arrays of exactly ``prepared.shapes[name]``."""

    def __call__(self, raw: Any) -> dict[str, np.ndarray]:
        """Prepare and fill into new (aligned) arrays: feeds for ``Engine.run``."""
        prepared = self.prepare(raw)
        out = {name: aligned_empty(prepared.shapes[name], self.dtypes[name]) for name in self.inputs}
        self.fill(prepared, out)
        return out

    def into(self, raw: Any, io: BoundIO) -> Prepared:
        """Prepare and fill straight into bound inputs (their shapes must be the prepared ones)."""
        prepared = self.prepare(raw)
        for name in self.inputs:
            buf = io.inputs[name]
            if buf.shape != prepared.shapes[name]:
                raise InputSpecError(
                    f"input {name!r}: the pipeline produced shape {prepared.shapes[name]} but the bound buffer "
                    f"is {buf.shape}; bind the prepared shapes (pipeline.prepare(raw).shapes)",
                    tensor=name,
                )
        self.fill(prepared, io.inputs)
        return prepared
