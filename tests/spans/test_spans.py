"""keras_tricks.spans: the shared conventions, checked against the layers
that produce them and against hand-built labels."""

import numpy as np
import pytest

from keras_tricks import layers, spans, testing


def test_mask_value_is_what_the_heads_give_masked_spans():
    x = np.random.default_rng(0).normal(size=(1, 4, 8)).astype("float32")
    mask = np.array([[True, True, True, False]])
    for cls in (layers.GlobalPointer, layers.EfficientGlobalPointer):
        s = testing.to_numpy(cls(heads=2, head_size=4)(x, mask=mask))
        assert np.all(s[:, :, 3, :] == spans.MASK_VALUE)  # padded start
        assert np.all(s[:, :, 1, 0] == spans.MASK_VALUE)  # end < start
        assert np.all(
            s[:, :, :3, :3][np.triu(np.ones((3, 3), bool))[None, None].repeat(2, 1)] > spans.MASK_VALUE
        )
    assert spans.MASK_VALUE == -8192.0
    # exp() of it is exactly 0 in every float type the heads compute in
    assert np.exp(np.float32(spans.MASK_VALUE)) == 0.0


def _dense_reference(batch_spans, num_types, n):
    out = np.zeros((len(batch_spans), num_types, n, n), np.float32)
    for b, sample in enumerate(batch_spans):
        for t, s, e in sample:
            out[b, t, s, e] = 1.0
    return out


def test_sparse_labels_round_trip_to_dense():
    batch = [[(0, 1, 2), (1, 0, 0), (0, 1, 2)], [], [(1, 3, 4), (1, 0, 4), (0, 2, 2)]]
    labels = spans.spans_to_sparse_labels(batch, num_types=2)
    assert labels.shape == (3, 2, 2, 2) and labels.dtype == np.int32
    assert labels[1].tolist() == [[[-1, -1], [-1, -1]], [[-1, -1], [-1, -1]]]
    dense = testing.to_numpy(spans.sparse_spans_to_dense(labels, 5))
    np.testing.assert_array_equal(dense, _dense_reference(batch, 2, 5))
    b4k = spans.spans_to_sparse_labels([[(0, 1, 2)]], num_types=1, max_spans=3, padding="bert4keras")
    assert b4k.tolist() == [[[[1, 2], [0, 0], [0, 0]]]]
    dense = testing.to_numpy(spans.sparse_spans_to_dense(b4k, 3, padding="bert4keras"))
    np.testing.assert_array_equal(dense, _dense_reference([[(0, 1, 2)]], 1, 3))


def test_sparse_labels_feed_the_loss_like_dense_labels():
    from keras_tricks import losses

    batch = [[(0, 0, 1)], [(1, 2, 3), (0, 1, 1)]]
    scores = np.random.default_rng(1).normal(size=(2, 2, 4, 4)).astype("float32")
    sparse = losses.SparseGlobalPointerCrossentropy()(spans.spans_to_sparse_labels(batch, 2), scores)
    dense = losses.GlobalPointerCrossentropy()(_dense_reference(batch, 2, 4), scores)
    testing.assert_close(sparse, dense)


def test_valid_span_rows_is_the_documented_rule():
    rows = np.array([[0, 0], [2, 1], [-1, -1], [1, 3], [3, 4], [0, 3]])
    assert spans.valid_span_rows(rows, 4).tolist() == [True, False, False, True, False, True]
    assert spans.valid_span_rows(rows, 4, "bert4keras").tolist() == [False, False, False, True, False, True]


def test_sparse_labels_bad_input_is_named():
    with pytest.raises(ValueError, match="max_spans"):
        spans.spans_to_sparse_labels([[(0, 0, 1), (0, 2, 3)]], num_types=1, max_spans=1)
    with pytest.raises(ValueError, match="type"):
        spans.spans_to_sparse_labels([[(2, 0, 1)]], num_types=2)
    with pytest.raises(ValueError, match="start <= end"):
        spans.spans_to_sparse_labels([[(0, 3, 1)]], num_types=1)
    with pytest.raises(ValueError, match="reserves"):
        spans.spans_to_sparse_labels([[(0, 0, 0)]], num_types=1, padding="bert4keras")
    with pytest.raises(TypeError, match="triples"):
        spans.spans_to_sparse_labels([[("a", 0)]], num_types=1)
    with pytest.raises(TypeError, match="batch_spans"):
        spans.spans_to_sparse_labels(3, num_types=1)
    with pytest.raises(TypeError, match=r"batch_spans\[0\]"):
        spans.spans_to_sparse_labels([None], num_types=1)
    with pytest.raises(TypeError, match="triples"):
        spans.spans_to_sparse_labels([[(0, 1.5, 2)]], num_types=1)  # never rounded to 1
    with pytest.raises(TypeError, match="triples"):
        spans.spans_to_sparse_labels([[(0, True, 2)]], num_types=1)
    assert spans.spans_to_sparse_labels([[(np.int64(0), np.int32(1), 2)]], num_types=1).tolist() == [
        [[[1, 2]]]
    ]
    with pytest.raises(TypeError, match="num_types"):
        spans.spans_to_sparse_labels([[]], num_types=1.5)
    with pytest.raises(ValueError, match="padding"):
        spans.spans_to_sparse_labels([[]], num_types=1, padding=0)
    assert spans.spans_to_sparse_labels([[]], num_types=np.int64(2)).shape == (1, 2, 1, 2)
