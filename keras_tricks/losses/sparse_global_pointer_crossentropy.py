import keras
from keras import ops

from keras_tricks.losses.global_pointer_crossentropy import (
    check_span_scores,
    span_crossentropy,
)

#: Value that pads the span lists of `SparseGlobalPointerCrossentropy`
#: (any row with a negative start or end is padding).
SPAN_PADDING = -1


def sparse_spans_to_dense(y_true, n):
    """`(batch, heads, max_spans, 2)` (start, end) rows -> float32 dense labels
    `(batch, heads, n, n)`. Padding rows (a negative start or end) and rows
    out of range are dropped; duplicate rows count once."""
    y_true = ops.cast(y_true, "int32")
    shape = ops.shape(y_true)
    rows_count = shape[0] * shape[1]
    spans = ops.reshape(y_true, (rows_count, -1, 2))
    start, end = spans[..., 0], spans[..., 1]
    valid = (start >= 0) & (end >= 0) & (start < n) & (end < n)
    # Invalid rows go to a spare column n*n, cut off afterwards.
    col = ops.where(valid, start * n + end, n * n)
    row = ops.broadcast_to(ops.arange(rows_count, dtype="int32")[:, None], ops.shape(col))
    indices = ops.reshape(ops.stack([row, col], axis=-1), (-1, 2))
    ones = ops.ones(ops.shape(indices)[:1], dtype="float32")
    counts = ops.scatter(indices, ones, (rows_count, n * n + 1))[:, : n * n]
    dense = ops.cast(counts > 0, "float32")
    return ops.reshape(dense, (shape[0], shape[1], n, n))


@keras.saving.register_keras_serializable(package="keras_tricks")
class SparseGlobalPointerCrossentropy(keras.losses.Loss):
    """`GlobalPointerCrossentropy` with span lists instead of dense labels.

    Labels are `(batch, heads, max_spans, 2)` integer (start, end) pairs,
    `end` inclusive, padded with `SPAN_PADDING` (-1): a few bytes per entity
    instead of heads * n * n floats per sample in the input pipeline. The
    value is that of `GlobalPointerCrossentropy` on the same spans (same
    reduction: mean over types per sample, then the Keras `reduction`).

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
    once (as in dense labels); padding rows and rows outside [0, n) are
    ignored.

    Args:
        name, reduction, dtype: as `keras.losses.Loss`.

    Example:
    >>> import numpy as np, keras_tricks
    >>> y_true = np.array([[[[0, 1], [2, 2], [-1, -1]]]])   # 2 spans, 1 pad
    >>> y_pred = np.random.default_rng(0).normal(size=(1, 1, 3, 3))
    >>> loss = keras_tricks.losses.SparseGlobalPointerCrossentropy()(y_true, y_pred)
    """

    def __init__(self, name="sparse_global_pointer_crossentropy",
                 reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        check_span_scores(y_pred)
        if len(y_true.shape) != 4 or (y_true.shape[-1] not in (None, 2)):
            raise ValueError(
                "`y_true` must have shape (batch, heads, max_spans, 2) of (start, "
                f"end) pairs padded with {SPAN_PADDING}, got {tuple(y_true.shape)}."
            )
        dense = sparse_spans_to_dense(y_true, ops.shape(y_pred)[-1])
        return span_crossentropy(dense, y_pred)
