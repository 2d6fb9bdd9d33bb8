import os

import keras
import numpy as np
import pytest

from keras_tricks.callbacks import ExponentialMovingAverage
from keras_tricks.optimizers import ExponentialMovingAverageOptimizer, Lookahead

N, F = 8, 3
LR, MOMENTUM, K, ALPHA = 0.05, 0.9, 3, 0.5


def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, F)).astype("float32")
    y = (x @ rng.normal(size=(F, 1)) + 0.5).astype("float32")
    return x, y


def make_model(optimizer, seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((F,)), keras.layers.Dense(1)])
    model.compile(optimizer=optimizer, loss="mse")
    return model


def weights(model):
    return [np.array(keras.ops.convert_to_numpy(v)) for v in model.trainable_variables]


def reference(w0, x, y, steps, k=K, alpha=ALPHA, accumulation=1):
    """Float64 Lookahead over SGD with momentum on a linear model with MSE,
    full batch: Keras's SGD (m <- momentum * m - lr * g; w <- w + m), and
    after every k-th applied update phi <- phi + alpha (theta - phi),
    theta <- phi. With gradient accumulation the update uses the mean of
    `accumulation` gradients (all equal here: the same batch, unchanged
    weights in between)."""
    kernel, bias = (np.asarray(w, np.float64) for w in w0)
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    theta = [kernel, bias]
    slow = [t.copy() for t in theta]
    mom = [np.zeros_like(t) for t in theta]
    out, applied = [], 0
    for step in range(steps):
        if (step + 1) % accumulation == 0:
            r = x64 @ theta[0] + theta[1] - y64
            grads = [2.0 / N * x64.T @ r, 2.0 / N * r.sum(axis=0)]
            mom = [MOMENTUM * m - LR * g for m, g in zip(mom, grads)]
            theta = [t + m for t, m in zip(theta, mom)]
            applied += 1
            if applied % k == 0:
                slow = [p + alpha * (t - p) for p, t in zip(slow, theta)]
                theta = [p.copy() for p in slow]
        out.append([t.copy() for t in theta])
    return out


def sgd(**kwargs):
    return keras.optimizers.SGD(LR, momentum=MOMENTUM, **kwargs)


def test_update_sequence_matches_float64_reference():
    x, y = data()
    opt = Lookahead(sgd(), k=K, alpha=ALPHA)
    model = make_model(opt)
    w0 = weights(model)
    got = []
    for _ in range(7):
        model.train_on_batch(x, y)
        got.append(weights(model))
    want = reference(w0, x, y, 7)
    for g, w in zip(got, want):
        for a, b in zip(g, w):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert int(keras.ops.convert_to_numpy(opt.lookahead_step)) == 7
    # After the 6th update the slow weights are the weights of step 6.
    for phi, b in zip(opt.slow_variables, want[5]):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(phi), b, rtol=1e-5, atol=1e-6)


def test_k_counts_applied_updates_under_gradient_accumulation():
    x, y = data()
    model = make_model(Lookahead(sgd(gradient_accumulation_steps=2), k=2, alpha=ALPHA))
    w0 = weights(model)
    got = []
    for _ in range(8):
        model.train_on_batch(x, y)
        got.append(weights(model))
    want = reference(w0, x, y, 8, k=2, accumulation=2)
    for g, w in zip(got, want):
        for a, b in zip(g, w):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert int(keras.ops.convert_to_numpy(model.optimizer.lookahead_step)) == 4


def test_resume_from_keras_file_is_bit_identical(tmp_path):
    x, y = data()
    fit = dict(batch_size=4, shuffle=False, verbose=0)
    full = make_model(Lookahead(keras.optimizers.Adam(0.01), k=K, alpha=ALPHA))
    full.fit(x, y, epochs=5, **fit)  # 10 updates
    part = make_model(Lookahead(keras.optimizers.Adam(0.01), k=K, alpha=ALPHA))
    part.fit(x, y, epochs=2, **fit)  # 4 updates: between two slow steps
    path = os.path.join(tmp_path, "m.keras")
    part.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.optimizer, Lookahead) and (loaded.optimizer.k, loaded.optimizer.alpha) == (
        K,
        ALPHA,
    )
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded.optimizer.lookahead_step), 4)
    for a, b in zip(loaded.optimizer.slow_variables, part.optimizer.slow_variables):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    loaded.fit(x, y, epochs=3, **fit)
    for a, b in zip(weights(loaded), weights(full)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(loaded.optimizer.slow_variables, full.optimizer.slow_variables):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


def test_mixed_precision_counts_only_applied_updates():
    keras.config.set_dtype_policy("mixed_float16")
    x, y = data()
    opt = Lookahead(keras.optimizers.SGD(LR), k=2, alpha=ALPHA)
    model = make_model(opt)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    bad = np.full_like(y, np.inf)  # non-finite gradients: the step is skipped
    for target in (y, bad, y, y, y, bad, y):
        model.train_on_batch(x, target)
    applied = int(keras.ops.convert_to_numpy(opt.inner_optimizer.iterations))
    assert applied <= 5  # the two non-finite steps were skipped
    assert int(keras.ops.convert_to_numpy(opt.lookahead_step)) == applied
    if applied % 2 == 0:  # right after a slow step: theta == phi
        for phi, theta in zip(opt.slow_variables, model.trainable_variables):
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(phi), keras.ops.convert_to_numpy(theta))
    assert all(np.isfinite(w).all() for w in weights(model))


def test_composes_with_ema_callback():
    """EMA(Lookahead(SGD)): the weights follow the Lookahead reference, and
    the EMA (momentum 0.5, no warm-up) averages that trajectory."""
    x, y = data()
    model = make_model(Lookahead(sgd(), k=K, alpha=ALPHA))
    w0 = weights(model)
    ema = ExponentialMovingAverage(momentum=0.5, warmup=False, weights_after_fit="raw")
    model.fit(x, y, batch_size=N, epochs=4, shuffle=False, verbose=0, callbacks=[ema])
    assert isinstance(model.optimizer, ExponentialMovingAverageOptimizer)
    assert isinstance(model.optimizer.inner_optimizer, Lookahead)
    want = reference(w0, x, y, 4)
    for a, b in zip(weights(model), want[-1]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    avg = [np.asarray(w, np.float64) for w in w0]
    for step in want:
        avg = [0.5 * a + 0.5 * t for a, t in zip(avg, step)]
    for a, b in zip(model.optimizer.ema_values(), avg):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"inner_optimizer": "adam"}, TypeError, "inner_optimizer"),
        ({"k": 0}, ValueError, "`k`"),
        ({"k": 2.0}, TypeError, "`k`"),
        ({"alpha": 0.0}, ValueError, "`alpha`"),
        ({"alpha": 1.5}, ValueError, "`alpha`"),
        ({"learning_rate": 0.1}, ValueError, "learning_rate"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    kwargs = {"inner_optimizer": keras.optimizers.SGD(), **kwargs}
    with pytest.raises(error, match=match):
        Lookahead(**kwargs)


def test_config_round_trip():
    opt = Lookahead(keras.optimizers.Adam(0.002), k=4, alpha=0.25, name="la")
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(opt))
    assert isinstance(again, Lookahead) and isinstance(again.inner_optimizer, keras.optimizers.Adam)
    assert (again.k, again.alpha, again.name) == (4, 0.25, "la")
    assert again.inner_optimizer.get_config() == opt.inner_optimizer.get_config()
