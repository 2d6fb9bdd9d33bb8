"""Regression tests for the harness, squareplus and ConditionalLayerNormalization
defects found by outside testing (each failed on the code before its fix)."""

import keras
import numpy as np
import pytest

from keras_tricks import activations, layers, testing

# --- item 17: the harness cannot pass vacuously --------------------------------


@pytest.mark.parametrize("tolerance", [float("nan"), float("inf"), 0.0, -1.0])
def test_assert_close_refuses_vacuous_tolerances(tolerance):
    with pytest.raises(ValueError, match="tolerance"):
        testing.assert_close([1, 2], [1, 3], tolerance=tolerance)


def test_assert_close_still_fails_on_real_differences():
    with pytest.raises(testing.HarnessFailure):
        testing.assert_close([1, 2], [1, 3], tolerance=np.float32(1e3))
    with pytest.raises(testing.HarnessFailure, match="shape"):
        testing.assert_close(np.zeros(0), np.zeros(1))
    with pytest.raises(TypeError, match="tolerance"):
        testing.assert_close([1.0], [1.0], tolerance="1")


def test_harness_checks_refuse_vacuous_tolerances():
    with pytest.raises(ValueError, match="tolerance"):
        testing.check_activation(activations.squareplus, np.zeros((2, 3), "float32"), tolerance=float("nan"))
    with pytest.raises(ValueError, match="tolerance"):
        testing.check_layer(layers.SquarePlus, {}, np.zeros((2, 3), "float32"), tolerance=float("inf"))


# --- items 7 and 18: squareplus on empty inputs, at +-inf, NumPy scalars --------


def test_squareplus_on_empty_batches():
    x = np.zeros((0, 3), "float32")
    assert tuple(activations.squareplus(x).shape) == (0, 3)
    dense = keras.layers.Dense(2, activation=activations.squareplus)
    assert tuple(dense(x).shape) == (0, 2)
    assert tuple(layers.SquarePlus()(x).shape) == (0, 3)


def _grad(fn, x):
    backend = keras.backend.backend()
    x = keras.ops.convert_to_tensor(x)
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(x)
            y = keras.ops.sum(fn(x))
        return testing.to_numpy(tape.gradient(y, x))
    if backend == "jax":
        import jax

        return testing.to_numpy(jax.grad(lambda v: keras.ops.sum(fn(v)))(x))
    x = x.detach().clone().requires_grad_(True)
    keras.ops.sum(fn(x)).backward()
    return testing.to_numpy(x.grad)


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_squareplus_value_and_gradient_at_infinities(dtype):
    x = np.array([np.inf, -np.inf, 0.0, 1e4], dtype)
    y = testing.to_numpy(activations.squareplus(x))
    assert y[0] == np.inf and y[1] == 0.0 and y[2] == 1.0
    g = _grad(activations.squareplus, x)
    # f'(x) = (1 + x / sqrt(x^2 + b)) / 2: 1 at +inf, 0 at -inf, 1/2 at 0.
    np.testing.assert_array_equal(g[:3], np.array([1.0, 0.0, 0.5], dtype))
    assert np.isfinite(g).all()


def test_squareplus_takes_numpy_scalars():
    assert layers.SquarePlus(b=np.float32(2.0)).b == 2.0
    y = testing.to_numpy(activations.squareplus(np.array([0.0], "float32"), b=np.float64(4.0)))
    assert y[0] == 1.0  # sqrt(b) / 2
    with pytest.raises(TypeError, match="`b`"):
        activations.squareplus(np.zeros(2, "float32"), b="4")
    with pytest.raises(ValueError, match="`b`"):
        activations.squareplus(np.zeros(2, "float32"), b=np.float32("nan"))


# --- item 18: ConditionalLayerNormalization takes NumPy scalars ------------------


def test_cln_takes_numpy_scalars_and_names_bad_arguments():
    layer = layers.ConditionalLayerNormalization(epsilon=np.float32(1e-3), hidden_units=np.int64(4))
    assert layer.epsilon == pytest.approx(1e-3) and layer.hidden_units == 4
    with pytest.raises(TypeError, match="epsilon"):
        layers.ConditionalLayerNormalization(epsilon="1e-3")
    with pytest.raises(ValueError, match="epsilon"):
        layers.ConditionalLayerNormalization(epsilon=float("nan"))
    with pytest.raises(TypeError, match="hidden_units"):
        layers.ConditionalLayerNormalization(hidden_units=2.5)
    with pytest.raises(TypeError, match="center"):
        layers.ConditionalLayerNormalization(center="yes")


# --- item 19: bert4keras's conditional LayerNormalization weights ---------------


def _bert4keras_cln(x, cond, weights, epsilon, center, scale, hidden_units, act):
    """float64 NumPy transcription of the published math of bert4keras 0.11's
    `LayerNormalization(conditional=True)`: weights [beta, gamma, hidden,
    beta_dense, gamma_dense] (as present), no biases in the dense layers."""
    w = list(weights)
    beta = w.pop(0) if center else None
    gamma = w.pop(0) if scale else None
    if hidden_units:
        cond = act(cond @ w.pop(0))
    cond = cond[:, None, :]
    if center:
        beta = beta + cond @ w.pop(0)
    if scale:
        gamma = gamma + cond @ w.pop(0)
    out = x
    if center:
        out = out - out.mean(-1, keepdims=True)
    if scale:
        out = out / np.sqrt((out**2).mean(-1, keepdims=True) + epsilon) * gamma
    if center:
        out = out + beta
    return out


@pytest.mark.parametrize("hidden_units", [None, 4])
def test_cln_loads_bert4keras_weights(hidden_units):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 8))
    cond = rng.normal(size=(2, 3))
    c_dim = hidden_units or 3
    weights = [rng.normal(size=8), 1.0 + rng.normal(size=8)]
    if hidden_units:
        weights.append(rng.normal(size=(3, hidden_units)))
    weights += [rng.normal(size=(c_dim, 8)) * 0.3, rng.normal(size=(c_dim, 8)) * 0.3]
    expected = _bert4keras_cln(x, cond, weights, 1e-12, True, True, hidden_units, np.tanh)
    layer = layers.ConditionalLayerNormalization(
        epsilon=1e-12, hidden_units=hidden_units, **({"hidden_activation": "tanh"} if hidden_units else {})
    )
    layer.build([x.shape, cond.shape])
    layer.set_bert4keras_weights([w.astype("float32") for w in weights])
    got = testing.to_numpy(layer([x.astype("float32"), cond.astype("float32")]))
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-5)


def test_cln_bert4keras_weights_are_checked():
    layer = layers.ConditionalLayerNormalization()
    with pytest.raises(ValueError, match="built"):
        layer.set_bert4keras_weights([])
    layer.build([(None, 5, 8), (None, 3)])
    with pytest.raises(ValueError, match="4 arrays"):
        layer.set_bert4keras_weights([np.zeros(8)])
    with pytest.raises(ValueError, match="beta_kernel"):
        layer.set_bert4keras_weights([np.zeros(8), np.ones(8), np.zeros((4, 8)), np.zeros((3, 8))])
