"""GPLinker event extraction on the host: sparse labels from events, events
decoded from the scores of `keras_tricks.layers.GPLinkerEventHeads` by a
maximal-clique search, and the article's event- and argument-level scores.

Su Jianlin, "GPLinker：基于GlobalPointer的事件联合抽取" (2022),
https://kexue.fm/archives/8926. An event is a set of arguments; an argument
is `(event_type, role, (start, end))`, ends inclusive, and the trigger is an
argument whose role is the trigger role. For L argument labels (the
`(event_type, role)` pairs of the schema, triggers included) the scores of
one sentence are L + 2 channels `(L + 2, n, n)`:

- channel l < L: spans of label l (an NER head over the labels);
- channel L: head links `(min(s1, s2), max(s1, s2))` of the starts s1, s2 of
  two arguments of one event;
- channel L + 1: tail links, the same for the ends.

Both link channels are ordered (min, max), so every channel keeps
GlobalPointer's upper triangle (`tril_mask=True`, the default of the losses).

Decoding: the arguments of each event type are the nodes of a graph, two of
them adjacent iff their head link and their tail link both exceed the
threshold; each maximal clique of that graph is one event. An event nested in
another event of the same type (all its arguments also belong to the larger
one) cannot be told from it by the links and is lost; `decode_events` of the
labels of a sentence shows what its annotation allows.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from keras_tricks import _validation
from keras_tricks._typing import Tensor
from keras_tricks.spans.conventions import MASK_VALUE, SPAN_PADDING, check_padding
from keras_tricks.spans.labels import _pack_span_rows
from keras_tricks.spans.relations import _as_numpy, _check_lengths, _position

#: An argument: (event type, role, (start, end)), ends inclusive.
Argument = tuple[Hashable, Hashable, tuple[int, int]]
#: An event: its arguments, sorted, each once.
Event = tuple[Argument, ...]


def _check_labels(labels: Any) -> list[tuple[Hashable, Hashable]]:
    if isinstance(labels, (str, bytes)) or not isinstance(labels, Iterable):
        raise TypeError(f"`labels` must be a sequence of (event_type, role) pairs, got {labels!r}.")
    out = []
    for k, pair in enumerate(labels):
        if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise TypeError(f"`labels[{k}]` must be an (event_type, role) pair, got {pair!r}.")
        out.append((pair[0], pair[1]))
    if not out or len(set(out)) != len(out):
        raise ValueError(f"`labels` must be distinct (event_type, role) pairs, at least one, got {out!r}.")
    return out


def _parse_argument(argument: Any, where: str) -> Argument:
    try:
        event_type, role, (start, end) = argument
        start, end = _position(start), _position(end)
    except (TypeError, ValueError):
        raise TypeError(
            f"{where} must be (event_type, role, (start, end)) with integer positions, got {argument!r}."
        ) from None
    if start < 0 or end < start:
        raise ValueError(f"{where} has span {(start, end)}: need 0 <= start <= end.")
    return event_type, role, (start, end)


def _parse_events(sample: Any, where: str) -> list[Event]:
    if isinstance(sample, (str, bytes)) or not isinstance(sample, Iterable):
        raise TypeError(f"{where} must be a sequence of events, got {type(sample).__name__}.")
    events = []
    for e, event in enumerate(sample):
        if isinstance(event, (str, bytes)) or not isinstance(event, Iterable):
            raise TypeError(f"{where}[{e}] must be a sequence of arguments, got {event!r}.")
        args = {_parse_argument(a, f"{where}[{e}][{k}]"): None for k, a in enumerate(event)}
        if not args:
            raise ValueError(f"{where}[{e}] is an event without arguments.")
        types = {a[0] for a in args}
        if len(types) != 1:
            raise ValueError(f"{where}[{e}] mixes event types {sorted(map(str, types))}: one type an event.")
        events.append(tuple(sorted(args, key=_sort_key)))
    return events


def _sort_key(argument: Argument) -> tuple:
    # Names may be of mixed types (str and int); positions first, names as text.
    event_type, role, span = argument
    return (str(event_type), span, str(role))


def event_labels_from_schema(
    schema: Iterable[Mapping[str, Any]] | str, trigger_role: Hashable = "trigger"
) -> list[tuple[Hashable, Hashable]]:
    """The argument labels `(event_type, role)` of a DuEE-style schema, the
    trigger of each type first: `[(type, trigger_role), (type, role_1), ...]`.

    Args:
        schema: records `{"event_type": ..., "role_list": [{"role": ...}]}`,
            or the path of a file with one such JSON object a line.
        trigger_role: the role name given to triggers (it must not be one of
            the schema's roles).

    Examples:
    >>> event_labels_from_schema([{"event_type": "quake", "role_list": [{"role": "time"}]}])
    [('quake', 'trigger'), ('quake', 'time')]
    """
    if isinstance(schema, str):
        with open(schema, encoding="utf-8") as f:
            schema = [json.loads(line) for line in f if line.strip()]
    labels: list[tuple[Hashable, Hashable]] = []
    for k, record in enumerate(schema):
        try:
            event_type, roles = record["event_type"], [r["role"] for r in record["role_list"]]
        except (TypeError, KeyError):
            raise TypeError(
                f"`schema[{k}]` must be {{'event_type', 'role_list': [{{'role'}}, ...]}}, got {record!r}."
            ) from None
        if trigger_role in roles:
            raise ValueError(f"`schema[{k}]` has a role named like `trigger_role` ({trigger_role!r}).")
        labels += [(event_type, trigger_role)] + [(event_type, r) for r in roles]
    return _check_labels(labels)


def events_from_duee(
    record: Mapping[str, Any], trigger_role: Hashable = "trigger", max_len: int | None = None
) -> list[Event]:
    """The events of one DuEE-style record (`{"text", "event_list": [{
    "event_type", "trigger", "trigger_start_index", "arguments": [{"role",
    "argument", "argument_start_index"}]}]}`), characters as tokens.

    An argument whose text does not match `text` at its start index is a
    `ValueError` (a silently misplaced label otherwise). With `max_len`,
    arguments that end at or after it (truncated away) are dropped, and so
    is an event left without its trigger: the same events a model reading
    `text[:max_len]` can be asked for.

    Examples:
    >>> rec = {"text": "quake at dawn", "event_list": [{"event_type": "quake", "trigger": "quake",
    ...        "trigger_start_index": 0, "arguments": [{"role": "time", "argument": "dawn",
    ...        "argument_start_index": 9}]}]}
    >>> events_from_duee(rec)
    [(('quake', 'trigger', (0, 4)), ('quake', 'time', (9, 12)))]
    """
    max_len = _validation.check_int("max_len", max_len, minimum=1, allow_none=True)
    try:
        text, event_list = record["text"], record.get("event_list", [])
    except (TypeError, KeyError, AttributeError):
        raise TypeError(
            f"`record` must be a DuEE record with 'text' and 'event_list', got {record!r}."
        ) from None
    events = []
    for e, event in enumerate(event_list):
        try:
            mentions = [(trigger_role, event["trigger"], event["trigger_start_index"])]
            mentions += [(a["role"], a["argument"], a["argument_start_index"]) for a in event["arguments"]]
            event_type = event["event_type"]
        except (TypeError, KeyError):
            raise TypeError(f"`record['event_list'][{e}]` is not a DuEE event: {event!r}.") from None
        args = []
        for role, mention, start in mentions:
            start = _position(start)
            if not mention or text[start : start + len(mention)] != mention:
                raise ValueError(
                    f"`record['event_list'][{e}]`: {role!r} {mention!r} is not at index {start} of the text."
                )
            span = (start, start + len(mention) - 1)
            if max_len is not None and span[1] >= max_len:
                if role == trigger_role:
                    args = []
                    break
                continue
            args.append((event_type, role, span))
        if args:
            events.append(tuple(sorted(set(args), key=_sort_key)))
    return events


def events_to_sparse_labels(
    batch_events: Iterable[Iterable[Iterable[Argument]]],
    labels: Sequence[tuple[Hashable, Hashable]],
    lengths: Sequence[int] | None = None,
    max_rows: int | None = None,
    padding: int | str = SPAN_PADDING,
) -> np.ndarray:
    """GPLinker's sparse event labels `(batch, L + 2, max_rows, 2)`, on the
    host (NumPy), for `GPLinkerEventHeads` and
    `SparseGlobalPointerCrossentropy()` (its default `tril_mask=True`).

    Channel l < L lists the spans of the arguments labelled `labels[l]`;
    channel L the head links `(min(s1, s2), max(s1, s2))` and channel L + 1
    the tail links of every pair of distinct arguments of one event (see the
    module docstring). A row shared by several arguments or events is listed
    once.

    Args:
        batch_events: one sequence per sample of events; an event a sequence
            of `(event_type, role, (start, end))`, all of one event type. An
            empty sample is a sentence without events.
        labels: the L `(event_type, role)` pairs (`event_labels_from_schema`);
            an argument whose pair is not among them is a `ValueError`.
        lengths: optional token count of each sample; a span ending at or
            after it is a `ValueError`.
        max_rows: rows per channel; `None` takes the largest count in the
            batch (at least 1); more is a `ValueError`.
        padding: -1 (default) or `"bert4keras"` (rows `(0, 0)`; a real
            `(0, 0)` row is then a `ValueError`).

    Returns:
        int32 NumPy array `(len(batch_events), L + 2, max_rows, 2)`.

    Examples:
    >>> labels = [("quake", "trigger"), ("quake", "time")]
    >>> y = events_to_sparse_labels([[[("quake", "trigger", (0, 4)), ("quake", "time", (9, 12))]]], labels)
    >>> y[0, :, 0].tolist()   # trigger span, time span, head link, tail link
    [[0, 4], [9, 12], [0, 9], [4, 12]]
    """
    labels = _check_labels(labels)
    index = {pair: k for k, pair in enumerate(labels)}
    max_rows = _validation.check_int("max_rows", max_rows, minimum=1, allow_none=True)
    padding = check_padding(padding)
    if isinstance(batch_events, (str, bytes)) or not isinstance(batch_events, Iterable):
        raise TypeError(
            f"`batch_events` must be a sequence (one per sample) of events, got {type(batch_events).__name__}."
        )
    batch_events = list(batch_events)
    lengths = _check_lengths(lengths, len(batch_events), "batch_events")
    channels = len(labels) + 2
    per_sample = []
    for b, sample in enumerate(batch_events):
        where = f"`batch_events[{b}]`"
        rows = [dict() for _ in range(channels)]  # dicts: ordered sets
        for event in _parse_events(sample, where):
            for event_type, role, span in event:
                if (event_type, role) not in index:
                    raise ValueError(f"{where} has argument label {(event_type, role)!r}, not in `labels`.")
                if lengths is not None and span[1] >= lengths[b]:
                    raise ValueError(
                        f"{where} has argument {(event_type, role, span)!r} outside the sentence of "
                        f"{lengths[b]} tokens."
                    )
                rows[index[event_type, role]][span] = None
            for i, (_, _, (s1, e1)) in enumerate(event):
                for _, _, (s2, e2) in event[i + 1 :]:
                    rows[-2][min(s1, s2), max(s1, s2)] = None
                    rows[-1][min(e1, e2), max(e1, e2)] = None
        if padding == "bert4keras" and any((0, 0) in r for r in rows):
            raise ValueError(
                f"{where} has a row (0, 0), which padding='bert4keras' reserves for padding; use padding=-1."
            )
        per_sample.append(rows)
    return _pack_span_rows(
        per_sample, channels, max_rows, padding, "max_rows", "rows in one channel", "labels"
    )


def maximal_cliques(num_nodes: int, edges: Iterable[tuple[int, int]]) -> list[tuple[int, ...]]:
    """Every maximal clique of an undirected graph on nodes `0 .. num_nodes - 1`
    (Bron-Kerbosch with Tomita's pivot), sorted, each a sorted tuple. An
    isolated node is a clique of one; self-loops are ignored.

    The worst case is 3^(n/3) cliques (Moon-Moser graphs); event graphs are
    small and sparse (`benchmarks/bench_gplinker.py` measures decoding).

    Examples:
    >>> maximal_cliques(4, [(0, 1), (1, 2), (0, 2), (2, 3)])
    [(0, 1, 2), (2, 3)]
    """
    num_nodes = _validation.check_int("num_nodes", num_nodes, minimum=0)
    adjacent: list[set[int]] = [set() for _ in range(num_nodes)]
    for u, v in edges:
        u, v = _position(u), _position(v)
        if not (0 <= u < num_nodes and 0 <= v < num_nodes):
            raise ValueError(f"edge {(u, v)} names a node outside 0 .. {num_nodes - 1}.")
        if u != v:
            adjacent[u].add(v)
            adjacent[v].add(u)
    found: list[tuple[int, ...]] = []
    # An explicit stack: recursion depth would be the clique size, but a
    # dense graph of a few thousand candidates must not hit Python's limit.
    stack = [(frozenset(), set(range(num_nodes)), set())] if num_nodes else []
    while stack:
        clique, candidates, excluded = stack.pop()
        if not candidates:
            if not excluded:
                found.append(tuple(sorted(clique)))
            continue
        pivot = max(candidates | excluded, key=lambda u: len(adjacent[u] & candidates))
        for v in list(candidates - adjacent[pivot]):
            stack.append((clique | {v}, candidates & adjacent[v], excluded & adjacent[v]))
            candidates.remove(v)
            excluded.add(v)
    return sorted(found)


def split_event_scores(scores: Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(batch, L + 2, n, n)` -> (arguments `(batch, L, n, n)`, head links
    `(batch, n, n)`, tail links `(batch, n, n)`), NumPy."""
    scores = _as_numpy(scores)
    if scores.ndim != 4 or scores.shape[-1] != scores.shape[-2] or scores.shape[1] < 3:
        raise ValueError(
            f"GPLinker event scores must have shape (batch, labels + 2, n, n) with labels >= 1, got {scores.shape}."
        )
    return scores[:, :-2], scores[:, -2], scores[:, -1]


def decode_events(
    scores: Tensor,
    labels: Sequence[tuple[Hashable, Hashable]],
    threshold: float = 0.0,
    trigger_role: Hashable | None = None,
) -> list[list[Event]]:
    """Events predicted by GPLinker event scores, one sorted list per sample.

    Arguments are the spans scoring above `threshold` in the L label
    channels. Within each event type, two distinct arguments are linked iff
    the head link at `(min(s1, s2), max(s1, s2))` and the tail link at
    `(min(e1, e2), max(e1, e2))` both exceed `threshold`; each maximal clique
    of those links is one event (Su 2022, https://kexue.fm/archives/8926).
    With `trigger_role`, events without an argument of that role are dropped,
    as in the article's evaluation. Masked scores (`MASK_VALUE`) are never
    selected.

    Args:
        scores: `(batch, L + 2, n, n)` logits of `GPLinkerEventHeads`.
        labels: the L `(event_type, role)` pairs, in channel order.
        threshold: a finite float above the masking value.
        trigger_role: optional role name of triggers.

    Returns:
        A list (one per sample) of sorted lists of events; an event is a
        sorted tuple of `(event_type, role, (start, end))`.

    Examples:
    >>> import numpy as np
    >>> labels = [("quake", "trigger"), ("quake", "time")]
    >>> s = np.full((1, 4, 6, 6), -5.0)
    >>> s[0, 0, 1, 2] = s[0, 1, 4, 5] = 3.0   # trigger (1, 2), time (4, 5)
    >>> s[0, 2, 1, 4] = s[0, 3, 2, 5] = 3.0   # head link (1, 4), tail link (2, 5)
    >>> decode_events(s, labels, trigger_role="trigger")
    [[(('quake', 'trigger', (1, 2)), ('quake', 'time', (4, 5)))]]
    """
    labels = _check_labels(labels)
    threshold = _validation.check_float("threshold", threshold, minimum=MASK_VALUE, min_inclusive=False)
    arguments, heads, tails = split_event_scores(scores)
    if arguments.shape[1] != len(labels):
        raise ValueError(
            f"`labels` has {len(labels)} pairs, the scores {arguments.shape[1]} label channels "
            f"({arguments.shape[1] + 2} in all)."
        )
    out = []
    for b in range(arguments.shape[0]):
        by_type: dict[Hashable, list[Argument]] = {}
        for label, start, end in np.argwhere(arguments[b] > threshold):
            event_type, role = labels[label]
            by_type.setdefault(event_type, []).append((event_type, role, (int(start), int(end))))
        events = []
        for nodes in by_type.values():
            starts = np.array([a[2][0] for a in nodes])
            ends = np.array([a[2][1] for a in nodes])
            lo_s, hi_s = np.minimum.outer(starts, starts), np.maximum.outer(starts, starts)
            lo_e, hi_e = np.minimum.outer(ends, ends), np.maximum.outer(ends, ends)
            linked = (heads[b][lo_s, hi_s] > threshold) & (tails[b][lo_e, hi_e] > threshold)
            edges = zip(*np.nonzero(np.triu(linked, 1)))
            for clique in maximal_cliques(len(nodes), edges):
                event = tuple(sorted((nodes[k] for k in clique), key=_sort_key))
                if trigger_role is None or any(a[1] == trigger_role for a in event):
                    events.append(event)
        out.append(sorted(events, key=lambda e: [_sort_key(a) for a in e]))
    return out


def event_prf(
    gold: Iterable[Iterable[Iterable[Argument]]],
    pred: Iterable[Iterable[Iterable[Argument]]],
    trigger_role: Hashable = "trigger",
) -> dict[str, tuple[float, float, float]]:
    """Event-level and argument-level micro (precision, recall, F1) over a
    corpus, on the host, as the article evaluates DuEE.

    - `"event"`: a predicted event is correct when its set of arguments
      (trigger included) equals that of a gold event of the same sentence.
    - `"argument"`: the set of `(event_type, role, span)` of a sentence,
      triggers excluded, against the gold set.

    Duplicates count once; a score is 0 when its denominator is.

    Examples:
    >>> gold = [[[("quake", "trigger", (0, 4)), ("quake", "time", (9, 12))]]]
    >>> pred = [[[("quake", "trigger", (0, 4)), ("quake", "time", (9, 10))]]]
    >>> {k: [round(x, 2) for x in v] for k, v in event_prf(gold, pred).items()}
    {'event': [0.0, 0.0, 0.0], 'argument': [0.0, 0.0, 0.0]}
    """
    gold = [_parse_events(g, f"`gold[{i}]`") for i, g in enumerate(gold)]
    pred = [_parse_events(p, f"`pred[{i}]`") for i, p in enumerate(pred)]
    if len(gold) != len(pred):
        raise ValueError(f"`gold` has {len(gold)} sentences and `pred` {len(pred)}: they must match.")
    counts = {"event": [0, 0, 0], "argument": [0, 0, 0]}
    for g, p in zip(gold, pred):
        for key, (gs, ps) in {
            "event": (set(g), set(p)),
            "argument": (
                {a for e in g for a in e if a[1] != trigger_role},
                {a for e in p for a in e if a[1] != trigger_role},
            ),
        }.items():
            c = counts[key]
            c[0], c[1], c[2] = c[0] + len(gs & ps), c[1] + len(ps), c[2] + len(gs)
    out = {}
    for key, (tp, n_pred, n_gold) in counts.items():
        out[key] = (
            tp / n_pred if n_pred else 0.0,
            tp / n_gold if n_gold else 0.0,
            2 * tp / (n_pred + n_gold) if n_pred + n_gold else 0.0,
        )
    return out
