import numpy as np
import pytest

from keras_tricks import activations, layers, testing


@pytest.mark.harness
def test_squareplus_layer_through_harness():
    x = np.random.default_rng(0).normal(scale=3.0, size=(4, 5, 3)).astype("float32")
    mask = np.array([[True] * 5, [True] * 3 + [False] * 2] * 2)
    testing.check_layer(layers.SquarePlus, {"b": 2.0}, x, mask=mask)


@pytest.mark.harness
def test_squareplus_activation_through_harness():
    x = np.random.default_rng(1).normal(scale=3.0, size=(6, 4)).astype("float32")
    testing.check_activation(activations.squareplus, x)
