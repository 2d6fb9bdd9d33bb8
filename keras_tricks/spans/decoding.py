"""Host-side decoding of span scores."""

from __future__ import annotations

import numpy as np
from keras import ops

from keras_tricks import _validation
from keras_tricks._typing import Tensor
from keras_tricks.spans.conventions import MASK_VALUE


def decode_spans(scores: Tensor, threshold: float = 0.0, max_span_length: int | None = None) -> np.ndarray:
    """Spans predicted by GlobalPointer-style scores: every (i, j, type) with
    score > `threshold` (and, if `max_span_length` is given, at most that many
    tokens long), nested and overlapping spans included.

    GlobalPointer scores each span independently, so decoding is a plain
    threshold (Su 2021, https://kexue.fm/archives/8373); no Viterbi, and
    spans may nest or overlap. Masked spans (padding, end < start) carry
    `keras_tricks.spans.MASK_VALUE` (-8192) and are never returned,
    whatever `threshold` (it must be above that level).

    Args:
        scores: `(batch, heads, seq_len, seq_len)` logits (any backend tensor
            or NumPy array), e.g. `model.predict(...)` of a model ending in
            `GlobalPointer` / `EfficientGlobalPointer`.
        threshold: a finite float; spans with score > threshold are returned
            (0 for logits trained with the GlobalPointer losses).
        max_span_length: None (no limit) or a positive int (Python or
            NumPy): spans with `end - start + 1 > max_span_length` are
            dropped. A model scores span lengths it never saw in training
            (longer than its training sentences, or than any training
            entity) without any evidence; this bounds what it may return.

    Returns:
        An int64 NumPy array `(num_spans, 4)` of `(batch_index, type, start,
        end)` rows, `end` inclusive, sorted by batch, type, start, end. This is
        a post-processing function (it runs on the host, outside a model).

    Examples:
    >>> import numpy as np
    >>> s = np.full((1, 2, 3, 3), -5.0)
    >>> s[0, 1, 0, 2] = s[0, 1, 1, 1] = 3.0   # nested spans of type 1
    >>> decode_spans(s).tolist()
    [[0, 1, 0, 2], [0, 1, 1, 1]]
    >>> decode_spans(s, max_span_length=2).tolist()   # (0, 2) is 3 tokens long
    [[0, 1, 1, 1]]
    """
    max_span_length = _validation.check_int("max_span_length", max_span_length, minimum=1, allow_none=True)
    try:
        threshold = float(threshold)
    except (TypeError, ValueError):
        raise TypeError(f"`threshold` must be a float, got {threshold!r}.") from None
    if not np.isfinite(threshold) or threshold <= MASK_VALUE:
        raise ValueError(
            f"`threshold` must be finite and above the masking value {MASK_VALUE}, got {threshold}."
        )
    if not isinstance(scores, np.ndarray):
        scores = ops.convert_to_tensor(scores)
        scores = ops.convert_to_numpy(ops.cast(scores, "float32"))
    scores = np.asarray(scores)
    if scores.ndim != 4 or scores.shape[-1] != scores.shape[-2]:
        raise ValueError(f"`scores` must have shape (batch, heads, seq_len, seq_len), got {scores.shape}.")
    spans = np.argwhere(scores > threshold).astype(np.int64).reshape(-1, 4)
    if max_span_length is not None:
        spans = spans[spans[:, 3] - spans[:, 2] + 1 <= max_span_length]
    return spans
