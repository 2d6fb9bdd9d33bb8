"""Tag sequences on the host (NumPy only): Viterbi decoding for serving, and
BIO / BIOES tags <-> span rows in `decode_spans`'s format.

Tag ids (bert4keras's layout): 0 is O; for entity type t, BIO uses
B = 1 + 2t, I = 2 + 2t, and BIOES uses B = 1 + 4t, I = 2 + 4t, E = 3 + 4t,
S = 4 + 4t. -1 is padding.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from keras_tricks import _validation
from keras_tricks.spans.conventions import MASK_VALUE

SCHEMES: tuple[str, ...] = ("BIO", "BIOES")
_WIDTH = {"BIO": 2, "BIOES": 4}


def num_tags(num_types: int, scheme: str = "BIO") -> int:
    """The number of tags of `scheme` for `num_types` entity types."""
    num_types = _validation.check_int("num_types", num_types, minimum=1)
    scheme = _validation.check_choice("scheme", scheme, SCHEMES)
    return 1 + _WIDTH[scheme] * num_types


def viterbi_decode_numpy(
    emissions: np.ndarray,
    transitions: np.ndarray,
    mask: np.ndarray | None = None,
    start_transitions: np.ndarray | None = None,
    end_transitions: np.ndarray | None = None,
) -> np.ndarray:
    """Host Viterbi, the same rule as the in-graph
    `keras_tricks.layers.viterbi_decode`: valid positions are those with
    `mask` True and emissions not all `MASK_VALUE`; int32 `(batch, seq_len)`,
    -1 at invalid positions; ties to the lowest tag.

    Examples:
    >>> e = np.array([[[1.0, 0.0], [0.0, 1.0], [MASK_VALUE, MASK_VALUE]]])
    >>> viterbi_decode_numpy(e, np.zeros((2, 2))).tolist()
    [[0, 1, -1]]
    """
    emissions = np.asarray(emissions)
    if emissions.ndim != 3:
        raise ValueError(f"`emissions` must have shape (batch, seq_len, num_tags), got {emissions.shape}.")
    valid = ~np.all(emissions == np.asarray(MASK_VALUE, emissions.dtype), axis=-1)
    emissions = emissions.astype(np.float64)
    k = emissions.shape[-1]
    transitions = np.asarray(transitions, np.float64)
    if transitions.shape != (k, k):
        raise ValueError(f"`transitions` must have shape ({k}, {k}), got {transitions.shape}.")
    if mask is not None:
        mask = np.asarray(mask, bool)
        if mask.shape != emissions.shape[:2]:
            raise ValueError(f"`mask` must have shape {emissions.shape[:2]}, got {mask.shape}.")
        valid &= mask
    start = np.zeros(k) if start_transitions is None else np.asarray(start_transitions, np.float64)
    end = np.zeros(k) if end_transitions is None else np.asarray(end_transitions, np.float64)
    for name, v in (("start_transitions", start), ("end_transitions", end)):
        if v.shape != (k,):
            raise ValueError(f"`{name}` must have shape ({k},), got {v.shape}.")
    out = np.full(emissions.shape[:2], -1, np.int32)
    for b in range(emissions.shape[0]):
        idx = np.flatnonzero(valid[b])
        if not len(idx):
            continue
        delta = start + emissions[b, idx[0]]
        backs = []
        for t in idx[1:]:
            cand = delta[:, None] + transitions
            backs.append(cand.argmax(0))
            delta = cand.max(0) + emissions[b, t]
        tag = int(np.argmax(delta + end))
        path = [tag]
        for back in reversed(backs):
            tag = int(back[tag])
            path.append(tag)
        out[b, idx] = path[::-1]
    return out


def tags_to_spans(tags: np.ndarray, num_types: int, scheme: str = "BIO") -> np.ndarray:
    """Entity spans of tag sequences, as `decode_spans` rows.

    Lenient like conlleval / seqeval's default: an I (or, in BIOES, an E)
    that does not continue an entity of its type starts one; an entity ends
    at O, padding, a B, an S, an E, or a tag of another type.

    Args:
        tags: int `(batch, seq_len)` (-1: padding), e.g. a decoder's output.
        num_types: entity types; tags must lie in `[-1, num_tags(num_types, scheme))`.
        scheme: `"BIO"` or `"BIOES"`.

    Returns:
        int64 `(num_spans, 4)` rows `(batch_index, type, start, end)`, end
        inclusive, sorted by batch, type, start, end.

    Examples:
    >>> tags_to_spans(np.array([[1, 2, 0, 2, 3]]), num_types=2).tolist()
    [[0, 0, 0, 1], [0, 0, 3, 3], [0, 1, 4, 4]]
    """
    k = num_tags(num_types, scheme)
    tags = np.asarray(tags)
    if tags.ndim != 2 or not np.issubdtype(tags.dtype, np.integer):
        raise ValueError(f"`tags` must be integers of shape (batch, seq_len), got {tags.dtype} {tags.shape}.")
    if tags.size and (tags.min() < -1 or tags.max() >= k):
        raise ValueError(f"`tags` must lie in [-1, {k}) for {num_types} types under {scheme}.")
    width = _WIDTH[scheme]
    rows = []
    for b, seq in enumerate(tags):
        cur = None  # (type, start)
        for t, tag in enumerate(list(seq) + [0]):
            if tag <= 0:
                kind, typ = "O", None
            else:
                typ, part = divmod(int(tag) - 1, width)
                kind = "BIES"[part] if width == 4 else "BI"[part]
            if cur is not None and (kind in "OBS" or typ != cur[0]):
                rows.append((b, cur[0], cur[1], t - 1))
                cur = None
            if kind == "O":
                continue
            if cur is None:
                cur = (typ, t)
            if kind in "SE":
                rows.append((b, cur[0], cur[1], t))
                cur = None
    out = np.array(sorted(rows), np.int64).reshape(-1, 4)
    return out


def spans_to_tags(
    batch_spans: Iterable[Iterable[Sequence[int]]], num_types: int, seq_len: int, scheme: str = "BIO"
) -> np.ndarray:
    """Tag sequences int32 `(batch, seq_len)` from `(type, start, end)`
    triples per sample (end inclusive), O elsewhere; overlapping spans or
    spans past `seq_len` are a `ValueError` (a tag sequence cannot nest).

    Examples:
    >>> spans_to_tags([[(0, 0, 1), (1, 3, 3)]], num_types=2, seq_len=4).tolist()
    [[1, 2, 0, 3]]
    """
    num_tags(num_types, scheme)
    seq_len = _validation.check_int("seq_len", seq_len, minimum=0)
    width = _WIDTH[scheme]
    samples = list(batch_spans)
    out = np.zeros((len(samples), seq_len), np.int32)
    for b, sample in enumerate(samples):
        for triple in sample:
            typ, start, end = (int(v) for v in triple)
            if not 0 <= typ < num_types or not 0 <= start <= end < seq_len:
                raise ValueError(
                    f"`batch_spans[{b}]` has span {tuple(triple)!r}: need 0 <= type < {num_types} "
                    f"and 0 <= start <= end < seq_len ({seq_len})."
                )
            if out[b, start : end + 1].any():
                raise ValueError(f"`batch_spans[{b}]` has overlapping spans at {tuple(triple)!r}.")
            base = 1 + width * typ
            if width == 2:
                out[b, start] = base
                out[b, start + 1 : end + 1] = base + 1
            elif start == end:
                out[b, start] = base + 3
            else:
                out[b, start], out[b, start + 1 : end], out[b, end] = base, base + 1, base + 2
    return out


def span_rows_to_scores(rows: np.ndarray, batch_size: int, num_types: int, seq_len: int) -> np.ndarray:
    """`(batch, num_types, seq_len, seq_len)` float32 scores, +1 on the given
    rows and -1 elsewhere, so `metrics.SpanF1` scores CRF output (via
    `tags_to_spans`) exactly as it scores GlobalPointer's."""
    scores = -np.ones((batch_size, num_types, seq_len, seq_len), np.float32)
    rows = np.asarray(rows, np.int64).reshape(-1, 4)
    scores[rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]] = 1.0
    return scores
