"""GPLinker relation extraction on the host: sparse labels from
(subject span, relation, object span) triples, and triples decoded from the
scores of `keras_tricks.layers.GPLinkerHeads`.

Su Jianlin, "GPLinker：基于GlobalPointer的实体关系联合抽取" (2022),
https://kexue.fm/archives/8888. The scores of one sentence are 2 + 2R
channels `(2 + 2R, n, n)` for R relation types:

- channel 0: subject spans `(start, end)`, channel 1: object spans;
- channel 2 + r: head links `(subject start, object start)` of relation r;
- channel 2 + R + r: tail links `(subject end, object end)` of relation r.

A triple `((s_start, s_end), r, (o_start, o_end))` is predicted iff all four
scores exceed the threshold: the subject span, the object span, the head
link and the tail link.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from keras import ops

from keras_tricks import _validation
from keras_tricks._typing import Tensor
from keras_tricks.spans.conventions import MASK_VALUE, SPAN_PADDING, check_padding
from keras_tricks.spans.labels import _pack_span_rows

#: A triple: ((subject start, subject end), relation, (object start, object end)),
#: ends inclusive; the relation is its index, or its name when decoding with
#: `relations=` names.
Triple = tuple[tuple[int, int], Any, tuple[int, int]]


def _relation_names(relations: int | Sequence[str]) -> tuple[int, list[str] | None]:
    """(R, names or None) from an int or a sequence of distinct names."""
    if isinstance(relations, (str, bytes)) or not (
        isinstance(relations, Sequence) or hasattr(relations, "__index__")
    ):
        raise TypeError(
            f"`relations` must be the number of relation types or a sequence of their names, got {relations!r}."
        )
    if not isinstance(relations, Sequence):
        return _validation.check_int("relations", relations, minimum=1), None
    names = list(relations)
    if not names or len(set(names)) != len(names):
        raise ValueError(f"`relations` must be distinct names, at least one, got {names!r}.")
    return len(names), names


def _position(value: Any) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise TypeError
    return operator.index(value)


def _check_lengths(lengths: Sequence[int] | None, count: int, samples: str) -> list[int] | None:
    """`lengths` as a list of non-negative ints, one per sample of `samples`."""
    if lengths is None:
        return None
    lengths = [_validation.check_int(f"lengths[{i}]", n, minimum=0) for i, n in enumerate(lengths)]
    if len(lengths) != count:
        raise ValueError(f"`lengths` has {len(lengths)} entries for {count} samples in `{samples}`.")
    return lengths


def _parse_triple(triple: Any, names: list[str] | None, num_relations: int, where: str) -> tuple:
    try:
        subject, relation, obj = triple
        (a, b), (c, d) = subject, obj
        a, b, c, d = (_position(v) for v in (a, b, c, d))
    except (TypeError, ValueError):
        raise TypeError(
            f"{where} must be ((subject start, subject end), relation, (object start, object end)) "
            f"with integer positions, got {triple!r}."
        ) from None
    if names is not None and isinstance(relation, str):
        if relation not in names:
            raise ValueError(f"{where} has relation {relation!r}, not one of `relations` {names}.")
        r = names.index(relation)
    else:
        try:
            r = _position(relation)
        except TypeError:
            raise TypeError(f"{where} has relation {relation!r}: need an index or a name.") from None
        if not 0 <= r < num_relations:
            raise ValueError(f"{where} has relation {relation!r}: need 0 <= relation < {num_relations}.")
    if a < 0 or b < a or c < 0 or d < c:
        raise ValueError(
            f"{where} has span {(a, b) if (a < 0 or b < a) else (c, d)}: need 0 <= start <= end."
        )
    return (a, b), r, (c, d)


def triples_to_sparse_labels(
    batch_triples: Iterable[Iterable[Triple]],
    relations: int | Sequence[str],
    lengths: Sequence[int] | None = None,
    max_rows: int | None = None,
    padding: int | str = SPAN_PADDING,
) -> np.ndarray:
    """GPLinker's sparse labels `(batch, 2 + 2R, max_rows, 2)` from triples,
    on the host (NumPy), for `GPLinkerHeads` and
    `SparseGlobalPointerCrossentropy(tril_mask=False)` / `TripleF1`.

    Row lists per channel (see the module docstring): channel 0 the subject
    spans, 1 the object spans, 2 + r the head links `(s_start, o_start)` and
    2 + R + r the tail links `(s_end, o_end)` of relation r. An entity or
    pair that occurs in several triples is listed once.

    Args:
        batch_triples: one sequence per sample of
            `((s_start, s_end), relation, (o_start, o_end))`, ends inclusive;
            `relation` an index in [0, R) or, with names, a name. An empty
            sequence is a sentence without relations (all padding: every
            score of it is trained negative).
        relations: R, or the R relation names (index = position).
        lengths: optional token count of each sample; a span ending at or
            after it is a `ValueError` (it would otherwise be ignored by the
            loss as outside the sentence: a silently lost label).
        max_rows: rows per channel; `None` takes the largest count in the
            batch (at least 1). More rows than that is a `ValueError`.
        padding: -1 (default; rows `(-1, -1)`) or `"bert4keras"` (rows
            `(0, 0)`; a real (0, 0) entity or pair is then a `ValueError`).

    Returns:
        int32 NumPy array `(len(batch_triples), 2 + 2R, max_rows, 2)`.

    Raises:
        TypeError: a sample or triple of the wrong form, a non-integer
            position, a relation neither an index nor a name.
        ValueError: an unknown relation name or an index outside [0, R), a
            span with start < 0 or end < start, a span outside `lengths`.

    Examples:
    >>> y = triples_to_sparse_labels([[((0, 1), "born_in", (4, 4))]], ["works_for", "born_in"])
    >>> tuple(y.shape)
    (1, 6, 1, 2)
    >>> y[0, :, 0].tolist()   # subject, object, head links r=0,1, tail links r=0,1
    [[0, 1], [4, 4], [-1, -1], [0, 4], [-1, -1], [1, 4]]
    """
    num_relations, names = _relation_names(relations)
    max_rows = _validation.check_int("max_rows", max_rows, minimum=1, allow_none=True)
    padding = check_padding(padding)
    if isinstance(batch_triples, (str, bytes)) or not hasattr(batch_triples, "__iter__"):
        raise TypeError(
            f"`batch_triples` must be a sequence (one per sample) of triples, got {type(batch_triples).__name__}."
        )
    batch_triples = list(batch_triples)
    lengths = _check_lengths(lengths, len(batch_triples), "batch_triples")
    channels = 2 + 2 * num_relations
    per_sample = []
    for b, sample in enumerate(batch_triples):
        if isinstance(sample, (str, bytes)) or not hasattr(sample, "__iter__"):
            raise TypeError(
                f"`batch_triples[{b}]` must be a sequence of triples, got {type(sample).__name__}."
            )
        rows = [dict() for _ in range(channels)]  # dicts: ordered sets
        for triple in sample:
            where = f"`batch_triples[{b}]`"
            (a, e), r, (c, d) = _parse_triple(triple, names, num_relations, where)
            if lengths is not None and max(e, d) >= lengths[b]:
                raise ValueError(
                    f"{where} has triple {triple!r} with a span outside the sentence of {lengths[b]} tokens."
                )
            for ch, row in (
                (0, (a, e)),
                (1, (c, d)),
                (2 + r, (a, c)),
                (2 + num_relations + r, (e, d)),
            ):
                if padding == "bert4keras" and row == (0, 0):
                    raise ValueError(
                        f"{where} has triple {triple!r}, whose row (0, 0) padding='bert4keras' "
                        "reserves for padding; use padding=-1."
                    )
                rows[ch][row] = None
        per_sample.append(rows)
    return _pack_span_rows(
        per_sample, channels, max_rows, padding, "max_rows", "rows in one channel", "labels"
    )


def _as_numpy(x: Tensor) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        x = ops.convert_to_numpy(ops.cast(ops.convert_to_tensor(x), "float32"))
    return np.asarray(x)


def split_gplinker_scores(scores: Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(batch, 2 + 2R, n, n)` -> (entities `(batch, 2, n, n)`, head links
    `(batch, R, n, n)`, tail links `(batch, R, n, n)`), NumPy."""
    scores = _as_numpy(scores)
    if scores.ndim != 4 or scores.shape[-1] != scores.shape[-2] or scores.shape[1] < 4 or scores.shape[1] % 2:
        raise ValueError(
            "GPLinker scores must have shape (batch, 2 + 2 * relations, n, n) with at least one "
            f"relation, got {scores.shape}."
        )
    r = (scores.shape[1] - 2) // 2
    return scores[:, :2], scores[:, 2 : 2 + r], scores[:, 2 + r :]


def decode_triples(
    scores: Tensor,
    threshold: float = 0.0,
    relations: Sequence[str] | None = None,
) -> list[list[Triple]]:
    """Triples predicted by GPLinker scores, one sorted list per sample.

    Every subject span `(a, b)` (channel 0 > threshold) and object span
    `(c, d)` (channel 1 > threshold) is paired, and the triple
    `((a, b), r, (c, d))` is kept iff the head link `[2 + r, a, c]` and the
    tail link `[2 + R + r, b, d]` both exceed `threshold` (Su 2022,
    https://kexue.fm/archives/8888). One entity may take part in several
    triples, a pair in several relations, and spans may nest or overlap.
    Masked scores (`MASK_VALUE`: padding) are never selected.

    Args:
        scores: `(batch, 2 + 2R, n, n)` logits of `GPLinkerHeads` (any
            backend tensor or NumPy array).
        threshold: a finite float above the masking value (0 for logits
            trained with the GlobalPointer losses).
        relations: optional R relation names; triples then carry the name
            instead of the index.

    Returns:
        A list (one per sample) of sorted lists of
        `((s_start, s_end), relation, (o_start, o_end))`, ends inclusive.
        This is host post-processing (NumPy), outside the model.

    Examples:
    >>> import numpy as np
    >>> s = np.full((1, 4, 5, 5), -5.0)        # R = 1, 5 tokens
    >>> s[0, 0, 0, 1] = s[0, 1, 3, 4] = 2.0    # subject (0, 1), object (3, 4)
    >>> s[0, 2, 0, 3] = s[0, 3, 1, 4] = 2.0    # head link (0, 3), tail link (1, 4)
    >>> decode_triples(s, relations=["born_in"])
    [[((0, 1), 'born_in', (3, 4))]]
    """
    threshold = _validation.check_float("threshold", threshold, minimum=MASK_VALUE, min_inclusive=False)
    entities, heads, tails = split_gplinker_scores(scores)
    num_relations = heads.shape[1]
    if relations is not None:
        count, names = _relation_names(relations)
        if names is None or count != num_relations:
            raise ValueError(
                f"`relations` must be the {num_relations} relation names of the scores, got {relations!r}."
            )
    out = []
    for b in range(entities.shape[0]):
        subjects = np.argwhere(entities[b, 0] > threshold)
        objects = np.argwhere(entities[b, 1] > threshold)
        found = []
        if len(subjects) and len(objects):
            # (R, subjects, objects): both links of every candidate pair at once.
            head = heads[b][:, subjects[:, 0][:, None], objects[:, 0][None, :]] > threshold
            tail = tails[b][:, subjects[:, 1][:, None], objects[:, 1][None, :]] > threshold
            for r, i, j in np.argwhere(head & tail):
                found.append(
                    (
                        (int(subjects[i, 0]), int(subjects[i, 1])),
                        int(r),
                        (int(objects[j, 0]), int(objects[j, 1])),
                    )
                )
        found.sort()
        if relations is not None:
            found = [(s_, relations[r], o) for s_, r, o in found]
        out.append(found)
    return out


def triples_from_entity_indices(
    entities: Sequence[Any], relations: Iterable[Any], end_exclusive: bool = True
) -> list[Triple]:
    """Triples of one sentence from SpERT-style records (CoNLL04, SciERC,
    ADE...): `entities` a list of `{"start", "end"}` dicts (or `(start, end)`
    pairs), `relations` a list of `{"head", "tail", "type"}` dicts whose
    `head` / `tail` index `entities`.

    `end_exclusive` (default True, SpERT's convention) says whether `end` is
    one past the last token; triples carry inclusive ends either way. An
    index outside `entities` is a `ValueError` naming the relation.

    Examples:
    >>> ents = [{"type": "Peop", "start": 0, "end": 2}, {"type": "Org", "start": 4, "end": 6}]
    >>> triples_from_entity_indices(ents, [{"type": "Work_For", "head": 0, "tail": 1}])
    [((0, 1), 'Work_For', (4, 5))]
    """
    end_exclusive = _validation.check_bool("end_exclusive", end_exclusive)
    spans = []
    for k, ent in enumerate(entities):
        try:
            start, end = (ent["start"], ent["end"]) if isinstance(ent, dict) else ent
            start, end = _position(start), _position(end)
        except (TypeError, ValueError, KeyError):
            raise TypeError(
                f"`entities[{k}]` must be {{'start', 'end'}} or (start, end) integers, got {ent!r}."
            ) from None
        spans.append((start, end - 1 if end_exclusive else end))
    out = []
    for k, rel in enumerate(relations):
        try:
            head, tail, kind = _position(rel["head"]), _position(rel["tail"]), rel["type"]
        except (TypeError, ValueError, KeyError):
            raise TypeError(
                f"`relations[{k}]` must be {{'head', 'tail', 'type'}} with integer indices, got {rel!r}."
            ) from None
        if not (0 <= head < len(spans) and 0 <= tail < len(spans)):
            raise ValueError(f"`relations[{k}]` = {rel!r} indexes an entity outside the {len(spans)} given.")
        out.append((spans[head], kind, spans[tail]))
    return out


def triples_from_mentions(tokens: Sequence[Any], spo_list: Iterable[Sequence[Any]]) -> list[Triple]:
    """Triples of one sentence from text mentions (DuIE / bert4keras style):
    `spo_list` holds `(subject, predicate, object)` where subject and object
    are token sequences (for characters as tokens, plain strings), found in
    `tokens` by their first occurrence (as bert4keras's `search`).

    A mention that does not occur in `tokens` (after truncation, or an
    annotation error) is a `ValueError` naming it: the triple is never
    dropped or placed silently. Filter `spo_list` first to skip such triples
    on purpose.

    Examples:
    >>> triples_from_mentions(list("周杰伦出生于台湾"), [("周杰伦", "出生地", "台湾")])
    [((0, 2), '出生地', (6, 7))]
    """
    tokens = list(tokens)

    def find(mention, k):
        m = list(mention)
        for i in range(len(tokens) - len(m) + 1):
            if m and tokens[i : i + len(m)] == m:
                return i, i + len(m) - 1
        raise ValueError(f"`spo_list[{k}]`: mention {mention!r} does not occur in `tokens`.")

    out = []
    for k, spo in enumerate(spo_list):
        try:
            subject, predicate, obj = spo
        except (TypeError, ValueError):
            raise TypeError(f"`spo_list[{k}]` must be (subject, predicate, object), got {spo!r}.") from None
        out.append((find(subject, k), predicate, find(obj, k)))
    return out
