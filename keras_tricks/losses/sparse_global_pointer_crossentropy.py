from __future__ import annotations

import warnings
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_tricks import _validation
from keras_tricks._typing import DTypeLike, Tensor
from keras_tricks.losses.global_pointer_crossentropy import (
    check_span_scores,
    span_crossentropy,
)
from keras_tricks.spans.conventions import SPAN_PADDING, check_padding
from keras_tricks.spans.labels import sparse_spans_to_dense


def _warn_if_bert4keras_padded(y_true: Tensor) -> None:
    """Under the default padding, a span list in which (0, 0) occurs more than
    once can only be bert4keras-style padding. Checked where the labels are
    concrete (eager calls, NumPy labels); a traced step cannot warn."""
    try:
        arr = np.asarray(keras.ops.convert_to_numpy(y_true))
    except Exception:  # a symbolic tensor inside a traced step
        return
    zero = (arr[..., 0] == 0) & (arr[..., 1] == 0)
    if arr.size and (zero.sum(axis=-1) > 1).any():
        warnings.warn(
            "Span labels list (0, 0) more than once in one row: that is "
            "bert4keras's padding, which the default `padding=-1` reads as a real "
            "span at position 0. Pass `padding='bert4keras'` (or pad with -1).",
            stacklevel=3,
        )


def check_sparse_labels(y_true: Tensor, y_pred: Tensor) -> None:
    """ValueError unless `y_true` is `(batch, heads, max_spans, 2)` span lists
    matching the batch and heads of the `(batch, heads, n, n)` scores."""
    true_shape, pred_shape = tuple(y_true.shape), tuple(y_pred.shape)
    mismatch = len(true_shape) != 4 or true_shape[-1] not in (None, 2)
    if not mismatch:
        mismatch = any(
            a is not None and b is not None and a != b for a, b in zip(true_shape[:2], pred_shape[:2])
        )
    if mismatch:
        raise ValueError(
            "`y_true` must be span lists of shape (batch, heads, max_spans, 2) with "
            f"the batch and heads of `y_pred` {pred_shape}, got {true_shape}."
        )


@keras.saving.register_keras_serializable(package="keras_tricks")
class SparseGlobalPointerCrossentropy(keras.losses.Loss):
    """`GlobalPointerCrossentropy` with span lists instead of dense labels.

    Labels are `(batch, heads, max_spans, 2)` integer (start, end) pairs,
    `end` inclusive: a few bytes per entity instead of heads * n * n floats
    per sample in the input pipeline. The value is that of
    `GlobalPointerCrossentropy` on the same spans (same reduction: mean over
    types per sample, then the Keras `reduction`).

    Padding. By default rows are padded with `SPAN_PADDING` (-1: a row with
    a negative start or end is padding) and (0, 0) is a real span.
    `padding="bert4keras"` reads bert4keras's labels, padded with (0, 0),
    whose span (0, 0) (the [CLS] position there) is dropped. Since the
    default would silently take bert4keras padding for entities at position
    0, a label array listing (0, 0) more than once in a row warns when the
    labels are concrete (eager calls). Reversed rows (end < start) and rows
    outside [0, n) are ignored, by the loss and by the sparse `SpanF1` /
    `SpanPrecision` / `SpanRecall` alike (`valid_span_rows`).

    Why not bert4keras's `sparse_multilabel_categorical_crossentropy`: it
    gets the negative term as log(sum_all - sum_pos) through
    `all + log(1 - exp(log(sum_pos) - all))`, which cancels catastrophically
    once the positives dominate (a confident model) and returns NaN, -inf or a
    negative loss (bert4keras issues #436, #500). Here the positive spans are
    scattered into a boolean span mask inside the loss (a temporary of the
    size of the logits, which exist anyway), and both sums are taken directly
    over their own spans with a max-shifted log-sum-exp: no subtraction of
    sums, hence no cancellation; the loss is >= 0, finite, with finite
    gradients for any finite logits, in every dtype. Duplicate spans count
    once (as in dense labels).

    Heads without the lower-triangle mask. GPLinker's link heads
    (`GlobalPointer(..., tril_mask=False)`) score ordered pairs of positions
    (i, j) in both orders, so a row with end < start is a label there, not a
    reversed span: pass `tril_mask=False` (the same flag as the head's) and
    such rows count; with the default they are ignored, as above.

    Args:
        padding: -1 (default) or "bert4keras", as above.
        tril_mask: True (default) for heads that mask end < start; False for
            heads built with `tril_mask=False` (rows in either order count).
        name, reduction, dtype: as `keras.losses.Loss`.

    Shapes: `y_true` `(batch, heads, max_spans, 2)` integers, `y_pred`
    `(batch, heads, n, n)` logits; a mismatch of batch or heads raises a
    `ValueError` naming both shapes. Per-sample loss: `(batch,)`.

    Examples:
    >>> import numpy as np, keras_tricks
    >>> y_true = np.array([[[[0, 1], [2, 2], [-1, -1]]]])   # 2 spans, 1 pad
    >>> y_pred = np.random.default_rng(0).normal(size=(1, 1, 3, 3))
    >>> loss = keras_tricks.losses.SparseGlobalPointerCrossentropy()(y_true, y_pred)
    """

    def __init__(
        self,
        padding: int | str = SPAN_PADDING,
        tril_mask: bool = True,
        name: str = "sparse_global_pointer_crossentropy",
        reduction: str | None = "sum_over_batch_size",
        dtype: DTypeLike = None,
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.padding = check_padding(padding)
        self.tril_mask = _validation.check_bool("tril_mask", tril_mask)

    def call(self, y_true: Tensor, y_pred: Tensor) -> Tensor:
        check_span_scores(y_pred)
        check_sparse_labels(y_true, y_pred)
        if self.padding == SPAN_PADDING:
            _warn_if_bert4keras_padded(y_true)
        dense = sparse_spans_to_dense(y_true, ops.shape(y_pred)[-1], self.padding, self.tril_mask)
        # Reshaping to the scores' shape makes a batch or heads mismatch that
        # only shows at run time fail loudly instead of broadcasting.
        dense = ops.reshape(dense, ops.shape(y_pred))
        return span_crossentropy(dense, y_pred)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["padding"] = self.padding
        config["tril_mask"] = self.tril_mask
        return config
