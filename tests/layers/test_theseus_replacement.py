import os
import tempfile

import keras
import numpy as np
import pytest
from keras import ops

from keras_tricks import callbacks, layers, testing
from keras_tricks.layers import TheseusReplacement, extract_successor


def _dense(units, activation=None, dtype="float32", seed=0):
    return keras.layers.Dense(
        units, activation=activation, dtype=dtype, kernel_initializer=keras.initializers.GlorotUniform(seed)
    )


def _config(layer):
    return keras.saving.serialize_keras_object(layer)


@pytest.mark.harness
def test_theseus_through_harness():
    x = np.random.default_rng(0).normal(size=(4, 5, 3)).astype("float32")
    mask = np.array([[True] * 5, [True] * 3 + [False] * 2] * 2)
    testing.check_layer(
        TheseusReplacement,
        {
            "predecessor": [_config(_dense(3, "tanh", seed=1)), _config(_dense(3, seed=2))],
            "successor": _config(_dense(3, seed=3)),
            "replace_rate": 0.5,
            "seed": 3,
        },
        x,
        mask=mask,
        # Keras 3.15 on PyTorch cannot make any SeedGenerator (Dropout's
        # included) inside `keras.device(...)`: its int state variable asks
        # for requires_grad. Not this layer's doing.
        checks=[c for c in testing.ALL_CHECKS if not (keras.backend.backend() == "torch" and c == "devices")],
    )


def _np_dense(layer, x, activation=None):
    kernel, bias = (np.asarray(w, np.float64) for w in layer.get_weights())
    y = x @ kernel + bias
    return np.tanh(y) if activation == "tanh" else y


def _module(rate, seed=0):
    """A module of two Dense blocks (tanh, linear) and a one-Dense successor,
    with the float64 NumPy reference of each block (JAX computes in float32
    unless x64 is on, so the layer runs in float32 on every backend)."""
    first, second, small = _dense(3, "tanh", seed=1), _dense(3, seed=2), _dense(3, seed=3)
    module = TheseusReplacement([first, second], small, replace_rate=rate, seed=seed)
    x = np.random.default_rng(5).normal(size=(4, 3)).astype("float32")
    module(x, training=True)  # builds both blocks
    x64 = x.astype(np.float64)
    old = _np_dense(second, _np_dense(first, x64, "tanh"))
    new = _np_dense(small, x64)
    return module, x, old, new


def _blocks(module, x):
    return (ops.convert_to_numpy(module.predecessor(x)), ops.convert_to_numpy(module.successor(x)))


@pytest.mark.parametrize("rate, branch", [(0.0, 0), (1.0, 1)])
def test_rate_zero_and_one_are_exactly_one_block(rate, branch):
    module, x, old, new = _module(rate)
    np.testing.assert_allclose(_blocks(module, x)[branch], (old, new)[branch], rtol=1e-5, atol=1e-6)
    for _ in range(5):
        got = ops.convert_to_numpy(module(x, training=True))
        np.testing.assert_array_equal(got, _blocks(module, x)[branch])


def test_seeded_fraction_of_successor_draws_and_each_output_is_one_block():
    module, x, old, new = _module(0.3, seed=11)
    old_out, new_out = _blocks(module, x)
    assert not np.allclose(old, new, atol=1e-3)
    draws = 200
    chosen = []
    for _ in range(draws):
        got = ops.convert_to_numpy(module(x, training=True))
        is_new, is_old = np.array_equal(got, new_out), np.array_equal(got, old_out)
        assert is_new != is_old  # exactly one block, for the whole batch
        chosen.append(is_new)
    fraction = np.mean(chosen)
    sigma = np.sqrt(0.3 * 0.7 / draws)
    assert abs(fraction - 0.3) < 4 * sigma, fraction
    # Seeded: the same seed gives the same sequence of draws.
    again, *_ = _module(0.3, seed=11)
    repeat = [np.array_equal(ops.convert_to_numpy(again(x, training=True)), new_out) for _ in range(20)]
    assert repeat == chosen[:20]


def test_inference_uses_successor_or_the_forced_block():
    module, x, old, new = _module(0.0)
    np.testing.assert_allclose(ops.convert_to_numpy(module(x)), new, rtol=1e-5, atol=1e-6)
    module.inference = "predecessor"
    np.testing.assert_allclose(ops.convert_to_numpy(module(x, training=False)), old, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="inference"):
        module.inference = "teacher"


def test_predecessor_is_frozen():
    module, x, *_ = _module(0.5)
    assert [w.path for w in module.trainable_weights] == [w.path for w in module.successor.trainable_weights]
    assert not module.predecessor.trainable
    free = TheseusReplacement([_dense(3)], _dense(3), freeze_predecessor=False)
    free(np.zeros((1, 3), "float32"), training=True)
    assert len(free.trainable_weights) == 4


def test_gradient_is_the_predecessors_when_it_ran():
    module, x, old, new = _module(0.0)

    def objective(inputs):
        return ops.sum(module(inputs, training=True))

    _, (gx,) = testing.value_and_grad(objective, ops.convert_to_tensor(x))
    # d/dx sum(tanh(x K1 + b1) K2 + b2), by hand, in float64.
    (k1, b1), (k2, _) = (
        [np.asarray(w, np.float64) for w in l.get_weights()] for l in module.predecessor.layers
    )
    h = np.tanh(x.astype(np.float64) @ k1 + b1)
    expected = ((1 - h**2) * k2.sum(axis=1)) @ k1.T
    np.testing.assert_allclose(ops.convert_to_numpy(gx), expected, rtol=1e-5, atol=1e-6)


class _ZeroMasked(keras.layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, x, mask=None):
        return x if mask is None else x * ops.cast(mask, x.dtype)[..., None]


@pytest.mark.parametrize("rate", [0.0, 1.0])
def test_mask_reaches_both_blocks(rate):
    module = TheseusReplacement([_ZeroMasked()], [_dense(2), _ZeroMasked()], replace_rate=rate)
    x = np.ones((2, 4, 2), "float32")
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 0]], bool)
    got = ops.convert_to_numpy(module(x, mask=mask, training=True))
    assert np.all(got[~mask] == 0)
    assert np.array_equal(ops.convert_to_numpy(module.compute_mask(x, mask)), mask)


def test_bad_arguments():
    with pytest.raises(TypeError, match="predecessor"):
        TheseusReplacement("dense", _dense(2))
    with pytest.raises(ValueError, match="successor"):
        TheseusReplacement(_dense(2), [])
    block = _dense(2)
    with pytest.raises(ValueError, match="different"):
        TheseusReplacement(block, block)
    with pytest.raises(ValueError, match="replace_rate"):
        TheseusReplacement(_dense(2), _dense(2), replace_rate=1.5)
    with pytest.raises(TypeError, match="replace_rate"):
        TheseusReplacement(_dense(2), _dense(2), replace_rate=True)
    with pytest.raises(ValueError, match="inference"):
        TheseusReplacement(_dense(2), _dense(2), inference="both")
    with pytest.raises(TypeError, match="seed"):
        TheseusReplacement(_dense(2), _dense(2), seed=0.5)
    with pytest.raises(ValueError, match="output shape"):
        TheseusReplacement(_dense(2), _dense(3))(np.zeros((1, 2), "float32"), training=True)
    with pytest.raises(ValueError, match="TheseusReplacement"):
        extract_successor(keras.Sequential([keras.Input((2,)), _dense(2)]))


def _model(rate=0.5):
    inputs = keras.Input((4,))
    module = TheseusReplacement(
        [_dense(4, "tanh", seed=1), _dense(4, seed=2)], _dense(4, seed=3), replace_rate=rate, seed=0
    )
    model = keras.Model(inputs, _dense(1, seed=4)(module(inputs)))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    return model


def test_extract_successor_and_save_load():
    model = _model()
    x = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
    model.fit(x, x[:, :1], epochs=1, batch_size=8, verbose=0)
    small = extract_successor(model)
    assert len(small.weights) == 4  # the successor's and the head's kernel and bias
    np.testing.assert_array_equal(small.predict(x, verbose=0), model.predict(x, verbose=0))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.keras")
        model.save(path)
        loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert not layers.theseus_modules(loaded)[0].predecessor.trainable


def test_scheduler_follows_the_curriculum_and_resumes():
    model = _model()
    schedule = callbacks.TheseusScheduler(base_rate=0.25, slope=0.125)
    x = np.zeros((8, 4), "float32")
    model.fit(x, x[:, :1], epochs=1, batch_size=2, verbose=0, callbacks=[schedule])  # steps 0..3
    module = layers.theseus_modules(model)[0]
    assert float(ops.convert_to_numpy(module.replace_rate)) == pytest.approx(0.25 + 0.125 * 3)
    resumed = callbacks.TheseusScheduler(base_rate=0.25, slope=0.125)  # a fresh callback, same model
    model.fit(x, x[:, :1], epochs=1, batch_size=2, verbose=0, callbacks=[resumed])  # steps 4..7
    assert float(ops.convert_to_numpy(module.replace_rate)) == 1.0
    assert [resumed.rate_at(t) for t in (0, 2, 6, 100)] == [0.25, 0.5, 1.0, 1.0]
    assert callbacks.TheseusScheduler(0.5, 0.0).rate_at(10**6) == 0.5


def test_scheduler_bad_arguments():
    with pytest.raises(ValueError, match="base_rate"):
        callbacks.TheseusScheduler(base_rate=-0.1)
    with pytest.raises(ValueError, match="slope"):
        callbacks.TheseusScheduler(slope=-1.0)
    with pytest.raises(TypeError, match="initial_step"):
        callbacks.TheseusScheduler(initial_step=1.5)
    model = keras.Sequential([keras.Input((4,)), _dense(1)])
    model.compile("sgd", "mse")
    with pytest.raises(ValueError, match="TheseusReplacement"):
        model.fit(np.zeros((2, 4)), np.zeros((2, 1)), verbose=0, callbacks=[callbacks.TheseusScheduler()])


@pytest.mark.harness
def test_scheduler_through_harness():
    testing.check_callback(
        lambda: callbacks.TheseusScheduler(base_rate=0.5, slope=0.05),
        model_factory=_model,
        data=(np.random.default_rng(0).normal(size=(32, 4)).astype("float32"), np.zeros((32, 1), "float32")),
    )
