"""LogNMultiHeadAttention against a float64 NumPy attention with the log-n
scale, its masks, saving, and the shared harness."""

import os

import keras
import numpy as np
import pytest

from keras_tricks.layers import LogNMultiHeadAttention
from keras_tricks.testing import check_layer


def _reference(layer, q_in, v_in, mask):
    """Plain float64 multi-head attention with logits * log(n) / log(L)."""
    wq, bq, wk, bk, wv, bv, wo, bo = [np.asarray(w, np.float64) for w in layer.get_weights()]
    q = np.einsum("btd,dnh->btnh", q_in, wq) + bq
    k = np.einsum("bsd,dnh->bsnh", v_in, wk) + bk
    v = np.einsum("bsd,dnh->bsnh", v_in, wv) + bv
    logits = np.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(q.shape[-1])
    n = np.maximum(mask.sum(-1), 1)[:, None, :, None]
    logits = logits * np.log(n) / np.log(layer.train_length)
    logits = np.where(mask[:, None], logits, -np.inf)
    att = np.exp(logits - logits.max(-1, keepdims=True))
    att /= att.sum(-1, keepdims=True)
    out = np.einsum("bnts,bsnh->btnh", att, v)
    return np.einsum("btnh,nhd->btd", out, wo) + bo


@pytest.mark.parametrize("causal", [False, True])
def test_matches_reference_with_masks(causal):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 7, 8)).astype("float32")
    layer = LogNMultiHeadAttention(num_heads=2, key_dim=4, train_length=4)
    keys = np.ones((2, 7), bool)
    keys[1, 4:] = False  # padding of the second sample
    attention_mask = np.repeat(keys[:, None, :], 7, axis=1)
    got = keras.ops.convert_to_numpy(layer(x, attention_mask=attention_mask, use_causal_mask=causal))
    mask = attention_mask & (np.tril(np.ones((7, 7), bool))[None] if causal else True)
    np.testing.assert_allclose(got, _reference(layer, x, x, mask), atol=2e-5)
    if causal:  # the causal-only path (no explicit mask) too
        got = keras.ops.convert_to_numpy(layer(x, use_causal_mask=True))
        tril = np.broadcast_to(np.tril(np.ones((7, 7), bool)), (2, 7, 7))
        np.testing.assert_allclose(got, _reference(layer, x, x, tril), atol=2e-5)


def test_equals_mha_at_train_length():
    x = np.random.default_rng(1).normal(size=(2, 6, 8)).astype("float32")
    ours = LogNMultiHeadAttention(num_heads=2, key_dim=4, train_length=6)
    ours(x)
    mha = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)
    mha(x, x)
    mha.set_weights(ours.get_weights())
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(ours(x)), keras.ops.convert_to_numpy(mha(x, x)), atol=1e-5
    )


def test_saves_and_loads(tmp_path):
    inp = keras.Input((5, 8))
    out = LogNMultiHeadAttention(num_heads=2, key_dim=4, train_length=3)(inp, inp, use_causal_mask=True)
    model = keras.Model(inp, out)
    x = np.random.default_rng(2).normal(size=(3, 5, 8)).astype("float32")
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(model(x)))
    assert loaded.layers[-1].train_length == 3


def test_bad_arguments():
    with pytest.raises(ValueError, match="`train_length`"):
        LogNMultiHeadAttention(num_heads=2, key_dim=4, train_length=1)
    with pytest.raises(TypeError, match="`train_length`"):
        LogNMultiHeadAttention(num_heads=2, key_dim=4, train_length=2.5)
    with pytest.raises(ValueError, match="`attention_axes`"):
        LogNMultiHeadAttention(num_heads=2, key_dim=4, attention_axes=(1, 2))


@pytest.mark.harness
def test_harness():
    x = np.random.default_rng(3).normal(size=(2, 5, 8)).astype("float32")
    # Masks are checked against the reference above: the harness passes a
    # mask as `call(mask=...)`, which MultiHeadAttention does not take.
    check_layer(LogNMultiHeadAttention, {"num_heads": 2, "key_dim": 4, "train_length": 4}, x)
