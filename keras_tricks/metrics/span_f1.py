"""Entity-level (span-level) micro precision, recall and F1 for GlobalPointer
scores: `SpanF1`, `SpanPrecision`, `SpanRecall`."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_tricks import _numerics, _validation
from keras_tricks._typing import DTypeLike, Tensor
from keras_tricks.losses.global_pointer_crossentropy import check_dense_labels
from keras_tricks.losses.sparse_global_pointer_crossentropy import check_sparse_labels
from keras_tricks.metrics._prf import PRFCounts
from keras_tricks.spans.conventions import SPAN_PADDING
from keras_tricks.spans.labels import sparse_spans_to_dense


class _SpanCounts(PRFCounts):
    """Counts true/false positives and false negatives of spans."""

    def __init__(
        self,
        threshold: float = 0.0,
        sparse: bool = False,
        padding: int | str = SPAN_PADDING,
        name: str | None = None,
        dtype: DTypeLike = None,
    ) -> None:
        super().__init__(threshold=threshold, padding=padding, name=name, dtype=dtype)
        self.sparse = _validation.check_bool("sparse", sparse)

    def update_state(self, y_true: Tensor, y_pred: Tensor, sample_weight: Tensor | None = None) -> None:
        if sample_weight is not None:
            raise ValueError(f"{type(self).__name__} counts spans and takes no `sample_weight`.")
        y_pred = ops.convert_to_tensor(y_pred)
        if len(y_pred.shape) != 4:
            raise ValueError(f"`y_pred` must have shape (batch, heads, n, n), got {tuple(y_pred.shape)}.")
        y_true = ops.convert_to_tensor(y_true)
        if self.sparse:
            check_sparse_labels(y_true, y_pred)
            true = sparse_spans_to_dense(y_true, ops.shape(y_pred)[-1], self.padding) > 0.5
            true = ops.reshape(true, ops.shape(y_pred))
        else:
            check_dense_labels(y_true, y_pred, "span lists need `sparse=True`")
            true = y_true > 0.5
        # A label on a masked span (padding, end < start) is not a span: the
        # loss ignores it, so the metric does too.
        true = ops.logical_and(true, ops.logical_not(_numerics.is_masked_logit(y_pred)))
        pred = ops.cast(y_pred, "float32") > self.threshold
        count = lambda m: ops.sum(ops.cast(m, "int32"))  # noqa: E731
        self.true_positives.assign_add(count(ops.logical_and(pred, true)))
        self.false_positives.assign_add(count(ops.logical_and(pred, ops.logical_not(true))))
        self.false_negatives.assign_add(count(ops.logical_and(ops.logical_not(pred), true)))

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"sparse": self.sparse})
        return config


_DOC = """{what} of predicted spans, micro-averaged over an epoch.

    A span (type, start, end) is predicted when its score exceeds
    `threshold` (0 for logits trained with the GlobalPointer losses; masked
    spans never are) and true when its label is 1. True positives, false
    positives and false negatives are counted over every batch seen since the
    last `reset_state()` (an epoch in `fit`/`evaluate`), then

        precision = TP / (TP + FP),  recall = TP / (TP + FN),
        F1 = 2 TP / (2 TP + FP + FN)

    (0 when the denominator is 0): the entity-level micro scores of the
    CoNLL evaluation, not an average of per-batch values. Labels on masked
    spans (padding, end < start) and invalid span rows are not counted,
    exactly as the losses ignore them.

    Args:
        threshold: a finite number above the masking value -8192 (NaN is
            refused); a span is predicted when its score exceeds it
            (default 0.0).
        sparse: labels are `(batch, heads, max_spans, 2)` (start, end) lists,
            as `SparseGlobalPointerCrossentropy` takes, instead of dense
            `(batch, heads, n, n)` 0/1 labels. Labels of the other kind, or of
            another batch or heads than the scores, raise a `ValueError`.
        padding: with `sparse=True`, -1 (default) or "bert4keras", as in
            `SparseGlobalPointerCrossentropy`.
        name, dtype: as `keras.metrics.Metric`.

    `sample_weight` is not supported (spans are counted, not weighted).

    Examples:
    >>> import keras, keras_tricks
    >>> model = keras.Sequential([keras.Input((None, 16)),
    ...                           keras_tricks.layers.GlobalPointer(3, 8)])
    >>> model.compile("adam", keras_tricks.losses.GlobalPointerCrossentropy(),
    ...               metrics=[keras_tricks.metrics.{cls}()])
    """


@keras.saving.register_keras_serializable(package="keras_tricks")
class SpanF1(_SpanCounts):
    __doc__ = _DOC.format(what="Micro F1", cls="SpanF1")
    score = "f1"

    def __init__(
        self,
        threshold: float = 0.0,
        sparse: bool = False,
        padding: int | str = SPAN_PADDING,
        name: str = "span_f1",
        dtype: DTypeLike = None,
    ) -> None:
        super().__init__(threshold=threshold, sparse=sparse, padding=padding, name=name, dtype=dtype)


@keras.saving.register_keras_serializable(package="keras_tricks")
class SpanPrecision(_SpanCounts):
    __doc__ = _DOC.format(what="Micro precision", cls="SpanPrecision")
    score = "precision"

    def __init__(
        self,
        threshold: float = 0.0,
        sparse: bool = False,
        padding: int | str = SPAN_PADDING,
        name: str = "span_precision",
        dtype: DTypeLike = None,
    ) -> None:
        super().__init__(threshold=threshold, sparse=sparse, padding=padding, name=name, dtype=dtype)


@keras.saving.register_keras_serializable(package="keras_tricks")
class SpanRecall(_SpanCounts):
    __doc__ = _DOC.format(what="Micro recall", cls="SpanRecall")
    score = "recall"

    def __init__(
        self,
        threshold: float = 0.0,
        sparse: bool = False,
        padding: int | str = SPAN_PADDING,
        name: str = "span_recall",
        dtype: DTypeLike = None,
    ) -> None:
        super().__init__(threshold=threshold, sparse=sparse, padding=padding, name=name, dtype=dtype)
