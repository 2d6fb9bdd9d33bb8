"""Train-step time of every `keras_tricks.multitask` strategy, against `equal`
and against a hand-written "k separate backward passes" step, in one run.

    PYTHONPATH=$PWD python benchmarks/bench_multitask.py --quick     # sanity, ~1-2 min
    KERAS_BACKEND=jax PYTHONPATH=$PWD python benchmarks/bench_multitask.py
    KERAS_BACKEND=torch PYTHONPATH=$PWD python benchmarks/bench_multitask.py --threads 2
    PYTHONPATH=$PWD python benchmarks/bench_multitask.py --jit-compile true   # TF under XLA

Model: a shared MLP trunk (256 -> 1024 -> 1024 -> 512, ReLU; ~1.84M
parameters) and k task heads (Dense 128 ReLU -> Dense), alternately a
10-class classifier (sparse cross-entropy from logits) and a scalar regressor
(MSE); Adam, batch 256; k = 2 and k = 4.

Every configuration trains through `fit()` and is compiled as Keras compiles
a train step by default (`jit_compile="auto"`: XLA on JAX, `tf.function`
without XLA on a CPU-only TensorFlow, eager PyTorch; `--jit-compile true`
forces XLA on TensorFlow):

* each strategy, as `MultiTaskModel(model, strategy=name)`;
* `ref: 1 backward`: a hand-written step, one forward pass and ONE backward
  pass of the summed loss (what `equal` computes, without MultiTaskModel's
  per-task logging);
* `ref: k backward`: the issue's reference, a hand-written step with one
  forward pass and k separate backward passes of the k task losses with the
  backend's own autodiff (a persistent `tf.GradientTape` and k
  `tape.gradient` calls; `jax.vjp` and k pullbacks inside the jitted step;
  `torch.autograd.grad(..., retain_graph=True)` k times), the summed
  gradient applied with the same optimizer. Being a `train_step` of a
  `keras.Model` subclass, it runs in the same `fit()` loop and is compiled
  exactly as Keras compiles the strategies' steps.

Timing: each configuration is built once per k and warmed up (compilation)
with one short `fit()`; then in each of `--repeats` rounds every
configuration runs one `fit()` epoch of `--steps` steps, rounds interleaving
the configurations (order reversed every other round) so that load from
other processes hits all alike. The figure is the median time between
consecutive train-batch starts over all rounds ("best": the fastest round's
median, steadier on a shared machine) (a batch-end hook makes Keras wait for each step, the same for every
configuration). Ratios: loss-based strategies / `equal`, gradient-based
strategies / `ref: k backward` (target <= 1.15x) and / `equal`.

`<strategy> @z` rows (`--representation`, default mgda, cagrad, upgrad):
the strategy with `MultiTaskModel(representation="trunk<last>")`, per-task
gradients with respect to the trunk's output and one backward pass through
the trunk (MGDA-UB's cut); compare them with `ref: 1 backward` and
`ref: k backward` (no target: the figure says what the cut saves).

Profile (gradient-based strategies): the strategy's `task_weights` alone on a
fixed Gram matrix, and `MultiTaskModel.combine_task_gradients` (Gram matrix +
weights + combination) alone on fixed per-task gradients, each compiled as
the train step is (jax.jit / tf.function / eager), so that
step - reference ~ combine + the extra logging.

Memory (`--memory`, on by default): peak resident set size (Linux VmHWM from
/proc, i.e. psutil-style RSS, covering allocations of every backend's native
runtime) of training steps, measured in a fresh subprocess per configuration:
build, compile and warm up, reset the peak (`/proc/self/clear_refs`), read
the RSS, run `--steps` steps, read the peak. Printed: the peak increase over
the RSS before those steps, and the process's total peak, for `equal`,
`ref: k backward` and two gradient-based strategies, at the largest k.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_tricks import multitask  # noqa: E402

# The first table's strategies in its order, then every one registered since
# (registration order), so that a new strategy is benchmarked too.
LOSS_BASED = ("equal", "initial", "prior", "realtime", "generalized_mean", "uncertainty", "dwa")
GRADIENT_BASED = ("grad_norm_normalization", "gradnorm", "mgda", "pcgrad", "cagrad", "primary_auxiliary")
LOSS_BASED += tuple(
    n for n, cls in multitask.STRATEGIES.items() if not cls.uses_gradients and n not in LOSS_BASED
)
GRADIENT_BASED += tuple(
    n for n, cls in multitask.STRATEGIES.items() if cls.uses_gradients and n not in GRADIENT_BASED
)
REFERENCES = ("ref: 1 backward", "ref: k backward")
# `<strategy> @z`: the strategy with MultiTaskModel(representation=<last trunk layer>).
AT_Z = " @z"
MEMORY_CONFIGS = ("equal", "ref: k backward", "mgda", "cagrad")


# -- model and data -------------------------------------------------------------


def task_names(k):
    return [f"task{i}" for i in range(k)]


def is_classifier(i):
    return i % 2 == 0


def make_model(k, features, trunk, head, classes=10):
    keras.utils.set_random_seed(0)
    x = keras.Input((features,), name="x")
    h = x
    for n, width in enumerate(trunk):
        h = keras.layers.Dense(width, activation="relu", name=f"trunk{n}")(h)
    outputs = []
    for i, name in enumerate(task_names(k)):
        t = keras.layers.Dense(head, activation="relu", name=f"{name}_hidden")(h)
        outputs.append(keras.layers.Dense(classes if is_classifier(i) else 1, name=name)(t))
    return keras.Model(x, outputs, name="shared_trunk")


def make_losses(k):
    return [
        keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        if is_classifier(i)
        else keras.losses.MeanSquaredError()
        for i in range(k)
    ]


def make_data(k, samples, features, classes=10):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(samples, features)).astype("float32")
    projection = rng.normal(size=(features, k)).astype("float32") / np.sqrt(features)
    z = x @ projection
    y = {}
    for i, name in enumerate(task_names(k)):
        if is_classifier(i):
            y[name] = np.digitize(z[:, i], np.quantile(z[:, i], np.linspace(0, 1, classes + 1)[1:-1]))
        else:
            y[name] = (z[:, i : i + 1] + 0.1 * rng.normal(size=(samples, 1))).astype("float32")
    return x, y


def make_strategy(name, k):
    if name == "prior":
        # Entropy of 10 balanced classes; variance of the regression targets (~1).
        return multitask.Prior([float(np.log(10)) if is_classifier(i) else 1.0 for i in range(k)])
    return multitask.get(name)


# -- the hand-written references ------------------------------------------------


class Reference(keras.Model):
    """One forward pass, then one backward pass of the summed loss
    (`backward="one"`) or k backward passes of the k task losses
    (`backward="k"`) with the backend's own autodiff; the summed gradient is
    applied with the compiled optimizer. Logs only `loss`."""

    def __init__(self, model, loss_fns, backward, **kwargs):
        super().__init__(**kwargs)
        self.model = model
        self.loss_fns = loss_fns
        self.tasks = list(model.output_names)
        self.backward = backward

    def call(self, x, training=None):
        return self.model(x, training=training)

    def _per_task_losses(self, y, preds):
        return [fn(y[t], p) for fn, t, p in zip(self.loss_fns, self.tasks, preds)]

    def train_step(self, *args):
        backend = keras.backend.backend()
        if backend == "tensorflow":
            return self._tensorflow_step(*args)
        if backend == "jax":
            return self._jax_step(*args)
        return self._torch_step(*args)

    def _batch(self, x):
        return keras.ops.shape(x)[0]

    def _tensorflow_step(self, data):
        import tensorflow as tf

        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        variables = self.trainable_variables
        # The tf.Variables: the tape's zeros for unconnected sources need a
        # tf dtype (KerasVariable.dtype is a string).
        sources = [v.value for v in variables]
        with tf.GradientTape(persistent=self.backward == "k") as tape:
            preds = self(x, training=True)
            losses = self._per_task_losses(y, preds)
            total = tf.add_n(losses)
        if self.backward == "k":
            grads = None
            for loss in losses:
                g = tape.gradient(loss, sources, unconnected_gradients=tf.UnconnectedGradients.ZERO)
                grads = g if grads is None else [a + b for a, b in zip(grads, g)]
            del tape
        else:
            grads = tape.gradient(total, sources)
        self.optimizer.apply(grads, variables)
        self._loss_tracker.update_state(total, sample_weight=tf.shape(x)[0])
        return self.compute_metrics(x, y, preds)

    def _jax_step(self, state, data):
        import jax
        import jax.numpy as jnp

        trainable, non_trainable, optimizer_vars, metrics_vars = state
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)

        def forward(trainable_values):
            preds, new_non_trainable = self.stateless_call(trainable_values, non_trainable, x, training=True)
            return jnp.stack(self._per_task_losses(y, preds)), (preds, new_non_trainable)

        losses, pullback, (preds, non_trainable) = jax.vjp(forward, trainable, has_aux=True)
        k = losses.shape[0]
        if self.backward == "k":
            basis = jnp.eye(k, dtype=losses.dtype)
            grads = None
            for i in range(k):
                (g,) = pullback(basis[i])
                grads = g if grads is None else jax.tree_util.tree_map(jnp.add, grads, g)
        else:
            (grads,) = pullback(jnp.ones((k,), losses.dtype))
        trainable, optimizer_vars = self.optimizer.stateless_apply(optimizer_vars, grads, trainable)
        logs, metrics_vars = self._update_metrics_variables(metrics_vars, jnp.sum(losses), x, y, preds, None)
        return logs, (trainable, non_trainable, optimizer_vars, metrics_vars)

    def _torch_step(self, data):
        import torch

        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        variables = self.trainable_variables
        params = [v.value for v in variables]
        self.zero_grad()
        preds = self(x, training=True)
        losses = self._per_task_losses(y, preds)
        total = sum(losses)
        if self.backward == "k":
            grads = None
            for i, loss in enumerate(losses):
                found = torch.autograd.grad(loss, params, retain_graph=i < len(losses) - 1, allow_unused=True)
                found = [torch.zeros_like(p) if g is None else g for p, g in zip(params, found)]
                grads = found if grads is None else [a + b for a, b in zip(grads, found)]
        else:
            grads = torch.autograd.grad(total, params)
        with torch.no_grad():
            self.optimizer.apply(grads, variables)
            self._loss_tracker.update_state(total.detach(), sample_weight=x.shape[0])
            return self.compute_metrics(x, y, preds)


def build_config(config, k, args):
    model = make_model(k, args.features, args.trunk, args.head)
    if config == "ref: 1 backward":
        trainer = Reference(model, make_losses(k), backward="one")
    elif config == "ref: k backward":
        trainer = Reference(model, make_losses(k), backward="k")
    elif config.endswith(AT_Z):
        name = config[: -len(AT_Z)]
        representation = f"trunk{len(args.trunk) - 1}"
        trainer = multitask.MultiTaskModel(
            model, strategy=make_strategy(name, k), representation=representation
        )
    else:
        trainer = multitask.MultiTaskModel(model, strategy=make_strategy(config, k))
    trainer.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=make_losses(k) if isinstance(trainer, multitask.MultiTaskModel) else None,
        jit_compile=args.jit_compile,
    )
    return trainer


# -- timing ------------------------------------------------------------------------


class StepTimer(keras.callbacks.Callback):
    """Time between consecutive train-batch starts. Overriding the batch-end
    hook makes Keras wait for each step (no asynchronous dispatch), the same
    for every configuration."""

    def __init__(self):
        super().__init__()
        self.starts = []

    def on_train_batch_begin(self, batch, logs=None):
        self.starts.append(time.perf_counter())

    def on_train_batch_end(self, batch, logs=None):
        pass

    def intervals(self):
        return [b - a for a, b in zip(self.starts, self.starts[1:])]


def fit_steps(trainer, x, y, batch, steps, callbacks=()):
    n = batch * steps
    trainer.fit(
        x[:n],
        {t: v[:n] for t, v in y.items()},
        batch_size=batch,
        epochs=1,
        shuffle=False,
        verbose=0,
        callbacks=list(callbacks),
    )


def time_configs(configs, k, x, y, args):
    trainers = {}
    for config in configs:
        start = time.perf_counter()
        trainers[config] = build_config(config, k, args)
        fit_steps(trainers[config], x, y, args.batch_size, args.warmup_steps)
        print(f"  built and warmed up {config!r} in {time.perf_counter() - start:.1f} s", flush=True)
    times = {c: [] for c in configs}
    rounds = {c: [] for c in configs}
    for r in range(args.repeats):
        # Alternate the order so that no configuration always follows the same one.
        for config in configs if r % 2 == 0 else configs[::-1]:
            timer = StepTimer()
            fit_steps(trainers[config], x, y, args.batch_size, args.steps, [timer])
            times[config] += timer.intervals()
            rounds[config].append(statistics.median(timer.intervals()))
    medians = {c: statistics.median(t) for c, t in times.items()}
    best = {c: min(r) for c, r in rounds.items()}
    return medians, best, trainers


# -- profile of the gradient-based overhead -------------------------------------------


def compiled(fn, inputs, args):
    """`fn(*inputs)` compiled as the backend's train step is, as a synchronous
    callable. The inputs are arguments, not captured constants, so that the
    compiler cannot fold the computation away."""
    from keras import StatelessScope

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        jit = args.jit_compile is True or args.jit_compile == "true"
        tf_fn = tf.function(fn, jit_compile=jit)
        return lambda: keras.tree.map_structure(lambda t: t.numpy(), tf_fn(*inputs))
    if backend == "jax":
        import jax

        def stateless(*values):
            # Strategy state (GradNorm's weights, PCGrad's seed) is read and
            # its updates dropped: only the arithmetic is timed.
            with StatelessScope():
                return fn(*values)

        jitted = jax.jit(stateless)
        return lambda: jax.block_until_ready(jitted(*inputs))
    import torch

    def eager():
        with torch.no_grad():
            return fn(*inputs)

    return eager


def median_time(fn, reps):
    fn()
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def profile(trainers, k, args):
    rng = np.random.default_rng(2)
    rows = {}
    for config, trainer in trainers.items():
        if config not in GRADIENT_BASED:
            continue
        variables = trainer.trainable_variables
        grads = [
            [
                keras.ops.convert_to_tensor((rng.normal(size=v.shape) * 1e-2).astype("float32"))
                for v in variables
            ]
            for _ in range(k)
        ]
        losses = keras.ops.convert_to_tensor(rng.uniform(0.5, 2.0, size=k).astype("float32"))
        shared = [id(v) in trainer._shared_ids for v in variables]
        flat = [
            np.concatenate(
                [keras.ops.convert_to_numpy(g[v]).ravel() for v in range(len(variables)) if shared[v]]
            )
            for g in grads
        ]
        gram = keras.ops.convert_to_tensor(
            np.array([[float(a @ b) for b in flat] for a in flat], dtype="float32")
        )
        strategy = trainer.strategy
        combine_fn = compiled(
            lambda l, g, t=trainer: t.combine_task_gradients(l, g, variables)[0], (losses, grads), args
        )
        weights = float("nan")  # an elementwise strategy (GradDrop) has no task_weights
        if not strategy.elementwise:
            weights_fn = compiled(lambda l, g, s=strategy: s.task_weights(l, g), (losses, gram), args)
            weights = median_time(weights_fn, args.profile_reps)
        rows[config] = (weights, median_time(combine_fn, args.profile_reps))
    return rows


# -- memory --------------------------------------------------------------------------


def _rss_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_child(config, k, args):
    x, y = make_data(k, args.batch_size * max(args.steps, args.warmup_steps), args.features)
    trainer = build_config(config, k, args)
    fit_steps(trainer, x, y, args.batch_size, args.warmup_steps)
    fit_steps(trainer, x, y, args.batch_size, 2)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM (peak RSS) to the current RSS
    before = _rss_kib("VmRSS")
    fit_steps(trainer, x, y, args.batch_size, args.steps)
    peak = _rss_kib("VmHWM")
    params = sum(int(np.prod(v.shape)) for v in trainer.trainable_variables)
    print(json.dumps({"before_kib": before, "peak_kib": peak, "params": params}))


def memory(k, args, argv):
    results = {}
    for config in MEMORY_CONFIGS:
        command = [
            sys.executable,
            os.path.abspath(__file__),
            *argv,
            "--memory-child",
            config,
            "--memory-k",
            str(k),
        ]
        out = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
        lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
        if out.returncode != 0 or not lines:
            print(f"  memory child {config!r} failed:\n{out.stderr[-2000:]}")
            continue
        results[config] = json.loads(lines[-1])
    return results


# -- main ----------------------------------------------------------------------------


def parse_jit(value):
    return {"auto": "auto", "true": True, "false": False}[value.lower()]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, nargs="+", default=[2, 4], help="values of k")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--features", type=int, default=256)
    parser.add_argument("--trunk", type=int, nargs="+", default=[1024, 1024, 512])
    parser.add_argument("--head", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per round")
    parser.add_argument("--warmup-steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--profile-reps", type=int, default=50)
    parser.add_argument("--strategies", nargs="+", default=list(LOSS_BASED + GRADIENT_BASED))
    parser.add_argument(
        "--representation",
        nargs="*",
        default=["mgda", "cagrad", "upgrad"],
        help="gradient-based strategies also timed with per-task gradients with respect to the "
        "trunk's output (`<name> @z`; none: no such rows)",
    )
    parser.add_argument(
        "--jit-compile", type=parse_jit, default="auto", help="auto (Keras's default) | true | false"
    )
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument(
        "--threads", type=int, default=0, help="PyTorch intra-op threads (0: leave the default)"
    )
    parser.add_argument("--quick", action="store_true", help="a fast sanity run")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    parser.add_argument("--memory-k", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    backend = keras.backend.backend()
    if args.threads and backend == "torch":
        import torch

        torch.set_num_threads(args.threads)
    if args.quick:
        args.tasks, args.steps, args.repeats, args.profile_reps = [2], 8, 2, 10
        args.trunk = [512, 512]
    if args.memory_child:
        return memory_child(args.memory_child, args.memory_k, args)
    unknown = sorted(set(args.strategies) - set(LOSS_BASED + GRADIENT_BASED))
    if unknown:
        parser.error(f"unknown strategies {unknown}")
    gram_based = set(GRADIENT_BASED) - {"graddrop"}  # GradDrop masks coordinates: no Gram matrix
    unknown = sorted(set(args.representation) - gram_based)
    if unknown:
        parser.error(f"--representation takes Gram-based strategies; not {unknown}")
    if "equal" not in args.strategies:
        args.strategies = ["equal"] + args.strategies

    configs = list(REFERENCES) + [s for s in LOSS_BASED + GRADIENT_BASED if s in args.strategies]
    configs += [s + AT_Z for s in args.representation]
    load = os.getloadavg()[0]
    print(
        f"backend {backend} (jit_compile={args.jit_compile!r}), batch {args.batch_size}, "
        f"trunk {args.features} -> {' -> '.join(map(str, args.trunk))}, heads {args.head}; "
        f"{args.steps} timed steps x {args.repeats} rounds; load average {load:.2f} "
        f"on {os.cpu_count()} CPUs",
        flush=True,
    )
    for k in args.tasks:
        x, y = make_data(k, args.batch_size * max(args.steps, args.warmup_steps), args.features)
        medians, best, trainers = time_configs(configs, k, x, y, args)
        model = trainers["equal"].model
        shared = sum(
            int(np.prod(v.shape))
            for v in trainers["equal"].trainable_variables
            if id(v) in trainers["equal"]._shared_ids
        )
        print(
            f"\nk = {k}: {model.count_params():,} parameters ({shared:,} shared); "
            f"load average now {os.getloadavg()[0]:.2f}"
        )
        ref_k, equal = medians["ref: k backward"], medians["equal"]
        print(
            "ms/step: median over all timed steps; best: the fastest round's median "
            "(steadier under load from other processes); ratios of each"
        )
        print(
            f"{'configuration':<26} {'ms/step':>8} {'best':>7} {'/ equal':>8} {'best':>7} "
            f"{'/ ref k':>8} {'best':>7} {'target':>7}"
        )
        for config in configs:
            m, b = medians[config], best[config]
            vs_ref = vs_ref_best = target = ""
            if config in GRADIENT_BASED or config == "ref: 1 backward" or config.endswith(AT_Z):
                vs_ref = f"{m / ref_k:7.3f}x"
                vs_ref_best = f"{b / best['ref: k backward']:6.3f}x"
            if config in GRADIENT_BASED:
                target = "ok" if m / ref_k <= 1.15 else "MISS"
            print(
                f"{config:<26} {m * 1e3:8.2f} {b * 1e3:7.2f} {m / equal:7.3f}x "
                f"{b / best['equal']:6.3f}x {vs_ref:>8} {vs_ref_best:>7} {target:>7}"
            )
        if not args.no_profile:
            rows = profile(trainers, k, args)
            if rows:
                print(
                    f"profile (compiled like the step; median of {args.profile_reps}): "
                    "overhead of a gradient-based step over `ref: k backward`"
                )
                print(
                    f"{'strategy':<26} {'step - ref':>10} {'task_weights':>13} "
                    f"{'combine (all)':>14} {'rest':>8}   (ms)"
                )
                for config, (weights, combine) in rows.items():
                    extra = medians[config] - ref_k
                    print(
                        f"{config:<26} {extra * 1e3:10.2f} {weights * 1e3:13.3f} "
                        f"{combine * 1e3:14.3f} {(extra - combine) * 1e3:8.2f}"
                    )
                print(
                    "(combine (all) = Gram matrix + task_weights + weighted sum per "
                    "variable; rest = step - ref - combine: logging, loss bookkeeping, "
                    "loss-scale and cast overheads)"
                )
        del trainers
        if not args.no_memory and k == max(args.tasks):
            results = memory(k, args, argv)
            if results:
                params = next(iter(results.values()))["params"]
                print(
                    f"\npeak memory, k = {k} (Linux VmHWM, the peak resident set size; a "
                    f"fresh process per configuration; {params:,} parameters = "
                    f"{params * 4 / 2**20:.1f} MiB float32):"
                )
                print(f"{'configuration':<26} {'step peak - before (MiB)':>25} {'process peak (MiB)':>19}")
                for config, r in results.items():
                    print(
                        f"{config:<26} {(r['peak_kib'] - r['before_kib']) / 1024:25.1f} "
                        f"{r['peak_kib'] / 1024:19.1f}"
                    )


if __name__ == "__main__":
    main()
