"""ConditionalLayerNormalization: NumPy-scalar arguments and the migration
path for bert4keras's conditional LayerNormalization weights."""

import numpy as np
import pytest

from keras_tricks import layers, testing

# --- NumPy scalars and the validation rule ------------------------------------


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


# --- bert4keras's conditional LayerNormalization weights -----------------------


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
