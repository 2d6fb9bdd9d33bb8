"""GlobalPointer and EfficientGlobalPointer: bert4keras weight layout and
scores (float64 NumPy reference), RoPE, masks, bad input, and the harness."""

import keras
import numpy as np
import pytest

from keras_tricks import _numerics, layers, testing
from tests.layers import _gp_reference as ref

RNG = np.random.default_rng(0)
MASK_VALUE = _numerics.mask_value("float32")


def _inputs(batch=3, n=6, hidden=10, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, n, hidden)).astype("float32")


def _mask(batch=3, n=6):
    lengths = [n, n - 2, 1][:batch] + [n] * max(0, batch - 3)
    return np.arange(n)[None, :] < np.array(lengths)[:, None]


def _random_weights(layer, seed=1):
    rng = np.random.default_rng(seed)
    return [rng.normal(scale=0.5, size=w.shape).astype("float32") for w in layer.get_weights()]


def _check_against_reference(got, expected, valid):
    got = testing.to_numpy(got).astype(np.float64)
    valid = np.broadcast_to(valid, got.shape)
    np.testing.assert_allclose(got[valid], expected[valid], rtol=2e-5, atol=2e-5)
    # bert4keras subtracts 1e12; ours is the dtype-safe masking value. Both
    # are "impossible" spans: the same set, and never above threshold 0.
    assert np.all(expected[~valid] < -1e10)
    assert np.all(got[~valid] == MASK_VALUE)


# -------------------------------------------------------------------------
# bert4keras layout and scores
# -------------------------------------------------------------------------


@pytest.mark.parametrize("use_rope", [True, False])
@pytest.mark.parametrize("tril_mask", [True, False])
def test_gp_bert4keras_layout_and_scores(use_rope, tril_mask):
    x, mask = _inputs(), _mask()
    layer = layers.GlobalPointer(heads=3, head_size=4, use_rope=use_rope, tril_mask=tril_mask)
    layer.build(x.shape)
    assert [w.shape for w in layer.get_weights()] == [(10, 24), (24,)]
    weights = _random_weights(layer)
    layer.set_weights(weights)
    got = layer(x, mask=mask)
    expected = ref.gp_scores(x, *weights, heads=3, head_size=4, rope=use_rope, mask=mask, tril_mask=tril_mask)
    _check_against_reference(got, expected, ref.valid_spans(mask, 6, tril_mask))


@pytest.mark.parametrize("use_rope", [True, False])
def test_egp_bert4keras_layout_and_scores(use_rope):
    x, mask = _inputs(), _mask()
    layer = layers.EfficientGlobalPointer(heads=5, head_size=4, use_rope=use_rope)
    layer.build(x.shape)
    assert [w.shape for w in layer.get_weights()] == [(10, 8), (8,), (8, 10), (10,)]
    weights = _random_weights(layer)
    layer.set_weights(weights)
    got = layer(x, mask=mask)
    expected = ref.egp_scores(x, *weights, heads=5, head_size=4, rope=use_rope, mask=mask)
    _check_against_reference(got, expected, ref.valid_spans(mask, 6))


def test_no_bias_layouts():
    x = _inputs()
    gp = layers.GlobalPointer(2, 4, use_bias=False)
    egp = layers.EfficientGlobalPointer(2, 4, use_bias=False)
    gp.build(x.shape), egp.build(x.shape)
    assert [w.shape for w in gp.get_weights()] == [(10, 16)]
    assert [w.shape for w in egp.get_weights()] == [(10, 8), (8, 4)]
    wg, we = _random_weights(gp), _random_weights(egp)
    gp.set_weights(wg), egp.set_weights(we)
    valid = ref.valid_spans(None, 6)
    _check_against_reference(gp(x), ref.gp_scores(x, wg[0], None, 2, 4), valid)
    _check_against_reference(egp(x), ref.egp_scores(x, we[0], None, we[1], None, 2, 4), valid)


def test_egp_parameter_count_is_a_tenth_of_gp():
    x = keras.Input((None, 768))
    gp, egp = layers.GlobalPointer(10, 64), layers.EfficientGlobalPointer(10, 64)
    gp(x), egp(x)
    ratio = egp.count_params() / gp.count_params()
    assert gp.count_params() == 768 * 1280 + 1280
    assert egp.count_params() == 768 * 128 + 128 + 128 * 20 + 20
    assert 0.09 < ratio < 0.11


# -------------------------------------------------------------------------
# RoPE: an independent property
# -------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [layers.GlobalPointer, layers.EfficientGlobalPointer])
def test_rope_scores_depend_on_relative_position_only(cls):
    # The same hidden vector at every position: with RoPE, s(i, j) depends on
    # j - i only (a Toeplitz matrix), and without it s is constant.
    x = np.tile(RNG.normal(size=(1, 1, 8)), (1, 7, 1)).astype("float32")
    s = testing.to_numpy(cls(2, 6, tril_mask=False)(x))[0]
    for d in range(-6, 7):
        diag = np.stack([np.diagonal(s[h], offset=d) for h in range(2)])
        np.testing.assert_allclose(diag, diag[:, :1] * np.ones_like(diag), rtol=1e-5, atol=1e-5)
    flat = testing.to_numpy(cls(2, 6, use_rope=False, tril_mask=False)(x))[0]
    np.testing.assert_allclose(flat, flat[:, :1, :1] * np.ones_like(flat), rtol=1e-5, atol=1e-6)


def test_rope_rotation_hand_computed():
    # head_size 2, one head, identity-like kernel: q = k = (a, b) at every
    # position; with theta_0 = p, s(0, j) = (q . R_j k) / sqrt(2) and
    # R_0 = identity, so s(0, j) = (a^2 + b^2) cos(j) / sqrt(2).
    a, b = 0.6, -1.3
    x = np.tile(np.array([[[a, b]]], "float32"), (1, 4, 1))
    layer = layers.GlobalPointer(1, 2, use_bias=False, tril_mask=False)
    layer.build(x.shape)
    layer.set_weights([np.array([[1, 0, 1, 0], [0, 1, 0, 1]], "float32")])
    s = testing.to_numpy(layer(x))[0, 0]
    expected = (a * a + b * b) * np.cos(np.arange(4)) / np.sqrt(2)
    np.testing.assert_allclose(s[0], expected, rtol=1e-5, atol=1e-6)


# -------------------------------------------------------------------------
# Masks
# -------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [layers.GlobalPointer, layers.EfficientGlobalPointer])
def test_mask_from_embedding_equals_explicit_mask(cls):
    tokens = np.array([[3, 4, 5, 0, 0], [1, 2, 0, 0, 0]], "int32")
    inp = keras.Input((None,), dtype="int32")
    emb = keras.layers.Embedding(8, 6, mask_zero=True)
    head = cls(2, 4)
    model = keras.Model(inp, head(emb(inp)))
    got = testing.to_numpy(model(tokens))
    explicit = testing.to_numpy(head(emb(tokens), mask=tokens != 0))
    np.testing.assert_array_equal(got, explicit)
    valid = ref.valid_spans(tokens != 0, 5)
    assert np.all(got[~np.broadcast_to(valid, got.shape)] == MASK_VALUE)
    assert np.all(got[np.broadcast_to(valid, got.shape)] > MASK_VALUE / 2)
    # The sequence mask is consumed: no Keras mask on the span scores.
    assert head.compute_mask(emb(tokens), tokens != 0) is None


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_masks_stay_finite_in_half_precision(policy):
    x = (_inputs() * 30).astype("float32")  # large activations
    layer = layers.GlobalPointer(3, 8, dtype=policy)
    out = testing.to_numpy(layer(x, mask=_mask()))
    assert np.all(np.isfinite(out))
    assert np.all(out[~np.broadcast_to(ref.valid_spans(_mask(), 6), out.shape)] == MASK_VALUE)


def test_dynamic_sequence_length_in_compiled_model():
    inp = keras.Input((None, 10))
    model = keras.Model(inp, layers.GlobalPointer(2, 4)(inp))
    model.compile(jit_compile=keras.backend.backend() != "torch")
    for n in (3, 7):
        x = _inputs(n=n)
        out = model.predict(x, verbose=0)
        np.testing.assert_allclose(out, testing.to_numpy(model(x)), rtol=1e-5, atol=1e-5)
        assert out.shape == (3, 2, n, n)


# -------------------------------------------------------------------------
# Bad input
# -------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [layers.GlobalPointer, layers.EfficientGlobalPointer])
def test_bad_arguments(cls):
    for heads in (0, -2):
        with pytest.raises(ValueError, match="heads"):
            cls(heads, 4)
    for heads in (1.5, True, "2"):  # a wrong type is a TypeError
        with pytest.raises(TypeError, match="heads"):
            cls(heads, 4)
    with pytest.raises(ValueError, match="head_size"):
        cls(2, 5)  # odd with RoPE
    cls(2, 5, use_rope=False)  # fine without RoPE
    with pytest.raises(ValueError, match="head_size"):
        cls(2, 0)
    with pytest.raises(ValueError, match="inputs"):
        cls(2, 4)(np.zeros((2, 5), "float32"))
    with pytest.raises(ValueError, match="inputs"):
        cls(2, 4)(np.zeros((2, 5, 3, 4), "float32"))
    with pytest.raises(ValueError, match="inputs"):
        cls(2, 4)(keras.Input((5,)))
    with pytest.raises(ValueError, match="mask"):
        cls(2, 4)(np.zeros((2, 5, 3), "float32"), mask=np.ones((2, 5, 1), bool))


# -------------------------------------------------------------------------
# Harness
# -------------------------------------------------------------------------


def _span_output_mask(m):
    # The output is (batch, heads, n, n): a span is valid when both its ends
    # are. Returned with a heads axis of 1 so that it broadcasts.
    return m[:, None, :, None] & m[:, None, None, :]


@pytest.mark.harness
@pytest.mark.parametrize("cls", [layers.GlobalPointer, layers.EfficientGlobalPointer])
def test_through_harness(cls):
    # expected_output_mask=None: the sequence mask is consumed (it is in the
    # values of the spans); a (batch, n) Keras mask would not be aligned
    # with the (batch, heads, n, n) output.
    testing.check_layer(
        cls,
        {"heads": 3, "head_size": 4},
        _inputs(batch=4, n=5, hidden=6),
        mask=_mask(batch=4, n=5),
        output_mask=_span_output_mask,
        expected_output_mask=None,
        tolerance=4.0,
        # The span scores are float32 under mixed policies by design (see
        # test_large_activations_stay_finite_under_mixed_precision).
        expect_compute_dtype_outputs=False,
    )
