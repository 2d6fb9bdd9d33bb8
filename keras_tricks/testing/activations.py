"""`check_activation`: an activation as a layer and as a `Dense` activation."""

from __future__ import annotations

from collections.abc import Callable, Collection

import keras
import numpy as np

from keras_tricks._typing import Tensor
from keras_tricks.testing._core import (
    ALL_CHECKS,
    HarnessFailure,
    _check_names,
    _check_tolerance,
    _registered,
)
from keras_tricks.testing.layers import (
    check_layer,
)


def check_activation(
    fn: Callable[..., Tensor],
    x: np.ndarray | list[np.ndarray],
    *,
    tolerance: float = 1.0,
    checks: Collection[str] = ALL_CHECKS,
) -> None:
    """Run the layer checks on `Activation(fn)` and `Dense(3, activation=fn)`.

    `fn` must be registered (`register_keras_serializable(package="keras_tricks")`);
    the `.keras` round trips then prove that it loads by its registered name.
    `tolerance` and `checks` are as for `check_layer`.
    """
    if not callable(fn):
        raise TypeError(f"`fn` must be a callable activation, got {fn!r} of type {type(fn).__name__}.")
    _check_names("checks", checks, ALL_CHECKS, "check names")
    _check_tolerance(tolerance)
    _registered(fn, getattr(fn, "__name__", repr(fn)))
    name = keras.saving.get_registered_name(fn)
    # `keras.activations.get` resolves only Keras's built-in string names; a
    # registered function is found by `get_registered_object` and, in saved
    # configs, by deserialisation (exercised by the `.keras` round trips).
    if keras.saving.get_registered_object(name) is not fn:
        raise HarnessFailure(f"keras.saving.get_registered_object({name!r}) does not return {fn!r}.")
    check_layer(keras.layers.Activation, {"activation": fn}, x, tolerance=tolerance, checks=checks)
    check_layer(keras.layers.Dense, {"units": 3, "activation": fn}, x, tolerance=tolerance, checks=checks)


# --------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------
