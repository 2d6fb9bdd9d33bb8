"""The shared cross-backend test harness of keras_tricks.

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

Pytest tests that call this module carry the `harness` marker (see
`tests/conftest.py`), so that `pytest -m harness` runs exactly these.
"""

import contextlib
import inspect
import json
import os
import tempfile

import keras
import numpy as np
from keras import ops, tree

from keras_tricks import _backend, _numerics
from keras_tricks._validation import check_bool, check_float, check_int, check_type

__all__ = [
    "ALL_CHECKS",
    "POLICIES",
    "assert_close",
    "check_activation",
    "check_callback",
    "check_layer",
    "check_loss",
    "check_metric",
    "dtype_policy",
    "to_numpy",
    "value_and_grad",
]

POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")
ALL_CHECKS = ("call", "dtypes", "serialization", "fit", "devices", "mask")
_REGISTERED_PREFIX = "keras_tricks>"
_ULPS = 8.0

value_and_grad = _backend.value_and_grad


class HarnessFailure(AssertionError):
    """A component broke the Keras contract; the message names the check."""


# --------------------------------------------------------------------------
# Small utilities, public because component tests use them too.
# --------------------------------------------------------------------------


def to_numpy(x):
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
def dtype_policy(policy):
    """Set the global Keras dtype policy for the duration of a `with` block."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _check_tolerance(tolerance):
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


def _check_policies(policies):
    return _check_names("policies", policies, _POLICY_NAMES, "dtype policy names")


def assert_close(actual, expected, dtype="float32", tolerance=1.0, what="outputs"):
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


@keras.saving.register_keras_serializable(package="keras_tricks_testing")
class _Affine(keras.layers.Layer):
    """Trainable per-feature x * (1 + g) + h, the identity at initialisation.

    Put before the component in the `fit` check so that gradients must flow
    through the component to reach a weight, even when it has none itself.
    """

    def build(self, input_shape):
        self.g = self.add_weight(shape=(input_shape[-1],), initializer="zeros", name="g")
        self.h = self.add_weight(shape=(input_shape[-1],), initializer="zeros", name="h")

    def call(self, x):
        return x * (1.0 + self.g) + self.h


@keras.saving.register_keras_serializable(package="keras_tricks_testing")
class _AttachMask(keras.layers.Layer):
    """Return `x` with the boolean mask `m` attached, as `Embedding(mask_zero=True)`
    would: the Keras way for a mask to reach the next layer's `call(mask=...)`."""

    def call(self, inputs):
        return inputs[0]

    def compute_mask(self, inputs, mask=None):
        return ops.cast(inputs[1], "bool")

    def compute_output_shape(self, input_shape):
        return input_shape[0]


def _call_accepts_mask(layer):
    return "mask" in inspect.signature(layer.call).parameters


def _align_mask(inputs, mask):
    """The mask for `inputs`: itself for one tensor, a list (None where the
    input's leading axes do not match) for a list of inputs."""
    if not isinstance(inputs, (list, tuple)):
        return mask
    return [mask if np.shape(t)[: mask.ndim] == mask.shape else None for t in inputs]


def _wrap_float_inputs(symbolic):
    def wrap(t):
        if _numerics.is_float(t.dtype):
            return _Affine()(t)
        return t

    return tree.map_structure(wrap, symbolic)


# --------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------


class _LayerCase:
    """Everything needed to build and call one layer the same way each time."""

    def __init__(self, layer_cls, init_kwargs, inputs, call_kwargs, mask):
        self.layer_cls = layer_cls
        self.init_kwargs = dict(init_kwargs or {})
        self.inputs = inputs
        self.call_kwargs = dict(call_kwargs or {})
        self.mask = None if mask is None else np.asarray(mask, dtype=bool)
        self.name = layer_cls.__name__
        reference = self.make()
        self.reference_outputs = to_numpy(self.call(reference))
        self.weights = [np.array(w) for w in reference.get_weights()]

    def make(self, **extra):
        return self.layer_cls(**self.init_kwargs, **extra)

    def call(self, layer, inputs=None, mask="default"):
        inputs = self.inputs if inputs is None else inputs
        kwargs = dict(self.call_kwargs)
        mask = self.mask if isinstance(mask, str) else mask
        if mask is not None and _call_accepts_mask(layer):
            kwargs["mask"] = _as_mask_tensors(_align_mask(inputs, mask))
        return layer(_as_tensors(inputs), **kwargs)

    def make_built(self, **extra):
        layer = self.make(**extra)
        self.call(layer)
        if self.weights:
            layer.set_weights(self.weights)
        return layer

    def functional_model(self, layer, wrap_inputs=False):
        sym = _symbolic_inputs(self.inputs)
        model_inputs = sym
        x = _wrap_float_inputs(sym) if wrap_inputs else sym
        if self.mask is not None:
            mask_in = keras.Input(shape=self.mask.shape[1:], dtype="bool")
            model_inputs = [sym, mask_in]
            aligned = _align_mask(self.inputs, self.mask)
            if isinstance(x, (list, tuple)):
                x = [t if m is None else _AttachMask()([t, mask_in]) for t, m in zip(x, aligned)]
            else:
                x = _AttachMask()([x, mask_in])
        outputs = layer(x, **self.call_kwargs)
        return keras.Model(model_inputs, outputs)

    def model_inputs(self):
        if self.mask is None:
            return _as_tensors(self.inputs)
        return [_as_tensors(self.inputs), ops.convert_to_tensor(self.mask)]


def _check_layer_call(case, tolerance):
    layer = case.make_built()
    eager = case.call(layer)
    assert_close(eager, case.reference_outputs, "float32", tolerance, "eager call")

    if isinstance(case.inputs, (list, tuple)):
        shapes = [tuple(np.shape(t)) for t in case.inputs]
    else:
        shapes = tuple(np.shape(case.inputs))
    expected_shapes = [tuple(np.shape(t)) for t in tree.flatten(to_numpy(eager))]
    try:
        computed = _shape_list(layer.compute_output_shape(shapes))
    except NotImplementedError:
        computed = None
    if computed is not None and computed != expected_shapes:
        raise HarnessFailure(
            f"{case.name}.compute_output_shape({shapes}) = {computed}, but the "
            f"call returned shapes {expected_shapes}."
        )

    model = case.functional_model(layer)
    for sym_out, real in zip(tree.flatten(model.outputs), expected_shapes):
        sym_shape = tuple(sym_out.shape)
        if len(sym_shape) != len(real) or any(s is not None and s != r for s, r in zip(sym_shape, real)):
            raise HarnessFailure(
                f"{case.name}: symbolic output shape {sym_shape} does not match the eager shape {real}."
            )
    symbolic = model(case.model_inputs())
    assert_close(symbolic, eager, "float32", tolerance, "symbolic (functional) call")

    model.compile(jit_compile=_jit_compile())
    batch = len(tree.flatten(case.inputs)[0])
    compiled = model.predict(case.model_inputs(), batch_size=batch, verbose=0)
    assert_close(compiled, eager, "float32", tolerance, "compiled call")


def _shape_list(shape_struct):
    """A (possibly nested) output shape -> list of shape tuples."""
    if isinstance(shape_struct, (tuple, list)) and all(
        isinstance(d, (int, np.integer, type(None))) for d in shape_struct
    ):
        return [tuple(None if d is None else int(d) for d in shape_struct)]
    out = []
    for s in shape_struct.values() if isinstance(shape_struct, dict) else shape_struct:
        out += _shape_list(s)
    return out


def _layer_grads(layer, case, inputs):
    """Gradient of a fixed random projection of the outputs, with respect to the
    float inputs and the trainable weights, through `layer.__call__` (so that
    autocasting under mixed policies is exercised)."""
    flat_inputs = tree.flatten(inputs)
    float_positions = [i for i, t in enumerate(flat_inputs) if _is_float_array(t)]
    rng = np.random.default_rng(1234)
    cotangents = [
        ops.convert_to_tensor(rng.normal(size=np.shape(o)).astype("float32"))
        for o in tree.flatten(case.reference_outputs)
    ]
    variables = list(layer.trainable_variables)

    def objective(weights, float_inputs):
        full = list(_as_tensors(flat_inputs))
        for pos, value in zip(float_positions, float_inputs):
            full[pos] = value
        structured = tree.pack_sequence_as(inputs, full)
        kwargs = dict(case.call_kwargs)
        if case.mask is not None and _call_accepts_mask(layer):
            kwargs["mask"] = _as_mask_tensors(_align_mask(inputs, case.mask))
        with keras.StatelessScope(state_mapping=list(zip(variables, weights))):
            outputs = layer(structured, **kwargs)
        total = 0.0
        for out, cot in zip(tree.flatten(outputs), cotangents):
            if _numerics.is_float(out.dtype):
                total = total + ops.sum(ops.cast(out, "float32") * cot)
        return total

    weights = [ops.convert_to_tensor(v.value) for v in variables]
    float_inputs = [ops.convert_to_tensor(np.asarray(flat_inputs[i])) for i in float_positions]
    return value_and_grad(objective, weights, float_inputs)


def _check_layer_dtypes(case, tolerance, policies, expect_compute_dtype_outputs):
    for policy in policies:
        layer = case.make_built(dtype=policy)
        compute_dtype = layer.dtype_policy.compute_dtype
        for v in layer.weights:
            vdtype = keras.backend.standardize_dtype(v.dtype)
            if _numerics.is_float(vdtype) and vdtype != "float32":
                raise HarnessFailure(
                    f"{case.name} under {policy}: variable {v.path} is {vdtype}, "
                    "expected float32 (variables keep the variable dtype)."
                )
        outputs = case.call(layer)
        _assert_finite(outputs, f"{case.name} outputs under {policy}")
        if expect_compute_dtype_outputs:
            for out in tree.flatten(outputs):
                odtype = keras.backend.standardize_dtype(out.dtype)
                if _numerics.is_float(odtype) and odtype != compute_dtype:
                    raise HarnessFailure(
                        f"{case.name} under {policy}: output dtype {odtype}, "
                        f"expected the compute dtype {compute_dtype}."
                    )
        assert_close(
            outputs,
            case.reference_outputs,
            compute_dtype,
            tolerance,
            f"{case.name} outputs under {policy} vs float32",
        )
        value, grads = _layer_grads(layer, case, case.inputs)
        _assert_finite(value, f"{case.name} objective under {policy}")
        _assert_finite(grads, f"{case.name} gradients under {policy}")


def _check_layer_serialization(case):
    layer = case.make_built()
    _registered_if_ours(layer, case.name)
    config = layer.get_config()
    _check_config_json(config, case.name)
    clone = case.layer_cls.from_config(config)
    if clone.get_config() != config:
        raise HarnessFailure(
            f"{case.name}: from_config(get_config()) changed the config:\n{config}\n->\n{clone.get_config()}"
        )
    case.call(clone)
    clone.set_weights(case.weights)
    _assert_identical(case.call(clone), case.call(layer), f"{case.name} from_config")

    model = case.functional_model(layer)
    expected = model(case.model_inputs())
    with _temp_dir() as tmp:
        path = os.path.join(tmp, "model.keras")
        model.save(path)
        loaded = keras.saving.load_model(path)
    restored = [l for l in loaded.layers if isinstance(l, case.layer_cls)]
    if not restored:
        raise HarnessFailure(f"{case.name}: the loaded model holds no {case.name}.")
    _assert_identical(loaded(case.model_inputs()), expected, f"{case.name} .keras save/load round trip")


def _check_layer_fit(case, epochs=3):
    layer = case.make()
    keras.utils.set_random_seed(0)
    model = case.functional_model(layer, wrap_inputs=True)
    targets = [
        np.random.default_rng(7).normal(size=np.shape(o)).astype("float32")
        for o in tree.flatten(case.reference_outputs)
    ]
    targets = targets[0] if len(targets) == 1 else targets
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    before = [np.array(w) for w in model.get_weights()]
    batch = len(tree.flatten(case.inputs)[0])
    history = model.fit(
        case.model_inputs(),
        targets,
        epochs=epochs,
        batch_size=max(1, batch // 2),
        verbose=0,
        shuffle=False,
    )
    losses = np.asarray(history.history["loss"])
    if not np.all(np.isfinite(losses)):
        raise HarnessFailure(f"{case.name}: fit() produced non-finite loss {losses}.")
    after = model.get_weights()
    _assert_finite(after, f"{case.name}: weights after fit()")
    trainable_ids = {id(v) for v in model.trainable_variables}
    for v, b, a in zip(model.weights, before, after):
        if id(v) in trainable_ids and np.array_equal(a, b):
            raise HarnessFailure(
                f"{case.name}: trainable weight {v.path} did not change during fit() "
                "(no gradient reaches it)."
            )


def _check_layer_devices(case, tolerance):
    for device in _backend.list_devices():
        with keras.device(device):
            layer = case.make_built()
            outputs = to_numpy(case.call(layer))
        assert_close(
            outputs,
            case.reference_outputs,
            _tolerance_dtype_for_device(device),
            tolerance,
            f"{case.name} on {device} vs default device",
        )


def _garbage_inputs(inputs, mask, seed):
    """Replace the masked-out positions of every input aligned with `mask`."""
    rng = np.random.default_rng(seed)

    def fill(t):
        t = np.array(t)
        if t.shape[: mask.ndim] != mask.shape:
            return t
        noise = rng.normal(scale=10.0, size=t.shape)
        if t.dtype.kind in "iu":
            noise = rng.integers(0, max(int(t.max()), 1) + 1, size=t.shape)
        keep = mask.reshape(mask.shape + (1,) * (t.ndim - mask.ndim))
        return np.where(keep, t, noise).astype(t.dtype)

    return tree.map_structure(fill, inputs)


def _check_layer_mask(case, tolerance, output_mask, expected_output_mask):
    mask = case.mask
    layer = case.make_built()
    valid_fn = output_mask or (lambda m: m)
    first = to_numpy(case.call(layer, _garbage_inputs(case.inputs, mask, 1)))
    second = to_numpy(case.call(layer, _garbage_inputs(case.inputs, mask, 2)))
    for i, (a, b) in enumerate(zip(tree.flatten(first), tree.flatten(second))):
        valid = np.asarray(valid_fn(mask), bool)
        valid = valid.reshape(valid.shape + (1,) * (a.ndim - valid.ndim))
        valid = np.broadcast_to(valid, a.shape)
        assert_close(
            a[valid],
            b[valid],
            "float32",
            tolerance,
            f"{case.name} unmasked outputs[{i}] with different padding",
        )
    computed = layer.compute_mask(_as_tensors(case.inputs), _as_mask_tensors(_align_mask(case.inputs, mask)))
    expected = mask if expected_output_mask == "same" else expected_output_mask
    if expected is None or computed is None:
        if (expected is None) != (computed is None):
            raise HarnessFailure(f"{case.name}.compute_mask returned {computed}, expected {expected}.")
        return
    for c, e in zip(tree.flatten(to_numpy(computed)), tree.flatten(expected)):
        if not np.array_equal(np.asarray(c, bool), np.asarray(e, bool)):
            raise HarnessFailure(f"{case.name}.compute_mask did not return the expected mask.")


def check_layer(
    layer_cls,
    init_kwargs,
    inputs,
    *,
    call_kwargs=None,
    mask=None,
    output_mask=None,
    expected_output_mask="same",
    checks=ALL_CHECKS,
    tolerance=1.0,
    policies=POLICIES,
    expect_compute_dtype_outputs=True,
):
    """Run the harness checks on a layer class.

    Args:
        layer_cls: the layer class (registered with Keras).
        init_kwargs: constructor arguments; the harness adds `dtype=` itself.
        inputs: a NumPy array, or a list of arrays for a layer called on a
            list (as `ConditionalLayerNormalization()([x, cond])`). Float
            arrays should be float32; the batch axis comes first.
        call_kwargs: extra keyword arguments for every call.
        mask: optional boolean array `(batch, seq)` passed as `mask=`; it
            enables the `"mask"` check.
        output_mask: `fn(mask) -> bool array` marking which output positions
            must not depend on masked inputs (default: the mask itself,
            broadcast over the trailing output axes).
        expected_output_mask: what `compute_mask` must return: `"same"` (the
            input mask, the default), `None`, or an array.
        checks: a non-empty subset of `ALL_CHECKS` (a list or tuple). The
            default runs `"mask"` only when `mask` is given; naming
            `"mask"` explicitly without a mask is a `ValueError`.
        tolerance: multiplier of the rounding tolerance (see module doc), a
            finite number > 0.
        policies: the dtype policies of the `"dtypes"` check (non-empty).
        expect_compute_dtype_outputs: whether float outputs must have the
            compute dtype of the policy.

    Raises:
        HarnessFailure: (an AssertionError) naming the check that failed.
        TypeError: for an argument of the wrong type, before anything runs.
        ValueError: for an argument of a wrong value, before anything runs.
    """
    explicit = checks is not ALL_CHECKS
    checks = _check_names("checks", checks, ALL_CHECKS, "check names")
    tolerance = _check_tolerance(tolerance)
    policies = _check_policies(policies)
    expect_compute_dtype_outputs = check_bool("expect_compute_dtype_outputs", expect_compute_dtype_outputs)
    if explicit and "mask" in checks and mask is None:
        # By default the mask check runs when a mask is given; asked for by
        # name without one, it would pass without checking anything.
        raise ValueError("The 'mask' check needs `mask=`; pass a mask or leave 'mask' out of `checks`.")
    case = _LayerCase(layer_cls, init_kwargs, inputs, call_kwargs, mask)
    if "call" in checks:
        _check_layer_call(case, tolerance)
    if "dtypes" in checks:
        _check_layer_dtypes(case, tolerance, policies, expect_compute_dtype_outputs)
    if "serialization" in checks:
        _check_layer_serialization(case)
    if "fit" in checks:
        _check_layer_fit(case)
    if "devices" in checks:
        _check_layer_devices(case, tolerance)
    if "mask" in checks and mask is not None:
        _check_layer_mask(case, tolerance, output_mask, expected_output_mask)


def check_activation(fn, x, *, tolerance=1.0, checks=ALL_CHECKS):
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

LOSS_CHECKS = ("call", "dtypes", "serialization", "fit", "devices")


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
    loss,
    init_kwargs,
    y_true,
    y_pred,
    *,
    sample_weight=None,
    checks=LOSS_CHECKS,
    tolerance=1.0,
    policies=POLICIES,
):
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
        losses = np.asarray(history.history["loss"])
        if not np.all(np.isfinite(losses)):
            raise HarnessFailure(f"{name}: fit() produced non-finite loss {losses}.")
        after = model.get_weights()
        _assert_finite(after, f"{name}: weights after fit()")
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

METRIC_CHECKS = ("call", "dtypes", "serialization", "devices")


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
    metric_cls,
    init_kwargs,
    y_true,
    y_pred,
    *,
    expected=None,
    checks=METRIC_CHECKS,
    tolerance=1.0,
    policies=POLICIES,
):
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


def _tiny_regression(seed=0, n=64, features=4):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype("float32")
    y = (x @ rng.normal(size=(features, 1)) + 0.1).astype("float32")
    return x, y


def check_callback(callback_factory, *, model_factory=None, data=None, epochs=2, policies=POLICIES):
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


STRATEGY_CHECKS = ("call", "dtypes", "serialization", "fit", "devices")


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


def check_strategy(strategy_factory, *, tasks=2, checks=STRATEGY_CHECKS, tolerance=64.0):
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
