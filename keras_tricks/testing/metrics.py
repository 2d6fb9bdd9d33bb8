"""`check_metric`: accumulation, compiled evaluation and saving of a metric."""

from __future__ import annotations

import os
from collections.abc import Collection
from typing import Any

import keras
import numpy as np
from keras import ops, tree
from numpy.typing import ArrayLike

from keras_tricks import _backend
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
    _jit_compile,
    _registered_if_ours,
    _temp_dir,
    _tolerance_dtype_for_device,
    assert_close,
    to_numpy,
)
from keras_tricks.testing.losses import (
    _loss_model,
)

METRIC_CHECKS: tuple[str, ...] = ("call", "dtypes", "serialization", "devices")


def _metric_result(metric, y_true, y_pred, splits=1):
    for idx in np.array_split(np.arange(len(y_pred)), splits):
        metric.update_state(
            _as_tensors(tree.map_structure(lambda t: np.asarray(t)[idx], y_true)),
            _as_tensors(np.asarray(y_pred)[idx]),
        )
    return to_numpy(metric.result())


@keras.saving.register_keras_serializable(package="keras_tricks_testing")
def _zero_loss(y_true, y_pred):
    """A loss of 0, so that `evaluate()` reports metrics whatever the labels."""
    return ops.zeros_like(ops.reshape(ops.cast(y_pred, "float32"), (ops.shape(y_pred)[0], -1))[:, 0])


def _evaluate_metric(model, metric, y_true, y_pred, jit, batches=2):
    model.compile(loss=_zero_loss, metrics=[metric], jit_compile=jit)
    logs = model.evaluate(y_pred, y_true, batch_size=-(-len(y_pred) // batches), verbose=0, return_dict=True)
    return logs[metric.name]


def check_metric(
    metric_cls: type[keras.metrics.Metric],
    init_kwargs: dict[str, Any] | None,
    y_true: Any,
    y_pred: np.ndarray,
    *,
    expected: ArrayLike | None = None,
    checks: Collection[str] = METRIC_CHECKS,
    tolerance: float = 1.0,
    policies: Collection[str] = POLICIES,
) -> None:
    """Run the harness checks on a `keras.metrics.Metric` subclass.

    Checks: the result is the same whether the data comes in one batch or
    in three (state accumulates, it is not an average of per-batch values),
    `reset_state` forgets everything, `evaluate()` of a compiled model (plain
    and jit, two batches) reports the same value, and it equals `expected`
    when given (the test's independent reference); predictions under each
    dtype policy give a finite result close to float32; config and `.keras`
    round trip of a compiled model; same result on every device.
    """
    checks = _check_names("checks", checks, METRIC_CHECKS, "check names")
    tolerance = _check_tolerance(tolerance)
    policies = _check_policies(policies)
    name = metric_cls.__name__
    make = lambda: metric_cls(**(init_kwargs or {}))  # noqa: E731
    metric = make()
    reference = _metric_result(metric, y_true, y_pred)
    _assert_finite(reference, f"{name} result")
    if expected is not None:
        assert_close(reference, expected, "float32", tolerance, f"{name} vs expected")

    if "call" in checks:
        assert_close(
            _metric_result(make(), y_true, y_pred, splits=3),
            reference,
            "float32",
            tolerance,
            f"{name} accumulated over 3 batches",
        )
        metric.reset_state()
        assert_close(
            _metric_result(metric, y_true, y_pred),
            reference,
            "float32",
            tolerance,
            f"{name} after reset_state()",
        )
        for jit in sorted({False, _jit_compile()}):
            value = _evaluate_metric(_loss_model(y_pred), make(), y_true, y_pred, jit)
            assert_close(value, reference, "float32", tolerance, f"{name} in evaluate(jit_compile={jit})")

    if "dtypes" in checks:
        for policy in policies:
            model = _loss_model(y_pred, policy)
            compute_dtype = model.layers[-1].dtype_policy.compute_dtype
            value = _evaluate_metric(model, make(), y_true, y_pred, False)
            _assert_finite(value, f"{name} under {policy}")
            assert_close(value, reference, compute_dtype, tolerance, f"{name} under {policy} vs float32")

    if "serialization" in checks:
        _registered_if_ours(metric, name)
        config = metric.get_config()
        _check_config_json(config, name)
        clone = metric_cls.from_config(config)
        if clone.get_config() != config:
            raise HarnessFailure(f"{name}: from_config(get_config()) changed the config.")
        assert_close(
            _metric_result(clone, y_true, y_pred), reference, "float32", tolerance, f"{name} from_config"
        )
        model = _loss_model(y_pred)
        value = _evaluate_metric(model, make(), y_true, y_pred, False)
        with _temp_dir() as tmp:
            path = os.path.join(tmp, "model.keras")
            model.save(path)
            loaded = keras.saving.load_model(path)
        logs = loaded.evaluate(y_pred, y_true, batch_size=-(-len(y_pred) // 2), verbose=0, return_dict=True)
        if name not in str(list(logs)) and metric.name not in logs:
            raise HarnessFailure(f"{name}: the loaded model does not report the metric ({list(logs)}).")
        _assert_identical(
            np.float64(logs[metric.name]), np.float64(value), f"{name}: evaluate() after .keras save/load"
        )

    if "devices" in checks:
        for device in _backend.list_devices():
            with keras.device(device):
                value = _metric_result(make(), y_true, y_pred)
            assert_close(
                value, reference, _tolerance_dtype_for_device(device), tolerance, f"{name} on {device}"
            )


# --------------------------------------------------------------------------
# Callbacks
# --------------------------------------------------------------------------
