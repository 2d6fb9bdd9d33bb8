"""GPLinkerEventHeads: channels equal three separately built GlobalPointer
heads with the same weights (RoPE on the argument head only, the lower
triangle masked everywhere), config, bad input, the harness, and a short
training run whose decoded events reach the gold ones."""

import keras
import numpy as np
import pytest

from keras_tricks import _numerics, layers, losses, testing
from keras_tricks.spans import decode_events, event_prf, events_to_sparse_labels

MASK_VALUE = _numerics.mask_value("float32")


def _inputs(batch=4, n=5, hidden=6, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, n, hidden)).astype("float32")


def _mask(batch=4, n=5):
    return np.arange(n)[None, :] < np.array([n, n - 2, 1, n][:batch])[:, None]


@pytest.mark.parametrize("efficient", [False, True])
def test_channels_are_the_three_heads(efficient):
    x, mask = _inputs(), _mask()
    heads = layers.GPLinkerEventHeads(labels=3, head_size=4, efficient=efficient)
    out = testing.to_numpy(heads(x, mask=mask))
    assert out.shape == (4, 5, 5, 5)
    cls = layers.EfficientGlobalPointer if efficient else layers.GlobalPointer
    arg = cls(3, 4)
    link = cls(1, 4, use_rope=False)
    arg(x), link(x)
    arg.set_weights(heads.argument_head.get_weights())
    np.testing.assert_array_equal(testing.to_numpy(arg(x, mask=mask)), out[:, :3])
    for sub, part in ((heads.head_link, out[:, 3:4]), (heads.tail_link, out[:, 4:])):
        link.set_weights(sub.get_weights())
        np.testing.assert_array_equal(testing.to_numpy(link(x, mask=mask)), part)
    # Every channel masks the lower triangle and the padding.
    assert (out[0][:, 1, 0] == MASK_VALUE).all() and (out[0][:, 0, 1] != MASK_VALUE).all()
    assert (out[1, :, 3:, :] == MASK_VALUE).all() and (out[1, :, :, 3:] == MASK_VALUE).all()


def test_config_and_bad_input():
    heads = layers.GPLinkerEventHeads(labels=2, head_size=8, efficient=True, use_bias=False, name="ee")
    clone = layers.GPLinkerEventHeads.from_config(heads.get_config())
    assert clone.get_config() == heads.get_config()
    assert heads.compute_output_shape((None, 7, 3)) == (None, 4, 7, 7)
    with pytest.raises(ValueError, match="labels"):
        layers.GPLinkerEventHeads(labels=0)
    with pytest.raises(TypeError, match="labels"):
        layers.GPLinkerEventHeads(labels=[("a", "b")])
    with pytest.raises(TypeError, match="efficient"):
        layers.GPLinkerEventHeads(2, efficient="yes")
    with pytest.raises(ValueError, match="head_size"):
        layers.GPLinkerEventHeads(2, head_size=3)


@pytest.mark.harness
def test_through_harness():
    testing.check_layer(
        layers.GPLinkerEventHeads,
        {"labels": 3, "head_size": 4},
        _inputs(),
        mask=_mask(),
        output_mask=lambda m: m[:, None, :, None] & m[:, None, None, :],
        expected_output_mask=None,
        tolerance=4.0,
        expect_compute_dtype_outputs=False,
    )


LABELS = [("attack", "trigger"), ("attack", "agent"), ("meet", "trigger"), ("meet", "who")]


@pytest.mark.slow
def test_training_recovers_the_gold_events():
    # Memorise four sentences: the decoded events must become the gold ones (F1 = 1).
    keras.utils.set_random_seed(0)
    tokens = np.array([[1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 0, 0], [3, 2, 1, 6, 5, 4], [11, 12, 13, 0, 0, 0]])
    gold = [
        [[("attack", "trigger", (1, 1)), ("attack", "agent", (0, 0))], [("meet", "trigger", (4, 4))]],
        [[("meet", "trigger", (1, 1)), ("meet", "who", (0, 0)), ("meet", "who", (2, 3))]],
        [[("attack", "trigger", (3, 3)), ("attack", "agent", (4, 5))]],
        [],
    ]
    y = events_to_sparse_labels(gold, LABELS, lengths=(tokens > 0).sum(1))
    inputs = keras.Input((None,), dtype="int32")
    h = keras.layers.Embedding(14, 16, mask_zero=True)(inputs)
    h = keras.layers.Bidirectional(keras.layers.LSTM(16, return_sequences=True))(h)
    model = keras.Model(inputs, layers.GPLinkerEventHeads(len(LABELS), head_size=8)(h))
    model.compile(keras.optimizers.Adam(0.03), losses.SparseGlobalPointerCrossentropy())
    model.fit(tokens, y, epochs=60, batch_size=4, verbose=0)
    pred = decode_events(model.predict(tokens, verbose=0), LABELS, trigger_role="trigger")
    assert event_prf(gold, pred)["event"] == (1.0, 1.0, 1.0)
