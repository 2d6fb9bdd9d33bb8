"""Gradient-based strategies: weights from the Gram matrix of per-task gradients.

`MultiTaskModel` computes, for each task i, the gradient g_i of L_i with
respect to the shared trainable variables, and the Gram matrix
G_ij = <g_i, g_j> (k x k, float32). Every method here (and every method of
the family we know of) moves the shared variables along a linear combination
d = sum_i w_i g_i whose coefficients depend on the g_i only through G, so a
strategy is a function `task_weights(losses, gram) -> w`: cheap (k x k
arithmetic) and identical on every backend. Su Jianlin's 多任务学习漫谈 (二):
行梯度之事 and (三): 分主次之序 (Multi-task learning notes II and III, 2022)
derive `grad_norm_normalization` and `primary_auxiliary`.

Iterative solvers (Frank-Wolfe, FISTA) run a fixed number of iterations with
`keras.ops.fori_loop`, so they compile into the train step; two-task cases
use closed forms.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import keras
from keras import ops

from keras_tricks import _backend
from keras_tricks._typing import Shape, Tensor
from keras_tricks.multitask.strategy import (
    SeededStrategy,
    Strategy,
    eps,
    per_task,
    register_strategy,
    safe_divide,
    tiny,
    validate_number,
    validate_positive_values,
)

_register = keras.saving.register_keras_serializable(package="keras_tricks")


def _norms(gram):
    return ops.sqrt(ops.maximum(ops.diagonal(gram), 0.0))


def _active(gram):
    """Tasks with a non-zero gradient on the shared variables (bool (k,)).

    A task whose output has no path to the shared variables (or whose
    gradient there is exactly zero) takes no part in the shared combination:
    the strategies solve their problem over the other tasks.
    """
    return ops.greater(ops.diagonal(gram), 0.0)


def _uniform_over(active):
    """Uniform weights over the active tasks (over all of them if none is)."""
    mask = ops.cast(active, "float32")
    count = ops.sum(mask)
    k = ops.shape(mask)[0]
    return ops.where(ops.greater(count, 0.0), mask / ops.maximum(count, 1.0), ops.ones_like(mask) / k)


def _quad(gram, w):
    """w^T G w, floored at 0 (rounding can make it slightly negative)."""
    return ops.maximum(ops.sum(w * ops.matmul(gram, w)), 0.0)


def project_to_simplex(v: Tensor) -> Tensor:
    """Euclidean projection of v (k,) onto {w >= 0, sum w = 1} (sort-based, exact)."""
    k = ops.shape(v)[0]
    u = ops.flip(ops.sort(v), axis=0)
    excess = ops.cumsum(u) - 1.0
    index = ops.arange(1, k + 1, dtype=v.dtype)
    # u_j - excess_j / j > 0 holds on a prefix; rho is its length (>= 1).
    rho = ops.sum(ops.cast(ops.greater(u - excess / index, 0.0), "int32"))
    theta = ops.take(excess, rho - 1) / ops.cast(rho, v.dtype)
    return ops.maximum(v - theta, 0.0)


def minimize_quadratic(
    a: Tensor, b: Tensor, w0: Tensor, project: Callable[[Tensor], Tensor], iterations: int
) -> Tensor:
    """argmin_{w in C} 1/2 w^T A w + b^T w by FISTA (A symmetric PSD, k x k).

    Step 1/trace(A), a safe bound on the largest eigenvalue; `project` is the
    Euclidean projection onto the convex set C.
    """
    step = 1.0 / ops.maximum(ops.trace(a), tiny())

    def body(_, state):
        w, z, t = state
        w_next = project(z - step * (ops.matmul(a, z) + b))
        t_next = 0.5 * (1.0 + ops.sqrt(1.0 + 4.0 * t * t))
        z_next = w_next + ((t - 1.0) / t_next) * (w_next - w)
        return w_next, z_next, t_next

    one = ops.ones((), dtype=w0.dtype)
    w, _, _ = ops.fori_loop(0, iterations, body, (w0, w0, one))
    return w


EXACT_MAX_TASKS = 8


def solve_quadratic_exactly(a: Tensor, b: Tensor, simplex: bool, allowed: Tensor | None = None) -> Tensor:
    """argmin 1/2 w^T A w + b^T w over w >= 0 (and sum w = 1 if `simplex`), k <= 8.

    Active-set enumeration: the minimiser lies in the relative interior of
    one face {w_i = 0 for i not in S}, where it solves the KKT equations of
    the face. All 2^k - 1 faces are solved in one batched `ops.solve` (a
    (k+1)-square system each, padded with the identity off the face), and
    the feasible solution with the lowest objective is the minimiser of the
    convex problem. No iterations: a handful of small ops inside the train
    step.

    The problem is solved in the variables v = D^1/2 w, D = diag(A) (a zero
    diagonal entry, i.e. a zero gradient, counts as the largest one): the
    matrix D^-1/2 A D^-1/2 has a unit diagonal whatever the norms of the
    gradients, the simplex becomes sum_i v_i / sqrt(D_i) = 1, and w =
    D^-1/2 v. A ridge of 1e-6 on that unit diagonal keeps faces of
    collinear gradients solvable (TensorFlow raises on a singular system);
    being relative to each gradient's own norm, it does not favour the
    small gradients when one is 10^4 times the others (the ridge on A
    itself, sized by its trace, did).

    `allowed` (bool (k,), optional): only faces within these coordinates
    are candidates (the others' weights are 0).
    """
    import itertools

    import numpy as np

    k = int(ops.shape(a)[0])
    masks = np.array(list(itertools.product([0.0, 1.0], repeat=k))[1:], "float32")
    if not simplex:
        masks = np.concatenate([np.zeros((1, k), "float32"), masks])
    m = ops.convert_to_tensor(masks)  # (faces, k)
    faces = masks.shape[0]
    eye = ops.eye(k, dtype=a.dtype)
    # Diagonal scaling. Entries below eps^2 of the largest (gradients 10^7
    # times smaller than the largest) are zero at float32 precision.
    diagonal = ops.diagonal(a)
    largest = ops.maximum(ops.max(diagonal), tiny())
    d = ops.where(ops.greater(diagonal, eps() * eps() * largest), diagonal, largest)
    root = ops.sqrt(d)
    a = a / (root[:, None] * root[None, :])
    b = b / root
    c = 1.0 / root  # the simplex constraint: sum_i c_i v_i = 1
    c_max = ops.max(c)
    c = c / c_max  # (and the right-hand side 1 / c_max)
    # Scaling A and b together leaves the minimiser unchanged; at unit scale
    # the ridge keeps every face system positive definite, even for A = 0.
    scale = ops.maximum(ops.maximum(ops.max(ops.diagonal(a)), ops.max(ops.abs(b))), tiny())
    a = a / scale
    b = b / scale
    # Relative to the (unit, now 1 / scale) diagonal: when |b| sets the scale
    # (a large right-hand side, as UPGrad's projection of a large gradient
    # against a small one) a ridge of 1e-6 in absolute terms was up to 1e-3
    # of the diagonal and biased the solution by as much.
    top = ops.max(ops.diagonal(a))
    ridge = 1e-6 * ops.where(ops.greater(top, 0.0), top, 1.0)
    a_r = a + ridge * eye
    on = m[:, :, None] * m[:, None, :]
    block = a_r[None] * on + (1.0 - m)[:, :, None] * eye[None]
    rhs = -b[None] * m
    if simplex:
        cm = c[None] * m
        top = ops.concatenate([block, cm[:, :, None]], axis=2)
        bottom = ops.concatenate([cm[:, None, :], ops.zeros((faces, 1, 1), a.dtype)], axis=2)
        block = ops.concatenate([top, bottom], axis=1)
        rhs = ops.concatenate([rhs, ops.ones((faces, 1), a.dtype) / c_max], axis=1)
    v = ops.solve(block, rhs[:, :, None])[:, :k, 0] * m
    size = ops.maximum(ops.max(ops.abs(v), axis=1), 1.0)
    feasible = ops.logical_and(
        ops.all(ops.greater_equal(v, -1e-4 * size[:, None]), axis=1),
        ops.all(ops.isfinite(v), axis=1),
    )
    if allowed is not None:
        outside = ops.sum(m * (1.0 - ops.cast(allowed, m.dtype))[None], axis=1)
        feasible = ops.logical_and(feasible, ops.equal(outside, 0.0))
    v = ops.maximum(ops.where(ops.isfinite(v), v, 0.0), 0.0)
    if simplex:
        v = v / ops.maximum(ops.sum(v * c[None], axis=1, keepdims=True) * c_max, tiny())
    objective = 0.5 * ops.sum(v * ops.matmul(v, a), axis=1) + ops.sum(v * b[None], axis=1)
    objective = ops.where(feasible, objective, float("inf"))
    best = ops.take(v, ops.argmin(objective), axis=0) / root
    if simplex:
        best = best / ops.maximum(ops.sum(best), tiny())
    fallback = ops.ones((k,), a.dtype) / k if simplex else ops.zeros((k,), a.dtype)
    return ops.where(ops.any(feasible), best, fallback)


@_register
@register_strategy("grad_norm_normalization")
class GradNormNormalization(Strategy):
    """w_i = 1 / ||g_i||: every task's gradient gets unit norm, d = sum_i g_i / ||g_i||.

    Su (part II): the gradient-level analogue of `Realtime`; no task
    dominates the shared update by the size of its gradient. The weights
    scale the task-specific parameters' gradients too (they are loss
    weights: sum_i L_i / ||g_i||). A task with a zero gradient on the shared
    variables (no path to them) gets weight 1: it adds nothing to the shared
    update, and its own head trains on its plain loss.
    """

    uses_gradients = True
    scales_task_specific = True

    def task_weights(self, losses: Tensor, gram: Tensor, training: bool = True) -> Tensor:
        norms = _norms(gram)
        return ops.where(ops.greater(norms, 0.0), safe_divide(ops.ones_like(norms), norms), 1.0)


@_register
@register_strategy("gradnorm")
class GradNorm(Strategy):
    """GradNorm: learn loss weights that equalise the tasks' training rates.

    Chen, Badrinarayanan, Lee & Rabinovich, "GradNorm: Gradient Normalization
    for Adaptive Loss Balancing in Deep Multitask Networks" (ICML 2018).
    With weights w (initialised to 1, kept summing to k) and L0 the losses at
    the first training step:

        G_i = w_i ||g_i||,  Gbar = mean_i G_i,
        r_i = (L_i / L0_i) / mean_j (L_j / L0_j),
        L_grad = sum_i |G_i - Gbar r_i^alpha|   (the target held constant),

    and after each step w_i <- w_i - learning_rate * dL_grad/dw_i, where
    dL_grad/dw_i = sign(G_i - target_i) ||g_i||, clipped at 0 and renormalised
    to sum k. The step uses the weights before the update: d = sum_i w_i g_i,
    and each task's own parameters get w_i times their gradient. Weights and
    L0 are saved with the model. The paper takes g_i with respect to the last
    shared layer; here it is the shared variables `MultiTaskModel` uses.
    A task with a zero gradient on them (no path to the shared variables)
    takes no part: the means are over the other tasks, its weight is left as
    it is (its head trains on w_i L_i), and the others are renormalised to
    sum k minus its weight.

    Args:
        alpha: the asymmetry (paper: 1.5; 0 equalises the gradient norms).
        learning_rate: step of the weight update (> 0).
    """

    uses_gradients = True
    scales_task_specific = True

    def __init__(self, alpha: float = 1.5, learning_rate: float = 0.025, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.alpha = float(validate_number("alpha", alpha, low=0))
        self.learning_rate = float(validate_number("learning_rate", learning_rate, low=0, low_open=True))

    def build(self, input_shape: Shape) -> None:
        k = input_shape[0]
        self.loss_weights = self.add_weight(
            shape=(k,), initializer="ones", trainable=False, aggregation="mean", name="loss_weights"
        )
        self.initial_losses = self.add_weight(
            shape=(k,), initializer="zeros", trainable=False, aggregation="mean", name="initial_losses"
        )
        self.started = self.add_weight(
            shape=(), initializer="zeros", trainable=False, aggregation="mean", name="started"
        )
        self.built = True

    def task_weights(self, losses: Tensor, gram: Tensor, training: bool = True) -> Tensor:
        losses = ops.stop_gradient(losses)
        # A copy: on PyTorch a variable's tensor is updated in place by assign.
        weights = ops.copy(ops.convert_to_tensor(self.loss_weights))
        if not training:
            return weights
        k = float(ops.shape(losses)[0])
        started = ops.greater(ops.convert_to_tensor(self.started), 0.0)
        initial = ops.where(started, ops.convert_to_tensor(self.initial_losses), losses)
        norms = _norms(gram)
        active = ops.greater(norms, 0.0)
        mask = ops.cast(active, weights.dtype)
        count = ops.maximum(ops.sum(mask), 1.0)
        g = weights * norms
        ratio = safe_divide(losses, initial)
        relative = safe_divide(ratio, ops.sum(ratio * mask) / count)
        target = (ops.sum(g * mask) / count) * ops.power(relative, self.alpha)
        new = ops.maximum(weights - self.learning_rate * ops.sign(g - target) * norms, 0.0)
        budget = k - ops.sum(weights * (1.0 - mask))
        total = ops.sum(new * mask)
        rescaled = ops.where(ops.greater(total, 0.0), budget * safe_divide(new, total), budget / count)
        new = ops.where(active, rescaled, weights)
        self.loss_weights.assign(new)
        self.initial_losses.assign(initial)
        self.started.assign(1.0)
        return weights

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"alpha": self.alpha, "learning_rate": self.learning_rate})
        return config


@_register
@register_strategy("mgda")
class MGDA(Strategy):
    """MGDA: the min-norm point of the convex hull of the task gradients.

    Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization"
    (NeurIPS 2018): w = argmin_{w in simplex} ||sum_i w_i g_i||^2 = w^T G w,
    d = sum_i w_i g_i, a direction that decreases every task (or 0 at a
    Pareto-stationary point). A task with a zero gradient on the shared
    variables (no path to them) is left out of the hull (weight 0), so it
    does not stop the others. Two tasks: closed form
    w_0 = clip((G_11 - G_01) / (G_00 + G_11 - 2 G_01), 0, 1). Up to 8 tasks
    (`solver="auto"`): the exact minimiser by active-set enumeration
    (`solve_quadratic_exactly`), which measured 1000x more accurate than 250
    Frank-Wolfe steps and costs a few small ops. Otherwise (`solver=
    "frank_wolfe"`, or k > 8): Frank-Wolfe with exact line search (the paper's
    Algorithm 2) for `max_iterations` steps from the uniform weights. Only the
    shared update is weighted: each task's own parameters get its plain
    gradient.

    Args:
        max_iterations: Frank-Wolfe steps (>= 1).
        solver: "auto" or "frank_wolfe".
    """

    uses_gradients = True
    scales_task_specific = False

    def __init__(self, max_iterations: int = 250, solver: str = "auto", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_iterations = validate_number("max_iterations", max_iterations, low=1, integer=True)
        if solver not in ("auto", "frank_wolfe"):
            raise ValueError(f"`solver` must be 'auto' or 'frank_wolfe'; got {solver!r}.")
        self.solver = solver

    def task_weights(self, losses: Tensor, gram: Tensor, training: bool = True) -> Tensor:
        k = ops.shape(gram)[0]
        active = _active(gram)
        if k == 2:
            g00, g01, g11 = gram[0, 0], gram[0, 1], gram[1, 1]
            denominator = g00 + g11 - 2.0 * g01
            w0 = ops.where(
                ops.greater(denominator, 0.0),
                ops.clip(safe_divide(g11 - g01, denominator), 0.0, 1.0),
                0.5,
            )
            both = ops.logical_and(active[0], active[1])
            w0 = ops.where(both, w0, ops.where(active[0], 1.0, ops.where(active[1], 0.0, 0.5)))
            return ops.stack([w0, 1.0 - w0])
        if k <= EXACT_MAX_TASKS and self.solver == "auto":
            return solve_quadratic_exactly(
                2.0 * gram, ops.zeros((k,), gram.dtype), simplex=True, allowed=active
            )
        diagonal = ops.diagonal(gram)

        def body(_, w):
            gw = ops.matmul(gram, w)
            t = ops.argmin(ops.where(active, gw, float("inf")))
            ww = ops.sum(w * gw)
            wt = ops.take(gw, t)
            tt = ops.take(diagonal, t)
            step = ops.clip(safe_divide(ww - wt, ww + tt - 2.0 * wt), 0.0, 1.0)
            return (1.0 - step) * w + step * ops.one_hot(t, k, dtype=w.dtype)

        return ops.fori_loop(0, self.max_iterations, body, _uniform_over(active))

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"max_iterations": self.max_iterations, "solver": self.solver})
        return config


@_register
@register_strategy("pcgrad")
class PCGrad(SeededStrategy):
    """PCGrad: project each task's gradient off the others' it conflicts with.

    Yu et al., "Gradient Surgery for Multi-Task Learning" (NeurIPS 2020).
    For each task i, g_i' = g_i; then for each other task j in a random
    order (a new permutation per task and per step): if <g_i', g_j> < 0,
    g_i' <- g_i' - <g_i', g_j> / ||g_j||^2 g_j. d = sum_i g_i'. Each g_i' is
    a combination of the original gradients, so it is tracked as a row of
    coefficients and only G is needed. Randomness comes from a
    `keras.random.SeedGenerator` (saved with the model). Each task's own
    parameters get its plain gradient.

    Args:
        seed: int or None, for the permutations.
    """

    uses_gradients = True
    scales_task_specific = False

    def task_weights(
        self,
        losses: Tensor,
        gram: Tensor,
        training: bool = True,
        order: Tensor | Sequence[Sequence[int]] | None = None,
    ) -> Tensor:
        """`order` (k, k) int: row i lists the tasks in the order task i visits them
        (its own index is skipped); random when None."""
        k = ops.shape(gram)[0]
        if order is None and k == 2:
            order = [[0, 1], [0, 1]]  # one other task: the order cannot matter
        if order is None:
            noise = keras.random.uniform((k, k), seed=self.seed_generator)
            order = ops.argsort(noise, axis=-1)
        order = ops.convert_to_tensor(order, "int32")
        coefficients = ops.eye(k, dtype=gram.dtype)  # row i: g_i' in the basis g_1..g_k
        diagonal = ops.diagonal(gram)
        own = ops.arange(k, dtype="int32")
        for position in range(k):
            j = order[:, position]
            onto = ops.one_hot(j, k, dtype=gram.dtype)  # (k, k): row i = e_{j_i}
            inner = ops.sum(ops.matmul(coefficients, gram) * onto, axis=-1)  # <g_i', g_{j_i}>
            norm2 = ops.take(diagonal, j)
            conflict = ops.logical_and(ops.less(inner, 0.0), ops.not_equal(j, own))
            scale = ops.where(conflict, safe_divide(inner, norm2), 0.0)
            coefficients = coefficients - scale[:, None] * onto
        return ops.sum(coefficients, axis=0)


@_register
@register_strategy("cagrad")
class CAGrad(Strategy):
    """CAGrad: the best worst-task improvement within a ball around the average gradient.

    Liu, Liu, Jin, Stone & Liu, "Conflict-Averse Gradient Descent for
    Multi-task Learning" (NeurIPS 2021). With g0 = mean_i g_i and
    phi = c^2 ||g0||^2:

        w* = argmin_{w in simplex} <g_w, g0> + sqrt(phi) ||g_w||,  g_w = sum_i w_i g_i,
        d = (g0 + sqrt(phi) / ||g_w*|| g_w*) / (1 + c^2).

    c = 0 is plain gradient descent on the mean loss; larger c moves towards
    MGDA. Two tasks: exact (the objective is convex in w_0 on [0, 1], and its
    stationary point solves a quadratic). More tasks: majorise-minimise, with
    sqrt(phi) ||g_w|| <= sqrt(phi) (||g_w||^2 / tau + tau) / 2, tight at
    tau = ||g_w||. Up to 8 tasks, each majorised problem is a QP solved
    exactly (`solve_quadratic_exactly`) and the optimal tau, the fixed point
    tau = ||g_w(tau)||, is found by bisection on log tau; beyond, by
    majorise-minimise rounds of 20 FISTA steps each. Each task's own
    parameters get its plain gradient. A task with a zero gradient on the
    shared variables (no path to them) is left out: g0 is the mean of the
    other tasks' gradients and w is 0 on it.

    Args:
        c: radius of the ball relative to ||g0|| (>= 0; paper: 0.5).
        max_iterations: bisection steps (up to 8 tasks) or majorise-minimise
            rounds (more) for k > 2.
    """

    uses_gradients = True
    scales_task_specific = False

    def __init__(self, c: float = 0.5, max_iterations: int = 30, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.c = float(validate_number("c", c, low=0))
        self.max_iterations = validate_number("max_iterations", max_iterations, low=1, integer=True)

    def _solve_two(self, gram, s):
        g00, g01, g11 = gram[0, 0], gram[0, 1], gram[1, 1]
        a = g00 + g11 - 2.0 * g01  # ||g_0 - g_1||^2
        beta = g01 - g11
        delta = 0.5 * (g00 - g11)  # slope of <g_w, g0> in w_0
        d = ops.maximum(a * g11 - beta * beta, 0.0)
        denominator = s * s * a - delta * delta
        u = -delta * ops.sqrt(safe_divide(d, ops.maximum(denominator, 0.0)))
        stationary = ops.clip(safe_divide(u - beta, a), 0.0, 1.0)
        candidates = ops.stack([ops.zeros_like(s), ops.ones_like(s), stationary])

        def objective(t):
            return t * delta + s * ops.sqrt(ops.maximum(a * t * t + 2.0 * beta * t + g11, 0.0))

        best = ops.take(candidates, ops.argmin(objective(candidates)))
        best = ops.where(ops.greater(a, 0.0), best, 0.5)
        return ops.stack([best, 1.0 - best])

    def _solve_by_bisection(self, gram, b, s, floor, active):
        # For a fixed tau, the majorised problem is a QP solved exactly; the
        # optimum is the fixed point tau = ||g_w(tau)||, found by bisection on
        # log tau in [floor, max_i ||g_i||] (||g_w|| - tau changes sign once).
        def solve(tau):
            return solve_quadratic_exactly(safe_divide(s, tau) * gram, b, simplex=True, allowed=active)

        low = ops.log(floor)
        high = ops.log(ops.maximum(ops.max(_norms(gram)), floor))

        def body(_, bounds):
            low, high = bounds
            middle = 0.5 * (low + high)
            tau = ops.maximum(ops.exp(middle), floor)
            above = ops.greater(ops.sqrt(_quad(gram, solve(tau))), tau)
            return ops.where(above, middle, low), ops.where(above, high, middle)

        _, high = ops.fori_loop(0, self.max_iterations, body, (low, high))
        return solve(ops.maximum(ops.exp(high), floor))

    def task_weights(self, losses: Tensor, gram: Tensor, training: bool = True) -> Tensor:
        k = ops.shape(gram)[0]
        active = _active(gram)
        mean = _uniform_over(active)
        g0_norm = ops.sqrt(_quad(gram, mean))
        s = self.c * g0_norm
        if k == 2:
            both = ops.logical_and(active[0], active[1])
            w = ops.where(both, self._solve_two(gram, s), mean)
        else:
            b = ops.matmul(gram, mean)
            floor = ops.maximum(eps() * s, tiny())

            def round_(_, w):
                tau = ops.maximum(ops.sqrt(_quad(gram, w)), floor)
                if k <= EXACT_MAX_TASKS:
                    return solve_quadratic_exactly((s / tau) * gram, b, simplex=True, allowed=active)
                return minimize_quadratic((s / tau) * gram, b, w, project, 20)

            def project(v):
                # Onto the simplex of the active tasks: an inactive entry at
                # min(v) - 1 lies below the threshold and is projected to 0.
                return project_to_simplex(ops.where(active, v, ops.min(v) - 1.0))

            if k <= EXACT_MAX_TASKS:
                w = self._solve_by_bisection(gram, b, s, floor, active)
            else:
                w = ops.fori_loop(0, self.max_iterations, round_, mean)
        gw_norm = ops.sqrt(_quad(gram, w))
        return (mean + safe_divide(s, gw_norm) * w) / (1.0 + self.c**2)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"c": self.c, "max_iterations": self.max_iterations})
        return config


@_register
@register_strategy("primary_auxiliary")
class PrimaryAuxiliary(Strategy):
    """Auxiliary tasks that never push the primary task uphill.

    Su, 多任务学习漫谈 (三): 分主次之序 (part III, 2022): the shared update is
    u = g_p + sum_{i != p} lambda_i g_i with lambda >= 0 minimising ||u||^2
    (a non-negative least-squares problem in G). One auxiliary task: closed
    form lambda = relu(-<g_p, g_a>) / ||g_a||^2, i.e. an auxiliary gradient
    is used only to cancel the part of the primary one it conflicts with;
    up to 8 auxiliary tasks: exact (`solve_quadratic_exactly`); more: FISTA
    on lambda >= 0 for `max_iterations` steps. Each auxiliary
    task's own parameters still get its plain gradient, so its head keeps
    learning. If the primary task has a zero gradient on the shared
    variables (no path to them), the auxiliary tasks cannot push it uphill
    and get lambda_i = 1 (their plain sum moves the shared variables).

    Args:
        primary: the primary task, by name or index (default 0: the first output).
        max_iterations: FISTA steps when there are 2 or more auxiliary tasks.
    """

    uses_gradients = True
    scales_task_specific = False

    def __init__(self, primary: int | str = 0, max_iterations: int = 200, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(primary, bool) or not isinstance(primary, (int, str)):
            raise TypeError(f"`primary` must be a task name or index; got {primary!r}.")
        self.primary = primary
        self.max_iterations = validate_number("max_iterations", max_iterations, low=1, integer=True)

    def bind(self, tasks: Iterable[str]) -> PrimaryAuxiliary:
        tasks = [str(t) for t in tasks]
        if isinstance(self.primary, str):
            if self.primary not in tasks:
                raise ValueError(f"`primary`={self.primary!r} is not one of the tasks {tasks}.")
            self.primary_index = tasks.index(self.primary)
        else:
            if not -len(tasks) <= self.primary < len(tasks):
                raise ValueError(
                    f"`primary`={self.primary} is out of range for the {len(tasks)} tasks {tasks}."
                )
            self.primary_index = self.primary % len(tasks)
        return super().bind(tasks)

    def task_weights(self, losses: Tensor, gram: Tensor, training: bool = True) -> Tensor:
        k = ops.shape(gram)[0]
        if self.tasks is None and isinstance(self.primary, str):
            raise ValueError("Bind the strategy to its tasks first: strategy.bind(task_names).")
        p = self.primary_index if self.tasks is not None else self.primary % k
        others = [i for i in range(k) if i != p]
        g_pa = ops.take(gram[p], others)
        g_aa = ops.take(ops.take(gram, others, axis=0), others, axis=1)
        if len(others) == 1:
            lam = safe_divide(ops.relu(-g_pa), ops.diagonal(g_aa))
        elif len(others) <= EXACT_MAX_TASKS:
            lam = solve_quadratic_exactly(2.0 * g_aa, 2.0 * g_pa, simplex=False)
        else:
            lam = minimize_quadratic(
                2.0 * g_aa, 2.0 * g_pa, ops.zeros_like(g_pa), ops.relu, self.max_iterations
            )
        # A primary task without a path to the shared variables: nothing to protect.
        lam = ops.where(ops.greater(gram[p, p], 0.0), lam, ops.ones_like(lam))
        parts = {p: ops.ones((), gram.dtype)}
        for position, i in enumerate(others):
            parts[i] = lam[position]
        return ops.stack([parts[i] for i in range(k)])

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"primary": self.primary, "max_iterations": self.max_iterations})
        return config


@_register
@register_strategy("db_mtl")
class DBMTL(Strategy):
    """DB-MTL: log-transformed losses, their gradients rescaled to the largest norm.

    Lin, Ye, Xu, Shi & Zhang, "Dual-Balancing for Multi-Task Learning"
    (2023). Loss-scale balancing: every task minimises log(L_i + epsilon),
    whose gradient is g_i / (L_i + epsilon). Gradient-magnitude balancing:
    the shared update is

        d = sum_i alpha_i g_i / (L_i + epsilon),
        alpha_i = max_j ||g_j / (L_j + epsilon)|| / ||g_i / (L_i + epsilon)||,

    i.e. w_i = max_j (||g_j|| / (L_j + epsilon)) / ||g_i||: every task's
    log-loss gradient is scaled to the norm of the largest one. Each task's
    own parameters get the gradient of its log-loss, g_i / (L_i + epsilon)
    (`task_specific_weights`). A gradient-based strategy: the norms need the
    per-task gradients. A task with a zero gradient on the shared variables
    adds nothing to the shared update (w_i = 0).

    Convention: the paper (and LibMTL, by the paper's authors) balances an
    exponential moving average of each task's gradient, beta_t = beta /
    t^0.5 (LibMTL: beta = 0.9), which needs k copies of the shared
    gradients as state; here beta = 0: the current gradients, which the
    moving average tends to as beta_t -> 0. Without it the update depends on
    the gradients only through their Gram matrix.

    Args:
        epsilon: added to each loss, > 0; None for the float32 machine
            epsilon (LibMTL: 1e-8).
    """

    uses_gradients = True
    scales_task_specific = True

    def __init__(self, epsilon: float | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if epsilon is not None:
            validate_number("epsilon", epsilon, low=0, low_open=True)
        self.epsilon = epsilon

    def _inverse_losses(self, losses):
        epsilon = eps() if self.epsilon is None else self.epsilon
        return 1.0 / (ops.maximum(ops.stop_gradient(losses), 0.0) + epsilon)

    def task_weights(self, losses: Tensor, gram: Tensor, training: bool = True) -> Tensor:
        norms = _norms(gram)
        largest = ops.max(norms * self._inverse_losses(losses))
        return safe_divide(ops.broadcast_to(largest, ops.shape(norms)), norms)

    def task_specific_weights(self, losses: Tensor, weights: Tensor) -> Tensor:
        return self._inverse_losses(losses)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["epsilon"] = self.epsilon
        return config


def _preference_vector(strategy, k, dtype, active):
    if strategy.preference is None:
        return _uniform_over(active)  # 1/k, over the tasks with a gradient
    return ops.convert_to_tensor(strategy._task_value("preference", strategy.preference), dtype)


def _dual_cone_weights(gram, u, active, max_iterations):
    """v = argmin_{v >= u} v^T G v (Quinton & Rey 2024, Proposition 1): the
    weights of the projection of sum_i u_i g_i onto the dual cone of the g_i,
    {x : <g_i, x> >= 0 for all i}. Written v = u + lambda, lambda >= 0
    minimises 1/2 lambda^T (2G) lambda + (2 G u)^T lambda: in closed form for
    two tasks, exactly up to 8, by FISTA beyond. A task with a zero gradient gets no lambda."""
    k = int(ops.shape(gram)[0])
    if k == 2:
        return _dual_cone_two(gram, u)
    b = 2.0 * ops.matmul(gram, u)
    if k <= EXACT_MAX_TASKS:
        lam = solve_quadratic_exactly(2.0 * gram, b, simplex=False, allowed=active)
    else:
        lam = minimize_quadratic(2.0 * gram, b, ops.zeros_like(u), ops.relu, max_iterations)
    return u + ops.where(active, lam, 0.0)


def _dual_cone_two(gram, u):
    """Two tasks, in closed form: the minimiser of v^T G v over v >= u is
    v = u (no constraint active), u + l_i e_i with <g_i, d> = 0 (one active
    constraint: l_i = -(G u)_i / G_ii, clipped at 0), or, for opposed
    collinear gradients, the smallest v >= u with d = 0 (v proportional to
    (||g_1||, ||g_0||)). Every candidate is feasible, so the one with the
    smallest objective is the minimiser."""
    gu = ops.matmul(gram, u)
    diagonal = ops.diagonal(gram)
    lift = safe_divide(ops.relu(-gu), diagonal)  # l_i (0 for a zero gradient)
    eye = ops.eye(2, dtype=gram.dtype)
    norms = _norms(gram)
    swapped = ops.flip(norms, axis=0)
    scale = ops.max(safe_divide(u, swapped))
    opposed = ops.where(ops.all(ops.greater(swapped, 0.0)), scale * swapped, u)
    candidates = ops.stack([u, u + lift[0] * eye[0], u + lift[1] * eye[1], ops.maximum(opposed, u)])
    objective = ops.sum(candidates * ops.matmul(candidates, gram), axis=1)
    return ops.take(candidates, ops.argmin(objective), axis=0)


class _Preference(Strategy):
    """A gradient-based strategy with a preference vector over the tasks
    (UPGrad, DualProj, Aligned-MTL)."""

    uses_gradients = True
    scales_task_specific = False

    def __init__(self, preference: Sequence[float] | dict[str, float] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.preference = validate_positive_values("preference", preference)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["preference"] = self.preference
        return config


class _IterativePreference(_Preference):
    """A preference strategy that falls back to `max_iterations` FISTA steps
    beyond the exact solver's k (UPGrad, DualProj)."""

    def __init__(
        self,
        preference: Sequence[float] | dict[str, float] | None = None,
        max_iterations: int = 200,
        **kwargs: Any,
    ) -> None:
        super().__init__(preference, **kwargs)
        self.max_iterations = validate_number("max_iterations", max_iterations, low=1, integer=True)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["max_iterations"] = self.max_iterations
        return config


@_register
@register_strategy("upgrad")
class UPGrad(_IterativePreference):
    """UPGrad: the average of each task's gradient projected onto the dual cone of all of them.

    Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization"
    (2024). With the dual cone C = {x : <g_j, x> >= 0 for all j} and pi_C
    the Euclidean projection onto it,

        d = sum_i p_i pi_C(g_i),  pi_C(sum_j u_j g_j) = sum_j v_j g_j,
        v = argmin_{v >= u} v^T G v   (Proposition 1),

    so w = sum_i v^(i) with v^(i) the solution for u = p_i e_i. d never
    conflicts with any task (<g_j, d> >= 0) and, unlike MGDA, is as large as
    the mean gradient when nothing conflicts (then d = sum_i p_i g_i). The
    preference p defaults to 1/k (torchjd's convention: the mean; 1/k' over
    the k' tasks with a non-zero gradient when some have none). Each
    quadratic program is solved in closed form for two tasks, exactly up to 8 tasks
    (`solve_quadratic_exactly`, no regularisation; torchjd normalises G by
    its trace and adds 1e-4 to its diagonal), by `max_iterations` FISTA
    steps beyond. Each task's own parameters get its plain gradient. A task
    with a zero gradient on the shared variables adds nothing.

    Args:
        preference: None or one number > 0 per task.
        max_iterations: FISTA steps for k > 8.
    """

    def task_weights(self, losses: Tensor, gram: Tensor, training: bool = True) -> Tensor:
        k = int(ops.shape(gram)[0])
        active = _active(gram)
        p = _preference_vector(self, k, gram.dtype, active)
        eye = ops.eye(k, dtype=gram.dtype)
        total = ops.zeros((k,), gram.dtype)
        for i in range(k):
            total = total + _dual_cone_weights(gram, p[i] * eye[i], active, self.max_iterations)
        return total


@_register
@register_strategy("dualproj")
class DualProj(_IterativePreference):
    """DualProj: the mean gradient projected onto the dual cone of the task gradients.

    Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization"
    (2024), after Lopez-Paz & Ranzato's GEM (NeurIPS 2017, equation 11):
    d = pi_C(sum_i p_i g_i) with C = {x : <g_j, x> >= 0 for all j}, i.e.
    w = argmin_{v >= p} v^T G v. The preference p defaults to 1/k (as
    `UPGrad`, over the tasks with a non-zero gradient). Solved as `UPGrad`'s
    problems (closed form for two tasks, exact up to 8, FISTA beyond). Each task's own
    parameters get its plain gradient.

    Args:
        preference: None or one number > 0 per task.
        max_iterations: FISTA steps for k > 8.
    """

    def task_weights(self, losses: Tensor, gram: Tensor, training: bool = True) -> Tensor:
        k = int(ops.shape(gram)[0])
        active = _active(gram)
        p = _preference_vector(self, k, gram.dtype, active)
        return _dual_cone_weights(gram, p, active, self.max_iterations)


@_register
@register_strategy("imtl_g")
class IMTLG(Strategy):
    """IMTL-G: the combination whose projections onto every task's unit gradient are equal.

    Liu, Li, Kuang, Xue, Chen, Yang, Liao & Zhang, "Towards Impartial
    Multi-task Learning" (ICLR 2021), the gradient-balancing part: find
    w with sum_i w_i = 1 such that d = sum_i w_i g_i satisfies
    <d, g_i / ||g_i||> = <d, g_j / ||g_j||> for all i, j, i.e.
    G w = t (||g_1||, ..., ||g_k||) for a scalar t. Solved in the unit
    variables beta_i = w_i ||g_i||: C beta = 1 with C the correlation matrix
    G_ij / (||g_i|| ||g_j||) (unit diagonal), plus a ridge of 16 float32
    machine epsilons on that diagonal, so that linearly dependent gradients
    have a solution, and one step of iterative refinement without it;
    w = beta / ||g|| normalised to sum 1. (The paper's
    closed form differences against the last task; torchjd uses
    pinv(G) ||g||. They agree where the system is regular; where it is not,
    e.g. opposed gradients, all give d = 0.) Only the shared update is
    weighted (the paper's IMTL-L loss scaling is not part of it): each
    task's own parameters get its plain gradient. A task with a zero
    gradient on the shared variables takes no part (w_i = 0).
    """

    uses_gradients = True
    scales_task_specific = False

    def task_weights(self, losses: Tensor, gram: Tensor, training: bool = True) -> Tensor:
        k = int(ops.shape(gram)[0])
        active = _active(gram)
        mask = ops.cast(active, gram.dtype)
        norms = _norms(gram)
        safe = ops.where(active, norms, 1.0)
        eye = ops.eye(k, dtype=gram.dtype)
        on = mask[:, None] * mask[None, :]
        c = gram / (safe[:, None] * safe[None, :]) * on + (1.0 - on) * eye + 16.0 * eps() * eye
        beta = ops.solve(c, mask[:, None])[:, 0] * mask
        # One step of iterative refinement against the matrix without the
        # ridge: removes the ridge's bias where the system is regular.
        residual = mask - ops.matmul(c - 16.0 * eps() * eye, beta)
        beta = beta + ops.solve(c, residual[:, None])[:, 0] * mask
        w = beta / safe
        w = ops.where(ops.all(ops.isfinite(w)), w, ops.zeros_like(w))
        total = ops.sum(w)
        return ops.where(ops.greater(ops.abs(total), 0.0), safe_divide(w, total), _uniform_over(active))


@_register
@register_strategy("graddrop")
class GradDrop(SeededStrategy):
    """GradDrop: at every shared coordinate, keep the gradients of one sign only, drawn at random.

    Chen, Ngiam, Huang, Luong, Kretzschmar, Chai & Anguelov, "Just Pick a
    Sign: Optimizing Deep Multitask Models with Gradient Sign Dropout"
    (NeurIPS 2020, arXiv 2010.06808), Algorithm 1. Coordinate by coordinate
    of the shared variables, with g_i task i's gradient there:

        P = 1/2 (1 + sum_i g_i / sum_i |g_i|)      (positive sign purity, in [0, 1]),
        U ~ Uniform[0, 1), one draw per coordinate and step,
        M_i = [U < P] [g_i > 0] + [U >= P] [g_i < 0],
        d = sum_i (l_i + (1 - l_i) M_i) g_i.

    The positive gradients survive with probability P, the negative ones
    otherwise, so a coordinate where the tasks agree keeps them all, and
    E[d] = sum_i g_i (P [g_i > 0] + (1 - P) [g_i < 0]) for l = 0. A leak
    l_i = 1 lets task i through unmasked (l = 1 for all is the plain sum).
    It acts on each coordinate, not through the Gram matrix, so it is an
    `elementwise` strategy (`combine_elementwise`). Each task's own
    parameters get its plain gradient.

    Conventions: the paper applies the rule to the gradients of a shared
    layer's activations (summed over the batch after multiplying by
    sign(activation)) and backpropagates the result; here, as in torchjd's
    `GradDrop`, it is applied to the gradients of the shared parameters,
    which needs no change to the model. The monotone function f of P is the
    identity (the paper's default). At a coordinate where every g_i is 0,
    P = 1/2 (the update there is 0 either way). A tie U = P counts as
    "keep the negatives" (torchjd keeps neither), so exactly one sign is
    kept everywhere and P = 0 always keeps the negatives. P and the masks
    are computed in float32 from the gradients (P does not depend on a loss
    scale); the update keeps the gradients' dtype. The draws come from the
    strategy's own seed generator, saved with the model, so a resumed run
    draws what an uninterrupted one would. The logged weight `<task>_weight`
    is task i's mean coefficient l_i + (1 - l_i) M_i over its non-zero
    shared coordinates (the fraction kept, for l_i = 0; 1 for a task with a
    zero shared gradient).

    Args:
        leak: l, in [0, 1]: one number for every task, or one per task (a
            list in output order or a dict keyed by task). Paper: 0.
        seed: int or None, for the draws of U.

    Examples:
    >>> import numpy as np
    >>> from keras_tricks import multitask, testing
    >>> s = multitask.GradDrop().bind(["a", "b"])
    >>> d, kept, present = s.combine_elementwise(
    ...     [np.array([1.0, -1.0], "float32"), np.array([2.0, 3.0], "float32")],
    ...     uniform=np.array([0.5, 0.5], "float32"))
    >>> testing.to_numpy(d).tolist()  # P = (1, 0.75): both kept, then only the positive
    [3.0, 3.0]
    >>> testing.to_numpy(kept / present).tolist()
    [0.5, 1.0]
    """

    uses_gradients = True
    scales_task_specific = False
    elementwise = True

    def __init__(
        self, leak: float | Sequence[float] | dict[str, float] = 0.0, seed: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(seed=seed, **kwargs)
        if isinstance(leak, dict):
            self.leak = {str(t): float(validate_number("leak", v, low=0, high=1)) for t, v in leak.items()}
        elif isinstance(leak, (list, tuple)):
            self.leak = [float(validate_number("leak", v, low=0, high=1)) for v in leak]
        else:
            self.leak = float(validate_number("leak", leak, low=0, high=1))

    def bind(self, tasks: Iterable[str]) -> GradDrop:
        tasks = [str(t) for t in tasks]
        per_task(self.leak, tasks, "leak", allow_single=True)  # ValueError naming `leak`
        return super().bind(tasks)

    def _leaks(self, k):
        if isinstance(self.leak, float):
            return [self.leak] * k
        if self.tasks is None:
            raise ValueError("Bind the strategy to its tasks first: strategy.bind(task_names).")
        return self._task_value("leak", self.leak)

    def combine_elementwise(
        self, grads: Sequence[Tensor], uniform: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The update of one shared variable from its k per-task gradients.

        Returns (d, kept, present): d in the gradients' dtype and shape;
        `present[i]` the number of coordinates where g_i != 0 and `kept[i]`
        the sum of task i's coefficient over them (float32). `uniform`: the
        draws U (same shape), for tests; from the seed generator when None.
        """
        leaks = self._leaks(len(grads))
        flat = [ops.cast(g, "float32") for g in grads]
        total, magnitude = flat[0], ops.abs(flat[0])
        for g in flat[1:]:
            total, magnitude = total + g, magnitude + ops.abs(g)
        # (clipped: rounding must not take the ratio past +-1)
        purity = ops.clip(0.5 * (1.0 + safe_divide(total, magnitude)), 0.0, 1.0)
        if uniform is None:
            uniform = keras.random.uniform(ops.shape(total), dtype="float32", seed=self.seed_generator)
        positive = ops.less(ops.cast(uniform, "float32"), purity)
        update, kept, present = None, [], []
        for g, g32, leak in zip(grads, flat, leaks):
            keep = ops.where(positive, ops.greater(g32, 0.0), ops.less(g32, 0.0))
            coefficient = ops.cast(ops.where(keep, 1.0, leak), "float32")
            term = ops.cast(coefficient, g.dtype) * g
            update = term if update is None else update + term
            nonzero = ops.not_equal(g32, 0.0)
            present.append(ops.sum(ops.cast(nonzero, "float32")))
            kept.append(ops.sum(ops.where(nonzero, coefficient, 0.0)))
        return update, ops.stack(kept), ops.stack(present)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["leak"] = self.leak
        return config


JACOBI_SWEEPS = 10


def symmetric_eigh_jacobi(matrix: Tensor, sweeps: int = JACOBI_SWEEPS) -> tuple[Tensor, Tensor]:
    """Eigenvalues and eigenvectors (columns) of a symmetric PSD k x k matrix, by
    cyclic Jacobi rotations (unsorted).

    Why not `ops.eigh`: a Gram matrix of gradients whose norms differ by a
    factor r has eigenvalues spread by r^2, and the QR/divide-and-conquer
    solvers behind `eigh` (Eigen on TensorFlow, LAPACK on JAX and PyTorch)
    return every eigenvalue with an absolute error of about eps * lambda_max:
    measured in float32 on unit gradients with one scaled by r, the smallest
    eigenvalue is 3e-3 off (relative) at r = 100 and meaningless (10x off)
    at r = 10^4. Two-sided Jacobi on a positive (semi)definite matrix
    computes each eigenvalue to a relative accuracy of about
    eps * cond(D^-1/2 M D^-1/2), D = diag(M) (Demmel & Veselic, "Jacobi's
    method is more accurate than QR", SIAM J. Matrix Anal. Appl. 1992): the
    spread of the norms does not matter, only how independent the
    directions are (measured: 1e-6 at k = 5, 1e-5 at k = 8, for r up to
    10^4). Sweeps (all k(k-1)/2 rotations each) repeat until every
    |a_pq| <= eps sqrt(a_pp a_qq) (their stopping rule), at most `sweeps`
    times (convergence is quadratic: 4 to 6 sweeps for k <= 8), in one
    `while_loop` of the compiled step. Squares of the entries are formed:
    scale the matrix to a largest diagonal of 1 first (`AlignedMTL` does).
    """
    import numpy as np

    k = int(ops.shape(matrix)[0])
    dtype = matrix.dtype
    eye = np.eye(k, dtype="float32")
    pairs = [(p, q) for p in range(k) for q in range(p + 1, k)]
    # Per pair: the masks of J = I + (c - 1) (E_pp + E_qq) + s (E_pq - E_qp).
    diagonal_masks = [
        ops.convert_to_tensor(np.outer(eye[p], eye[p]) + np.outer(eye[q], eye[q])) for p, q in pairs
    ]
    skew_masks = [
        ops.convert_to_tensor(np.outer(eye[p], eye[q]) - np.outer(eye[q], eye[p])) for p, q in pairs
    ]
    identity = ops.eye(k, dtype=dtype)

    def sweep(_, state):
        a, v = state
        for (p, q), dm, sm in zip(pairs, diagonal_masks, skew_masks):
            apq = a[p, q]
            difference = a[q, q] - a[p, p]
            # t = tan(theta), the smaller of the two rotations that zero
            # a_pq, written without the quotient (a_qq - a_pp) / (2 a_pq),
            # which overflows when a_pq is tiny.
            sign = ops.where(ops.greater_equal(difference, 0.0), 1.0, -1.0)
            radius = ops.sqrt(difference * difference + 4.0 * apq * apq)
            denominator = ops.abs(difference) + radius
            t = safe_divide(2.0 * apq * sign, denominator)
            c = 1.0 / ops.sqrt(1.0 + t * t)
            s = t * c
            rotation = identity + (c - 1.0) * ops.cast(dm, dtype) + s * ops.cast(sm, dtype)
            a = ops.matmul(ops.transpose(rotation), ops.matmul(a, rotation))
            v = ops.matmul(v, rotation)
        return a, v

    upper = ops.convert_to_tensor(np.triu(np.ones((k, k), "float32"), 1))

    def unconverged(count, a, v):
        # Demmel & Veselic's stopping rule: every |a_pq| <= eps sqrt(a_pp a_qq)
        # (relative to the pair's own scale, not to the largest entry).
        d = ops.maximum(ops.diagonal(a), 0.0)
        scale = ops.sqrt(d[:, None] * d[None, :])
        off = ops.max(ops.cast(upper, dtype) * ops.abs(a) - eps() * scale)
        return ops.logical_and(ops.less(count, sweeps), ops.greater(off, 0.0))

    def body(count, a, v):
        a, v = sweep(count, (a, v))
        return count + 1, a, v

    _, a, v = ops.while_loop(unconverged, body, (ops.zeros((), "int32"), matrix, identity))
    return ops.diagonal(a), v


@_register
@register_strategy("aligned_mtl")
class AlignedMTL(_Preference):
    """Aligned-MTL: the task gradients made orthogonal and of equal norm, then averaged.

    Senushkin, Patakin, Kuznetsov & Konushin, "Independent Component
    Alignment for Multi-Task Learning" (CVPR 2023, arXiv 2305.19000),
    Algorithm 1. With the Gram matrix M = V diag(lambda) V^T (rank R) and
    preference weights u,

        B = sqrt(lambda_R) V diag(lambda)^-1/2 V^T   (over the R non-zero eigenvalues),
        g_hat_i = sum_j B_ij g_j,   d = sum_i u_i g_hat_i,   so w = B u (B is symmetric).

    The aligned gradients g_hat_i are orthogonal, and all have the norm
    sqrt(lambda_R), the smallest singular value of the gradient matrix
    (Ĝ = sqrt(lambda_R) U V^T for G = U Sigma V^T): the condition number of
    the system becomes 1, no task dominates by its norm or by its
    correlation with the others. Each task's own parameters get its plain
    gradient.

    Conventions:

    * u defaults to 1/k' over the k' tasks with a non-zero gradient (the
      paper's uniform weights; torchjd's default 1/k counts the others too;
      LibMTL's u = 1, i.e. d k times ours).
    * Scale sqrt(lambda_R) (the paper, torchjd's default `scale_mode="min"`);
      the original SamsungLabs code offered the mean eigenvalue instead.
    * Eigendecomposition by Jacobi rotations (`symmetric_eigh_jacobi`), not
      `ops.eigh`: the smallest eigenvalue, which sets the step, is accurate
      to ~1e-6 relative when the gradient norms differ by 10^4 (eigh: 10x
      off).
    * Rank: eigenvector v (unit) is dropped when its eigenvalue is at most
      k eps (sum_j |v_j| ||g_j||)^2, eps the float32 machine epsilon: that is
      the rounding error of the float32 quadratic form v^T M v, so only
      directions the gradients span above rounding are kept, and the test
      is invariant to the scale of each gradient (torchjd's tolerance,
      k eps lambda_max, drops a genuine direction of a gradient 10^3 times
      smaller than another). With rank R < k the aligned gradients are
      sigma_R U_R W_R^T (not orthogonal: k vectors in R dimensions);
      parallel (or opposed) gradients, rank 1, have one singular value
      already and are left as they are: d = sum_i u_i g_i. A zero gradient
      lies in the null space and gets weight 0. All gradients zero: w = u
      (d = 0).

    Examples:
    >>> from keras import ops
    >>> s = AlignedMTL().bind(["a", "b"])
    >>> # orthogonal gradients of norms 2 and 1: both aligned to norm 1
    >>> w = s.task_weights(ops.ones(2), ops.convert_to_tensor([[4.0, 0.0], [0.0, 1.0]]))
    >>> [round(float(x), 4) for x in w]
    [0.25, 0.5]

    Args:
        preference: None or one number > 0 per task (list in task order or
            dict by task name).
    """

    def task_weights(self, losses: Tensor, gram: Tensor, training: bool = True) -> Tensor:
        k = int(ops.shape(gram)[0])
        active = _active(gram)
        u = _preference_vector(self, k, gram.dtype, active)
        # Jacobi is invariant to a common scale; at unit scale no square
        # below overflows or underflows.
        scale = ops.maximum(ops.max(ops.diagonal(gram)), tiny())
        lam, v = symmetric_eigh_jacobi(gram / scale)
        norms = _norms(gram / scale)
        spread = ops.sum(ops.abs(v) * norms[:, None], axis=0)
        kept = ops.greater(lam, float(k) * eps() * spread * spread)
        smallest = ops.min(ops.where(kept, lam, float("inf")))
        inverse_root = ops.where(kept, 1.0 / ops.sqrt(ops.where(kept, lam, 1.0)), 0.0)
        root = ops.sqrt(ops.where(ops.any(kept), smallest, 0.0))
        b = root * ops.matmul(v * inverse_root[None, :], ops.transpose(v))
        return ops.where(ops.any(kept), ops.matmul(b, u), u)


@_register
@register_strategy("gradvac")
class GradVac(SeededStrategy):
    """GradVac: raise each pair's gradient cosine to a moving target.

    Wang, Tsvetkov, Firat & Cao, "Gradient Vaccine: Investigating and
    Improving Multi-task Optimization in Massively Multilingual Models"
    (ICLR 2021, arXiv 2010.05874), Algorithm 1. For each task i, g_i' = g_i;
    for each other task j, in a random order (a new permutation per task and
    per step), with phi = cos(g_i', g_j) and the target phi_hat_ij:

        if phi < phi_hat_ij:
            g_i' += ||g_i'|| (phi_hat_ij sqrt(1 - phi^2) - phi sqrt(1 - phi_hat_ij^2))
                    / (||g_j|| sqrt(1 - phi_hat_ij^2)) g_j       (then cos(g_i', g_j) = phi_hat_ij)
        phi_hat_ij <- (1 - beta) phi_hat_ij + beta phi,

    and d = sum_i g_i'. PCGrad is the case phi_hat = 0 without the moving
    average. Each g_i' is tracked as a row of coefficients on the original
    gradients (C, k x k, g_i' = sum_m C_im g_m), so only the Gram matrix M is
    needed: <g_i', g_j> = (C M)_ij, ||g_i'||^2 = (C M C^T)_ii, w = the column
    sums of C. Each task's own parameters get its plain gradient.

    Conventions:

    * The moving average is of phi, the cosine before the pair's correction,
      updated for every visited pair (the paper's Algorithm 1, as torchjd
      reads it; LibMTL updates it only for the pairs it corrects, so there a
      target can only fall); phi_hat starts at
      0 (the paper) and is a (k, k) non-trainable variable, saved with the
      model with the permutations' seed state, so a resumed run continues
      exactly.
    * beta defaults to 0.01, the paper's choice (torchjd and LibMTL default to
      0.5).
    * The whole shared-parameter vector is one group (the paper's and
      torchjd's default; LibMTL can also apply it per layer).
    * A pair with a zero g_i' or g_j has no cosine: it is skipped, and its
      phi_hat is left unchanged. g_i' counts as zero when ||g_i'||^2 <=
      k eps (sum_m |C_im| ||g_m||)^2 (eps of float32), the rounding error of
      its squared norm computed from M: a correction against an exactly
      opposed g_j (phi = -1) cancels g_i' in theory, and the cosine of the
      float32 remainder with the next g_j would be noise (torchjd adds 1e-8 to the denominators: its
      phi is then 0 and the target decays towards 0). A target of exactly
      +-1 (sqrt(1 - phi_hat^2) = 0, an unreachable cosine) makes no
      correction rather than an infinite one. No other epsilon.
    * Not training (`training=False`): the weights with the current targets,
      which are not updated.

    Examples:
    >>> from keras import ops
    >>> s = GradVac(beta=0.5, seed=0).bind(["a", "b"])
    >>> gram = ops.convert_to_tensor([[1.0, 0.0], [0.0, 1.0]])  # orthogonal: cos = 0
    >>> w = s.task_weights(ops.ones(2), gram)  # targets 0: nothing to correct
    >>> [round(float(x), 4) for x in w]
    [1.0, 1.0]
    >>> float(s.phi_hat[0, 1])  # (1 - 0.5) * 0 + 0.5 * cos
    0.0

    Args:
        beta: rate of the moving average of the cosines, in [0, 1].
        seed: int or None, for the permutations.
    """

    uses_gradients = True
    scales_task_specific = False

    def __init__(self, beta: float = 0.01, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(seed=seed, **kwargs)
        self.beta = float(validate_number("beta", beta, low=0, high=1))

    def build(self, input_shape: Shape) -> None:
        k = input_shape[0]
        self.phi_hat = self.add_weight(
            shape=(k, k), initializer="zeros", trainable=False, aggregation="mean", name="phi_hat"
        )
        self.built = True

    def task_weights(
        self,
        losses: Tensor,
        gram: Tensor,
        training: bool = True,
        order: Tensor | Sequence[Sequence[int]] | None = None,
    ) -> Tensor:
        """`order` (k, k) int: row i lists the tasks in the order task i visits them
        (its own index is skipped); random when None."""
        k = int(ops.shape(gram)[0])
        if order is None and k == 2:
            order = [[0, 1], [0, 1]]  # one other task: the order cannot matter
        if order is None:
            noise = keras.random.uniform((k, k), seed=self.seed_generator)
            order = ops.argsort(noise, axis=-1)
        order = ops.convert_to_tensor(order, "int32")
        # A copy: on PyTorch a variable's tensor is updated in place by assign.
        phi_hat = ops.copy(ops.convert_to_tensor(self.phi_hat))
        coefficients = ops.eye(k, dtype=gram.dtype)
        norms = _norms(gram)
        own = ops.arange(k, dtype="int32")
        for position in range(k):
            j = order[:, position]
            onto = ops.one_hot(j, k, dtype=gram.dtype)  # row i = e_{j_i}
            products = ops.matmul(coefficients, gram)  # row i: <g_i', g_m>
            inner = ops.sum(products * onto, axis=-1)
            norm2_i = ops.sum(products * coefficients, axis=-1)
            norm_i = ops.sqrt(ops.maximum(norm2_i, 0.0))
            norm_j = ops.take(norms, j)
            # g_i' is zero to rounding when its squared norm is within the
            # float32 error of the quadratic form C_i M C_i^T (a correction
            # against an opposed g_j cancels g_i' exactly in theory): its
            # cosine with anything would be noise.
            size = ops.sum(ops.abs(coefficients) * norms[None, :], axis=-1)
            nonzero_i = ops.greater(norm2_i, float(k) * eps() * size * size)
            valid = ops.logical_and(
                ops.not_equal(j, own), ops.logical_and(nonzero_i, ops.greater(norm_j, 0.0))
            )
            cosine = ops.clip(safe_divide(inner, norm_i * norm_j), -1.0, 1.0)
            target = ops.sum(phi_hat * onto, axis=-1)
            target_sine = ops.sqrt(ops.maximum(1.0 - target * target, 0.0))
            # sin^2 from the 2 x 2 Gram determinant of (g_i', g_j) rather than
            # 1 - cos^2: exact (0) for exactly opposed or parallel float32
            # gradients, where 1 - cos^2 leaves sqrt(eps) ~ 3e-4.
            norm2_j = ops.take(ops.diagonal(gram), j)
            sine = ops.sqrt(
                ops.clip(safe_divide(norm2_i * norm2_j - inner * inner, norm2_i * norm2_j), 0.0, 1.0)
            )
            step = safe_divide(norm_i * (target * sine - cosine * target_sine), norm_j * target_sine)
            step = ops.where(ops.logical_and(valid, ops.less(cosine, target)), step, 0.0)
            coefficients = coefficients + step[:, None] * onto
            updated = ops.where(valid, (1.0 - self.beta) * target + self.beta * cosine, target)
            phi_hat = ops.where(ops.greater(onto, 0.0), updated[:, None], phi_hat)
        if training:
            self.phi_hat.assign(phi_hat)
        return ops.sum(coefficients, axis=0)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["beta"] = self.beta
        return config


def _fair_share_weights(gram: Tensor, power: float, iterations: int, search_steps: int) -> Tensor:
    """w > 0 with (G w)_i = w_i^-power for every task with a gradient, else 0.

    The bargaining condition of Nash-MTL (power = 1) and FairGrad (power =
    1 / alpha). It is the stationarity condition of the strictly convex

        f(w) = 1/2 w^T G w - sum_i h(w_i),  h'(w) = w^-power,

    (h = log for power 1, w^(1 - power) / (1 - power) otherwise) over w > 0,
    solved by damped Newton: the Hessian G + diag(power w^(-power - 1)) is
    positive definite even where G is singular. Everything runs in the unit
    variables b_i = w_i ||g_i||, where the condition reads C b = c b^-power
    with C the correlation matrix (unit diagonal) and c_i = ||g_i||^(power - 1)
    (1 for Nash-MTL, which is therefore independent of the gradient norms;
    c is divided by its largest entry, which only rescales b). Each Newton
    step is followed by a line search along the step for the minimum of f,
    by `search_steps` safeguarded Newton steps on its derivative, which is
    computed from gradients rather than from values of f (in float32 the
    values stop resolving the minimum long before the gradients do); the
    step is capped at 0.95 of the way to the boundary w > 0.

    The minimiser exists iff no convex combination of the gradients is 0
    (f is unbounded below along such a combination): at a Pareto-stationary
    point there is no bargaining solution, and the weights are 0 (no move,
    the disagreement point of the bargaining game). That is detected from
    the end of the iteration: a Newton decrement that has not fallen below
    1e-3 (no convergence), or a combination sum_i b_i g_i / ||g_i|| that has
    cancelled to below 1e-4 of sum_i b_i (so close to 0 that float32
    rounding of G decides its direction).
    """
    k = int(ops.shape(gram)[0])
    dtype = gram.dtype
    active = _active(gram)
    mask = ops.cast(active, dtype)
    eye = ops.eye(k, dtype=dtype)
    norms = ops.where(active, _norms(gram), 1.0)
    on = mask[:, None] * mask[None, :]
    c_matrix = ops.clip(gram / (norms[:, None] * norms[None, :]), -1.0, 1.0) * on
    c_matrix = c_matrix * (1.0 - eye) + eye  # unit diagonal; inactive tasks decouple
    # c = ||g||^(power - 1) / its largest entry, in logarithms (no overflow).
    log_norms = ops.log(norms)
    exponent = (power - 1.0) * log_norms
    shift = ops.max(ops.where(active, exponent, -float("inf")))
    shift = ops.where(ops.any(active), shift, 0.0)
    log_c = ops.where(active, exponent - shift, 0.0)
    c = ops.exp(log_c)

    def gradient(b):
        return ops.matmul(c_matrix, b) - c * ops.power(b, -power)

    def curvature(b):
        return power * c * ops.power(b, -power - 1.0)

    # Start from the minimiser of f along the ray through b_i = c_i^(1/(1+power)),
    # the solution when the gradients are orthogonal.
    ray = ops.exp(log_c / (1.0 + power))
    quadratic = ops.maximum(ops.sum(ray * ops.matmul(c_matrix, ray)), eps())
    scale = ops.power(ops.sum(c * ops.power(ray, 1.0 - power)) / quadratic, 1.0 / (1.0 + power))
    b0 = ops.where(active, scale * ray, 1.0)

    def newton_step(b):
        r = gradient(b)
        hessian = c_matrix + eye * curvature(b)[None, :]
        # Jacobi-preconditioned solve: the curvature terms span many decades.
        # The ridge (16 eps on the unit diagonal) keeps the system regular
        # where G is singular and w large (no solution: f unbounded); it
        # only bends the step, not the point it converges to.
        d = 1.0 / ops.sqrt(ops.diagonal(hessian))
        scaled = hessian * (d[:, None] * d[None, :]) + 16.0 * eps() * eye
        step = -d * ops.solve(scaled, (d * r)[:, None])[:, 0]
        step = ops.where(ops.logical_and(active, ops.isfinite(step)), step, 0.0)
        return step, -ops.sum(step * r)  # (Newton step, squared Newton decrement)

    # The line search tries t = cap * 2^-j, j = 0..15, at once (one batched
    # evaluation, not a loop of small ops: this runs inside every train step,
    # eagerly on PyTorch), brackets the minimum of f between the largest t
    # where f still decreases and the next larger one, and refines it by
    # `search_steps` secant steps on the derivative.
    fractions = ops.convert_to_tensor([2.0**-j for j in range(16)], dtype)

    def slopes(b, step, t):  # d/dt f(b + t step) at each t (m,)
        points = b[None, :] + t[:, None] * step[None, :]
        r = ops.matmul(points, c_matrix) - c[None, :] * ops.power(points, -power)
        return ops.sum(r * step[None, :], axis=1)

    def body(_, b):
        step, _ = newton_step(b)
        to_boundary = ops.min(ops.where(ops.less(step, 0.0), -b / ops.minimum(step, -tiny()), float("inf")))
        cap = ops.minimum(1.0, 0.95 * to_boundary)
        t = cap * fractions
        s = slopes(b, step, t)
        descending = ops.less_equal(s, 0.0)
        # Largest t where f still decreases (fractions decrease: the first such).
        first = ops.argmax(ops.cast(descending, "int32"))
        any_descending = ops.any(descending)
        low = ops.where(any_descending, ops.take(t, first), 0.0)
        s_low = ops.where(any_descending, ops.take(s, first), -ops.sum(step * step))
        high_index = ops.maximum(first - 1, 0)
        high = ops.where(any_descending, ops.take(t, high_index), ops.take(t, 15))
        s_high = ops.where(any_descending, ops.take(s, high_index), ops.take(s, 15))
        at_cap = ops.logical_and(any_descending, ops.equal(first, 0))

        def secant_point(low, s_low, high, s_high):
            # Where the line through the bracket's two slopes crosses zero.
            gap = s_high - s_low
            return ops.where(ops.greater(gap, 0.0), low - s_low * safe_divide(high - low, gap), low)

        def secant(_, bracket):
            low, s_low, high, s_high = bracket
            t = ops.clip(secant_point(low, s_low, high, s_high), low, high)
            s_t = slopes(b, step, t[None])[0]
            up = ops.greater(s_t, 0.0)
            return (
                ops.where(up, low, t),
                ops.where(up, s_low, s_t),
                ops.where(up, t, high),
                ops.where(up, s_t, s_high),
            )

        low, s_low, high, s_high = ops.fori_loop(0, search_steps, secant, (low, s_low, high, s_high))
        t = ops.where(at_cap, cap, ops.clip(secant_point(low, s_low, high, s_high), low, high))
        b_next = b + t * step
        return ops.where(ops.all(ops.logical_and(ops.greater(b_next, 0.0), ops.isfinite(b_next))), b_next, b)

    b = ops.fori_loop(0, iterations, body, b0)
    _, decrement = newton_step(b)
    b = ops.where(active, b, 0.0)
    cancelled = ops.sum(b * ops.matmul(c_matrix, b)) < 1e-4 * ops.square(ops.sum(b))
    solved = ops.logical_and(ops.less(decrement, 1e-3), ops.logical_not(cancelled))
    solved = ops.logical_and(solved, ops.any(active))
    # w = b / ||g||, times the scale c was divided by: b scales as c^(1/(1+power)).
    log_w = ops.log(ops.maximum(b, tiny())) - log_norms + shift / (1.0 + power)
    w = ops.where(active, ops.exp(log_w), 0.0)
    w = ops.where(ops.all(ops.isfinite(w)), w, 0.0)
    return ops.where(solved, w, ops.zeros_like(w))


_LINE_SEARCH_STEPS = 2
# Eagerly (JAX, TensorFlow) the solver's loops would run op by op, or be
# retraced at every call: one compiled program per (k, power, iterations).
_fair_share_weights_fused = _backend.fuse(_fair_share_weights, static_argnums=(1, 2, 3))


class _Bargaining(Strategy):
    uses_gradients = True
    scales_task_specific = False

    def __init__(self, max_iterations: int = 30, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_iterations = validate_number("max_iterations", max_iterations, low=1, integer=True)

    def _power(self) -> float | None:
        raise NotImplementedError

    def task_weights(self, losses: Tensor, gram: Tensor, training: bool = True) -> Tensor:
        power = self._power()
        if power is None:  # FairGrad's alpha = 0: the sum of the (active) losses
            return ops.cast(_active(gram), gram.dtype)
        return _fair_share_weights_fused(gram, power, self.max_iterations, _LINE_SEARCH_STEPS)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["max_iterations"] = self.max_iterations
        return config


@_register
@register_strategy("nash_mtl")
class NashMTL(_Bargaining):
    """Nash-MTL: the Nash bargaining solution between the tasks for the shared update.

    Navon, Shamsian, Achituve, Maron, Kawaguchi, Chechik & Fetaya,
    "Multi-Task Learning as a Bargaining Game" (ICML 2022, arXiv
    2202.01017). The tasks bargain over the update d, task i's utility
    being <g_i, d>; the Nash bargaining solution is d = sum_i w_i g_i with
    w > 0 solving

        (G w)_i = 1 / w_i   for every task i,

    i.e. w_i <g_i, d> = 1: each task's share of the improvement is inversely
    proportional to its weight. The update's norm is always sqrt(k'), k' the
    tasks with a gradient (||d||^2 = w^T G w = sum_i w_i (G w)_i = k'),
    whatever the size of the gradients: w_i scales as 1 / ||g_i||, and the
    direction depends only on the angles between the gradients.

    Solved exactly (not the paper's sequence of convex approximations): w
    minimises the strictly convex 1/2 w^T G w - sum_i log w_i, by
    `max_iterations` damped Newton steps with a line search, in float32
    with a fixed iteration count (see `_fair_share_weights`); within 1e-5
    (relative) of the float64 solution in the tests, k = 2..8, gradient-norm
    ratios up to 10^4.

    Conventions where the paper or its code leave a choice:

    * a task with a zero gradient on the shared variables has no utility to
      bargain with (the condition has no solution for it): it is left out,
      weight 0;
    * linearly dependent gradients (identical ones, say) still have a unique
      solution as long as no convex combination of them is 0, since the
      barrier keeps the problem strictly convex; when one is (a
      Pareto-stationary point: opposed gradients, or 0 inside their convex
      hull), no update improves every task, the bargaining problem has no
      solution and the weights are 0 (the disagreement point: no shared
      update);
    * the official code (and torchjd, which follows it) approximates the
      solution by at most 20 convex subproblems (cvxpy/ECOS), clips ||d|| to
      `max_norm` = 1 and may recompute the weights only every
      `update_weights_every` steps. Neither option is offered: the exact d
      has the constant norm sqrt(k'), so a clip would only rescale the
      learning rate, and `MultiTaskModel` computes the per-task gradients at
      every step anyway, so stale weights would save nothing. The strategy
      is stateless (nothing to save or resume);
    * only the shared update is weighted: each task's own parameters get its
      plain gradient (the official code weighs the losses, so its heads get
      w_i times their gradient, with w_i ~ 1 / ||g_i|| unbounded).

    Example:

        >>> import numpy as np
        >>> from keras_tricks import multitask
        >>> s = multitask.NashMTL().bind(["a", "b"])
        >>> w = s.task_weights(np.ones(2, "float32"), np.array([[1.0, 0.0], [0.0, 4.0]], "float32"))
        >>> [round(float(x), 4) for x in np.asarray(w)]  # orthogonal gradients: w_i = 1 / ||g_i||
        [1.0, 0.5]

    Args:
        max_iterations: Newton steps (>= 1).
    """

    def _power(self) -> float:
        return 1.0


@_register
@register_strategy("fairgrad")
class FairGrad(_Bargaining):
    """FairGrad: alpha-fair allocation of the shared update between the tasks.

    Ban & Ji, "Fair Resource Allocation in Multi-Task Learning" (ICML 2024,
    arXiv 2402.15638). With task i's utility <g_i, d>, the alpha-fair
    update d = sum_i w_i g_i has w > 0 solving

        (G w)_i = w_i^(-1 / alpha)   for every task i.

    alpha = 1 is proportional fairness, Nash-MTL's condition (`NashMTL`);
    alpha -> infinity tends to max-min fairness, <g_i, d> equal for all i;
    alpha = 0 is the utilitarian sum: w = 1 (the limit of the condition as
    alpha -> 0; the paper calls it linear scalarisation, torchjd returns
    w = 1/k). Scaling every gradient by s scales d by s^((1 - alpha) /
    (1 + alpha)): for alpha > 1 the update grows as the gradients shrink.

    Solved exactly: w minimises the strictly convex 1/2 w^T G w -
    sum_i h(w_i), h'(w) = w^(-1/alpha), with the solver of `NashMTL`
    (`_fair_share_weights`); the official code and torchjd run
    `scipy.optimize.least_squares` on G w - w^(-1/alpha) from w = 1/k
    (approximate, see docs/multitask.md). Tested within 1e-5 (relative) of
    the float64 solution for alpha in [0.5, 2], k = 2..8, gradient-norm
    ratios up to 10^4. Far outside that range (alpha >= 10 or <= 0.1 with
    norm ratios of 10^4) the exact weights span more than float32's range
    (10^-40 next to 1) and the solver may stop short; it then returns 0 (no
    shared update) rather than a wrong direction. Zero gradients,
    Pareto-stationary points and the task-specific parameters are treated
    as in `NashMTL`; the official code's `max_norm` clip of the shared
    gradient is not offered (`keras.optimizers.Optimizer(clipnorm=...)`
    clips every variable's update).

    Example:

        >>> import numpy as np
        >>> from keras_tricks import multitask
        >>> s = multitask.FairGrad(alpha=2.0).bind(["a", "b"])
        >>> w = s.task_weights(np.ones(2, "float32"), np.array([[1.0, 0.0], [0.0, 4.0]], "float32"))
        >>> [round(float(x), 4) for x in np.asarray(w)]  # orthogonal: w_i = ||g_i||^(-2 alpha / (1 + alpha))
        [1.0, 0.3969]

    Args:
        alpha: the fairness parameter, >= 0 (1: Nash-MTL; paper's
            experiments: 0.5 to 8 or so).
        max_iterations: Newton steps (>= 1).
    """

    def __init__(self, alpha: float = 1.0, max_iterations: int = 30, **kwargs: Any) -> None:
        super().__init__(max_iterations=max_iterations, **kwargs)
        self.alpha = float(validate_number("alpha", alpha, low=0))

    def _power(self) -> float | None:
        return None if self.alpha == 0 else 1.0 / self.alpha

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["alpha"] = self.alpha
        return config
