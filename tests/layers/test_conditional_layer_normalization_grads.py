"""Gradients of ConditionalLayerNormalization against a float64 NumPy
reference (the analytic backward pass of layer normalization), for the
per-example gain and bias that PyTorch computes in its own kernels
(`_backend.layer_norm_per_example`) and the other backends by autograd."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_tricks import _backend, testing
from keras_tricks.layers import ConditionalLayerNormalization

RNG = np.random.default_rng(7124)


def _reference_grads(x, cond, cot, w, epsilon):
    x, cond, cot = (np.asarray(a, np.float64) for a in (x, cond, cot))
    mean = x.mean(-1, keepdims=True)
    rstd = 1.0 / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + epsilon)
    normed = (x - mean) * rstd
    rows = tuple(range(1, x.ndim - 1))
    grads = {}
    dgain = (cot * normed).sum(rows) if "gamma" in w else None
    dbias = cot.sum(rows) if "beta" in w else None
    gain = w["gamma"] + cond @ w["gamma_kernel"] if "gamma" in w else np.ones(x.shape[-1])
    gain = gain.reshape(gain.shape[:1] + (1,) * len(rows) + gain.shape[1:]) if gain.ndim == 2 else gain
    dnormed = cot * gain
    grads["x"] = rstd * (
        dnormed - dnormed.mean(-1, keepdims=True) - normed * (dnormed * normed).mean(-1, keepdims=True)
    )
    grads["cond"] = 0.0
    if dgain is not None:
        grads.update(gamma=dgain.sum(0), gamma_kernel=cond.T @ dgain)
        grads["cond"] = grads["cond"] + dgain @ w["gamma_kernel"].T
    if dbias is not None:
        grads.update(beta=dbias.sum(0), beta_kernel=cond.T @ dbias)
        grads["cond"] = grads["cond"] + dbias @ w["beta_kernel"].T
    return grads


def _grads(layer, x, cond, cot):
    variables = list(layer.trainable_variables)

    def loss(x, cond, weights):
        with keras.StatelessScope(state_mapping=list(zip(variables, weights))):
            return ops.sum(layer([x, cond]) * ops.convert_to_tensor(cot))

    weights = [ops.convert_to_tensor(v.value) for v in variables]
    _, (gx, gc, gw) = testing.value_and_grad(
        loss, ops.convert_to_tensor(x), ops.convert_to_tensor(cond), weights
    )
    grads = {"x": gx, "cond": gc}
    grads.update({v.name: g for v, g in zip(variables, gw)})
    return {k: testing.to_numpy(g).astype(np.float64) for k, g in grads.items()}


_TORCH_ONLY = pytest.mark.skipif(
    keras.backend.backend() != "torch",
    reason="other ranks take the same autograd path elsewhere (and each new shape costs JAX seconds)",
)


@pytest.mark.parametrize(
    "x_shape, kwargs",
    [
        ((3, 5, 8), {}),
        pytest.param((2, 3, 4, 8), {}, marks=_TORCH_ONLY),
        pytest.param((4, 8), {}, marks=_TORCH_ONLY),
        ((3, 5, 8), {"center": False}),
        ((3, 5, 8), {"scale": False}),
    ],
)
def test_gradients_match_the_float64_reference(x_shape, kwargs):
    x = (0.5 + 2.0 * RNG.normal(size=x_shape)).astype("float32")
    cond = RNG.normal(size=(x_shape[0], 3)).astype("float32")
    cot = RNG.normal(size=x_shape).astype("float32")
    layer = ConditionalLayerNormalization(**kwargs)
    layer([x, cond])
    weights = {}
    for v in layer.trainable_variables:
        value = RNG.normal(scale=0.5, size=tuple(v.shape)).astype("float32") + (v.name == "gamma")
        v.assign(value)
        weights[v.name] = value.astype(np.float64)
    got = _grads(layer, x, cond, cot)
    expected = _reference_grads(x, cond, cot, weights, layer.epsilon)
    assert sorted(got) == sorted(expected)
    for name in expected:
        # Sums over a few dozen products: a few float32 ulps of the largest term.
        scale = np.max(np.abs(expected[name])) + 1e-30
        np.testing.assert_allclose(got[name], expected[name], rtol=0, atol=1e-5 * scale, err_msg=name)


@_TORCH_ONLY
def test_second_order_gradients_build_a_graph(monkeypatch):
    # A gradient penalty differentiates the gradient: PyTorch's function then
    # differentiates the composite formula, which must agree with autograd of
    # the composite formula throughout.
    x = RNG.normal(size=(2, 4, 6)).astype("float32")
    cond = RNG.normal(size=(2, 3)).astype("float32")
    layer = ConditionalLayerNormalization(condition_initializer="random_normal")
    layer([x, cond])

    def penalty(t):
        _, _, (g,) = _backend.value_grad_and_aux(
            lambda v: (ops.sum(ops.square(layer([v, ops.convert_to_tensor(cond)]))), ()),
            [t],
            differentiable=True,
        )
        return ops.sum(ops.square(g))

    _, (fused,) = testing.value_and_grad(penalty, ops.convert_to_tensor(x))
    monkeypatch.setattr(_backend, "layer_norm_per_example", lambda *args: None)
    _, (composite,) = testing.value_and_grad(penalty, ops.convert_to_tensor(x))
    np.testing.assert_allclose(testing.to_numpy(fused), testing.to_numpy(composite), rtol=1e-4, atol=1e-5)
