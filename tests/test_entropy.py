"""entropy_normalize and log_n_attention_scale against float64 NumPy
references (entropy of the output, a brute-force bisection on gamma, finite
differences) and the stated formula."""

import math

import keras
import numpy as np
import pytest

from keras_tricks import _backend
from keras_tricks.entropy import entropy_normalize, log_n_attention_scale


def _entropy(q):
    q = np.asarray(q, np.float64)
    return -np.where(q > 0, q * np.log(np.where(q > 0, q, 1.0)), 0.0).sum(-1)


def _reference(p, target):
    """float64 bisection on gamma in [0, 1e7] (an independent solver)."""
    p = np.asarray(p, np.float64)
    out = np.empty_like(p)
    for i, row in enumerate(p):
        sup = row > 0
        lp = np.log(row[sup])

        def q_of(g):
            z = g * (lp - lp.max())
            e = np.exp(z)
            q = np.zeros_like(row)
            q[sup] = e / e.sum()
            return q

        lo, hi = 0.0, 1e7
        for _ in range(200):
            mid = 0.5 * (lo + hi) if hi - lo > 1e-3 else math.sqrt(lo * hi) if lo > 0 else 0.5 * hi
            if _entropy(q_of(mid)) > target:
                lo = mid
            else:
                hi = mid
        out[i] = q_of(0.5 * (lo + hi))
    return out


def _cases(rng):
    p = rng.dirichlet(np.full(12, 0.5), size=40)
    p[:8, :4] = 0  # zeros
    p[8:12] = 1.0 + rng.normal(size=(4, 12)) * 1e-3  # near uniform
    p[12] = np.eye(12)[3]  # one-hot
    return p / p.sum(1, keepdims=True)


@pytest.mark.parametrize("target", [0.05, 0.7, 1.5, 2.0])
def test_entropy_equals_target_and_matches_reference(target):
    p = _cases(np.random.default_rng(0))
    q = keras.ops.convert_to_numpy(entropy_normalize(p.astype("float32"), target)).astype(np.float64)
    h = _entropy(q)
    support = (p > 0).sum(1)
    reachable = (target <= np.log(support) - 1e-6) & (support > 1)
    near_uniform = np.arange(len(p)) // 4 == 2
    assert np.abs(h - target)[reachable & ~near_uniform].max() <= 1e-4
    np.testing.assert_allclose(q, _reference(p, target), atol=2e-4)
    np.testing.assert_allclose(q.sum(1), 1.0, atol=1e-5)
    assert np.all(q[p == 0] == 0)
    np.testing.assert_array_equal(q[12], p[12])  # one-hot stays one-hot
    # Order kept (weakly: a large gamma may round neighbours to the same value).
    for row_p, row_q in zip(p, q):
        order = np.argsort(row_p, kind="stable")
        assert np.all(np.diff(row_q[order]) >= -1e-7)


def test_symbolic_length_in_a_functional_model():
    # An Input with an unknown class axis: the range check waits for a value
    # (it used to take math.log of JAX's symbolic dimension and fail).
    inputs = keras.Input((None,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda t: entropy_normalize(t, 0.7))(inputs))
    p = _cases(np.random.default_rng(1))[12:20].astype("float32")
    q = keras.ops.convert_to_numpy(model(p)).astype(np.float64)
    np.testing.assert_allclose(q, _reference(p, 0.7), atol=2e-4)


def test_unreachable_targets_clip_to_the_nearest_distribution():
    p = np.array([[0.5, 0.3, 0.2, 0.0]], "float32")
    q = keras.ops.convert_to_numpy(entropy_normalize(p, math.log(4)))  # above log(3)
    np.testing.assert_allclose(q, [[1 / 3, 1 / 3, 1 / 3, 0.0]], atol=1e-6)
    uniform = np.full((1, 5), 0.2, "float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(entropy_normalize(uniform, 0.3)), uniform, atol=1e-7
    )


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision(dtype):
    p = _cases(np.random.default_rng(1))[:8].astype("float32")
    x = keras.ops.cast(p, dtype)
    q = entropy_normalize(x, 1.0)
    assert keras.backend.standardize_dtype(q.dtype) == dtype
    q = keras.ops.convert_to_numpy(keras.ops.cast(q, "float32")).astype(np.float64)
    assert np.all(np.isfinite(q))
    tol = 0.02 if dtype == "float16" else 0.1
    assert np.abs(_entropy(q) - 1.0).max() <= tol


def test_gradient_matches_finite_differences():
    rng = np.random.default_rng(2)
    p = rng.dirichlet(np.ones(6), size=3)
    w = rng.normal(size=p.shape)

    def ref_loss(pp):
        return float((w * _reference(pp, 1.1)).sum())

    def loss(x):
        return keras.ops.sum(keras.ops.convert_to_tensor(w, "float32") * entropy_normalize(x, 1.1))

    _, (grad,) = _backend.value_and_grad(loss, keras.ops.convert_to_tensor(p, "float32"))
    grad = keras.ops.convert_to_numpy(grad)
    assert np.all(np.isfinite(grad))
    num = np.zeros_like(p)
    eps = 1e-5
    for idx in np.ndindex(p.shape):
        d = np.zeros_like(p)
        d[idx] = eps
        num[idx] = (ref_loss(p + d) - ref_loss(p - d)) / (2 * eps)
    np.testing.assert_allclose(grad, num, atol=2e-3, rtol=2e-2)


def test_bad_input():
    p = np.full((2, 4), 0.25, "float32")
    with pytest.raises(ValueError, match="`target_entropy`"):
        entropy_normalize(p, math.log(4) + 0.1)
    with pytest.raises(ValueError, match="`target_entropy`"):
        entropy_normalize(p, -0.1)
    with pytest.raises(TypeError, match="`target_entropy`"):
        entropy_normalize(p, "1")
    with pytest.raises(ValueError, match="`iterations`"):
        entropy_normalize(p, 1.0, iterations=2)
    with pytest.raises(ValueError, match="`logits`"):
        log_n_attention_scale(np.ones(3, "float32"))
    with pytest.raises(ValueError, match="`train_length`"):
        log_n_attention_scale(np.ones((2, 3), "float32"), train_length=1)


def test_log_n_scale_counts_valid_keys():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(2, 3, 6)).astype("float32")
    mask = rng.random((2, 3, 6)) > 0.4
    mask[0, 0] = False  # no key: n taken as 1
    out = keras.ops.convert_to_numpy(log_n_attention_scale(logits, mask, train_length=4))
    n = np.maximum(mask.sum(-1, keepdims=True), 1)
    np.testing.assert_allclose(out, logits * np.log(n) / np.log(4), rtol=1e-6)
    key_mask = mask[:, :1, :]  # (B, 1, S) broadcast over queries
    out = keras.ops.convert_to_numpy(log_n_attention_scale(logits, key_mask, train_length=4))
    n = np.maximum(key_mask.sum(-1, keepdims=True), 1)
    np.testing.assert_allclose(out, logits * np.log(n) / np.log(4), rtol=1e-6)
    unmasked = keras.ops.convert_to_numpy(log_n_attention_scale(logits, train_length=6))
    np.testing.assert_allclose(unmasked, logits, rtol=1e-6)  # n == train_length: unchanged
