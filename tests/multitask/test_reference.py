"""Self-tests of the float64 NumPy references in tests/multitask/reference.py:
hand-computed cases, optimality conditions and cross-checks between two
independent solutions of the same problem. NumPy/SciPy only."""

import numpy as np
import pytest

from tests.multitask import reference as ref


def _grads(rng, k, n=5, cond=None):
    g = rng.normal(size=(k, n))
    if cond is not None:  # spread the gradient norms over `cond` orders of magnitude
        g *= np.logspace(0, cond, k)[:, None]
    return g


def _fd(f, x, h=1e-6):
    x = np.asarray(x, float)
    out = np.zeros_like(x)
    for i in range(x.size):
        e = np.zeros_like(x)
        e[i] = h
        out[i] = (f(x + e) - f(x - e)) / (2 * h)
    return out


# ---------------------------------------------------------------- loss-based


def test_equal_and_initial_hand():
    total, w = ref.equal([1.0, 2.0, 3.0])
    assert total == 6.0 and np.all(w == 1)
    total, w = ref.equal([1.0, 2.0], weights=[0.5, 2.0])
    assert total == 4.5
    total, w = ref.initial([1.0, 4.0], [2.0, 8.0])
    np.testing.assert_allclose(w, [0.5, 0.125])
    assert total == 1.0


def test_prior_loss_hand():
    assert ref.prior_loss(np.array([0, 0, 1, 1]), "categorical") == pytest.approx(np.log(2))
    assert ref.prior_loss(np.eye(4)[[0, 1, 2, 3]].astype("float32"), "categorical") == pytest.approx(
        np.log(4)
    )
    assert ref.prior_loss(np.array([0, 0, 0, 1]), "categorical") == pytest.approx(
        -(0.75 * np.log(0.75) + 0.25 * np.log(0.25))
    )
    assert ref.prior_loss(np.array([0.0, 1.0, 1.0, 0.0]), "binary") == pytest.approx(np.log(2))
    assert ref.prior_loss(np.ones(5), "binary") == 0.0
    # two label columns: p = (0.5, 0.25)
    y = np.array([[1, 1], [0, 0], [1, 0], [0, 0]], float)
    h = lambda p: -(p * np.log(p) + (1 - p) * np.log(1 - p))  # noqa: E731
    assert ref.prior_loss(y, "binary") == pytest.approx((h(0.5) + h(0.25)) / 2)
    assert ref.prior_loss(np.array([1.0, 3.0]), "regression") == pytest.approx(1.0)
    y = np.array([[1.0, 0.0], [3.0, 4.0]])
    assert ref.prior_loss(y, "regression") == pytest.approx((1.0 + 4.0) / 2)


def test_prior_loss_is_the_loss_of_the_best_constant():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, size=200)
    p = np.bincount(y, minlength=5) / 200
    ce = -np.mean(np.log(p[y]))  # cross-entropy of predicting the frequencies
    assert ref.prior_loss(y, "categorical") == pytest.approx(ce)
    t = rng.normal(2.0, 3.0, size=300)
    assert ref.prior_loss(t, "regression") == pytest.approx(np.mean((t - t.mean()) ** 2))


def test_realtime():
    total, w = ref.realtime([0.5, 2.0, 8.0])
    assert total == pytest.approx(3.0)
    np.testing.assert_allclose(w, [2.0, 0.5, 0.125])
    # the gradient is that of sum log L_i
    np.testing.assert_allclose(w, _fd(lambda l: np.sum(np.log(l)), [0.5, 2.0, 8.0]), rtol=1e-7)


@pytest.mark.parametrize("gamma", [-1.0, 0.0, 0.5, 1.0, 2.0])
def test_generalized_mean_weights_are_its_gradient(gamma):
    losses = np.array([0.3, 1.7, 4.0])
    m, w = ref.generalized_mean(losses, gamma)
    np.testing.assert_allclose(w, _fd(lambda l: ref.generalized_mean(l, gamma)[0], losses), rtol=1e-6)
    if gamma == 1.0:
        assert m == pytest.approx(losses.mean())
    if gamma == 0.0:
        assert m == pytest.approx(np.prod(losses) ** (1 / 3))
        # continuity at 0
        assert ref.generalized_mean(losses, 1e-7)[0] == pytest.approx(m, rel=1e-5)
    if gamma == -1.0:
        assert m == pytest.approx(3 / np.sum(1 / losses))


def test_uncertainty():
    losses = np.array([100.0, 1.0])
    s = np.array([0.3, -0.2])
    total, w, ds = ref.uncertainty(losses, s)
    sigma = np.exp(0.5 * s)
    assert total == pytest.approx(np.sum(losses / (2 * sigma**2) + np.log(sigma)))
    np.testing.assert_allclose(w, _fd(lambda l: ref.uncertainty(l, s)[0], losses), rtol=1e-6)
    np.testing.assert_allclose(ds, _fd(lambda v: ref.uncertainty(losses, v)[0], s), rtol=1e-6)
    s_opt = ref.uncertainty_optimum(losses)
    np.testing.assert_allclose(ref.uncertainty(losses, s_opt)[2], 0, atol=1e-12)
    np.testing.assert_allclose(np.exp(0.5 * s_opt), [10.0, 1.0])


def test_dwa():
    total, w = ref.dwa([1.0, 2.0])
    np.testing.assert_array_equal(w, [1, 1])
    _, w = ref.dwa([1.0, 2.0], prev1=[1.0, 2.0], prev2=[2.0, 4.0])  # equal ratios
    np.testing.assert_allclose(w, [1, 1])
    _, w = ref.dwa([1.0, 1.0], prev1=[1.0, 1.0], prev2=[1.0, 0.5], temperature=2.0)
    e = np.exp(np.array([1.0, 2.0]) / 2.0)
    np.testing.assert_allclose(w, 2 * e / e.sum())
    assert w.sum() == pytest.approx(2.0)


# ------------------------------------------------------------ gradient-based


def test_combined_gradient_and_gram():
    g = np.array([[1.0, 2.0], [3.0, -1.0]])
    np.testing.assert_allclose(ref.combined_gradient([2.0, 1.0], g), [5.0, 3.0])
    np.testing.assert_allclose(ref.gram_of(g), [[5.0, 1.0], [1.0, 10.0]])
    v = ref.vectors_from_gram(ref.gram_of(g))
    np.testing.assert_allclose(v @ v.T, ref.gram_of(g), atol=1e-12)


def test_grad_norm_normalization():
    g = np.array([[3.0, 4.0], [0.0, 0.0], [0.0, 0.5]])
    w = ref.grad_norm_normalization(None, ref.gram_of(g))
    np.testing.assert_allclose(w, [0.2, 1.0, 2.0])  # a zero gradient keeps weight 1


def test_gradnorm_hand():
    g = np.array([[1.0, 0.0], [0.0, 3.0]])
    state = ref.gradnorm_init(2)
    w, state = ref.gradnorm([2.0, 5.0], ref.gram_of(g), state)
    np.testing.assert_array_equal(w, [1, 1])
    np.testing.assert_array_equal(state["l0"], [2.0, 5.0])
    # r = 1, Gbar = 2: G - target = (-1, +1); w -= 0.025 * sign * norm = (1.025, 0.925)
    np.testing.assert_allclose(state["w"], np.array([1.025, 0.925]) * 2 / 1.95)
    w2, state2 = ref.gradnorm([1.0, 5.0], ref.gram_of(g), state)
    np.testing.assert_array_equal(w2, state["w"])
    # task 0 learnt faster (ratio 0.5 vs 1): r = (2/3, 4/3)
    big_g = w2 * np.array([1.0, 3.0])
    target = big_g.mean() * np.array([2 / 3, 4 / 3]) ** 1.5
    step = w2 - 0.025 * np.sign(big_g - target) * np.array([1.0, 3.0])
    np.testing.assert_allclose(state2["w"], step * 2 / step.sum())
    assert state2["w"].sum() == pytest.approx(2.0)


def test_mgda_hand():
    g = np.array([[1.0, 0.0], [0.0, 1.0]])
    np.testing.assert_allclose(ref.mgda(None, ref.gram_of(g)), [0.5, 0.5])
    g = np.array([[1.0, 0.0], [2.0, 0.0]])  # min-norm point is g1 itself
    np.testing.assert_allclose(ref.mgda(None, ref.gram_of(g)), [1.0, 0.0])
    g = np.array([[1.0, 0.0], [-1.0, 0.0]])  # 0 in the hull
    np.testing.assert_allclose(ref.combined_gradient(ref.mgda(None, ref.gram_of(g)), g), 0, atol=1e-15)
    g = np.array([[1.0, 1.0], [1.0, 1.0]])  # identical
    np.testing.assert_allclose(ref.combined_gradient(ref.mgda(None, ref.gram_of(g)), g), [1, 1])


@pytest.mark.parametrize("k", [2, 3, 4, 5])
@pytest.mark.parametrize("seed", range(6))
def test_mgda_kkt_and_cross_check(k, seed):
    rng = np.random.default_rng(seed)
    g = _grads(rng, k, n=3 if seed % 2 else 8, cond=2 if seed >= 3 else None)
    gram = ref.gram_of(g)
    w = ref.mgda(None, gram)
    assert np.all(w >= 0) and w.sum() == pytest.approx(1)
    d = ref.combined_gradient(w, g)
    dd = d @ d
    scale = np.max(np.diag(gram))
    # KKT: <d, g_i> >= ||d||^2, with equality on the support
    dots = g @ d
    assert np.all(dots >= dd - 1e-9 * scale)
    np.testing.assert_allclose(dots[w > 1e-9], dd, atol=1e-9 * scale)
    w2 = ref.mgda_slsqp(gram)
    d2 = ref.combined_gradient(w2, g)
    assert d @ d <= d2 @ d2 + 1e-9 * scale
    np.testing.assert_allclose(d, d2, atol=1e-4 * np.sqrt(scale))
    # the closed form (k = 2) and the active-set enumeration give the same point
    np.testing.assert_allclose(ref._mgda_enumerate(gram) @ g, d, atol=1e-9 * np.sqrt(scale))


def test_pcgrad_hand():
    g = np.array([[1.0, 0.0], [-1.0, 1.0]])
    w = ref.pcgrad(None, ref.gram_of(g), [[1], [0]])
    np.testing.assert_allclose(w, [2.0, 1.5])
    np.testing.assert_allclose(ref.combined_gradient(w, g), [0.5, 1.5])
    g = np.array([[1.0, 0.0], [1.0, 1.0]])  # no conflict: plain sum
    np.testing.assert_allclose(ref.pcgrad(None, ref.gram_of(g), [[1], [0]]), [1, 1])
    g = np.array([[1.0, 0.0], [0.0, 0.0]])  # zero gradient: nothing to project on
    np.testing.assert_allclose(ref.pcgrad(None, ref.gram_of(g), [[1], [0]]), [1, 1])


@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("seed", range(4))
def test_pcgrad_gram_equals_vectors(k, seed):
    rng = np.random.default_rng(seed)
    g = _grads(rng, k, n=4, cond=1 if seed % 2 else None)
    gram = ref.gram_of(g)
    sets = ref.pcgrad_permutation_sets(k)
    assert len(sets) == {2: 1, 3: 8, 4: 6**4}[k]
    for perms in sets[:50]:
        np.testing.assert_allclose(
            ref.combined_gradient(ref.pcgrad(None, gram, perms), g),
            ref.pcgrad_vectors(g, perms),
            atol=1e-12 * np.abs(g).max(),
        )


@pytest.mark.parametrize("seed", range(10))
def test_pcgrad_two_tasks_no_conflict_left(seed):
    g = _grads(np.random.default_rng(seed), 2, n=3)
    if g[0] @ g[1] >= 0:
        g[1] -= 2 * (g[0] @ g[1]) / (g[0] @ g[0]) * g[0]  # force a conflict
    w = ref.pcgrad(None, ref.gram_of(g), [[1], [0]])
    a1 = g[0] - (g[0] @ g[1]) / (g[1] @ g[1]) * g[1]
    assert abs(a1 @ g[1]) < 1e-12 * (g[1] @ g[1]) * 10
    d = ref.combined_gradient(w, g)
    assert np.all(g @ d >= -1e-12)  # the PCGrad update never goes uphill for k = 2


def test_pcgrad_order_matters_for_three_tasks():
    g = np.array([[1.0, 0.0], [-1.0, 0.2], [-0.3, -1.0]])
    results = {
        tuple(np.round(ref.pcgrad(None, ref.gram_of(g), p), 12)) for p in ref.pcgrad_permutation_sets(3)
    }
    assert len(results) > 1


def test_cagrad_hand():
    g = np.eye(2)
    np.testing.assert_allclose(ref.cagrad(None, ref.gram_of(g), c=0.5), [0.6, 0.6])


@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("seed", range(6))
def test_cagrad_c0_is_the_mean_and_duality_gap(k, seed):
    rng = np.random.default_rng(seed)
    g = _grads(rng, k, n=4, cond=(1.5, 3.0)[seed % 2] if seed >= 2 else None)
    gram = ref.gram_of(g)
    np.testing.assert_allclose(ref.cagrad(None, gram, c=0.0), np.full(k, 1 / k))
    g0 = g.mean(0)
    for c in (0.2, 0.5, 0.9):
        s = c * np.linalg.norm(g0)
        # inner (dual) problem by its own solver: f(w) = <g_w, g0> + s ||g_w||
        w = ref.cagrad_inner(gram, c)
        f_w = (w @ g) @ g0 + s * np.linalg.norm(w @ g)
        # the reference direction, feasible for the primal problem
        d = ref.combined_gradient(ref.cagrad(None, gram, c), g) * (1 + c * c)
        assert np.linalg.norm(d - g0) <= s * (1 + 1e-7)
        t_d = np.min(g @ d)
        # weak duality: t(d) <= f(w) for every feasible pair; a gap of ~0
        # certifies both solutions optimal
        scale = np.max(np.diag(gram))
        assert t_d <= f_w + 1e-9 * scale
        assert f_w - t_d <= 1e-6 * scale, (f_w, t_d)
        # and the direction from the dual solution is the same one
        gw = w @ g
        d_dual = g0 + s * gw / np.linalg.norm(gw)
        np.testing.assert_allclose(d, d_dual, atol=1e-3 * np.sqrt(scale))


def test_cagrad_two_closed_form_vs_bounded_scalar():
    from scipy.optimize import minimize_scalar

    rng = np.random.default_rng(3)
    for _ in range(50):
        g = _grads(rng, 2, n=3, cond=rng.uniform(0, 2))
        gram = ref.gram_of(g)
        c = rng.uniform(0.05, 1.5)
        s = c * np.linalg.norm(g.mean(0))
        obj = lambda a: (
            (a * g[0] + (1 - a) * g[1]) @ g.mean(0)
            + s
            * np.linalg.norm(  # noqa: E731
                a * g[0] + (1 - a) * g[1]
            )
        )
        res = minimize_scalar(obj, bounds=(0, 1), method="bounded", options={"xatol": 1e-12})
        w = ref.cagrad_inner(gram, c)
        assert obj(w[0]) <= min(res.fun, obj(0.0), obj(1.0)) + 1e-10 * np.max(np.diag(gram))


def test_primary_auxiliary_hand():
    g = np.array([[1.0, 0.0], [-1.0, 1.0]])
    w = ref.primary_auxiliary(None, ref.gram_of(g))
    np.testing.assert_allclose(w, [1.0, 0.5])
    np.testing.assert_allclose(ref.combined_gradient(w, g), [0.5, 0.5])
    g = np.array([[1.0, 0.0], [1.0, 1.0]])  # agreeing auxiliary: not used
    np.testing.assert_allclose(ref.primary_auxiliary(None, ref.gram_of(g)), [1.0, 0.0])
    g = np.array([[-1.0, 1.0], [1.0, 0.0]])  # primary = 1
    np.testing.assert_allclose(ref.primary_auxiliary(None, ref.gram_of(g), primary=1), [0.5, 1.0])


@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("seed", range(6))
def test_primary_auxiliary_kkt(k, seed):
    rng = np.random.default_rng(seed)
    g = _grads(rng, k, n=3 if seed % 2 else 6, cond=2 if seed >= 3 else None)
    primary = seed % k
    gram = ref.gram_of(g)
    w = ref.primary_auxiliary(None, gram, primary=primary)
    assert w[primary] == 1 and np.all(w >= 0)
    u = ref.combined_gradient(w, g)
    scale = np.max(np.diag(gram))
    aux = [i for i in range(k) if i != primary]
    # KKT of the NNLS: <u, g_i> >= 0 for every auxiliary task, = 0 where lambda_i > 0,
    # hence <u, g_p> = ||u||^2 >= 0: the primary task is never pushed uphill.
    assert np.all(g[aux] @ u >= -1e-9 * scale)
    np.testing.assert_allclose((g[aux] @ u)[w[aux] > 1e-9], 0, atol=1e-9 * scale)
    assert g[primary] @ u == pytest.approx(u @ u, abs=1e-9 * scale)
    # against SLSQP on the same problem
    from scipy.optimize import minimize

    res = minimize(
        lambda lam: np.sum((g[primary] + lam @ g[aux]) ** 2),
        np.zeros(k - 1),
        bounds=[(0, None)] * (k - 1),
        method="L-BFGS-B",
        options={"ftol": 1e-15, "gtol": 1e-12},
    )
    assert u @ u <= res.fun + 1e-7 * scale


@pytest.mark.parametrize("k", [3, 4])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_face_enumerations_agree_with_the_other_references(k, seed):
    # min_norm_point / cagrad_faces (exact, on vectors) against the bordered
    # KKT enumeration, SLSQP on the simplex, and SLSQP on CAGrad's primal.
    rng = np.random.default_rng(seed)
    grads = rng.normal(size=(k, 6)) * rng.uniform(0.5, 3.0, size=(k, 1))
    w, d = ref.min_norm_point(grads)
    np.testing.assert_allclose(d, ref.combined_gradient(ref.mgda(None, ref.gram_of(grads)), grads), atol=1e-9)
    np.testing.assert_allclose(d, ref.combined_gradient(ref.mgda_slsqp(ref.gram_of(grads)), grads), atol=1e-6)
    assert w.min() >= 0 and w.sum() == pytest.approx(1.0)
    for c in (0.3, 0.8):
        primal, _ = ref.cagrad_primal(grads, c)
        np.testing.assert_allclose(ref.cagrad_faces(grads, c), primal / (1 + c * c), atol=1e-6)


def test_graddrop_by_hand_and_its_expectation():
    # Coordinates: agreeing positive, agreeing negative, mixed (P = 0.75), all zero.
    grads = np.array([[1.0, -1.0, -1.0, 0.0], [2.0, -3.0, 3.0, 0.0]])
    d, kept, present = ref.graddrop(grads, [0.5, 0.5, 0.5, 0.5])
    np.testing.assert_array_equal(d, [3.0, -4.0, 3.0, 0.0])
    np.testing.assert_array_equal(kept, [2.0, 3.0])
    np.testing.assert_array_equal(present, [3.0, 3.0])
    d, _, _ = ref.graddrop(grads, [0.9, 0.0, 0.8, 0.5])  # U >= P keeps the negatives (P = 0 too)
    np.testing.assert_array_equal(d, [3.0, -4.0, -1.0, 0.0])
    np.testing.assert_array_equal(ref.graddrop(grads, [0.8] * 4, leak=1.0)[0], grads.sum(axis=0))
    # The mean over a fine midpoint grid of U is the expectation (exact up to the grid).
    rng = np.random.default_rng(0)
    grads = rng.normal(size=(3, 5))
    leak = [0.0, 0.25, 1.0]
    grid = (np.arange(1000) + 0.5) / 1000
    mean = np.mean([ref.graddrop(grads, np.full(5, u), leak)[0] for u in grid], axis=0)
    np.testing.assert_allclose(mean, ref.graddrop_expectation(grads, leak), atol=2e-3 * np.abs(grads).sum())


def test_aligned_mtl_reference_properties():
    # The aligned gradients g_hat_i (preference e_i) are orthogonal, all of
    # norm sigma_min, and span the gradients' space; rank 1 (parallel
    # gradients: already one singular value) leaves them as they are.
    rng = np.random.default_rng(0)
    grads = rng.normal(size=(3, 6)) * np.array([[1.0], [10.0], [0.1]])
    g_hat = np.stack([ref.aligned_mtl(grads, preference=np.eye(3)[i]) for i in range(3)])
    sigma = np.linalg.svd(grads, compute_uv=False)
    np.testing.assert_allclose(g_hat @ g_hat.T, sigma[-1] ** 2 * np.eye(3), atol=1e-12)
    assert np.linalg.matrix_rank(np.vstack([grads, g_hat])) == 3
    g = rng.normal(size=6)
    d = ref.aligned_mtl(np.stack([g, -3 * g]))
    np.testing.assert_allclose(d, (g - 3 * g) / 2, atol=1e-12)


def test_gradvac_reference_reaches_the_target():
    # After a correction, cos(g_i', g_j) is the target (the paper's eq. 4),
    # and the target then moves by beta towards the cosine before it.
    rng = np.random.default_rng(1)
    grads = rng.normal(size=(2, 5))
    grads[1] -= 1.5 * grads[0]  # conflicting
    phi = np.array([[0.0, 0.4], [0.4, 0.0]])
    cos = grads[0] @ grads[1] / np.linalg.norm(grads[0]) / np.linalg.norm(grads[1])
    assert cos < 0
    # task 1 visits no one: d = g_0' + g_1
    d, new = ref.gradvac(grads, [[1], []], phi, beta=0.2)
    g0 = d - grads[1]
    c = g0 @ grads[1] / np.linalg.norm(g0) / np.linalg.norm(grads[1])
    assert c == pytest.approx(0.4, abs=1e-12)
    np.testing.assert_allclose(new[0, 1], 0.8 * 0.4 + 0.2 * cos)
    assert new[1, 0] == 0.4
