"""`check_strategy`: a multi-task strategy inside `MultiTaskModel`."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

import keras
import numpy as np

from keras_tricks import _backend, _numerics
from keras_tricks._validation import check_int
from keras_tricks.testing._core import (
    HarnessFailure,
    _assert_finite,
    _assert_identical,
    _check_config_json,
    _check_names,
    _check_tolerance,
    _jit_compile,
    _registered,
    _temp_dir,
    _tolerance_dtype_for_device,
    assert_close,
    dtype_policy,
    to_numpy,
)

if TYPE_CHECKING:  # for the annotation only; check_strategy imports multitask when it runs
    from keras_tricks.multitask import Strategy

STRATEGY_CHECKS: tuple[str, ...] = ("call", "dtypes", "serialization", "fit", "devices")


def _multitask_case(k, seed=0, n=32):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5)).astype("float32")
    ys = [
        (x @ rng.normal(size=(5, 1)) * 2.0**i + 0.1 * rng.normal(size=(n, 1))).astype("float32")
        for i in range(k)
    ]
    inputs = keras.Input((5,))
    h = keras.layers.Dense(6, activation="tanh", name="trunk")(inputs)
    model = keras.Model(inputs, [keras.layers.Dense(1, name=f"task{i}")(h) for i in range(k)])
    start = [rng.normal(size=w.shape).astype("float32") * 0.5 for w in model.get_weights()]
    model.set_weights(start)
    return model, x, ys


def _train_multitask(strategy_factory, k, *, jit=False, eager=False, policy="float32", steps=2, device=None):
    from keras_tricks import multitask

    with dtype_policy(policy), keras.device(device) if device else contextlib.nullcontext():
        model, x, ys = _multitask_case(k)
        mt = multitask.MultiTaskModel(model, strategy=strategy_factory())
        optimizer = keras.optimizers.SGD(0.05)
        if policy == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        mt.compile(optimizer=optimizer, loss="mse", jit_compile=jit, run_eagerly=eager)
        history = mt.fit(x, ys, epochs=steps, batch_size=len(x), shuffle=False, verbose=0)
    return mt, x, ys, history.history


def check_strategy(
    strategy_factory: Callable[[], Strategy | str],
    *,
    tasks: int = 2,
    checks: Collection[str] = STRATEGY_CHECKS,
    tolerance: float = 64.0,
) -> None:
    """Checks a multi-task strategy inside `MultiTaskModel` on a tiny model.

    `strategy_factory() -> keras_tricks.multitask.Strategy` (or a name) is
    called once per run. Checks, by name:

    - `"call"`: the same steps eagerly (`run_eagerly=True`), compiled, and
      compiled with XLA (TF, JAX) give the same weights, task losses and task
      weights within the float32 tolerance;
    - `"dtypes"`: under `mixed_float16` (with `LossScaleOptimizer`) and
      `mixed_bfloat16` the logs (loss, task losses, task weights) and the
      weights stay finite and the strategy's variables stay float32;
    - `"serialization"`: the strategy's config is JSON-serialisable,
      registered under `keras_tricks` and survives `from_config`; the trained
      `MultiTaskModel` saves to `.keras` and loads back (no `custom_objects`)
      with bit-identical predictions and strategy state;
    - `"fit"`: every trainable weight moves, the logs hold `<task>_loss` and
      `<task>_weight` for every task, all finite;
    - `"devices"`: on every device Keras sees, the trained weights match the
      CPU's.

    `tasks` is an integer >= 2 (a strategy weighs tasks against each other),
    `checks` a non-empty subset of `STRATEGY_CHECKS`, `tolerance` a finite
    number > 0.
    """
    from keras_tricks import multitask

    if not callable(strategy_factory):
        raise TypeError(
            "`strategy_factory` must be a callable returning a strategy or its name, got "
            f"{strategy_factory!r} of type {type(strategy_factory).__name__}."
        )
    tasks = check_int("tasks", tasks, minimum=2)
    checks = _check_names("checks", checks, STRATEGY_CHECKS, "check names")
    tolerance = _check_tolerance(tolerance)

    name = type(multitask.get(strategy_factory())).__name__
    base_mt, x, _, base_logs = _train_multitask(strategy_factory, tasks)
    base = base_mt.get_weights()
    if "fit" in checks:
        start, _, _ = _multitask_case(tasks)
        for task in base_mt.tasks:
            for key in (f"{task}_loss", f"{task}_weight"):
                if key not in base_logs:
                    raise HarnessFailure(f"{name}: fit() logs lack {key!r}: {sorted(base_logs)}.")
        _assert_finite([np.asarray(v) for v in base_logs.values()], f"{name}: fit() logs")
        _assert_finite(base, f"{name}: weights after fit()")
        for before, after, v in zip(start.get_weights(), base, base_mt.model.weights):
            if np.array_equal(before, after):
                raise HarnessFailure(f"{name}: fit() did not move {v.path}.")
    if "call" in checks:
        for label, kwargs in [("eager", dict(eager=True)), ("XLA", dict(jit=_jit_compile()))]:
            mt, _, _, logs = _train_multitask(strategy_factory, tasks, **kwargs)
            assert_close(mt.get_weights(), base, "float32", tolerance, f"{name}: {label} weights")
            for key in base_logs:
                assert_close(
                    np.asarray(logs[key]),
                    np.asarray(base_logs[key]),
                    "float32",
                    tolerance,
                    f"{name}: {label} log {key}",
                )
    if "dtypes" in checks:
        for policy in ("mixed_float16", "mixed_bfloat16"):
            mt, _, _, logs = _train_multitask(strategy_factory, tasks, policy=policy, steps=3)
            _assert_finite([np.asarray(v) for v in logs.values()], f"{name} under {policy}: logs")
            _assert_finite(mt.get_weights(), f"{name} under {policy}: weights")
            for v in mt.strategy.variables:
                if _numerics.is_float(v.dtype) and v.dtype != "float32":
                    raise HarnessFailure(f"{name} under {policy}: {v.path} is {v.dtype}.")
    if "serialization" in checks:
        config = base_mt.strategy.get_config()
        _check_config_json(config, name)
        _registered(base_mt.strategy, name)
        clone = type(base_mt.strategy).from_config(config)
        if clone.get_config() != config:
            raise HarnessFailure(f"{name}: from_config(get_config()) changed the config.")
        with _temp_dir() as tmp:
            path = os.path.join(tmp, "multitask.keras")
            base_mt.save(path)
            loaded = keras.saving.load_model(path)
        _assert_identical(
            loaded.predict(x, verbose=0),
            base_mt.predict(x, verbose=0),
            f"{name}: predictions after .keras round trip",
        )
        _assert_identical(
            [to_numpy(v) for v in loaded.strategy.variables],
            [to_numpy(v) for v in base_mt.strategy.variables],
            f"{name}: strategy state after .keras round trip",
        )
    if "devices" in checks:
        for device in _backend.list_devices()[1:]:
            mt, _, _, _ = _train_multitask(strategy_factory, tasks, device=device)
            assert_close(
                mt.get_weights(),
                base,
                _tolerance_dtype_for_device(device),
                tolerance,
                f"{name}: weights on {device}",
            )
