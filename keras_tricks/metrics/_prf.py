"""The counting shared by the span and triple metrics: exact integer true
positives, false positives and false negatives since the last reset, and
precision, recall or F1 from them."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_tricks import _validation
from keras_tricks._typing import DTypeLike, Tensor
from keras_tricks.spans.conventions import MASK_VALUE, SPAN_PADDING, check_padding


class PRFCounts(keras.metrics.Metric):
    """Holds TP / FP / FN; a subclass counts them in `update_state` and names
    its figure in `score` ("f1", "precision" or "recall")."""

    score = "f1"

    def __init__(
        self,
        threshold: float = 0.0,
        padding: int | str = SPAN_PADDING,
        name: str | None = None,
        dtype: DTypeLike = None,
    ) -> None:
        super().__init__(name=name, dtype=dtype)
        self.threshold = _validation.check_float(
            "threshold", threshold, minimum=MASK_VALUE, min_inclusive=False
        )
        self.padding = check_padding(padding)
        # Integer counts: exact (a float32 count stops at 2**24 increments).
        self.true_positives = self.add_variable((), "zeros", dtype="int32", name="true_positives")
        self.false_positives = self.add_variable((), "zeros", dtype="int32", name="false_positives")
        self.false_negatives = self.add_variable((), "zeros", dtype="int32", name="false_negatives")

    def result(self) -> Tensor:
        tp, fp, fn = (
            ops.cast(v, "float32") for v in (self.true_positives, self.false_positives, self.false_negatives)
        )
        num, den = {
            "f1": (2.0 * tp, 2.0 * tp + fp + fn),
            "precision": (tp, tp + fp),
            "recall": (tp, tp + fn),
        }[self.score]
        return ops.where(den > 0, num / ops.maximum(den, 1.0), ops.zeros_like(num))

    def reset_state(self) -> None:
        for v in (self.true_positives, self.false_positives, self.false_negatives):
            v.assign(ops.zeros((), dtype="int32"))

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"threshold": self.threshold, "padding": self.padding})
        return config
