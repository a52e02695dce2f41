"""INT8 calibration on TensorRT 10, the fallback path: TensorRT 11 removed implicit quantization.

On 11 (and for strongly typed networks) INT8 is a Q/DQ ONNX from ``ic.calibrate()`` instead, and
this module is never used.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import ModuleType
from typing import Any

import numpy as np

from ...errors import InputSpecError
from . import cuda
from .specs import numpy_dtype


def make_calibrator(
    trt: ModuleType,
    feeds: list[dict[str, np.ndarray]],
    network: Any,
    profile: Mapping[str, tuple[tuple[int, ...], ...]],
) -> Any:
    """A TensorRT 10 entropy calibrator fed batch by batch from device buffers.

    TensorRT reads each batch at the calibration profile's ``opt`` shape in the network's input
    type, so every feed is checked (and safely cast) first. An exception inside ``get_batch`` is
    kept in ``error`` as ``(index, exception)``: TensorRT would swallow it.
    """
    tensors = [network.get_input(i) for i in range(network.num_inputs)]
    want = {
        t.name: (
            numpy_dtype(trt, t.dtype, t.name),
            tuple(profile[t.name][1]) if t.name in profile else tuple(int(d) for d in t.shape),
        )
        for t in tensors
    }
    checked = [_check_calibration_feed(i, f, want) for i, f in enumerate(feeds)]

    class _Calibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[name-defined]
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.batches = iter(enumerate(checked))
            self.buffers: dict[str, cuda.DeviceBuffer] = {}
            self.cache: bytes | None = None
            self.error: tuple[int, BaseException] | None = None

        def get_batch_size(self) -> int:
            return 1  # explicit-batch networks: the batch is in the shapes

        def get_batch(self, names: list[str]) -> list[int] | None:
            index, batch = next(self.batches, (len(checked), None))
            if batch is None or self.error is not None:
                return None
            try:
                ptrs = []
                for name in names:
                    host = batch[name]
                    buf = self.buffers.get(name)
                    if buf is None or buf.nbytes < host.nbytes:
                        buf = self.buffers[name] = cuda.DeviceBuffer(host.nbytes)
                    rt = cuda.runtime()
                    kind = rt.cudaMemcpyKind.cudaMemcpyHostToDevice
                    cuda._check(rt, rt.cudaMemcpy(buf.ptr, host.ctypes.data, host.nbytes, kind), "cudaMemcpy")
                    ptrs.append(buf.ptr)
                return ptrs
            except BaseException as e:
                self.error = (index, e)
                return None

        def read_calibration_cache(self) -> bytes | None:
            return self.cache

        def write_calibration_cache(self, cache: Any) -> None:
            self.cache = bytes(memoryview(cache))

    return _Calibrator()


def _check_calibration_feed(
    index: int, feeds: Mapping[str, np.ndarray], want: Mapping[str, tuple[np.dtype, tuple[int, ...]]]
) -> dict[str, np.ndarray]:
    """One calibration batch as TensorRT will read it: every input, its dtype, the profile's opt shape."""
    missing = [n for n in want if n not in feeds]
    extra = [n for n in feeds if n not in want]
    if missing or extra:
        raise InputSpecError(
            f"calibration_data[{index}] has inputs {sorted(feeds)}; the network's inputs are {list(want)}"
            f"{f' (missing {missing})' if missing else ''}{f' (unknown {extra})' if extra else ''}",
            tensor=(missing or extra)[0],
        )
    out = {}
    for name, (dtype, shape) in want.items():
        a = np.asarray(feeds[name])
        if a.shape != shape:
            raise InputSpecError(
                f"calibration_data[{index}][{name!r}] has shape {a.shape}; TensorRT 10 calibrates at the "
                f"calibration profile's opt shape {shape}: give batches of exactly that shape, or build with "
                f"options={{'profiles': {{{name!r}: (min, opt, max)}}}} whose opt is your batch shape",
                tensor=name,
            )
        if a.dtype != dtype:
            if not (np.can_cast(a.dtype, dtype, "safe") or (a.dtype.kind == dtype.kind == "f")):
                raise InputSpecError(
                    f"calibration_data[{index}][{name!r}] is {a.dtype}; the network input is {dtype}, and "
                    f"{a.dtype} does not convert to it safely: pass {dtype} arrays",
                    tensor=name,
                )
            a = a.astype(dtype)
        out[name] = np.ascontiguousarray(a) if a.ndim else a  # keeps a 0-d input 0-d
    return out
