"""CAN against a float64 NumPy transcription of the published algorithm (the
loop of Su's post, one uncertain sample at a time), a hand-computed case, and
its properties."""

import math

import numpy as np
import pytest

from keras_tricks.postprocessing import CANPredictor, can_normalize, class_prior, top_k_uncertainty


def _reference_can(y_pred, prior, threshold, k, alpha, iters):
    """The post's code, written out: one matrix per uncertain sample."""
    y_pred = np.asarray(y_pred, np.float64)
    out = y_pred.copy()
    unc = []
    for row in y_pred:
        top = np.sort(row)[-k:]
        top = top / top.sum()
        unc.append(-sum(t * math.log(t) for t in top if t > 0) / math.log(k))
    unc = np.array(unc)
    confident = y_pred[unc < threshold]
    for i in np.flatnonzero(unc >= threshold):
        mat = np.concatenate([confident, y_pred[i][None]], axis=0)
        for _ in range(iters):
            mat = mat**alpha
            mat = mat / mat.sum(axis=0, keepdims=True)
            mat = mat * np.asarray(prior)[None]
            mat = mat / mat.sum(axis=1, keepdims=True)
        out[i] = mat[-1]
    return out


def _random_probs(rng, n, m, sharpness=3.0):
    logits = rng.normal(size=(n, m)) * sharpness
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.mark.parametrize("alpha,iters,threshold,k", [(1.0, 1, 0.9, 3), (2.0, 3, 0.7, 2), (0.5, 5, 0.5, 4)])
def test_matches_reference(alpha, iters, threshold, k):
    rng = np.random.default_rng(0)
    probs = _random_probs(rng, 200, 6)
    prior = class_prior(rng.integers(0, 6, size=500), 6)
    got = can_normalize(probs, prior, threshold=threshold, top_k=k, alpha=alpha, iters=iters)
    want = _reference_can(probs, prior, threshold, k, alpha, iters)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    assert not np.array_equal(got, probs)  # the case does modify some rows


def test_chunking_gives_the_same_result(monkeypatch):
    from keras_tricks.postprocessing import can as can_module

    rng = np.random.default_rng(1)
    probs = _random_probs(rng, 120, 5, sharpness=1.5)
    prior = np.full(5, 0.2)
    whole = can_normalize(probs, prior, iters=2, top_k=3, threshold=0.8)
    monkeypatch.setattr(can_module, "_CHUNK_ELEMENTS", 7)
    np.testing.assert_array_equal(can_normalize(probs, prior, iters=2, top_k=3, threshold=0.8), whole)


def test_hand_computed_three_classes():
    # Rows 0 and 1 are confident (top-3 uncertainty 0.10 and 0.13), row 2 is
    # not (0.98). Column sums of the stacked matrix [row0; row1; row2]:
    # c = (0.98 + 0.97 + 0.4, 0.01 + 0.02 + 0.35, 0.01 + 0.01 + 0.25).
    probs = np.array([[0.98, 0.01, 0.01], [0.97, 0.02, 0.01], [0.4, 0.35, 0.25]])
    ratio = np.array([0.4 / 2.35, 0.35 / 0.38, 0.25 / 0.27])
    uniform = can_normalize(probs, [1 / 3, 1 / 3, 1 / 3], threshold=0.9, top_k=3)
    np.testing.assert_allclose(uniform[2], ratio / ratio.sum(), rtol=1e-13)
    assert uniform[2].argmax() == 2  # the confident rows all said class 0
    prior = np.array([0.5, 0.25, 0.25])
    skewed = can_normalize(probs, prior, threshold=0.9, top_k=3)
    np.testing.assert_allclose(skewed[2], prior * ratio / (prior * ratio).sum(), rtol=1e-13)
    np.testing.assert_allclose(
        skewed[2], [0.155630, 0.421071, 0.423299], atol=1e-6
    )  # 0.0851064 / 0.5468511, ...
    np.testing.assert_array_equal(skewed[:2], probs[:2])


def test_properties():
    rng = np.random.default_rng(2)
    probs = _random_probs(rng, 300, 8, sharpness=1.0).astype(np.float32)
    prior = class_prior(rng.integers(0, 8, size=1000), 8)
    out = can_normalize(probs, prior, threshold=0.6, top_k=3, alpha=1.5, iters=4)
    assert out.dtype == np.float32 and out.shape == probs.shape
    np.testing.assert_allclose(out.sum(1), 1.0, atol=1e-6)
    assert np.all(out >= 0)
    confident = top_k_uncertainty(probs, 3) < 0.6
    assert confident.any() and (~confident).any()
    np.testing.assert_array_equal(out[confident], probs[confident])  # bit for bit


def test_uniform_prior_alpha_one_one_iteration_is_division_by_column_mass():
    # Derivation: with prior 1/m, alpha = 1, one iteration, the last row is
    # y_j / c_j * (1/m), renormalised, where c_j = y_j + sum_i A_ij.
    rng = np.random.default_rng(3)
    probs = _random_probs(rng, 50, 4, sharpness=2.0)
    unc = top_k_uncertainty(probs, 2)
    confident = probs[unc < 0.8]
    out = can_normalize(probs, np.full(4, 0.25), threshold=0.8, top_k=2)
    for i in np.flatnonzero(unc >= 0.8):
        y = probs[i]
        r = y / (confident.sum(0) + y)
        np.testing.assert_allclose(out[i], r / r.sum(), rtol=1e-12)


def test_reference_set_and_no_confident_rows():
    rng = np.random.default_rng(4)
    probs = _random_probs(rng, 20, 3, sharpness=0.1)  # all uncertain
    prior = np.full(3, 1 / 3)
    np.testing.assert_array_equal(can_normalize(probs, prior, threshold=0.5), probs)
    reference = _random_probs(rng, 40, 3, sharpness=6.0)
    out = can_normalize(probs, prior, reference=reference, threshold=0.5)
    stacked = np.concatenate([reference, probs])
    want = _reference_can(stacked, prior, 0.5, 3, 1.0, 1)[len(reference) :]
    # Every row of `probs` is uncertain, so the reference's confident rows
    # are exactly the confident rows of the stacked batch.
    np.testing.assert_allclose(out, want, rtol=1e-12)


def test_uncertainty_and_prior():
    u = top_k_uncertainty([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0.0]], top_k=3)
    np.testing.assert_allclose(u, [0.0, 1.0, math.log(2) / math.log(3)], rtol=1e-14)
    np.testing.assert_allclose(class_prior([0, 2, 2], 3, pseudo_count=1), [2 / 6, 1 / 6, 3 / 6])


def test_predictor_matches_function():
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4)])
    x = np.random.default_rng(5).normal(size=(64, 5)).astype("float32") * 3
    prior = np.array([0.4, 0.3, 0.2, 0.1])
    can = CANPredictor(model, prior, threshold=0.7, top_k=2, from_logits=True, iters=2)
    logits = np.asarray(model.predict(x, verbose=0), np.float64)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    want = _reference_can(probs, prior, 0.7, 2, 1.0, 2)
    np.testing.assert_allclose(can.predict(x), want, rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(can.predict_classes(x), want.argmax(1))


@pytest.mark.parametrize(
    "kwargs,error,name",
    [
        (dict(probs=[[0.5, 0.6]]), ValueError, "probs"),
        (dict(probs=[[1.2, -0.2]]), ValueError, "probs"),
        (dict(probs=[[2.0, 3.0]]), ValueError, "probs"),
        (dict(probs=[0.5, 0.5]), ValueError, "probs"),
        (dict(probs=[["a", "b"]]), TypeError, "probs"),
        (dict(probs=[[np.nan, 1.0]]), ValueError, "probs"),
        (dict(prior=[0.5, 0.5]), ValueError, "prior"),
        (dict(prior=[1.0, 0.0, 0.0]), ValueError, "prior"),
        (dict(prior=[0.5, 0.6, -0.1]), ValueError, "prior"),
        (dict(threshold=0.0), ValueError, "threshold"),
        (dict(threshold=1.5), ValueError, "threshold"),
        (dict(threshold="0.9"), TypeError, "threshold"),
        (dict(top_k=4), ValueError, "top_k"),
        (dict(top_k=1), ValueError, "top_k"),
        (dict(top_k=2.0), TypeError, "top_k"),
        (dict(alpha=0.0), ValueError, "alpha"),
        (dict(iters=0), ValueError, "iters"),
        (dict(iters=True), TypeError, "iters"),
        (dict(reference=[[0.5, 0.5]]), ValueError, "reference"),
    ],
)
def test_bad_input(kwargs, error, name):
    args = dict(probs=[[0.8, 0.1, 0.1], [0.4, 0.3, 0.3]], prior=[0.4, 0.3, 0.3])
    args.update(kwargs)
    probs, prior = args.pop("probs"), args.pop("prior")
    with pytest.raises(error, match=f"`{name}`"):
        can_normalize(probs, prior, **args)


def test_bad_predictor_and_prior_arguments():
    with pytest.raises(TypeError, match="`model`"):
        CANPredictor(object(), [0.5, 0.5])
    with pytest.raises(TypeError, match="`from_logits`"):
        CANPredictor(type("M", (), {"predict": lambda *a, **k: None})(), [0.5, 0.5], from_logits=1)
    with pytest.raises(ValueError, match="`labels`"):
        class_prior([0, 3], 3)
    with pytest.raises(TypeError, match="`labels`"):
        class_prior([0.0, 1.0], 3)
