import numpy as np
import pytest

from keras_tricks import _numerics, layers, testing


def test_decode_spans_nested_and_masked():
    s = np.full((2, 3, 5, 5), -2.0, "float32")
    s[0, 1, 0, 4] = s[0, 1, 1, 2] = 1.5  # nested, same type
    s[0, 2, 1, 2] = 0.1  # same span, another type
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


def _brute_force_spans(scores, threshold, max_span_length):
    rows = []
    b, h, n, _ = scores.shape
    for bi in range(b):
        for hi in range(h):
            for i in range(n):
                for j in range(n):
                    if scores[bi, hi, i, j] > threshold and (
                        max_span_length is None or j - i + 1 <= max_span_length
                    ):
                        rows.append([bi, hi, i, j])
    return rows


@pytest.mark.parametrize("max_span_length", [None, 1, 2, 3, np.int64(5), 7, 100])
def test_decode_spans_max_span_length_matches_enumeration(max_span_length):
    rng = np.random.default_rng(int(max_span_length or 0))
    s = rng.normal(size=(3, 2, 7, 7)).astype("float32")
    s[np.broadcast_to(np.tril(np.ones((7, 7), bool), -1), s.shape)] = _numerics.mask_value("float32")
    expected = _brute_force_spans(s.astype("float64"), 0.25, max_span_length)
    got = layers.decode_spans(s, threshold=0.25, max_span_length=max_span_length)
    assert got.tolist() == expected
    assert len(expected) > 0
    if max_span_length is not None and max_span_length < 7:
        # the limit removes something here: the test is not vacuous
        assert len(expected) < len(_brute_force_spans(s.astype("float64"), 0.25, None))


def test_decode_spans_max_span_length_on_unmasked_scores():
    # raw scores without the tril mask: (end < start) entries have length <= 0
    # and are never above a limit, as the docstring's formula says
    s = np.full((1, 1, 4, 4), 1.0)
    got = layers.decode_spans(s, max_span_length=2)
    assert got.tolist() == _brute_force_spans(s, 0.0, 2)
    assert [0, 0, 3, 0] in got.tolist() and [0, 0, 0, 2] not in got.tolist()


@pytest.mark.parametrize(
    "bad, error",
    [
        (0, ValueError),
        (-3, ValueError),
        (np.int32(0), ValueError),
        (2.0, TypeError),
        ("3", TypeError),
        (True, TypeError),
        (np.float64(2), TypeError),
    ],
)
def test_decode_spans_max_span_length_validation(bad, error):
    with pytest.raises(error, match="max_span_length"):
        layers.decode_spans(np.zeros((1, 1, 2, 2)), max_span_length=bad)
