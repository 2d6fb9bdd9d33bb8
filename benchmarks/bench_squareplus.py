"""SquarePlus speed: ours against Keras's built-in and the usual activations.

    python benchmarks/bench_squareplus.py            # 4096 x 4096 float32
    KERAS_BACKEND=jax python benchmarks/bench_squareplus.py
    python benchmarks/bench_squareplus.py --quick    # small, fast sanity run

Times forward and forward+backward (gradient of sum(f(x))) of
`keras_tricks.activations.squareplus` and of `keras.ops.squareplus` (the naive
formula), `softplus`, `gelu` and `relu` (the memory-bandwidth floor of an
elementwise op), eagerly and compiled (XLA `jit_compile=True` on TensorFlow,
`jax.jit` on JAX; PyTorch runs eagerly only, `--torch-compile` adds
`torch.compile`), all in the same run, and prints the time ratio of ours to
each. Targets: compiled, ours <= 1.2x Keras's forward and <= 1.5x
forward+backward; eager PyTorch and TensorFlow, <= 1.3x both. The median of
`--repeats` runs after warm-up is reported, and first, the cost of the very
first call of each (eager TensorFlow compiles an XLA program then).
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _timing import median_time  # noqa: E402
from keras import ops  # noqa: E402

from keras_tricks.activations import squareplus  # noqa: E402

FUNCTIONS = {
    "ours": squareplus,
    "keras_squareplus": lambda x: ops.squareplus(x, 4.0),
    "softplus": ops.softplus,
    "gelu": ops.gelu,
    "relu": ops.relu,
}


def _compiled(fn, backward, jit):
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        def run(x):
            if not backward:
                return fn(x)
            with tf.GradientTape() as tape:
                tape.watch(x)
                total = tf.reduce_sum(fn(x))
            return tape.gradient(total, x)

        return tf.function(run, jit_compile=True) if jit else run
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        run = jax.grad(lambda x: jnp.sum(fn(x))) if backward else fn
        return jax.jit(run) if jit else run
    import torch

    def run(x):
        if not backward:
            with torch.no_grad():
                return fn(x)
        x = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(torch.sum(fn(x)), x)
        return grad

    return torch.compile(run) if jit else run


def _sync(y):
    if keras.backend.backend() == "jax":
        y.block_until_ready()
    return y


def _time(run, x, repeats, warmup=2):
    return median_time(lambda: _sync(run(x)), repeats, warmup=warmup)


def _first_call(run, x):
    start = time.perf_counter()
    _sync(run(x))
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="1024 x 1024, 3 repeats")
    parser.add_argument("--torch-compile", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.size, args.repeats = 1024, 3
    backend = keras.backend.backend()
    modes = ["eager"]
    if backend in ("tensorflow", "jax") or args.torch_compile:
        modes.append("jit")

    x = ops.convert_to_tensor(
        np.random.default_rng(0).normal(scale=5.0, size=(args.size, args.size)).astype("float32")
    )
    print(f"backend {backend}, x {args.size}x{args.size} float32, median of {args.repeats}")
    # Before anything else has run: what a first call costs (kernel set-up,
    # tracing, compiling), then what the second one does.
    print("first call, eager (then second call):")
    for backward in (False, True):
        cells = []
        for name in ("ours", "keras_squareplus"):
            run = _compiled(FUNCTIONS[name], backward, False)
            first = _first_call(run, x)
            cells.append(f"{name} {first * 1e3:7.1f} ms ({_first_call(run, x) * 1e3:.1f} ms)")
        print(f"  {'fwd+bwd' if backward else 'fwd':7s}  " + "  ".join(cells))
    results = {}
    for mode in modes:
        for backward in (False, True):
            label = f"{mode:5s} {'fwd+bwd' if backward else 'fwd':7s}"
            row = {
                name: _time(_compiled(fn, backward, mode == "jit"), x, args.repeats)
                for name, fn in FUNCTIONS.items()
            }
            results[label] = row
            cells = "  ".join(f"{name} {t * 1e3:7.2f} ms" for name, t in row.items())
            print(f"{label}  {cells}")

    print("\nratio of ours to each (lower is faster):")
    header = "".join(f"{name:>18s}" for name in FUNCTIONS if name != "ours")
    print(f"{'':14s}{header}{'keras/relu':>14s}")
    for label, row in results.items():
        ratios = "".join(f"{row['ours'] / row[name]:18.2f}" for name in FUNCTIONS if name != "ours")
        print(f"{label:14s}{ratios}{row['keras_squareplus'] / row['relu']:14.2f}")
    eager = [results[f"eager {'fwd+bwd' if b else 'fwd':7s}"] for b in (False, True)]
    print(
        f"\ntargets eagerly: forward {eager[0]['ours'] / eager[0]['keras_squareplus']:.2f}x, "
        f"forward+backward {eager[1]['ours'] / eager[1]['keras_squareplus']:.2f}x (target <= 1.3x)"
    )
    if "jit" in modes:
        fwd = results["jit   fwd    "]
        bwd = results["jit   fwd+bwd"]
        print(
            f"\ntargets under jit: forward {fwd['ours'] / fwd['keras_squareplus']:.2f}x "
            f"(target <= 1.2x), forward+backward "
            f"{bwd['ours'] / bwd['keras_squareplus']:.2f}x (target <= 1.5x)"
        )


if __name__ == "__main__":
    main()
