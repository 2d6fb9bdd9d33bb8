"""The harness itself: it passes correct components (Keras's own) and catches
each kind of defect it claims to check, on every backend."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_tricks import testing
from keras_tricks.testing import HarnessFailure

pytestmark = pytest.mark.harness

X = np.random.default_rng(0).normal(size=(4, 5, 3)).astype("float32")
MASK = np.array([[True] * 5, [True] * 3 + [False] * 2] * 2)


# --------------------------------------------------------------- good parts


def test_passes_keras_dense_and_layer_normalization_with_mask():
    testing.check_layer(keras.layers.Dense, {"units": 2}, X, tolerance=4.0)
    testing.check_layer(keras.layers.LayerNormalization, {}, X, mask=MASK, tolerance=4.0)


def test_passes_keras_loss_and_metric():
    rng = np.random.default_rng(1)
    y_pred = rng.normal(size=(8, 5)).astype("float32")
    y_true = rng.integers(0, 2, size=(8, 5)).astype("float32")
    testing.check_loss(keras.losses.BinaryCrossentropy, {"from_logits": True}, y_true, y_pred)
    testing.check_metric(
        keras.metrics.BinaryAccuracy,
        {"threshold": 0.0},
        y_true,
        y_pred,
        expected=np.mean((y_pred > 0) == (y_true > 0.5)),
    )


def test_assert_close_scales_with_the_dtype():
    testing.assert_close(np.float32(1.0 + 2**-20), np.float32(1.0), "float32")
    with pytest.raises(HarnessFailure, match="beyond the float32 tolerance"):
        testing.assert_close(np.float32(1.0 + 2**-12), np.float32(1.0), "float32")
    testing.assert_close(np.float32(1.0 + 2**-12), np.float32(1.0), "float16")
    with pytest.raises(HarnessFailure, match="NaN/inf pattern"):
        testing.assert_close(np.array([np.nan, 1.0]), np.array([0.0, 1.0]))


# ---------------------------------------------------------------- defects


@keras.saving.register_keras_serializable(package="keras_tricks", name="selftest_NaiveSquarePlus")
class NaiveSquarePlus(keras.layers.Layer):
    """The textbook formula: overflows in float16 for |x| >= 256."""

    def call(self, x):
        return (x + ops.sqrt(x * x + 4.0)) / 2.0


def test_catches_overflow_under_mixed_float16():
    x = (X * 200.0).astype("float32")
    with pytest.raises(HarnessFailure, match="mixed_float16"):
        testing.check_layer(NaiveSquarePlus, {}, x, checks=("dtypes",))


@keras.saving.register_keras_serializable(package="keras_tricks", name="selftest_ForgetfulScale")
class ForgetfulScale(keras.layers.Layer):
    """get_config is written by hand and forgets `factor` (Keras's automatic
    capture of constructor arguments would otherwise have saved it)."""

    def __init__(self, factor=1.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, x):
        return x * self.factor

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable}


def test_catches_incomplete_get_config():
    with pytest.raises(HarnessFailure, match="from_config"):
        testing.check_layer(ForgetfulScale, {"factor": 3.0}, X, checks=("serialization",))


class Unregistered(keras.layers.Layer):
    def call(self, x):
        return x + 1.0


def test_catches_unregistered_layer():
    with pytest.raises(HarnessFailure, match="not registered"):
        testing.check_layer(Unregistered, {}, X, checks=("serialization",))


@keras.saving.register_keras_serializable(package="keras_tricks", name="selftest_LeakyMean")
class LeakyMean(keras.layers.Layer):
    """Claims to support masking but averages over padded positions too."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, x):
        return x - ops.mean(x, axis=1, keepdims=True)


def test_catches_output_depending_on_padding():
    with pytest.raises(HarnessFailure, match="different padding"):
        testing.check_layer(LeakyMean, {}, X, mask=MASK, checks=("mask",))


@keras.saving.register_keras_serializable(package="keras_tricks", name="selftest_DeadWeight")
class DeadWeight(keras.layers.Layer):
    def build(self, input_shape):
        self.used = self.add_weight(shape=(input_shape[-1],), initializer="ones")
        self.unused = self.add_weight(shape=(input_shape[-1],), initializer="ones")

    def call(self, x):
        return x * self.used


def test_catches_weight_without_gradient():
    with pytest.raises(HarnessFailure, match="did not change"):
        testing.check_layer(DeadWeight, {}, X, checks=("fit",))


@keras.saving.register_keras_serializable(package="keras_tricks", name="selftest_WrongShape")
class WrongShape(keras.layers.Layer):
    def call(self, x):
        return x[..., :1]

    def compute_output_shape(self, input_shape):
        return input_shape


def test_catches_wrong_compute_output_shape():
    with pytest.raises(HarnessFailure, match="compute_output_shape"):
        testing.check_layer(WrongShape, {}, X, checks=("call",))


@keras.saving.register_keras_serializable(package="keras_tricks", name="selftest_HalfVariables")
class HalfVariables(keras.layers.Layer):
    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1],), initializer="ones", dtype=self.compute_dtype)

    def call(self, x):
        return x * ops.cast(self.w, x.dtype)


def test_catches_half_precision_variables():
    with pytest.raises(HarnessFailure, match="expected float32"):
        testing.check_layer(HalfVariables, {}, X, checks=("dtypes",))


@keras.saving.register_keras_serializable(package="keras_tricks", name="selftest_Noisy")
class Noisy(keras.layers.Layer):
    """Draws host-side randomness on each call: no two calls agree."""

    def call(self, x):
        return x + ops.convert_to_tensor(np.random.normal(size=(1,)).astype("float32"))


def test_catches_nondeterministic_calls():
    with pytest.raises(HarnessFailure, match="call"):
        testing.check_layer(Noisy, {}, X, checks=("call",))


@keras.saving.register_keras_serializable(package="keras_tricks", name="selftest_euclidean_loss")
def euclidean_loss(y_true, y_pred):
    """sqrt has an infinite derivative at 0: NaN gradient at a perfect fit."""
    return ops.sqrt(ops.sum(ops.square(y_pred - y_true), axis=-1))


def test_catches_nan_gradient_in_loss():
    y = np.random.default_rng(2).normal(size=(6, 3)).astype("float32")
    with pytest.raises(HarnessFailure, match="gradient"):
        testing.check_loss(euclidean_loss, None, y, y.copy(), checks=("dtypes",))


@keras.saving.register_keras_serializable(package="keras_tricks", name="selftest_LastBatchAccuracy")
class LastBatchAccuracy(keras.metrics.Metric):
    """Forgets every batch but the last: not an accumulating metric."""

    def __init__(self, name="last_batch_accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.value = self.add_variable(shape=(), initializer="zeros", name="value")

    def update_state(self, y_true, y_pred, sample_weight=None):
        hits = ops.cast(ops.equal(ops.cast(y_pred > 0, "float32"), y_true), "float32")
        self.value.assign(ops.mean(hits))

    def result(self):
        return self.value


def test_catches_metric_that_does_not_accumulate():
    rng = np.random.default_rng(3)
    y_pred = rng.normal(size=(12, 4)).astype("float32")
    y_true = rng.integers(0, 2, size=(12, 4)).astype("float32")
    with pytest.raises(HarnessFailure, match="accumulated"):
        testing.check_metric(LastBatchAccuracy, {}, y_true, y_pred, checks=("call",))


class Poisoner(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        self.model.set_weights([w * np.nan for w in self.model.get_weights()])


def test_catches_callback_that_breaks_training():
    with pytest.raises(HarnessFailure, match="Poisoner"):
        testing.check_callback(Poisoner, policies=("float32",))


def test_unknown_check_names_are_rejected():
    with pytest.raises(ValueError, match="Unknown checks"):
        testing.check_layer(keras.layers.Dense, {"units": 2}, X, checks=("speed",))


# ------------------------------------------- no vacuous pass, argument checks


@pytest.mark.parametrize(
    "tolerance", [float("nan"), float("inf"), np.float32("nan"), np.float64("inf"), 0.0, -1.0, -float("inf")]
)
def test_assert_close_refuses_a_tolerance_that_is_not_finite_and_positive(tolerance):
    # With tolerance=nan or inf every comparison passed: [1, 2] "equalled" [1, 3].
    with pytest.raises(ValueError, match="`tolerance`"):
        testing.assert_close([1.0, 2.0], [1.0, 3.0], tolerance=tolerance)


@pytest.mark.parametrize("tolerance", ["1", None, True, np.bool_(True), [1.0]])
def test_assert_close_refuses_a_tolerance_of_the_wrong_type(tolerance):
    with pytest.raises(TypeError, match="`tolerance`"):
        testing.assert_close([1.0, 2.0], [1.0, 2.0], tolerance=tolerance)


@pytest.mark.parametrize("tolerance", [np.float32(2.0), np.int64(2), 2])
def test_assert_close_takes_numpy_scalar_tolerances_and_still_compares(tolerance):
    # 2 x 8 float32 ulps around 1: 2**-20 is inside, 2**-17 (16.8 ulps
    # of the scale |e| + rms = 2) just outside.
    testing.assert_close(np.float32(1.0 + 2**-20), np.float32(1.0), tolerance=tolerance)
    with pytest.raises(HarnessFailure, match=r"beyond the float32 tolerance \(x2"):
        testing.assert_close(np.float64(1.0 + 2**-17), np.float64(1.0), tolerance=tolerance)


@pytest.mark.parametrize(
    "dtype, error", [("int32", ValueError), ("bool", ValueError), ("float8", TypeError), (3, TypeError)]
)
def test_assert_close_needs_a_float_dtype(dtype, error):
    with pytest.raises(error, match="`dtype`"):
        testing.assert_close([1.0], [1.0], dtype=dtype)


def test_assert_close_accepts_numpy_dtypes():
    testing.assert_close([1.0], [1.0], dtype=np.float16)
    with pytest.raises(HarnessFailure, match="float16 tolerance"):
        testing.assert_close([1.1], [1.0], dtype=np.dtype("float16"))


def test_assert_close_fails_on_shape_mismatch_without_broadcasting():
    with pytest.raises(HarnessFailure, match=r"shape \(2,\), expected \(2, 1\)"):
        testing.assert_close(np.ones(2), np.ones((2, 1)))
    with pytest.raises(HarnessFailure, match=r"shape \(\), expected \(1,\)"):
        testing.assert_close(np.float32(1.0), np.ones(1, "float32"))
    with pytest.raises(HarnessFailure, match=r"shape \(3, 2\), expected \(2, 3\)"):
        testing.assert_close(np.zeros((3, 2)), np.zeros((2, 3)))


def test_assert_close_fails_on_nan_or_inf_where_the_reference_is_finite():
    with pytest.raises(HarnessFailure, match="NaN/inf pattern"):
        testing.assert_close(np.array([1.0, np.nan]), np.array([1.0, 2.0]))
    with pytest.raises(HarnessFailure, match="NaN/inf pattern"):
        testing.assert_close(np.array([np.nan, np.nan]), np.array([1.0, 2.0]))
    with pytest.raises(HarnessFailure, match="NaN/inf pattern"):
        testing.assert_close(np.array([np.inf]), np.array([1e308]))
    with pytest.raises(HarnessFailure, match="NaN/inf pattern"):
        testing.assert_close(np.array([-np.inf]), np.array([np.inf]))
    with pytest.raises(HarnessFailure, match="NaN/inf pattern"):
        testing.assert_close(np.array([1.0]), np.array([np.nan]))
    # Matching specials are equal, and the finite rest is still compared.
    testing.assert_close(np.array([np.nan, np.inf, 1.0]), np.array([np.nan, np.inf, 1.0]))
    with pytest.raises(HarnessFailure, match="beyond"):
        testing.assert_close(np.array([np.nan, 1.5]), np.array([np.nan, 1.0]))


def test_assert_close_empty_against_non_empty_fails_and_empty_equals_empty():
    with pytest.raises(HarnessFailure, match=r"shape \(0,\), expected \(3,\)"):
        testing.assert_close(np.zeros(0), np.zeros(3))
    with pytest.raises(HarnessFailure, match=r"shape \(2, 3\), expected \(0, 3\)"):
        testing.assert_close(np.zeros((2, 3)), np.zeros((0, 3)))
    with pytest.raises(HarnessFailure, match="0 tensors, expected 1"):
        testing.assert_close([], [np.zeros(3)])
    testing.assert_close(np.zeros((0, 3)), np.zeros((0, 3)))


def test_assert_close_none_matches_only_none():
    with pytest.raises(HarnessFailure, match="None, expected a value"):
        testing.assert_close([None], [np.float32(1.0)])
    with pytest.raises(HarnessFailure, match="a value, expected None"):
        testing.assert_close([np.float32(np.nan)], [None])


def test_assert_close_checks_every_tensor_of_a_structure():
    with pytest.raises(HarnessFailure, match=r"outputs\[1\]"):
        testing.assert_close([np.ones(2), np.ones(2)], [np.ones(2), 2 * np.ones(2)])
    with pytest.raises(HarnessFailure, match="2 tensors, expected 3"):
        testing.assert_close([np.ones(2)] * 2, [np.ones(2)] * 3)
    with pytest.raises(TypeError, match="`what`"):
        testing.assert_close(1.0, 1.0, what=3)


def _equal():
    return "equal"


Y = np.random.default_rng(4).normal(size=(4, 3)).astype("float32")


@pytest.mark.parametrize(
    "call",
    [
        lambda **kw: testing.check_layer(keras.layers.Dense, {"units": 2}, X, **kw),
        lambda **kw: testing.check_activation(keras.activations.relu, X, **kw),
        lambda **kw: testing.check_loss(keras.losses.MeanSquaredError, {}, Y, Y, **kw),
        lambda **kw: testing.check_metric(keras.metrics.MeanSquaredError, {}, Y, Y, **kw),
        lambda **kw: testing.check_strategy(_equal, **kw),
    ],
    ids=["check_layer", "check_activation", "check_loss", "check_metric", "check_strategy"],
)
@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"tolerance": float("nan")}, ValueError, "`tolerance`"),
        ({"tolerance": float("inf")}, ValueError, "`tolerance`"),
        ({"tolerance": 0}, ValueError, "`tolerance`"),
        ({"tolerance": True}, TypeError, "`tolerance`"),
        ({"checks": ()}, ValueError, "`checks` is empty"),
        ({"checks": "call"}, TypeError, "`checks`"),
        ({"checks": ("speed",)}, ValueError, "Unknown checks"),
        ({"checks": [1]}, TypeError, "`checks`"),
    ],
)
def test_every_check_function_validates_its_arguments_before_running(call, kwargs, error, match):
    with pytest.raises(error, match=match):
        call(**kwargs)


@pytest.mark.parametrize(
    "call",
    [
        lambda **kw: testing.check_layer(keras.layers.Dense, {"units": 2}, X, **kw),
        lambda **kw: testing.check_loss(keras.losses.MeanSquaredError, {}, Y, Y, **kw),
        lambda **kw: testing.check_metric(keras.metrics.MeanSquaredError, {}, Y, Y, **kw),
        lambda **kw: testing.check_callback(keras.callbacks.Callback, **kw),
    ],
    ids=["check_layer", "check_loss", "check_metric", "check_callback"],
)
@pytest.mark.parametrize(
    "policies, error, match",
    [
        ((), ValueError, "`policies` is empty"),
        ("float32", TypeError, "`policies`"),
        (("float33",), ValueError, "Unknown policies"),
        ((None,), TypeError, "`policies`"),
    ],
)
def test_policies_must_name_at_least_one_known_policy(call, policies, error, match):
    with pytest.raises(error, match=match):
        call(policies=policies)


def test_mask_check_by_name_needs_a_mask():
    with pytest.raises(ValueError, match="'mask' check needs `mask=`"):
        testing.check_layer(keras.layers.LayerNormalization, {}, X, checks=("mask",))
    with pytest.raises(TypeError, match="`expect_compute_dtype_outputs`"):
        testing.check_layer(keras.layers.Dense, {"units": 2}, X, expect_compute_dtype_outputs="yes")


@pytest.mark.parametrize(
    "epochs, error",
    [(0, ValueError), (-1, ValueError), (1.5, TypeError), (True, TypeError), (None, TypeError)],
)
def test_check_callback_epochs(epochs, error):
    with pytest.raises(error, match="`epochs`"):
        testing.check_callback(keras.callbacks.Callback, epochs=epochs)


def test_check_callback_factories_must_be_callable():
    with pytest.raises(TypeError, match="`callback_factory`"):
        testing.check_callback(keras.callbacks.Callback())
    with pytest.raises(TypeError, match="`model_factory`"):
        testing.check_callback(keras.callbacks.Callback, model_factory="dense")


@pytest.mark.parametrize(
    "tasks, error", [(1, ValueError), (0, ValueError), (2.0, TypeError), (np.bool_(True), TypeError)]
)
def test_check_strategy_tasks(tasks, error):
    with pytest.raises(error, match="`tasks`"):
        testing.check_strategy(_equal, tasks=tasks)


def test_numpy_integer_epochs_and_tasks_are_accepted():
    testing.check_callback(keras.callbacks.Callback, epochs=np.int64(1), policies=("float32",))
    testing.check_strategy(_equal, tasks=np.int32(2), checks=("fit",), tolerance=np.float32(64))


def test_check_strategy_factory_must_be_callable():
    with pytest.raises(TypeError, match="`strategy_factory`"):
        testing.check_strategy("equal")


def test_to_numpy_keeps_host_float64_values_on_every_backend():
    # A float64 reference must not be rounded to float32 (JAX without x64
    # did so, and 1e308 became inf) before it is compared.
    x = np.array([1e308, 1.0 + 2**-40])
    out = testing.to_numpy(x)
    assert out.dtype == np.float64 and np.array_equal(out, x)
    assert testing.to_numpy(np.float64(1.0 + 2**-40)) == 1.0 + 2**-40
    with pytest.raises(HarnessFailure, match="beyond the float64 tolerance"):
        testing.assert_close(np.float64(1.0 + 2**-40), np.float64(1.0), "float64")
