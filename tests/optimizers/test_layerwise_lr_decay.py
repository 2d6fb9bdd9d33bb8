import importlib
import os

import keras
import numpy as np
import pytest

from keras_tricks.optimizers import PiecewiseLinear, ScaledUpdates, layerwise_lr_decay

# The module (the package's attribute of that name is the function).
LLD_MODULE = importlib.import_module("keras_tricks.optimizers.layerwise_lr_decay")

HAS_MULTI_OPTIMIZER = hasattr(keras.optimizers, "MultiOptimizer")
LR, DECAY = 0.1, 0.5


# "multi": Keras's MultiOptimizer (skipped where this Keras has none);
# "scaled": the ScaledUpdates fallback, forced on any Keras.
@pytest.fixture(params=["multi", "scaled"])
def path(request, monkeypatch):
    if request.param == "multi" and not HAS_MULTI_OPTIMIZER:
        pytest.skip("this Keras has no MultiOptimizer")
    if request.param == "scaled":
        monkeypatch.setattr(LLD_MODULE, "_multi_optimizer", lambda: None)
    return request.param


def make_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((3,))
    blocks = [keras.layers.Dense(3, name=f"block_{i}") for i in range(2)]
    head = keras.layers.Dense(1, name="head")
    model = keras.Model(inputs, head(blocks[1](blocks[0](inputs))))
    return model, blocks


def numpy_grads(ws, x, y):
    """Float64 gradients of the MSE of three stacked linear Dense layers."""
    ws = [np.asarray(w, np.float64) for w in ws]
    acts = [x.astype(np.float64)]
    for k, b in zip(ws[::2], ws[1::2]):
        acts.append(acts[-1] @ k + b)
    delta = 2.0 * (acts[-1] - y) / acts[-1].size
    grads = []
    for layer in reversed(range(3)):
        k = ws[2 * layer]
        grads = [acts[layer].T @ delta, delta.sum(axis=0)] + grads
        delta = delta @ k.T
    return grads


def adam_reference(before, grads_fn, rates, steps, b1=0.9, b2=0.999, eps=1e-7):
    """Float64 Adam in Keras's form (epsilon added to sqrt(v), the bias
    corrections folded into the rate), with a rate per variable."""
    ws = [w.copy() for w in before]
    m = [np.zeros_like(w) for w in ws]
    v = [np.zeros_like(w) for w in ws]
    for t in range(1, steps + 1):
        for i, g in enumerate(grads_fn(ws)):
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            alpha = rates[i] * np.sqrt(1 - b2**t) / (1 - b1**t)
            ws[i] = ws[i] - alpha * m[i] / (np.sqrt(v[i]) + eps)
    return ws


def test_one_step_matches_float64_reference(path):
    model, blocks = make_model()
    optimizer = layerwise_lr_decay(keras.optimizers.SGD(LR), blocks, DECAY)
    assert isinstance(optimizer, ScaledUpdates) == (path == "scaled")
    model.compile(optimizer=optimizer, loss="mse")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 3)).astype("float32")
    y = rng.normal(size=(4, 1)).astype("float32")
    before = [np.array(keras.ops.convert_to_numpy(v), np.float64) for v in model.trainable_variables]
    model.train_on_batch(x, y)
    after = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
    # block_0 (i = 0): lr * decay**2, block_1: lr * decay, head: lr.
    rates = [LR * DECAY**2] * 2 + [LR * DECAY] * 2 + [LR] * 2
    for w0, w1, g, lr in zip(before, after, numpy_grads(before, x, y), rates):
        np.testing.assert_allclose(w1, w0 - lr * g, rtol=1e-5, atol=1e-6)


def test_adam_steps_match_float64_reference(path):
    # Adam's update ignores the gradient's scale: only a per-variable rate
    # (or a scaled update) gives these weights.
    model, blocks = make_model()
    model.compile(optimizer=layerwise_lr_decay(keras.optimizers.Adam(LR), blocks, DECAY), loss="mse")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 3)).astype("float32")
    y = rng.normal(size=(4, 1)).astype("float32")
    before = [np.array(keras.ops.convert_to_numpy(v), np.float64) for v in model.trainable_variables]
    for _ in range(3):
        model.train_on_batch(x, y)
    rates = [LR * DECAY**2] * 2 + [LR * DECAY] * 2 + [LR] * 2
    expected = adam_reference(before, lambda ws: numpy_grads(ws, x, y), rates, steps=3)
    for w, e in zip(model.trainable_variables, expected):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(w), e, rtol=1e-5, atol=1e-6)


def test_schedule_is_scaled_and_saved(tmp_path, path):
    model, blocks = make_model()
    opt = layerwise_lr_decay(
        keras.optimizers.Adam(PiecewiseLinear({0: 1.0}, learning_rate=LR)), blocks, DECAY
    )
    model.compile(optimizer=opt, loss="mse")
    x, y = np.ones((2, 3), "float32"), np.zeros((2, 1), "float32")
    model.train_on_batch(x, y)
    file = os.path.join(tmp_path, "m.keras")
    model.save(file)
    loaded = keras.saving.load_model(file)
    if path == "multi":
        rates = sorted(float(o.learning_rate) for o in loaded.optimizer.optimizers)
        np.testing.assert_allclose(rates, [LR * DECAY**2, LR * DECAY, LR], rtol=1e-6)
    else:
        assert isinstance(loaded.optimizer, ScaledUpdates)
        factors = [loaded.optimizer.scale_for(v) for v in loaded.trainable_variables]
        np.testing.assert_allclose(factors, [DECAY**2] * 2 + [DECAY] * 2 + [1.0] * 2)
        # Adam's moments came back: the next step equals the uninterrupted one.
        for a, b in zip(model.optimizer.variables, loaded.optimizer.variables):
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    loaded.train_on_batch(x, y)
    model.train_on_batch(x, y)
    for a, b in zip(model.trainable_variables, loaded.trainable_variables):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), rtol=1e-6)


@pytest.mark.parametrize(
    "args,error,match",
    [
        (("adam", None, 0.5), TypeError, "optimizer"),
        ((None, [], 0.5), TypeError, "layers"),
        ((None, None, 0.0), ValueError, "decay"),
        ((None, None, 1.5), ValueError, "decay"),
        ((None, "dup", 0.5), ValueError, "distinct"),
    ],
)
def test_bad_arguments(args, error, match, path):
    _, blocks = make_model()
    optimizer, layers, decay = args
    optimizer = keras.optimizers.SGD() if optimizer is None else optimizer
    layers = blocks if layers is None else [blocks[0], blocks[0]] if layers == "dup" else layers
    with pytest.raises(error, match=match):
        layerwise_lr_decay(optimizer, layers, decay)


# The minimum-Keras tier selects it: on a Keras without MultiOptimizer (3.10, the floor) the
# function falls back to ScaledUpdates by itself.
@pytest.mark.keras_internals
@pytest.mark.skipif(HAS_MULTI_OPTIMIZER, reason="this Keras has MultiOptimizer")
def test_older_keras_falls_back_to_scaled_updates():
    model, blocks = make_model()
    optimizer = layerwise_lr_decay(keras.optimizers.Adam(LR), blocks, decay=DECAY)
    assert isinstance(optimizer, ScaledUpdates)
