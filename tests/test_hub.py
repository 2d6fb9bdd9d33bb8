"""keras_tricks on keras_hub backbones (issue 18): the padding mask reaches
our heads, the whole model saves and loads, mixed precision, and the
Conditional Layer Normalization swap.

No pretrained weights: every backbone is built from its config, randomly
initialised (2 layers, hidden 64, a 50-token vocabulary). The references are
independent of the code under test: the backbone's own `padding_mask` input
for the masks, the original keras_hub backbone for the swap, the float32
model for mixed precision, the model before saving for the round trip."""

import keras
import numpy as np
import pytest

from keras_tricks import hub
from keras_tricks.layers import (
    ConditionalRandomField,
    EfficientGlobalPointer,
    GlobalPointer,
    GPLinkerEventHeads,
    GPLinkerHeads,
)
from keras_tricks.spans import MASK_VALUE

# keras_hub 0.32 needs Keras >= 3.15 (it imports Keras internals that 3.10,
# our minimum, lacks): skipped there, as where it is not installed.
keras_hub = pytest.importorskip("keras_hub", exc_type=ImportError)

VOCAB, HIDDEN, COND = 50, 64, 8
TOKENS = np.array([[2, 5, 6, 7, 8, 3], [2, 9, 4, 3, 0, 0]], "int32")
PADDING = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], "int32")
CONDITION = np.array(np.random.default_rng(0).normal(size=(2, COND)), "float32")


def _backbone(kind, dtype=None):
    common = {"vocabulary_size": VOCAB, "num_layers": 2, "hidden_dim": HIDDEN, "intermediate_dim": 128}
    if kind == "bert":
        return keras_hub.models.BertBackbone(num_heads=2, max_sequence_length=16, dtype=dtype, **common)
    if kind == "roberta":
        return keras_hub.models.RobertaBackbone(num_heads=2, max_sequence_length=16, dtype=dtype, **common)
    if kind == "deberta_v3":
        return keras_hub.models.DebertaV3Backbone(
            num_heads=2, max_sequence_length=16, bucket_size=8, dtype=dtype, **common
        )
    if kind == "gemma":
        return keras_hub.models.GemmaBackbone(
            num_query_heads=2, num_key_value_heads=1, head_dim=32, dtype=dtype, **common
        )
    if kind == "llama":
        return keras_hub.models.LlamaBackbone(num_query_heads=2, num_key_value_heads=1, dtype=dtype, **common)
    raise AssertionError(kind)


def _batch(backbone, condition=False):
    data = {"token_ids": TOKENS, "padding_mask": PADDING, "segment_ids": np.zeros_like(TOKENS)}
    batch = {name: data[name] for name in backbone.input}
    if condition:
        batch["condition"] = CONDITION
    return batch


def _sequence(outputs):
    # RoBERTa returns the sequence itself, the others a dict.
    return outputs["sequence_output"] if isinstance(outputs, dict) else outputs


def _predict(model, batch):
    # Test time only, same outputs: on JAX one compiled `predict` is about
    # four times faster than an eager call (which compiles every op of the
    # backbone one by one); on TensorFlow and PyTorch the eager call is the
    # faster (no tracing).
    if keras.backend.backend() == "jax":
        return model.predict(batch, batch_size=len(TOKENS), verbose=0)
    return model(batch)


def _numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x), "float64")


def _heads_model(backbone, dtype=None):
    """GlobalPointer, EGP, GPLinker's relation and event heads and a CRF on
    one backbone, all reading the sequence through `masked_sequence`."""
    inputs = dict(backbone.input)
    seq = hub.masked_sequence(backbone(inputs), inputs["padding_mask"])
    outputs = {
        # Two channels everywhere (GPLinker's entity and link heads have two
        # too): JAX compiles each op shape once, on first use.
        "global_pointer": GlobalPointer(heads=2, head_size=16, dtype=dtype)(seq),
        "efficient": EfficientGlobalPointer(heads=2, head_size=16, dtype=dtype)(seq),
        "relations": GPLinkerHeads(relations=2, head_size=16, dtype=dtype)(seq),
        "events": GPLinkerEventHeads(labels=2, head_size=16, dtype=dtype)(seq),
        "crf": ConditionalRandomField(dtype=dtype)(keras.layers.Dense(5, dtype=dtype)(seq)),
    }
    return keras.Model(inputs, outputs)


def _check_padding_masked(outputs):
    real = PADDING.astype(bool)
    both = real[:, None, :, None] & real[:, None, None, :]
    for name in ("global_pointer", "efficient", "relations", "events"):
        scores = _numpy(outputs[name])
        # Every span touching the padding has the mask value; no span between
        # real tokens has it (the entity channels also mask j < i).
        assert np.all(scores[np.broadcast_to(~both, scores.shape)] == MASK_VALUE), name
        upper = np.triu(np.ones(scores.shape[-2:], bool))
        kept = np.broadcast_to(both & upper, scores.shape)
        assert np.all(scores[kept] != MASK_VALUE), name
    crf = _numpy(outputs["crf"])
    assert np.all(crf[~real] == MASK_VALUE) and np.all(crf[real] != MASK_VALUE)


# BERT runs on every backend, built once for the module (JAX compiles each
# new op shape on first use); the other backbones run in the slow tier
# (TensorFlow in CI) and were checked on all three backends by hand.
SLOW = pytest.mark.slow


@pytest.fixture(scope="module")
def bert():
    return _backbone("bert")


@pytest.fixture(scope="module")
def bert_heads(bert):
    model = _heads_model(bert)
    return model, _predict(model, _batch(bert))


def test_keras_hub_outputs_carry_no_keras_mask(bert):
    """Why `masked_sequence` exists: keras_hub takes the padding as an input
    and its sequence output carries no Keras mask (measured on TensorFlow,
    JAX and PyTorch with keras_hub 0.32)."""
    assert getattr(_sequence(bert.output), "_keras_mask", None) is None
    inputs = dict(bert.input)
    seq = hub.masked_sequence(bert(inputs), inputs["padding_mask"])
    assert tuple(seq._keras_mask.shape) == (None, None)


def test_heads_on_bert_see_the_padding_mask(bert_heads):
    _check_padding_masked(bert_heads[1])


def test_heads_on_bert_save_and_load_with_identical_outputs(bert, bert_heads, tmp_path):
    model, outputs = bert_heads
    model.save(tmp_path / "heads.keras")
    loaded = keras.saving.load_model(tmp_path / "heads.keras")
    again = _predict(loaded, _batch(bert))
    for name in outputs:
        np.testing.assert_array_equal(_numpy(again[name]), _numpy(outputs[name]), err_msg=name)


@SLOW
@pytest.mark.parametrize("kind", ["deberta_v3", "gemma"])
def test_heads_on_other_backbones_see_the_mask_and_round_trip(kind, tmp_path):
    model = _heads_model(_backbone(kind))
    batch = _batch(model)
    outputs = _predict(model, batch)
    _check_padding_masked(outputs)
    model.save(tmp_path / f"{kind}.keras")
    again = _predict(keras.saving.load_model(tmp_path / f"{kind}.keras"), batch)
    for name in outputs:
        np.testing.assert_array_equal(_numpy(again[name]), _numpy(outputs[name]), err_msg=name)


def test_heads_under_mixed_bfloat16_are_finite_and_close_to_float32(bert, bert_heads):
    reference, expected = bert_heads
    mixed = _heads_model(_backbone("bert", dtype="mixed_bfloat16"), dtype="mixed_bfloat16")
    mixed.set_weights(reference.get_weights())
    got = _predict(mixed, _batch(bert))
    _check_padding_masked(got)
    for name in ("global_pointer", "efficient", "relations", "events"):
        a, b = _numpy(expected[name]), _numpy(got[name])
        valid = a != MASK_VALUE
        assert np.all(np.isfinite(b)), name
        # bfloat16 keeps 8 significant bits: a few per cent of the scale.
        assert np.max(np.abs(a[valid] - b[valid])) <= 0.05 * np.max(np.abs(a[valid])) + 0.05, name


def _check_swap(backbone, norms):
    expected = _numpy(_sequence(_predict(backbone, _batch(backbone))))
    conditional = hub.swap_in_conditional_layer_norm(backbone, COND)
    # Every LayerNorm / RMSNorm on the token stream: one before or after the
    # blocks, two per block (DeBERTa-v3's relative position table is not one).
    assert len(conditional.conditioned_layers) == norms
    got = _numpy(_sequence(_predict(conditional, _batch(backbone, condition=True))))
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-6)
    # The original backbone is left as it was (its copy's norms are frozen).
    assert all(layer.trainable for layer in backbone._flatten_layers())
    rng = np.random.default_rng(1)
    for cln in conditional.conditional_norms:
        cln.gamma_kernel.assign(rng.normal(scale=0.2, size=cln.gamma_kernel.shape))
    shifted = _numpy(_sequence(_predict(conditional, _batch(backbone, condition=True))))
    assert np.max(np.abs(shifted - expected)) > 0.1
    # One condition per example: reversing the conditions changes the outputs.
    swapped = _batch(backbone, condition=True)
    swapped["condition"] = CONDITION[::-1]
    other = _numpy(_sequence(_predict(conditional, swapped)))
    assert np.max(np.abs(other - shifted)) > 0.1


def test_swap_into_bert_is_identical_at_init_and_conditions_once_trained(bert):
    _check_swap(bert, norms=5)


@SLOW
@pytest.mark.parametrize("kind", ["roberta", "deberta_v3", "gemma", "llama"])
def test_swap_into_other_backbones_is_identical_at_init(kind):
    _check_swap(_backbone(kind), norms=5)


def test_conditional_model_with_a_head_saves_and_loads(bert, tmp_path):
    conditional = hub.swap_in_conditional_layer_norm(bert, COND, hidden_units=4)
    inputs = {**bert.input, "condition": keras.Input((COND,), name="condition")}
    seq = hub.masked_sequence(conditional(inputs), inputs["padding_mask"])
    model = keras.Model(inputs, GlobalPointer(heads=2, head_size=16)(seq))
    batch = _batch(bert, condition=True)
    for cln in conditional.conditional_norms:
        cln.beta_kernel.assign(np.full(cln.beta_kernel.shape, 0.05))
    expected = _numpy(_predict(model, batch))
    model.save(tmp_path / "conditional.keras")
    loaded = keras.saving.load_model(tmp_path / "conditional.keras")
    np.testing.assert_array_equal(_numpy(_predict(loaded, batch)), expected)
    reloaded = next(layer for layer in loaded.layers if isinstance(layer, hub.ConditionalBackbone))
    assert reloaded.conditioned_layers == conditional.conditioned_layers
    # The replaced norms are out of the trainable weights (no None gradients).
    frozen = {id(v) for layer in reloaded._originals.layers for v in layer.weights}
    assert frozen and not frozen & {id(v) for v in loaded.trainable_weights}


@SLOW
def test_the_condition_kernels_learn_from_zero(bert):
    """At init W_g = W_b = 0, yet their gradient is not: one step of fit()
    moves them, and the condition then changes the outputs."""
    conditional = hub.swap_in_conditional_layer_norm(bert, COND)
    conditional.backbone.get_layer("pooled_dense").trainable = False  # not in this loss
    inputs = {**bert.input, "condition": keras.Input((COND,), name="condition")}
    seq = hub.masked_sequence(conditional(inputs), inputs["padding_mask"])
    model = keras.Model(inputs, keras.layers.Dense(1)(seq))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse", run_eagerly=True)
    batch = _batch(bert, condition=True)
    model.fit(batch, np.ones((2, TOKENS.shape[1], 1), "float32"), epochs=1, verbose=0)
    moved = [np.abs(keras.ops.convert_to_numpy(c.gamma_kernel)).max() for c in conditional.conditional_norms]
    assert min(moved) > 0


def test_swap_under_mixed_bfloat16_is_finite_and_matches_the_backbone():
    backbone = _backbone("bert", dtype="mixed_bfloat16")
    conditional = hub.swap_in_conditional_layer_norm(backbone, COND)
    assert all(cln.dtype_policy.name == "mixed_bfloat16" for cln in conditional.conditional_norms)
    expected = _numpy(_sequence(_predict(backbone, _batch(backbone))))
    got = _numpy(_sequence(_predict(conditional, _batch(backbone, condition=True))))
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, expected, rtol=0, atol=0.05)


def test_layers_picks_a_subset_and_bad_arguments_name_themselves(bert):
    conditional = hub.swap_in_conditional_layer_norm(bert, COND, layers=["embeddings_layer_norm"])
    assert conditional.conditioned_layers == ["embeddings_layer_norm"]
    with pytest.raises(ValueError, match="`layers`"):
        hub.swap_in_conditional_layer_norm(bert, COND, layers=["no_such_layer"])
    with pytest.raises(TypeError, match="`layers`"):
        hub.swap_in_conditional_layer_norm(bert, COND, layers="embeddings_layer_norm")
    with pytest.raises(ValueError, match="`condition_dim`"):
        hub.swap_in_conditional_layer_norm(bert, 0)
    with pytest.raises(TypeError, match="`backbone`"):
        hub.swap_in_conditional_layer_norm(keras.layers.Dense(3), COND)
    with pytest.raises(ValueError, match="no normalisation layer"):
        hub.swap_in_conditional_layer_norm(keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)]), COND)
    with pytest.raises(ValueError, match="'condition'"):
        conditional(_batch(bert))
    wrong = _batch(bert, condition=True)
    wrong["condition"] = np.zeros((2, COND + 1), "float32")
    with pytest.raises(ValueError, match="condition_dim=8"):
        conditional(wrong)
    with pytest.raises(ValueError, match="sequence_output"):
        hub.masked_sequence({"pooled_output": None}, None)
