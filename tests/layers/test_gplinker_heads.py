"""GPLinkerHeads: channels equal three separately built GlobalPointer heads
with the same weights (RoPE and tril mask on the entity head only), config,
bad input, and the harness."""

import numpy as np
import pytest

from keras_tricks import _numerics, layers, testing

MASK_VALUE = _numerics.mask_value("float32")


def _inputs(batch=4, n=5, hidden=6, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, n, hidden)).astype("float32")


def _mask(batch=4, n=5):
    return np.arange(n)[None, :] < np.array([n, n - 2, 1, n][:batch])[:, None]


@pytest.mark.parametrize("efficient", [False, True])
def test_channels_are_the_three_heads(efficient):
    x, mask = _inputs(), _mask()
    heads = layers.GPLinkerHeads(relations=3, head_size=4, efficient=efficient)
    out = testing.to_numpy(heads(x, mask=mask))
    assert out.shape == (4, 8, 5, 5)
    cls = layers.EfficientGlobalPointer if efficient else layers.GlobalPointer
    ent = cls(2, 4)
    link = cls(3, 4, use_rope=False, tril_mask=False)
    ent(x), link(x)
    ent.set_weights(heads.entity_head.get_weights())
    np.testing.assert_array_equal(testing.to_numpy(ent(x, mask=mask)), out[:, :2])
    for sub, part in ((heads.head_link, out[:, 2:5]), (heads.tail_link, out[:, 5:])):
        link.set_weights(sub.get_weights())
        np.testing.assert_array_equal(testing.to_numpy(link(x, mask=mask)), part)
    # Link heads keep the lower triangle (object before subject); the entity head masks it.
    full = np.where(mask[0])[0]
    assert (out[0, 2:][:, full[:, None], full[None, :]] != MASK_VALUE).all()
    assert (out[0, :2][:, 1, 0] == MASK_VALUE).all()
    # Padding is masked in every channel.
    assert (out[1, :, 3:, :] == MASK_VALUE).all() and (out[1, :, :, 3:] == MASK_VALUE).all()


def test_config_and_bad_input():
    heads = layers.GPLinkerHeads(relations=2, head_size=8, efficient=True, use_bias=False, name="re")
    clone = layers.GPLinkerHeads.from_config(heads.get_config())
    assert clone.get_config() == heads.get_config()
    assert heads.compute_output_shape((None, 7, 3)) == (None, 6, 7, 7)
    with pytest.raises(ValueError, match="relations"):
        layers.GPLinkerHeads(relations=0)
    with pytest.raises(TypeError, match="relations"):
        layers.GPLinkerHeads(relations=2.0)
    with pytest.raises(TypeError, match="efficient"):
        layers.GPLinkerHeads(2, efficient="yes")
    with pytest.raises(ValueError, match="head_size"):
        layers.GPLinkerHeads(2, head_size=3)  # the entity head's RoPE needs it even


@pytest.mark.harness
def test_through_harness():
    testing.check_layer(
        layers.GPLinkerHeads,
        {"relations": 2, "head_size": 4},
        _inputs(),
        mask=_mask(),
        output_mask=lambda m: m[:, None, :, None] & m[:, None, None, :],
        expected_output_mask=None,
        tolerance=4.0,
        expect_compute_dtype_outputs=False,
    )
