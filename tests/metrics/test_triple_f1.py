"""TripleF1 / TriplePrecision / TripleRecall against brute-force decoding and
the host `triple_prf`; accumulation, harness, a compiled GPLinker model."""

import keras
import numpy as np
import pytest

from keras_tricks import _numerics, layers, losses, metrics, spans, testing
from tests.spans.test_relations import _brute_force, _label_scores, _random_scores

MASK = _numerics.mask_value("float32")


def _case(seed=0, batch=6, relations=2, n=6):
    rng = np.random.default_rng(seed)
    gold = []
    for _ in range(batch):
        ents = [(int(a), int(a + rng.integers(0, 2))) for a in rng.choice(n - 1, size=3, replace=False)]
        gold.append(
            sorted({(ents[i], int(rng.integers(relations)), ents[j]) for i, j in rng.integers(0, 3, (2, 2))})
        )
    labels = spans.triples_to_sparse_labels(gold, relations)
    # A model right on most labels, with noise elsewhere.
    perfect = _label_scores(labels, n)
    noise = _random_scores(seed + 10, batch, relations, n, p=0.3)
    s = np.where(rng.random(perfect.shape) < 0.8, perfect, noise)
    s[:, :2] = np.where(np.triu(np.ones((n, n), bool)), s[:, :2], MASK)
    return gold, labels, s.astype("float32")


def _expected(labels, s, threshold=0.0):
    # Gold = triples the labels admit (brute force on the label indicators).
    n = s.shape[-1]
    ref = np.where(_label_scores(labels, n) > 0, 1.0, -1.0)
    ref[:, :2] = np.where(s[:, :2] == MASK, -1.0, ref[:, :2])
    return metrics.triple_prf(_brute_force(ref), _brute_force(s, threshold))


@pytest.mark.harness
@pytest.mark.parametrize(
    "cls,index", [(metrics.TripleF1, 2), (metrics.TriplePrecision, 0), (metrics.TripleRecall, 1)]
)
def test_triple_metrics_through_harness(cls, index):
    _, labels, s = _case()
    expected = _expected(labels, s)
    assert 0.2 < expected[index] < 0.95
    checks = testing.METRIC_CHECKS if cls is metrics.TripleF1 else ("call", "serialization")
    testing.check_metric(cls, {}, labels, s, expected=expected[index], checks=checks)


@pytest.mark.parametrize("threshold", [0.0, 0.5])
def test_matches_host_decoding_and_accumulates(threshold):
    gold, labels, s = _case(seed=1)
    f1, p, r = (
        metrics.TripleF1(threshold),
        metrics.TriplePrecision(threshold),
        metrics.TripleRecall(threshold),
    )
    for k in range(0, 6, 2):
        for m in (f1, p, r):
            m.update_state(labels[k : k + 2], s[k : k + 2])
    expected = _expected(labels, s, threshold)
    got = [float(testing.to_numpy(m.result())) for m in (p, r, f1)]
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    # Unambiguous gold here: the same figure as decode + triple_prf on the
    # annotated triples.
    host = metrics.triple_prf(gold, spans.decode_triples(s, threshold))
    np.testing.assert_allclose(got, host, rtol=1e-6)


def test_empty_and_bad_input():
    f1 = metrics.TripleF1()
    assert float(testing.to_numpy(f1.result())) == 0.0
    with pytest.raises(ValueError, match="2 \\+ 2"):
        f1.update_state(np.full((1, 3, 1, 2), -1), np.zeros((1, 3, 4, 4), "float32"))
    with pytest.raises(ValueError, match="y_true"):
        f1.update_state(np.full((1, 4, 4, 4), -1), np.zeros((1, 4, 4, 4), "float32"))
    with pytest.raises(ValueError, match="sample_weight"):
        f1.update_state(np.full((1, 4, 1, 2), -1), np.zeros((1, 4, 4, 4), "float32"), sample_weight=1.0)
    with pytest.raises(TypeError, match="threshold"):
        metrics.TripleF1(threshold="high")
    with pytest.raises(ValueError, match="padding"):
        metrics.TripleF1(padding=0)


def test_triple_prf_by_hand():
    assert metrics.triple_prf([set()], [set()]) == (0.0, 0.0, 0.0)
    assert metrics.triple_prf([{1, 2, 3}], [{1, 4}]) == (0.5, 1 / 3, 0.4)
    with pytest.raises(ValueError, match="sentences"):
        metrics.triple_prf([set()], [])


def test_compiled_gplinker_model_reports_host_figure():
    tokens = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(20, 8, mask_zero=True)(tokens)
    model = keras.Model(tokens, layers.GPLinkerHeads(2, 4)(x))
    model.compile(
        "adam",
        losses.SparseGlobalPointerCrossentropy(tril_mask=False),
        metrics=[metrics.TripleF1(), metrics.TripleRecall()],
    )
    rng = np.random.default_rng(0)
    tok = rng.integers(1, 20, size=(8, 6)).astype("int32")
    tok[4:, 4:] = 0  # padded samples
    gold = [[((0, 1), 0, (3, 3)), ((3, 3), 1, (0, 0))]] * 8
    labels = spans.triples_to_sparse_labels(gold, 2)
    model.fit(tok, labels, epochs=3, batch_size=4, verbose=0)
    logs = model.evaluate(tok, labels, batch_size=4, verbose=0, return_dict=True)
    pred = spans.decode_triples(model.predict(tok, verbose=0))
    np.testing.assert_allclose(logs["triple_f1"], metrics.triple_prf(gold, pred)[2], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(logs["triple_recall"], metrics.triple_prf(gold, pred)[1], rtol=1e-5, atol=1e-6)
