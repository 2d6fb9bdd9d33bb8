"""`check_layer`: the Keras contract of a layer (see the package docstring)."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Collection
from typing import Any

import keras
import numpy as np
from keras import ops, tree
from numpy.typing import ArrayLike

from keras_tricks import _backend, _numerics
from keras_tricks._validation import check_bool
from keras_tricks.testing._core import (
    ALL_CHECKS,
    POLICIES,
    HarnessFailure,
    _as_mask_tensors,
    _as_tensors,
    _assert_finite,
    _assert_identical,
    _check_config_json,
    _check_names,
    _check_policies,
    _check_tolerance,
    _fit_result,
    _is_float_array,
    _jit_compile,
    _registered_if_ours,
    _symbolic_inputs,
    _temp_dir,
    _tolerance_dtype_for_device,
    assert_close,
    to_numpy,
    value_and_grad,
)


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
    after = _fit_result(history, model, case.name)
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
    layer_cls: type[keras.layers.Layer],
    init_kwargs: dict[str, Any] | None,
    inputs: np.ndarray | list[np.ndarray],
    *,
    call_kwargs: dict[str, Any] | None = None,
    mask: ArrayLike | None = None,
    output_mask: Callable[[np.ndarray], ArrayLike] | None = None,
    expected_output_mask: str | ArrayLike | None = "same",
    checks: Collection[str] = ALL_CHECKS,
    tolerance: float = 1.0,
    policies: Collection[str] = POLICIES,
    expect_compute_dtype_outputs: bool = True,
) -> None:
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
