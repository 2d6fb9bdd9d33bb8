"""keras_tricks.intermediates: a tensor marked inside a layer's call comes
back from capture() equal to a float64 NumPy reference of that tensor, per
call of a shared layer, filtered by name, under mixed precision, and the
marked layer is unchanged (and costs nothing) outside capture()."""

import keras
import numpy as np
import pytest

from keras_tricks import intermediates


class SelfAttention(keras.layers.Layer):
    """softmax(x W_q (x W_k)^T / sqrt(d)) x, recording the attention matrix."""

    def build(self, input_shape):
        d = input_shape[-1]
        self.wq = self.add_weight(shape=(d, d), initializer="glorot_uniform", name="wq")
        self.wk = self.add_weight(shape=(d, d), initializer="glorot_uniform", name="wk")

    def call(self, x):
        q, k = keras.ops.matmul(x, self.wq), keras.ops.matmul(x, self.wk)
        logits = keras.ops.einsum("bid,bjd->bij", q, k) / np.sqrt(x.shape[-1])
        attention = intermediates.record(self, "attention", keras.ops.softmax(logits, axis=-1))
        intermediates.record(self, "logits", logits)
        return keras.ops.einsum("bij,bjd->bid", attention, x)


def reference_attention(x, wq, wk):
    x, wq, wk = (np.asarray(a, np.float64) for a in (x, wq, wk))
    logits = (x @ wq) @ np.swapaxes(x @ wk, 1, 2) / np.sqrt(x.shape[-1])
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5, 4))
    shared = SelfAttention(name="att")
    h = shared(shared(inputs))  # one layer, two calls
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(h)), shared


def test_captured_attention_matches_the_reference_for_each_call():
    model, att = _model()
    x = np.random.default_rng(0).normal(size=(3, 5, 4)).astype("float32")
    outputs, found = intermediates.capture(model, x)
    assert set(found) == {"att/attention", "att/logits"} and len(found["att/attention"]) == 2
    wq, wk = (keras.ops.convert_to_numpy(w) for w in (att.wq, att.wk))
    first = reference_attention(x, wq, wk)
    np.testing.assert_allclose(found["att/attention"][0], first, rtol=1e-5, atol=1e-6)
    h1 = first @ x.astype(np.float64)
    np.testing.assert_allclose(
        found["att/attention"][1], reference_attention(h1, wq, wk), rtol=1e-4, atol=1e-5
    )
    # The outputs are the model's own, and capturing changes nothing about them.
    np.testing.assert_allclose(outputs, keras.ops.convert_to_numpy(model(x)), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(outputs, model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    # A second capture (cached function) on a new batch size.
    _, again = intermediates.capture(model, x[:1])
    np.testing.assert_allclose(again["att/attention"][0], first[:1], rtol=1e-5, atol=1e-6)


def test_names_filter_and_bad_input():
    model, _ = _model()
    x = np.zeros((2, 5, 4), "float32")
    _, found = intermediates.capture(model, x, names=["att/logits"])
    assert list(found) == ["att/logits"]
    with pytest.raises(ValueError, match=r"\['att/gate'\].*recorded: \['att/attention', 'att/logits'\]"):
        intermediates.capture(model, x, names=["att/gate"])
    with pytest.raises(TypeError, match="names"):
        intermediates.capture(model, x, names="att/logits")
    with pytest.raises(TypeError, match="model"):
        intermediates.capture(lambda v: v, x)
    with pytest.raises(ValueError, match="not built"):
        intermediates.capture(keras.Sequential([keras.layers.Dense(1)]), x)


def test_record_is_the_identity_outside_capture():
    value = keras.ops.ones((2,))
    assert intermediates.record("any", "thing", value) is value
    model, _ = _model()
    x = np.ones((1, 5, 4), "float32")
    np.testing.assert_allclose(model.predict(x, verbose=0), keras.ops.convert_to_numpy(model(x)), rtol=1e-5)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_values_come_back_as_numpy(policy):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        model, att = _model()
    finally:
        keras.config.set_dtype_policy(previous)
    x = np.random.default_rng(1).normal(size=(2, 5, 4)).astype("float32")
    _, found = intermediates.capture(model, x)
    got = found["att/attention"][0]
    assert isinstance(got, np.ndarray) and got.dtype in (np.float16, np.float32)
    wq, wk = (keras.ops.convert_to_numpy(keras.ops.cast(w, "float32")) for w in (att.wq, att.wk))
    np.testing.assert_allclose(got, reference_attention(x, wq, wk), atol=2e-2)
