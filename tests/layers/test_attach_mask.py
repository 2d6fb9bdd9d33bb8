"""AttachMask: x passes through unchanged, carrying the given padding mask
as its Keras mask (keras_hub's backbones take the padding as an input)."""

import keras
import numpy as np
import pytest

from keras_tricks import testing
from keras_tricks.layers import AttachMask

PADDING = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], "int32")


def _numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x), "float64")


def test_attach_mask_passes_x_through_with_the_mask():
    x = np.arange(24, dtype="float32").reshape(2, 3, 4)
    layer = AttachMask()
    np.testing.assert_array_equal(_numpy(layer([x, PADDING[:, :3]])), x)
    mask = layer.compute_mask([x, np.array([[1, 0, 2], [0, 0, 1]], "int32")])
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(mask), [[True, False, True], [False, False, True]]
    )
    with pytest.raises(ValueError, match="padding_mask"):
        layer([x, PADDING])
    with pytest.raises(ValueError, match=r"\[x, padding_mask\]"):
        layer(x)
    assert AttachMask.from_config(layer.get_config()).get_config() == layer.get_config()


@pytest.mark.harness
def test_attach_mask_through_the_harness():
    x = np.random.default_rng(2).normal(size=(2, 5, 4)).astype("float32")
    padding = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], "int32")
    testing.check_layer(
        AttachMask,
        {},
        [x, padding],
        expected_output_mask=padding.astype(bool),
        checks=("call", "dtypes", "serialization", "fit"),
    )
