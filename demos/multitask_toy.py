"""The two-task toy problem of CAGrad (Liu et al. 2021) and Nash-MTL (Navon et
al. 2022) driven by keras_tricks.multitask's own strategies.

Two parameters x = (x1, x2), two closed-form losses (tests/multitask/toy.py),
Pareto set {x1 in [-7, 7], x2 ~ -8.3552}. At every step the strategy's
`task_weights` is called (compiled: tf.function / jax.jit; eager on PyTorch)
on the Gram matrix of the two analytic gradients, and Adam (PyTorch's
defaults, the papers' lr 1e-3) moves x along d = sum_i w_i g_i. "equal" uses
the weights of the `Equal` strategy (ones).

    PYTHONPATH=$PWD python demos/multitask_toy.py             # the papers' 100k steps
    PYTHONPATH=$PWD python demos/multitask_toy.py --smoke     # a few seconds
    PYTHONPATH=$PWD python demos/multitask_toy.py --setting nash

Prints where each method ends (and its distance to the Pareto set) and saves
the trajectories to demos/output/multitask_toy.png.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _quiet  # noqa: E402

_quiet.quiet_backend_start()
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

from keras_tricks import _backend, multitask  # noqa: E402
from keras_tricks.multitask.strategy import SeededStrategy  # noqa: E402
from tests.multitask import toy  # noqa: E402

METHODS = ("equal", "mgda", "pcgrad", "cagrad", "primary_auxiliary")
# `--methods new`: the gradient-based strategies added since the first table.
NEW = tuple(
    n for n, cls in multitask.STRATEGIES.items() if cls.uses_gradients and n not in METHODS + ("gradnorm",)
)
TASKS = ["task_1", "task_2"]


def compiled(fn):
    """fn compiled as a train step is (tf.function / jax.jit); eager on PyTorch."""
    backend = _backend.name()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn)
    if backend == "jax":
        import jax

        return jax.jit(fn)
    return fn


def strategy_direction(name, scale=1.0, **kwargs):
    """x -> d = sum_i w_i g_i with w from the real strategy `name`."""
    strategy = multitask.STRATEGIES[name](**kwargs).bind(TASKS)
    stateful = bool(strategy.non_trainable_variables) or isinstance(strategy, SeededStrategy)
    if getattr(strategy, "elementwise", False):
        weights_at = None
    elif not strategy.uses_gradients:
        weights_at = lambda f, gram: strategy.combine(f)[1]  # noqa: E731
    elif stateful and _backend.name() == "jax":
        # its state (a SeedGenerator, GradVac's targets) changes at every
        # call, which jax.jit cannot do without threading the state through:
        # eager there (~4 ms a step, so the papers' 100k steps take minutes
        # per start; TensorFlow compiles it)
        weights_at = strategy.task_weights
    else:
        weights_at = compiled(strategy.task_weights)
    if getattr(strategy, "elementwise", False):
        # GradDrop acts per coordinate, not through the Gram matrix.
        combine = compiled(lambda g: strategy.combine_elementwise([g[0], g[1]])[0])
        if _backend.name() == "jax":
            combine = lambda g: strategy.combine_elementwise([g[0], g[1]])[0]  # noqa: E731

        def direction(x):
            g = ops.convert_to_tensor(toy.gradients(x, scale).astype("float32"))
            return np.asarray(ops.convert_to_numpy(combine(g)), dtype=np.float64)

        return direction

    def direction(x):
        g = toy.gradients(x, scale)
        f = ops.convert_to_tensor(toy.losses(x, scale).astype("float32"))
        gram = ops.convert_to_tensor((g @ g.T).astype("float32"))
        w = np.asarray(ops.convert_to_numpy(weights_at(f, gram)), dtype=np.float64)
        return w @ g

    return direction


def run(name, x0, steps, lr=toy.LEARNING_RATE, scale=1.0, **kwargs):
    """Trajectory (steps + 1, 2) of Adam on the real strategy's direction."""
    return toy.adam_run(strategy_direction(name, scale, **kwargs), x0, steps, lr=lr)


def plot(trajectories, starts, scale, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = 200
    grid = np.linspace(-10, 10, n)
    xx, yy = np.meshgrid(grid, grid)
    mean_loss = np.array([toy.losses((a, b), scale).mean() for a, b in zip(xx.ravel(), yy.ravel())]).reshape(
        n, n
    )
    pareto = toy.pareto_set(141)
    fig, axes = plt.subplots(1, len(trajectories), figsize=(4 * len(trajectories), 4.2))
    for ax, (name, trajs) in zip(np.atleast_1d(axes), trajectories.items()):
        ax.contour(xx, yy, mean_loss, levels=20, cmap="viridis", linewidths=0.8)
        ax.plot(pareto[:, 0], pareto[:, 1], color="gray", linewidth=5, alpha=0.6)
        for x0, traj in zip(starts, trajs):
            ax.plot(traj[:, 0], traj[:, 1], color="tab:red", linewidth=1.2)
            ax.plot(*x0, "ko", markersize=5)
            ax.plot(*traj[-1], "r*", markersize=9)
        ax.set_title(name)
        ax.set_xlim(-10, 10)
        ax.set_ylim(-10, 10)
        ax.set_aspect("equal")
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--setting",
        choices=["cagrad", "nash"],
        default="cagrad",
        help="the CAGrad paper's (3 starts, 100k steps) or Nash-MTL's (5 starts, 35k steps, L1 x 0.1)",
    )
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--lr", type=float, default=toy.LEARNING_RATE)
    p.add_argument("--smoke", action="store_true", help="2000 steps at lr 0.05")
    p.add_argument(
        "--methods",
        default=",".join(METHODS),
        help=f"comma-separated strategy names, or 'new' for {', '.join(NEW)}",
    )
    p.add_argument("--output", default=os.path.join("demos", "output", "multitask_toy.png"))
    args = p.parse_args(argv)
    starts, steps, scale = (
        (toy.CAGRAD_STARTS, toy.CAGRAD_STEPS, 1.0)
        if args.setting == "cagrad"
        else (toy.NASH_STARTS, toy.NASH_STEPS, toy.NASH_SCALE)
    )
    lr = args.lr
    if args.smoke:
        steps, lr = 2000, 0.05
    steps = args.steps or steps
    methods = (
        list(NEW) if args.methods == "new" else [m.strip() for m in args.methods.split(",") if m.strip()]
    )
    unknown = [m for m in methods if m not in multitask.STRATEGIES]
    if unknown:
        p.error(f"unknown methods {unknown}; choose from {sorted(multitask.STRATEGIES)} or 'new'")
    print(f"backend {_backend.name()}, setting {args.setting}: {steps} Adam steps at lr {lr}, L1 x {scale}")
    trajectories, rows = {}, []
    for name in methods:
        trajectories[name] = []
        for x0 in starts:
            t0 = time.time()
            traj = run(name, x0, steps, lr=lr, scale=scale)
            trajectories[name].append(traj)
            end = traj[-1]
            dist = toy.distance_to_pareto(end)
            rows.append((name, x0, end, dist))
            print(
                f"{name:18s} from {str(x0):13s} -> ({end[0]:8.4f}, {end[1]:8.4f})  "
                f"distance to the Pareto set {dist:8.4f}   [{time.time() - t0:.1f}s]",
                flush=True,
            )
    print("\nend points (distance to the Pareto set):")
    print(f"{'method':18s} " + " ".join(f"{str(x0):>22s}" for x0 in starts))
    for name in methods:
        cells = [f"({e[0]:6.2f},{e[1]:6.2f}) {d:6.3f}" for n, _, e, d in rows if n == name]
        print(f"{name:18s} " + " ".join(f"{c:>22s}" for c in cells))
    plot(trajectories, starts, scale, args.output)
    print(f"\nsaved {args.output}")
    return rows


if __name__ == "__main__":
    main()
