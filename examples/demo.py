"""infercore demo: a real text detector (PP-OCRv4, from the rapidocr-onnxruntime wheel) on a
rendered text image, through every installed backend that reads ONNX, with timings.

    python examples/demo.py
"""

from __future__ import annotations

import statistics
import time

import numpy as np

import infercore as ic
from infercore.testing import models


def preprocess(img: np.ndarray) -> np.ndarray:
    """HWC uint8 RGB -> NCHW float32 in [-1, 1], PP-OCR's normalisation."""
    x = (img.astype(np.float32) / 255.0 - 0.5) / 0.5
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def text_boxes(prob: np.ndarray, thresh: float = 0.3) -> list[tuple[int, int, int, int]]:
    """Bounding boxes (x0, y0, x1, y1) of the text lines: row bands, then column runs in each band."""
    mask = prob > thresh
    boxes = []
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return boxes
    bands = np.split(rows, np.flatnonzero(np.diff(rows) > 1) + 1)
    for band in bands:
        cols = np.flatnonzero(mask[band[0] : band[-1] + 1].any(axis=0))
        for run in np.split(cols, np.flatnonzero(np.diff(cols) > 8) + 1):
            boxes.append((int(run[0]), int(band[0]), int(run[-1]), int(band[-1])))
    return boxes


def median_ms(fn, n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        fn()
        times.append((time.perf_counter_ns() - t0) / 1e6)
    return statistics.median(times)


def main() -> None:
    print(f"infercore {ic.__version__}")
    for name, info in ic.available_backends().items():
        state = f"{info.version}" if info.available else f"unavailable ({(info.reason or '')[:60]}...)"
        print(f"  backend {name:<10} {state}")
    path = models.ppocr_det()
    img = models.text_image("infercore runs models fast", height=96, width=640)
    x = preprocess(img)
    print(f"\nmodel: {path.name} ({path.stat().st_size / 1e6:.1f} MB, from the rapidocr-onnxruntime wheel)")
    print(f"input: a {img.shape[1]}x{img.shape[0]} image rendered with Pillow -> {x.dtype} {list(x.shape)}\n")

    reference = None
    for backend in ("ort", "openvino"):
        info = ic.available_backends().get(backend)
        if info is None or not info.available:
            continue
        with ic.load(path, backend=backend, threads=2) as eng:
            out = eng.run({"x": x})
            prob = next(iter(out.values()))[0, 0]
            boxes = text_boxes(prob)
            t_run = median_ms(lambda eng=eng: eng.run({"x": x}), 20)
            with eng.bind({"x": x.shape}) as io:
                io.inputs["x"][...] = x  # written straight into memory the runtime reads
                t_bound = median_ms(io.run, 20)
                same = np.allclose(next(iter(io.outputs.values())), next(iter(out.values())), atol=1e-5)
            print(f"[{backend}] {eng.inputs[0]}")
            print(f"  text lines found: {len(boxes)}  boxes (x0, y0, x1, y1): {boxes}")
            print(f"  max text probability {prob.max():.3f}; text pixels {100 * (prob > 0.3).mean():.1f}%")
            print(f"  run(): {t_run:.2f} ms   bound io.run(): {t_bound:.2f} ms (median of 20)   bound == run: {same}")
            if reference is None:
                reference = prob
            else:
                print(f"  max |difference| vs ort: {np.abs(prob - reference).max():.2e}")
    print("\nThe same Engine API ran on each backend; see README.md for more.")


if __name__ == "__main__":
    main()
