"""The two-task toy problem of CAGrad (Liu et al. 2021, Sec. 5.1 / Fig. 1) and
Nash-MTL (Navon et al. 2022, Fig. 1), in float64 NumPy.

Two parameters x = (x1, x2) and two losses (as defined in the papers' public
code; written here from its formulas):

    u1 = 0.5 (-x1 - 7) - tanh(-x2)        u2 = 0.5 (-x1 + 3) + tanh(-x2) + 2
    l_i = log(max(|u_i|, 5e-6)) + 6
    q1 = ((x1 - 7)^2 + 0.1 (x2 + 8)^2) / 10 - 20
    q2 = ((x1 + 7)^2 + 0.1 (x2 + 8)^2) / 10 - 20
    c1 = max(tanh(x2 / 2), 0)             c2 = max(tanh(-x2 / 2), 0)
    L_i = l_i c1 + q_i c2                 (Nash-MTL scales L_1 by 0.1)

For x2 < 0 only the quadratic parts are active. The Pareto set is
{(x1, x2*(x1)) : -7 <= x1 <= 7}, where x2*(x1) solves the stationarity of
lambda L1 + (1 - lambda) L2 in x2 with lambda = (x1 + 7) / 14:
0.02 (x2 + 8) h + ((49 - x1^2) / 10 + 0.01 (x2 + 8)^2 - 20) h' = 0,
h = tanh(-x2 / 2); x2*(0) = -8.3551 (the papers' -8.3552), x2*(+-7) = -8.4345.
The set does not change when a loss is scaled by a positive constant.

Optimiser of both papers: Adam (PyTorch defaults, betas (0.9, 0.999), eps
1e-8), lr 1e-3, on the combined direction; CAGrad: 100,000 steps from
(-8.5, 7.5), (-8.5, -5), (9, 9); Nash-MTL: 35,000 steps from (-8.5, 7.5),
(0, 0), (9, 9), (-7.5, -0.5), (9, -1) with L1 scaled by 0.1.
"""

import numpy as np
from scipy import optimize

from tests.multitask import reference as ref

LOWER = 0.000005
CAGRAD_STARTS = ((-8.5, 7.5), (-8.5, -5.0), (9.0, 9.0))
CAGRAD_STEPS = 100_000
NASH_STARTS = ((-8.5, 7.5), (0.0, 0.0), (9.0, 9.0), (-7.5, -0.5), (9.0, -1.0))
NASH_STEPS = 35_000
NASH_SCALE = 0.1
LEARNING_RATE = 1e-3
PARETO_X2_AT_0 = -8.3552


def _parts(x1, x2):
    t = np.tanh(x2)
    u1 = -0.5 * x1 - 3.5 + t
    u2 = -0.5 * x1 + 3.5 - t
    th = np.tanh(0.5 * x2)
    c1, c2 = max(th, 0.0), max(-th, 0.0)
    return t, u1, u2, th, c1, c2


def losses(x, scale=1.0):
    """(L1, L2) at x = (x1, x2)."""
    x1, x2 = float(x[0]), float(x[1])
    _, u1, u2, _, c1, c2 = _parts(x1, x2)
    l1 = np.log(max(abs(u1), LOWER)) + 6
    l2 = np.log(max(abs(u2), LOWER)) + 6
    s = 0.1 * (x2 + 8) ** 2
    q1 = ((x1 - 7) ** 2 + s) / 10 - 20
    q2 = ((x1 + 7) ** 2 + s) / 10 - 20
    return np.array([scale * (l1 * c1 + q1 * c2), l2 * c1 + q2 * c2])


def gradients(x, scale=1.0):
    """Analytic gradients, (2 tasks, 2 parameters). As PyTorch's clamp in the
    papers' code, a clamp passes the gradient where its input is >= the bound
    (so at x2 = 0, Nash-MTL's start (0, 0), dc1/dx2 = 0.5 and dc2/dx2 = -0.5)
    and blocks it below."""
    x1, x2 = float(x[0]), float(x[1])
    t, u1, u2, th, c1, c2 = _parts(x1, x2)
    sech2 = 1 - t * t
    sech2_half = 1 - th * th
    dc1 = 0.5 * sech2_half if th >= 0 else 0.0
    dc2 = -0.5 * sech2_half if th <= 0 else 0.0
    l1 = np.log(max(abs(u1), LOWER)) + 6
    l2 = np.log(max(abs(u2), LOWER)) + 6
    # d log|u| = du / u where |u| > LOWER
    dl1 = np.array([-0.5, sech2]) / u1 if abs(u1) >= LOWER else np.zeros(2)
    dl2 = np.array([-0.5, -sech2]) / u2 if abs(u2) >= LOWER else np.zeros(2)
    s = 0.1 * (x2 + 8) ** 2
    q1 = ((x1 - 7) ** 2 + s) / 10 - 20
    q2 = ((x1 + 7) ** 2 + s) / 10 - 20
    dq1 = np.array([(x1 - 7) / 5, 0.02 * (x2 + 8)])
    dq2 = np.array([(x1 + 7) / 5, 0.02 * (x2 + 8)])
    g1 = dl1 * c1 + dq1 * c2 + np.array([0.0, l1 * dc1 + q1 * dc2])
    g2 = dl2 * c1 + dq2 * c2 + np.array([0.0, l2 * dc1 + q2 * dc2])
    return np.stack([scale * g1, g2])


def pareto_x2(x1):
    """x2*(x1) on the Pareto set, -7 <= x1 <= 7."""
    a = (49.0 - x1 * x1) / 10

    def stationarity(x2):
        h = np.tanh(-0.5 * x2)
        dh = -0.5 / np.cosh(0.5 * x2) ** 2
        return 0.02 * (x2 + 8) * h + (a + 0.01 * (x2 + 8) ** 2 - 20) * dh

    return optimize.brentq(stationarity, -12.0, -5.0, xtol=1e-14)


def pareto_set(n=281):
    x1 = np.linspace(-7, 7, n)
    return np.stack([x1, [pareto_x2(v) for v in x1]], axis=1)


def distance_to_pareto(x):
    """Euclidean distance from x to the Pareto set (a curve over x1 in [-7, 7])."""
    x = np.asarray(x, float)
    res = optimize.minimize_scalar(
        lambda a: np.hypot(x[0] - a, x[1] - pareto_x2(a)),
        bounds=(-7, 7),
        method="bounded",
        options={"xatol": 1e-10},
    )
    ends = [np.hypot(x[0] - e, x[1] - pareto_x2(e)) for e in (-7.0, 7.0)]
    coarse = pareto_set(57)
    guess = np.min(np.hypot(coarse[:, 0] - x[0], coarse[:, 1] - x[1]))
    return float(min(res.fun, *ends, guess))


# --- update directions from the NumPy references (losses, gram) -> weights ---


def _weights(method, f, gram):
    if method == "equal":
        return np.ones(2)
    if method == "mgda":
        return ref.mgda(f, gram)
    if method == "pcgrad":
        return ref.pcgrad(f, gram, [[1], [0]])  # k = 2: one order only
    if method == "cagrad":
        return ref.cagrad(f, gram, c=0.5)
    if method == "primary_auxiliary":
        return ref.primary_auxiliary(f, gram, primary=0)
    raise ValueError(method)


METHODS = ("equal", "mgda", "pcgrad", "cagrad", "primary_auxiliary")


def adam_run(direction, x0, steps, lr=LEARNING_RATE, beta1=0.9, beta2=0.999, eps=1e-8):
    """PyTorch's Adam on x with gradient `direction(x)`; returns the trajectory
    (steps + 1, 2), start included."""
    x = np.array(x0, dtype=np.float64)
    m = np.zeros(2)
    v = np.zeros(2)
    traj = np.empty((steps + 1, 2))
    traj[0] = x
    for t in range(1, steps + 1):
        g = direction(x)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        mhat = m / (1 - beta1**t)
        vhat = v / (1 - beta2**t)
        x = x - lr * mhat / (np.sqrt(vhat) + eps)
        traj[t] = x
    return traj


def reference_direction(method, scale=1.0):
    def direction(x):
        g = gradients(x, scale)
        w = _weights(method, losses(x, scale), g @ g.T)
        return w @ g

    return direction


def run_reference(method, x0, steps, scale=1.0, lr=LEARNING_RATE):
    return adam_run(reference_direction(method, scale), x0, steps, lr=lr)


if __name__ == "__main__":
    import argparse
    import time

    p = argparse.ArgumentParser(description="toy trajectories with the NumPy references")
    p.add_argument("--setting", choices=["cagrad", "nash"], default="cagrad")
    p.add_argument("--steps", type=int, default=None)
    args = p.parse_args()
    starts, steps, scale = (
        (CAGRAD_STARTS, CAGRAD_STEPS, 1.0)
        if args.setting == "cagrad"
        else (NASH_STARTS, NASH_STEPS, NASH_SCALE)
    )
    steps = args.steps or steps
    print(f"setting {args.setting}: {steps} Adam steps, lr {LEARNING_RATE}, L1 scale {scale}")
    for method in METHODS:
        for x0 in starts:
            t0 = time.time()
            traj = run_reference(method, x0, steps, scale)
            end = traj[-1]
            print(
                f"{method:18s} start {str(x0):13s} end ({end[0]:8.4f}, {end[1]:8.4f}) "
                f"L = {np.round(losses(end, scale), 4)}  dist to Pareto set "
                f"{distance_to_pareto(end):.4f}  ({time.time() - t0:.1f}s)",
                flush=True,
            )
