"""Forward + backward time of ConditionalLayerNormalization vs Keras's LayerNormalization.

    PYTHONPATH=$PWD python benchmarks/bench_conditional_layer_norm.py            # (32, 512, 768)
    PYTHONPATH=$PWD python benchmarks/bench_conditional_layer_norm.py --quick    # small shape, few reps
    KERAS_BACKEND=jax PYTHONPATH=$PWD python benchmarks/bench_conditional_layer_norm.py

For each mode the current backend supports (eager; jit: `tf.function(jit_compile=True)`
on TensorFlow, `jax.jit` on JAX; PyTorch runs eager only, as Keras does by default),
it times one step = forward pass, then the gradient of sum(y * cotangent) with respect
to x, the condition and every trainable weight, and prints the median over the
repetitions and the ratio conditional / plain. The condition is `(batch, c)`,
broadcast over the sequence (the case the issue targets: two small matmuls and a
broadcast on top of LayerNorm). Target: ratio <= 1.5.
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

from keras_tricks.layers import ConditionalLayerNormalization  # noqa: E402


def _grad_fn(layer, inputs_are_list):
    """A function (weights, inputs, cotangent) -> (y, grads) for the backend."""
    backend = keras.backend.backend()
    variables = list(layer.trainable_variables)

    def loss(weights, inputs, cot):
        with keras.StatelessScope(state_mapping=list(zip(variables, weights))):
            y = layer(inputs if inputs_are_list else inputs[0])
        return ops.sum(y * cot)

    if backend == "tensorflow":
        import tensorflow as tf

        def step(weights, inputs, cot):
            with tf.GradientTape() as tape:
                tape.watch(weights)
                tape.watch(inputs)
                value = loss(weights, inputs, cot)
            return value, tape.gradient(value, [weights, inputs])

        return step, tf.function(step, jit_compile=True)
    if backend == "jax":
        import jax

        step = jax.value_and_grad(loss, argnums=(0, 1))
        return step, jax.jit(step)
    if backend == "torch":
        import torch

        def step(weights, inputs, cot):
            weights = [w.detach().requires_grad_(True) for w in weights]
            inputs = [t.detach().requires_grad_(True) for t in inputs]
            value = loss(weights, inputs, cot)
            grads = torch.autograd.grad(value, weights + inputs)
            return value, grads

        return step, None
    raise NotImplementedError(backend)


def _block(result):
    for t in keras.tree.flatten(result):
        if hasattr(t, "block_until_ready"):
            t.block_until_ready()
        else:
            ops.convert_to_numpy(t)


def _time(fn, args, reps, warmup):
    for _ in range(warmup):
        _block(fn(*args))
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        _block(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shape, few repetitions")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--features", type=int, default=768)
    parser.add_argument("--cond", type=int, default=128, help="condition width c")
    parser.add_argument("--reps", type=int, default=10)
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.seq, args.features, args.cond, args.reps = 8, 64, 128, 16, 5

    b, t, d, c = args.batch, args.seq, args.features, args.cond
    rng = np.random.default_rng(0)
    x = ops.convert_to_tensor(rng.normal(size=(b, t, d)).astype("float32"))
    cond = ops.convert_to_tensor(rng.normal(size=(b, c)).astype("float32"))
    cot = ops.convert_to_tensor(rng.normal(size=(b, t, d)).astype("float32"))

    plain = keras.layers.LayerNormalization()
    plain.build((b, t, d))
    conditional = ConditionalLayerNormalization(condition_initializer="random_normal")
    conditional.build([(b, t, d), (b, c)])

    backend = keras.backend.backend()
    print(
        f"backend {backend}, keras {keras.__version__}, x {(b, t, d)}, cond {(b, c)}, "
        f"median of {args.reps} forward+backward steps",
        flush=True,
    )
    print(f"{'mode':8s} {'LayerNormalization':>20s} {'Conditional':>14s} {'ratio':>7s}")
    worst = 0.0
    eager_plain, jit_plain = _grad_fn(plain, False)
    eager_cond, jit_cond = _grad_fn(conditional, True)
    for mode, fp, fc in (("eager", eager_plain, eager_cond), ("jit", jit_plain, jit_cond)):
        if fp is None:
            print(f"{mode:8s} {'(not supported on ' + backend + ')':>44s}")
            continue
        wp = [ops.convert_to_tensor(v.value) for v in plain.trainable_variables]
        wc = [ops.convert_to_tensor(v.value) for v in conditional.trainable_variables]
        warmup = 2 if mode == "jit" else 1
        tp = _time(fp, (wp, [x], cot), args.reps, warmup)
        tc = _time(fc, (wc, [x, cond], cot), args.reps, warmup)
        ratio = tc / tp
        worst = max(worst, ratio)
        print(f"{mode:8s} {tp * 1e3:17.1f} ms {tc * 1e3:11.1f} ms {ratio:6.2f}x", flush=True)
    verdict = "within" if worst <= 1.5 else "ABOVE"
    print(f"worst ratio {worst:.2f}x: {verdict} the 1.5x target")
    return 0


if __name__ == "__main__":
    sys.exit(main())
