"""Every strategy of keras_tricks.multitask against the float64 NumPy
references of tests/multitask/reference.py (written from the papers), on
random well- and ill-conditioned cases and on edge cases (k = 2, 3, 4; a
zero gradient; identical gradients; opposed gradients), at float32 tolerance.

Gradient-based strategies are compared through the update they produce,
d = sum_i w_i g_i, since the weights themselves are not unique when the
gradients are linearly dependent (identical or opposed gradients)."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_tricks import _backend, multitask, testing
from tests.multitask import reference as ref

F32_EPS = float(np.finfo(np.float32).eps)


def _bind(strategy, k):
    return strategy.bind([f"task_{i}" for i in range(k)])


def _np(x):
    return np.asarray(testing.to_numpy(x), dtype=np.float64)


def _t(x):
    return ops.convert_to_tensor(np.asarray(x, dtype=np.float32))


# ------------------------------------------------------------------- cases


def _grad_cases(k):
    rng = np.random.default_rng(10 + k)
    n = 7
    cases = {"random": rng.normal(size=(k, n))}
    # norms spread over three orders of magnitude
    cases["ill_norms"] = rng.normal(size=(k, n)) * np.logspace(0, 3, k)[:, None]
    # nearly collinear gradients: a badly conditioned Gram matrix
    base = rng.normal(size=n)
    cases["near_collinear"] = base + 0.05 * rng.normal(size=(k, n))
    # every pair in conflict (k unit vectors spread over a half-plane and beyond)
    angles = np.pi * (0.2 + 1.3 * np.arange(k) / max(k - 1, 1))
    conflict = np.zeros((k, n))
    conflict[:, 0], conflict[:, 1] = np.cos(angles), np.sin(angles)
    cases["conflicting"] = conflict * rng.uniform(0.5, 2.0, size=(k, 1))
    zero = rng.normal(size=(k, n))
    zero[1] = 0.0
    cases["zero"] = zero
    cases["identical"] = np.tile(rng.normal(size=n), (k, 1))
    opposed = rng.normal(size=(k, n))
    opposed[1] = -2.0 * opposed[0]
    cases["opposed"] = opposed
    return cases


CASE_NAMES = list(_grad_cases(2))
KS = [2, 3, 4]

# Disagreements of the core with the references, reported to the lead (the
# references were rechecked against the papers, and the core's own solvers
# move towards them when given many more iterations). strict: an XPASS fails,
# so a fix shows up.
# Known limits of the core, xfail(strict=True): a fix shows up as a failure to unmark.
# (Frank-Wolfe, FISTA and majorise-minimise were replaced by exact solves for k <= 8,
# which fixed the other 18 cases first recorded here.)
_CAGRAD_ZERO_IN_HULL = (
    "core CAGrad, k > 2, 0 in the convex hull ('opposed', g_1 = -2 g_0): the optimal g_w is 0, "
    "and its direction g_w / ||g_w||, which the update needs, cannot be resolved from a float32 "
    "Gram matrix (||g_w||^2 is below its rounding error), so the step leaves the ball "
    "||(1 + c^2) d - g0|| <= c ||g0||"
)
KNOWN = {}
for _key in [(3, "opposed", 0.9), (4, "opposed", 0.5), (4, "opposed", 0.9)]:
    KNOWN[("cagrad",) + _key] = _CAGRAD_ZERO_IN_HULL


def _known(request, *key):
    if key in KNOWN:
        request.applymarker(pytest.mark.xfail(strict=True, reason=KNOWN[key]))


def _case(k, name):
    grads = _grad_cases(k)[name]
    gram32 = (grads.astype(np.float32) @ grads.astype(np.float32).T).astype(np.float32)
    # the references get the same float32 Gram matrix, so that the comparison
    # measures the strategy, not the rounding of the inputs
    gram = gram32.astype(np.float64)
    losses = np.random.default_rng(k).uniform(0.5, 3.0, size=k)
    return grads, gram, losses


def _weights(strategy, losses, gram):
    return _np(strategy.task_weights(_t(losses), _t(gram)))


_COMPILED = {}


def _compiled_weights(cls, k, losses, gram, **kwargs):
    """task_weights of a stateless strategy, compiled as MultiTaskModel's train
    step is (tf.function / jax.jit; PyTorch runs eagerly), one program per
    (strategy, k), so that the many cases below cost one trace each."""
    key = (cls.__name__, k, tuple(sorted(kwargs.items())))
    if key not in _COMPILED:
        strategy = _bind(cls(**kwargs), k)
        fn = strategy.task_weights
        backend = _backend.name()
        if backend == "tensorflow":
            import tensorflow as tf

            fn = tf.function(fn)
        elif backend == "jax":
            import jax

            fn = jax.jit(fn)
        _COMPILED[key] = fn
    return _np(_COMPILED[key](_t(losses), _t(gram)))


def _scale(grads):
    return float(np.max(np.linalg.norm(grads, axis=1)))


def _assert_same_update(w, w_ref, grads, atol_rel, what):
    d = ref.combined_gradient(w, grads)
    d_ref = ref.combined_gradient(w_ref, grads)
    np.testing.assert_allclose(
        d,
        d_ref,
        rtol=0,
        atol=atol_rel * _scale(grads) + 1e-30,
        err_msg=f"{what}: weights {w} vs reference {w_ref}",
    )


# ---------------------------------------------------------- gradient-based


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("name", CASE_NAMES)
def test_grad_norm_normalization(k, name):
    grads, gram, losses = _case(k, name)
    w = _compiled_weights(multitask.GradNormNormalization, k, losses, gram)
    np.testing.assert_allclose(w, ref.grad_norm_normalization(losses, gram), rtol=8 * F32_EPS)
    assert np.all(np.isfinite(w))


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("name", ["random", "ill_norms", "conflicting", "zero"])
def test_gradnorm_sequence(k, name):
    grads, gram, losses = _case(k, name)
    s = _bind(multitask.GradNorm(alpha=1.5, learning_rate=0.025), k)
    state = ref.gradnorm_init(k)
    rng = np.random.default_rng(k)
    for step in range(4):
        # losses fall at task-dependent rates; the gradients change a little
        step_losses = losses * np.exp(-0.3 * step * np.arange(1, k + 1) / k)
        g = grads * (1 + 0.1 * step * rng.uniform(size=(k, 1)))
        step_gram = (g.astype(np.float32) @ g.astype(np.float32).T).astype(np.float64)
        w = _weights(s, step_losses, step_gram)
        w_ref, state = ref.gradnorm(step_losses, step_gram, state)
        np.testing.assert_allclose(w, w_ref, rtol=1e-5, atol=1e-6, err_msg=f"step {step}")
        assert w.sum() == pytest.approx(k, rel=1e-5)


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("name", CASE_NAMES)
def test_mgda(k, name, request):
    _known(request, "mgda", k, name)
    grads, gram, losses = _case(k, name)
    w = _compiled_weights(multitask.MGDA, k, losses, gram)
    w_ref = ref.mgda(losses, gram)
    assert np.all(w >= -1e-6) and w.sum() == pytest.approx(1.0, abs=1e-5)
    # the min-norm value first (what MGDA minimises), then the point itself
    norm2 = w @ gram @ w
    norm2_ref = w_ref @ gram @ w_ref
    assert norm2 <= norm2_ref + 1e-5 * np.max(np.diag(gram)), (w, w_ref)
    _assert_same_update(w, w_ref, grads, 3e-3 if k > 2 else 1e-5, "mgda")


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("name", CASE_NAMES)
def test_pcgrad_matches_one_permutation_set(k, name):
    grads, gram, losses = _case(k, name)
    s = _bind(multitask.PCGrad(seed=3), k)
    candidates = [ref.pcgrad(losses, gram, p) for p in ref.pcgrad_permutation_sets(k)]
    d_candidates = np.stack([ref.combined_gradient(c, grads) for c in candidates])
    for call in range(3):  # new permutations at every call; each must be one of them
        w = _weights(s, losses, gram)
        d = ref.combined_gradient(w, grads)
        err = np.max(np.abs(d_candidates - d[None]), axis=1)
        assert err.min() <= 1e-5 * _scale(grads), (call, w, err.min())


def test_pcgrad_draws_different_permutations():
    grads = np.array([[1.0, 0.0], [-1.0, 0.2], [-0.3, -1.0]])
    gram = ref.gram_of(grads)
    s = _bind(multitask.PCGrad(seed=0), 3)
    outcomes = {tuple(np.round(_weights(s, np.ones(3), gram), 4)) for _ in range(40)}
    expected = {tuple(np.round(ref.pcgrad(None, gram, p), 4)) for p in ref.pcgrad_permutation_sets(3)}
    assert outcomes <= expected
    assert len(outcomes) >= 2


@pytest.mark.parametrize("c", [0.0, 0.5, 0.9])
@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("name", CASE_NAMES)
def test_cagrad(k, name, c, request):
    _known(request, "cagrad", k, name, c)
    grads, gram, losses = _case(k, name)
    w = _compiled_weights(multitask.CAGrad, k, losses, gram, c=c)
    assert np.all(np.isfinite(w)), w
    w_ref = ref.cagrad(losses, gram, c=c)
    # the primal problem of the paper: max_d min_i <g_i, d> s.t.
    # ||d - g0|| <= c ||g0||, with d = (1 + c^2) * update
    d = ref.combined_gradient(w, grads) * (1 + c * c)
    d_ref = ref.combined_gradient(w_ref, grads) * (1 + c * c)
    # tasks with a zero gradient take no part (no path to the shared variables)
    on = np.diag(gram) > 0
    g0 = grads[on].mean(axis=0)
    scale2 = _scale(grads) ** 2
    assert np.linalg.norm(d - g0) <= c * np.linalg.norm(g0) + 1e-5 * _scale(grads)
    t, t_ref = np.min(grads[on] @ d), np.min(grads[on] @ d_ref)
    assert t >= t_ref - 1e-5 * scale2, (t, t_ref, w, w_ref)
    # the direction itself, where it is unique (0 not in the convex hull)
    if k == 2 or ref.mgda(losses, gram) @ gram @ ref.mgda(losses, gram) > 1e-6 * scale2:
        _assert_same_update(w, w_ref, grads, 3e-3 if k > 2 else 1e-5, f"cagrad c={c}")


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("name", CASE_NAMES)
@pytest.mark.parametrize("primary", [0, 1])
def test_primary_auxiliary(k, name, primary, request):
    _known(request, "primary_auxiliary", k, name, primary)
    grads, gram, losses = _case(k, name)
    w = _compiled_weights(multitask.PrimaryAuxiliary, k, losses, gram, primary=primary)
    w_ref = ref.primary_auxiliary(losses, gram, primary=primary)
    assert w[primary] == pytest.approx(1.0) and np.all(w >= -1e-6)
    u, u_ref = ref.combined_gradient(w, grads), ref.combined_gradient(w_ref, grads)
    scale2 = _scale(grads) ** 2
    # never uphill for the primary task (up to float32 rounding)
    assert grads[primary] @ u >= -1e-5 * scale2
    # the minimised value, then the point (unique: a projection on a convex cone)
    assert u @ u <= u_ref @ u_ref + 1e-5 * scale2, (u @ u, u_ref @ u_ref, w, w_ref)
    _assert_same_update(w, w_ref, grads, 3e-3 if k > 2 else 1e-5, "primary_auxiliary")


@pytest.mark.parametrize(
    "strategy", sorted(name for name, cls in multitask.STRATEGIES.items() if cls.uses_gradients)
)
def test_gradient_strategies_finite_on_all_zero_gradients(strategy):
    s = _bind(multitask.get(strategy), 3)
    if s.elementwise:
        d, kept, present = s.combine_elementwise([_t(np.zeros((2, 3)))] * 3)
        np.testing.assert_array_equal(_np(d), 0.0)
        np.testing.assert_array_equal(_np(present), 0.0)
        return
    w = _weights(s, np.ones(3), np.zeros((3, 3)))
    assert np.all(np.isfinite(w)), w


# -------------------------------------------------------------- loss-based


def _combine(strategy, losses, **kwargs):
    total, w = strategy.combine(_t(losses), **kwargs)
    return float(_np(total)), _np(w)


def _autodiff_weights(strategy, losses):
    def fn(x):
        return strategy.combine(x, training=False)[0]

    _, (g,) = _backend.value_and_grad(fn, _t(losses))
    return _np(g)


LOSSES = [np.array([0.7, 2.5]), np.array([0.05, 1.0, 30.0]), np.array([1.0, 1.0, 1.0, 1.0])]


@pytest.mark.parametrize("losses", LOSSES)
def test_equal(losses):
    k = losses.size
    total, w = _combine(_bind(multitask.Equal(), k), losses)
    total_ref, w_ref = ref.equal(losses)
    assert total == pytest.approx(total_ref, rel=1e-6)
    np.testing.assert_allclose(w, w_ref)
    weights = list(np.linspace(0.5, 2.0, k))
    s = _bind(multitask.Equal(weights=weights), k)
    total, w = _combine(s, losses)
    total_ref, w_ref = ref.equal(losses, weights)
    assert total == pytest.approx(total_ref, rel=1e-6)
    np.testing.assert_allclose(w, w_ref, rtol=1e-6)
    np.testing.assert_allclose(_autodiff_weights(s, losses), w_ref, rtol=1e-6)


@pytest.mark.parametrize("steps", [1, 3])
def test_initial_measured(steps):
    s = _bind(multitask.Initial(steps=steps), 3)
    seq = [
        np.array([2.0, 0.5, 10.0]),
        np.array([1.0, 0.4, 8.0]),
        np.array([0.8, 0.3, 4.0]),
        np.array([0.5, 0.2, 2.0]),
        np.array([0.4, 0.1, 1.0]),
    ]
    for t, losses in enumerate(seq):
        total, w = _combine(s, losses)
        # the running mean of the losses measured so far (the first `steps` ones)
        l0 = np.mean(seq[: min(t + 1, steps)], axis=0)
        total_ref, w_ref = ref.initial(losses, l0)
        np.testing.assert_allclose(w, w_ref, rtol=1e-5, err_msg=f"step {t}")
        assert total == pytest.approx(total_ref, rel=1e-5)


def test_initial_given_and_prior():
    losses = np.array([0.3, 2.0, 5.0])
    given = [1.5, 0.2, 10.0]
    for s in (multitask.Initial(losses=given), multitask.Prior(losses=given)):
        s = _bind(s, 3)
        total, w = _combine(s, losses)
        total_ref, w_ref = ref.initial(losses, given)
        np.testing.assert_allclose(w, w_ref, rtol=1e-5)
        assert total == pytest.approx(total_ref, rel=1e-5)
        np.testing.assert_allclose(_autodiff_weights(s, losses), w_ref, rtol=1e-5)


def test_prior_loss_against_reference():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 7, size=500)
    assert multitask.prior_loss(labels, "categorical") == pytest.approx(
        ref.prior_loss(labels, "categorical"), rel=1e-12
    )
    onehot = np.eye(7, dtype="float32")[labels]
    assert multitask.prior_loss(onehot, "categorical") == pytest.approx(
        ref.prior_loss(onehot, "categorical"), rel=1e-6
    )
    binary = (rng.uniform(size=(300, 3)) < [0.1, 0.5, 0.8]).astype("float32")
    assert multitask.prior_loss(binary, "binary") == pytest.approx(ref.prior_loss(binary, "binary"), rel=1e-6)
    assert multitask.prior_loss(binary[:, 0], "binary") == pytest.approx(
        ref.prior_loss(binary[:, 0], "binary"), rel=1e-6
    )
    targets = rng.normal(3.0, [1.0, 5.0], size=(400, 2))
    assert multitask.prior_loss(targets, "regression") == pytest.approx(
        ref.prior_loss(targets, "regression"), rel=1e-12
    )
    assert multitask.prior_loss(targets[:, 1], "regression") == pytest.approx(
        ref.prior_loss(targets[:, 1], "regression"), rel=1e-12
    )


@pytest.mark.parametrize("epsilon", [None, 0.1])
@pytest.mark.parametrize("losses", LOSSES)
def test_realtime(losses, epsilon):
    s = _bind(multitask.Realtime(epsilon=epsilon), losses.size)
    total, w = _combine(s, losses)
    total_ref, w_ref = ref.realtime(losses, F32_EPS if epsilon is None else epsilon)
    np.testing.assert_allclose(w, w_ref, rtol=1e-6)
    assert total == pytest.approx(total_ref, rel=1e-6)
    np.testing.assert_allclose(_autodiff_weights(s, losses), w_ref, rtol=1e-6)


@pytest.mark.parametrize("gamma", [-1.0, 0.0, 0.5, 1.0, 2.0])
@pytest.mark.parametrize("losses", LOSSES)
def test_generalized_mean(losses, gamma):
    s = _bind(multitask.GeneralizedMean(gamma=gamma), losses.size)
    total, w = _combine(s, losses)
    total_ref, w_ref = ref.generalized_mean(losses, gamma)
    assert total == pytest.approx(total_ref, rel=1e-5)
    np.testing.assert_allclose(w, w_ref, rtol=1e-5)
    np.testing.assert_allclose(_autodiff_weights(s, losses), w_ref, rtol=1e-5)


def test_uncertainty():
    losses = np.array([100.0, 1.0, 0.3])
    s = _bind(multitask.Uncertainty(), 3)
    log_vars = np.array([0.5, -0.3, 1.2])
    s.log_variances.assign(log_vars.astype("float32"))
    total, w = _combine(s, losses)
    total_ref, w_ref, ds_ref = ref.uncertainty(losses, log_vars)
    assert total == pytest.approx(total_ref, rel=1e-5)
    np.testing.assert_allclose(w, w_ref, rtol=1e-5)
    np.testing.assert_allclose(_autodiff_weights(s, losses), w_ref, rtol=1e-5)

    # d total / d log-variance of the documented objective
    _, (ds,) = _backend.value_and_grad(lambda v: _uncertainty_total(losses, v), _t(log_vars))
    np.testing.assert_allclose(_np(ds), ds_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_np(s.sigmas), np.exp(0.5 * log_vars), rtol=1e-6)


def _uncertainty_total(losses, log_vars):
    # the documented objective as a function of the log-variances, checked
    # against the strategy's own value below and against the reference above
    return ops.sum(0.5 * ops.exp(-log_vars) * _t(losses) + 0.5 * log_vars)


def test_uncertainty_objective_is_the_strategy_value():
    losses = np.array([4.0, 0.5])
    s = _bind(multitask.Uncertainty(), 2)
    for log_vars in ([0.0, 0.0], [1.0, -2.0]):
        s.log_variances.assign(np.asarray(log_vars, "float32"))
        total, _ = _combine(s, losses)
        assert total == pytest.approx(float(_np(_uncertainty_total(losses, _t(log_vars)))), rel=1e-6)
        assert total == pytest.approx(ref.uncertainty(losses, log_vars)[0], rel=1e-6)


def test_dwa_epochs():
    k = 3
    s = _bind(multitask.DWA(temperature=2.0), k)
    rng = np.random.default_rng(0)
    epoch_means = []
    for epoch in range(5):
        batch_losses = [
            rng.uniform(0.5, 2.0, size=k) * np.exp(-0.2 * epoch * np.arange(1, k + 1)) for _ in range(4)
        ]
        for losses in batch_losses:
            total, w = _combine(s, losses)
            prev1 = epoch_means[-1] if len(epoch_means) >= 1 else None
            prev2 = epoch_means[-2] if len(epoch_means) >= 2 else None
            total_ref, w_ref = ref.dwa(losses, prev1, prev2, temperature=2.0)
            np.testing.assert_allclose(w, w_ref, rtol=1e-5, err_msg=f"epoch {epoch}")
            assert total == pytest.approx(total_ref, rel=1e-5)
        epoch_means.append(np.mean(batch_losses, axis=0))
        s.end_epoch()


@pytest.mark.parametrize(
    "strategy",
    ["equal", "initial", "realtime", "generalized_mean", "uncertainty", "dwa", "rlw", "famo", "stch"],
)
def test_loss_strategies_finite_at_zero_loss(strategy):
    s = _bind(multitask.get(strategy), 3)
    losses = np.array([0.0, 1.0, 2.0])
    total, w = _combine(s, losses)
    assert np.isfinite(total) and np.all(np.isfinite(w)), (total, w)
    assert np.all(np.isfinite(_autodiff_weights(s, losses)))


# ------------------------------------------- gradients of very different norms


def _spread_norms(k, ratio, seed):
    """Unit gradients in R^7, the first multiplied by `ratio` (float32-exact)."""
    g = np.random.default_rng(seed).normal(size=(k, 7))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    g[0] *= ratio
    g = g.astype(np.float32).astype(np.float64)
    return g, (g @ g.T).astype(np.float32).astype(np.float64)


@pytest.mark.parametrize("k", [3, 4, 5])
@pytest.mark.parametrize("ratio", [1e2, 1e3, 1e4])
def test_exact_solver_with_one_gradient_far_larger(k, ratio):
    # Regression: the ridge of the exact solver was sized by the largest
    # gradient (1e-6 trace / k), so with one gradient 10^3 times the others
    # MGDA's direction was ~1e-1 off and CAGrad's ~1e-2 (10^4: 0.9 and 0.4).
    in_support = 0
    for seed in range(6):
        grads, gram = _spread_norms(k, ratio, seed)
        losses = np.ones(k)
        w_ref, d_ref = ref.min_norm_point(grads)
        in_support += w_ref[0] > 0
        d = ref.combined_gradient(_compiled_weights(multitask.MGDA, k, losses, gram), grads)
        err = np.linalg.norm(d - d_ref) / np.linalg.norm(d_ref)
        assert err <= 1e-4, ("mgda", seed, err)
        d = ref.combined_gradient(_compiled_weights(multitask.CAGrad, k, losses, gram, c=0.5), grads)
        d_ref = ref.cagrad_faces(grads, 0.5)
        err = np.linalg.norm(d - d_ref) / np.linalg.norm(d_ref)
        assert err <= 1e-4, ("cagrad", seed, err)
        # primary/auxiliary (no simplex), primary = a small gradient: the
        # large one may cancel its conflicting part
        w = _compiled_weights(multitask.PrimaryAuxiliary, k, losses, gram, primary=1)
        lam, _ = ref.optimize.nnls(np.delete(grads, 1, axis=0).T, -grads[1])
        u_ref = grads[1] + lam @ np.delete(grads, 1, axis=0)
        u = ref.combined_gradient(w, grads)
        err = np.linalg.norm(u - u_ref) / np.linalg.norm(grads[1])
        assert err <= 1e-4, ("primary_auxiliary", seed, err)
    # the cases include the large gradient inside the solution's face
    assert in_support > 0


# ----------------------------------------------- post-2021 strategies


def test_rlw_weights_are_a_softmax_of_standard_normal_draws():
    k, draws = 3, 300
    losses = np.array([0.5, 2.0, 4.0])
    s = _bind(multitask.RLW(seed=11), k)
    total, w = _combine(s, losses, training=False)
    np.testing.assert_allclose(w, np.full(k, 1.0 / k), rtol=1e-6)  # evaluation: the mean
    assert total == pytest.approx(losses.mean(), rel=1e-6)
    ws = []
    for _ in range(draws):
        total, w = _combine(s, losses)
        total_ref, _ = ref.rlw(losses, np.log(w))
        assert total == pytest.approx(total_ref, rel=1e-5)
        ws.append(w)
    ws = np.array(ws)
    np.testing.assert_allclose(ws.sum(axis=1), 1.0, rtol=1e-5)
    assert np.all(ws > 0) and len(np.unique(ws[:, 0])) == draws  # a new draw every step
    # log w_i - log w_j = e_i - e_j ~ N(0, 2) for e ~ N(0, I): mean and variance
    # within 5 standard errors (the variance of a sample variance of N(0, 2) is 8 / n)
    diff = np.log(ws[:, 0]) - np.log(ws[:, 1])
    assert abs(diff.mean()) < 5 * np.sqrt(2.0 / draws)
    assert abs(diff.var() - 2.0) < 5 * np.sqrt(8.0 / draws)
    # the same seed draws the same weights; another seed others
    again = _bind(multitask.RLW(seed=11), k)
    other = _bind(multitask.RLW(seed=12), k)
    first = [_combine(again, losses)[1] for _ in range(3)]
    np.testing.assert_array_equal(np.array(first), ws[:3])
    assert not np.allclose(_combine(other, losses)[1], ws[0])


def _famo_losses(k, steps=6):
    rng = np.random.default_rng(3 + k)
    rates = np.linspace(0.05, 0.6, k)
    return [rng.uniform(0.5, 3.0, size=k) * np.exp(-rates * t) for t in range(steps)]


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
@pytest.mark.parametrize("k", [2, 3])
def test_famo_sequence(k, optimizer):
    kwargs = dict(learning_rate=0.5, weight_decay=0.01, optimizer=optimizer)
    min_losses = None if k == 2 else [0.0, 0.1, 0.2]
    s = _bind(multitask.FAMO(min_losses=min_losses, **kwargs), k)
    state = ref.famo_init(k)
    for t, losses in enumerate(_famo_losses(k)):
        total, w = _combine(s, losses)
        total_ref, w_ref, state = ref.famo(losses, state, min_losses=min_losses, epsilon=F32_EPS, **kwargs)
        np.testing.assert_allclose(w, w_ref, rtol=2e-5, err_msg=f"step {t}")
        assert total == pytest.approx(total_ref, rel=2e-5)
        np.testing.assert_allclose(_np(s.logits), state["logits"], rtol=1e-4, atol=1e-6, err_msg=f"step {t}")
        # evaluation weighs with the logits as they are and moves nothing
        logits = _np(s.logits)
        _, w_eval = _combine(s, losses, training=False)
        np.testing.assert_allclose(w_eval, w, rtol=1e-6)
        np.testing.assert_array_equal(_np(s.logits), logits)
    # the task whose loss fell fastest has the smallest priority z
    assert np.argmin(_np(s.task_priorities)) == k - 1


def test_famo_default_epsilon_and_zero_loss():
    s = _bind(multitask.FAMO(), 3)
    state = ref.famo_init(3)
    for losses in ([1.0, 2.0, 0.0], [0.5, 2.5, 0.0], [0.25, 3.0, 1e-3]):
        _, w = _combine(s, np.array(losses))
        _, w_ref, state = ref.famo(losses, state, epsilon=F32_EPS)
        assert np.all(np.isfinite(w))
        np.testing.assert_allclose(w, w_ref, rtol=2e-5, atol=1e-7)


STCH_CASES = [
    dict(mu=1.0),
    dict(mu=0.1, preference=[0.2, 0.3, 0.5], ideal=[0.01, -0.5, 1.0]),
    dict(mu=0.5, log_losses=True),
    dict(mu=0.02, preference=[1.0, 2.0, 4.0], log_losses=True),
]


@pytest.mark.parametrize("case", range(len(STCH_CASES)))
def test_stch(case):
    kwargs = STCH_CASES[case]
    losses = np.array([0.05, 1.0, 30.0]) if case % 2 else np.array([0.7, 2.5, 1.2])
    s = _bind(multitask.STCH(**kwargs), 3)
    total, w = _combine(s, losses)
    total_ref, w_ref = ref.stch(losses, **kwargs)
    assert total == pytest.approx(total_ref, rel=1e-6, abs=1e-6)
    np.testing.assert_allclose(w, w_ref, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(_autodiff_weights(s, losses), w_ref, rtol=1e-5, atol=1e-7)
    # a smooth maximum: max_i x_i <= total <= max_i x_i + mu log k, x = p (f - z)
    f = np.log(losses) if kwargs.get("log_losses") else losses
    x = np.asarray(kwargs.get("preference", np.ones(3))) * (f - np.asarray(kwargs.get("ideal", np.zeros(3))))
    assert x.max() - 1e-5 <= total <= x.max() + kwargs["mu"] * np.log(3) + 1e-5


def test_stch_warmup_measures_the_nadir():
    s = _bind(multitask.STCH(mu=0.3, warmup_steps=2, log_losses=True), 2)
    seq = [np.array([2.0, 0.5]), np.array([1.0, 0.3]), np.array([0.8, 0.2]), np.array([0.5, 0.25])]
    for t, losses in enumerate(seq):
        total, w = _combine(s, losses)
        if t < 2:  # warm-up: the plain sum of the log-losses
            assert total == pytest.approx(np.log(losses).sum(), rel=1e-6)
            np.testing.assert_allclose(w, 1.0 / losses, rtol=1e-6)
        else:
            total_ref, w_ref = ref.stch(losses, mu=0.3, scale=np.mean(seq[:2], axis=0), log_losses=True)
            assert total == pytest.approx(total_ref, rel=1e-5, abs=1e-6)
            np.testing.assert_allclose(w, w_ref, rtol=1e-5)
    # evaluation does not measure
    count = float(_np(s.count))
    _combine(s, seq[0], training=False)
    assert float(_np(s.count)) == count == 2.0


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("name", CASE_NAMES)
def test_db_mtl(k, name):
    grads, gram, losses = _case(k, name)
    w = _compiled_weights(multitask.DBMTL, k, losses, gram)
    d_ref, head_ref = ref.db_mtl(losses, grads, epsilon=F32_EPS)
    d = ref.combined_gradient(w, grads)
    scale = max(np.linalg.norm(d_ref), _scale(grads) / losses.max())
    np.testing.assert_allclose(d, d_ref, rtol=0, atol=1e-5 * scale, err_msg=f"weights {w}")
    head = _np(_bind(multitask.DBMTL(), k).task_specific_weights(_t(losses), _t(w)))
    np.testing.assert_allclose(head, head_ref, rtol=1e-6)
    assert np.all(np.isfinite(w))


def _active_preference(grads):
    active = np.linalg.norm(grads, axis=1) > 0
    return active, active / active.sum()


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("name", CASE_NAMES)
def test_upgrad_and_dualproj(k, name):
    grads, gram, losses = _case(k, name)
    _, p = _active_preference(grads)
    for cls, reference in [(multitask.UPGrad, ref.upgrad), (multitask.DualProj, ref.dualproj)]:
        w = _compiled_weights(cls, k, losses, gram)
        w_ref = reference(grads, preference=p)
        _assert_same_update(w, w_ref, grads, 1e-5, f"{cls.__name__} {name}")
        # never against any task (to float32 rounding of the Gram matrix)
        d = ref.combined_gradient(w, grads)
        assert np.all(grads @ d >= -1e-5 * _scale(grads) ** 2), (cls.__name__, grads @ d)


def test_upgrad_and_dualproj_without_conflict_are_the_mean():
    grads = np.array([[1.0, 0.2, 0.0], [0.5, 1.0, 0.1], [0.3, 0.1, 2.0]])  # pairwise <g_i, g_j> > 0
    gram = grads @ grads.T
    for cls in (multitask.UPGrad, multitask.DualProj):
        w = _compiled_weights(cls, 3, np.ones(3), gram)  # the programs of test_upgrad_and_dualproj
        np.testing.assert_allclose(w, np.full(3, 1 / 3), rtol=1e-6)
    w = _compiled_weights(multitask.DualProj, 3, np.ones(3), gram, preference=(0.5, 0.25, 0.25))
    np.testing.assert_allclose(w, [0.5, 0.25, 0.25], rtol=1e-6)
    for cls in (multitask.UPGrad, multitask.DualProj):  # all gradients zero: finite
        assert np.all(np.isfinite(_compiled_weights(cls, 3, np.ones(3), np.zeros((3, 3)))))


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("name", CASE_NAMES)
def test_imtl_g(k, name):
    grads, gram, losses = _case(k, name)
    w = _compiled_weights(multitask.IMTLG, k, losses, gram)
    assert np.all(np.isfinite(w))
    active, _ = _active_preference(grads)
    if name == "opposed" and k > 2:
        # g_1 = -2 g_0 with a third gradient: no d has equal projections on
        # u_0 = -u_1 and u_2 unless they are all 0; the system C beta = 1 has no
        # solution (the paper's inverse and torchjd's pinv give different
        # least-squares answers); ours tends to d = 0 along the null direction.
        d = ref.combined_gradient(w, grads)
        assert np.linalg.norm(d) <= 1e-3 * _scale(grads)
        return
    w_ref = np.zeros(k)
    w_ref[active] = ref.imtl_g(grads[active])
    _assert_same_update(w, w_ref, grads, 1e-5, f"imtl_g {name}")
    if name in ("random", "ill_norms"):  # independent gradients: equal projections on the unit ones
        d = ref.combined_gradient(w, grads)
        proj = (grads / np.linalg.norm(grads, axis=1, keepdims=True)) @ d
        np.testing.assert_allclose(proj, proj.mean(), rtol=1e-4)


@pytest.mark.parametrize("k", [3, 4])  # (the compiled programs of test_upgrad_and_dualproj)
@pytest.mark.parametrize("ratio", [1e2, 1e4])
def test_dual_cone_solvers_with_one_gradient_far_larger(k, ratio):
    # UPGrad and DualProj solve quadratic programs: within 1e-4 (relative) of
    # the exact float64 NNLS solution up to gradient-norm ratios of 10^4.
    for seed in range(4):
        grads, gram = _spread_norms(k, ratio, seed)
        for cls, reference in [(multitask.UPGrad, ref.upgrad), (multitask.DualProj, ref.dualproj)]:
            d = ref.combined_gradient(_compiled_weights(cls, k, np.ones(k), gram), grads)
            d_ref = ref.combined_gradient(reference(grads), grads)
            err = np.linalg.norm(d - d_ref) / np.linalg.norm(d_ref)
            assert err <= 1e-4, (cls.__name__, seed, err)


# ----------------------------------------------------------------- GradDrop

_GRADDROP = {}


def _graddrop(k, leak):
    """GradDrop's combine_elementwise with the draws given, compiled as the train step is."""
    key = (k, str(leak))
    if key not in _GRADDROP:
        fn = _bind(multitask.GradDrop(leak=leak), k).combine_elementwise
        if _backend.name() == "tensorflow":
            import tensorflow as tf

            fn = tf.function(fn)
        elif _backend.name() == "jax":
            import jax

            fn = jax.jit(fn)
        _GRADDROP[key] = fn
    return _GRADDROP[key]


def _purity(grads):
    magnitude = np.abs(grads).sum(axis=0)
    return np.where(magnitude > 0, 0.5 * (1 + grads.sum(axis=0) / np.where(magnitude > 0, magnitude, 1)), 0.5)


@pytest.mark.parametrize("k", KS)
def test_graddrop_against_reference(k):
    rng = np.random.default_rng(30 + k)
    cases = dict(_grad_cases(k))
    # magnitudes from 1e-30 to 1e30 within each gradient, and coordinates where every g_i is 0
    cases["extreme"] = rng.normal(size=(k, 7)) * 10.0 ** rng.uniform(-30, 30, size=(k, 7))
    cases["extreme"][:, 2] = 0.0
    worst = 0.0
    for leak in (0.0, [float(v) for v in np.linspace(0.0, 1.0, k)]):
        fn = _graddrop(k, leak)
        for name, grads in cases.items():
            g32 = grads.astype(np.float32)
            u = rng.uniform(size=g32.shape[1]).astype(np.float32)
            # a draw within float32 rounding of P could fall on either side: move it away
            p = _purity(g32.astype(np.float64))
            u = np.where(np.abs(u - p) < 1e-4, np.float32(0.5) * (u + np.float32(p > 0.5)), u)
            d, kept, present = fn([_t(g) for g in g32], _t(u))
            d_ref, kept_ref, present_ref = ref.graddrop(g32, u, leak)
            scale = np.abs(g32.astype(np.float64)).sum(axis=0)
            err = np.max(np.abs(_np(d) - d_ref) / np.where(scale > 0, scale, 1.0))
            worst = max(worst, err)
            assert err <= k * F32_EPS, (name, leak, err)
            np.testing.assert_allclose(_np(kept), kept_ref, rtol=1e-6, err_msg=name)
            np.testing.assert_array_equal(_np(present), present_ref, err_msg=name)
    print(f"GradDrop k={k}: worst |d - d_ref| / sum_i |g_i| = {worst:.2e}")


def test_graddrop_draws_expectation_and_exact_cases():
    rng = np.random.default_rng(3)
    base = rng.normal(size=(3, 6))
    base[:, 0] = np.abs(base[:, 0])  # the tasks agree: always kept
    base[:, 1] = -np.abs(base[:, 1])
    base = base.astype(np.float32)
    n = 20000
    grads = np.tile(base, (1, n))
    s = _bind(multitask.GradDrop(seed=4), 3)
    d = _np(s.combine_elementwise([_t(g) for g in grads])[0]).reshape(n, 6)
    positive = np.where(base > 0, base, 0).astype(np.float64).sum(axis=0)
    negative = np.where(base < 0, base, 0).astype(np.float64).sum(axis=0)
    # every coordinate keeps exactly one sign
    one_sign = np.minimum(np.abs(d - positive), np.abs(d - negative))
    assert np.max(one_sign / np.abs(base).sum(axis=0)) <= 4 * F32_EPS
    np.testing.assert_allclose(
        d[:, :2], np.broadcast_to(base[:, :2].astype(np.float64).sum(axis=0), (n, 2)), rtol=4 * F32_EPS
    )
    # the mean over the draws is the expectation (5 standard errors)
    p = _purity(base.astype(np.float64))
    std = np.abs(positive - negative) * np.sqrt(p * (1 - p))
    expected = ref.graddrop_expectation(base)
    assert np.all(np.abs(d.mean(axis=0) - expected) <= 5 * std / np.sqrt(n) + 1e-6), (
        d.mean(axis=0),
        expected,
    )
    # reproducible from the seed; fresh draws at every call (one shape: one set of eager kernels)
    tensors = [_t(g) for g in grads]
    again = _bind(multitask.GradDrop(seed=4), 3).combine_elementwise(tensors)[0]
    np.testing.assert_array_equal(_np(again), d.ravel())
    assert not np.array_equal(_np(s.combine_elementwise(tensors)[0]), d.ravel())
    # leak = 1: the plain sum, bit for bit
    full = _bind(multitask.GradDrop(leak=1.0), 3).combine_elementwise(tensors)[0]
    np.testing.assert_array_equal(_np(full), (grads[0] + grads[1]) + grads[2])


def test_graddrop_float16_gradients_keep_their_dtype_and_a_float32_purity():
    # sum_i |g_i| = 9e4 overflows float16 (P would be NaN); computed in float32 it is 2/3.
    g = [np.full((2, 2), v, "float16") for v in (3e4, 3e4, -3e4)]
    s = _bind(multitask.GradDrop(), 3)
    d, _, _ = s.combine_elementwise(
        [ops.convert_to_tensor(x) for x in g], uniform=_t(np.array([[0.1, 0.6], [0.7, 0.99]]))
    )
    assert keras.backend.standardize_dtype(d.dtype) == "float16"
    np.testing.assert_array_equal(_np(d), [[6e4, 6e4], [-3e4, -3e4]])


def test_graddrop_arguments():
    with pytest.raises(ValueError, match="`leak`"):
        multitask.GradDrop(leak=1.5)
    with pytest.raises(TypeError, match="`leak`"):
        multitask.GradDrop(leak="0.1")
    with pytest.raises(ValueError, match="`leak`"):
        multitask.GradDrop(leak=[0.1, 0.2, 0.3]).bind(["a", "b"])
    with pytest.raises(ValueError, match="`leak`"):
        multitask.GradDrop(leak={"a": 0.1, "c": 0.2}).bind(["a", "b"])
    with pytest.raises(TypeError, match="`seed`"):
        multitask.GradDrop(seed=0.5)
    s = multitask.GradDrop(leak={"b": 1.0, "a": 0.0}, seed=1)
    assert multitask.GradDrop.from_config(s.get_config()).get_config() == s.get_config()
    d, _, _ = s.bind(["a", "b"]).combine_elementwise(
        [_t([1.0, -1.0]), _t([-1.0, 1.0])], uniform=_t([0.0, 0.0])
    )
    # P = 1/2, U = 0 < P: the positives are kept; b (leak 1) keeps its -1 too, a (leak 0) drops its -1
    np.testing.assert_array_equal(_np(d), [0.0, 1.0])


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("name", CASE_NAMES)
def test_aligned_mtl(k, name):
    grads, gram, losses = _case(k, name)
    w = _compiled_weights(multitask.AlignedMTL, k, losses, gram)
    assert np.all(np.isfinite(w))
    _, p = _active_preference(grads)
    # the reference takes the SVD of the gradients (float64), ours the Jacobi
    # eigendecomposition of their float32 Gram matrix
    d_ref = ref.aligned_mtl(grads, preference=p)
    np.testing.assert_allclose(ref.combined_gradient(w, grads), d_ref, rtol=0, atol=1e-5 * _scale(grads))


@pytest.mark.parametrize("k", [3, 5])  # (k = 8: test_peers)
def test_aligned_mtl_with_one_gradient_far_larger(k):
    # The eigenvalues of the Gram matrix spread by ratio^2; eigh's smallest
    # ones were 10x off at 10^4 (the reason for the Jacobi solver).
    for ratio in (1e2, 1e4):
        for seed in range(4):
            grads, gram = _spread_norms(k, ratio, seed)
            d = ref.combined_gradient(_compiled_weights(multitask.AlignedMTL, k, np.ones(k), gram), grads)
            d_ref = ref.aligned_mtl(grads)
            err = np.linalg.norm(d - d_ref) / np.linalg.norm(d_ref)
            assert err <= 1e-4, (ratio, seed, err)


def _gradvac_orders(k, rng):
    return [list(rng.permutation([j for j in range(k) if j != i])) for i in range(k)]


# eager (the targets are state): 1-2 s per case, so k = 3 for most
@pytest.mark.parametrize(
    "k,name",
    [(2, "opposed"), (3, "zero"), (3, "ratio"), (4, "conflicting")],
)
def test_gradvac_sequence(k, name):
    if name == "ratio":
        grads, _ = _spread_norms(k, 1e4, k)
    else:
        grads = _grad_cases(k)[name]
    s = _bind(multitask.GradVac(beta=0.3), k)
    phi = np.zeros((k, k))
    rng = np.random.default_rng(k)
    for step in range(3):
        # (exactly opposed stays exact under a power of 2: near-opposed pairs
        # are resolved only to sqrt(eps) by a float32 Gram matrix, see GradVac)
        factor = 2.0**step if name == "opposed" else 1 + 0.1 * step * rng.uniform(size=(k, 1))
        g = grads * factor
        gram = (g.astype(np.float32) @ g.astype(np.float32).T).astype(np.float64)
        orders = _gradvac_orders(k, rng)
        full = [[i] + o for i, o in enumerate(orders)]  # (own index first: skipped)
        w = _np(s.task_weights(_t(np.ones(k)), _t(gram), order=full))
        d_ref, phi = ref.gradvac(g, orders, phi, beta=0.3)
        np.testing.assert_allclose(
            ref.combined_gradient(w, g), d_ref, rtol=0, atol=1e-5 * _scale(g), err_msg=f"step {step}"
        )
        np.testing.assert_allclose(_np(s.phi_hat), phi, rtol=0, atol=1e-5, err_msg=f"step {step}")
    assert np.any(phi != 0) or (name == "zero" and k == 2)


def test_gradvac_random_orders_and_eval():
    grads = _grad_cases(3)["conflicting"]
    gram = ref.gram_of(grads)
    s = _bind(multitask.GradVac(beta=0.5, seed=0), 3)
    phi = np.zeros((3, 3))
    sets = ref.pcgrad_permutation_sets(3)
    used = set()
    for _ in range(12):
        w = _weights(s, np.ones(3), gram)
        state = _np(s.phi_hat)
        # each call follows one set of orders, and its target update
        errors = []
        for orders in sets:
            d_ref, phi_ref = ref.gradvac(grads, orders, phi, beta=0.5)
            errors.append(
                np.max(np.abs(ref.combined_gradient(w, grads) - d_ref)) / _scale(grads)
                + np.max(np.abs(state - phi_ref))
            )
        best = int(np.argmin(errors))
        assert errors[best] <= 1e-5, errors
        used.add(best)
        phi = state
    assert len(used) >= 2
    # not training: the targets stay as they are
    s.task_weights(_t(np.ones(3)), _t(gram), training=False)
    np.testing.assert_array_equal(_np(s.phi_hat), phi)


# ------------------------------------------------- Nash-MTL and FairGrad


def _assert_fair_share(w, grads, gram, alpha, what, rel=1e-4):
    """Ours against the float64 scipy solution: the relative error of d, or
    w = 0 where there is no solution (0 in the convex hull of the gradients)."""
    assert np.all(np.isfinite(w)), (what, w)
    w_ref = ref.fair_share(grads, gram, alpha)
    if w_ref is None:
        np.testing.assert_array_equal(w, 0.0, err_msg=what)
        return 0.0
    d, d_ref = ref.combined_gradient(w, grads), ref.combined_gradient(w_ref, grads)
    err = np.linalg.norm(d - d_ref) / np.linalg.norm(d_ref)
    assert err <= rel, (what, err, w, w_ref)
    return err


@pytest.mark.parametrize("k", KS)
def test_nash_mtl_on_the_shared_cases(k):
    for name in CASE_NAMES:
        grads, gram, losses = _case(k, name)
        w = _compiled_weights(multitask.NashMTL, k, losses, gram)
        _assert_fair_share(w, grads, gram, 1.0, f"nash_mtl {name}")
        if name == "zero":
            assert w[1] == 0.0
        if ref.fair_share(grads, gram) is not None:
            # the bargaining solution: ||d||^2 = k' (the tasks with a gradient)
            d = ref.combined_gradient(w, grads)
            assert d @ d == pytest.approx(np.sum(np.diag(gram) > 0), rel=1e-4), name


def _exactness_cases():
    # (strategy class, kwargs, alpha, k); TensorFlow and JAX compile one
    # program per entry, so they get k = 3 only (the sweep is the same code)
    cases = [(multitask.NashMTL, {}, 1.0, 3), (multitask.FairGrad, {"alpha": 2.0}, 2.0, 3)]
    if _backend.name() == "torch":
        for k in (2, 4, 6, 8):
            cases += [(multitask.NashMTL, {}, 1.0, k)]
            cases += [(multitask.FairGrad, {"alpha": a}, a, k) for a in (0.5, 2.0)]
    return cases


def test_nash_mtl_and_fairgrad_exact_up_to_norm_ratio_1e4():
    worst = 0.0
    for cls, kwargs, alpha, k in _exactness_cases():
        for ratio, seed in [(1e2, 0), (1e4, 1)]:
            grads, gram = _spread_norms(k, ratio, seed)
            w = _compiled_weights(cls, k, np.ones(k), gram, **kwargs)
            err = _assert_fair_share(w, grads, gram, alpha, f"{cls.__name__} {kwargs} k={k} ratio={ratio}")
            worst = max(worst, err)
    print(f"nash_mtl / fairgrad: worst relative error of d vs float64 = {worst:.1e}")


def test_fairgrad_alpha_one_is_nash_mtl_and_solves_its_condition():
    for seed in range(3):
        grads = np.random.default_rng(seed).normal(size=(3, 5)) * np.array([[1.0], [10.0], [0.1]])
        gram = (grads @ grads.T).astype(np.float32).astype(np.float64)
        nash = _compiled_weights(multitask.NashMTL, 3, np.ones(3), gram)
        fair = _compiled_weights(multitask.FairGrad, 3, np.ones(3), gram, alpha=1.0)
        np.testing.assert_allclose(fair, nash, rtol=1e-6)
        # the defining conditions, checked on the weights themselves
        np.testing.assert_allclose(nash * (gram @ nash), 1.0, rtol=1e-4)
        fair2 = _compiled_weights(multitask.FairGrad, 3, np.ones(3), gram, alpha=2.0)
        np.testing.assert_allclose(np.sqrt(fair2) * (gram @ fair2), 1.0, rtol=1e-4)
    # alpha = 0: the utilitarian limit w = 1 (0 for a task without a gradient)
    s = _bind(multitask.FairGrad(alpha=0.0), 3)
    np.testing.assert_array_equal(_weights(s, np.ones(3), np.diag([1.0, 0.0, 4.0])), [1.0, 0.0, 1.0])


def test_nash_mtl_and_fairgrad_arguments():
    with pytest.raises(ValueError, match="alpha"):
        multitask.FairGrad(alpha=-1.0)
    with pytest.raises(TypeError, match="alpha"):
        multitask.FairGrad(alpha="1")
    for cls in (multitask.NashMTL, multitask.FairGrad):
        with pytest.raises(ValueError, match="max_iterations"):
            cls(max_iterations=0)
        config = cls(max_iterations=7).get_config()
        assert config["max_iterations"] == 7 and cls.from_config(config).max_iterations == 7
    assert multitask.FairGrad.from_config(multitask.FairGrad(alpha=3.0).get_config()).alpha == 3.0
