import keras
import numpy as np
import pytest
from keras import ops

from keras_tricks import losses, testing
from tests.losses.flooding_data import regression_with_weights


def _data(seed=0, n=10, d=2):
    return regression_with_weights(seed, n, d)


def _np_per_sample_mse(y_true, y_pred):
    return np.mean((np.float64(y_pred) - np.float64(y_true)) ** 2, axis=-1)


@pytest.mark.harness
def test_individual_flooding_through_harness():
    y_true, y_pred, weight = _data()
    testing.check_loss(
        losses.IndividualFlooding, {"loss": "mse", "level": 0.8}, y_true, y_pred, sample_weight=weight
    )


@pytest.mark.harness
def test_individual_flooding_crossentropy_through_harness():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 5, size=(12,))
    logits = rng.normal(size=(12, 5)).astype("float32")
    testing.check_loss(
        losses.IndividualFlooding,
        {"loss": keras.losses.SparseCategoricalCrossentropy(from_logits=True), "level": 1.5},
        labels,
        logits,
    )


def test_value_is_plain_and_objective_is_per_sample_flood():
    y_true, y_pred, weight = _data(2)
    per = _np_per_sample_mse(y_true, y_pred)
    level = float(np.median(per))
    loss = losses.IndividualFlooding("mse", level)
    testing.assert_close(
        loss(y_true, y_pred, sample_weight=weight), np.sum(per * weight) / per.size, what="value"
    )
    testing.assert_close(
        loss.objective(y_true, y_pred, sample_weight=weight),
        np.sum((np.abs(per - level) + level) * weight) / per.size,
        what="objective",
    )


def test_per_sample_sign_pattern_of_the_gradient():
    y_true, y_pred, weight = _data(3, n=16)
    per = _np_per_sample_mse(y_true, y_pred)
    level = float(np.median(per))  # half the samples above, half below
    loss = losses.IndividualFlooding("mse", level)
    _, grad = testing.value_and_grad(
        lambda p: loss(ops.convert_to_tensor(y_true), p, sample_weight=weight), y_pred
    )
    n, d = y_pred.shape
    sign = np.sign(per - level)
    assert (sign > 0).sum() == 8 and (sign < 0).sum() == 8
    plain_grad = 2.0 * (np.float64(y_pred) - y_true) * weight[:, None] / (n * d)
    expected = sign[:, None] * plain_grad
    testing.assert_close(grad, expected, what="per-sample flooded gradient")
    # batch-level Flooding at the same level would give one sign for all rows
    _, batch_grad = testing.value_and_grad(
        lambda p: losses.Flooding("mse", level)(ops.convert_to_tensor(y_true), p, sample_weight=weight),
        y_pred,
    )
    batch_sign = np.sign(np.sum(per * weight) / n - level)
    testing.assert_close(batch_grad, batch_sign * plain_grad, what="Flooding gradient")


def test_per_token_flooding_with_token_weights():
    """Sequence loss: (batch, time) per-token values, padded tokens weighted 0."""
    rng = np.random.default_rng(4)
    b, t, c = 3, 5, 4
    labels = rng.integers(0, c, size=(b, t))
    logits = rng.normal(size=(b, t, c)).astype("float32")
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]], "float32")
    z = np.float64(logits)
    logp = (
        z - np.log(np.sum(np.exp(z - z.max(-1, keepdims=True)), -1, keepdims=True)) - z.max(-1, keepdims=True)
    )
    per = -np.take_along_axis(logp, labels[..., None], -1)[..., 0]
    level = float(np.median(per[mask > 0]))
    loss = losses.IndividualFlooding(keras.losses.SparseCategoricalCrossentropy(from_logits=True), level)
    value, grad = testing.value_and_grad(
        lambda p: loss(ops.convert_to_tensor(labels), p, sample_weight=mask), logits
    )
    testing.assert_close(value, np.sum(per * mask) / per.size, what="value")
    softmax = np.exp(logp)
    onehot = np.eye(c)[labels]
    expected = (np.sign(per - level) * mask)[..., None] * (softmax - onehot) / per.size
    testing.assert_close(grad, expected, what="per-token gradient")


def test_keras_mask_of_a_sequence_model_is_respected():
    """Padded tokens (Embedding mask_zero) are left out of value and fraction."""
    rng = np.random.default_rng(5)
    tokens = np.array([[3, 1, 2, 0, 0], [4, 4, 1, 2, 3], [2, 0, 0, 0, 0]])
    labels = rng.integers(0, 3, size=tokens.shape)
    keras.utils.set_random_seed(0)
    inp = keras.Input((5,), dtype="int32")
    out = keras.layers.Dense(3)(keras.layers.Embedding(6, 4, mask_zero=True)(inp))
    model = keras.Model(inp, out)
    loss = losses.IndividualFlooding(keras.losses.SparseCategoricalCrossentropy(from_logits=True), 1.1)
    model.compile("sgd", loss=loss)
    z = np.float64(model.predict(tokens, verbose=0))
    logp = z - np.log(np.sum(np.exp(z), -1, keepdims=True))
    per = -np.take_along_axis(logp, labels[..., None], -1)[..., 0]
    valid = tokens > 0
    loss.attach(model)
    logs = model.evaluate(tokens, labels, batch_size=3, verbose=0, return_dict=True)
    testing.assert_close(logs["loss"], per[valid].mean(), what="masked evaluate()")
    testing.assert_close(
        logs["flood_fraction"], np.mean(per[valid] < 1.1), what="fraction of flooded unmasked tokens"
    )
    testing.assert_close(
        logs["flood_objective"], np.mean(np.abs(per[valid] - 1.1) + 1.1), what="masked flooded objective"
    )


def test_reduction_none_gives_per_sample_values():
    y_true, y_pred, _ = _data(6)
    loss = losses.IndividualFlooding(keras.losses.MeanSquaredError(reduction="none"), 0.5)
    testing.assert_close(loss(y_true, y_pred), _np_per_sample_mse(y_true, y_pred))


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), "x", None])
def test_bad_level_is_a_value_error_naming_level(bad):
    # The package's rule: a wrong type is a TypeError, a wrong number a ValueError.
    error = ValueError if isinstance(bad, float) else TypeError
    with pytest.raises(error, match="`level`"):
        losses.IndividualFlooding("mse", bad)


def test_config_round_trip():
    loss = losses.IndividualFlooding("sparse_categorical_crossentropy", 0.25, allow_negative_level=True)
    config = loss.get_config()
    assert config["loss"] == "sparse_categorical_crossentropy"
    clone = losses.IndividualFlooding.from_config(config)
    assert clone.get_config() == config and clone.allow_negative_level
