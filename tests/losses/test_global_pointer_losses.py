"""GlobalPointer losses: multilabel categorical cross-entropy (hard and soft
labels), dense and sparse span losses, and the R-Drop divergence, against
float64 NumPy references; NaN-free under half precision; the harness."""

import numpy as np
import pytest
from keras import ops

from keras_tricks import _numerics, losses, testing

MASK = _numerics.mask_value("float32")


# ------------------------------------------------------------------ references


def mcce_ref(t, s):
    """float64: log(1 + sum (1-t) e^s) + log(1 + sum t e^-s) over the last
    axis, masked logits (== MASK) excluded, written with explicit sums."""
    t = np.asarray(t, np.float64)
    s = np.asarray(s, np.float64)
    keep = s > MASK / 2
    neg = np.where(keep, (1 - t) * np.exp(np.where(keep, s, 0)), 0).sum(-1)
    pos = np.where(keep, t * np.exp(-np.where(keep, s, 0)), 0).sum(-1)
    return np.log1p(neg) + np.log1p(pos)


def dense_from_spans(spans, n):
    b, h = spans.shape[:2]
    dense = np.zeros((b, h, n, n))
    for bi in range(b):
        for hi in range(h):
            for start, end in spans[bi, hi]:
                if start >= 0 and end >= 0:
                    dense[bi, hi, start, end] = 1
    return dense


def span_case(seed=0, b=4, h=3, n=6, k=3, scale=2.0):
    """Masked logits as the layers output them, random spans, their dense
    labels and the padded span lists."""
    rng = np.random.default_rng(seed)
    s = rng.normal(scale=scale, size=(b, h, n, n))
    lengths = rng.integers(2, n + 1, size=b)
    valid = np.arange(n)[None] < lengths[:, None]
    valid = valid[:, None, :, None] & valid[:, None, None, :] & np.triu(np.ones((n, n), bool))
    s = np.where(valid, s, MASK).astype("float32")
    spans = np.full((b, h, k, 2), losses.SPAN_PADDING, "int32")
    for bi in range(b):
        for hi in range(h):
            for r in range(rng.integers(0, k + 1)):
                start = rng.integers(0, lengths[bi])
                end = rng.integers(start, lengths[bi])
                spans[bi, hi, r] = (start, end)
    return s, dense_from_spans(spans, n).astype("float32"), spans


# ----------------------------------------------------------- multilabel CE


def test_mcce_hard_and_soft_labels_match_reference():
    rng = np.random.default_rng(1)
    s = rng.normal(scale=3, size=(5, 7)).astype("float32")
    hard = (rng.random((5, 7)) < 0.3).astype("float32")
    soft = rng.random((5, 7)).astype("float32")
    for t in (hard, soft):
        got = testing.to_numpy(losses.multilabel_categorical_crossentropy(t, s))
        np.testing.assert_allclose(got, mcce_ref(t, s), rtol=1e-6)


def test_mcce_hand_computed():
    # negatives {-3}, positives {2, 4}: log(1 + e^-3) + log(1 + e^-2 + e^-4)
    got = testing.to_numpy(
        losses.multilabel_categorical_crossentropy(
            np.array([[0.0, 1.0, 1.0]], "float32"), np.array([[-3.0, 2.0, 4.0]], "float32")
        )
    )
    expected = np.log(1 + np.exp(-3.0)) + np.log(1 + np.exp(-2.0) + np.exp(-4.0))
    np.testing.assert_allclose(got, [expected], rtol=1e-6)


def test_mcce_soft_label_minimum_and_gradient():
    # For one class with target t, the soft-label loss
    # log(1 + (1-t) e^s) + log(1 + t e^-s) is minimal at e^{2s} = t / (1-t).
    t = 0.8
    s_star = 0.5 * np.log(t / (1 - t))
    for s0 in (s_star - 0.3, s_star + 0.3):
        _, (g,) = testing.value_and_grad(
            lambda s: ops.sum(
                losses.multilabel_categorical_crossentropy(
                    ops.convert_to_tensor(np.array([[t]], "float32")), s
                )
            ),
            ops.convert_to_tensor(np.array([[s0]], "float32")),
        )
        # gradient by the closed form derivative
        expected = -t * np.exp(-s0) / (1 + t * np.exp(-s0)) + (1 - t) * np.exp(s0) / (
            1 + (1 - t) * np.exp(s0)
        )
        np.testing.assert_allclose(testing.to_numpy(g)[0, 0], expected, rtol=1e-5)
        assert np.sign(expected) == np.sign(s0 - s_star)


def test_mcce_masked_logits_drop_out_of_both_sums():
    s = np.array([[1.0, -2.0, MASK, MASK]], "float32")
    t = np.array([[1.0, 0.0, 1.0, 0.0]], "float32")  # a (wrong) label on a masked logit too
    got = testing.to_numpy(losses.multilabel_categorical_crossentropy(t, s))
    expected = np.log(1 + np.exp(-2.0)) + np.log(1 + np.exp(-1.0))
    np.testing.assert_allclose(got, [expected], rtol=1e-6)


def test_mcce_extreme_logits_finite():
    s = np.array([[80.0, -80.0, 300.0, -300.0, MASK]], "float32")
    t = np.array([[0.0, 1.0, 1.0, 0.0, 0.0]], "float32")
    value, (grad,) = testing.value_and_grad(
        lambda p: ops.sum(losses.multilabel_categorical_crossentropy(ops.convert_to_tensor(t), p)),
        ops.convert_to_tensor(s),
    )
    assert np.isfinite(testing.to_numpy(value)) and np.all(np.isfinite(testing.to_numpy(grad)))
    np.testing.assert_allclose(testing.to_numpy(value), 160.0, rtol=1e-5)


# ------------------------------------------------------ dense / sparse span loss


def test_dense_and_sparse_losses_match_reference_and_each_other():
    s, dense, spans = span_case()
    expected = mcce_ref(dense.reshape(4, 3, -1), s.reshape(4, 3, -1)).mean()
    got_dense = testing.to_numpy(losses.GlobalPointerCrossentropy()(dense, s))
    got_sparse = testing.to_numpy(losses.SparseGlobalPointerCrossentropy()(spans, s))
    np.testing.assert_allclose(got_dense, expected, rtol=1e-6)
    np.testing.assert_allclose(got_sparse, got_dense, rtol=1e-5)


def test_sparse_duplicates_and_padding():
    s, dense, spans = span_case(seed=3, k=2)
    doubled = np.concatenate([spans, spans, np.full_like(spans, -1)], axis=2)
    a = testing.to_numpy(losses.SparseGlobalPointerCrossentropy()(doubled, s))
    b = testing.to_numpy(losses.GlobalPointerCrossentropy()(dense, s))
    np.testing.assert_allclose(a, b, rtol=1e-5)


def test_sparse_loss_confident_model_never_nan_or_negative():
    # The regime that broke bert4keras's sparse loss: positives with huge
    # logits, negatives very negative, so sum_pos >> 1 + sum_neg.
    n = 8
    s = np.full((2, 2, n, n), -30.0, "float32")
    spans = np.array([[[[1, 3], [0, 0]], [[2, 5], [-1, -1]]]] * 2, "int32")
    for bi in range(2):
        for hi in range(2):
            for start, end in spans[bi, hi]:
                if start >= 0:
                    s[bi, hi, start, end] = 40.0
    for dtype in ("float32", "float16", "bfloat16"):
        value, (grad,) = testing.value_and_grad(
            lambda p: losses.SparseGlobalPointerCrossentropy()(spans, ops.cast(p, dtype)),
            ops.convert_to_tensor(s),
        )
        value = float(testing.to_numpy(value))
        assert np.isfinite(value) and value >= 0.0, (dtype, value)
        assert np.all(np.isfinite(testing.to_numpy(grad)))
        # true value: log(1 + 62 e^-30) + log(1 + e^-40) per (sample, type) with one span
        per_pair = lambda k: np.log1p((n * n - k) * np.exp(-30.0)) + np.log1p(k * np.exp(-40.0))  # noqa: E731
        expected = np.mean([per_pair(2), per_pair(1)])
        np.testing.assert_allclose(value, expected, rtol=0.05, atol=1e-7)


@pytest.mark.parametrize("policy_dtype", ["float16", "bfloat16"])
def test_losses_half_precision_with_masks_no_nan(policy_dtype):
    s, dense, spans = span_case(seed=5, scale=8.0)
    for loss, y in (
        (losses.GlobalPointerCrossentropy(), dense),
        (losses.SparseGlobalPointerCrossentropy(), spans),
    ):
        value, (grad,) = testing.value_and_grad(
            lambda p: loss(y, ops.cast(p, policy_dtype)), ops.convert_to_tensor(s)
        )
        grad = testing.to_numpy(grad)
        assert np.isfinite(testing.to_numpy(value))
        assert np.all(np.isfinite(grad))
        assert np.all(grad[s == MASK] == 0)  # masked logits get no gradient
    expected = mcce_ref(
        dense.reshape(4, 3, -1),
        s.astype(policy_dtype if policy_dtype == "float16" else "float32").reshape(4, 3, -1),
    ).mean()
    got = testing.to_numpy(losses.GlobalPointerCrossentropy()(dense, ops.cast(s, policy_dtype)))
    np.testing.assert_allclose(got, expected, rtol=0.05)


_MIXED_FLOAT16_FIT = """
import sys
import keras, numpy as np
from keras_tricks import layers, losses, testing
seed, densify = int(sys.argv[1]), sys.argv[2] == "densify"
keras.utils.set_random_seed(seed)
with testing.dtype_policy("mixed_float16"):
    tokens = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(20, 16, mask_zero=True)(tokens)
    out = layers.GlobalPointer(2, 8)(x * 40.0)  # large activations
    model = keras.Model(tokens, out)
optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam())
if densify:
    import tensorflow as tf

    class DensifyingLossScaleOptimizer(keras.optimizers.LossScaleOptimizer):
        # Work-around of the Keras defect (docs: known issues): check the
        # summed (dense) IndexedSlices, not the scatter of their rows.
        def check_finite(self, grads):
            return super().check_finite(
                [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in grads]
            )

    optimizer = DensifyingLossScaleOptimizer(keras.optimizers.Adam())
model.compile(optimizer=optimizer, loss=losses.SparseGlobalPointerCrossentropy())
rng = np.random.default_rng(0)
tok = rng.integers(1, 20, size=(8, 7)).astype("int32")
tok[:, 5:] = 0
spans = np.full((8, 2, 2, 2), -1, "int32")
spans[:, 0, 0] = (1, 2)
spans[:, 1, 0] = (0, 4)
history = model.fit(tok, spans, epochs=2, batch_size=4, verbose=0, shuffle=False)
assert np.all(np.isfinite(history.history["loss"])), history.history
assert all(np.all(np.isfinite(w)) for w in model.get_weights()), "non-finite weights"
"""


def _run_mixed_float16_fit(seed, densify=False):
    import os
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-c", _MIXED_FLOAT16_FIT, str(seed), "densify" if densify else "plain"],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )


@pytest.mark.slow
def test_loss_in_mixed_float16_model_end_to_end():
    # Seeded: with some initial weights (seed 8 on TensorFlow) a step whose
    # scaled Embedding gradient overflows float16 passes LossScaleOptimizer's
    # finiteness check on TensorFlow (a Keras defect with IndexedSlices, see
    # the next tests and the docs' known issues) and Adam turns the weights
    # NaN. Seed 0 has no such step on any backend. A fresh process keeps the
    # run independent of what the test session did before.
    proc = _run_mixed_float16_fit(seed=0)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _duplicate_row_gradient():
    """An Embedding-like IndexedSlices gradient: row 0 twice, one -inf."""
    import tensorflow as tf

    values = tf.constant([[1.0, -np.inf], [2.0, 3.0]])
    return tf.IndexedSlices(values, tf.constant([0, 0]), tf.constant([4, 2]))


@pytest.mark.xfail(
    strict=True,
    reason="Keras defect (TensorFlow backend): ops.isfinite on IndexedSlices "
    "scatters the rows' results (tensor_scatter_nd_update, last write wins) "
    "instead of testing their sum, so LossScaleOptimizer.check_finite misses a "
    "non-finite row that has a finite duplicate. Docs: known issues.",
)
def test_upstream_loss_scale_check_finite_sees_duplicate_rows():
    import keras

    if keras.backend.backend() != "tensorflow":
        pytest.skip("IndexedSlices gradients exist on TensorFlow only")
    import tensorflow as tf

    g = _duplicate_row_gradient()
    assert not np.all(np.isfinite(tf.convert_to_tensor(g).numpy()))  # the real gradient
    assert not bool(ops.all(ops.isfinite(g)))
    optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam())
    assert not bool(optimizer.check_finite([g]))


@pytest.mark.slow
def test_mixed_float16_fit_with_upstream_workaround():
    # Seed 8 makes the first step of epoch 2 overflow (row 16 of the Embedding
    # gradient is -inf in one of its two slices). JAX and PyTorch have dense
    # gradients and skip that step; on TensorFlow the stock optimizer applies
    # it (NaN weights; the strict xfail above pins that defect in a fraction
    # of the time), and checking the densified gradient skips it too.
    import keras

    densify = keras.backend.backend() == "tensorflow"
    proc = _run_mixed_float16_fit(seed=8, densify=densify)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_sparse_loss_bad_labels():
    s = np.zeros((1, 2, 4, 4), "float32")
    with pytest.raises(ValueError, match="y_true"):
        losses.SparseGlobalPointerCrossentropy()(np.zeros((1, 2, 3), "int32"), s)
    with pytest.raises(ValueError, match="y_pred"):
        losses.GlobalPointerCrossentropy()(np.zeros((1, 4, 4)), np.zeros((1, 4, 4), "float32"))
    with pytest.raises(ValueError, match="y_true"):
        losses.GlobalPointerCrossentropy()(np.zeros((1, 2, 3, 2), "int32"), s)


# ---------------------------------------------------------------------- KL


def kl_ref(s, t):
    s, t = np.asarray(s, np.float64), np.asarray(t, np.float64)
    masked = (s <= MASK / 2) | (t <= MASK / 2)
    s, t = np.where(masked, 0, s), np.where(masked, 0, t)
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    d = np.where(masked, 0, (sig(s) - sig(t)) * (s - t))
    return d.reshape(d.shape[0], d.shape[1], -1).sum(-1).mean(-1)


def test_global_pointer_kl_reference_and_properties():
    s, _, _ = span_case(seed=7)
    t = np.where(s == MASK, MASK, s + np.random.default_rng(8).normal(size=s.shape)).astype("float32")
    got = testing.to_numpy(losses.global_pointer_kl(s, t))
    np.testing.assert_allclose(got, kl_ref(s, t), rtol=1e-5)
    np.testing.assert_allclose(testing.to_numpy(losses.global_pointer_kl(t, s)), got, rtol=1e-6)
    assert np.all(got > 0)
    np.testing.assert_array_equal(testing.to_numpy(losses.global_pointer_kl(s, s)), 0.0)
    # equals the sum of the two Bernoulli KLs, KL(p||q) + KL(q||p)
    valid = s > MASK / 2
    s64, t64 = np.where(valid, s, 0.0), np.where(valid, t, 0.0)
    p, q = 1 / (1 + np.exp(-s64)), 1 / (1 + np.exp(-t64))
    kl = lambda a, b: a * np.log(a / b) + (1 - a) * np.log((1 - a) / (1 - b))  # noqa: E731
    sym = np.where(valid, kl(p, q) + kl(q, p), 0).reshape(4, 3, -1).sum(-1).mean(-1)
    np.testing.assert_allclose(got, sym, rtol=1e-4)


def test_global_pointer_kl_half_precision_finite():
    s, _, _ = span_case(seed=9, scale=10)
    t = np.where(s == MASK, MASK, -s).astype("float32")
    for dtype in ("float16", "bfloat16"):
        value, grads = testing.value_and_grad(
            lambda a, b: ops.sum(losses.global_pointer_kl(ops.cast(a, dtype), ops.cast(b, dtype))),
            ops.convert_to_tensor(s),
            ops.convert_to_tensor(t),
        )
        assert np.isfinite(testing.to_numpy(value))
        assert all(np.all(np.isfinite(g)) for g in testing.to_numpy(grads))


# ------------------------------------------------------------------- harness


@pytest.mark.harness
def test_mcce_through_harness():
    rng = np.random.default_rng(2)
    s = rng.normal(scale=2, size=(6, 9)).astype("float32")
    s[:, -2:] = MASK
    t = (rng.random((6, 9)) < 0.3).astype("float32")
    testing.check_loss(losses.multilabel_categorical_crossentropy, None, t, s, tolerance=4.0)


@pytest.mark.harness
def test_span_losses_through_harness():
    s, dense, spans = span_case(seed=11)
    testing.check_loss(losses.GlobalPointerCrossentropy, {}, dense, s, tolerance=4.0)
    testing.check_loss(losses.SparseGlobalPointerCrossentropy, {}, spans, s, tolerance=4.0)


@pytest.mark.harness
def test_global_pointer_kl_through_harness():
    # As an R-Drop term: the scores of a second forward pass play `y_true`.
    s, _, _ = span_case(seed=11)
    t = np.where(s == MASK, MASK, s + np.random.default_rng(12).normal(size=s.shape)).astype("float32")
    testing.check_loss(losses.global_pointer_kl, None, t, s)
