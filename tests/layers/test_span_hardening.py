"""Regression tests for defects found by outside testing of the span heads,
their losses and metrics (each failed on the code before its fix)."""

import warnings

import keras
import numpy as np
import pytest
from keras import ops

from keras_tricks import _numerics, layers, losses, metrics, testing

MASK = _numerics.mask_value("float32")


def _np_mlcce(t, s):
    """float64 multi-label CE per row, excluding entries exactly at MASK."""
    t, s = np.asarray(t, np.float64), np.asarray(s, np.float64)
    keep = s != MASK
    neg = np.where(keep & (t < 1), s, -np.inf)
    pos = np.where(keep & (t > 0), -s, -np.inf)

    def lse1(x):
        m = np.maximum(x.max(axis=-1, keepdims=True), 0.0)
        return (m + np.log(np.exp(-m) + np.exp(x - m).sum(-1, keepdims=True)))[..., 0]

    return lse1(neg) + lse1(pos)


# --- item 5: a very wrong positive is not padding ---------------------------


@pytest.mark.parametrize("logit", [-5000.0, -60000.0, -8191.0, -8193.0])
def test_very_negative_positive_gets_its_loss_and_gradient(logit):
    y_pred = np.full((1, 1, 3, 3), -2.0, "float32")
    y_pred[0, 0, 1, 0] = MASK  # a masked (lower-triangle) span
    y_pred[0, 0, 0, 1] = logit  # a genuine positive, badly scored
    dense = np.zeros_like(y_pred)
    dense[0, 0, 0, 1] = 1.0
    sparse = np.array([[[[0, 1], [-1, -1]]]], "int32")
    expected = _np_mlcce(dense.reshape(1, 1, 9), y_pred.reshape(1, 1, 9))[0, 0]
    assert expected == pytest.approx(-logit, abs=1.0)  # + the negatives at -2
    for loss in (losses.GlobalPointerCrossentropy(), losses.SparseGlobalPointerCrossentropy()):
        labels = dense if isinstance(loss, losses.GlobalPointerCrossentropy) else sparse
        value = float(testing.to_numpy(loss(labels, y_pred)))
        assert value == pytest.approx(expected, rel=1e-6), type(loss).__name__
    grad = testing.to_numpy(
        _grad(
            lambda s: ops.sum(losses.multilabel_categorical_crossentropy(dense.reshape(1, 9), s)),
            y_pred.reshape(1, 9),
        )
    )
    assert grad[0, 1] == pytest.approx(-1.0, abs=1e-6)
    assert grad[0, 3] == 0.0  # the masked span: no gradient


def _grad(fn, x):
    return testing.value_and_grad(fn, x)[1][0]


def test_masked_spans_contribute_exactly_nothing():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(2, 2, 5, 5)).astype("float32")
    s_masked = s.copy()
    s_masked[..., 3:, :] = MASK
    s_masked[..., :, 3:] = MASK
    labels = np.zeros_like(s)
    labels[0, 0, 0, 1] = labels[1, 1, 2, 2] = 1.0
    full = float(testing.to_numpy(losses.GlobalPointerCrossentropy()(labels, s_masked)))
    small = float(testing.to_numpy(losses.GlobalPointerCrossentropy()(labels[..., :3, :3], s[..., :3, :3])))
    assert full == pytest.approx(small, rel=1e-6)


# --- item 6: shapes are checked ----------------------------------------------


def test_sparse_loss_refuses_mismatched_heads_and_batch():
    y_pred = np.zeros((2, 4, 4, 4), "float32")
    with pytest.raises(ValueError, match=r"\(2, 2, 1, 2\).*|.*\(2, 4, 4, 4\)"):
        losses.SparseGlobalPointerCrossentropy()(np.zeros((2, 2, 1, 2), "int32"), y_pred)
    with pytest.raises(ValueError, match="batch and heads"):
        losses.SparseGlobalPointerCrossentropy()(np.zeros((1, 4, 1, 2), "int32"), y_pred)
    with pytest.raises(ValueError, match="batch and heads"):
        metrics.SpanF1(sparse=True).update_state(np.zeros((1, 4, 1, 2), "int32"), y_pred)


# --- item 7: empty sequences and batches -------------------------------------


@pytest.mark.parametrize("cls", [layers.GlobalPointer, layers.EfficientGlobalPointer])
@pytest.mark.parametrize("shape", [(2, 0, 8), (0, 3, 8), (0, 0, 8)])
def test_span_layers_on_empty_inputs(cls, shape):
    out = cls(2, 4)(np.zeros(shape, "float32"))
    assert tuple(out.shape) == (shape[0], 2, shape[1], shape[1])


@pytest.mark.parametrize("shape", [(2, 3, 0, 0), (0, 3, 4, 4)])
def test_span_losses_on_empty_inputs(shape):
    y_pred = np.zeros(shape, "float32")
    dense = losses.GlobalPointerCrossentropy()(np.zeros(shape, "float32"), y_pred)
    sparse = losses.SparseGlobalPointerCrossentropy()(np.full(shape[:2] + (2, 2), -1, "int32"), y_pred)
    kl = losses.global_pointer_kl(y_pred, y_pred)
    # An empty batch reduces as Keras's own losses do (its reduction hands a
    # length-0 loss back unchanged); an empty sequence gives a loss of 0.
    keras_empty = testing.to_numpy(
        keras.losses.MeanSquaredError()(np.zeros((shape[0], 1)), np.zeros((shape[0], 1)))
    )
    for value in (dense, sparse):
        value = testing.to_numpy(value)
        assert value.shape == (keras_empty.shape if shape[0] == 0 else ())
        assert float(np.sum(value)) == 0.0
    assert testing.to_numpy(kl).shape == (shape[0],)
    assert np.all(testing.to_numpy(kl) == 0.0)
    m = metrics.SpanF1()
    m.update_state(np.zeros(shape, "float32"), y_pred)
    assert float(testing.to_numpy(m.result())) == 0.0


# --- item 8: mixed_float16 with large activations ------------------------------


@pytest.mark.parametrize("cls", [layers.GlobalPointer, layers.EfficientGlobalPointer])
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_large_activations_stay_finite_under_mixed_precision(cls, policy):
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(2, 6, 16)) * 1e4).astype("float32")
    ref_layer = cls(2, 8, dtype="float32")
    ref = testing.to_numpy(ref_layer(x))
    assert np.isfinite(ref).all()
    layer = cls(2, 8, dtype=policy)
    layer.build(x.shape)
    layer.set_weights(ref_layer.get_weights())
    out = layer(x)
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    out = testing.to_numpy(out)
    assert np.isfinite(out).all()
    # Only the float16 rounding of the inputs differs from float32.
    np.testing.assert_allclose(out, ref, rtol=5e-2, atol=5e-2 * np.abs(ref).max())
    labels = np.zeros(out.shape, "float32")
    labels[:, :, 0, 1] = 1.0
    for fn in (
        lambda s: losses.GlobalPointerCrossentropy()(labels, s),
        lambda s: ops.sum(losses.global_pointer_kl(s, s * 0.5)),
    ):
        assert np.isfinite(testing.to_numpy(fn(out)))
        assert np.isfinite(testing.to_numpy(_grad(fn, out))).all()


# --- item 9: metrics validate and agree with the loss --------------------------


def test_span_metrics_refuse_dense_labels_when_sparse_and_nan_threshold():
    y_pred = np.zeros((1, 1, 4, 4), "float32")
    with pytest.raises(ValueError, match="y_true"):
        metrics.SpanF1(sparse=True).update_state(np.zeros((1, 1, 4, 4)), y_pred)
    with pytest.raises(ValueError, match="y_true"):
        metrics.SpanF1().update_state(np.zeros((1, 1, 3, 2), "int32"), y_pred)
    for bad in (float("nan"), float("inf"), MASK):
        with pytest.raises(ValueError, match="threshold"):
            metrics.SpanF1(threshold=bad)
    with pytest.raises(TypeError, match="threshold"):
        metrics.SpanF1(threshold="0")


def test_reversed_span_is_ignored_by_loss_and_metrics_alike():
    layer = layers.GlobalPointer(1, 4)
    scores = testing.to_numpy(layer(np.random.default_rng(1).normal(size=(1, 5, 6))))
    scores[0, 0, 0, 2] = 3.0  # predicted and true
    with_reversed = np.array([[[[0, 2], [3, 1]]]], "int32")
    without = np.array([[[[0, 2], [-1, -1]]]], "int32")
    loss = losses.SparseGlobalPointerCrossentropy()
    assert float(testing.to_numpy(loss(with_reversed, scores))) == pytest.approx(
        float(testing.to_numpy(loss(without, scores)))
    )
    for labels in (with_reversed, without):
        r = metrics.SpanRecall(sparse=True)
        r.update_state(labels, scores)
        assert float(testing.to_numpy(r.result())) == 1.0
    # Dense labels on a masked span likewise are not a miss.
    dense = np.zeros_like(scores)
    dense[0, 0, 0, 2] = dense[0, 0, 3, 1] = 1.0
    r = metrics.SpanRecall()
    r.update_state(dense, scores)
    assert float(testing.to_numpy(r.result())) == 1.0


# --- item 10: bert4keras's (0, 0) padding --------------------------------------


def test_bert4keras_padding_convention():
    rng = np.random.default_rng(2)
    scores = rng.normal(size=(2, 2, 5, 5)).astype("float32")
    ours = np.full((2, 2, 3, 2), -1, "int32")
    ours[0, 0, 0] = (1, 2)
    ours[1, 1, :2] = [(0, 3), (2, 2)]
    b4k = np.where(ours < 0, 0, ours).astype("int32")
    expected = float(testing.to_numpy(losses.SparseGlobalPointerCrossentropy()(ours, scores)))
    got = losses.SparseGlobalPointerCrossentropy(padding="bert4keras")(b4k, scores)
    assert float(testing.to_numpy(got)) == pytest.approx(expected, rel=1e-6)
    f_ours, f_b4k = metrics.SpanF1(sparse=True), metrics.SpanF1(sparse=True, padding="bert4keras")
    f_ours.update_state(ours, scores)
    f_b4k.update_state(b4k, scores)
    assert float(testing.to_numpy(f_ours.result())) == float(testing.to_numpy(f_b4k.result()))
    # The default warns on bert4keras-padded labels instead of silently
    # scoring (0, 0) as an entity.
    with pytest.warns(UserWarning, match="bert4keras"):
        losses.SparseGlobalPointerCrossentropy()(b4k, scores)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        losses.SparseGlobalPointerCrossentropy()(ours, scores)
    with pytest.raises(ValueError, match="padding"):
        losses.SparseGlobalPointerCrossentropy(padding=0)
    config = losses.SparseGlobalPointerCrossentropy(padding="bert4keras").get_config()
    assert losses.SparseGlobalPointerCrossentropy.from_config(config).padding == "bert4keras"


# --- item 18: validation -------------------------------------------------------


def test_span_layer_arguments_accept_numpy_scalars_and_name_errors():
    layer = layers.GlobalPointer(heads=np.int64(2), head_size=np.int32(4))
    assert layer.heads == 2 and type(layer.heads) is int
    assert layers.EfficientGlobalPointer(np.int64(3), np.int64(4)).get_config()["heads"] == 3
    with pytest.raises(TypeError, match="heads"):
        layers.GlobalPointer(heads=2.0, head_size=4)
    with pytest.raises(ValueError, match="head_size"):
        layers.GlobalPointer(heads=2, head_size=0)
    with pytest.raises(TypeError, match="use_rope"):
        layers.GlobalPointer(2, 4, use_rope="yes")


@pytest.mark.parametrize("cls", [layers.GlobalPointer, layers.EfficientGlobalPointer])
def test_span_layer_mask_of_wrong_length(cls):
    x = np.zeros((2, 5, 8), "float32")
    with pytest.raises(ValueError, match=r"`mask`.*\(2, 5\).*\(2, 4\)"):
        cls(2, 4)(x, mask=np.ones((2, 4), bool))


def test_global_pointer_kl_validates_its_inputs():
    with pytest.raises(ValueError, match="`s`"):
        losses.global_pointer_kl(np.zeros((2, 3, 3)), np.zeros((2, 3, 3)))
    with pytest.raises(TypeError, match="`s`"):
        losses.global_pointer_kl(np.zeros((1, 1, 2, 2), "int32"), np.zeros((1, 1, 2, 2)))
    with pytest.raises(ValueError, match="one shape"):
        losses.global_pointer_kl(np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 3, 3)))
