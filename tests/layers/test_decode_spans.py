import numpy as np
import pytest

from keras_tricks import _numerics, layers, testing


def test_decode_spans_nested_and_masked():
    s = np.full((2, 3, 5, 5), -2.0, "float32")
    s[0, 1, 0, 4] = s[0, 1, 1, 2] = 1.5      # nested, same type
    s[0, 2, 1, 2] = 0.1                       # same span, another type
    s[1, 0, 3, 3] = 4.0
    s[1, 0, 4, 2] = _numerics.mask_value("float32")
    got = layers.decode_spans(s)
    expected = [[0, 1, 0, 4], [0, 1, 1, 2], [0, 2, 1, 2], [1, 0, 3, 3]]
    assert got.tolist() == expected
    assert got.dtype == np.int64
    assert layers.decode_spans(s, threshold=1.0).tolist() == [[0, 1, 0, 4], [0, 1, 1, 2], [1, 0, 3, 3]]


def test_decode_spans_from_layer_output_and_empty():
    x = np.random.default_rng(0).normal(size=(2, 4, 6)).astype("float32")
    scores = layers.GlobalPointer(2, 4)(x, mask=np.array([[1, 1, 1, 0]] * 2, bool))
    spans = layers.decode_spans(scores, threshold=-1e3)
    s = testing.to_numpy(scores)
    # every valid span (start <= end < 3) and only those
    assert len(spans) == 2 * 2 * 6
    assert np.all(spans[:, 2] <= spans[:, 3]) and np.all(spans[:, 3] < 3)
    assert layers.decode_spans(np.full((1, 1, 3, 3), -1.0)).shape == (0, 4)
    assert s.shape == (2, 2, 4, 4)


def test_decode_spans_bad_input():
    with pytest.raises(ValueError, match="scores"):
        layers.decode_spans(np.zeros((2, 3, 3)))
    with pytest.raises(ValueError, match="threshold"):
        layers.decode_spans(np.zeros((1, 1, 2, 2)), threshold=float("nan"))
    with pytest.raises(TypeError, match="threshold"):
        layers.decode_spans(np.zeros((1, 1, 2, 2)), threshold="zero")
