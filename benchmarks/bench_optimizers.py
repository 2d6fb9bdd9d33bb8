"""Step time and memory of `Lookahead` and the `PiecewiseLinear` schedule
against plain Adam (constant learning rate), the optimizer a user would
otherwise pick, on the same MLP, in one run.

    KERAS_BACKEND=tensorflow PYTHONPATH=$PWD python benchmarks/bench_optimizers.py
    PYTHONPATH=$PWD python benchmarks/bench_optimizers.py --quick

In each of `--repeats` rounds each configuration trains a fresh model for
1 + `--epochs` epochs in one `fit()`; the first epoch (compilation) is
dropped and the median time between consecutive steps over all rounds is
kept. Rounds interleave the configurations so that load from other
processes hits all alike. Target: <= 1.03x plain for both.

Memory: the bytes of optimizer state beyond plain Adam's, counted from the
variables themselves; Lookahead keeps exactly one slow copy of the weights
(plus a step counter), the schedule none.
"""

import argparse
import statistics
import time

import keras
import numpy as np

from keras_tricks.optimizers import Lookahead, PiecewiseLinear

CONFIGS = ("plain", "piecewise_linear", "lookahead")


def build(config, features):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((features,)),
            keras.layers.Dense(1024, activation="relu"),
            keras.layers.Dense(512, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    if config == "piecewise_linear":
        optimizer = keras.optimizers.Adam(PiecewiseLinear({100: 1.0, 1000: 0.1}, learning_rate=1e-3))
    elif config == "lookahead":
        optimizer = Lookahead(keras.optimizers.Adam(1e-3), k=5, alpha=0.5)
    else:
        optimizer = keras.optimizers.Adam(1e-3)
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


class StepTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs, self._last = [], None

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append([])
        self._last = None

    def on_train_batch_begin(self, batch, logs=None):
        now = time.perf_counter()
        if self._last is not None:
            self.epochs[-1].append(now - self._last)
        self._last = now


def state_bytes(model):
    return sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in model.optimizer.variables)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    n, features = (128 * 40, 256) if args.quick else (128 * 150, 256)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, features)).astype("float32")
    y = rng.integers(0, 10, size=(n,))
    times = {c: [] for c in CONFIGS}
    memory = {}
    for _ in range(1 if args.quick else args.repeats):
        for config in CONFIGS:
            model = build(config, features)
            timer = StepTimer()
            model.fit(x, y, batch_size=args.batch, epochs=1 + args.epochs, verbose=0, callbacks=[timer])
            times[config] += [t for epoch in timer.epochs[1:] for t in epoch]
            memory[config] = (
                state_bytes(model),
                sum(int(np.prod(v.shape)) * 4 for v in model.trainable_variables),
            )
    base = statistics.median(times["plain"])
    print(
        f"backend {keras.backend.backend()}, keras {keras.__version__}, {len(times['plain'])} steps per config"
    )
    print(
        f"{'config':18s} {'step ms':>8s} {'vs plain':>9s} {'extra state MB':>15s} {'in weight copies':>17s}"
    )
    for config in CONFIGS:
        step = statistics.median(times[config])
        extra = memory[config][0] - memory["plain"][0]
        print(
            f"{config:18s} {1e3 * step:8.3f} {step / base:8.3f}x {extra / 2**20:15.3f} "
            f"{extra / memory[config][1]:17.3f}"
        )


if __name__ == "__main__":
    main()
