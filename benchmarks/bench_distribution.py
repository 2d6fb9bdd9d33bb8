"""What keras.distribution costs on 8 virtual CPU devices (JAX), and what the
EMA state weighs per device under ModelParallel, in one run.

    PYTHONPATH=$PWD python benchmarks/bench_distribution.py
    PYTHONPATH=$PWD python benchmarks/bench_distribution.py --quick

The model: tokens -> Embedding -> two Dense layers -> a GlobalPointer head and
a flooded sentence classifier, trained by `MultiTaskModel` (MGDA) with the EMA
callback and Adam. The same global batch trains on one device, under
`DataParallel` over the 8 devices and under `ModelParallel` on a (2, 4) mesh
whose LayoutMap shards the kernels over "model". Virtual devices share the
machine's cores, so the ratio is the overhead of the partitioned program, not
a speed-up. Printed per configuration: seconds per step (median over
`--repeats` rounds that interleave the configurations, each round a fit() of
`--steps` steps whose first epoch, compilation, is discarded), the ratio to
one device, and the per-device bytes of the variables, of their EMA averages
and of the averages a layout-blind EMA would hold (a full copy per device).
"""

import argparse
import contextlib
import os
import statistics
import time

DEVICES = 8
os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + (
    f" --xla_force_host_platform_device_count={DEVICES}"
    # The 8 device threads share the cores: under load one may reach a
    # collective long after the others, and XLA's default (abort after 40 s
    # of waiting) would kill a run that is only slow.
    " --xla_cpu_collective_call_terminate_timeout_seconds=300"
)
os.environ["KERAS_BACKEND"] = "jax"

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_tricks import layers, losses, multitask  # noqa: E402
from keras_tricks.callbacks import ExponentialMovingAverage  # noqa: E402

VOCAB, LENGTH, HIDDEN = 2000, 32, 256


def data(n):
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, VOCAB, size=(n, LENGTH)).astype("int32")
    spans = (rng.random((n, 2, LENGTH, LENGTH)) < 0.01).astype("float32")
    return tokens, [spans, (tokens[:, 0] % 3).astype("int32")]


def build():
    tokens = keras.Input((LENGTH,), dtype="int32")
    h = keras.layers.Embedding(VOCAB, HIDDEN, name="embedding")(tokens)
    h = keras.layers.Dense(4 * HIDDEN, activation="gelu", name="up")(h)
    h = keras.layers.Dense(HIDDEN, name="down")(h)
    spans = layers.GlobalPointer(heads=2, head_size=64, name="spans")(h)
    label = keras.layers.Dense(3, name="label")(keras.layers.GlobalAveragePooling1D()(h))
    return keras.Model(tokens, [spans, label])


def distributions():
    devices = keras.distribution.list_devices("cpu")
    assert len(devices) == DEVICES, devices
    mesh = keras.distribution.DeviceMesh((2, 4), ["batch", "model"], devices)
    layout = keras.distribution.LayoutMap(mesh)
    layout["embedding/embeddings"] = (None, "model")
    layout["up/kernel"] = (None, "model")
    layout["up/bias"] = ("model",)
    layout["down/kernel"] = ("model", None)
    layout["spans/.*kernel"] = ("model", None)
    return {
        "one device": None,
        "DataParallel 8": keras.distribution.DataParallel(devices=devices),
        "ModelParallel 2x4": keras.distribution.ModelParallel(layout_map=layout, batch_dim_name="batch"),
    }


class _Timer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.last = time.perf_counter() - self.start


def make(distribution, initial):
    scope = distribution.scope() if distribution is not None else contextlib.nullcontext()
    with scope:
        model = build()
        model.set_weights(initial)
        mt = multitask.MultiTaskModel(model, strategy="mgda")
        mt.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss=[
                losses.GlobalPointerCrossentropy(),
                losses.Flooding(keras.losses.SparseCategoricalCrossentropy(from_logits=True), 0.1),
            ],
        )
    return mt


def per_device_bytes(values):
    return sum(v.addressable_shards[0].data.nbytes for v in values)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=64, help="global batch size")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="2 repeats of 4 steps")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.repeats = 4, 2
    x, ys = data(args.batch * args.steps)
    initial = [np.asarray(w) for w in build().get_weights()]
    configs = distributions()
    runs = {
        name: (d, make(d, initial), ExponentialMovingAverage(momentum=0.999)) for name, d in configs.items()
    }
    times = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, (d, mt, ema) in runs.items():
            timer = _Timer()
            scope = d.scope() if d is not None else contextlib.nullcontext()
            with scope:
                # Epoch 1 compiles (first round) or warms up; epoch 2 is timed.
                mt.fit(
                    x, ys, batch_size=args.batch, epochs=2, shuffle=False, verbose=0, callbacks=[ema, timer]
                )
            times[name].append(timer.last / args.steps)
    base = statistics.median(times["one device"])
    print(
        f"{os.cpu_count()} cores, {DEVICES} virtual devices, global batch {args.batch}, {args.steps} steps, "
        f"{args.repeats} rounds; keras {keras.__version__}"
    )
    print(
        f"{'configuration':<20} {'s/step':>8} {'x one device':>13} {'vars B/dev':>11} {'EMA B/dev':>10} "
        f"{'layout-blind EMA B/dev':>23}"
    )
    for name, (_, mt, _) in runs.items():
        step = statistics.median(times[name])
        opt = mt.optimizer
        variables = [v.value for v in opt.averaged_variables]
        averages = [a.value for a in opt.average_variables]
        blind = sum(int(np.prod(v.shape)) * 4 for v in variables)
        print(
            f"{name:<20} {step:8.4f} {step / base:13.2f} {per_device_bytes(variables):11d} "
            f"{per_device_bytes(averages):10d} {blind:23d}"
        )


if __name__ == "__main__":
    main()
