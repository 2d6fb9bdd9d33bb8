"""Span-list labels: built on the host from entity lists, and turned into
the dense `(batch, heads, n, n)` labels inside a loss or metric."""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence

import numpy as np
from keras import ops

from keras_tricks import _validation
from keras_tricks._typing import Tensor
from keras_tricks.spans.conventions import SPAN_PADDING, check_padding, valid_span_rows


def sparse_spans_to_dense(
    y_true: Tensor, n: int | Tensor, padding: int | str = SPAN_PADDING, tril_mask: bool = True
) -> Tensor:
    """`(batch, heads, max_spans, 2)` (start, end) rows -> float32 dense labels
    `(batch, heads, n, n)`. Rows that `valid_span_rows` (with this
    `tril_mask`) rejects are dropped; duplicate rows count once."""
    padding = check_padding(padding)
    y_true = ops.cast(y_true, "int32")
    shape = ops.shape(y_true)
    rows_count = shape[0] * shape[1]
    spans = ops.reshape(y_true, (rows_count, shape[2], 2))
    valid = valid_span_rows(spans, n, padding, tril_mask)
    start, end = spans[..., 0], spans[..., 1]
    # Invalid rows go to a spare column n*n, cut off afterwards.
    col = ops.where(valid, start * n + end, n * n)
    row = ops.broadcast_to(ops.arange(rows_count, dtype="int32")[:, None], ops.shape(col))
    indices = ops.reshape(ops.stack([row, col], axis=-1), (-1, 2))
    ones = ops.ones(ops.shape(indices)[:1], dtype="float32")
    counts = ops.scatter(indices, ones, (rows_count, n * n + 1))[:, : n * n]
    dense = ops.cast(counts > 0, "float32")
    return ops.reshape(dense, (shape[0], shape[1], n, n))


def spans_to_sparse_labels(
    batch_spans: Iterable[Iterable[Sequence[int]]],
    num_types: int,
    max_spans: int | None = None,
    padding: int | str = SPAN_PADDING,
) -> np.ndarray:
    """Build the `(batch, num_types, max_spans, 2)` int32 labels of
    `SparseGlobalPointerCrossentropy` / `SpanF1(sparse=True)` from entity
    lists, on the host (NumPy).

    Args:
        batch_spans: one sequence per sample of `(type, start, end)` triples,
            `end` inclusive, `0 <= type < num_types`, `0 <= start <= end`.
            Duplicates are kept (the loss counts them once).
        num_types: the number of span types (the heads of the layer).
        max_spans: rows per (sample, type); `None` takes the largest count in
            the batch (at least 1). A (sample, type) with more spans than
            `max_spans` is a `ValueError`: spans are never dropped silently.
        padding: -1 (default; rows `(-1, -1)`) or `"bert4keras"` (rows
            `(0, 0)`, in which case a real span (0, 0) is a `ValueError`,
            since that convention cannot express it).

    Returns:
        int32 NumPy array `(len(batch_spans), num_types, max_spans, 2)`.

    Examples:
    >>> spans_to_sparse_labels([[(0, 1, 2)], [(1, 0, 0), (1, 3, 4)]], num_types=2).tolist()[1]
    [[[-1, -1], [-1, -1]], [[0, 0], [3, 4]]]
    """
    num_types = _validation.check_int("num_types", num_types, minimum=1)
    max_spans = _validation.check_int("max_spans", max_spans, minimum=1, allow_none=True)
    padding = check_padding(padding)
    if isinstance(batch_spans, (str, bytes)) or not hasattr(batch_spans, "__iter__"):
        raise TypeError(
            "`batch_spans` must be a sequence (one per sample) of (type, start, end) "
            f"triples, got {type(batch_spans).__name__}."
        )
    per_sample = []
    for b, sample in enumerate(batch_spans):
        rows = [[] for _ in range(num_types)]
        if isinstance(sample, (str, bytes)) or not hasattr(sample, "__iter__"):
            raise TypeError(
                f"`batch_spans[{b}]` must be a sequence of (type, start, end) triples, "
                f"got {type(sample).__name__}."
            )
        for triple in sample:
            try:
                # operator.index: Python or NumPy integers only (1.5 is not
                # rounded into a position), and never a bool.
                t, start, end = (operator.index(v) for v in triple)
                if any(isinstance(v, (bool, np.bool_)) for v in triple):
                    raise TypeError
            except (TypeError, ValueError):
                raise TypeError(
                    f"`batch_spans[{b}]` must hold (type, start, end) integer triples, got {triple!r}."
                ) from None
            if not 0 <= t < num_types or start < 0 or end < start:
                raise ValueError(
                    f"`batch_spans[{b}]` has span {triple!r}: need 0 <= type < num_types "
                    f"({num_types}) and 0 <= start <= end."
                )
            if padding == "bert4keras" and start == 0 and end == 0:
                raise ValueError(
                    f"`batch_spans[{b}]` has span (0, 0), which padding='bert4keras' "
                    "reserves for padding; use padding=-1."
                )
            rows[t].append((start, end))
        per_sample.append(rows)
    return _pack_span_rows(
        per_sample, num_types, max_spans, padding, "max_spans", "spans of one type", "spans"
    )


def _pack_span_rows(
    per_sample: Sequence[Sequence[Iterable[tuple[int, int]]]],
    channels: int,
    limit: int | None,
    padding: int | str,
    limit_name: str,
    counted: str,
    kept: str,
) -> np.ndarray:
    """`(batch, channels, limit, 2)` int32 from per-sample, per-channel
    `(start, end)` rows, padded with `padding`'s value; `limit=None` takes the
    largest count (at least 1). More rows than `limit` is a ValueError naming
    `limit_name`: a label is never dropped silently."""
    longest = max((len(r) for rows in per_sample for r in rows), default=0)
    if limit is None:
        limit = max(longest, 1)
    elif longest > limit:
        raise ValueError(
            f"A sample has {longest} {counted}, more than `{limit_name}`={limit}; "
            f"raise `{limit_name}` ({kept} are never dropped silently)."
        )
    fill = 0 if padding == "bert4keras" else SPAN_PADDING
    out = np.full((len(per_sample), channels, limit, 2), fill, np.int32)
    for b, rows in enumerate(per_sample):
        for c, r in enumerate(rows):
            if r:
                out[b, c, : len(r)] = list(r)
    return out
