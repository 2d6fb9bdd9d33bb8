"""squareplus's backend-specific paths: the hand-fused PyTorch function and
the XLA-compiled eager TensorFlow calls (accuracy itself is tested in
test_activations.py, on whichever path the backend takes)."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_tricks import _backend, testing
from keras_tricks.activations import squareplus

X = np.array([-1e3, -30.0, -2.0, -0.5, 0.5, 2.0, 30.0, 1e3], "float32")


def _second_derivative(x, b):
    return b / (2.0 * (x.astype(np.float64) ** 2 + b) ** 1.5)


@pytest.mark.parametrize("b", [4.0, 0.5])
def test_second_derivative_through_a_graph_building_backward_pass(b):
    # A gradient penalty differentiates the gradient: the PyTorch function's
    # backward then builds a graph instead of reusing the saved slope. (In
    # float32, f'' on the positive side is the derivative of a quantity close
    # to 1: an absolute error of about eps is all one can ask there.)
    def slope_sum(t):
        _, _, (g,) = _backend.value_grad_and_aux(
            lambda v: (ops.sum(squareplus(v, b=b)), ()), [t], differentiable=True
        )
        return ops.sum(g)

    _, (h,) = testing.value_and_grad(slope_sum, ops.convert_to_tensor(X))
    np.testing.assert_allclose(testing.to_numpy(h), _second_derivative(X, b), rtol=1e-4, atol=1e-7)


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="PyTorch's autograd.Function")
def test_value_is_the_same_with_and_without_a_gradient():
    # Forward takes fewer kernels when no gradient is needed.
    import torch

    x = np.random.default_rng(0).normal(scale=50.0, size=(64, 33)).astype("float32")
    plain = testing.to_numpy(squareplus(ops.convert_to_tensor(x)))
    tracked = squareplus(torch.tensor(x, requires_grad=True))
    assert tracked.requires_grad
    np.testing.assert_array_equal(tracked.detach().numpy(), plain)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="eager XLA programs are TensorFlow's")
def test_shapes_past_the_compile_budget_run_op_by_op(monkeypatch):
    monkeypatch.setattr(_backend, "_FUSE_MAX_PROGRAMS", 0)
    fused = _backend.fuse(lambda t, k: t * k, static_argnums=1)
    x = ops.convert_to_tensor(np.arange(5, dtype="float32"))
    np.testing.assert_array_equal(testing.to_numpy(fused(x, 2.0)), np.arange(5) * 2.0)
    monkeypatch.setattr(_backend, "_FUSE_MAX_PROGRAMS", 1)
    fused = _backend.fuse(lambda t, k: t * k, static_argnums=1)
    for n in (3, 4, 3):
        x = ops.convert_to_tensor(np.arange(n, dtype="float32"))
        np.testing.assert_array_equal(testing.to_numpy(fused(x, 3.0)), np.arange(n) * 3.0)
