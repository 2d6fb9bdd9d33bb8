"""Strict relation-triple micro precision, recall and F1 for GPLinker scores:
`TripleF1`, `TriplePrecision`, `TripleRecall` (Keras metrics, accumulated
across batches) and `triple_prf` (host function on triple sets)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import keras
from keras import ops

from keras_tricks import _numerics
from keras_tricks._typing import DTypeLike, Tensor
from keras_tricks.losses.sparse_global_pointer_crossentropy import check_sparse_labels
from keras_tricks.metrics._prf import PRFCounts
from keras_tricks.spans.conventions import SPAN_PADDING
from keras_tricks.spans.labels import sparse_spans_to_dense


def triple_prf(gold: Iterable[Iterable[Any]], pred: Iterable[Iterable[Any]]) -> tuple[float, float, float]:
    """Strict triple micro (precision, recall, F1) over a corpus, on the host.

    `gold` and `pred` hold one collection of triples per sentence (e.g.
    `((s_start, s_end), relation, (o_start, o_end))` from
    `keras_tricks.spans.decode_triples`); a predicted triple is correct when
    it equals a gold one of the same sentence: both spans exact and the
    relation type (the "strict" / "boundaries + type" evaluation of CoNLL04
    papers, without entity types). Duplicates count once. Each score is 0
    when its denominator is.

    Examples:
    >>> gold = [{((0, 1), 0, (3, 3))}, {((2, 2), 1, (0, 0))}]
    >>> pred = [{((0, 1), 0, (3, 3)), ((0, 1), 1, (3, 3))}, set()]
    >>> [round(v, 4) for v in triple_prf(gold, pred)]
    [0.5, 0.5, 0.5]
    """
    gold, pred = [set(g) for g in gold], [set(p) for p in pred]
    if len(gold) != len(pred):
        raise ValueError(f"`gold` has {len(gold)} sentences and `pred` {len(pred)}: they must match.")
    tp = sum(len(g & p) for g, p in zip(gold, pred))
    n_pred, n_gold = sum(map(len, pred)), sum(map(len, gold))
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    return p, r, (2 * tp / (n_pred + n_gold) if n_pred + n_gold else 0.0)


#: Counts saturate here instead of wrapping around int32.
_COUNT_CAP = 2**30


def _count_triples(entities, heads, tails):
    """Number of (subject (a, b), r, object (c, d)) with all four indicators
    on, summed over the batch: sum E0[a,b] E1[c,d] H[r,a,c] T[r,b,d], in
    O(R n^3) without listing the triples. float32 is exact while the count
    stays below 2**24 (a trained model predicts a few triples a sentence;
    only an untrained one on long sentences gets near it, and its count is
    then rounded and capped at 2**30, never wrapped to a negative int32)."""
    x = ops.einsum("zab,zrac->zrbc", entities[:, 0], heads)
    y = ops.einsum("zrbc,zcd->zrbd", x, entities[:, 1])
    return ops.cast(ops.minimum(ops.sum(y * tails), float(_COUNT_CAP)), "int32")


def _add_saturating(variable, increment):
    # increment <= 2**30, so the limit stays a valid int32.
    limit = ops.cast(2**31 - 1, "int32") - increment
    variable.assign(ops.minimum(variable, limit) + increment)


class _TripleCounts(PRFCounts):
    """Counts true/false positives and false negatives of triples."""

    def update_state(self, y_true: Tensor, y_pred: Tensor, sample_weight: Tensor | None = None) -> None:
        if sample_weight is not None:
            raise ValueError(f"{type(self).__name__} counts triples and takes no `sample_weight`.")
        y_pred = ops.convert_to_tensor(y_pred)
        shape = tuple(y_pred.shape)
        if len(shape) != 4 or shape[1] is None or shape[1] < 4 or shape[1] % 2:
            raise ValueError(
                f"`y_pred` must be GPLinker scores of shape (batch, 2 + 2 * relations, n, n), got {shape}."
            )
        y_true = ops.convert_to_tensor(y_true)
        check_sparse_labels(y_true, y_pred)
        r = (shape[1] - 2) // 2
        # Link labels may have object before subject: tril_mask=False.
        true = sparse_spans_to_dense(y_true, ops.shape(y_pred)[-1], self.padding, tril_mask=False) > 0.5
        true = ops.reshape(true, ops.shape(y_pred))
        # Labels on masked scores (padding, reversed entity spans) are not
        # labels, as for the loss.
        true = ops.logical_and(true, ops.logical_not(_numerics.is_masked_logit(y_pred)))
        pred = ops.cast(y_pred, "float32") > self.threshold
        both = ops.logical_and(true, pred)

        def count(m):
            m = ops.cast(m, "float32")
            return _count_triples(m[:, :2], m[:, 2 : 2 + r], m[:, 2 + r :])

        tp, n_pred, n_true = count(both), count(pred), count(true)
        _add_saturating(self.true_positives, tp)
        _add_saturating(self.false_positives, n_pred - tp)
        _add_saturating(self.false_negatives, n_true - tp)


_DOC = """{what} of predicted relation triples (strict: both spans exact
    and the relation), micro-averaged over an epoch, for the
    `(batch, 2 + 2R, n, n)` scores of `keras_tricks.layers.GPLinkerHeads` and
    the sparse labels of `keras_tricks.spans.triples_to_sparse_labels`.

    A triple ((a, b), r, (c, d)) is predicted when the four scores
    [0, a, b], [1, c, d], [2 + r, a, c] and [2 + R + r, b, d] exceed
    `threshold` (exactly what `decode_triples` returns), and gold when the
    four label rows are present. Both sets are counted in the graph without
    listing them: the number of triples in a set of four indicator matrices
    E0, E1, H, T is sum E0[a,b] E1[c,d] H[r,a,c] T[r,b,d], two matrix
    products (O(R n^3)), and the true positives are the triples of the
    element-wise products of the predicted and gold indicators. Then

        precision = TP / (TP + FP),  recall = TP / (TP + FN),
        F1 = 2 TP / (2 TP + FP + FN)

    (0 when the denominator is 0) over every batch since the last
    `reset_state()`: corpus micro scores, not an average of batch values.

    Gold here is the set of triples the labels admit. It is the annotated set
    unless two annotated triples of one relation, whose entities nest or
    share boundaries, combine into a third (subject and object of the
    annotation, head link of one triple, tail link of the other): the labels
    cannot tell it from a real one, and neither can the decoder. For the
    figure against the annotated triples themselves, decode and use the host
    `keras_tricks.metrics.triple_prf`.

    Args:
        threshold: a finite number above the masking value -8192 (default
            0.0), for the three heads.
        padding: -1 (default) or "bert4keras", as the labels.
        name, dtype: as `keras.metrics.Metric`.

    `sample_weight` is not supported (triples are counted, not weighted).

    Examples:
    >>> import keras, keras_tricks
    >>> tokens = keras.Input((None,), dtype="int32")
    >>> x = keras.layers.Embedding(100, 16, mask_zero=True)(tokens)
    >>> model = keras.Model(tokens, keras_tricks.layers.GPLinkerHeads(3, 8)(x))
    >>> model.compile("adam", keras_tricks.losses.SparseGlobalPointerCrossentropy(tril_mask=False),
    ...               metrics=[keras_tricks.metrics.{cls}()])
    """


@keras.saving.register_keras_serializable(package="keras_tricks")
class TripleF1(_TripleCounts):
    __doc__ = _DOC.format(what="Micro F1", cls="TripleF1")
    score = "f1"

    def __init__(
        self,
        threshold: float = 0.0,
        padding: int | str = SPAN_PADDING,
        name: str = "triple_f1",
        dtype: DTypeLike = None,
    ) -> None:
        super().__init__(threshold=threshold, padding=padding, name=name, dtype=dtype)


@keras.saving.register_keras_serializable(package="keras_tricks")
class TriplePrecision(_TripleCounts):
    __doc__ = _DOC.format(what="Micro precision", cls="TriplePrecision")
    score = "precision"

    def __init__(
        self,
        threshold: float = 0.0,
        padding: int | str = SPAN_PADDING,
        name: str = "triple_precision",
        dtype: DTypeLike = None,
    ) -> None:
        super().__init__(threshold=threshold, padding=padding, name=name, dtype=dtype)


@keras.saving.register_keras_serializable(package="keras_tricks")
class TripleRecall(_TripleCounts):
    __doc__ = _DOC.format(what="Micro recall", cls="TripleRecall")
    score = "recall"

    def __init__(
        self,
        threshold: float = 0.0,
        padding: int | str = SPAN_PADDING,
        name: str = "triple_recall",
        dtype: DTypeLike = None,
    ) -> None:
        super().__init__(threshold=threshold, padding=padding, name=name, dtype=dtype)
