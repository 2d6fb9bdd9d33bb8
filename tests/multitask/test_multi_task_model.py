"""MultiTaskModel: the train step against float64 NumPy gradients, logs, saving
and resuming, bad input, mixed precision, distribution.

The exact-update tests use a linear model whose per-task gradients have a
closed form: x (n, d) -> trunk W (d, h) -> head a_i (h, 1), L_i = mean((x W a_i - t_i)^2),
so dL_i/dW = 2/n x^T r_i a_i^T and dL_i/da_i = 2/n (x W)^T r_i with
r_i = x W a_i - t_i. One SGD step (learning rate 1) of the Keras train step
must equal the update the strategy's formula gives on those gradients.
"""

import os

import keras
import numpy as np
import pytest
from distributed_workers import distributed_tests

from keras_tricks import multitask, testing
from tests.multitask import reference as ref

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
N, D, H = 8, 3, 4


def linear_model(k=2, seed=0):
    rng = np.random.default_rng(seed)
    x = keras.Input((D,))
    trunk = keras.layers.Dense(H, use_bias=False, name="trunk")
    z = trunk(x)
    heads = [keras.layers.Dense(1, use_bias=False, name=f"t{i}") for i in range(k)]
    model = keras.Model(x, [head(z) for head in heads])
    trunk.kernel.assign(rng.normal(size=(D, H)).astype("float32"))
    for head in heads:
        head.kernel.assign(rng.normal(size=(H, 1)).astype("float32"))
    return model


def linear_data(k=2, seed=1, scales=None):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, D)).astype("float32")
    scales = scales or [1.0 + 2.0 * i for i in range(k)]
    ys = [(s * rng.normal(size=(N, 1))).astype("float32") for s in scales]
    return x, ys


def numpy_gradients(model, x, ys):
    """Per-task losses and float64 gradients (dW_i, da_i) of the linear model."""
    w = np.asarray(model.get_layer("trunk").kernel, np.float64)
    x = x.astype(np.float64)
    z = x @ w
    losses, g_trunk, g_heads = [], [], []
    for i, y in enumerate(ys):
        a = np.asarray(model.get_layer(f"t{i}").kernel, np.float64)
        r = z @ a - y
        losses.append(np.mean(r**2))
        g_trunk.append(2.0 / len(x) * x.T @ r @ a.T)
        g_heads.append(2.0 / len(x) * z.T @ r)
    return np.array(losses), g_trunk, g_heads


def step(strategy, k=2, scales=None, conflict=False, **kwargs):
    """One SGD(1) train step; returns (numpy grads, shared step, head steps, logs, model).

    conflict=True makes task 1 a near mirror image of task 0 (same head,
    residuals of opposite sign), so their trunk gradients conflict strongly.
    """
    model = linear_model(k)
    x, ys = linear_data(k, scales=scales)
    if conflict:
        a0 = np.asarray(model.get_layer("t0").kernel)
        model.get_layer("t1").kernel.assign(a0)
        pred = x @ np.asarray(model.get_layer("trunk").kernel) @ a0
        noise = np.random.default_rng(5).normal(size=pred.shape).astype("float32")
        ys[1] = 2 * pred - ys[0] + 0.5 * noise
    before = numpy_gradients(model, x, ys)
    heads_before = [np.asarray(model.get_layer(f"t{i}").kernel, np.float64) for i in range(k)]
    trunk_before = np.asarray(model.get_layer("trunk").kernel, np.float64)
    mt = multitask.MultiTaskModel(model, strategy=strategy, **kwargs)
    mt.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse")
    logs = mt.train_on_batch(x, ys, return_dict=True)
    trunk_step = trunk_before - np.asarray(model.get_layer("trunk").kernel, np.float64)
    head_steps = [heads_before[i] - np.asarray(model.get_layer(f"t{i}").kernel, np.float64) for i in range(k)]
    return before, trunk_step, head_steps, logs, mt


def gram_of(g_trunk):
    flat = np.stack([g.ravel() for g in g_trunk])
    return flat @ flat.T


def check_step(trunk_step, head_steps, g_trunk, g_heads, w, head_scale):
    expected_trunk = sum(wi * g for wi, g in zip(w, g_trunk))
    testing.assert_close(trunk_step, expected_trunk, tolerance=64, what="shared update")
    for i, (got, g) in enumerate(zip(head_steps, g_heads)):
        testing.assert_close(got, head_scale[i] * g, tolerance=64, what=f"head {i} update")


def test_task_losses_and_weights_are_logged():
    (losses, _, _), _, _, logs, _ = step("equal")
    for i in range(2):
        np.testing.assert_allclose(logs[f"t{i}_loss"], losses[i], rtol=1e-5)
        assert logs[f"t{i}_weight"] == pytest.approx(1.0)
    np.testing.assert_allclose(logs["loss"], losses.sum(), rtol=1e-5)


def test_equal_with_weights_is_a_weighted_sum():
    (losses, gt, gh), ts, hs, logs, _ = step(multitask.Equal(weights={"t0": 1.0, "t1": 0.25}))
    check_step(ts, hs, gt, gh, [1.0, 0.25], [1.0, 0.25])
    np.testing.assert_allclose(logs["loss"], losses[0] + 0.25 * losses[1], rtol=1e-5)


def test_realtime_gradient_is_that_of_the_log_losses():
    (losses, gt, gh), ts, hs, _, _ = step("realtime")
    w = 1.0 / losses
    check_step(ts, hs, gt, gh, w, w)


def test_uncertainty_step_on_the_log_variances():
    (losses, gt, gh), ts, hs, logs, mt = step("uncertainty")
    # At s = 0: weights 1/2; d total / d s_i = (1 - L_i) / 2, so one SGD(1) step gives s = (L - 1) / 2.
    check_step(ts, hs, gt, gh, [0.5, 0.5], [0.5, 0.5])
    s = testing.to_numpy(mt.strategy.log_variances)
    testing.assert_close(s, (losses - 1.0) / 2.0, tolerance=16, what="log-variances")
    np.testing.assert_allclose(logs["loss"], 0.5 * losses.sum(), rtol=1e-5)


def test_grad_norm_normalization_step():
    (_, gt, gh), ts, hs, logs, _ = step("grad_norm_normalization")
    w = 1.0 / np.sqrt(np.diag(gram_of(gt)))
    check_step(ts, hs, gt, gh, w, w)
    np.testing.assert_allclose([logs["t0_weight"], logs["t1_weight"]], w, rtol=1e-5)


def test_mgda_step_uses_the_closed_form_on_shared_variables_only():
    (_, gt, gh), ts, hs, _, _ = step("mgda")
    g = gram_of(gt)
    gamma = np.clip((g[1, 1] - g[0, 1]) / (g[0, 0] + g[1, 1] - 2 * g[0, 1]), 0, 1)
    check_step(ts, hs, gt, gh, [gamma, 1 - gamma], [1.0, 1.0])


def test_pcgrad_step_with_two_tasks():
    (_, gt, gh), ts, hs, _, _ = step("pcgrad", conflict=True)
    g = gram_of(gt)
    assert g[0, 1] < -0.5 * np.sqrt(g[0, 0] * g[1, 1]), "the case must have conflicting gradients"
    # g_0' = g_0 - <g_0, g_1>/||g_1||^2 g_1 and symmetrically; d = g_0' + g_1'.
    w = np.array([1.0 - g[0, 1] / g[0, 0], 1.0 - g[0, 1] / g[1, 1]])
    check_step(ts, hs, gt, gh, w, [1.0, 1.0])


def test_primary_auxiliary_step_never_increases_the_primary_loss_to_first_order():
    (_, gt, gh), ts, hs, _, _ = step(multitask.PrimaryAuxiliary(primary="t1"), conflict=True)
    g = gram_of(gt)
    assert g[0, 1] < 0
    lam = max(-g[0, 1], 0.0) / g[0, 0]
    check_step(ts, hs, gt, gh, [lam, 1.0], [1.0, 1.0])
    assert np.sum(ts * gt[1]) >= -1e-6 * np.linalg.norm(gt[1]) ** 2


def test_three_tasks_grad_norm_normalization():
    (_, gt, gh), ts, hs, _, _ = step("grad_norm_normalization", k=3)
    w = 1.0 / np.sqrt(np.diag(gram_of(gt)))
    check_step(ts, hs, gt, gh, w, w)


def test_graddrop_step_against_the_reference_with_the_same_draws():
    # The strategy's first draw is that of a fresh SeedGenerator with its
    # seed (TensorFlow's XLA draws another stream: compiled without it). Under
    # loss scaling P and the masks are unchanged and the scale is divided out
    # (a scale of 1 is the same code path).
    k, leak, seed = 3, [0.0, 0.5, 0.0], 11
    model = linear_model(k)
    x, ys = linear_data(k)
    _, g_trunk, g_heads = numpy_gradients(model, x, ys)
    trunk_before = np.asarray(model.get_layer("trunk").kernel, np.float64)
    heads_before = [np.asarray(model.get_layer(f"t{i}").kernel, np.float64) for i in range(k)]
    mt = multitask.MultiTaskModel(model, strategy=multitask.GradDrop(leak=leak, seed=seed))
    optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(1.0), initial_scale=2.0**10)
    jit = False if keras.backend.backend() == "tensorflow" else "auto"
    mt.compile(optimizer=optimizer, loss="mse", jit_compile=jit)
    logs = mt.train_on_batch(x, ys, return_dict=True)
    u = testing.to_numpy(keras.random.uniform((D, H), seed=keras.random.SeedGenerator(seed))).ravel()
    flat = np.stack([g.ravel() for g in g_trunk])
    p = 0.5 * (1 + flat.sum(axis=0) / np.abs(flat).sum(axis=0))
    assert np.min(np.abs(u - p)) > 1e-4  # no draw within rounding of P
    d, kept, present = ref.graddrop(flat, u, leak)
    assert 0 < np.sum(kept) < np.sum(present)  # something was dropped
    trunk_step = trunk_before - np.asarray(model.get_layer("trunk").kernel, np.float64)
    testing.assert_close(trunk_step, d.reshape(D, H), tolerance=64, what="shared update")
    for i in range(k):
        head_step = heads_before[i] - np.asarray(model.get_layer(f"t{i}").kernel, np.float64)
        testing.assert_close(head_step, g_heads[i], tolerance=64, what=f"head {i} update")
        assert logs[f"t{i}_weight"] == pytest.approx(kept[i] / present[i], rel=1e-6)


# Every registered one: a new gradient-based strategy needs its reference in
# the no-path test below.
GRADIENT_STRATEGIES = sorted(name for name, cls in multitask.STRATEGIES.items() if cls.uses_gradients)


def _weights_of(d, grads):
    """The weights w (plus 0 for a third task) with w @ grads = d."""
    return np.append(np.linalg.lstsq(grads.T, d, rcond=None)[0], 0.0)


@pytest.mark.parametrize("strategy", GRADIENT_STRATEGIES)
def test_a_task_without_a_path_to_the_trunk_takes_no_part(strategy):
    # Regression: t2 is computed straight from the input; its zero trunk
    # gradient made MGDA put all weight on it (the trunk stopped) and
    # grad_norm_normalization give it weight 0 (its own head stopped).
    model = linear_model(k=2)
    rng = np.random.default_rng(7)
    x_in = model.inputs[0]
    direct = keras.layers.Dense(1, use_bias=False, name="t2")
    model = keras.Model(x_in, model.outputs + [direct(x_in)])
    direct.kernel.assign(rng.normal(size=(D, 1)).astype("float32"))
    x, ys = linear_data(k=2)
    ys.append(rng.normal(size=(N, 1)).astype("float32"))
    losses, g_trunk, g_heads = numpy_gradients(model, x, ys[:2])
    a2 = np.asarray(direct.kernel, np.float64)
    g_direct = 2.0 / N * x.T.astype(np.float64) @ (x.astype(np.float64) @ a2 - ys[2])
    trunk_before = np.asarray(model.get_layer("trunk").kernel, np.float64)
    heads_before = [np.asarray(model.get_layer(f"t{i}").kernel, np.float64) for i in range(3)]
    with pytest.warns(UserWarning, match=r"\['t2'\] have no path to the shared variables") as record:
        mt = multitask.MultiTaskModel(model, strategy=strategy)
    assert len([w for w in record if "no path" in str(w.message)]) == 1
    mt.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse")
    mt.train_on_batch(x, ys)
    trunk_step = trunk_before - np.asarray(model.get_layer("trunk").kernel, np.float64)
    head_steps = [heads_before[i] - np.asarray(model.get_layer(f"t{i}").kernel, np.float64) for i in range(3)]
    # the reference of each strategy on the two connected tasks (the third has g = 0)
    gram = np.zeros((3, 3))
    gram[:2, :2] = gram_of(g_trunk)
    all_losses = np.append(losses, np.mean((x @ a2 - ys[2]) ** 2))
    flat = np.stack([g.ravel() for g in g_trunk])
    w = {
        "grad_norm_normalization": lambda: ref.grad_norm_normalization(all_losses, gram),
        "gradnorm": lambda: ref.gradnorm(all_losses, gram, ref.gradnorm_init(3))[0],
        "mgda": lambda: ref.mgda(all_losses, gram),
        "pcgrad": lambda: ref.pcgrad(all_losses, gram, ref.pcgrad_permutation_sets(3)[0]),
        "cagrad": lambda: ref.cagrad(all_losses, gram),
        "primary_auxiliary": lambda: ref.primary_auxiliary(all_losses, gram),
        "db_mtl": lambda: None,
        # (the preference of a task without a gradient goes to the others)
        "upgrad": lambda: ref.upgrad(np.stack([g.ravel() for g in g_trunk])),
        "dualproj": lambda: ref.dualproj(np.stack([g.ravel() for g in g_trunk])),
        "imtl_g": lambda: ref.imtl_g(np.stack([g.ravel() for g in g_trunk])),
        "graddrop": lambda: None,
        # (references that return d: weights of the two independent gradients)
        "aligned_mtl": lambda: _weights_of(ref.aligned_mtl(flat), flat),
        # (targets start at 0; the pairs with t2 are skipped, so the order does not matter)
        "gradvac": lambda: _weights_of(ref.gradvac(flat, [[1], [0]], np.zeros((2, 2)))[0], flat),
        "nash_mtl": lambda: ref.fair_share(
            np.stack([g.ravel() for g in g_trunk] + [0 * g_trunk[0].ravel()]), gram
        ),
        "fairgrad": lambda: ref.fair_share(
            np.stack([g.ravel() for g in g_trunk] + [0 * g_trunk[0].ravel()]), gram
        ),
    }[strategy]()
    if strategy == "db_mtl":
        # DB-MTL's update is not a function of the Gram matrix alone in the
        # reference: it is built from the gradients themselves, and every
        # head (t2's too) descends its log-loss, i.e. gets 1 / L_i times its gradient.
        flat = np.stack([g.ravel() for g in g_trunk] + [np.zeros(g_trunk[0].size)])
        d, scale = ref.db_mtl(all_losses, flat, epsilon=float(np.finfo(np.float32).eps))
        expected = d.reshape(g_trunk[0].shape)
    elif strategy == "graddrop":
        # Random masks: at each coordinate the step is the sum of the
        # connected tasks' positive parts or of their negative parts (t2 adds
        # 0); every head gets its plain gradient.
        positive = sum(np.maximum(g, 0.0) for g in g_trunk)
        negative = sum(np.minimum(g, 0.0) for g in g_trunk)
        tol = 1e-5 * sum(np.abs(g) for g in g_trunk)
        assert np.all((np.abs(trunk_step - positive) <= tol) | (np.abs(trunk_step - negative) <= tol)), (
            trunk_step
        )
        expected, scale = trunk_step, np.ones(3)
    else:
        expected = sum(wi * g for wi, g in zip(w[:2], g_trunk))
        # every head moves; t2's by its own plain gradient
        scale = w if mt.strategy.scales_task_specific else np.ones(3)
    assert np.linalg.norm(trunk_step) > 1e-3 * np.linalg.norm(g_trunk[0])  # the trunk moves
    testing.assert_close(trunk_step, expected, tolerance=256, what="shared update")
    for i, g in enumerate(g_heads + [g_direct]):
        testing.assert_close(head_steps[i], scale[i] * g, tolerance=64, what=f"head t{i}")
    assert np.abs(head_steps[2]).max() > 0


def test_explicit_shared_variables():
    # Declaring only the first head as "shared" is odd but makes the point: the
    # Gram matrix is taken over exactly the variables given.
    (_, gt, gh), ts, hs, _, _ = step("grad_norm_normalization", shared=["trunk"])
    w = 1.0 / np.sqrt(np.diag(gram_of(gt)))
    check_step(ts, hs, gt, gh, w, w)


def test_regularization_is_added_unweighted():
    # An L2 penalty c * sum(W^2) on the trunk: its gradient 2 c W is added as is.
    c = 0.125
    model = linear_model()
    trunk = model.get_layer("trunk")
    trunk_before = np.asarray(trunk.kernel, np.float64)
    trunk.kernel_regularizer = keras.regularizers.L2(c)
    x, ys = linear_data()
    _, gt, _ = numpy_gradients(model, x, ys)
    mt = multitask.MultiTaskModel(keras.Model.from_config(model.get_config()), strategy="mgda")
    mt.model.set_weights(model.get_weights())
    mt.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse")
    mt.train_on_batch(x, ys)
    g = gram_of(gt)
    gamma = np.clip((g[1, 1] - g[0, 1]) / (g[0, 0] + g[1, 1] - 2 * g[0, 1]), 0, 1)
    expected = gamma * gt[0] + (1 - gamma) * gt[1] + 2 * c * trunk_before
    got = trunk_before - np.asarray(mt.model.get_layer("trunk").kernel, np.float64)
    testing.assert_close(got, expected, tolerance=64, what="shared update with L2")


# -- state, saving and resuming ---------------------------------------------------------

STATEFUL = [
    "uncertainty",
    "gradnorm",
    "dwa",
    lambda: multitask.Initial(steps=3),
    lambda: multitask.PCGrad(seed=3),
    lambda: multitask.GradDrop(leak=0.2, seed=3),
    lambda: multitask.GradVac(beta=0.5, seed=3),
]
STATEFUL_TASKS = [2, 2, 2, 2, 3, 3, 3]
STATEFUL_PARAMS = [
    pytest.param(strategy, k, id=name, marks=[pytest.mark.slow] if name in ("graddrop", "gradvac") else [])
    # (GradDrop, GradVac: slow, to keep CI's time; the harness checks that
    # their state survives saving bit for bit on every backend)
    for strategy, k, name in zip(
        STATEFUL,
        STATEFUL_TASKS,
        ["uncertainty", "gradnorm", "dwa", "initial", "pcgrad", "graddrop", "gradvac"],
    )
]


def _digits_like(k=2, n=48, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype("float32")
    ys = [
        (x @ rng.normal(size=(6, 1)) * (3.0**i) + rng.normal(size=(n, 1))).astype("float32") for i in range(k)
    ]
    return x, ys


def _mlp(k=2, seed=0):
    keras.utils.set_random_seed(seed)
    x = keras.Input((6,))
    h = keras.layers.Dense(8, activation="tanh", name="trunk")(x)
    return keras.Model(x, [keras.layers.Dense(1, name=f"t{i}")(h) for i in range(k)])


@pytest.mark.parametrize("strategy,k", STATEFUL_PARAMS)
def test_save_load_and_resume_restores_every_piece_of_state(strategy, k, tmp_path):
    x, ys = _digits_like(k)
    mt = multitask.MultiTaskModel(_mlp(k), strategy=strategy() if callable(strategy) else strategy)
    mt.compile(optimizer="adam", loss="mse")
    mt.fit(x, ys, epochs=2, batch_size=16, shuffle=False, verbose=0)
    path = str(tmp_path / "mt.keras")
    mt.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, multitask.MultiTaskModel)
    assert type(loaded.strategy) is type(mt.strategy)
    state = mt.strategy.variables + [g.state for g in mt.strategy._seed_generators]
    loaded_state = loaded.strategy.variables + [g.state for g in loaded.strategy._seed_generators]
    for a, b in zip(state, loaded_state):
        np.testing.assert_array_equal(testing.to_numpy(a), testing.to_numpy(b), err_msg=a.path)
    for a, b in zip(mt.predict(x, verbose=0), loaded.predict(x, verbose=0)):
        np.testing.assert_array_equal(a, b)
    # Resuming: one more epoch of each gives the same trajectory.
    h1 = mt.fit(x, ys, epochs=1, batch_size=16, shuffle=False, verbose=0).history
    h2 = loaded.fit(x, ys, epochs=1, batch_size=16, shuffle=False, verbose=0).history
    assert sorted(h1) == sorted(h2)
    for key in h1:
        np.testing.assert_allclose(h2[key], h1[key], rtol=1e-6, err_msg=key)
    for a, b in zip(mt.get_weights(), loaded.get_weights()):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)


def test_config_round_trip():
    mt = multitask.MultiTaskModel(_mlp(), strategy=multitask.CAGrad(c=0.3), shared=["trunk"])
    config = mt.get_config()
    clone = multitask.MultiTaskModel.from_config(config)
    assert clone.strategy.get_config()["c"] == 0.3
    assert clone.get_config()["shared"] == ["trunk"]
    assert mt.strategy.get_config() == multitask.CAGrad.from_config(mt.strategy.get_config()).get_config()


def test_dwa_weights_follow_the_epoch_mean_losses():
    x, ys = _digits_like()
    mt = multitask.MultiTaskModel(_mlp(), strategy=multitask.DWA(temperature=2.0))
    mt.compile(optimizer="adam", loss="mse")
    history = mt.fit(x, ys, epochs=3, batch_size=16, shuffle=False, verbose=0).history
    # Equal batch sizes: the logged epoch loss is the mean of the step losses DWA records.
    l1 = np.array([history["t0_loss"][0], history["t1_loss"][0]], np.float64)
    l2 = np.array([history["t0_loss"][1], history["t1_loss"][1]], np.float64)
    r = l2 / l1
    expected = 2 * np.exp(r / 2) / np.exp(r / 2).sum()
    assert history["t0_weight"][:2] == pytest.approx([1.0, 1.0])
    np.testing.assert_allclose([history["t0_weight"][2], history["t1_weight"][2]], expected, rtol=1e-5)
    # evaluate() logs the weights that built its loss.
    result = mt.evaluate(x, ys, batch_size=48, verbose=0, return_dict=True)
    np.testing.assert_allclose(
        result["loss"],
        result["t0_weight"] * result["t0_loss"] + result["t1_weight"] * result["t1_loss"],
        rtol=1e-5,
    )


def test_initial_measures_then_freezes():
    x, ys = _digits_like()
    mt = multitask.MultiTaskModel(_mlp(), strategy=multitask.Initial(steps=2))
    mt.compile(optimizer="adam", loss="mse")
    running = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            running.append([float(logs["t0_loss"]), float(logs["t1_loss"])])
            weights.append([float(logs["t0_weight"]), float(logs["t1_weight"])])

    weights = []
    mt.fit(x, ys, epochs=1, batch_size=16, shuffle=False, verbose=0, callbacks=[Record()])
    # The logs hold running means over equal batches, so the first two step
    # losses sum to twice the mean after step 2.
    first_two = 2.0 * np.array(running[1], np.float64)
    assert float(testing.to_numpy(mt.strategy.count)) == 2.0
    np.testing.assert_allclose(testing.to_numpy(mt.strategy.loss_sum), first_two, rtol=1e-5)
    np.testing.assert_allclose(testing.to_numpy(mt.last_task_weights), 2.0 / first_two, rtol=1e-5)
    # Step 1 used 1 / L(step 1); the third step's weight (running mean of three) is consistent.
    np.testing.assert_allclose(weights[0], 1.0 / np.array(running[0]), rtol=1e-5)


def test_evaluate_and_predict_keep_keras_behaviour():
    x, ys = _digits_like()
    mt = multitask.MultiTaskModel(_mlp(), strategy="cagrad")
    mt.compile(optimizer="adam", loss={"t0": "mse", "t1": "mae"}, metrics={"t0": ["mae"], "t1": ["mse"]})
    mt.fit(x, {"t0": ys[0], "t1": ys[1]}, epochs=1, batch_size=16, verbose=0, validation_data=(x, ys))
    result = mt.evaluate(x, ys, verbose=0, return_dict=True)
    pred = mt.predict(x, verbose=0)
    assert len(pred) == 2
    np.testing.assert_allclose(result["t0_loss"], np.mean((pred[0] - ys[0]) ** 2), rtol=1e-4)
    np.testing.assert_allclose(result["t1_loss"], np.mean(np.abs(pred[1] - ys[1])), rtol=1e-4)
    assert {"t0_mae", "t1_mse", "t0_weight", "t1_weight", "loss"} <= set(result)


@pytest.mark.parametrize("strategy", ["uncertainty", "pcgrad", "cagrad", "gradnorm"])
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_training_stays_finite(strategy, policy):
    x, ys = _digits_like()
    with testing.dtype_policy(policy):
        mt = multitask.MultiTaskModel(_mlp(), strategy=strategy)
        optimizer = keras.optimizers.Adam(1e-2)
        if policy == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        mt.compile(optimizer=optimizer, loss="mse")
        history = mt.fit(x, ys, epochs=3, batch_size=16, verbose=0).history
    assert all(np.all(np.isfinite(v)) for v in history.values())
    assert history["loss"][-1] < history["loss"][0]
    for v in mt.trainable_variables:
        assert v.dtype == "float32"


def _every_state(mt):
    """Strategy variables, seed states, logged weights and model weights, as NumPy."""
    state = mt.strategy.variables + [g.state for g in mt.strategy._seed_generators]
    state = state + [mt.last_task_weights] + mt.model.weights
    return {v.path: np.array(testing.to_numpy(v)) for v in state}


SKIPPABLE = ["initial", "dwa", "gradnorm", "famo"] + [
    pytest.param(s, marks=pytest.mark.slow)
    for s in ["uncertainty", "pcgrad", "mgda", "grad_norm_normalization", "graddrop", "gradvac"]
]


@pytest.mark.parametrize("strategy", SKIPPABLE)
def test_a_skipped_step_leaves_every_strategy_state_unchanged(strategy):
    # Regression: a batch that LossScaleOptimizer skips still entered the
    # strategy's state (DWA's epoch sums, Initial's measurement), so DWA's next
    # epoch was NaN. A skipped step must change nothing at all.
    x, ys = _digits_like(k=3, n=32)
    strategy = multitask.get(strategy)
    if isinstance(strategy, multitask.Initial):
        strategy = multitask.Initial(steps=4)  # still measuring at the bad steps
    mt = multitask.MultiTaskModel(_mlp(k=3), strategy=strategy)
    optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(1e-2), initial_scale=8.0)
    mt.compile(optimizer=optimizer, loss="mse")
    good = (x[:16], [y[:16] for y in ys])
    mt.train_on_batch(*good)  # a good step first: the state is not initial
    bads = ["nan_loss", "inf_loss", "overflowing_gradients"]
    if isinstance(strategy, multitask.Initial):
        bads = bads[:2]  # while measuring, its total is scale-free: nothing to overflow
    for bad in bads:
        before = _every_state(mt)
        bad_x, bad_ys = x[16:], [y[16:].copy() for y in ys]
        if bad == "nan_loss":
            bad_ys[1][3] = np.nan
        elif bad == "inf_loss":
            bad_ys[1][3] = np.inf
        else:
            # finite losses, but the scaled gradients overflow float32
            optimizer.dynamic_scale.assign(2.0**127)
            bad_x, bad_ys = 1e4 * bad_x, [1e4 * y for y in bad_ys]
        iterations = int(testing.to_numpy(optimizer.iterations))
        # Keras 3.10 keeps the loss trackers' running means across
        # train_on_batch calls (3.15 resets them), so this step's logs would hold the NaN of an
        # earlier bad step; reset them so the logs are this step's alone.
        mt.reset_metrics()
        logs = mt.train_on_batch(bad_x, bad_ys, return_dict=True)
        assert int(testing.to_numpy(optimizer.iterations)) == iterations, f"{bad}: the step was not skipped"
        assert (bad == "overflowing_gradients") == np.isfinite(logs["t1_loss"]), (bad, logs)
        after = _every_state(mt)
        for path, value in before.items():
            np.testing.assert_array_equal(after[path], value, err_msg=f"{bad}: {path}")
        # the next (good) step trains again
        optimizer.dynamic_scale.assign(8.0)
        logs = mt.train_on_batch(*good, return_dict=True)
        assert int(testing.to_numpy(optimizer.iterations)) == iterations + 1
        assert np.all(np.isfinite(testing.to_numpy(mt.last_task_weights))), bad


def test_dwa_epoch_after_a_skipped_batch_is_finite():
    # The run: one NaN batch per epoch under mixed_float16. DWA's epoch
    # means are taken over the other batches, so its weights stay finite and
    # the model keeps training.
    x, ys = _digits_like(n=48)
    ys[0][20] = np.nan  # in the second of three batches
    with testing.dtype_policy("mixed_float16"):
        mt = multitask.MultiTaskModel(_mlp(), strategy="dwa")
        mt.compile(optimizer=keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(1e-2)), loss="mse")
        sums = []

        class Record(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                sums.append(np.array(testing.to_numpy(mt.strategy.previous)))

        history = mt.fit(x, ys, epochs=4, batch_size=16, shuffle=False, verbose=0, callbacks=[Record()])
    for epoch in range(4):
        assert np.isfinite(history.history["t0_weight"][epoch]), history.history
        assert np.isfinite(history.history["t1_loss"][epoch])
    assert np.all(np.isfinite(sums)), sums
    # the clean task's loss keeps falling: the epochs after the skipped batch train
    assert history.history["t1_loss"][-1] < history.history["t1_loss"][0]
    assert all(np.all(np.isfinite(w)) for w in mt.get_weights())


def test_gradient_strategy_matches_float32_under_loss_scaling():
    # The loss scale must cancel exactly: LossScaleOptimizer(SGD) vs SGD, float32.
    x, ys = linear_data()
    results = []
    for wrap in (False, True):
        model = linear_model()
        mt = multitask.MultiTaskModel(model, strategy="grad_norm_normalization")
        opt = keras.optimizers.SGD(0.1)
        if wrap:
            opt = keras.optimizers.LossScaleOptimizer(opt, initial_scale=1024.0)
        mt.compile(optimizer=opt, loss="mse")
        mt.train_on_batch(x, ys)
        results.append(model.get_weights())
    for a, b in zip(*results):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7)


# -- bad input -------------------------------------------------------------------------------


def test_bad_input_names_the_argument():
    model = _mlp()
    with pytest.raises(ValueError, match="Unknown multi-task strategy 'nope'.*cagrad"):
        multitask.MultiTaskModel(model, strategy="nope")
    with pytest.raises(TypeError, match="`strategy`"):
        multitask.MultiTaskModel(model, strategy=3)
    with pytest.raises(TypeError, match="`model`"):
        multitask.MultiTaskModel("model")
    x = keras.Input((3,))
    single = keras.Model(x, keras.layers.Dense(1, name="only")(x))
    with pytest.raises(ValueError, match=r"at least 2 outputs.*\['only'\]"):
        multitask.MultiTaskModel(single)
    with pytest.raises(ValueError, match=r"`tasks`.*unknown: \['t9'\].*missing: \['t1'\]"):
        multitask.MultiTaskModel(model, tasks=["t0", "t9"])
    with pytest.raises(ValueError, match=r"`weights`.*\['t0', 't1'\]"):
        multitask.MultiTaskModel(model, strategy=multitask.Equal(weights=[1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="`weights`"):
        multitask.Equal(weights=[1.0, -1.0])
    with pytest.raises(ValueError, match="`primary`='t7'"):
        multitask.MultiTaskModel(model, strategy=multitask.PrimaryAuxiliary(primary="t7"))
    with pytest.raises(ValueError, match="`losses`"):
        multitask.MultiTaskModel(model, strategy=multitask.Prior({"t0": 1.0, "x": 2.0}))
    with pytest.raises(ValueError, match="`Prior` needs `losses`"):
        multitask.get("prior")
    with pytest.raises(ValueError, match="`shared` names 'nothing'"):
        multitask.MultiTaskModel(model, strategy="mgda", shared=["nothing"])
    for bad in [dict(c=-1.0), dict(c="a")]:
        with pytest.raises((ValueError, TypeError), match="`c`"):
            multitask.CAGrad(**bad)
    with pytest.raises(ValueError, match="`temperature`"):
        multitask.DWA(temperature=0.0)
    with pytest.raises(ValueError, match="`kind`"):
        multitask.prior_loss([0, 1], "ordinal")


def test_outputs_that_share_nothing_are_refused_for_gradient_strategies():
    a, b = keras.Input((3,)), keras.Input((3,))
    model = keras.Model([a, b], [keras.layers.Dense(1, name="p")(a), keras.layers.Dense(1, name="q")(b)])
    with pytest.raises(ValueError, match="share no trainable variable"):
        multitask.MultiTaskModel(model, strategy="mgda")
    multitask.MultiTaskModel(model, strategy="uncertainty")  # loss-based: fine


def test_compile_and_fit_errors_name_the_tasks():
    mt = multitask.MultiTaskModel(_mlp(), strategy="equal")
    with pytest.raises(ValueError, match=r"`loss` dict.*unknown: \['t2'\], missing: \['t1'\]"):
        mt.compile(loss={"t0": "mse", "t2": "mse"})
    with pytest.raises(ValueError, match="`loss` list"):
        mt.compile(loss=["mse"])
    with pytest.raises(ValueError, match="`loss_weights`.*Equal"):
        mt.compile(loss="mse", loss_weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="`loss` is required"):
        mt.compile()
    mt.compile(optimizer="sgd", loss="mse")
    x, ys = _digits_like()
    with pytest.raises(ValueError, match=r"`y` dict.*missing: \['t1'\]"):
        mt.fit(x, {"t0": ys[0]}, epochs=1, verbose=0)


def test_prior_loss_against_hand_values():
    assert multitask.prior_loss([0, 0, 1, 1], "categorical") == pytest.approx(np.log(2))
    assert multitask.prior_loss(np.eye(4), "categorical") == pytest.approx(np.log(4))
    assert multitask.prior_loss([[0, 1], [1, 1]], "binary") == pytest.approx(np.log(2) / 2)
    assert multitask.prior_loss([1.0, 3.0, 5.0], "regression") == pytest.approx(8 / 3)
    with pytest.raises(ValueError, match="nothing to learn"):
        multitask.prior_loss([2.0, 2.0], "regression")


# -- distribution ------------------------------------------------------------------------------


def _check_distributed(got):
    assert int(got["replicas"]) == 2
    names = ["mgda", "cagrad", "gradnorm", "pcgrad", "uncertainty"]
    # (GradDrop on MirroredStrategy only, for time: on JAX DataParallel it measured identical too)
    for name in names + (["graddrop"] if "graddrop_single" in got else []):
        testing.assert_close(
            got[f"{name}_distributed"],
            got[f"{name}_single"],
            tolerance=256,
            what=f"{name}: weights after distributed fit vs one device",
        )
        testing.assert_close(
            got[f"{name}_tw_distributed"],
            got[f"{name}_tw_single"],
            tolerance=256,
            what=f"{name}: task weights",
        )


test_mirrored_strategy_on_two_virtual_cpus, test_data_parallel_on_two_virtual_cpus = distributed_tests(
    os.path.join(HERE, "_mt_worker.py"), _check_distributed
)


def _token_model(lookup, table, heads):
    """Mean of the token vectors -> one linear head per task; the vectors come from
    an Embedding (`lookup=True`, sparse row gradients on TensorFlow) or from a
    one-hot matmul with the same table (dense gradients)."""
    vocab, width = table.shape
    tokens = keras.Input((5,), dtype="int32")
    if lookup:
        embed = keras.layers.Embedding(vocab, width, name="table")
        vectors = embed(tokens)
        embed.embeddings.assign(table)
    else:
        embed = keras.layers.Dense(width, use_bias=False, name="table")
        vectors = embed(keras.ops.one_hot(tokens, vocab))
        embed.kernel.assign(table)
    pooled = keras.layers.GlobalAveragePooling1D()(vectors)
    outputs = []
    for i, head in enumerate(heads):
        dense = keras.layers.Dense(1, use_bias=False, name=f"t{i}")
        outputs.append(dense(pooled))
        dense.kernel.assign(head)
    return keras.Model(tokens, outputs)


@pytest.mark.parametrize("name", ["mgda", "pcgrad"])
def test_embedding_gradients_train_like_their_dense_equivalent(name):
    # An Embedding's gradient is IndexedSlices on TensorFlow; the per-task Gram
    # matrix needs them dense. The one-hot matmul with the same table is the
    # same function with dense gradients, so one step must move the table alike.
    rng = np.random.default_rng(0)
    table = rng.normal(size=(7, 4)).astype("float32")
    heads = [rng.normal(size=(4, 1)).astype("float32") for _ in range(2)]
    tokens = rng.integers(0, 7, size=(8, 5)).astype("int32")
    ys = [rng.normal(size=(8, 1)).astype("float32") for _ in range(2)]
    after = []
    for lookup in (True, False):
        model = multitask.MultiTaskModel(_token_model(lookup, table, heads), strategy=multitask.get(name))
        model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
        model.fit(tokens, ys, batch_size=8, epochs=1, shuffle=False, verbose=0)
        after.append([np.asarray(w) for w in model.model.get_weights()])
    assert not np.allclose(after[0][0], table)
    for got, want in zip(*after):
        testing.assert_close(got, want, tolerance=64, what=f"{name}: Embedding vs one-hot step")
