"""Step time and memory of weight EMA: plain training, Keras's
`Adam(use_ema=True)` and `keras_tricks.callbacks.ExponentialMovingAverage`,
on the same ~1M-parameter MLP, in one run.

    KERAS_BACKEND=tensorflow PYTHONPATH=$PWD python benchmarks/bench_ema.py
    PYTHONPATH=$PWD python benchmarks/bench_ema.py --quick

Step time: in each of `--repeats` rounds, each configuration trains a fresh
model for 1 + `--epochs` epochs in one `fit()`; the first epoch (compilation)
is dropped and the median time between consecutive steps over all rounds is
kept. Rounds interleave the configurations so that load from other
processes hits all three alike. (A fresh model per round because Keras's own
`use_ema=True` fails on a second `fit()` of the same model on JAX, Keras
3.15: "'NoneType' object is not callable".) The target is ours <= 1.05x
Keras's `use_ema`.

Memory: the bytes of optimizer state beyond plain Adam's, counted from the
variables themselves; both EMAs should add exactly one float32 copy of the
averaged weights (plus a few scalars).
"""

import argparse
import statistics
import time

import keras
import numpy as np

from keras_tricks.callbacks import ExponentialMovingAverage

CONFIGS = ("plain", "keras_use_ema", "keras_tricks_ema")


def build(config, features):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((features,)),
            keras.layers.Dense(1024, activation="relu"),
            keras.layers.Dense(512, activation="relu"),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    if config == "keras_use_ema":
        optimizer = keras.optimizers.Adam(1e-3, use_ema=True, ema_momentum=0.999)
    else:
        optimizer = keras.optimizers.Adam(1e-3)
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    callbacks = [ExponentialMovingAverage(momentum=0.999)] if config == "keras_tricks_ema" else []
    return model, callbacks


class StepTimer(keras.callbacks.Callback):
    """Time between consecutive train-batch starts, per epoch. The batch hook
    makes Keras wait for each step (the same for all configurations), so the
    median over hundreds of steps shrugs off bursts of load from other
    processes better than whole-epoch times."""

    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append([])

    def on_train_batch_begin(self, batch, logs=None):
        self.epochs[-1].append(time.perf_counter())

    def on_train_batch_end(self, batch, logs=None):
        pass

    def step_times(self, skip_epochs=1):
        return [b - a for epoch in self.epochs[skip_epochs:] for a, b in zip(epoch, epoch[1:])]


def optimizer_step_times(model_by_config, repeats):
    """Median time of the optimizer update alone (gradients fixed), compiled
    the way each backend's train step compiles it: the EMA's own cost without
    the forward and backward passes around it."""
    from keras_tricks.optimizers import ExponentialMovingAverageOptimizer

    backend = keras.backend.backend()
    template = model_by_config["plain"][0].trainable_variables
    rng = np.random.default_rng(1)
    grads = [keras.ops.convert_to_tensor(rng.normal(size=v.shape).astype("float32") * 1e-3) for v in template]
    fns = {}
    for config in CONFIGS:
        variables = [keras.Variable(keras.ops.convert_to_numpy(v)) for v in template]
        if config == "keras_use_ema":
            opt = keras.optimizers.Adam(1e-3, use_ema=True, ema_momentum=0.999)
        elif config == "plain":
            opt = keras.optimizers.Adam(1e-3)
        else:
            opt = ExponentialMovingAverageOptimizer(keras.optimizers.Adam(1e-3), momentum=0.999)
        opt.build(variables)
        if backend == "tensorflow":
            import tensorflow as tf

            def make(opt=opt, variables=variables):
                @tf.function(jit_compile=True)
                def step():
                    opt.apply(grads, variables)

                return step

            fns[config] = make()
        elif backend == "jax":
            import jax

            stateless = jax.jit(opt.stateless_apply, donate_argnums=(0, 2))
            state = {"opt": [v.value for v in opt.variables], "tv": [v.value for v in variables]}

            def step(stateless=stateless, state=state):
                tv, ov = stateless(state["opt"], grads, state["tv"])
                state["opt"], state["tv"] = ov, tv
                jax.block_until_ready(tv)

            fns[config] = step
        else:
            fns[config] = lambda opt=opt, variables=variables: opt.apply(grads, variables)
    for fn in fns.values():
        fn()
    times = {c: [] for c in CONFIGS}
    for _ in range(repeats):
        for config, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[config].append(time.perf_counter() - start)
    return {c: statistics.median(t) for c, t in times.items()}


def nbytes(variables):
    return sum(
        int(np.prod(v.shape)) * np.dtype(keras.backend.standardize_dtype(v.dtype)).itemsize for v in variables
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=8192)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--features", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a fast sanity run")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="PyTorch intra-op threads (0: leave the default); on a "
        "CPU-limited container torch may start one per host core",
    )
    args = parser.parse_args(argv)
    if args.threads and keras.backend.backend() == "torch":
        import torch

        torch.set_num_threads(args.threads)
    if args.quick:
        args.samples, args.epochs, args.repeats = 2048, 2, 1

    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.samples, args.features)).astype("float32")
    y = rng.integers(0, 10, size=(args.samples,)).astype("int32")
    steps = args.samples // args.batch_size

    times = {c: [] for c in CONFIGS}
    models = {}
    for _ in range(args.repeats):
        for config in CONFIGS:
            model, callbacks = build(config, args.features)
            timer = StepTimer()
            model.fit(
                x,
                y,
                batch_size=args.batch_size,
                epochs=1 + args.epochs,
                verbose=0,
                callbacks=callbacks + [timer],
            )
            times[config] += timer.step_times()
            models[config] = (model, callbacks)

    params = models["plain"][0].count_params()
    param_bytes = nbytes(models["plain"][0].trainable_variables)
    base = nbytes(models["plain"][0].optimizer.variables)
    print(
        f"backend {keras.backend.backend()}, MLP with {params} parameters "
        f"({param_bytes / 2**20:.2f} MiB float32), batch {args.batch_size}, "
        f"{steps} steps/epoch x {args.epochs} epochs x {args.repeats} rounds"
    )
    print(
        f"{'configuration':<18} {'ms/step':>8} {'vs plain':>9} {'vs use_ema':>11} "
        f"{'optimizer MiB':>14} {'extra vs plain':>15}"
    )
    median = {c: statistics.median(t) for c, t in times.items()}
    for config in CONFIGS:
        model = models[config][0]
        opt_bytes = nbytes(model.optimizer.variables)
        extra = opt_bytes - base
        if config == "keras_tricks_ema":
            # Non-trainable extras (variables="all") live outside
            # optimizer.variables; none here, but count them anyway.
            extra += nbytes(model.optimizer.average_variables[len(model.optimizer._averages) :])
        print(
            f"{config:<18} {median[config] * 1e3:8.3f} {median[config] / median['plain']:9.3f}x "
            f"{median[config] / median['keras_use_ema']:10.3f}x {opt_bytes / 2**20:14.3f} "
            f"{extra:>10d} B = {extra / param_bytes:.4f} copies"
        )
    opt_median = optimizer_step_times(models, 30 if args.quick else 200)
    print(
        "optimizer update alone (fixed gradients, compiled): "
        + ", ".join(f"{c} {opt_median[c] * 1e3:.3f} ms" for c in CONFIGS)
        + f"; ours / Keras use_ema = "
        f"{opt_median['keras_tricks_ema'] / opt_median['keras_use_ema']:.3f}x"
    )
    ours = models["keras_tricks_ema"][0].optimizer
    print(
        f"keras_tricks averages: {len(ours.average_variables)} variables, "
        f"{nbytes(ours.average_variables)} B (weights: {param_bytes} B); "
        f"ratio to Keras use_ema: {median['keras_tricks_ema'] / median['keras_use_ema']:.3f}x "
        "(target <= 1.05x)"
    )


if __name__ == "__main__":
    main()
