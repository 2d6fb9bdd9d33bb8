"""MultiTaskModel(representation=...): per-task gradients with respect to the
shared representation z (MGDA-UB, Sener & Koltun 2018, Section 3.3), one
backward pass through the trunk. Checked against float64 NumPy gradients of
the linear model of test_multi_task_model.py: z = x W, y_i = z a_i,
L_i = mean((z a_i - t_i)^2), dL_i/dz = 2/n r_i a_i^T."""

import os

import keras
import numpy as np
import pytest

from keras_tricks import multitask

N, D, H = 8, 3, 4


def model_and_data(k=2, seed=0, l2=0.0, dropout=False):
    rng = np.random.default_rng(seed)
    x = keras.Input((D,))
    reg = keras.regularizers.L2(l2) if l2 else None
    trunk = keras.layers.Dense(H, use_bias=False, kernel_regularizer=reg, name="trunk")
    z = trunk(x)
    if dropout:
        z = keras.layers.Dropout(0.0, name="drop")(z)  # a seed generator in the trunk, no effect
    heads = [keras.layers.Dense(1, use_bias=False, name=f"t{i}") for i in range(k)]
    model = keras.Model(x, [head(z) for head in heads])
    trunk.kernel.assign(rng.normal(size=(D, H)).astype("float32"))
    for head in heads:
        head.kernel.assign(rng.normal(size=(H, 1)).astype("float32"))
    xs = rng.normal(size=(N, D)).astype("float32")
    ys = [((1.0 + 3.0 * i) * rng.normal(size=(N, 1))).astype("float32") for i in range(k)]
    return model, xs, ys


def reference(model, x, ys):
    """float64 (W, [a_i], [dL_i/dW], [dL_i/da_i], [dL_i/dz])."""
    w = np.asarray(model.get_layer("trunk").kernel, np.float64)
    x = x.astype(np.float64)
    z = x @ w
    heads, g_w, g_a, g_z = [], [], [], []
    for i, y in enumerate(ys):
        a = np.asarray(model.get_layer(f"t{i}").kernel, np.float64)
        r = z @ a - y
        heads.append(a)
        g_z.append(2.0 / len(x) * r @ a.T)
        g_w.append(x.T @ g_z[-1])
        g_a.append(2.0 / len(x) * z.T @ r)
    return w, heads, g_w, g_a, g_z


def one_step(strategy, k=2, optimizer=None, **model_kwargs):
    model, x, ys = model_and_data(k, **model_kwargs)
    ref = reference(model, x, ys)
    mt = multitask.MultiTaskModel(model, strategy=strategy, representation="trunk")
    mt.compile(optimizer=optimizer or keras.optimizers.SGD(1.0), loss="mse")
    logs = mt.train_on_batch(x, ys, return_dict=True)
    w_new = np.asarray(model.get_layer("trunk").kernel, np.float64)
    a_new = [np.asarray(model.get_layer(f"t{i}").kernel, np.float64) for i in range(k)]
    return mt, ref, w_new, a_new, logs


def gram(gs):
    return np.array([[np.sum(a * b) for b in gs] for a in gs])


def test_mgda_ub_weights_from_the_representation_gradients():
    _, (w, heads, g_w, g_a, g_z), w_new, a_new, logs = one_step("mgda")
    g = gram(g_z)
    gamma = np.clip((g[1, 1] - g[0, 1]) / (g[0, 0] + g[1, 1] - 2 * g[0, 1]), 0, 1)
    weights = np.array([gamma, 1 - gamma])
    # The parameter-gradient Gram gives other weights: the test tells them apart.
    gp = gram(g_w)
    gamma_p = np.clip((gp[1, 1] - gp[0, 1]) / (gp[0, 0] + gp[1, 1] - 2 * gp[0, 1]), 0, 1)
    assert abs(gamma - gamma_p) > 1e-2
    np.testing.assert_allclose(w_new, w - sum(c * g for c, g in zip(weights, g_w)), rtol=1e-5, atol=1e-6)
    for a, a1, ga in zip(heads, a_new, g_a):
        np.testing.assert_allclose(a1, a - ga, rtol=1e-5, atol=1e-6)  # MGDA: heads on their own loss
    np.testing.assert_allclose([logs["t0_weight"], logs["t1_weight"]], weights, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("k", [2, 3])
def test_grad_norm_normalization_scales_heads_too(k):
    _, (w, heads, g_w, g_a, g_z), w_new, a_new, _ = one_step("grad_norm_normalization", k=k)
    weights = 1.0 / np.sqrt(np.diag(gram(g_z)))
    np.testing.assert_allclose(w_new, w - sum(c * g for c, g in zip(weights, g_w)), rtol=1e-5, atol=1e-6)
    for a, a1, ga, c in zip(heads, a_new, g_a, weights):
        np.testing.assert_allclose(a1, a - c * ga, rtol=1e-5, atol=1e-6)


def test_regularisation_loss_scaling_and_a_seed_generator_in_the_trunk():
    l2 = 0.1
    optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(1.0), initial_scale=2.0**10)
    _, (w, heads, g_w, g_a, g_z), w_new, a_new, logs = one_step(
        "mgda", optimizer=optimizer, l2=l2, dropout=True
    )
    g = gram(g_z)
    gamma = np.clip((g[1, 1] - g[0, 1]) / (g[0, 0] + g[1, 1] - 2 * g[0, 1]), 0, 1)
    expected = w - gamma * g_w[0] - (1 - gamma) * g_w[1] - 2 * l2 * w
    np.testing.assert_allclose(w_new, expected, rtol=1e-5, atol=1e-5)
    for a, a1, ga in zip(heads, a_new, g_a):
        np.testing.assert_allclose(a1, a - ga, rtol=1e-5, atol=1e-5)
    assert np.isfinite(logs["loss"])


def test_fit_saves_and_loads_with_the_representation(tmp_path):
    model, x, ys = model_and_data(2)
    mt = multitask.MultiTaskModel(model, strategy="cagrad", representation="trunk")
    mt.compile(optimizer="adam", loss="mse")
    mt.fit(x, ys, epochs=2, batch_size=4, verbose=0)
    path = os.path.join(tmp_path, "m.keras")
    mt.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.get_config()["representation"] == "trunk"
    np.testing.assert_allclose(
        np.concatenate([np.asarray(p) for p in loaded.predict(x, verbose=0)]),
        np.concatenate([np.asarray(p) for p in mt.predict(x, verbose=0)]),
        rtol=1e-6,
    )
    loaded.fit(x, ys, epochs=1, batch_size=4, verbose=0)  # trains on after loading


def test_a_masked_representation_is_refused():
    x = keras.Input((None,), dtype="int32")
    h = keras.layers.Embedding(10, 4, mask_zero=True)(x)
    z = keras.layers.Dense(4, name="trunk")(h)
    model = keras.Model(x, [keras.layers.Dense(1, name=f"t{i}")(z) for i in range(2)])
    with pytest.raises(ValueError, match="Keras mask"):
        multitask.MultiTaskModel(model, strategy="mgda", representation="trunk")


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"strategy": "equal"}, ValueError, "gradient-based"),
        ({"strategy": "graddrop"}, ValueError, "coordinate"),
        ({"representation": "nope"}, ValueError, "not a layer"),
        ({"representation": 3}, TypeError, "layer name or a layer"),
        ({"shared": ["trunk"]}, ValueError, "exclude each other"),
        ({"representation": "t0"}, ValueError, "only through"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    model, _, _ = model_and_data(2)
    kwargs = {"strategy": "mgda", "representation": "trunk", **kwargs}
    with pytest.raises(error, match=match):
        multitask.MultiTaskModel(model, **kwargs)


@pytest.mark.parametrize(
    "name", ["mgda", "cagrad", "pcgrad", "upgrad", "dualproj", "imtl_g", "aligned_mtl", "nash_mtl", "db_mtl"]
)
def test_every_strategy_sees_the_representation_gram(name):
    # Eagerly (the compiled steps are covered above): the logged weights are
    # the strategy's weights on the float64 Gram of dL_i/dz, and the update
    # is the weighted sum of the float64 parameter gradients.
    model, x, ys = model_and_data(2)
    w, heads, g_w, g_a, g_z = reference(model, x, ys)
    mt = multitask.MultiTaskModel(model, strategy=name, representation="trunk")
    mt.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse", run_eagerly=True)
    losses = np.array([np.mean((x.astype(np.float64) @ w @ a - y) ** 2) for a, y in zip(heads, ys)])
    fresh = multitask.get(name).bind(mt.tasks)
    want = keras.ops.convert_to_numpy(
        fresh.task_weights(
            keras.ops.convert_to_tensor(losses, "float32"), keras.ops.convert_to_tensor(gram(g_z), "float32")
        )
    )
    specific = keras.ops.convert_to_numpy(
        fresh.task_specific_weights(keras.ops.convert_to_tensor(losses, "float32"), want)
    )
    logs = mt.train_on_batch(x, ys, return_dict=True)
    np.testing.assert_allclose([logs["t0_weight"], logs["t1_weight"]], want, rtol=1e-4, atol=1e-6)
    w_new = np.asarray(model.get_layer("trunk").kernel, np.float64)
    np.testing.assert_allclose(w_new, w - sum(c * g for c, g in zip(want, g_w)), rtol=1e-4, atol=1e-5)
    for i, (a, ga) in enumerate(zip(heads, g_a)):
        a_new = np.asarray(model.get_layer(f"t{i}").kernel, np.float64)
        np.testing.assert_allclose(a_new, a - specific[i] * ga, rtol=1e-4, atol=1e-5)
