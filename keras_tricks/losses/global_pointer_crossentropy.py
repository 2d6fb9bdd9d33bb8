from __future__ import annotations

import keras
from keras import ops

from keras_tricks._typing import DTypeLike, Tensor
from keras_tricks.losses.multilabel_categorical_crossentropy import (
    multilabel_categorical_crossentropy,
)


def check_span_scores(y_pred: Tensor) -> None:
    """ValueError unless `y_pred` is GlobalPointer scores (batch, heads, n, n)."""
    if len(y_pred.shape) != 4:
        raise ValueError(f"`y_pred` must have shape (batch, heads, n, n), got {tuple(y_pred.shape)}.")


def check_dense_labels(y_true: Tensor, y_pred: Tensor, hint: str) -> None:
    """ValueError unless `y_true` has the shape of the `(batch, heads, n, n)`
    scores (axes unknown statically are not compared); `hint` says where span
    lists go instead."""
    if len(y_true.shape) != 4 or any(
        a is not None and b is not None and a != b for a, b in zip(y_true.shape, y_pred.shape)
    ):
        raise ValueError(
            "`y_true` must be dense span labels of the shape of `y_pred` "
            f"{tuple(y_pred.shape)}, got {tuple(y_true.shape)} ({hint})."
        )


def span_crossentropy(y_true: Tensor, y_pred: Tensor) -> Tensor:
    """Per-sample GlobalPointer loss from dense labels: the multi-label
    cross-entropy over the n*n spans of each type, averaged over types."""
    shape = ops.shape(y_pred)
    # The batch size, not -1: with an empty sequence the size is 0 and -1
    # would be ambiguous.
    flat = (shape[0], shape[1], shape[2] * shape[3])
    per_type = multilabel_categorical_crossentropy(ops.reshape(y_true, flat), ops.reshape(y_pred, flat))
    return ops.mean(per_type, axis=-1)


@keras.saving.register_keras_serializable(package="keras_tricks")
class GlobalPointerCrossentropy(keras.losses.Loss):
    """Loss of GlobalPointer span scores against dense 0/1 span labels.

    For each sample and entity type alpha, the multi-label categorical
    cross-entropy (Su 2020, https://kexue.fm/archives/7359) over all n*n spans:

        L_alpha = log(1 + sum_{(i,j) not entity} e^{s_alpha(i,j)})
                + log(1 + sum_{(i,j) entity} e^{-s_alpha(i,j)})

    Masked spans (logit `keras_tricks.spans.MASK_VALUE`, output by the
    layers for padding and j < i) drop out of both sums. Soft labels in
    [0, 1] are accepted (see `multilabel_categorical_crossentropy`).

    Reduction: the per-sample loss is the mean of L_alpha over the types;
    the Keras `reduction` (default `"sum_over_batch_size"`) then averages
    over the batch, so the default value is the mean over (sample, type),
    as bert4keras's `global_pointer_crossentropy`. An empty sequence (n = 0)
    gives a loss of 0.

    Args:
        name, reduction, dtype: as `keras.losses.Loss`.

    y_true: `(batch, heads, n, n)` 0/1 (or soft) labels, 1 at (type, start,
    end). y_pred: `(batch, heads, n, n)` logits. Per-sample loss: `(batch,)`.

    Examples:
    >>> import keras, keras_tricks
    >>> model = keras.Sequential([keras.Input((None, 16)),
    ...                           keras_tricks.layers.GlobalPointer(3, 8)])
    >>> model.compile("adam", keras_tricks.losses.GlobalPointerCrossentropy())
    """

    def __init__(
        self,
        name: str = "global_pointer_crossentropy",
        reduction: str | None = "sum_over_batch_size",
        dtype: DTypeLike = None,
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true: Tensor, y_pred: Tensor) -> Tensor:
        check_span_scores(y_pred)
        check_dense_labels(y_true, y_pred, "span lists go to SparseGlobalPointerCrossentropy")
        return span_crossentropy(y_true, y_pred)
