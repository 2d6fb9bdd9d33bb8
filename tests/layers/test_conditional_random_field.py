"""ConditionalRandomField, the in-graph CRF algorithms and CRFLoss against
brute-force float64 enumeration of all K^L paths, finite differences, and a
NumPy re-implementation of bert4keras 0.11's published CRF algorithm."""

import itertools

import keras
import numpy as np
import pytest
from keras import ops

from keras_tricks import _backend, layers, losses, spans, testing
from keras_tricks.layers import crf_ops

K = 3


def _problem(seed=0, batch=4, n=5, k=K):
    rng = np.random.default_rng(seed)
    e = rng.normal(size=(batch, n, k))
    trans = rng.normal(size=(k, k))
    start, end = rng.normal(size=k), rng.normal(size=k)
    mask = rng.random((batch, n)) < 0.7
    mask[0] = True
    mask[-1] = False  # an all-padding row
    tags = np.where(mask, rng.integers(0, k, (batch, n)), -1)
    return e, trans, start, end, mask, tags


def _brute(e, trans, start, end, mask):
    """log Z, best path, marginals and path scores by enumeration, float64."""
    out = []
    for b in range(e.shape[0]):
        idx = np.flatnonzero(mask[b])
        if not len(idx):
            out.append((0.0, np.full(e.shape[1], -1), np.zeros(e.shape[1:]), {}))
            continue
        scores = {}
        for p in itertools.product(range(e.shape[2]), repeat=len(idx)):
            s = start[p[0]] + end[p[-1]] + sum(e[b, i, y] for i, y in zip(idx, p))
            scores[p] = s + sum(trans[a, c] for a, c in zip(p[:-1], p[1:]))
        v = np.array(list(scores.values()))
        log_z = v.max() + np.log(np.exp(v - v.max()).sum())
        best = np.full(e.shape[1], -1)
        best[idx] = max(scores, key=scores.get)
        marg = np.zeros(e.shape[1:])
        for p, s in scores.items():
            marg[idx, list(p)] += np.exp(s - log_z)
        out.append((log_z, best, marg, scores))
    return out


def _np(x):
    return ops.convert_to_numpy(x)


def _f32(*xs):
    return [ops.convert_to_tensor(np.float32(x)) for x in xs]


@pytest.mark.parametrize("boundaries", [False, True])
def test_against_brute_force(boundaries):
    e, trans, start, end, mask, tags = _problem()
    if not boundaries:
        start, end = np.zeros(K), np.zeros(K)
    ref = _brute(e, trans, start, end, mask)
    te, tt, ts, tn = _f32(e, trans, start, end)
    args = (tt, mask, ts, tn) if boundaries else (tt, mask)
    log_z = _np(crf_ops.crf_log_partition(te, *args))
    path = _np(crf_ops.viterbi_decode(te, *args))
    marg = _np(crf_ops.crf_marginals(te, *args))
    nll = _np(crf_ops.crf_nll(te, tags, *args))
    for b, (rz, rpath, rmarg, scores) in enumerate(ref):
        np.testing.assert_allclose(log_z[b], rz, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(path[b], rpath)
        np.testing.assert_allclose(marg[b], rmarg, atol=1e-5)
        gold = tuple(tags[b][mask[b]])
        expected = rz - scores[gold] if gold else 0.0
        np.testing.assert_allclose(nll[b], expected, rtol=1e-5, atol=1e-5)
    # Marginals sum to 1 at valid positions, 0 at padding.
    np.testing.assert_allclose(marg.sum(-1), mask.astype(float), atol=1e-5)
    host = spans.viterbi_decode_numpy(e, trans, mask, *((start, end) if boundaries else ()))
    np.testing.assert_array_equal(host, path)


def test_padding_never_changes_valid_positions():
    e, trans, start, end, mask, tags = _problem(seed=1, batch=2, n=4)
    mask[:] = True
    garbage = np.random.default_rng(9).normal(scale=100, size=(2, 3, K))
    # Padding appended, prepended and inserted, with garbage emissions.
    padded = np.concatenate([garbage[:, :1], e[:, :2], garbage[:, 1:2], e[:, 2:], garbage[:, 2:]], 1)
    pmask = np.concatenate(
        [np.zeros((2, 1)), mask[:, :2], np.zeros((2, 1)), mask[:, 2:], np.zeros((2, 1))], 1
    )
    pmask = pmask.astype(bool)
    ptags = np.full(pmask.shape, -1)
    ptags[pmask] = tags[mask]
    for fn in (crf_ops.crf_log_partition,):
        a = _np(fn(*_f32(e, trans), mask))
        b = _np(fn(*_f32(padded, trans), pmask))
        np.testing.assert_allclose(a, b, rtol=1e-6)
    nll = _np(crf_ops.crf_nll(*_f32(e), tags, *_f32(trans), mask))
    b = _np(crf_ops.crf_nll(*_f32(padded), ptags, *_f32(trans), pmask))
    np.testing.assert_allclose(nll, b, rtol=1e-6)
    a = _np(crf_ops.viterbi_decode(*_f32(e, trans), mask))
    b = _np(crf_ops.viterbi_decode(*_f32(padded, trans), pmask))
    np.testing.assert_array_equal(a[mask], b[pmask])
    assert (b[~pmask] == -1).all()
    # The layer's sentinel carries the same information as the mask.
    crf = layers.ConditionalRandomField()
    out = crf(ops.convert_to_tensor(np.float32(padded)), mask=ops.convert_to_tensor(pmask))
    crf.set_weights([np.float32(trans)])
    np.testing.assert_allclose(_np(losses.CRFLoss(crf, reduction=None)(ptags, out)), nll, rtol=1e-6)
    np.testing.assert_array_equal(_np(crf.viterbi_decode(out)), b)


@pytest.mark.parametrize("n", [0, 1])
def test_lengths_zero_and_one(n):
    e, trans, start, end, _, _ = _problem(batch=2, n=max(n, 1))
    e = e[:, :n]
    mask = np.ones((2, n), bool)
    tags = np.zeros((2, n), int)
    nll = _np(crf_ops.crf_nll(*_f32(e), tags, *_f32(trans), mask, *_f32(start, end)))
    path = _np(crf_ops.viterbi_decode(*_f32(e, trans), mask, *_f32(start, end)))
    marg = _np(crf_ops.crf_marginals(*_f32(e, trans), mask, *_f32(start, end)))
    assert np.isfinite(nll).all() and path.shape == (2, n) and marg.shape == (2, n, K)
    if n == 0:
        np.testing.assert_array_equal(nll, 0.0)
    else:
        ref = _brute(e, trans, start, end, mask)
        for b in range(2):
            np.testing.assert_allclose(nll[b], ref[b][0] - ref[b][3][(0,)], rtol=1e-5)
            np.testing.assert_array_equal(path[b], ref[b][1])


def test_gradient_against_finite_differences():
    # The in-graph gradient against central differences of the float64
    # brute-force NLL (log Z minus the gold path's score): independent of our
    # code and fast enough to difference every entry.
    e, trans, start, end, mask, tags = _problem(seed=3, batch=2, n=4)
    zeros = np.zeros(K)

    def nll64(ev, tv):
        total = 0.0
        for b, (log_z, _, _, scores) in enumerate(_brute(ev, tv, zeros, zeros, mask)):
            idx = np.flatnonzero(mask[b])
            if len(idx):
                total += log_z - scores[tuple(tags[b, idx])]
        return total

    value, grads = testing.value_and_grad(
        lambda a, b: ops.sum(crf_ops.crf_nll(a, tags, b, mask)), *_f32(e, trans)
    )
    np.testing.assert_allclose(_np(value), nll64(e, trans), rtol=1e-5)
    eps = 1e-5
    for arr, g, which in ((e, grads[0], 0), (trans, grads[1], 1)):
        num = np.zeros_like(arr)
        for i in np.ndindex(arr.shape):
            d = np.zeros_like(arr)
            d[i] = eps
            args_p = (e + d, trans) if which == 0 else (e, trans + d)
            args_m = (e - d, trans) if which == 0 else (e, trans - d)
            num[i] = (nll64(*args_p) - nll64(*args_m)) / (2 * eps)
        np.testing.assert_allclose(_np(g), num, atol=1e-4)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_finite(policy):
    e, trans, start, end, mask, tags = _problem(seed=4)
    mask[1, :] = False
    mask[2, 1:] = False  # length 1
    tags = np.where(mask, np.maximum(tags, 0), -1)
    crf = layers.ConditionalRandomField(dtype=policy, use_boundary_transitions=True)

    def fn(x):
        out = crf(x, mask=ops.convert_to_tensor(mask))
        return ops.sum(losses.CRFLoss(crf, reduction=None)(tags, out))

    value, grads = testing.value_and_grad(fn, *_f32(e * 30))
    assert np.isfinite(_np(value)) and np.isfinite(_np(grads[0])).all()
    out = crf(*_f32(e * 30), mask=ops.convert_to_tensor(mask))
    assert keras.backend.standardize_dtype(out.dtype) == policy.split("_")[1]
    assert np.isfinite(_np(crf.marginals(out))).all()
    assert (_np(crf.viterbi_decode(out))[~mask] == -1).all()


def _bert4keras_loss(e, trans, mask, tags):
    """bert4keras 0.11 ConditionalRandomField.sparse_loss, re-implemented from
    the published algorithm: padded emissions -inf, target score from one-hot
    tags zeroed at padding, log Z by a recursion that carries the state
    through padding (right padding)."""
    k = trans.shape[0]
    y = np.eye(k)[np.maximum(tags, 0)] * mask[..., None]
    pred = np.where(mask[..., None], e, 0.0)
    target = np.einsum("bni,bni->b", y, pred) + np.einsum("bni,ij,bnj->b", y[:, :-1], trans, y[:, 1:])
    state = pred[:, 0]
    for t in range(1, e.shape[1]):
        s = state[:, :, None] + trans[None]
        new = np.log(np.exp(s - s.max(1, keepdims=True)).sum(1)) + s.max(1) + pred[:, t]
        state = np.where(mask[:, t : t + 1], new, state)
    log_z = np.log(np.exp(state - state.max(1, keepdims=True)).sum(1)) + state.max(1)
    return log_z - target


def _bert4keras_viterbi(nodes, trans):
    """bert4keras snippets.ViterbiDecoder.decode (no start/end constraints)."""
    labels = np.arange(len(trans)).reshape((1, -1))
    scores, paths = nodes[0].reshape((-1, 1)), labels
    for t in range(1, len(nodes)):
        m = scores + trans + nodes[t].reshape((1, -1))
        idxs = m.argmax(0)
        scores = m.max(0).reshape((-1, 1))
        paths = np.concatenate([paths[:, idxs], labels], 0)
    return paths[:, scores[:, 0].argmax()]


@pytest.mark.parametrize("lr_multiplier", [1.0, 100.0])
def test_bert4keras_weights_load(lr_multiplier):
    rng = np.random.default_rng(5)
    e = rng.normal(size=(3, 6, 4))
    lengths = [6, 4, 1]
    mask = np.arange(6)[None] < np.array(lengths)[:, None]
    tags = np.where(mask, rng.integers(0, 4, (3, 6)), -1)
    effective = rng.normal(size=(4, 4))
    stored = effective / lr_multiplier  # what bert4keras keeps in `trans`
    crf = layers.ConditionalRandomField(lr_multiplier=lr_multiplier)
    out = crf(*_f32(e), mask=ops.convert_to_tensor(mask))
    assert [w.name for w in crf.weights] == ["trans"]
    crf.set_weights([np.float32(stored)])
    got = _np(losses.CRFLoss(crf, reduction=None)(tags, out))
    np.testing.assert_allclose(got, _bert4keras_loss(e, effective, mask, tags), rtol=1e-5, atol=1e-5)
    paths = _np(crf.viterbi_decode(out))
    for b, n in enumerate(lengths):
        np.testing.assert_array_equal(paths[b, :n], _bert4keras_viterbi(e[b, :n], effective))


def test_bad_input():
    with pytest.raises(ValueError, match="lr_multiplier"):
        layers.ConditionalRandomField(lr_multiplier=0.0)
    with pytest.raises(TypeError, match="lr_multiplier"):
        layers.ConditionalRandomField(lr_multiplier="1")
    with pytest.raises(ValueError, match="num_tags"):
        layers.ConditionalRandomField(num_tags=3)(np.zeros((1, 2, 4), "float32"))
    crf = layers.ConditionalRandomField()
    with pytest.raises(ValueError, match="`mask`"):
        crf(np.zeros((1, 2, 4), "float32"), mask=np.ones((1, 3), bool))
    out = crf(np.zeros((1, 2, 4), "float32"))
    with pytest.raises(ValueError):
        crf.set_weights([np.zeros((3, 3), "float32")])
    loss = losses.CRFLoss(crf)
    with pytest.raises(ValueError, match="y_true"):
        loss(np.array([[0, 4]]), out)
    with pytest.raises(ValueError, match="y_true"):
        loss(np.array([[0, 1, 2]]), out)
    with pytest.raises(TypeError, match="crf"):
        losses.CRFLoss("crf")
    with pytest.raises(ValueError, match="transitions"):
        crf_ops.viterbi_decode(out, np.zeros((3, 3), "float32"))
    with pytest.raises(ValueError, match="mask"):
        crf_ops.crf_log_partition(out, np.zeros((4, 4), "float32"), np.ones((2, 2), bool))


def _tagger(num_tags=5, lr_multiplier=1.0):
    tokens = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(20, 16, mask_zero=True)(tokens)
    crf = layers.ConditionalRandomField(lr_multiplier=lr_multiplier, name="crf")
    model = keras.Model(tokens, crf(keras.layers.Dense(num_tags)(x)))
    return model, crf


def _toy(n=64, seed=0):
    """Tag = token's class, but a token 3 after a token 2 takes tag 4."""
    rng = np.random.default_rng(seed)
    x = rng.integers(1, 8, (n, 7))
    lengths = rng.integers(2, 8, n)
    x[np.arange(7)[None] >= lengths[:, None]] = 0
    y = np.where(x > 0, x % 4, -1)
    follow = (x[:, 1:] == 3) & (x[:, :-1] == 2)
    y[:, 1:][follow] = 4
    return x, y


@pytest.mark.slow
def test_fit_learns_toy_tagging():
    keras.utils.set_random_seed(0)
    model, crf = _tagger()
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss=losses.CRFLoss(crf))
    x, y = _toy()
    hist = model.fit(x, y, epochs=40, batch_size=16, verbose=0)
    assert hist.history["loss"][-1] < 0.2 * hist.history["loss"][0]
    paths = _np(crf.viterbi_decode(model.predict(x, verbose=0)))
    assert (paths == y).mean() > 0.98


def test_save_load_and_recompile(tmp_path):
    keras.utils.set_random_seed(1)
    model, crf = _tagger(lr_multiplier=10.0)
    model.compile(optimizer="adam", loss=losses.CRFLoss(crf))
    x, y = _toy(16)
    model.fit(x, y, epochs=1, verbose=0)
    path = str(tmp_path / "crf.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(_np(model.predict(x, verbose=0)), _np(loaded.predict(x, verbose=0)))
    lcrf = loaded.get_layer("crf")
    assert lcrf.lr_multiplier == 10.0
    out = loaded.predict(x, verbose=0)
    np.testing.assert_array_equal(_np(crf.viterbi_decode(out)), _np(lcrf.viterbi_decode(out)))
    # The promise: the loaded loss is unbound and says how to re-compile.
    with pytest.raises(ValueError, match="re-compile"):
        loaded.loss(y, out)
    loaded.compile(optimizer="adam", loss=losses.CRFLoss(lcrf))
    before = loaded.evaluate(x, y, verbose=0)
    np.testing.assert_allclose(before, model.evaluate(x, y, verbose=0), rtol=1e-5)
    loaded.fit(x, y, epochs=1, verbose=0)


def test_jit_compile_matches_eager():
    if _backend.name() == "torch" and keras.__version__.startswith("3.10."):
        # TorchDynamo (torch 2.13) fails on the bytecode of Keras 3.10's own
        # compile_utils ("exception table entry start instruction has no
        # offset"), with or without a CRF: nothing of ours to test there.
        pytest.skip("jit_compile on PyTorch fails inside TorchDynamo on Keras 3.10 with torch 2.13")
    keras.utils.set_random_seed(2)
    model, crf = _tagger()
    x, y = _toy(16)
    model.compile(optimizer="adam", loss=losses.CRFLoss(crf), jit_compile=True)
    eager = float(np.mean(_np(losses.CRFLoss(crf, reduction=None)(y, model(x)))))
    np.testing.assert_allclose(model.evaluate(x, y, verbose=0), eager, rtol=1e-5)


@pytest.mark.slow  # ~13 s on JAX; the crash it pins was TensorFlow's scan, and TensorFlow runs it
def test_fit_on_batches_of_varying_length():
    """A generator of batches of different lengths makes TensorFlow trace the
    step with an unknown time axis (the NER demo's case): the scans must
    still run, and the loss match the eager NLL of each batch."""
    keras.utils.set_random_seed(3)
    model, crf = _tagger()
    model.compile(optimizer="adam", loss=losses.CRFLoss(crf))
    x, y = _toy(16)
    batches = [(x[:8, :5], y[:8, :5]), (x[8:], y[8:])]

    def gen():
        while True:
            yield from batches

    model.fit(gen(), steps_per_epoch=2, epochs=2, verbose=0)
    for bx, by in batches:
        eager = float(np.mean(_np(losses.CRFLoss(crf, reduction=None)(by, model(bx)))))
        np.testing.assert_allclose(model.test_on_batch(bx, by), eager, rtol=1e-5)


@pytest.mark.harness
def test_harness():
    rng = np.random.default_rng(0)
    mask = np.ones((3, 5), bool)
    mask[1, 3:] = False
    mask[2, 1:] = False
    testing.check_layer(
        layers.ConditionalRandomField,
        {"use_boundary_transitions": True},
        rng.normal(size=(3, 5, 4)).astype("float32"),
        mask=mask,
        expected_output_mask=None,
        # The transitions do not enter the layer's output (it passes the
        # emissions through), so the harness's fit() through a generic loss
        # cannot move them; fit() through CRFLoss is tested above.
        checks=tuple(c for c in testing.ALL_CHECKS if c != "fit"),
    )
