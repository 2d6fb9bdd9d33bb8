"""GPLinker labels and triple decoding: brute force over every (subject,
relation, object) on random scores, overlapping and nested triples, label ->
scores -> decode round trips, bad input."""

import itertools

import numpy as np
import pytest

from keras_tricks import _numerics, losses, metrics, spans, testing

MASK = _numerics.mask_value("float32")


def _brute_force(s, threshold=0.0):
    """Every triple the definition admits: loops over all index tuples."""
    b_, c_, n, _ = s.shape
    r_ = (c_ - 2) // 2
    out = []
    for b in range(b_):
        found = set()
        for a, e, c, d in itertools.product(range(n), repeat=4):
            for r in range(r_):
                if (
                    s[b, 0, a, e] > threshold
                    and s[b, 1, c, d] > threshold
                    and s[b, 2 + r, a, c] > threshold
                    and s[b, 2 + r_ + r, e, d] > threshold
                ):
                    found.add(((a, e), r, (c, d)))
        out.append(found)
    return out


def _random_scores(seed, batch=3, relations=2, n=5, p=0.5):
    rng = np.random.default_rng(seed)
    s = np.where(rng.random((batch, 2 + 2 * relations, n, n)) < p, 1.0, -1.0)
    s = s * rng.uniform(0.1, 3.0, size=s.shape)
    upper = np.triu(np.ones((n, n), bool))
    s[:, :2] = np.where(upper, s[:, :2], MASK)  # the entity head's tril mask
    s[-1, :, :, n - 1] = s[-1, :, n - 1, :] = MASK  # last sample padded by one
    return s.astype("float32")


def _label_scores(labels, n):
    """Scores +1 on every label row, -1 elsewhere (the perfect model)."""
    dense = testing.to_numpy(spans.sparse_spans_to_dense(labels, n, tril_mask=False))
    return np.where(dense > 0.5, 1.0, -1.0).astype("float32")


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("threshold", [0.0, 0.9])
def test_decode_matches_brute_force(seed, threshold):
    s = _random_scores(seed)
    got = spans.decode_triples(s, threshold=threshold)
    expected = _brute_force(s, threshold)
    assert [set(g) for g in got] == expected
    assert all(len(g) == len(set(g)) for g in got)
    assert all(g == sorted(g) for g in got)
    assert sum(map(len, expected)) > 5  # the case is not empty


def test_decode_with_names_and_backend_tensor():
    import keras

    s = _random_scores(1, relations=2)
    by_index = spans.decode_triples(keras.ops.convert_to_tensor(s))
    by_name = spans.decode_triples(s, relations=["a", "b"])
    assert [[(x, "ab"[r], y) for x, r, y in t] for t in by_index] == by_name
    with pytest.raises(ValueError, match="relations"):
        spans.decode_triples(s, relations=["a"])
    with pytest.raises(ValueError, match="2 \\+ 2"):
        spans.decode_triples(np.zeros((1, 3, 4, 4)))
    with pytest.raises(ValueError, match="threshold"):
        spans.decode_triples(s, threshold=float("nan"))


OVERLAPPING = [
    # one entity in several relations (subject of two, object of a third)
    ((0, 1), 0, (5, 6)),
    ((0, 1), 1, (8, 8)),
    ((8, 8), 2, (0, 1)),
    # the same pair in two relations
    ((3, 3), 0, (5, 6)),
    ((3, 3), 2, (5, 6)),
    # overlapping and nested entities: (2, 4) contains (3, 3), object before subject
    ((2, 4), 1, (0, 0)),
    ((9, 9), 0, (9, 9)),  # subject = object span
]


def test_label_layout_by_hand():
    y = spans.triples_to_sparse_labels([[((0, 1), 1, (4, 4)), ((0, 1), 0, (2, 3))]], relations=2)
    assert y.shape == (1, 6, 2, 2)
    as_sets = [{tuple(r) for r in ch if r[0] >= 0} for ch in y[0]]
    assert as_sets == [{(0, 1)}, {(4, 4), (2, 3)}, {(0, 2)}, {(0, 4)}, {(1, 3)}, {(1, 4)}]


def test_overlapping_nested_round_trip_f1_is_one():
    gold = [OVERLAPPING, [], [((1, 2), 1, (0, 0))]]
    labels = spans.triples_to_sparse_labels(gold, relations=3, lengths=[10, 10, 10])
    decoded = spans.decode_triples(_label_scores(labels, 10))
    assert [set(d) for d in decoded] == [set(g) for g in gold]
    assert metrics.triple_prf(gold, decoded) == (1.0, 1.0, 1.0)


def test_random_gold_round_trip():
    # Random triples over disjoint entities: labels -> scores -> decode is exact.
    rng = np.random.default_rng(3)
    gold = []
    for _ in range(20):
        cuts = np.sort(rng.choice(np.arange(1, 20), size=8, replace=False))
        ents = [(int(a), int(a + rng.integers(0, 2))) for a in cuts[::2]]
        triples = {(ents[i], int(rng.integers(4)), ents[j]) for i, j in rng.integers(0, len(ents), (3, 2))}
        gold.append(sorted(triples))
    labels = spans.triples_to_sparse_labels(gold, relations=4)
    decoded = spans.decode_triples(_label_scores(labels, 22))
    assert decoded == gold
    assert metrics.triple_prf(gold, decoded) == (1.0, 1.0, 1.0)


def test_labels_admit_a_spurious_triple_when_boundaries_are_shared():
    # Documented limit of GPLinker's factorisation: head link of one triple,
    # tail link of the other, both spans annotated entities.
    # (0, 3) and (4, 7) are annotated entities (relation 1) nesting the
    # entities of two relation-0 triples.
    gold = [[((0, 1), 0, (4, 5)), ((2, 3), 0, (6, 7)), ((0, 3), 1, (4, 7))]]
    labels = spans.triples_to_sparse_labels(gold, relations=2)
    decoded = set(spans.decode_triples(_label_scores(labels, 8))[0])
    assert decoded - set(gold[0]) == {((0, 3), 0, (4, 7))}
    assert set(gold[0]) <= decoded


def test_empty_triple_lists_are_all_padding():
    y = spans.triples_to_sparse_labels([[], []], relations=["x"])
    assert y.shape == (2, 4, 1, 2) and (y == -1).all()
    assert spans.triples_to_sparse_labels([], relations=2).shape == (0, 6, 1, 2)
    assert spans.triples_to_sparse_labels([[]], 1, padding="bert4keras").tolist() == [[[[0, 0]]] * 4]


def test_bad_input_is_a_clear_error():
    good = ((0, 1), 0, (2, 2))
    with pytest.raises(ValueError, match="outside the sentence of 2 tokens"):
        spans.triples_to_sparse_labels([[good]], 1, lengths=[2])
    with pytest.raises(ValueError, match="'likes', not one of"):
        spans.triples_to_sparse_labels([[((0, 1), "likes", (2, 2))]], ["born_in"])
    with pytest.raises(ValueError, match="0 <= relation < 2"):
        spans.triples_to_sparse_labels([[((0, 1), 2, (2, 2))]], 2)
    with pytest.raises(TypeError, match="index or a name"):
        spans.triples_to_sparse_labels([[((0, 1), "born_in", (2, 2))]], 2)
    with pytest.raises(ValueError, match="start <= end"):
        spans.triples_to_sparse_labels([[((3, 1), 0, (2, 2))]], 1)
    with pytest.raises(ValueError, match="start <= end"):
        spans.triples_to_sparse_labels([[((0, 1), 0, (-1, 2))]], 1)
    for bad in [((0, 1.5), 0, (2, 2)), ((0, True), 0, (2, 2)), ((0, 1), 0), "abc"]:
        with pytest.raises(TypeError, match="batch_triples\\[0\\]"):
            spans.triples_to_sparse_labels([[bad]], 1)
    with pytest.raises(TypeError, match="batch_triples\\[0\\]"):
        spans.triples_to_sparse_labels([5], 1)
    with pytest.raises(ValueError, match="max_rows"):
        spans.triples_to_sparse_labels([[good, ((3, 3), 0, (2, 2))]], 1, max_rows=1)
    with pytest.raises(ValueError, match="bert4keras"):
        spans.triples_to_sparse_labels([[((0, 0), 0, (2, 2))]], 1, padding="bert4keras")
    with pytest.raises(ValueError, match="lengths"):
        spans.triples_to_sparse_labels([[good]], 1, lengths=[4, 4])
    with pytest.raises(ValueError, match="distinct"):
        spans.triples_to_sparse_labels([[good]], ["a", "a"])
    with pytest.raises(TypeError, match="relations"):
        spans.triples_to_sparse_labels([[good]], "a")
    with pytest.raises(ValueError, match="relations"):
        spans.triples_to_sparse_labels([[good]], 0)


def test_sparse_loss_counts_reversed_link_rows_with_tril_mask_false():
    rng = np.random.default_rng(0)
    y_pred = rng.normal(size=(2, 3, 4, 4)).astype("float32")
    rows = np.array([[[[2, 0], [1, 3]]] * 3, [[[0, 0], [-1, -1]]] * 3], "int32")
    dense = np.zeros((2, 3, 4, 4), "float32")
    dense[0, :, 2, 0] = dense[0, :, 1, 3] = dense[1, :, 0, 0] = 1
    expected = losses.GlobalPointerCrossentropy()(dense, y_pred)
    got = losses.SparseGlobalPointerCrossentropy(tril_mask=False)(rows, y_pred)
    np.testing.assert_allclose(testing.to_numpy(got), testing.to_numpy(expected), rtol=1e-6)
    dense[0, :, 2, 0] = 0  # the default ignores the reversed row (2, 0)
    np.testing.assert_allclose(
        testing.to_numpy(losses.SparseGlobalPointerCrossentropy()(rows, y_pred)),
        testing.to_numpy(losses.GlobalPointerCrossentropy()(dense, y_pred)),
        rtol=1e-6,
    )
    cfg = losses.SparseGlobalPointerCrossentropy(tril_mask=False).get_config()
    assert cfg["tril_mask"] is False
    assert losses.SparseGlobalPointerCrossentropy.from_config(cfg).tril_mask is False
    with pytest.raises(TypeError, match="tril_mask"):
        losses.SparseGlobalPointerCrossentropy(tril_mask=1)


def test_valid_rows_without_tril_mask():
    rows = np.array([[0, 1], [2, 0], [-1, 2], [3, 4], [4, 1]])
    assert spans.valid_span_rows(rows, 4, tril_mask=False).tolist() == [True, True, False, False, False]
    assert spans.valid_span_rows(rows, 4).tolist() == [True, False, False, False, False]


def _np_span_loss(dense, s):
    # float64 reference: log(1 + sum_neg e^s) + log(1 + sum_pos e^-s) per
    # channel over unmasked scores, mean over channels, mean over the batch.
    s = s.astype(np.float64)
    keep = s != MASK
    s = np.where(keep, s, 0.0)
    pos = np.where(keep & (dense > 0.5), np.exp(-s), 0.0).sum(axis=(-1, -2))
    neg = np.where(keep & (dense < 0.5), np.exp(s), 0.0).sum(axis=(-1, -2))
    return float((np.log1p(pos) + np.log1p(neg)).mean())


@pytest.mark.harness
def test_gplinker_loss_through_harness():
    gold = [OVERLAPPING, [], [((1, 2), 1, (0, 0))], [((4, 4), 2, (3, 3))]]
    labels = spans.triples_to_sparse_labels(gold, relations=3)
    s = _random_scores(5, batch=4, relations=3, n=10)
    dense = testing.to_numpy(spans.sparse_spans_to_dense(labels, 10, tril_mask=False))
    got = losses.SparseGlobalPointerCrossentropy(tril_mask=False)(labels, s)
    np.testing.assert_allclose(testing.to_numpy(got), _np_span_loss(dense, s), rtol=1e-5)
    testing.check_loss(losses.SparseGlobalPointerCrossentropy, {"tril_mask": False}, labels, s, tolerance=4.0)


def test_triples_from_entity_indices_spert_records():
    ents = [{"type": "Peop", "start": 0, "end": 2}, {"type": "Loc", "start": 5, "end": 6}, (3, 4)]
    rels = [{"type": "Live_In", "head": 0, "tail": 1}, {"type": "Kill", "head": 2, "tail": 0}]
    assert spans.triples_from_entity_indices(ents, rels) == [
        ((0, 1), "Live_In", (5, 5)),
        ((3, 3), "Kill", (0, 1)),
    ]
    assert spans.triples_from_entity_indices(
        [(0, 1), (3, 3)], [{"type": "x", "head": 1, "tail": 0}], end_exclusive=False
    ) == [((3, 3), "x", (0, 1))]
    assert spans.triples_from_entity_indices(ents, []) == []
    with pytest.raises(ValueError, match="relations\\[0\\]"):
        spans.triples_from_entity_indices(ents, [{"type": "x", "head": 0, "tail": 3}])
    with pytest.raises(TypeError, match="relations\\[0\\]"):
        spans.triples_from_entity_indices(ents, [{"type": "x", "head": 0}])
    with pytest.raises(TypeError, match="entities\\[0\\]"):
        spans.triples_from_entity_indices([{"start": 0.5, "end": 2}], [])


def test_triples_from_mentions_duie_style():
    text = list("周杰伦出生于台湾，周杰伦的妻子是昆凌")
    spo = [("周杰伦", "出生地", "台湾"), ("周杰伦", "妻子", "昆凌")]
    got = spans.triples_from_mentions(text, spo)
    assert got == [((0, 2), "出生地", (6, 7)), ((0, 2), "妻子", (16, 17))]
    y = spans.triples_to_sparse_labels([got], ["出生地", "妻子"], lengths=[len(text)])
    assert spans.decode_triples(_label_scores(y, len(text)), relations=["出生地", "妻子"]) == [got]
    words = "John Smith works for Acme".split()
    assert spans.triples_from_mentions(words, [(["John", "Smith"], "Work_For", ["Acme"])]) == [
        ((0, 1), "Work_For", (4, 4))
    ]
    with pytest.raises(ValueError, match="'王菲' does not occur"):
        spans.triples_from_mentions(text, [("王菲", "妻子", "昆凌")])
    with pytest.raises(ValueError, match="does not occur"):
        spans.triples_from_mentions(text, [("", "妻子", "昆凌")])
    with pytest.raises(TypeError, match="spo_list\\[0\\]"):
        spans.triples_from_mentions(text, [("周杰伦", "妻子")])
