"""demos/attention_length.py: packing, the entropy measure, the three
attention modes against a float64 reference, and a smoke run (TF only)."""

import importlib.util
import os
import sys

import keras
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def demo():
    sys.path.insert(0, os.path.join(ROOT, "demos"))
    path = os.path.join(ROOT, "demos", "attention_length.py")
    spec = importlib.util.spec_from_file_location("attention_length_demo", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pack_keeps_whole_sentences_and_rebases_spans(demo):
    S = demo.ner.Sentence
    sents = [
        S(["a", "b"], [(0, 1, "X")], 0),
        S(["c", "d", "e"], [(2, 2, "Y")], 0),
        S(list("fghij"), [(3, 4, "Z")], 0),
    ]
    windows = demo.pack(sents, 5)
    assert windows == [
        (["a", "b", "c", "d", "e"], [(0, 1, "X"), (4, 4, "Y")]),
        (list("fghij"), [(3, 4, "Z")]),
    ]
    # A sentence longer than the window is cut; its spans past the cut are dropped.
    assert demo.pack(sents[2:], 4) == [(list("fghi"), [])]


def test_row_entropy_against_hand_computed(demo):
    p = np.zeros((1, 1, 3, 3))
    p[0, 0, 0] = [0.5, 0.5, 0.0]  # log 2
    p[0, 0, 1] = [1.0, 0.0, 0.0]  # 0
    p[0, 0, 2] = [1 / 3, 1 / 3, 1 / 3]  # a padding query: not counted
    words = np.array([[5, 7, 0]])
    np.testing.assert_allclose(demo.row_entropy(p, words), np.log(2) / 2)


def _reference_attention(x, words, block, log_n=None, target=None):
    """Float64 attention probabilities of `block` (one head per width slice)."""
    w, b = (np.asarray(keras.ops.convert_to_numpy(v), np.float64) for v in block.qkv.weights)
    qkv = x.astype(np.float64) @ w + b
    bsz, n, _ = x.shape
    hd = block.width // block.heads
    q, k, _ = np.split(qkv.reshape(bsz, n, 3, block.heads, hd), 3, axis=2)
    logits = np.einsum("bqhd,bkhd->bhqk", q[:, :, 0], k[:, :, 0]) / np.sqrt(hd)
    valid = words != 0
    if log_n:
        count = np.maximum(valid.sum(-1), 1)[:, None, None, None]
        logits = logits * np.log(count) / np.log(log_n)
    logits = np.where(valid[:, None, None, :], logits, -np.inf)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return p


@pytest.mark.parametrize("mode", ["plain", "log_n", "entropy"])
def test_attention_modes_match_float64(demo, mode):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 6, 8)).astype("float32")
    words = np.array([[3, 4, 5, 6, 0, 0], [1, 2, 3, 4, 5, 6]], "int32")
    log_n = 4 if mode == "log_n" else None
    target = 0.8 if mode == "entropy" else None
    block = demo.AttentionBlock(8, 2, log_n_length=log_n, entropy_target=target, name="block_0")
    inputs = [keras.Input((None, 8)), keras.Input((None,), dtype="int32")]
    model = keras.Model(inputs, block(inputs))
    _, found = demo.intermediates.capture(model, [x, words])
    got = found["block_0/attention"][0]
    want = _reference_attention(x, words, block, log_n=log_n)
    valid = np.broadcast_to((words != 0)[:, None, :, None], got.shape[:3] + (1,))[..., 0]
    if mode == "entropy":
        # Every valid row has the target entropy and keeps the order of the plain row.
        h = -(got * np.log(np.where(got > 0, got, 1.0))).sum(-1)
        np.testing.assert_allclose(h[valid], target, atol=1e-3)
        order_got = np.argsort(got[valid], -1)
        order_want = np.argsort(want[valid], -1)
        np.testing.assert_array_equal(order_got[..., -2:], order_want[..., -2:])
    else:
        np.testing.assert_allclose(got[valid], want[valid], rtol=1e-4, atol=1e-6)
    # Padded keys get no weight.
    assert np.all(got[0, :, :, 4:] == 0)


def test_bad_flags_are_refused(demo):
    for flags in (["--lengths", "0,32"], ["--seeds", "x"], ["--train-length", "1"]):
        with pytest.raises(SystemExit):
            demo.main(flags)


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="demo test runs on TF only")
def test_smoke_run(demo, tmp_path):
    table = demo.main(["--smoke", "--out", str(tmp_path)])
    assert (tmp_path / "attention_length.png").exists()
    assert set(table) == {(m, n) for m in demo.MODES for n in (16, 64)}
    for f1, sd, h in table.values():
        assert 0.0 <= f1 <= 1.0 and sd == 0.0 and np.isfinite(h).all()
    # Entropy normalisation holds the entropy at the training-length value at every length.
    np.testing.assert_allclose(table[("entropy", 64)][2], table[("entropy", 16)][2], atol=0.05)
    # Without it, attending over 4x more keys spreads the attention.
    assert table[("plain", 64)][2][1] > table[("plain", 16)][2][1]
