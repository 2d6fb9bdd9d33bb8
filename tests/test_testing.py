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
    testing.check_metric(keras.metrics.BinaryAccuracy, {"threshold": 0.0}, y_true, y_pred,
                         expected=np.mean((y_pred > 0) == (y_true > 0.5)))


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
        self.w = self.add_weight(shape=(input_shape[-1],), initializer="ones",
                                 dtype=self.compute_dtype)

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
