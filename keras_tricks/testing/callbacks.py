"""`check_callback`: a short `fit()` with a callback."""

from __future__ import annotations

from collections.abc import Callable, Collection

import keras
import numpy as np
from numpy.typing import ArrayLike

from keras_tricks._validation import check_int
from keras_tricks.testing._core import (
    POLICIES,
    HarnessFailure,
    _assert_finite,
    _check_config_json,
    _check_policies,
    dtype_policy,
)


def _tiny_regression(seed=0, n=64, features=4):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype("float32")
    y = (x @ rng.normal(size=(features, 1)) + 0.1).astype("float32")
    return x, y


def check_callback(
    callback_factory: Callable[[], keras.callbacks.Callback],
    *,
    model_factory: Callable[[], keras.Model] | None = None,
    data: tuple[ArrayLike, ArrayLike] | None = None,
    epochs: int = 2,
    policies: Collection[str] = POLICIES,
) -> None:
    """Run a short `fit()`, `evaluate()` and `predict()` with a callback.

    Args:
        callback_factory: `fn() -> keras.callbacks.Callback`, called once per
            run so that each run starts from a fresh callback.
        model_factory: `fn() -> compiled keras.Model` (default: a compiled
            Dense regression model), called under each dtype policy.
        data: `(x, y)` for that model (default: a small regression set).

    Checks, under each dtype policy: training loss and every weight finite,
    some weight changed, evaluate and predict run with the callback; the
    callback's `get_config`, when it has one, is JSON-serialisable and
    survives `from_config`. `epochs` is a positive integer and `policies` a
    non-empty list of dtype policy names.
    """
    if not callable(callback_factory):
        raise TypeError(
            "`callback_factory` must be a callable returning a callback, got "
            f"{callback_factory!r} of type {type(callback_factory).__name__}."
        )
    if model_factory is not None and not callable(model_factory):
        raise TypeError(
            "`model_factory` must be None or a callable returning a compiled model, got "
            f"{model_factory!r} of type {type(model_factory).__name__}."
        )
    epochs = check_int("epochs", epochs, minimum=1)
    policies = _check_policies(policies)
    if model_factory is None:

        def model_factory():
            model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dense(1)])
            model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
            return model

    x, y = data if data is not None else _tiny_regression()
    for policy in policies:
        with dtype_policy(policy):
            keras.utils.set_random_seed(0)
            model = model_factory()
            callback = callback_factory()
            name = type(callback).__name__
            before = [np.array(w) for w in model.get_weights()]
            history = model.fit(
                x, y, epochs=epochs, batch_size=16, verbose=0, callbacks=[callback], validation_data=(x, y)
            )
            losses = np.asarray(history.history["loss"])
            if not np.all(np.isfinite(losses)):
                raise HarnessFailure(f"{name} under {policy}: non-finite loss {losses}.")
            _assert_finite(model.get_weights(), f"{name} under {policy}: weights after fit()")
            if all(np.array_equal(a, b) for a, b in zip(model.get_weights(), before)):
                raise HarnessFailure(f"{name} under {policy}: fit() changed no weight.")
            model.evaluate(x, y, verbose=0, callbacks=[callback])
            _assert_finite(
                model.predict(x, verbose=0, callbacks=[callback]), f"{name} under {policy}: predictions"
            )
    if hasattr(callback, "get_config"):
        config = callback.get_config()
        _check_config_json(config, name)
        clone = type(callback).from_config(config)
        if clone.get_config() != config:
            raise HarnessFailure(f"{name}: from_config(get_config()) changed the config.")
