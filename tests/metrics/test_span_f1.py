"""SpanF1 / SpanPrecision / SpanRecall: counts against a hand-written Python
span-set reference, accumulation across batches, sparse labels, harness."""

import numpy as np
import pytest

from keras_tricks import _numerics, losses, metrics, testing

MASK = _numerics.mask_value("float32")


def _case(seed=0, b=6, h=2, n=5):
    rng = np.random.default_rng(seed)
    s = rng.normal(size=(b, h, n, n)).astype("float32") - 0.8
    upper = np.triu(np.ones((n, n), bool))
    s = np.where(upper, s, MASK).astype("float32")
    true = (rng.random((b, h, n, n)) < 0.15) & upper
    # make some predictions right
    s = np.where(true & (rng.random(true.shape) < 0.6), np.abs(s) + 0.5, s).astype("float32")
    return true.astype("float32"), s


def _expected(true, scores, threshold=0.0):
    # Independent reference: sets of (sample, type, start, end) tuples.
    gold = {tuple(i) for i in np.argwhere(true > 0.5)}
    pred = set()
    for b, h, i, j in np.ndindex(*scores.shape):
        if scores[b, h, i, j] > threshold:
            pred.add((b, h, i, j))
    tp, fp, fn = len(gold & pred), len(pred - gold), len(gold - pred)
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    return p, r, f1


@pytest.mark.harness
@pytest.mark.parametrize(
    "cls,index", [(metrics.SpanF1, 2), (metrics.SpanPrecision, 0), (metrics.SpanRecall, 1)]
)
def test_span_metrics_through_harness(cls, index):
    true, s = _case()
    expected = _expected(true, s)
    assert 0.2 < expected[index] < 0.95  # a non-trivial case
    checks = testing.METRIC_CHECKS if cls is metrics.SpanF1 else ("call", "serialization")
    testing.check_metric(cls, {}, true, s, expected=expected[index], checks=checks)


def test_micro_counts_are_not_batch_averages():
    true, s = _case(seed=1)
    f1 = metrics.SpanF1()
    batch_f1 = []
    for k in range(0, 6, 2):
        f1.update_state(true[k : k + 2], s[k : k + 2])
        batch_f1.append(_expected(true[k : k + 2], s[k : k + 2])[2])
    got = float(testing.to_numpy(f1.result()))
    np.testing.assert_allclose(got, _expected(true, s)[2], rtol=1e-6)
    assert abs(got - np.mean(batch_f1)) > 1e-4  # the case tells them apart


def test_threshold_and_sparse_labels():
    true, s = _case(seed=2)
    spans = np.full(true.shape[:2] + (8, 2), losses.SPAN_PADDING, "int32")
    for b, h in np.ndindex(*true.shape[:2]):
        for r, (i, j) in enumerate(np.argwhere(true[b, h] > 0.5)):
            spans[b, h, r] = (i, j)
    for threshold in (0.0, 0.7):
        dense = metrics.SpanF1(threshold=threshold)
        sparse = metrics.SpanF1(threshold=threshold, sparse=True)
        dense.update_state(true, s)
        sparse.update_state(spans, s)
        expected = _expected(true, s, threshold)[2]
        np.testing.assert_allclose(testing.to_numpy(dense.result()), expected, rtol=1e-6)
        np.testing.assert_allclose(testing.to_numpy(sparse.result()), expected, rtol=1e-6)


def test_empty_is_zero_and_bad_input():
    f1 = metrics.SpanF1()
    assert float(testing.to_numpy(f1.result())) == 0.0
    with pytest.raises(ValueError, match="y_pred"):
        f1.update_state(np.zeros((2, 3)), np.zeros((2, 3), "float32"))
    with pytest.raises(TypeError, match="threshold"):
        metrics.SpanF1(threshold="high")


def test_sparse_metric_in_compiled_model_with_sparse_loss():
    import keras

    from keras_tricks import layers

    tokens = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(12, 8, mask_zero=True)(tokens)
    model = keras.Model(tokens, layers.GlobalPointer(2, 4)(x))
    model.compile(
        "adam",
        losses.SparseGlobalPointerCrossentropy(),
        metrics=[metrics.SpanF1(sparse=True), metrics.SpanRecall(sparse=True)],
    )
    rng = np.random.default_rng(0)
    tok = rng.integers(1, 12, size=(6, 5)).astype("int32")
    spans = np.full((6, 2, 2, 2), -1, "int32")
    spans[:, 0, 0] = (0, 1)
    model.fit(tok, spans, epochs=1, batch_size=3, verbose=0)
    logs = model.evaluate(tok, spans, batch_size=3, verbose=0, return_dict=True)
    scores = model.predict(tok, verbose=0)
    dense = np.zeros(scores.shape)
    dense[:, 0, 0, 1] = 1
    np.testing.assert_allclose(logs["span_f1"], _expected(dense, scores)[2], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(logs["span_recall"], _expected(dense, scores)[1], rtol=1e-5, atol=1e-6)
