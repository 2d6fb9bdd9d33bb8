import os

import keras
import numpy as np
import pytest

from keras_tricks.callbacks import ExponentialMovingAverage
from keras_tricks.optimizers import ScaledUpdates

N, F = 8, 3
LR, MOMENTUM, WD = 0.05, 0.9, 0.01
SCALES = {".*body/.*": 0.25}  # the body (kernel, bias) at a quarter of the rate; the head at LR


def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, F)).astype("float32")
    y = (x @ rng.normal(size=(F, 1)) + 0.5).astype("float32")
    return x, y


def make_model(optimizer, seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [keras.Input((F,)), keras.layers.Dense(F, name="body"), keras.layers.Dense(1, name="head")]
    )
    model.compile(optimizer=optimizer, loss="mse")
    return model


def weights(model):
    return [np.array(keras.ops.convert_to_numpy(v), np.float64) for v in model.trainable_variables]


def grads(ws, x, y):
    """Float64 gradients of the MSE of Dense(body) -> Dense(head), full batch."""
    k1, b1, k2, b2 = ws
    h = x @ k1 + b1
    r = h @ k2 + b2 - y
    d = 2.0 * r / r.size
    dh = d @ k2.T
    return [x.T @ dh, dh.sum(0), h.T @ d, d.sum(0)]


def reference(w0, x, y, steps, optimizer, accumulation=1):
    """Float64 SGD with momentum or AdamW (Keras's forms) with the learning
    rate LR * factor per variable; `accumulation` equal gradients per update."""
    ws = [w.copy() for w in w0]
    rates = [LR * 0.25] * 2 + [LR] * 2
    m = [np.zeros_like(w) for w in ws]
    v = [np.zeros_like(w) for w in ws]
    t = 0
    for step in range(steps):
        if (step + 1) % accumulation:
            continue
        t += 1
        for i, g in enumerate(grads(ws, x.astype(np.float64), y.astype(np.float64))):
            if optimizer == "sgd":
                m[i] = MOMENTUM * m[i] - rates[i] * g
                ws[i] = ws[i] + m[i]
            else:  # AdamW: decoupled decay first, then Adam in Keras's form (epsilon added to sqrt(v))
                ws[i] = ws[i] - ws[i] * WD * rates[i]
                m[i] = 0.9 * m[i] + 0.1 * g
                v[i] = 0.999 * v[i] + 0.001 * g * g
                alpha = rates[i] * np.sqrt(1 - 0.999**t) / (1 - 0.9**t)
                ws[i] = ws[i] - alpha * m[i] / (np.sqrt(v[i]) + 1e-7)
    return ws


def inner(name, **kwargs):
    if name == "sgd":
        return keras.optimizers.SGD(LR, momentum=MOMENTUM, **kwargs)
    return keras.optimizers.AdamW(LR, weight_decay=WD, **kwargs)


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_update_matches_per_variable_learning_rate(name):
    x, y = data()
    model = make_model(ScaledUpdates(inner(name), SCALES))
    w0 = weights(model)
    for _ in range(5):
        model.train_on_batch(x, y)
    for a, b in zip(weights(model), reference(w0, x, y, 5, name)):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)


def test_gradient_accumulation_and_fit():
    x, y = data()
    model = make_model(ScaledUpdates(inner("adamw", gradient_accumulation_steps=2), SCALES))
    w0 = weights(model)
    model.fit(x, y, batch_size=N, epochs=6, shuffle=False, verbose=0)
    for a, b in zip(weights(model), reference(w0, x, y, 6, "adamw", accumulation=2)):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)


def test_mixed_precision_skipped_steps_stay_skipped():
    keras.config.set_dtype_policy("mixed_float16")
    x, y = data()
    model = make_model(ScaledUpdates(keras.optimizers.SGD(LR), SCALES))
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    model.train_on_batch(x, y)
    before = weights(model)
    model.train_on_batch(x, np.full_like(y, np.inf))  # non-finite gradients: skipped
    for a, b in zip(weights(model), before):
        np.testing.assert_array_equal(a, b)


def test_resume_from_keras_file_is_bit_identical(tmp_path):
    x, y = data()
    fit = dict(batch_size=4, shuffle=False, verbose=0)
    full = make_model(ScaledUpdates(keras.optimizers.Adam(0.01), SCALES))
    full.fit(x, y, epochs=4, **fit)
    part = make_model(ScaledUpdates(keras.optimizers.Adam(0.01), SCALES))
    part.fit(x, y, epochs=2, **fit)
    path = os.path.join(tmp_path, "m.keras")
    part.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.optimizer, ScaledUpdates) and loaded.optimizer.scales == SCALES
    loaded.fit(x, y, epochs=2, **fit)
    for a, b in zip(weights(loaded), weights(full)):
        np.testing.assert_array_equal(a, b)


def test_composes_with_ema_callback():
    x, y = data()
    model = make_model(ScaledUpdates(inner("sgd"), SCALES))
    w0 = weights(model)
    ema = ExponentialMovingAverage(momentum=0.5, warmup=False, weights_after_fit="raw")
    model.fit(x, y, batch_size=N, epochs=3, shuffle=False, verbose=0, callbacks=[ema])
    for a, b in zip(weights(model), reference(w0, x, y, 3, "sgd")):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)


def test_scale_zero_freezes_and_unmatched_is_one():
    x, y = data()
    model = make_model(ScaledUpdates(keras.optimizers.SGD(LR), {".*body/kernel": 0.0}))
    w0 = weights(model)
    model.train_on_batch(x, y)
    w1 = weights(model)
    np.testing.assert_array_equal(w1[0], w0[0])
    assert not np.array_equal(w1[1], w0[1])  # body/bias is not matched by the full-match pattern
    assert [model.optimizer.scale_for(v) for v in model.trainable_variables] == [0.0, 1.0, 1.0, 1.0]


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"inner_optimizer": "adam"}, TypeError, "inner_optimizer"),
        ({"scales": {}}, TypeError, "scales"),
        ({"scales": [("a", 1.0)]}, TypeError, "scales"),
        ({"scales": {1: 0.5}}, TypeError, "scales"),
        ({"scales": {"a(": 0.5}}, ValueError, "regex"),
        ({"scales": {"a": -1.0}}, ValueError, "scales"),
        ({"inner_optimizer": keras.optimizers.SGD(use_ema=True)}, ValueError, "use_ema"),
        ({"learning_rate": 0.1}, ValueError, "learning_rate"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    kwargs = {"inner_optimizer": keras.optimizers.SGD(), "scales": SCALES, **kwargs}
    with pytest.raises(error, match=match):
        ScaledUpdates(**kwargs)


def test_config_round_trip():
    opt = ScaledUpdates(keras.optimizers.Adam(0.002), {"a/.*": 0.5, "b": 0.1}, name="su")
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(opt))
    assert isinstance(again, ScaledUpdates) and isinstance(again.inner_optimizer, keras.optimizers.Adam)
    assert (again.scales, again.name) == ({"a/.*": 0.5, "b": 0.1}, "su")
    assert again.inner_optimizer.get_config() == opt.inner_optimizer.get_config()
