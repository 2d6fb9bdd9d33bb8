"""The shared cross-backend test harness of keras_tricks.

One module per kind of component: `testing.layers` (`check_layer`),
`testing.activations`, `testing.losses`, `testing.metrics`,
`testing.callbacks`, `testing.multitask` (`check_strategy`), and
`testing._core` for what they share (tolerances, validation, conversions).
Everything public is importable from `keras_tricks.testing` itself.

Every layer, activation, loss, metric and callback of the package is tested
through this module, so that each is held to the same standard on whatever
backend (`KERAS_BACKEND=tensorflow|jax|torch`), dtype policy and device the
test run has. Component-specific tests (the formula against a float64 NumPy
reference, edge cases, bad input) live beside it in `tests/`; this module
checks the Keras contract that every component must honour.

`check_layer(layer_cls, init_kwargs, inputs, ...)` runs these checks, each of
which can be selected by name with `checks=`:

- `"call"`: eager call, symbolic call (a functional model called eagerly)
  and compiled call (`model.predict` with `jit_compile=True` on TensorFlow
  and JAX; PyTorch runs its plain compiled-function path, since
  `torch.compile` is not what Keras uses by default there) give the same
  outputs; `compute_output_shape` agrees with the real and symbolic shapes.
- `"dtypes"`: under `float32`, `mixed_float16` and `mixed_bfloat16` the
  outputs are finite and of the compute dtype, the variables stay float32,
  the outputs match the float32 result within a tolerance derived from the
  compute dtype's machine epsilon, and the gradients of the outputs with
  respect to the inputs and the trainable weights are finite.
- `"serialization"`: `get_config` is JSON-serialisable, registered under the
  package `keras_tricks` (checked by the `registered_name`), and survives
  `from_config` unchanged; a functional model containing the component saves
  to `.keras` and `keras.saving.load_model` (no `custom_objects`) gives
  bit-identical outputs.
- `"fit"`: a short `fit()` of a tiny model around the component (a trainable
  per-feature affine on each float input, the component, MSE to a random
  target): loss finite, every weight finite, every trainable weight changed.
- `"devices"`: on every device Keras sees (`cpu:0` always, `gpu:N` when
  present) the outputs match the CPU's within tolerance (float32 tolerance
  on CPUs, TF32-level tolerance on GPUs, whose matmuls may use TF32).
- `"mask"`: given `mask=`, the outputs at unmasked positions are the same
  whatever sits at the masked positions (two different sets of garbage), and
  `compute_mask` returns the expected output mask (the input mask, unless
  the component says otherwise with `expected_output_mask=`).

`check_activation(fn, x)` runs `check_layer` on `keras.layers.Activation(fn)`
and on `keras.layers.Dense(..., activation=fn)`, which covers use by object
and by registered name, saving and loading.

`check_loss(loss_cls, init_kwargs, y_true, y_pred)` checks a loss the same way:
eager vs compiled evaluation inside a model, half-precision predictions
(finite value and gradient, close to float32), config and `.keras` round trip
of a compiled model, a short `fit()`, devices.

`check_metric(metric_cls, init_kwargs, y_true, y_pred)` checks that a metric
accumulates the same result whether fed in one batch or several, eagerly or
inside `evaluate()` (compiled), survives `get_config`/`from_config` and a
`.keras` round trip of a compiled model, and that `reset_state` resets it.

`check_strategy(strategy_factory, tasks=2)` trains a tiny shared-trunk model
with the multi-task strategy inside `keras_tricks.multitask.MultiTaskModel`:
eager vs compiled vs XLA, mixed precision, config and `.keras` round trip with
the strategy's state, every weight moving, per-task logs, devices.

`check_callback(callback_factory)` runs a short `fit()` with the callback on
a tiny model: loss and weights finite, and, when the callback defines
`get_config`, the config round trip.

Tolerances: two results computed in `dtype` are "close" when, elementwise,
|actual - expected| <= 8 * tolerance * eps(dtype) * (|expected| + rms(expected)),
where eps is the machine epsilon of `dtype` and `tolerance` (default 1) is the
component's own multiplier, for formulas whose rounding error grows with a
reduction length. NaN must match NaN, inf must match inf.

No check can pass vacuously: every numeric argument is validated before
anything runs (`tolerance` a finite real number > 0, `epochs` and `tasks`
positive integers; Python or NumPy numbers, never `bool`), `checks` and
`policies` must name at least one entry, the `"mask"` check asked for by name
needs `mask=`, and `assert_close` fails on a difference in the number of
tensors, in shape (an empty result against a non-empty one included), in the
NaN/inf pattern (a NaN where the reference is finite) or on `None` against a
value. A wrong type raises `TypeError`, a wrong value `ValueError`.

Example (the whole of a component's harness test):

    import numpy as np
    from keras_tricks import layers, testing

    def test_squareplus_layer_harness():
        x = np.random.default_rng(0).normal(size=(4, 5, 3)).astype("float32")
        testing.check_layer(
            layers.SquarePlus, {"b": 2.0}, x, mask=np.array([[1, 1, 1, 0, 0]] * 4, bool)
        )

Pytest tests that call this module carry the `harness` marker (declared
in `pyproject.toml`), so that `pytest -m harness` runs exactly these.
"""

from keras_tricks.testing._core import (
    ALL_CHECKS,
    POLICIES,
    HarnessFailure,
    assert_close,
    dtype_policy,
    to_numpy,
    value_and_grad,
)
from keras_tricks.testing.activations import check_activation
from keras_tricks.testing.callbacks import check_callback
from keras_tricks.testing.layers import check_layer
from keras_tricks.testing.losses import LOSS_CHECKS, check_loss
from keras_tricks.testing.metrics import METRIC_CHECKS, check_metric
from keras_tricks.testing.multitask import STRATEGY_CHECKS, check_strategy

__all__ = [
    "ALL_CHECKS",
    "LOSS_CHECKS",
    "METRIC_CHECKS",
    "POLICIES",
    "STRATEGY_CHECKS",
    "HarnessFailure",
    "assert_close",
    "check_activation",
    "check_callback",
    "check_layer",
    "check_loss",
    "check_metric",
    "check_strategy",
    "dtype_policy",
    "to_numpy",
    "value_and_grad",
]
