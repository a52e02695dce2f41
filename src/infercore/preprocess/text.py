"""Text preprocessing with the ``tokenizers`` library and a model's own ``tokenizer.json``.

``TextPipeline`` tokenizes at ``prepare`` (truncating to ``max_length``) and pads every request to
the smallest bucket that holds its longest text, so a batcher sees a handful of shapes (one per
bucket) instead of one per length. ``fill`` writes ``input_ids``, ``attention_mask`` (1 on tokens,
0 on padding) and ``token_type_ids`` as int64 straight into the given buffers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import ArgumentError, InputSpecError, ModelLoadError
from ..optional import require
from .pipeline import Pipeline, Prepared

__all__ = ["TextPipeline"]


class TextPipeline(Pipeline):
    """Strings -> ``input_ids``/``attention_mask``/``token_type_ids`` int64 ``[n, bucket]``.

    ``tokenizer``: a ``tokenizer.json`` path or a ``tokenizers.Tokenizer`` (copied; the original is
    not changed). ``buckets``: padded lengths, ascending; ``()`` pads to the longest text of the
    request. ``max_length`` (default the largest bucket): longer texts are truncated, special tokens
    kept; it must hold at least the special tokens the tokenizer adds to a pair ([CLS] a [SEP] b
    [SEP]: 3 for BERT). Raw input: a string, a (text, pair) tuple, or a list of these. Set ``token_type_ids=None``
    for models without that input; rename inputs with the keyword arguments.
    """

    def __init__(
        self,
        tokenizer: str | os.PathLike[str] | Any,
        *,
        buckets: Sequence[int] = (16, 32, 64, 128),
        max_length: int | None = None,
        input_ids: str = "input_ids",
        attention_mask: str | None = "attention_mask",
        token_type_ids: str | None = "token_type_ids",
        add_special_tokens: bool = True,
    ) -> None:
        tk = require("tokenizers", "text")
        if isinstance(tokenizer, (str, os.PathLike)):
            path = os.fspath(tokenizer)
            if not os.path.isfile(path):
                raise ModelLoadError(f"tokenizer file not found: {path!r}", path=path)
            try:
                tok = tk.Tokenizer.from_file(path)
            except Exception as e:  # tokenizers raises a bare Exception
                raise ModelLoadError(
                    f"could not load tokenizer {path!r} (a tokenizer.json is expected): {e}", path=path
                ) from e
        elif isinstance(tokenizer, tk.Tokenizer):
            tok = tk.Tokenizer.from_str(tokenizer.to_str())
        else:
            raise ArgumentError(
                "tokenizer",
                f"expected a tokenizer.json path or a tokenizers.Tokenizer, got {tokenizer!r}"
            )
        if any(isinstance(b, bool) or not isinstance(b, (int, np.integer)) for b in buckets):
            raise ArgumentError("buckets", f"expected ints, got {tuple(buckets)!r}")
        self.buckets = tuple(sorted(int(b) for b in buckets))
        if any(b < 1 for b in self.buckets):
            raise ArgumentError("buckets", f"expected positive lengths, got {buckets}")
        if max_length is None:
            max_length = self.buckets[-1] if self.buckets else None
        elif isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)):
            raise ArgumentError("max_length", f"expected an int, got {max_length!r}")
        elif self.buckets and max_length > self.buckets[-1]:
            raise ArgumentError("max_length", f"{max_length} exceeds the largest bucket {self.buckets[-1]}")
        self.specials = (
            (tok.num_special_tokens_to_add(False), tok.num_special_tokens_to_add(True))
            if add_special_tokens
            else (0, 0)
        )
        if max_length is not None and max_length < max(1, self.specials[1]):
            raise ArgumentError(
                "max_length",
                f"{max_length} leaves no room: the tokenizer adds {self.specials[0]} special "
                f"tokens to a text and {self.specials[1]} to a pair, so max_length must be at least "
                f"{max(1, self.specials[1])}"
            )
        self.max_length = None if max_length is None else int(max_length)
        padding = tok.padding or {}
        self.pad_id = int(padding.get("pad_id", tok.token_to_id("[PAD]") or 0))
        self.pad_type_id = int(padding.get("pad_type_id", 0))
        tok.no_padding()
        if self.max_length is not None:
            tok.enable_truncation(self.max_length)
        else:
            tok.no_truncation()
        self.tokenizer = tok
        self.add_special_tokens = add_special_tokens
        self._names = (input_ids, attention_mask, token_type_ids)
        self.inputs = tuple(n for n in self._names if n is not None)
        self.dtypes = {n: np.dtype(np.int64) for n in self.inputs}

    def prepare(self, raw: Any) -> Prepared:
        if isinstance(raw, (str, tuple)):
            items: list[Any] = [raw]
        elif isinstance(raw, Sequence) and not isinstance(raw, (bytes, bytearray)):
            items = list(raw)
        else:
            raise InputSpecError(
                f"input {self.inputs[0]!r}: a text pipeline takes a string or a list of strings, got "
                f"{type(raw).__name__}",
                tensor=self.inputs[0],
            )
        if not items:
            raise InputSpecError(f"input {self.inputs[0]!r}: no texts given", tensor=self.inputs[0])
        for t in items:
            if not isinstance(t, str) and not (
                isinstance(t, tuple) and len(t) == 2 and all(isinstance(s, str) for s in t)
            ):
                raise InputSpecError(
                    f"input {self.inputs[0]!r}: expected str or (str, str), got {type(t).__name__}",
                    tensor=self.inputs[0],
                )
        tok = self.tokenizer
        if len(items) == 1:
            one = items[0]
            enc = [
                tok.encode(*one, add_special_tokens=self.add_special_tokens)
                if isinstance(one, tuple)
                else tok.encode(one, add_special_tokens=self.add_special_tokens)
            ]
        else:
            enc = tok.encode_batch(items, add_special_tokens=self.add_special_tokens)
        longest = max(len(e.ids) for e in enc)
        length = next((b for b in self.buckets if b >= longest), longest)
        shape = (len(enc), length)
        return Prepared({n: shape for n in self.inputs}, enc)

    def fill(self, prepared: Prepared, out: Mapping[str, np.ndarray]) -> None:
        n_ids, n_mask, n_types = self._names
        ids = out[n_ids]
        mask = out[n_mask] if n_mask is not None else None
        types = out[n_types] if n_types is not None else None
        for i, e in enumerate(prepared.data):
            k = len(e.ids)
            ids[i, :k] = e.ids
            ids[i, k:] = self.pad_id
            if mask is not None:
                mask[i, :k] = 1
                mask[i, k:] = 0
            if types is not None:
                types[i, :k] = e.type_ids
                types[i, k:] = self.pad_type_id
