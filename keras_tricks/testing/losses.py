"""`check_loss`: the Keras contract of a loss."""

from __future__ import annotations

import os
from collections.abc import Callable, Collection
from typing import Any

import keras
import numpy as np
from keras import ops
from numpy.typing import ArrayLike

from keras_tricks import _backend
from keras_tricks._typing import Tensor
from keras_tricks.testing._core import (
    POLICIES,
    HarnessFailure,
    _as_tensors,
    _assert_finite,
    _assert_identical,
    _check_config_json,
    _check_names,
    _check_policies,
    _check_tolerance,
    _fit_result,
    _jit_compile,
    _registered_if_ours,
    _temp_dir,
    _tolerance_dtype_for_device,
    assert_close,
    to_numpy,
    value_and_grad,
)
from keras_tricks.testing.layers import (
    _Affine,
)

LOSS_CHECKS: tuple[str, ...] = ("call", "dtypes", "serialization", "fit", "devices")


def _make_loss(loss, init_kwargs):
    return loss(**(init_kwargs or {})) if isinstance(loss, type) else loss


def _loss_model(y_pred, policy=None, trainable=False):
    """A model that outputs its input (through an identity-initialised
    trainable affine when `trainable`), so that the loss sees `y_pred`."""
    kwargs = {} if policy is None else {"dtype": policy}
    inp = keras.Input(shape=np.shape(y_pred)[1:])
    out = _Affine(**kwargs)(inp) if trainable else keras.layers.Identity(**kwargs)(inp)
    return keras.Model(inp, out)


def _evaluate_loss(model, loss, y_true, y_pred, sample_weight, jit):
    model.compile(optimizer="sgd", loss=loss, jit_compile=jit)
    return model.evaluate(
        y_pred,
        y_true,
        sample_weight=sample_weight,
        batch_size=len(y_pred),
        verbose=0,
        return_dict=True,
    )["loss"]


def check_loss(
    loss: type[keras.losses.Loss] | keras.losses.Loss | Callable[..., Tensor],
    init_kwargs: dict[str, Any] | None,
    y_true: Any,
    y_pred: np.ndarray,
    *,
    sample_weight: ArrayLike | None = None,
    checks: Collection[str] = LOSS_CHECKS,
    tolerance: float = 1.0,
    policies: Collection[str] = POLICIES,
) -> None:
    """Run the harness checks on a loss (a `keras.losses.Loss` subclass, or a
    registered loss function with `init_kwargs=None`).

    `y_pred` (float32, batch first) is what a model would output; `y_true`
    the labels in whatever format the loss takes. Checks: eager value vs
    `evaluate()` of a model compiled with the loss (plain and jit);
    predictions produced under each dtype policy give a finite value and
    finite gradient close to float32; config and `.keras` round trip of a
    compiled model (identical evaluation after loading); a short `fit()`
    through the loss changes the weights; same value on every device.
    """
    checks = _check_names("checks", checks, LOSS_CHECKS, "check names")
    tolerance = _check_tolerance(tolerance)
    policies = _check_policies(policies)
    name = getattr(loss, "__name__", type(loss).__name__)
    loss_obj = _make_loss(loss, init_kwargs)

    def eager_value(fn):
        """The reduced loss as `evaluate()` computes it, eagerly."""
        if isinstance(fn, keras.losses.Loss):
            sw = None if sample_weight is None else ops.convert_to_tensor(sample_weight)
            return to_numpy(fn(_as_tensors(y_true), _as_tensors(y_pred), sample_weight=sw))
        # A loss function gets Keras's default reduction in compile():
        # "sum_over_batch_size", sum(values * weights) / values.size.
        values = to_numpy(fn(_as_tensors(y_true), _as_tensors(y_pred))).astype(np.float64)
        if sample_weight is not None:
            weights = np.asarray(sample_weight, np.float64)
            values = values * weights.reshape(weights.shape + (1,) * (values.ndim - weights.ndim))
        return np.float32(values.sum() / max(values.size, 1))

    reference = eager_value(loss_obj)
    _assert_finite(reference, f"{name} value")
    if np.ndim(reference) != 0:
        raise HarnessFailure(f"{name}: the reduced loss has shape {np.shape(reference)}, expected a scalar.")

    if "call" in checks:
        for jit in sorted({False, _jit_compile()}):
            value = _evaluate_loss(
                _loss_model(y_pred),
                _make_loss(loss, init_kwargs),
                y_true,
                y_pred,
                sample_weight,
                jit,
            )
            assert_close(
                value, reference, "float32", tolerance, f"{name} in evaluate(jit_compile={jit}) vs eager"
            )

    if "dtypes" in checks:
        for policy in policies:
            model = _loss_model(y_pred, policy)
            compute_dtype = model.layers[-1].dtype_policy.compute_dtype
            value = _evaluate_loss(model, _make_loss(loss, init_kwargs), y_true, y_pred, sample_weight, False)
            _assert_finite(value, f"{name} under {policy}")
            assert_close(value, reference, compute_dtype, tolerance, f"{name} under {policy} vs float32")
            loss_fn = _make_loss(loss, init_kwargs)

            def objective(pred):
                pred = ops.cast(pred, compute_dtype)
                out = loss_fn(_as_tensors(y_true), pred)
                return ops.cast(ops.mean(out), "float32")

            value, grad = value_and_grad(objective, ops.convert_to_tensor(y_pred))
            _assert_finite(value, f"{name} value from {compute_dtype} predictions")
            _assert_finite(grad, f"{name} gradient from {compute_dtype} predictions")

    if "serialization" in checks:
        _registered_if_ours(loss_obj, name)
        if isinstance(loss_obj, keras.losses.Loss):
            config = loss_obj.get_config()
            _check_config_json(config, name)
            clone = type(loss_obj).from_config(config)
            if clone.get_config() != config:
                raise HarnessFailure(f"{name}: from_config(get_config()) changed the config.")
        model = _loss_model(y_pred)
        expected = _evaluate_loss(model, _make_loss(loss, init_kwargs), y_true, y_pred, sample_weight, False)
        with _temp_dir() as tmp:
            path = os.path.join(tmp, "model.keras")
            model.save(path)
            loaded = keras.saving.load_model(path)
        got = loaded.evaluate(
            y_pred, y_true, sample_weight=sample_weight, batch_size=len(y_pred), verbose=0, return_dict=True
        )["loss"]
        _assert_identical(np.float64(got), np.float64(expected), f"{name}: evaluate() after .keras save/load")

    if "fit" in checks:
        keras.utils.set_random_seed(0)
        model = _loss_model(y_pred, trainable=True)
        model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=_make_loss(loss, init_kwargs))
        before = [np.array(w) for w in model.get_weights()]
        history = model.fit(
            y_pred,
            y_true,
            sample_weight=sample_weight,
            epochs=2,
            batch_size=max(1, len(y_pred) // 2),
            verbose=0,
            shuffle=False,
        )
        after = _fit_result(history, model, name)
        if all(np.array_equal(a, b) for a, b in zip(after, before)):
            raise HarnessFailure(f"{name}: fit() through the loss changed no weight.")

    if "devices" in checks:
        for device in _backend.list_devices():
            with keras.device(device):
                value = eager_value(_make_loss(loss, init_kwargs))
            assert_close(
                value, reference, _tolerance_dtype_for_device(device), tolerance, f"{name} on {device}"
            )


# --------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------
