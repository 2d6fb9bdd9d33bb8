import numpy as np
import pytest

from keras_tricks.data import sequence_padding


def _reference(inputs, length, value, seq_dims, mode, truncating):
    """Element by element, in float64, straight from the definition."""
    arrays = [np.asarray(x, dtype="float64") for x in inputs]
    trailing = arrays[0].shape[seq_dims:]
    out = np.full((len(arrays), *length, *trailing), float(value))
    for b, x in enumerate(arrays):
        for pos in np.ndindex(*x.shape[:seq_dims]):
            dst = []
            for d, p in enumerate(pos):
                n, L = x.shape[d], length[d]
                if truncating == "post" and p >= L:
                    break
                if truncating == "pre" and p < n - L:
                    break
                q = p if truncating == "post" else p - max(n - L, 0)
                kept = min(n, L)
                dst.append(q if mode == "post" else L - kept + q)
            else:
                out[(b, *dst)] = x[pos]
    return out


def test_post_and_pre_by_hand():
    x = [[1, 2, 3], [4], []]
    np.testing.assert_array_equal(sequence_padding(x), [[1, 2, 3], [4, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(
        sequence_padding(x, mode="pre", value=-1), [[1, 2, 3], [-1, -1, 4], [-1, -1, -1]]
    )
    # bert4keras truncation keeps the head; truncating="pre" keeps the tail.
    np.testing.assert_array_equal(sequence_padding(x, length=2), [[1, 2], [4, 0], [0, 0]])
    np.testing.assert_array_equal(sequence_padding(x, length=2, truncating="pre"), [[2, 3], [4, 0], [0, 0]])
    np.testing.assert_array_equal(sequence_padding(x, length=2, mode="pre"), [[1, 2], [0, 4], [0, 0]])


@pytest.mark.parametrize("mode", ["post", "pre"])
@pytest.mark.parametrize("truncating", ["post", "pre"])
@pytest.mark.parametrize("length", [None, 3, (2, 5)])
def test_two_sequence_axes_with_trailing_axis_match_reference(mode, truncating, length):
    rng = np.random.default_rng(0)
    inputs = [rng.normal(size=(rng.integers(0, 5), rng.integers(1, 6), 2)) for _ in range(6)]
    out = sequence_padding(inputs, length=length, value=7.5, seq_dims=2, mode=mode, truncating=truncating)
    full = (
        tuple(max(x.shape[d] for x in inputs) for d in range(2))
        if length is None
        else (length, length)
        if isinstance(length, int)
        else length
    )
    expected = _reference(inputs, full, 7.5, 2, mode, truncating)
    assert out.shape == expected.shape
    np.testing.assert_array_equal(out, expected)


def test_dtypes():
    ids = [np.array([1, 2], "int32"), np.array([3], "int32")]
    assert sequence_padding(ids).dtype == np.int32
    assert sequence_padding([[True], [False, True]]).dtype == np.bool_
    # An empty sequence (NumPy makes it float64) does not turn ids into floats.
    assert sequence_padding([[], [1, 2]]).dtype.kind == "i"
    # A value the dtype cannot hold widens the result instead of being rounded.
    out = sequence_padding(ids, value=0.5)
    assert out.dtype.kind == "f" and out[1, 1] == 0.5
    assert sequence_padding(ids, dtype="float32").dtype == np.float32


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"mode": "middle"}, "mode"),
        ({"truncating": "x"}, "truncating"),
        ({"seq_dims": 0}, "seq_dims"),
        ({"seq_dims": 3}, "seq_dims"),
        ({"length": -1}, "length"),
        ({"length": (2, 2)}, "length"),
        ({"length": "abc"}, "length"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sequence_padding([[1.0, 2.0], [3.0]], **kwargs)


def test_bad_inputs():
    with pytest.raises(ValueError, match="at least one"):
        sequence_padding([])
    with pytest.raises(ValueError, match="must agree"):
        sequence_padding([np.zeros((2, 3)), np.zeros((2, 4))])
    with pytest.raises(ValueError, match="kind"):
        sequence_padding([[1.5], [2.5]], dtype="int32")
    with pytest.raises(ValueError, match="value"):
        sequence_padding([[1], [2, 3]], dtype="int32", value=0.5)


@pytest.mark.parametrize("value", ["x", None, b"0", [0], np.zeros(1)])
def test_value_must_be_a_number(value):
    with pytest.raises(TypeError, match="`value`"):
        sequence_padding([[1, 2], [3]], value=value)


@pytest.mark.parametrize("value, expected", [(np.int64(-1), -1), (np.float32(0.5), 0.5), (7, 7)])
def test_numpy_and_python_scalars_are_accepted_as_value(value, expected):
    out = sequence_padding([[1, 2], [3]], value=value)
    assert out[1, 1] == expected and out[0].tolist() == [1, 2]
