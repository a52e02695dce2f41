"""``BatchPlan``: how requests map onto one batch's buffers.

It checks a model can be batched, checks each request against it and gives the request its shape
key (requests of one key share a batch; with ``pad``, requests that differ only along padded
dimensions share a key), copies a batch's requests once into an engine's bound inputs (padding
with zeros where needed) and hands each request its own slice of the outputs, cut back to its own
length along padded dimensions.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..engine import BoundIO, Engine
from ..errors import ArgumentError, BatchingError, InputSpecError
from ..specs import TensorSpec, format_shape, is_symbol
from .request import Request

if TYPE_CHECKING:
    from ..preprocess import Pipeline, Prepared

__all__ = ["BIND_CACHE", "BIND_CACHE_BYTES", "BatchPlan"]

BIND_CACHE = 128  # bound I/O kept per engine, least recently used dropped first
BIND_CACHE_BYTES = 128 << 20
"""Bytes of bound buffers kept per engine besides the newest: images of many sizes (PP-OCR det at
640-1088 px, 12 MB of buffers each) held 128 sizes, 1.5 GB per engine, by count alone."""


def _unnamed(spec: TensorSpec, axis: int) -> bool:
    """A dynamic dimension with no symbolic name (None, "?", onnxruntime's "unk__N"): see is_symbol."""
    return not is_symbol(spec.dim_names[axis] if axis < len(spec.dim_names) else None)


def _dim_key(spec: TensorSpec, axis: int) -> str:
    """What ties a dimension to others for padding: its symbolic name, or for an unnamed one the
    input and axis themselves (so it pads independently of every other)."""
    return f"{spec.name}[{axis}]" if _unnamed(spec, axis) else str(spec.dim_names[axis])


class BatchPlan:
    """The batch layout of one model, checked at construction (see the module docstring).

    ``engines``: every engine the batcher runs (they must agree on inputs and outputs);
    ``pad``: False, True or the dimension names requests may be padded along; ``preprocess``: a
    pipeline that fills the inputs, checked against them.
    """

    def __init__(
        self,
        engines: Sequence[Engine],
        max_batch_size: int,
        pad: bool | Iterable[str] = False,
        preprocess: Pipeline | None = None,
    ) -> None:
        self.engine = engines[0]
        self.inputs: tuple[TensorSpec, ...] = self.engine.inputs
        self.outputs: tuple[TensorSpec, ...] = self.engine.outputs
        self.input_names = tuple(s.name for s in self.inputs)
        self.max_batch_size = max_batch_size
        self.preprocess = preprocess
        self._check_model(engines)
        self.pad_dims = self._pad_plan(pad)
        self.crop = self._crop_plan()
        if preprocess is not None:
            self._check_pipeline(preprocess)

    # -- construction checks ---------------------------------------------------------------------
    def _check_model(self, engines: Sequence[Engine]) -> None:
        first = engines[0]
        for e in engines[1:]:
            if e.inputs != first.inputs or e.outputs != first.outputs:
                raise BatchingError("the engine factory made engines with different inputs/outputs")
        for spec in self.inputs:
            if spec.rank == 0:
                raise InputSpecError(
                    f"input {spec.name!r} is a scalar (shape []): it has no batch dimension, so requests cannot "
                    "be batched; call Engine.run directly",
                    tensor=spec.name,
                )
            if spec.dtype.hasobject:
                raise InputSpecError(
                    f"input {spec.name!r} is a string tensor: the batcher binds fixed-size buffers; "
                    "call Engine.run directly",
                    tensor=spec.name,
                )
            d0 = spec.shape[0]
            if d0 is not None and not (d0 == 1 and self.max_batch_size == 1):
                raise InputSpecError(
                    f"input {spec.name!r} has a fixed batch dimension: shape "
                    f"{format_shape(spec.shape, spec.dim_names)}; the batcher needs dimension 0 dynamic. "
                    "Re-export the model with a dynamic batch axis, or use max_batch_size=1",
                    tensor=spec.name,
                )

    def _pad_plan(self, pad: bool | Iterable[str]) -> dict[str, tuple[int, ...]]:
        """Input name -> the axes (>= 1) along which requests may be padded."""
        if pad is False:
            return {}
        if pad is True:
            return {s.name: tuple(i for i in range(1, s.rank) if s.shape[i] is None) for s in self.inputs}
        names = {pad} if isinstance(pad, str) else set(pad)
        plan: dict[str, tuple[int, ...]] = {}
        found: set[str] = set()
        for s in self.inputs:
            axes = tuple(i for i in range(1, s.rank) if s.shape[i] is None and s.dim_names[i] in names)
            found.update(s.dim_names[i] for i in axes)  # type: ignore[misc]
            plan[s.name] = axes
        missing = names - found
        if missing:
            dyn = sorted(
                {str(s.dim_names[i]) for s in self.inputs for i in range(1, s.rank) if s.shape[i] is None}
            )
            raise ArgumentError(
                "pad",
                f"names dimension(s) {sorted(missing)} that no input has as a dynamic non-batch dimension; "
                f"the model's are: {dyn or 'none'}",
            )
        return plan

    def _crop_plan(self) -> dict[str, tuple[tuple[int, str], ...]]:
        """Output name -> (axis, dim name) to cut back to each request's own length after padding.

        Padded axes pair up with output axes by dimension name. An unnamed padded axis matches no
        output axis, so if an output also has an unnamed dynamic axis the batcher could not tell
        whether to cut it back: that combination is refused rather than answered with padding.
        """
        keys = {_dim_key(self._spec(n), a) for n, axes in self.pad_dims.items() for a in axes}
        anonymous = sorted(
            _dim_key(self._spec(n), a) for n, axes in self.pad_dims.items() for a in axes if _unnamed(self._spec(n), a)
        )
        plan = {}
        for s in self.outputs:
            unnamed = [i for i in range(1, s.rank) if s.shape[i] is None and _unnamed(s, i)]
            if anonymous and unnamed:
                raise ArgumentError(
                    "pad",
                    f"would pad unnamed dimension(s) {', '.join(anonymous)}, and output {s.name!r} "
                    f"{format_shape(s.shape, s.dim_names)} has unnamed dynamic axes {unnamed}: the batcher "
                    "cannot tell which to cut back to each request's size. Batch without pad (requests of "
                    "different shapes then run in separate batches), or name the dimensions in the model",
                )
            axes = tuple((i, str(s.dim_names[i])) for i in range(1, s.rank) if s.dim_names[i] in keys)
            if axes:
                plan[s.name] = axes
        return plan

    def _spec(self, name: str) -> TensorSpec:
        return next(s for s in self.inputs if s.name == name)

    def _check_pipeline(self, pipeline: Pipeline) -> None:
        want = {s.name: s for s in self.inputs}
        given = set(pipeline.inputs)
        if given != set(want):
            raise InputSpecError(
                f"the pipeline fills {sorted(given)}, but the model's inputs are {sorted(want)}",
                tensor=sorted(set(want) ^ given)[0],
            )
        for name, dtype in pipeline.dtypes.items():
            if np.dtype(dtype) != want[name].dtype:
                raise InputSpecError(
                    f"input {name!r}: the pipeline produces {np.dtype(dtype)}, the model takes {want[name].dtype}; "
                    "add a dtype step to the pipeline",
                    tensor=name,
                )

    # -- a request ---------------------------------------------------------------------------
    def request(self, feeds: Any) -> Request:
        """A checked request of ``feeds`` (its items, shapes and shape key), not yet queued."""
        req = Request()
        pipeline = self.preprocess
        if pipeline is not None:
            prepared: Prepared = pipeline.prepare(feeds)
            shapes = prepared.shapes
            for spec in self.inputs:
                shape = shapes[spec.name]
                if not spec.accepts(shape):
                    raise InputSpecError(
                        f"input {spec.name!r}: the pipeline produced shape {shape}, the model takes "
                        f"{format_shape(spec.shape, spec.dim_names)}",
                        tensor=spec.name,
                    )
            req.prepared = prepared
            req.data = None
        else:
            checked = self.engine._check_feeds(feeds)
            shapes = {k: v.shape for k, v in checked.items()}
            req.prepared = None
            req.data = checked
        names = self.input_names
        n = -1
        for name in names:
            shape = shapes[name]
            if n < 0:
                n = shape[0]
            elif shape[0] != n:
                raise InputSpecError(
                    f"input {name!r} carries {shape[0]} items along dimension 0 but "
                    f"{names[0]!r} carries {n}; every input of a request needs the same batch size",
                    tensor=name,
                )
        if n < 1 or n > self.max_batch_size:
            raise InputSpecError(
                f"input {names[0]!r}: a request carries {n} items along dimension 0; it must carry "
                f"1..max_batch_size={self.max_batch_size}",
                tensor=names[0],
            )
        req.n = n
        req.shapes = shapes
        pad = self.pad_dims
        if pad:
            key = []
            dims: dict[str, int] = {}
            for name in names:
                rest = list(shapes[name][1:])
                for axis in pad[name]:
                    dim = _dim_key(self._spec(name), axis)  # unnamed axes pad independently
                    if dims.setdefault(dim, rest[axis - 1]) != rest[axis - 1]:
                        raise InputSpecError(
                            f"input {name!r}: dimension {dim!r} is {rest[axis - 1]} here but {dims[dim]} in "
                            "another input of the same request",
                            tensor=name,
                        )
                    rest[axis - 1] = -1
                key.append(tuple(rest))
            req.key = tuple(key)
            req.dims = dims
        else:
            req.key = tuple(shapes[name][1:] for name in names)
            req.dims = None
        return req

    def key_of(self, dims: Mapping[str, Sequence[int]]) -> tuple[Any, ...] | None:
        """The shape key of a request whose items have these shapes (``{input: dims after the
        batch axis}``, padded dimensions as ``request`` keys them); None when an input is missing."""
        if any(name not in dims for name in self.input_names):
            return None
        key = []
        for name in self.input_names:
            rest = [int(d) for d in dims[name]]
            for axis in self.pad_dims.get(name, ()):
                rest[axis - 1] = -1
            key.append(tuple(rest))
        return tuple(key)

    def sample(self, req: Request) -> dict[str, np.ndarray]:
        """The first item of ``req`` as arrays of its own (a pipeline's data filled into them)."""
        if req.data is not None:
            return {name: np.array(v[:1]) for name, v in req.data.items()}
        arrays = {s.name: np.zeros(req.shapes[s.name], s.dtype) for s in self.inputs}
        self.preprocess.fill(req.prepared, arrays)  # type: ignore[union-attr,arg-type]
        return {name: v[:1].copy() for name, v in arrays.items()}

    # -- a batch -----------------------------------------------------------------------------
    def run(
        self, engine: Engine, cache: OrderedDict[tuple[Any, ...], BoundIO], batch: list[Request], total: int
    ) -> list[dict[str, np.ndarray]]:
        """Run ``batch`` (``total`` items) on ``engine``, with its bound I/O from ``cache``; each
        request's outputs, as arrays its caller owns."""
        io, shapes = self._bound_io(engine, cache, batch, total)
        padded = self._fill(io, batch, shapes)
        io.run()
        return self._split(io, batch, total, padded)

    def _bound_io(
        self, engine: Engine, cache: OrderedDict[tuple[Any, ...], BoundIO], batch: list[Request], total: int
    ) -> tuple[BoundIO, dict[str, tuple[int, ...]]]:
        first = batch[0]
        if self.pad_dims and len(batch) > 1:
            shapes = {}
            for name in self.input_names:
                shape = list(first.shapes[name])
                for axis in self.pad_dims[name]:
                    shape[axis] = max(r.shapes[name][axis] for r in batch)
                shape[0] = total
                shapes[name] = tuple(shape)
        else:
            shapes = {name: (total, *first.shapes[name][1:]) for name in self.input_names}
        key = tuple(shapes.values())
        io = cache.get(key)
        if io is None:
            io = engine.bind(shapes)
            cache[key] = io
            held = sum(_held(v) for v in cache.values())  # outputs count once they ran
            while len(cache) > 1 and (len(cache) > BIND_CACHE or held > BIND_CACHE_BYTES):
                _, old = cache.popitem(last=False)
                held -= _held(old)
                old.close()
        else:
            cache.move_to_end(key)
        return io, shapes

    def _fill(self, io: BoundIO, batch: list[Request], shapes: dict[str, tuple[int, ...]]) -> bool:
        """Copy each request once into its slot of the bound inputs; True if any was padded."""
        bufs = io.inputs
        pipeline = self.preprocess
        padded = False
        off = 0
        for req in batch:
            n = req.n
            slots = {}
            for name in self.input_names:
                buf = bufs[name]
                shape = req.shapes[name]
                if shape[1:] == shapes[name][1:]:
                    slots[name] = buf[off : off + n]
                else:
                    padded = True
                    region = buf[off : off + n]
                    region[...] = 0
                    slots[name] = region[tuple(slice(0, d) for d in shape)]
            data = req.data
            if data is None:
                pipeline.fill(req.prepared, slots)  # type: ignore[union-attr,arg-type]
            else:
                for name, slot in slots.items():
                    slot[...] = data[name]
            off += n
        return padded

    def _split(self, io: BoundIO, batch: list[Request], total: int, padded: bool) -> list[dict[str, np.ndarray]]:
        outs = io.outputs
        for name, arr in outs.items():
            if arr.ndim == 0 or arr.shape[0] != total:
                raise BatchingError(
                    f"output {name!r} has shape {arr.shape} for a batch of {total} items: the batcher needs every "
                    "output to carry the batch along dimension 0"
                )
        results: list[dict[str, np.ndarray]] = []
        crop = self.crop if padded else None
        off = 0
        for req in batch:
            n = req.n
            res = {}
            for name, arr in outs.items():
                view = arr[off : off + n]
                if crop and name in crop:
                    index: list[slice] = [slice(None)] * arr.ndim
                    for axis, dim in crop[name]:
                        index[axis] = slice(0, req.dims[dim])  # type: ignore[index]
                    view = view[tuple(index)]
                res[name] = np.array(view, copy=True)
            results.append(res)
            off += n
        return results


def _held(io: BoundIO) -> int:
    """Bytes of the buffers a bound I/O holds."""
    return sum(a.nbytes for a in io.inputs.values()) + sum(a.nbytes for a in io.outputs.values())
