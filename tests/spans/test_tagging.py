"""BIO/BIOES tags <-> span rows, the host Viterbi, and scoring CRF output
with SpanF1 through span_rows_to_scores."""

import itertools

import numpy as np
import pytest

from keras_tricks import metrics, spans


@pytest.mark.parametrize("scheme", ["BIO", "BIOES"])
def test_round_trip(scheme):
    rng = np.random.default_rng(0)
    for _ in range(50):
        n, types = 8, 3
        cuts = sorted(rng.choice(np.arange(n + 1), 4, replace=False))
        sample = [(int(rng.integers(types)), int(a), int(b) - 1) for a, b in zip(cuts[::2], cuts[1::2])]
        tags = spans.spans_to_tags([sample], types, n, scheme)
        rows = spans.tags_to_spans(tags, types, scheme)
        assert sorted(tuple(r[1:]) for r in rows.tolist()) == sorted(sample)


def test_hand_cases_and_malformed():
    # BIO: O=0, B-t=1+2t, I-t=2+2t.
    tags = np.array([[1, 2, 2, 0, 2, 2, 3, 4, 1, 1, -1]])
    assert spans.tags_to_spans(tags, 2).tolist() == [
        [0, 0, 0, 2],
        [0, 0, 4, 5],  # I without B starts an entity (conlleval / seqeval default)
        [0, 0, 8, 8],  # B after B: two entities
        [0, 0, 9, 9],
        [0, 1, 6, 7],
    ]
    # I of another type ends the entity and starts one of its own type.
    assert spans.tags_to_spans(np.array([[1, 4]]), 2).tolist() == [[0, 0, 0, 0], [0, 1, 1, 1]]
    # BIOES: B=1, I=2, E=3, S=4 for type 0.
    bioes = np.array([[1, 2, 3, 4, 2, 3, 3, 0, 1]])
    assert spans.tags_to_spans(bioes, 1, "BIOES").tolist() == [
        [0, 0, 0, 2],
        [0, 0, 3, 3],
        [0, 0, 4, 5],  # I without B
        [0, 0, 6, 6],  # E without B
        [0, 0, 8, 8],  # B without E, cut at the end
    ]
    assert spans.tags_to_spans(np.zeros((2, 0), int), 1).shape == (0, 4)


def test_bad_input():
    with pytest.raises(ValueError, match="tags"):
        spans.tags_to_spans(np.array([[5]]), 2)
    with pytest.raises(ValueError, match="scheme"):
        spans.tags_to_spans(np.array([[0]]), 2, "IOB")
    with pytest.raises(ValueError, match="overlapping"):
        spans.spans_to_tags([[(0, 0, 2), (1, 2, 3)]], 2, 5)
    with pytest.raises(ValueError, match="seq_len"):
        spans.spans_to_tags([[(0, 3, 5)]], 2, 5)
    with pytest.raises(ValueError, match="transitions"):
        spans.viterbi_decode_numpy(np.zeros((1, 2, 3)), np.zeros((2, 2)))


def test_host_viterbi_brute_force():
    rng = np.random.default_rng(1)
    e, trans = rng.normal(size=(3, 4, 3)), rng.normal(size=(3, 3))
    start, end = rng.normal(size=3), rng.normal(size=3)
    e[1, 2:] = spans.MASK_VALUE  # padding by the layer's sentinel
    got = spans.viterbi_decode_numpy(e, trans, None, start, end)
    for b in range(3):
        n = 2 if b == 1 else 4
        best = max(
            itertools.product(range(3), repeat=n),
            key=lambda p: (
                start[p[0]]
                + end[p[-1]]
                + sum(e[b, i, y] for i, y in enumerate(p))
                + sum(trans[a, c] for a, c in zip(p[:-1], p[1:]))
            ),
        )
        assert got[b, :n].tolist() == list(best) and (got[b, n:] == -1).all()


def test_span_f1_scores_crf_rows_like_global_pointer():
    gold = np.array([[1, 2, 0, 3], [0, 3, 4, 0]])
    pred = np.array([[1, 2, 0, 0], [0, 3, 4, 0]])
    types, n = 2, 4
    true_rows = spans.tags_to_spans(gold, types)
    pred_rows = spans.tags_to_spans(pred, types)
    m = metrics.SpanF1()
    m.update_state(
        (spans.span_rows_to_scores(true_rows, 2, types, n) > 0).astype("float32"),
        spans.span_rows_to_scores(pred_rows, 2, types, n),
    )
    # gold: 3 entities, predicted 2, both correct: P=1, R=2/3.
    np.testing.assert_allclose(float(m.result()), 2 * (2 / 3) / (1 + 2 / 3), rtol=1e-6)
