"""float64 NumPy references for keras_tricks.multitask, written from the papers.

Conventions (those of `keras_tricks.multitask`, see docs/multitask.md):

* Gradient-based strategies are functions `(losses, gram, ...) -> weights`,
  where `gram[i, j] = <g_i, g_j>` for the per-task gradients g_i with respect
  to the shared parameters, and the update direction is
  `d = sum_i weights[i] * g_i` (`combined_gradient(weights, grads)`).
* Loss-based strategies are functions `losses -> (total, weights)` with
  `weights[i] = d total / d L_i` at these losses.

The constrained problems (MGDA, CAGrad, primary/auxiliary) are solved here by
methods that differ from an in-graph iterative solver: closed forms for two
tasks, and for more tasks an exact enumeration of active sets (MGDA),
`scipy.optimize.nnls` (primary/auxiliary) and SLSQP on the simplex (CAGrad).

Papers:
  Chen et al. 2018, GradNorm (ICML).          Sener & Koltun 2018, MGDA-UB (NeurIPS).
  Yu et al. 2020, PCGrad (NeurIPS).           Liu et al. 2021, CAGrad (NeurIPS).
  Kendall et al. 2018, uncertainty (CVPR).    Liu et al. 2019, DWA / MTAN (CVPR).
  Su Jianlin, 多任务学习漫谈 I (loss-based: initial, prior, realtime, generalized
  mean), II (gradient-norm normalisation), III (primary and auxiliary tasks), 2022.
  Lin et al. 2022, RLW (TMLR).                Liu et al. 2023, FAMO (NeurIPS).
  Lin et al. 2023, DB-MTL (arXiv 2308.12029). Lin et al. 2024, STCH (ICML).
  Chen et al. 2020, GradDrop (NeurIPS, arXiv 2010.06808).
  Senushkin et al. 2023, Aligned-MTL (CVPR).   Wang et al. 2021, GradVac (ICLR).
"""

import itertools

import numpy as np
from scipy import optimize

F64 = np.float64


def _as(x):
    return np.asarray(x, dtype=F64)


def combined_gradient(weights, grads):
    """d = sum_i weights[i] * grads[i]; grads (k, n)."""
    return _as(weights) @ _as(grads)


def gram_of(grads):
    grads = _as(grads)
    return grads @ grads.T


def vectors_from_gram(gram):
    """Vectors V (k, k) with V V^T = gram (a symmetric square root), so that the
    problems stated on gradients can be solved from the Gram matrix alone."""
    gram = _as(gram)
    gram = 0.5 * (gram + gram.T)
    vals, vecs = np.linalg.eigh(gram)
    vals = np.clip(vals, 0.0, None)
    return vecs * np.sqrt(vals)[None, :]


# --------------------------------------------------------------------------
# Loss-based strategies: losses -> (total, weights)
# --------------------------------------------------------------------------


def equal(losses, weights=None):
    """total = sum_i w_i L_i with fixed w (ones by default, Keras's default)."""
    losses = _as(losses)
    w = np.ones_like(losses) if weights is None else _as(weights)
    return float(np.sum(w * losses)), w


def initial(losses, initial_losses):
    """Su part I, "initial state": alpha_i = 1 / L_i(init); total = sum L_i / L_i(init)."""
    losses, l0 = _as(losses), _as(initial_losses)
    w = 1.0 / l0
    return float(np.sum(w * losses)), w


def prior(losses, prior_losses):
    """Su part I, "prior state": alpha_i = 1 / L_i of the label-prior predictor."""
    return initial(losses, prior_losses)


def prior_loss(y, kind):
    """Loss of the best constant predictor that only knows the label prior.

    categorical: entropy -sum_c p_c log p_c of the class frequencies (y integer
        labels, or one-hot / probability rows on the last axis);
    binary: mean over the label columns of the Bernoulli entropy of the
        positive rate (y in {0, 1}, any shape; the last axis is the labels when
        ndim >= 2, as binary_crossentropy averages over it);
    regression: the variance of the targets (the MSE of predicting their
        mean), averaged over the last axis when ndim >= 2.
    """
    y = np.asarray(y)
    if kind == "categorical":
        if y.ndim >= 2 and y.shape[-1] > 1 and np.issubdtype(y.dtype, np.floating):
            p = _as(y).reshape(-1, y.shape[-1]).mean(axis=0)
        else:
            _, counts = np.unique(y.reshape(-1), return_counts=True)
            p = counts / counts.sum()
        p = p[p > 0]
        return float(-np.sum(p * np.log(p)))
    if kind == "binary":
        y = _as(y)
        p = y.reshape(-1, y.shape[-1]).mean(axis=0) if y.ndim >= 2 else np.array([y.mean()])
        h = np.zeros_like(p)
        inner = (p > 0) & (p < 1)
        q = p[inner]
        h[inner] = -(q * np.log(q) + (1 - q) * np.log(1 - q))
        return float(h.mean())
    if kind == "regression":
        y = _as(y)
        if y.ndim >= 2:
            return float(y.reshape(-1, y.shape[-1]).var(axis=0).mean())
        return float(y.var())
    raise ValueError(f"kind must be categorical, binary or regression, got {kind!r}")


def realtime(losses, epsilon=0.0):
    """Su part I, "real-time state": total = sum_i L_i / sg(L_i + eps); its gradient
    is that of sum_i log(L_i + eps), weights 1 / (L_i + eps)."""
    losses = _as(losses)
    w = 1.0 / (losses + epsilon)
    return float(np.sum(w * losses)), w


def generalized_mean(losses, gamma=0.0):
    """Su part I: M = ((1/k) sum L_i^gamma)^(1/gamma), geometric mean at gamma = 0.

    dM/dL_i = (1/k) L_i^(gamma - 1) M^(1 - gamma) (= M / (k L_i) at gamma = 0)."""
    losses = _as(losses)
    k = losses.size
    if gamma == 0:
        m = float(np.exp(np.mean(np.log(losses))))
    else:
        m = float(np.mean(losses**gamma) ** (1.0 / gamma))
    w = losses ** (gamma - 1.0) * m ** (1.0 - gamma) / k
    return m, w


def uncertainty(losses, log_vars):
    """Kendall et al. 2018: total = sum_i L_i / (2 sigma_i^2) + log sigma_i with
    s_i = log sigma_i^2, i.e. sum_i 0.5 exp(-s_i) L_i + 0.5 s_i.

    Returns (total, weights, d total / d s)."""
    losses, s = _as(losses), _as(log_vars)
    w = 0.5 * np.exp(-s)
    total = float(np.sum(w * losses + 0.5 * s))
    return total, w, -w * losses + 0.5


def uncertainty_optimum(losses):
    """The log-variances minimising the uncertainty objective: sigma_i^2 = L_i."""
    return np.log(_as(losses))


def dwa(losses, prev1=None, prev2=None, temperature=2.0):
    """Liu et al. 2019 (DWA): r_i = L_i(t-1) / L_i(t-2) of the epoch-mean losses,
    w_i = k exp(r_i / T) / sum_j exp(r_j / T); w = 1 for the first two epochs."""
    losses = _as(losses)
    k = losses.size
    if prev1 is None or prev2 is None:
        w = np.ones(k)
    else:
        r = _as(prev1) / _as(prev2)
        e = np.exp((r - r.max()) / temperature)
        w = k * e / e.sum()
    return float(np.sum(w * losses)), w


# --------------------------------------------------------------------------
# Gradient-based strategies: (losses, gram) -> weights
# --------------------------------------------------------------------------


def grad_norm_normalization(losses, gram):
    """Su part II: w_i = 1 / ||g_i||; 1 where g_i = 0 (a task without a path to
    the shared variables keeps its plain loss: keras_tricks's convention)."""
    norms = np.sqrt(np.clip(np.diag(_as(gram)), 0, None))
    out = np.ones_like(norms)
    nz = norms > 0
    out[nz] = 1.0 / norms[nz]
    return out


def gradnorm_init(k):
    return {"w": np.ones(k), "l0": None}


def gradnorm(losses, gram, state, alpha=1.5, learning_rate=0.025):
    """Chen et al. 2018 (GradNorm), one step, with the conventions of the API.

    Returns the current weights w and the new state. Update: G_i = w_i ||g_i||,
    Gbar = mean(G), r_i = (L_i / L0_i) / mean_j(L_j / L0_j), target
    Gbar r_i^alpha held constant; one gradient step on sum_i |G_i - target_i|
    in w (its derivative is sign(G_i - target_i) ||g_i||), clipped at >= 0 and
    renormalised to sum k. Tasks with g_i = 0 (no path to the shared
    variables) are left out of the means and keep their weight; the others
    are renormalised to k minus the weights left out (keras_tricks's
    convention)."""
    losses = _as(losses)
    k = losses.size
    w = _as(state["w"]).copy()
    l0 = losses.copy() if state["l0"] is None else _as(state["l0"])
    norms = np.sqrt(np.clip(np.diag(_as(gram)), 0, None))
    on = norms > 0
    big_g = w * norms
    ratio = losses / l0
    r = ratio / ratio[on].mean()
    target = big_g[on].mean() * r**alpha
    new_w = w - learning_rate * np.sign(big_g - target) * norms
    new_w = np.clip(new_w, 0.0, None)
    new_w[on] = new_w[on] * (k - w[~on].sum()) / new_w[on].sum()
    return w, {"w": new_w, "l0": l0}


def _mgda_two(gram):
    g11, g12, g22 = gram[0, 0], gram[0, 1], gram[1, 1]
    den = g11 + g22 - 2 * g12  # = ||g1 - g2||^2
    if den <= 0:
        return np.array([0.5, 0.5])
    a = np.clip((g22 - g12) / den, 0.0, 1.0)
    return np.array([a, 1 - a])


def _mgda_enumerate(gram):
    """Exact min-norm point: for each support S, solve the KKT system of
    min w^T G w s.t. sum w = 1 on S; keep feasible (w >= 0) candidates."""
    k = gram.shape[0]
    best, best_val = None, np.inf
    for size in range(1, k + 1):
        for s in itertools.combinations(range(k), size):
            s = list(s)
            a = np.zeros((size + 1, size + 1))
            a[:size, :size] = 2 * gram[np.ix_(s, s)]
            a[:size, size] = 1
            a[size, :size] = 1
            b = np.zeros(size + 1)
            b[size] = 1
            sol, *_ = np.linalg.lstsq(a, b, rcond=None)
            ws = sol[:size]
            if np.any(ws < -1e-12) or abs(ws.sum() - 1) > 1e-9:
                continue
            w = np.zeros(k)
            w[s] = np.clip(ws, 0, None)
            w /= w.sum()
            val = w @ gram @ w
            if val < best_val - 1e-15:
                best, best_val = w, val
    return best


def mgda(losses, gram):
    """Sener & Koltun 2018: w = argmin_{w in simplex} w^T G w (min-norm point of
    the convex hull of the gradients). Closed form for k = 2, exact active-set
    enumeration otherwise (k <= 8). Tasks with g_i = 0 (no path to the shared
    variables) are left out (weight 0: keras_tricks's convention)."""
    gram = _as(gram)
    on = np.diag(gram) > 0
    if not on.all() and on.any():
        w = np.zeros(len(on))
        w[on] = mgda(losses, gram[np.ix_(on, on)]) if on.sum() > 1 else 1.0
        return w
    if gram.shape[0] == 2:
        return _mgda_two(gram)
    return _mgda_enumerate(gram)


def mgda_slsqp(gram):
    """The MGDA problem by SLSQP on the simplex (a cross-check)."""
    gram = _as(gram)
    k = gram.shape[0]
    res = optimize.minimize(
        lambda w: w @ gram @ w,
        np.full(k, 1.0 / k),
        jac=lambda w: 2 * gram @ w,
        bounds=[(0, 1)] * k,
        constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1, "jac": lambda w: np.ones(k)}],
        method="SLSQP",
        options={"ftol": 1e-15, "maxiter": 1000},
    )
    return res.x


def pcgrad(losses, gram, permutations):
    """Yu et al. 2020 (PCGrad) with explicit orders: permutations[i] lists the
    other tasks j in the order task i is projected against them. g_i' starts at
    g_i; for each j: if <g_i', g_j> < 0, g_i' -= <g_i', g_j> / ||g_j||^2 g_j
    (projection on the normal plane of the ORIGINAL g_j). d = sum_i g_i'.
    Tracked as coefficients on the original gradients, so this needs only G."""
    gram = _as(gram)
    k = gram.shape[0]
    weights = np.zeros(k)
    for i in range(k):
        order = list(permutations[i])
        assert sorted(order) == [j for j in range(k) if j != i], order
        a = np.zeros(k)
        a[i] = 1.0
        for j in order:
            dot = a @ gram[:, j]
            if dot < 0 and gram[j, j] > 0:
                a[j] -= dot / gram[j, j]
        weights += a
    return weights


def pcgrad_vectors(grads, permutations):
    """PCGrad on explicit gradient vectors (a cross-check of `pcgrad`)."""
    grads = _as(grads)
    out = np.zeros(grads.shape[1])
    for i, order in enumerate(permutations):
        gi = grads[i].copy()
        for j in order:
            dot = gi @ grads[j]
            if dot < 0:
                gi = gi - dot / (grads[j] @ grads[j]) * grads[j]
        out += gi
    return out


def pcgrad_permutation_sets(k):
    """Every choice of one order of the other tasks per task ((k-1)!^k sets)."""
    per_task = [list(itertools.permutations([j for j in range(k) if j != i])) for i in range(k)]
    return [list(p) for p in itertools.product(*per_task)]


def _cagrad_two(gram, c):
    """Closed form of min_{w in [0,1]} <g_w, g0> + s ||g_w||, g_w = w g1 + (1-w) g2.

    With b = g2, e = g1 - g2: the objective is alpha w + s sqrt(q(w)) + const,
    alpha = <e, g0>, q(w) = ||b + w e||^2 = ((beta + w E)^2 + D) / E, where
    beta = <b, e>, E = ||e||^2, D = ||b||^2 E - beta^2 >= 0. It is convex; a
    stationary point has t = beta + w E with t^2 = alpha^2 D / (s^2 E - alpha^2)
    and sign(t) = -sign(alpha); otherwise the minimum is at an end."""
    k = 2
    ones = np.ones(k) / k
    g0g0 = ones @ gram @ ones
    s = c * np.sqrt(max(g0g0, 0.0))
    g11, g12, g22 = gram[0, 0], gram[0, 1], gram[1, 1]
    big_e = g11 + g22 - 2 * g12
    alpha = 0.5 * (g11 - g22)  # <g1 - g2, (g1 + g2) / 2>
    beta = g12 - g22
    big_b = g22

    def obj(w):
        q = max(big_b + 2 * w * beta + w * w * big_e, 0.0)
        return alpha * w + s * np.sqrt(q)

    if big_e <= 0:
        w = 0.5
    else:
        cands = [0.0, 1.0]
        d = max(big_b * big_e - beta * beta, 0.0)
        den = s * s * big_e - alpha * alpha
        if den > 0:
            t = -np.sign(alpha) * np.sqrt(alpha * alpha * d / den)
            cands.append(float(np.clip((t - beta) / big_e, 0.0, 1.0)))
        w = min(cands, key=obj)
    return np.array([w, 1 - w])


def _cagrad_slsqp(gram, c):
    k = gram.shape[0]
    g0_coef = np.ones(k) / k
    s = c * np.sqrt(max(g0_coef @ gram @ g0_coef, 0.0))
    tiny = 1e-300

    def obj(w):
        return w @ gram @ g0_coef + s * np.sqrt(max(w @ gram @ w, tiny))

    def jac(w):
        return gram @ g0_coef + s * (gram @ w) / np.sqrt(max(w @ gram @ w, tiny))

    best = None
    starts = [np.full(k, 1.0 / k)] + [np.eye(k)[i] * 0.9 + 0.1 / k for i in range(k)]
    for x0 in starts:
        res = optimize.minimize(
            obj,
            x0,
            jac=jac,
            bounds=[(0, 1)] * k,
            constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1, "jac": lambda w: np.ones(k)}],
            method="SLSQP",
            options={"ftol": 1e-15, "maxiter": 1000},
        )
        w = np.clip(res.x, 0, None)
        w /= w.sum()
        if best is None or obj(w) < obj(best):
            best = w
    return best


def cagrad_inner(gram, c=0.5):
    """w* = argmin_{w in simplex} <g_w, g0> + c ||g0|| ||g_w|| (closed form for
    k = 2, SLSQP otherwise; the SLSQP solution is only a cross-check, see
    `cagrad`)."""
    gram = _as(gram)
    if gram.shape[0] == 2:
        return _cagrad_two(gram, c)
    scale = max(float(np.max(np.diag(gram))), np.finfo(F64).tiny)
    return _cagrad_slsqp(gram / scale, c)


def cagrad(losses, gram, c=0.5):
    """Liu et al. 2021 (CAGrad): g0 = mean g_i, phi = c^2 ||g0||^2, w* as in
    `cagrad_inner`; d = (g0 + sqrt(phi) / ||g_w*|| g_w*) / (1 + c^2). Where
    g_w* = 0 (only possible when 0 is in the hull and beats every other point)
    the second term is taken as 0. Returned as weights on the g_i.

    For k = 2 from the closed form of w*. For k > 2 from the primal problem
    the dual comes from (`cagrad_primal`: max_d min_i <g_i, d> s.t.
    ||d - g0|| <= c ||g0||, a smooth problem for SLSQP, unlike the inner one
    whose objective has a kink at g_w = 0), solved on vectors with the same
    Gram matrix and mapped back to weights by least squares."""
    gram = _as(gram)
    k = gram.shape[0]
    on = np.diag(gram) > 0
    if not on.all() and on.any():
        # tasks with g_i = 0 are left out (keras_tricks's convention)
        w = np.zeros(k)
        if on.sum() == 1:
            # one task: g_w = g0 = g_i, d = (1 + c) g_i / (1 + c^2)
            w[on] = (1 + c) / (1 + c * c)
        else:
            w[on] = cagrad(losses, gram[np.ix_(on, on)], c)
        return w
    g0_coef = np.ones(k) / k
    if k == 2:
        w = cagrad_inner(gram, c)
        sqrt_phi = c * np.sqrt(max(g0_coef @ gram @ g0_coef, 0.0))
        gw_norm = np.sqrt(max(w @ gram @ w, 0.0))
        lam = sqrt_phi / gw_norm if gw_norm > 0 else 0.0
        return (g0_coef + lam * w) / (1 + c * c)
    if c == 0:
        return g0_coef.copy()
    v = vectors_from_gram(gram)
    scale = float(np.max(np.linalg.norm(v, axis=1)))
    if scale == 0:
        return g0_coef.copy()
    d, _ = cagrad_primal(v / scale, c)
    weights, *_ = np.linalg.lstsq(v.T / scale, d, rcond=None)
    return weights / (1 + c * c)


def cagrad_primal(grads, c=0.5):
    """The primal problem of CAGrad solved over d directly (a cross-check):
    max_d min_i <g_i, d> s.t. ||d - g0|| <= c ||g0||. Returns d (not scaled by
    1 / (1 + c^2))."""
    grads = _as(grads)
    k, n = grads.shape
    g0 = grads.mean(axis=0)
    r2 = c * c * (g0 @ g0)

    def neg_t(z):
        return -z[-1]

    cons = [
        {"type": "ineq", "fun": lambda z: grads @ z[:n] - z[-1]},
        {"type": "ineq", "fun": lambda z: r2 - np.sum((z[:n] - g0) ** 2)},
    ]
    jac_cons = [
        {
            "type": "ineq",
            "fun": cons[0]["fun"],
            "jac": lambda z: np.concatenate([grads, -np.ones((k, 1))], axis=1),
        },
        {"type": "ineq", "fun": cons[1]["fun"], "jac": lambda z: np.concatenate([-2 * (z[:n] - g0), [0.0]])},
    ]
    z0 = np.concatenate([g0, [np.min(grads @ g0)]])
    res = optimize.minimize(
        neg_t,
        z0,
        jac=lambda z: np.concatenate([np.zeros(n), [-1.0]]),
        constraints=jac_cons,
        method="SLSQP",
        options={"ftol": 1e-15, "maxiter": 5000},
    )
    d = res.x[:n]
    return d, float(np.min(grads @ d))


def primary_auxiliary(losses, gram, primary=0):
    """Su part III: u = g_p + sum_{i != p} lambda_i g_i with lambda >= 0 minimising
    ||u||^2; weight 1 on the primary task. Closed form for one auxiliary task
    (lambda = relu(-G_pa) / G_aa), scipy.optimize.nnls otherwise."""
    gram = _as(gram)
    k = gram.shape[0]
    aux = [i for i in range(k) if i != primary]
    w = np.zeros(k)
    w[primary] = 1.0
    if gram[primary, primary] <= 0:
        # no path from the primary task to the shared variables: nothing to
        # protect, the auxiliary tasks get weight 1 (keras_tricks's convention)
        return np.ones(k)
    if k == 2:
        a = aux[0]
        w[a] = max(-gram[primary, a], 0.0) / gram[a, a] if gram[a, a] > 0 else 0.0
        return w
    v = vectors_from_gram(gram)  # rows: vectors with the same Gram matrix
    lam, _ = optimize.nnls(v[aux].T, -v[primary])
    w[aux] = lam
    return w


# --------------------------------------------------------------------------
# Exact solutions by enumerating faces, on the gradient vectors (float64)
# --------------------------------------------------------------------------


def _faces(k):
    for size in range(1, k + 1):
        yield from (list(s) for s in itertools.combinations(range(k), size))


def min_norm_point(grads):
    """The min-norm point of the convex hull of the rows of `grads` (k, n), exactly.

    For each face S (linearly independent g_S), the min-norm point of the
    affine hull of g_S is d = sum_S w_i g_i with w_S proportional to
    G_SS^-1 1; it is the answer when w_S >= 0 and the KKT certificate
    <g_j, d> >= ||d||^2 holds for every j (sufficient: the problem is
    convex). Returns (w, d). Independent of the core's solver: no bordered
    KKT system, no ridge, no scaling, float64 throughout."""
    grads = _as(grads)
    k = grads.shape[0]
    size = float(np.max(np.linalg.norm(grads, axis=1)))
    for s in _faces(k):
        gram = grads[s] @ grads[s].T
        if np.linalg.matrix_rank(grads[s]) < len(s):
            continue
        m = np.linalg.solve(gram, np.ones(len(s)))
        if np.any(m < 0):
            continue
        w = np.zeros(k)
        w[s] = m / m.sum()
        d = w @ grads
        if np.all(grads @ d >= d @ d - 1e-10 * size * np.linalg.norm(d)):
            return w, d
    raise ValueError("no face satisfies the KKT conditions (dependent gradients?)")


def cagrad_faces(grads, c):
    """CAGrad's update, exactly, from the primal problem max_d min_i <g_i, d>
    s.t. ||d - g0|| <= c ||g0|| (c > 0), by enumerating the set S of tasks
    where the minimum is attained.

    At the optimum d = g0 + m_S^T g_S with m_S >= 0, <g_i, d> = t on S and
    ||m_S^T g_S|| = r = c ||g0||: m_S = t G_SS^-1 1 - G_SS^-1 b_S (b = G g0),
    and t is the larger root of a quadratic. A face whose m_S >= 0 and whose
    d reaches <g_j, d> >= t for every task j is optimal (KKT). Returns
    d / (1 + c^2), the update of the paper."""
    grads = _as(grads)
    k = grads.shape[0]
    g0 = grads.mean(axis=0)
    r2 = c * c * (g0 @ g0)
    size = float(np.max(np.linalg.norm(grads, axis=1)))
    for s in _faces(k):
        if np.linalg.matrix_rank(grads[s]) < len(s):
            continue
        gram = grads[s] @ grads[s].T
        b = grads[s] @ g0
        p = np.linalg.solve(gram, np.ones(len(s)))
        q = np.linalg.solve(gram, b)
        a, beta, gamma = p.sum(), q.sum(), b @ q
        disc = beta * beta - a * (gamma - r2)
        if a <= 0 or disc < 0:
            continue
        t = (beta + np.sqrt(disc)) / a
        m = t * p - q
        if np.any(m < -1e-12 * np.max(np.abs(m))):
            continue
        d = g0 + np.clip(m, 0, None) @ grads[s]
        if np.all(grads @ d >= t - 1e-10 * size * np.linalg.norm(d)):
            return d / (1 + c * c)
    raise ValueError("no face satisfies the KKT conditions")


# --------------------------------------------------------------------------
# Post-2021 strategies (RLW, FAMO, STCH, DB-MTL, UPGrad, DualProj, IMTL-G)
# --------------------------------------------------------------------------


def _softmax(x):
    x = _as(x)
    e = np.exp(x - x.max())
    return e / e.sum()


def rlw(losses, normals):
    """Random loss weighting (Lin et al. 2022): w = softmax(e) for the draw e."""
    w = _softmax(normals)
    return float(w @ _as(losses)), w


def famo_init(k):
    return {"logits": np.zeros(k), "previous": None, "m": np.zeros(k), "v": np.zeros(k), "t": 0}


def famo(
    losses,
    state,
    learning_rate=0.025,
    weight_decay=1e-3,
    min_losses=None,
    epsilon=1e-8,
    optimizer="adam",
    adam_epsilon=1e-8,
):
    """One FAMO step (Liu et al. 2023, Algorithm 1; Adam as in the authors' code).

    Returns (total, weights, new state). The logits xi move first, by the
    log-loss decrease since the previous call, delta = log D(t-1) - log D(t):
    grad = J^T delta + gamma xi with J = d softmax(xi) / d xi, the full
    Jacobian matrix diag(z) - z z^T; then the step's weights are
    w_i = c z_i / D_i, c = 1 / sum_j z_j / D_j (the gradient of
    c sum_i z_i log D_i with c held constant)."""
    losses = _as(losses)
    k = losses.size
    low = np.zeros(k) if min_losses is None else _as(min_losses)
    d = np.maximum(losses - low, 0.0) + epsilon
    state = {key: (np.array(v, dtype=F64) if isinstance(v, np.ndarray) else v) for key, v in state.items()}
    xi = state["logits"]
    if state["previous"] is not None:
        delta = state["previous"] - np.log(d)
        z = _softmax(xi)
        jacobian = np.diag(z) - np.outer(z, z)
        grad = jacobian.T @ delta + weight_decay * xi
        if optimizer == "adam":
            b1, b2 = 0.9, 0.999
            state["t"] += 1
            state["m"] = b1 * state["m"] + (1 - b1) * grad
            state["v"] = b2 * state["v"] + (1 - b2) * grad**2
            m_hat = state["m"] / (1 - b1 ** state["t"])
            v_hat = state["v"] / (1 - b2 ** state["t"])
            xi = xi - learning_rate * m_hat / (np.sqrt(v_hat) + adam_epsilon)
        else:
            xi = xi - learning_rate * grad
    state["logits"] = xi
    state["previous"] = np.log(d)
    z = _softmax(xi)
    c = 1.0 / np.sum(z / d)
    w = c * z / d
    return float(w @ losses), w, state


def stch(losses, mu=1.0, preference=None, ideal=None, scale=None, log_losses=False):
    """Smooth Tchebycheff (Lin et al. 2024): total = mu log sum_i exp(p_i (f_i - z_i) / mu),
    f_i = L_i / n_i or log(L_i / n_i); weights d total / d L_i."""
    losses = _as(losses)
    k = losses.size
    p = np.ones(k) if preference is None else _as(preference)
    z = np.zeros(k) if ideal is None else _as(ideal)
    n = np.ones(k) if scale is None else _as(scale)
    if log_losses:
        f, df = np.log(losses / n), 1.0 / losses
    else:
        f, df = losses / n, 1.0 / n
    x = p * (f - z) / mu
    top = x.max()
    total = mu * (top + np.log(np.sum(np.exp(x - top))))
    return float(total), _softmax(x) * p * df


def db_mtl(losses, grads, epsilon=1e-8):
    """DB-MTL (Lin et al. 2023) without the gradient moving average (beta = 0),
    on the gradients themselves: h_i = grad log(L_i + epsilon) = g_i / (L_i + epsilon),
    d = sum_i (max_j ||h_j|| / ||h_i||) h_i (a zero h_i adds nothing).
    Returns (d, the coefficient of each task's own-parameter gradient)."""
    losses, grads = _as(losses), _as(grads)
    head = 1.0 / (losses + epsilon)
    h = grads * head[:, None]
    norms = np.linalg.norm(h, axis=1)
    alpha = np.divide(norms.max(), norms, out=np.zeros_like(norms), where=norms > 0)
    return alpha @ h, head


def dual_cone_weights(grads, u):
    """v = argmin_{v >= u} ||sum_i v_i g_i||^2 (Quinton & Rey 2024, Proposition 1),
    by non-negative least squares on lambda = v - u: min ||J^T lambda + J^T u||."""
    grads, u = _as(grads), _as(u)
    lam, _ = optimize.nnls(grads.T, -(grads.T @ u), maxiter=10000)
    return u + lam


def upgrad(grads, preference=None):
    """UPGrad (Quinton & Rey 2024): sum_i p_i pi_C(g_i), as weights on the g_i."""
    grads = _as(grads)
    k = grads.shape[0]
    p = np.full(k, 1.0 / k) if preference is None else _as(preference)
    return sum(dual_cone_weights(grads, p[i] * np.eye(k)[i]) for i in range(k))


def dualproj(grads, preference=None):
    """DualProj (Quinton & Rey 2024; GEM): pi_C(sum_i p_i g_i), as weights."""
    grads = _as(grads)
    k = grads.shape[0]
    p = np.full(k, 1.0 / k) if preference is None else _as(preference)
    return dual_cone_weights(grads, p)


def imtl_g(grads):
    """IMTL-G (Liu et al. 2021), the paper's closed form: with u_i = g_i / ||g_i||,
    D = [g_1 - g_i]_{i>1}, U = [u_1 - u_i]_{i>1}, alpha_{2..k} = g_1 U^T (D U^T)^-1,
    alpha_1 = 1 - sum alpha_{2..k} (least squares where D U^T is singular)."""
    grads = _as(grads)
    units = grads / np.linalg.norm(grads, axis=1, keepdims=True)
    d = grads[:1] - grads[1:]
    u = units[:1] - units[1:]
    a = d @ u.T
    rest = np.linalg.lstsq(a.T, u @ grads[0], rcond=None)[0]
    return np.concatenate([[1.0 - rest.sum()], rest])


def graddrop(grads, uniform, leak=0.0):
    """GradDrop (Chen et al. 2020, Algorithm 1, f = identity) on gradient vectors
    grads (k, n), given the draws uniform (n,): per coordinate,
    P = 1/2 (1 + sum_i g_i / sum_i |g_i|) (1/2 where every g_i is 0),
    M_i = [P > U][g_i > 0] + [P <= U][g_i < 0] (a tie keeps the negative sign),
    d = sum_i (l_i + (1 - l_i) M_i) g_i.
    Returns (d, kept, present): present[i] = #{g_i != 0}, kept[i] the sum of
    task i's coefficient over those coordinates."""
    grads, uniform = _as(grads), _as(uniform)
    k, n = grads.shape
    leak = np.broadcast_to(_as(leak), (k,))
    d, kept, present = np.zeros(n), np.zeros(k), np.zeros(k)
    for j in range(n):
        column = grads[:, j]
        magnitude = np.sum(np.abs(column))
        p = 0.5 * (1.0 + np.sum(column) / magnitude) if magnitude > 0 else 0.5
        for i in range(k):
            mask = (column[i] > 0 and p > uniform[j]) or (column[i] < 0 and p <= uniform[j])
            coefficient = 1.0 if mask else leak[i]
            d[j] += coefficient * column[i]
            if column[i] != 0:
                present[i] += 1
                kept[i] += coefficient
    return d, kept, present


def graddrop_expectation(grads, leak=0.0):
    """E_U[d] of `graddrop`: sum_i g_i (l_i + (1 - l_i)(P [g_i > 0] + (1 - P) [g_i < 0]))."""
    grads = _as(grads)
    k = grads.shape[0]
    leak = np.broadcast_to(_as(leak), (k,))[:, None]
    magnitude = np.sum(np.abs(grads), axis=0)
    p = np.where(
        magnitude > 0, 0.5 * (1.0 + np.sum(grads, axis=0) / np.where(magnitude > 0, magnitude, 1.0)), 0.5
    )
    keep = np.where(grads > 0, p, np.where(grads < 0, 1.0 - p, 0.0))
    return np.sum(grads * (leak + (1.0 - leak) * keep), axis=0)


def aligned_mtl(grads, preference=None, rank=None):
    """Aligned-MTL (Senushkin et al. 2023, Algorithm 1) on the gradient vectors:
    the gradient matrix G (n x k, columns g_i) = U Sigma W^T (thin SVD, the R
    non-zero singular values), aligned G_hat = sigma_R U W^T (orthogonal columns,
    all of norm sigma_R), d = G_hat u. Returns d (not weights: the SVD route
    never forms B). `rank` defaults to numpy's matrix_rank of G in float64."""
    grads = _as(grads)
    k = grads.shape[0]
    u = np.full(k, 1.0 / k) if preference is None else _as(preference)
    rank = np.linalg.matrix_rank(grads) if rank is None else rank
    if rank == 0:
        return np.zeros(grads.shape[1])
    left, sigma, right = np.linalg.svd(grads.T, full_matrices=False)
    left, sigma, right = left[:, :rank], sigma[:rank], right[:rank]
    return sigma[-1] * (left @ (right @ u))


def gradvac(grads, orders, phi_hat, beta=0.01, zero_below=1e-3):
    """GradVac (Wang et al. 2021, Algorithm 1) on the gradient vectors, with
    explicit orders (orders[i]: the other tasks in the order task i visits them)
    and the EMA targets phi_hat (k x k). For each i, g_i' = g_i; for each j:
    phi = cos(g_i', g_j); if phi < phi_hat_ij,
    g_i' += ||g_i'|| (phi_hat sqrt(1 - phi^2) - phi sqrt(1 - phi_hat^2))
    / (||g_j|| sqrt(1 - phi_hat^2)) g_j; then phi_hat_ij <- (1 - beta) phi_hat_ij
    + beta phi (the cosine before the correction, as in the paper's algorithm).
    Pairs where g_j is zero, or g_i' has cancelled (||g_i'|| <= zero_below times
    the sum of the norms of the terms it was built from: an exactly opposed g_j
    cancels it), are skipped (no cosine; phi_hat unchanged).
    Returns (d = sum_i g_i', new phi_hat)."""
    grads = _as(grads)
    phi_hat = _as(phi_hat).copy()
    d = np.zeros(grads.shape[1])
    for i in range(grads.shape[0]):
        gi = grads[i].copy()
        size = np.linalg.norm(gi)  # ||g_i|| + sum |a_j| ||g_j|| of the terms added
        for j in orders[i]:
            ni, nj = np.linalg.norm(gi), np.linalg.norm(grads[j])
            if ni <= zero_below * size or nj == 0:
                continue
            phi = np.clip(gi @ grads[j] / (ni * nj), -1.0, 1.0)
            target = phi_hat[i, j]
            if phi < target:
                a = (
                    ni
                    * (target * np.sqrt(1 - phi**2) - phi * np.sqrt(1 - target**2))
                    / (nj * np.sqrt(1 - target**2))
                )
                gi = gi + a * grads[j]
                size += abs(a) * nj
            phi_hat[i, j] = (1 - beta) * target + beta * phi
        d += gi
    return d, phi_hat


# --------------------------------------------------------------------------
# Nash-MTL (Navon et al. 2022) and FairGrad (Ban & Ji 2024)
# --------------------------------------------------------------------------


def zero_in_hull(grads):
    """Whether some convex combination of the rows of `grads` is 0 (a linear
    program: v >= 0, sum v = 1, grads^T v = 0)."""
    grads = _as(grads)
    k, n = grads.shape
    scale = np.linalg.norm(grads, axis=1, keepdims=True)
    units = grads / np.where(scale > 0, scale, 1.0)
    a_eq = np.vstack([units.T, np.ones((1, k))])
    b_eq = np.concatenate([np.zeros(n), [1.0]])
    res = optimize.linprog(np.zeros(k), A_eq=a_eq, b_eq=b_eq, bounds=[(0, None)] * k, method="highs")
    return res.status == 0


def fair_share(grads, gram, alpha=1.0):
    """The weights w > 0 with (G w)_i = w_i^(-1/alpha) over the tasks with a
    non-zero gradient (0 for the others); alpha = 1 is Nash-MTL's bargaining
    solution (Navon et al. 2022, eq. of Claim 3.1), any alpha FairGrad's
    (Ban & Ji 2024, eq. 4). None when no solution exists (0 in the convex
    hull of the gradients: the objective below is unbounded).

    float64: the minimiser of the convex 1/2 w^T G w - sum_i h(w_i),
    h'(w) = w^(-1/alpha), by scipy's interior-point trust-region method
    (`trust-constr`, bounds w >= 0), then polished as the root of
    w_i^(1/alpha) (G w)_i = 1 by `scipy.optimize.least_squares`; the result
    must satisfy that equation to 1e-10 (relative). Solved in w_i ||g_i||
    (a change of variables only, so that gradient norms 10^4 apart do not
    make scipy's tolerances meaningless)."""
    grads, gram = _as(grads), _as(gram)
    k = gram.shape[0]
    on = np.diag(gram) > 0
    w = np.zeros(k)
    if not on.any():
        return w
    if zero_in_hull(grads[on]):
        return None
    p = 1.0 / alpha
    a = gram[np.ix_(on, on)]
    n = np.sqrt(np.diag(a))
    corr = a / np.outer(n, n)
    c = n ** (p - 1.0)
    top = c.max()
    c = c / top

    def h(u):
        return np.log(u) if p == 1.0 else u ** (1.0 - p) / (1.0 - p)

    def objective(u):
        return 0.5 * u @ corr @ u - np.sum(c * h(u))

    def jac(u):
        return corr @ u - c * u**-p

    def hess(u):
        return corr + np.diag(p * c * u ** (-p - 1.0))

    u0 = c ** (1.0 / (1.0 + p))
    sol = optimize.minimize(
        objective,
        u0,
        jac=jac,
        hess=hess,
        method="trust-constr",
        bounds=optimize.Bounds(np.zeros(len(u0)), np.inf),
        options=dict(gtol=1e-14, xtol=1e-16, maxiter=5000),
    )

    def residual(u):
        return (corr @ u) * u**p / c - 1.0

    def residual_jac(u):
        return corr * (u**p / c)[:, None] + np.diag(p * (corr @ u) * u ** (p - 1.0) / c)

    u = optimize.least_squares(
        residual, sol.x, jac=residual_jac, bounds=(0, np.inf), xtol=1e-15, ftol=1e-15, gtol=1e-15
    ).x
    assert np.max(np.abs(residual(u))) < 1e-10, ("reference did not converge", residual(u))
    w[on] = u / n * top ** (1.0 / (1.0 + p))
    return w
