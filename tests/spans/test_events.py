"""GPLinker event extraction on the host: the clique search against an
independent enumeration, decoding against a brute force over every argument
subset on random scores, labels -> scores -> decode round trips (shared,
overlapping and nested arguments), hand-computed labels and scores, and bad
input."""

import itertools

import numpy as np
import pytest

from keras_tricks.spans import (
    decode_events,
    event_labels_from_schema,
    event_prf,
    events_from_duee,
    events_to_sparse_labels,
    maximal_cliques,
)

LABELS = [
    ("attack", "trigger"),
    ("attack", "agent"),
    ("attack", "target"),
    ("meet", "trigger"),
    ("meet", "who"),
]


def brute_force_cliques(n, edges):
    adj = {(u, v) for u, v in edges} | {(v, u) for u, v in edges}
    cliques = [
        set(s)
        for k in range(1, n + 1)
        for s in itertools.combinations(range(n), k)
        if all((u, v) in adj for u, v in itertools.combinations(s, 2))
    ]
    return sorted(tuple(sorted(c)) for c in cliques if not any(c < d for d in cliques))


@pytest.mark.parametrize("seed", range(40))
def test_maximal_cliques_match_an_enumeration_of_every_subset(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 10))
    p = rng.uniform(0.1, 0.9)
    edges = [(u, v) for u, v in itertools.combinations(range(n), 2) if rng.uniform() < p]
    assert maximal_cliques(n, edges) == brute_force_cliques(n, edges)


def test_maximal_cliques_of_a_moon_moser_graph():
    # Complete 3-partite K(3,3,3): 3^3 = 27 maximal cliques, the worst case for 9 nodes.
    part = [k // 3 for k in range(9)]
    edges = [(u, v) for u, v in itertools.combinations(range(9), 2) if part[u] != part[v]]
    cliques = maximal_cliques(9, edges)
    assert len(cliques) == 27 and all(len(c) == 3 for c in cliques)
    assert maximal_cliques(3, [(0, 0), (1, 2), (2, 1)]) == [(0,), (1, 2)]


def brute_force_events(scores, labels, threshold, trigger_role):
    """Every argument set the definition admits: all candidates above the
    threshold of one type, pairwise linked, and no other candidate of that
    type linked to all of them."""
    L = len(labels)
    out = []
    for b in range(scores.shape[0]):
        cands = [
            (labels[l][0], labels[l][1], (i, j))
            for l in range(L)
            for i in range(scores.shape[2])
            for j in range(scores.shape[3])
            if scores[b, l, i, j] > threshold
        ]

        def linked(a, c):
            (s1, e1), (s2, e2) = a[2], c[2]
            return (
                scores[b, L, min(s1, s2), max(s1, s2)] > threshold
                and scores[b, L + 1, min(e1, e2), max(e1, e2)] > threshold
            )

        events = []
        for t in {c[0] for c in cands}:
            nodes = [c for c in cands if c[0] == t]
            for k in range(1, len(nodes) + 1):
                for sub in itertools.combinations(nodes, k):
                    if not all(linked(a, c) for a, c in itertools.combinations(sub, 2)):
                        continue
                    if any(all(linked(o, a) for a in sub) for o in nodes if o not in sub):
                        continue
                    if trigger_role is None or any(a[1] == trigger_role for a in sub):
                        events.append(tuple(sorted(sub, key=lambda a: (a[0], a[2], a[1]))))
        out.append(sorted(events, key=lambda e: [(a[0], a[2], a[1]) for a in e]))
    return out


@pytest.mark.parametrize("seed", range(25))
@pytest.mark.parametrize("trigger_role", [None, "trigger"])
def test_decoding_matches_brute_force_on_random_scores(seed, trigger_role):
    rng = np.random.default_rng(seed)
    n = 5
    scores = rng.normal(-2.0, 1.0, size=(2, len(LABELS) + 2, n, n))
    # Sparse argument candidates (brute force enumerates their subsets), dense-ish links.
    scores[:, : len(LABELS)] += 3.2 * (rng.uniform(size=(2, len(LABELS), n, n)) < 0.12)
    scores[:, len(LABELS) :] += 3.0 * (rng.uniform(size=(2, 2, n, n)) < 0.6)
    scores[:, :, np.tril_indices(n, -1)[0], np.tril_indices(n, -1)[1]] = -8192.0
    got = decode_events(scores, LABELS, threshold=0.0, trigger_role=trigger_role)
    assert got == brute_force_events(scores, LABELS, 0.0, trigger_role)


def dense_scores(y, n, labels):
    """Gold sparse labels -> logits +5 on each listed row, -5 elsewhere."""
    s = np.full((y.shape[0], y.shape[1], n, n), -5.0)
    for b, c, k in itertools.product(*map(range, y.shape[:3])):
        i, j = y[b, c, k]
        if i >= 0:
            s[b, c, i, j] = 5.0
    return s


def test_round_trip_shared_overlapping_and_nested_arguments():
    a = [  # one attack: the agent's span nests the trigger's; overlapping target
        ("attack", "trigger", (2, 2)),
        ("attack", "agent", (0, 3)),
        ("attack", "target", (3, 5)),
    ]
    b = [("attack", "trigger", (7, 7)), ("attack", "agent", (0, 3)), ("attack", "target", (8, 9))]
    c = [("meet", "trigger", (6, 6)), ("meet", "who", (0, 3)), ("meet", "who", (8, 9))]
    gold = [[a, b, c], [], [[("meet", "trigger", (1, 1))]]]
    y = events_to_sparse_labels(gold, LABELS, lengths=[10, 4, 3])
    got = decode_events(dense_scores(y, 10, LABELS), LABELS, trigger_role="trigger")
    norm = [[tuple(sorted(e, key=lambda t: (t[0], t[2], t[1]))) for e in s] for s in gold]
    norm = [sorted(s, key=lambda e: [(t[0], t[2], t[1]) for t in e]) for s in norm]
    assert got == [norm[0], [], norm[2]]
    assert event_prf(gold, got) == {"event": (1.0, 1.0, 1.0), "argument": (1.0, 1.0, 1.0)}


@pytest.mark.parametrize("seed", range(20))
def test_round_trip_on_random_events_gives_f1_one(seed):
    # Events of one type take disjoint start and end positions, so no links cross them and
    # each event is exactly one maximal clique; events of different types may share anything.
    rng = np.random.default_rng(seed)
    n, gold = 16, []
    for _ in range(3):
        events = []
        for t, roles in (("attack", ["agent", "target"]), ("meet", ["who"])):
            free = list(rng.permutation(n))
            for _ in range(int(rng.integers(0, 3))):
                args = []
                for role in ["trigger"] + [r for r in roles if rng.uniform() < 0.7]:
                    if len(free) < 2:
                        break
                    s, e = sorted((free.pop(), free.pop()))
                    args.append((t, role, (int(s), int(e))))
                if args and args[0][1] == "trigger":
                    events.append(args)
        gold.append(events)
    y = events_to_sparse_labels(gold, LABELS)
    got = decode_events(dense_scores(y, n, LABELS), LABELS, trigger_role="trigger")
    assert event_prf(gold, got) == {
        "event": (1.0, 1.0, 1.0) if any(gold) else (0.0, 0.0, 0.0),
        "argument": event_prf(gold, gold)["argument"],
    }
    assert [len(s) for s in got] == [len(s) for s in gold]


def test_a_nested_event_of_the_same_type_is_lost_as_documented():
    big = [("meet", "trigger", (0, 0)), ("meet", "who", (2, 3)), ("meet", "who", (5, 5))]
    small = big[:2]
    y = events_to_sparse_labels([[big, small]], LABELS)
    got = decode_events(dense_scores(y, 6, LABELS), LABELS)
    assert got == [[tuple(big)]]


def test_labels_by_hand():
    event = [("attack", "agent", (4, 6)), ("attack", "trigger", (1, 2)), ("attack", "target", (0, 0))]
    y = events_to_sparse_labels([[event]], LABELS)
    assert y.shape == (1, 7, 3, 2)
    rows = {c: sorted(tuple(r) for r in y[0, c] if r[0] >= 0) for c in range(7)}
    assert rows[0] == [(1, 2)] and rows[1] == [(4, 6)] and rows[2] == [(0, 0)]
    assert rows[3] == rows[4] == []
    # starts 4, 1, 0 and ends 6, 2, 0, each pair as (min, max)
    assert rows[5] == [(0, 1), (0, 4), (1, 4)]
    assert rows[6] == [(0, 2), (0, 6), (2, 6)]
    with pytest.raises(ValueError, match="bert4keras"):
        events_to_sparse_labels([[event]], LABELS, padding="bert4keras")


def test_event_prf_by_hand():
    e1 = [("attack", "trigger", (1, 1)), ("attack", "agent", (0, 0))]
    e2 = [("meet", "trigger", (5, 5)), ("meet", "who", (3, 4))]
    gold = [[e1, e2], []]
    pred = [[e1, [("meet", "trigger", (5, 5)), ("meet", "who", (3, 3))]], [[("meet", "trigger", (2, 2))]]]
    scores = event_prf(gold, pred)
    # events: 1 correct of 3 predicted, 2 gold; arguments: agent right, who wrong, no trigger counts.
    assert scores["event"] == pytest.approx((1 / 3, 1 / 2, 2 / 5))
    assert scores["argument"] == pytest.approx((1 / 2, 1 / 2, 1 / 2))
    assert event_prf([[]], [[]]) == {"event": (0.0, 0.0, 0.0), "argument": (0.0, 0.0, 0.0)}


def test_duee_records_and_schema():
    rec = {
        "text": "AB attacked CD at noon",
        "event_list": [
            {
                "event_type": "attack",
                "trigger": "attacked",
                "trigger_start_index": 3,
                "arguments": [
                    {"role": "agent", "argument": "AB", "argument_start_index": 0},
                    {"role": "target", "argument": "CD", "argument_start_index": 12},
                ],
            }
        ],
    }
    (event,) = events_from_duee(rec)
    assert event == (
        ("attack", "agent", (0, 1)),
        ("attack", "trigger", (3, 10)),
        ("attack", "target", (12, 13)),
    )
    # Truncated to 12 characters: the target is cut away, the event stays; at 8 the trigger goes with it.
    assert events_from_duee(rec, max_len=12) == [event[:2]]
    assert events_from_duee(rec, max_len=8) == []
    bad = {**rec, "event_list": [{**rec["event_list"][0], "trigger_start_index": 4}]}
    with pytest.raises(ValueError, match="not at index 4"):
        events_from_duee(bad)
    with pytest.raises(TypeError, match="record"):
        events_from_duee("text")
    schema = [{"event_type": "attack", "role_list": [{"role": "agent"}, {"role": "target"}]}]
    assert event_labels_from_schema(schema) == LABELS[:3]
    with pytest.raises(ValueError, match="trigger_role"):
        event_labels_from_schema(schema, trigger_role="agent")


@pytest.mark.parametrize(
    "events, kwargs, error, match",
    [
        ([[[("attack", "pilot", (0, 1))]]], {}, ValueError, "not in `labels`"),
        ([[[("attack", "agent", (0, 9))]]], {"lengths": [5]}, ValueError, "outside the sentence"),
        ([[[("attack", "agent", (3, 1))]]], {}, ValueError, "start <= end"),
        ([[[("attack", "agent", (1.5, 2))]]], {}, TypeError, "integer positions"),
        ([[[("attack", "agent", (True, 2))]]], {}, TypeError, "integer positions"),
        ([[[("attack", "agent", (0, 1)), ("meet", "who", (2, 2))]]], {}, ValueError, "mixes event types"),
        ([[[]]], {}, ValueError, "without arguments"),
        ([None], {}, TypeError, "batch_events\\[0\\]"),
        ("abc", {}, TypeError, "batch_events"),
        ([[[("attack", "agent", (0, 1))]]], {"lengths": [5, 6]}, ValueError, "lengths"),
        (
            [[[("attack", "agent", (0, 1)), ("attack", "target", (2, 2))]]],
            {"max_rows": 0},
            ValueError,
            "max_rows",
        ),
    ],
)
def test_bad_labels_input(events, kwargs, error, match):
    with pytest.raises(error, match=match):
        events_to_sparse_labels(events, LABELS, **kwargs)


def test_bad_decoding_input():
    s = np.zeros((1, 7, 4, 4))
    with pytest.raises(ValueError, match="`labels` has 2 pairs"):
        decode_events(s, LABELS[:2])
    with pytest.raises(ValueError, match="shape"):
        decode_events(np.zeros((1, 7, 4, 3)), LABELS)
    with pytest.raises(ValueError, match="threshold"):
        decode_events(s, LABELS, threshold=-1e9)
    with pytest.raises(TypeError, match="labels"):
        decode_events(s, "attack")
    with pytest.raises(ValueError, match="distinct"):
        decode_events(s, [("a", "b"), ("a", "b")])
    with pytest.raises(ValueError, match="node outside"):
        maximal_cliques(2, [(0, 2)])
    with pytest.raises(ValueError, match="must match"):
        event_prf([[]], [[], []])
