"""The span conventions every span head, loss, metric and decoder shares: the
logit of a masked span, the padding of span-list labels, and which label rows
are spans."""

from __future__ import annotations

import numpy as np

from keras_tricks import _numerics
from keras_tricks._typing import Tensor

#: The logit the span heads give every impossible span (padding at either
#: end, and end < start with `tril_mask`): -8192.0 in every float type. It is
#: exact in float16, bfloat16, float32 and float64, `exp()` of it is 0 in all
#: of them, and consumers recognise it by exact equality, so a real span
#: scored at -5000 still gets its loss. See `keras_tricks._numerics.mask_value`
#: for the derivation.
MASK_VALUE: float = _numerics.mask_value("float32")

#: Value that pads the span lists of `SparseGlobalPointerCrossentropy`
#: (any row with a negative start or end is padding).
SPAN_PADDING: int = -1

#: The two padding conventions of span-list labels.
#: `-1` (ours): rows with a negative start or end are padding, and the span
#: (0, 0) is a real one-token entity at position 0.
#: `"bert4keras"`: rows are padded with (0, 0), and the span (0, 0) is
#: dropped (it is the [CLS] position in bert4keras's data, never an entity).
PADDINGS: tuple[int | str, ...] = (SPAN_PADDING, "bert4keras")


def check_padding(padding: int | str) -> int | str:
    """The `padding` argument of the sparse span losses and metrics."""
    if isinstance(padding, (bool, np.bool_)) or padding not in PADDINGS:
        raise ValueError(
            f"`padding` must be {SPAN_PADDING} (rows with a negative start or end "
            "are padding) or 'bert4keras' (rows are padded with (0, 0) and the span "
            f"(0, 0) is dropped), got {padding!r}."
        )
    return SPAN_PADDING if not isinstance(padding, str) else padding


def valid_span_rows(
    y_true: Tensor, n: int | Tensor, padding: int | str = SPAN_PADDING, tril_mask: bool = True
) -> Tensor:
    """Boolean `(..., max_spans)`: which (start, end) rows are spans.

    The one definition shared by the sparse loss and the sparse metrics: a
    row is a span when `0 <= start <= end < n`; padding rows (negative, or
    (0, 0) under `padding="bert4keras"`), reversed rows (end < start: no
    GlobalPointer span, which the layers mask) and rows outside the sequence
    are not, and are ignored by both. With `tril_mask=False` (labels of a
    head built with `tril_mask=False`, such as GPLinker's link heads, whose
    rows are (subject position, object position) pairs in either order) a
    reversed row is a pair like any other: `0 <= start, end < n`.
    """
    start, end = y_true[..., 0], y_true[..., 1]
    valid = (start >= 0) & (end >= 0) & (end < n) & (start < n)
    if tril_mask:
        valid = valid & (end >= start)
    if padding == "bert4keras":
        valid = valid & ((start > 0) | (end > 0))
    return valid
