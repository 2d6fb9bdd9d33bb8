"""What a mid-epoch backup costs: `BackupAndResume` against Keras's own
`BackupAndRestore` at the same frequency, and against no backup, in one run.

    KERAS_BACKEND=tensorflow PYTHONPATH=$PWD python benchmarks/bench_backup_and_resume.py
    PYTHONPATH=$PWD python benchmarks/bench_backup_and_resume.py --quick

Each configuration trains a fresh ~0.8M-parameter MLP (Adam: 2.4M optimizer
floats) for `--steps` steps on a `DataGenerator` stream, backing up every
`--save-freq` steps; the time per step is the median over `--repeats` rounds
that interleave the configurations (load from other processes hits all
alike), the first fit() of each (compilation) discarded. Printed: seconds per
step, the ratio to no backup and to Keras's `BackupAndRestore`, the time of
one `DataGenerator.get_state()` and the bytes of one checkpoint.
"""

import argparse
import os
import statistics
import tempfile
import time

import keras
import numpy as np

from keras_tricks.callbacks import BackupAndResume
from keras_tricks.data import DataGenerator

CONFIGS = ("none", "keras_backup_and_restore", "backup_and_resume")


def build():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((256,)),
            keras.layers.Dense(1024, activation="relu"),
            keras.layers.Dense(512, activation="relu"),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer="adam", loss="mse")
    return model


class Timer(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_train_end(self, logs=None):
        self.seconds = time.perf_counter() - self.start


def run(config, data, steps, save_freq, directory):
    gen = DataGenerator(data, batch_size=64, seed=0)
    model = build()

    def backup(name):
        path = os.path.join(directory, f"{config}-{name}")
        if config == "keras_backup_and_restore":
            return [keras.callbacks.BackupAndRestore(path, save_freq=save_freq)]
        if config == "backup_and_resume":
            return [BackupAndResume(gen, path, save_freq=save_freq)]
        return []

    model.fit(gen.forfit(), steps_per_epoch=steps, epochs=1, verbose=0, callbacks=backup("warmup"))
    timer = Timer()
    model.fit(gen.forfit(), steps_per_epoch=steps, epochs=1, verbose=0, callbacks=[*backup("timed"), timer])
    return timer.seconds / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--save-freq", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="60 steps, 2 rounds")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.repeats = 60, 2
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64 * args.steps, 256)).astype("float32")
    data = [(x[i], x[i, :1]) for i in range(len(x))]
    times = {c: [] for c in CONFIGS}
    with tempfile.TemporaryDirectory() as directory:
        for r in range(args.repeats):
            for config in CONFIGS:
                times[config].append(run(config, data, args.steps, args.save_freq, f"{directory}/{r}"))
        gen = DataGenerator(data, batch_size=64, seed=0)
        stream = gen.forfit()
        next(stream)
        reps = 10000
        start = time.perf_counter()
        for _ in range(reps):
            gen.get_state()
        state_us = (time.perf_counter() - start) / reps * 1e6
        model = build()
        backup = BackupAndResume(gen, f"{directory}/size", save_freq=1, delete_on_completion=False)
        model.fit(stream, steps_per_epoch=1, epochs=1, verbose=0, callbacks=[backup])
        size = sum(
            os.path.getsize(os.path.join(f"{directory}/size", f)) for f in os.listdir(f"{directory}/size")
        )
    median = {c: statistics.median(t) for c, t in times.items()}
    print(
        f"backend {keras.backend.backend()}, {args.steps} steps, a backup every {args.save_freq}, "
        f"{args.repeats} rounds, load average {os.getloadavg()[0]:.1f}"
    )
    for c in CONFIGS:
        print(f"  {c:26s} {median[c] * 1e3:8.2f} ms/step  x{median[c] / median['none']:.3f} of none")
    ratio = median["backup_and_resume"] / median["keras_backup_and_restore"]
    print(f"  BackupAndResume / Keras BackupAndRestore: x{ratio:.3f}")
    print(f"  DataGenerator.get_state(): {state_us:.1f} us; one checkpoint: {size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
