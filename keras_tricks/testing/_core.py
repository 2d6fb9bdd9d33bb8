"""Utilities shared by every check of the harness: tolerances, argument
validation, conversions, registration checks."""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np
from keras import ops, tree

from keras_tricks import _backend, _numerics
from keras_tricks._validation import check_float, check_type

POLICIES: tuple[str, ...] = ("float32", "mixed_float16", "mixed_bfloat16")
ALL_CHECKS: tuple[str, ...] = ("call", "dtypes", "serialization", "fit", "devices", "mask")
_REGISTERED_PREFIX = "keras_tricks>"
_ULPS = 8.0

value_and_grad = _backend.value_and_grad


class HarnessFailure(AssertionError):
    """A component broke the Keras contract; the message names the check."""


# --------------------------------------------------------------------------
# Small utilities, public because component tests use them too.
# --------------------------------------------------------------------------


def to_numpy(x: Any) -> Any:
    """Any backend tensor (bfloat16 included) or nested structure -> NumPy."""

    def convert(t):
        if t is None:
            return None
        if isinstance(t, (np.ndarray, np.generic, int, float, complex)):
            # Host values stay as they are: a round trip through a backend
            # tensor would round float64 to float32 on JAX (1e308 -> inf)
            # unless x64 is enabled.
            t = np.asarray(t)
            return t.astype(np.float32) if t.dtype.name == "bfloat16" else t
        t = ops.convert_to_tensor(t)
        if keras.backend.standardize_dtype(t.dtype) == "bfloat16":
            t = ops.cast(t, "float32")  # NumPy has no native bfloat16
        return np.asarray(ops.convert_to_numpy(t))

    return tree.map_structure(convert, x)


@contextlib.contextmanager
def dtype_policy(policy: str | keras.DTypePolicy) -> Iterator[None]:
    """Set the global Keras dtype policy for the duration of a `with` block."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _check_tolerance(tolerance: Any) -> float:
    # NaN or inf would make every comparison pass; 0 or less every one fail.
    return check_float("tolerance", tolerance, minimum=0.0, min_inclusive=False)


def _check_dtype(dtype):
    """A float dtype name (or NumPy dtype / type), standardised."""
    try:
        name = keras.backend.standardize_dtype(dtype)
    except (TypeError, ValueError, AttributeError) as e:
        raise TypeError(
            f"`dtype` must be a float dtype such as 'float32', got "
            f"{dtype!r} of type {type(dtype).__name__} ({e})."
        ) from None
    if not _numerics.is_float(name):
        raise ValueError(
            f"`dtype` must be a float dtype (float16, bfloat16, float32, float64), got {name!r}."
        )
    return name


def _check_names(name, values, allowed, what):
    """A non-empty tuple of distinct names out of `allowed`."""
    if isinstance(values, str) or not isinstance(values, (list, tuple, set, frozenset)):
        raise TypeError(
            f"`{name}` must be a list or tuple of {what}, e.g. {allowed[:2]!r}; "
            f"got {values!r} of type {type(values).__name__}."
        )
    for v in values:
        if not isinstance(v, str):
            raise TypeError(f"`{name}` must hold strings, got {v!r} of type {type(v).__name__}.")
    if not values:
        raise ValueError(f"`{name}` is empty: nothing would be checked. Choose from {allowed}.")
    unknown = set(values) - set(allowed)
    if unknown:
        label = "checks" if name == "checks" else name
        raise ValueError(f"Unknown {label} {sorted(unknown)}; choose from {allowed}.")
    return tuple(values)


_POLICY_NAMES = ("float32", "float64", "float16", "bfloat16", "mixed_float16", "mixed_bfloat16")


def _check_policies(policies: Any) -> tuple[str, ...]:
    return _check_names("policies", policies, _POLICY_NAMES, "dtype policy names")


def assert_close(
    actual: Any,
    expected: Any,
    dtype: str | np.dtype | type = "float32",
    tolerance: float = 1.0,
    what: str = "outputs",
) -> None:
    """Assert two (nested) results agree to the rounding level of `dtype`.

    |actual - expected| <= 8 * tolerance * eps(dtype) * (|expected| + rms(expected))
    elementwise; NaN and inf must sit at the same places with the same sign.

    Fails (`HarnessFailure`) on a different number of tensors, a different
    shape (no broadcasting: an empty result never matches a non-empty one,
    a scalar never matches a shape-(1,) array), a NaN or inf where the other
    side has a finite value, and `None` against a value. Two empty arrays of
    the same shape are equal. `dtype` must be a float dtype and `tolerance`
    a finite number > 0 (`ValueError` otherwise, `TypeError` for a wrong
    type), so that the comparison cannot pass vacuously.
    """
    eps = float(_numerics.finfo(_check_dtype(dtype)).eps)
    tolerance = _check_tolerance(tolerance)
    what = check_type("what", what, str, "a string")
    actual_flat = tree.flatten(to_numpy(actual))
    expected_flat = tree.flatten(to_numpy(expected))
    if len(actual_flat) != len(expected_flat):
        raise HarnessFailure(f"{what}: {len(actual_flat)} tensors, expected {len(expected_flat)}.")
    for i, (a, e) in enumerate(zip(actual_flat, expected_flat)):
        label = what if len(actual_flat) == 1 else f"{what}[{i}]"
        if a is None or e is None:
            # np.asarray(None, float64) is NaN, which would match a NaN.
            if a is None and e is None:
                continue
            raise HarnessFailure(
                f"{label}: {'None' if a is None else 'a value'}, expected "
                f"{'None' if e is None else 'a value'}."
            )
        a = np.asarray(a, dtype=np.float64)
        e = np.asarray(e, dtype=np.float64)
        if a.shape != e.shape:
            raise HarnessFailure(f"{label}: shape {a.shape}, expected {e.shape}.")
        finite = np.isfinite(e)
        same_special = np.array_equal(np.isnan(a), np.isnan(e)) and np.array_equal(
            np.where(np.isinf(a), a, 0), np.where(np.isinf(e), e, 0)
        )
        if not same_special:
            raise HarnessFailure(
                f"{label}: NaN/inf pattern differs from the reference "
                f"({int(np.sum(~np.isfinite(a)))} non-finite values vs "
                f"{int(np.sum(~finite))})."
            )
        if not finite.any():
            continue
        rms = float(np.sqrt(np.mean(np.square(e[finite]))))
        allowed = _ULPS * tolerance * eps * (np.abs(e) + rms)
        with np.errstate(invalid="ignore"):  # inf - inf where both are inf
            err = np.where(finite, np.abs(a - e), 0.0)
        bad = err > allowed
        if bad.any():
            worst = np.unravel_index(np.argmax(err - allowed), err.shape)
            raise HarnessFailure(
                f"{label}: {int(bad.sum())} of {bad.size} values differ beyond the "
                f"{dtype} tolerance (x{tolerance}); worst at index {worst}: "
                f"{a[worst]!r} vs expected {e[worst]!r}, allowed error "
                f"{allowed[worst]:.3g}."
            )


def _assert_finite(values, what):
    for i, v in enumerate(tree.flatten(to_numpy(values))):
        if v is None:
            continue
        v = np.asarray(v)
        if v.dtype.kind == "f" and not np.all(np.isfinite(v)):
            raise HarnessFailure(
                f"{what}: {int(np.sum(~np.isfinite(v)))} non-finite values (tensor {i}, shape {v.shape})."
            )


def _assert_identical(actual, expected, what):
    for a, e in zip(tree.flatten(to_numpy(actual)), tree.flatten(to_numpy(expected))):
        if not np.array_equal(a, e, equal_nan=True):
            diff = np.max(np.abs(np.asarray(a, np.float64) - np.asarray(e, np.float64)))
            raise HarnessFailure(f"{what}: not identical (max difference {diff:.3g}).")


def _is_float_array(x):
    return np.asarray(x).dtype.kind == "f"


def _as_mask_tensors(mask):
    return tree.map_structure(
        lambda m: None if m is None else ops.convert_to_tensor(np.asarray(m, bool)), mask
    )


def _as_tensors(x):
    return tree.map_structure(lambda t: ops.convert_to_tensor(np.asarray(t)), x)


def _symbolic_inputs(inputs):
    return tree.map_structure(
        lambda t: keras.Input(shape=np.shape(t)[1:], dtype=str(np.asarray(t).dtype)),
        inputs,
    )


def _registered(obj, what):
    if isinstance(obj, type) or callable(obj) and not hasattr(obj, "get_config"):
        registered = keras.saving.get_registered_name(obj)
    else:
        config = keras.saving.serialize_keras_object(obj)
        registered = config.get("registered_name") if isinstance(config, dict) else None
    if not (registered or "").startswith(_REGISTERED_PREFIX):
        raise HarnessFailure(
            f"{what} is not registered under the package 'keras_tricks' "
            f"(registered_name={registered!r}); decorate it with "
            "@keras.saving.register_keras_serializable(package='keras_tricks')."
        )


def _registered_if_ours(obj, what):
    """Built-in Keras objects are Keras's to register; ours must be."""
    # Functions, classes and instances (through their class) all carry it.
    module = getattr(obj, "__module__", "") or ""
    if not module.startswith("keras."):
        _registered(obj, what)


def _check_config_json(config, what):
    try:
        json.dumps(config)
    except TypeError as e:
        raise HarnessFailure(f"{what}.get_config() is not JSON-serialisable: {e}") from e


@contextlib.contextmanager
def _temp_dir():
    with tempfile.TemporaryDirectory(prefix="keras_tricks_") as path:
        yield path


def _jit_compile():
    """`jit_compile` for a compiled call: XLA on TF and JAX; False on torch."""
    return _backend.name() in ("tensorflow", "jax")


def _tolerance_dtype_for_device(device):
    # GPU matmuls and convolutions may run in TF32 (10 explicit mantissa bits,
    # the same as float16) on TensorFlow and JAX.
    return "float32" if device.startswith("cpu") else "float16"


def _fit_result(history, model, name):
    """The weights after a harness `fit()`, once its losses and weights are
    known to be finite."""
    losses = np.asarray(history.history["loss"])
    if not np.all(np.isfinite(losses)):
        raise HarnessFailure(f"{name}: fit() produced non-finite loss {losses}.")
    after = model.get_weights()
    _assert_finite(after, f"{name}: weights after fit()")
    return after
