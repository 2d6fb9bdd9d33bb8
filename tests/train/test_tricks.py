"""Each trick's update against a float64 NumPy reference of one training step.

The model is tiny (tokens -> Embedding -> [Dropout] -> Flatten -> Dense
softmax), trained by SGD(lr) so that the new weights give the update;
reference gradients are central finite differences in float64 of a NumPy
forward pass. Dropout masks are reproduced by a fresh `Dropout` layer with
the same seed, called once per forward pass in the order the chain runs them.
"""

import keras
import numpy as np
import pytest

from keras_tricks import losses, optimizers, train

V, D, T, C, B = 5, 3, 2, 3, 4
LR = 0.5
TOKENS = np.array([[0, 1], [2, 3], [4, 0], [1, 1]], "int32")
LABELS = np.array([0, 2, 1, 2])


def _model(rate=0.0, seed=3):
    rng = np.random.default_rng(0)
    x = keras.Input((T,), dtype="int32")
    h = keras.layers.Embedding(V, D, name="emb")(x)
    if rate:
        h = keras.layers.Dropout(rate, seed=seed, name="drop")(h)
    h = keras.layers.Flatten()(h)
    out = keras.layers.Dense(C, activation="softmax", name="out")(h)
    model = keras.Model(x, out)
    model.set_weights([rng.normal(size=w.shape).astype("float32") for w in model.get_weights()])
    return model


def _weights(model):
    return [np.asarray(w, "float64") for w in model.get_weights()]  # E, K, b


def _masks(n, rate, seed=3, shape=(B, T, D)):
    if not rate:
        return [np.ones(shape)] * n
    layer = keras.layers.Dropout(rate, seed=seed)
    return [
        np.asarray(keras.ops.convert_to_numpy(layer(np.ones(shape, "float32"), training=True)), "float64")
        for _ in range(n)
    ]


def _forward(params, tokens, mask):
    e, k, b = params
    h = (e[tokens] * mask).reshape(len(tokens), -1)
    z = h @ k + b
    z = z - z.max(-1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(-1, keepdims=True)


def _ce(p, labels):
    return float(np.mean(-np.log(p[np.arange(len(labels)), labels])))


def _grad(fn, params, h=1e-6):
    out = []
    for i, p in enumerate(params):
        g = np.zeros_like(p)
        for idx in np.ndindex(p.shape):
            plus = [q.copy() for q in params]
            minus = [q.copy() for q in params]
            plus[i][idx] += h
            minus[i][idx] -= h
            g[idx] = (fn(plus) - fn(minus)) / (2 * h)
        out.append(g)
    return out


def _fit(
    model, tricks, optimizer=None, loss="sparse_categorical_crossentropy", batch_size=B, x=TOKENS, y=LABELS
):
    tm = train.TrickModel(model, tricks=tricks)
    tm.compile(optimizer or keras.optimizers.SGD(LR), loss)
    tm.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
    return tm


def _check(model, expected, atol=2e-4):
    for got, want in zip(_weights(model), expected):
        np.testing.assert_allclose(got, want, atol=atol, rtol=1e-4)


def _unit(g):
    n = np.sqrt(np.sum(g**2))
    return g / n if n > 0 else g


def test_fgm_one_step():
    model = _model()
    p0 = _weights(model)
    one = _masks(1, 0)[0]

    def loss(p):
        return _ce(_forward(p, TOKENS, one), LABELS)

    g = _grad(loss, p0)
    eps = 0.7
    r = eps * _unit(g[0])
    g_adv = _grad(loss, [p0[0] + r, p0[1], p0[2]])
    _fit(model, [train.FGM("emb", epsilon=eps)])
    _check(model, [p - LR * (a + b) for p, a, b in zip(p0, g, g_adv)])


def test_pgd_one_step_projects_onto_the_ball():
    model = _model()
    p0 = _weights(model)
    one = _masks(1, 0)[0]

    def loss(p):
        return _ce(_forward(p, TOKENS, one), LABELS)

    eps, alpha, k = 0.5, 0.4, 3  # alpha * k > eps: the projection binds
    g0 = _grad(loss, p0)
    r, g = np.zeros_like(p0[0]), g0[0]
    for _ in range(k):
        r = r + alpha * _unit(g)
        n = np.sqrt(np.sum(r**2))
        r = r * min(1.0, eps / n)
        g_adv = _grad(loss, [p0[0] + r, p0[1], p0[2]])
        g = g_adv[0]
    assert np.isclose(np.sqrt(np.sum(r**2)), eps)
    _fit(model, [train.PGD("emb", epsilon=eps, alpha=alpha, steps=k)])
    _check(model, [p - LR * (a + b) for p, a, b in zip(p0, g0, g_adv)])


def test_gradient_penalty_one_step():
    model = _model()
    p0 = _weights(model)
    one = _masks(1, 0)[0]
    eps = 2.0

    def loss(p):
        return _ce(_forward(p, TOKENS, one), LABELS)

    def penalised(p):
        g_e = _grad(loss, p, h=1e-5)[0]
        return loss(p) + 0.5 * eps * np.sum(g_e**2)

    g = _grad(penalised, p0, h=1e-4)
    _fit(model, [train.GradientPenalty("emb", epsilon=eps)])
    _check(model, [p - LR * a for p, a in zip(p0, g)], atol=5e-4)


def _rdrop_objective(p, masks, alpha, flood=None):
    p1, p2 = (_forward(p, TOKENS, m) for m in masks)
    l1, l2 = _ce(p1, LABELS), _ce(p2, LABELS)
    if flood is not None:
        l1, l2 = abs(l1 - flood) + flood, abs(l2 - flood) + flood
    d = np.sum((p1 - p2) * (np.log(p1) - np.log(p2)), axis=-1)
    return 0.5 * (l1 + l2) + alpha / 4.0 * np.mean(d)


def test_rdrop_one_step_from_two_recorded_masks():
    rate, alpha = 0.5, 4.0
    model = _model(rate)
    p0 = _weights(model)
    masks = _masks(2, rate)
    assert not np.array_equal(masks[0], masks[1])  # independent dropout
    g = _grad(lambda p: _rdrop_objective(p, masks, alpha), p0)
    _fit(model, [train.RDrop(alpha=alpha)])
    _check(model, [p - LR * a for p, a in zip(p0, g)])


def test_fgm_rdrop_flooding_ema_accumulation_one_step():
    """FGM + R-Drop + Flooding + EMA + gradient_accumulation_steps=2: the
    optimizer applies the mean of two micro-batch gradients, each the FGM
    gradient of the flooded R-Drop objective (4 forward passes per batch)."""
    rate, alpha, eps, flood, momentum = 0.5, 1.0, 0.3, 1.5, 0.5
    model = _model(rate)
    p0 = _weights(model)
    masks = _masks(8, rate, shape=(2, T, D))
    total = [np.zeros_like(p) for p in p0]
    for n in range(2):
        sl = slice(2 * n, 2 * n + 2)

        def objective(p, ms, sl=sl):
            p1, p2 = (_forward(p, TOKENS[sl], m) for m in ms)
            l1, l2 = _ce(p1, LABELS[sl]), _ce(p2, LABELS[sl])
            l1, l2 = abs(l1 - flood) + flood, abs(l2 - flood) + flood
            d = np.sum((p1 - p2) * (np.log(p1) - np.log(p2)), axis=-1)
            return 0.5 * (l1 + l2) + alpha / 4.0 * np.mean(d)

        ms = masks[4 * n : 4 * n + 4]
        g = _grad(lambda p, ms=ms: objective(p, ms[:2]), p0)
        r = eps * _unit(g[0])
        g_adv = _grad(lambda p, ms=ms: objective(p, ms[2:]), [p0[0] + r, p0[1], p0[2]])
        total = [t + (a + b) / 2 for t, a, b in zip(total, g, g_adv)]
    p1 = [p - LR * t for p, t in zip(p0, total)]
    opt = optimizers.ExponentialMovingAverageOptimizer(
        keras.optimizers.SGD(LR, gradient_accumulation_steps=2), momentum=momentum, warmup=False
    )
    loss = losses.Flooding("sparse_categorical_crossentropy", level=flood)
    _fit(
        model,
        [train.RDrop(alpha=alpha), train.FGM("emb", epsilon=eps)],
        optimizer=opt,
        loss=loss,
        batch_size=2,
    )
    _check(model, p1)
    averages = {id(v): a for v, a in zip(opt.averaged_variables, opt.average_variables)}
    for v, a, b in zip(model.weights, p0, p1):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(averages[id(v)]), momentum * a + (1 - momentum) * b, atol=2e-4
        )


def test_fgm_rdrop_mixed_float16_loss_scaled():
    """Under mixed_float16 with a LossScaleOptimizer the tricks see scaled
    gradients (FGM's direction is scale-free) and the
    update matches the float64 reference to half precision."""
    rate, alpha, eps = 0.5, 1.0, 0.3
    keras.config.set_dtype_policy("mixed_float16")
    model = _model(rate)
    p0 = _weights(model)
    layer = keras.layers.Dropout(rate, seed=3)
    masks = [
        np.asarray(keras.ops.convert_to_numpy(layer(np.ones((B, T, D), "float16"), training=True)), "float64")
        for _ in range(4)
    ]
    g = _grad(lambda p: _rdrop_objective(p, masks[:2], alpha), p0)
    r = eps * _unit(g[0])
    g_adv = _grad(lambda p: _rdrop_objective(p, masks[2:], alpha), [p0[0] + r, p0[1], p0[2]])
    # A moderate initial scale: at Keras's default (2**15) the first float16
    # backward pass overflows and the optimizer (rightly) skips the step.
    opt = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(LR), initial_scale=64.0)
    _fit(model, [train.RDrop(alpha=alpha), train.FGM("emb", epsilon=eps)], optimizer=opt)
    assert float(keras.ops.convert_to_numpy(opt.iterations)) == 1  # the step was applied
    _check(model, [p - LR * (a + b) for p, a, b in zip(p0, g, g_adv)], atol=2e-2)


def test_no_tricks_is_keras_step():
    model = _model()
    p0 = _weights(model)
    one = _masks(1, 0)[0]
    g = _grad(lambda p: _ce(_forward(p, TOKENS, one), LABELS), p0)
    _fit(model, [])
    _check(model, [p - LR * a for p, a in zip(p0, g)])


@pytest.mark.slow  # ~14 s on JAX; TensorFlow runs it, the CI budget leaves it out elsewhere
def test_save_load_keeps_tricks(tmp_path):
    tm = _fit(_model(0.5), [train.RDrop(alpha=2.0), train.PGD("emb", epsilon=0.5, steps=2)])
    path = str(tmp_path / "m.keras")
    tm.save(path)
    loaded = keras.saving.load_model(path)
    assert [repr(t) for t in loaded.tricks] == [repr(t) for t in tm.tricks]
    np.testing.assert_allclose(loaded.predict(TOKENS, verbose=0), tm.predict(TOKENS, verbose=0), atol=1e-6)
    loaded.fit(TOKENS, LABELS, verbose=0)  # trains on after loading


def test_combinations_that_cannot_work_raise():
    from keras_tricks import multitask

    with pytest.raises(ValueError, match="adversarial"):
        train.TrickModel(_model(), tricks=[train.FGM("emb"), train.PGD("emb")])
    x = keras.Input((4,))
    h = keras.layers.Dense(4)(x)
    mt = multitask.MultiTaskModel(
        keras.Model(x, [keras.layers.Dense(1, name="a")(h), keras.layers.Dense(1, name="b")(h)])
    )
    with pytest.raises(TypeError, match="MultiTaskModel"):
        train.TrickModel(mt, tricks=[train.FGM("emb")])
    with pytest.raises(ValueError, match="embedding"):
        _fit(_model(), [train.FGM("nope")])
    with pytest.raises(ValueError, match="epsilon"):
        train.FGM("emb", epsilon=0.0)
    with pytest.raises(ValueError, match="divergence"):
        train.RDrop(divergence="js")


def test_rdrop_divergence_from_the_head():
    from keras_tricks import layers

    assert train.divergence_for_head(layers.GlobalPointer(heads=2, head_size=4)) == "global_pointer"
    assert train.divergence_for_head(keras.layers.Dense(3, activation="softmax")) == "kl"
    assert train.divergence_for_head(keras.layers.Dense(3)) == "kl_logits"
    p = np.array([[0.2, 0.8]])
    q = np.array([[0.5, 0.5]])
    want = np.sum(p * np.log(p / q) + q * np.log(q / p))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(train.symmetric_kl(p, q)), [want], rtol=1e-5)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(train.symmetric_kl_from_logits(np.log(p), np.log(q))), [want], rtol=1e-5
    )
