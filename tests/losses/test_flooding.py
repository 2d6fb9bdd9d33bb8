import keras
import numpy as np
import pytest
from keras import ops

from keras_tricks import losses, testing
from keras_tricks.losses import Flooding, IndividualFlooding
from tests.losses.flooding_data import regression_with_weights


def _regression(seed=0, n=12, d=3):
    return regression_with_weights(seed, n, d)


def _np_mse(y_true, y_pred, weight=None):
    """Keras's weighted "sum_over_batch_size" MSE in float64."""
    per = np.mean((np.float64(y_pred) - np.float64(y_true)) ** 2, axis=-1)
    w = np.ones_like(per) if weight is None else np.float64(weight)
    return np.sum(per * w) / per.size


@pytest.mark.harness
def test_flooding_mse_through_harness():
    y_true, y_pred, weight = _regression()
    testing.check_loss(losses.Flooding, {"loss": "mse", "level": 0.5}, y_true, y_pred, sample_weight=weight)


@pytest.mark.harness
def test_flooding_loss_object_through_harness():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, size=(10,))
    logits = rng.normal(size=(10, 4)).astype("float32")
    wrapped = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    testing.check_loss(losses.Flooding, {"loss": wrapped, "level": 2.0}, labels, logits)


def test_value_is_plain_loss_and_objective_is_flooded():
    y_true, y_pred, weight = _regression()
    plain = _np_mse(y_true, y_pred, weight)
    for level in (0.0, plain / 2, 2 * plain):
        loss = losses.Flooding("mse", level)
        value = loss(y_true, y_pred, sample_weight=weight)
        testing.assert_close(value, plain, what="value (plain loss)")
        objective = loss.objective(y_true, y_pred, sample_weight=weight)
        testing.assert_close(objective, abs(plain - level) + level, what="objective")


@pytest.mark.parametrize("above", [True, False])
def test_gradient_is_plus_or_minus_plain_gradient(above):
    y_true, y_pred, weight = _regression(2)
    plain = _np_mse(y_true, y_pred, weight)
    level = 0.5 * plain if above else 2.0 * plain
    loss = losses.Flooding("mse", level)
    value, grad = testing.value_and_grad(
        lambda p: loss(ops.convert_to_tensor(y_true), p, sample_weight=weight), y_pred
    )
    # d/dp of sum_i w_i mean_j (p_ij - t_ij)^2 / n
    n, d = y_pred.shape
    plain_grad = 2.0 * (np.float64(y_pred) - y_true) * weight[:, None] / (n * d)
    sign = 1.0 if above else -1.0
    testing.assert_close(value, plain, what="value")
    testing.assert_close(grad, sign * plain_grad, what="gradient")
    # and the same as the gradient of the written-out objective |L - b| + b
    _, obj_grad = testing.value_and_grad(
        lambda p: loss.objective(ops.convert_to_tensor(y_true), p, sample_weight=weight), y_pred
    )
    testing.assert_close(grad, obj_grad, what="gradient vs objective gradient")


def test_function_and_string_and_object_agree():
    y_true, y_pred, weight = _regression(3)
    values = [
        losses.Flooding(l, 0.1)(y_true, y_pred, sample_weight=weight)
        for l in ("mean_squared_error", keras.losses.mean_squared_error, keras.losses.MeanSquaredError())
    ]
    for v in values:
        testing.assert_close(v, _np_mse(y_true, y_pred, weight))


def test_sum_reduction_is_respected():
    y_true, y_pred, weight = _regression(4)
    loss = losses.Flooding(keras.losses.MeanSquaredError(reduction="sum"), 1.0)
    expected = _np_mse(y_true, y_pred, weight) * len(y_true)
    testing.assert_close(loss(y_true, y_pred, sample_weight=weight), expected)
    assert loss.get_config()["reduction"] == "sum"


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), -float("inf"), "0.1", None, True, [0.1]])
def test_bad_level_is_a_value_error_naming_level(bad):
    # The package's rule: a wrong type is a TypeError, a wrong number a ValueError.
    error = ValueError if isinstance(bad, float) else TypeError
    with pytest.raises(error, match="`level`"):
        losses.Flooding("mse", bad)


def test_negative_level_allowed_for_losses_that_can_be_negative():
    loss = losses.Flooding("mse", -1.5, allow_negative_level=True)
    assert loss.level == -1.5
    with pytest.raises(ValueError, match="`level`"):
        losses.Flooding("mse", float("nan"), allow_negative_level=True)
    with pytest.raises(ValueError, match="`level`"):
        loss.level = float("inf")


def test_bad_loss_and_unreduced_loss_are_value_errors():
    with pytest.raises(ValueError, match="`loss`"):
        losses.Flooding("no_such_loss", 0.1)
    with pytest.raises(ValueError, match="`loss`"):
        losses.Flooding(3, 0.1)
    with pytest.raises(ValueError, match="reduction"):
        losses.Flooding(keras.losses.MeanSquaredError(reduction="none"), 0.1)


def test_config_round_trip_keeps_wrapped_loss_and_level():
    wrapped = keras.losses.CategoricalCrossentropy(label_smoothing=0.1, from_logits=True)
    loss = losses.Flooding(wrapped, 0.3, name="f")
    loss.level = 0.7
    config = loss.get_config()
    clone = losses.Flooding.from_config(config)
    assert clone.get_config() == config
    assert clone.level == pytest.approx(0.7)
    assert clone.inner.get_config()["label_smoothing"] == 0.1
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert isinstance(restored, losses.Flooding) and restored.level == pytest.approx(0.7)


def _one_step_model(regularizer=None):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, kernel_regularizer=regularizer)])
    return model


@pytest.mark.parametrize("level_above_loss", [False, True])
def test_one_sgd_step_descends_or_ascends_and_never_floods_regularisation(level_above_loss):
    """One full-batch SGD step through fit(): above b it is the plain step;
    below b the data gradient flips while the L2 gradient does not."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(16, 3)).astype("float32")
    y = rng.normal(size=(16, 2)).astype("float32")
    l2, lr = 0.05, 0.1

    plain = _one_step_model(keras.regularizers.L2(l2))
    w0 = [np.float64(w) for w in plain.get_weights()]
    kernel, bias = w0
    pred = x @ kernel + bias
    data_loss = np.mean((pred - y) ** 2)
    g_pred = 2.0 * (pred - y) / pred.size
    g_data = [x.T @ g_pred, g_pred.sum(0)]
    g_reg = [2.0 * l2 * kernel, np.zeros_like(bias)]

    level = 10.0 * data_loss if level_above_loss else 0.5 * data_loss
    sign = -1.0 if level_above_loss else 1.0
    plain.compile(keras.optimizers.SGD(lr), loss=losses.Flooding("mse", level))
    history = plain.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    expected = [w - lr * (sign * gd + gr) for w, gd, gr in zip(w0, g_data, g_reg)]
    testing.assert_close(plain.get_weights(), expected, tolerance=8, what="weights after one step")
    # the logged loss is the plain loss plus the (unflooded) regularisation
    testing.assert_close(
        history.history["loss"][0], data_loss + l2 * np.sum(kernel**2), tolerance=4, what="logged loss"
    )


def test_logged_loss_and_val_loss_are_plain():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(48, 3)).astype("float32")
    y = rng.normal(size=(48, 2)).astype("float32")
    model = _one_step_model()
    model.compile(keras.optimizers.SGD(0.05), loss=losses.Flooding("mse", 5.0))
    history = model.fit(x, y, batch_size=16, epochs=2, verbose=0, validation_data=(x[:32], y[:32]))
    pred = np.float64(model.predict(x, verbose=0))
    testing.assert_close(history.history["val_loss"][-1], np.mean((pred[:32] - y[:32]) ** 2), what="val_loss")
    testing.assert_close(model.evaluate(x, y, verbose=0), np.mean((pred - y) ** 2), what="evaluate()")
    assert set(history.history) == {"loss", "val_loss"}  # no scheduler: nothing extra


def test_level_set_between_fits_takes_effect_once_attached():
    """Full-batch SGD: after `level = 1e6` the next fit() ascends, on every
    backend (on JAX the loss must be attached, else a warning says so)."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(32, 3)).astype("float32")
    y = rng.normal(size=(32, 2)).astype("float32")
    model = _one_step_model()
    flood = losses.Flooding("mse", 0.0)
    model.compile(keras.optimizers.SGD(0.1), loss=flood)
    if keras.backend.backend() == "jax":
        with pytest.warns(UserWarning, match="attach"):
            flood.level = 0.0 + 1e-9
    flood.attach(model)
    first = model.fit(x, y, batch_size=32, epochs=2, verbose=0).history
    assert first["loss"][1] < first["loss"][0]
    flood.level = 1e6
    second = model.fit(x, y, batch_size=32, epochs=2, verbose=0).history
    assert second["loss"][1] > second["loss"][0]
    np.testing.assert_allclose(second["flood_level"], [1e6, 1e6])


# --- regression: losses that go negative, and levels float32 cannot hold -------


@pytest.mark.parametrize(
    "loss", ["cosine_similarity", keras.losses.CosineSimilarity(), keras.losses.cosine_similarity, "poisson"]
)
@pytest.mark.parametrize("cls", [Flooding, IndividualFlooding])
def test_flooding_refuses_losses_that_go_negative(cls, loss):
    # At level 0, cosine similarity (in [-1, 1]) is below b on every batch, so
    # the flooded gradient is exactly minus the gradient: the loss is maximised.
    with pytest.raises(ValueError, match="negative values"):
        cls(loss, 0.0)
    assert cls(loss, -0.5, allow_negative_level=True).level == -0.5


@pytest.mark.parametrize(
    "level, error",
    [
        (1e300, ValueError),
        (-1e300, ValueError),
        (float("inf"), ValueError),
        (float("nan"), ValueError),
        ("0.1", TypeError),
        (True, TypeError),
        (None, TypeError),
    ],
)
def test_flooding_level_is_validated_by_name(level, error):
    with pytest.raises(error, match="level"):
        Flooding("mse", level, allow_negative_level=True)


def test_flooding_level_takes_numpy_scalars():
    assert Flooding("mse", np.float32(0.25)).level == 0.25
    assert IndividualFlooding("mse", np.int64(1)).level == 1.0
