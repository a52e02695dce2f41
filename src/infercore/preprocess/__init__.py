"""Preprocessing: composable numpy steps that write into an ``out=`` buffer.

A ``Pipeline`` turns raw input (image bytes, arrays, strings) into model feeds in two halves:
``prepare(raw)`` (decode, resize, tokenize: whatever decides the shape) and ``fill(prepared, out)``
(the last pass, written straight into the caller's buffers: ``io.inputs[...]`` or a slot of a batch).
Attached to a ``Batcher`` (``Batcher(engine, preprocess=pipeline)``), callers submit raw input and
the batcher fills each request's slot of the bound batch directly.

    pipe = ImagePipeline([Decode(), Resize((224, 224)), Normalize(IMAGENET_MEAN, IMAGENET_STD), ToCHW()],
                         input="x")
    feeds = pipe(jpeg_bytes)                      # {"x": float32 [1, 3, 224, 224]}
    pipe.fill(pipe.prepare(jpeg_bytes), io.inputs)  # or straight into bound buffers

    text = TextPipeline(models.minilm_tokenizer(), buckets=(16, 32, 64, 128))
    feeds = text(["a sentence", "another one"])   # input_ids/attention_mask/token_type_ids int64 [2, 16]
"""

from __future__ import annotations

from .image import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CenterCrop,
    Decode,
    ImagePipeline,
    Letterbox,
    LetterboxInfo,
    Normalize,
    Resize,
    ToCHW,
    ToDType,
    center_crop,
    decode,
    hwc_to_chw,
    letterbox,
    normalize,
    resize,
    to_dtype,
)
from .pipeline import Pipeline, Prepared
from .text import TextPipeline

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CenterCrop",
    "Decode",
    "ImagePipeline",
    "Letterbox",
    "LetterboxInfo",
    "Normalize",
    "Pipeline",
    "Prepared",
    "Resize",
    "TextPipeline",
    "ToCHW",
    "ToDType",
    "center_crop",
    "decode",
    "hwc_to_chw",
    "letterbox",
    "normalize",
    "resize",
    "to_dtype",
]
