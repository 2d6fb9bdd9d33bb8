"""Train a small model under BackupAndResume; SIGKILL itself after step KILL_AT.

    python _resume_worker.py OUT.npz BACKUP_DIR KILL_AT   (KILL_AT -1: never)

Saves every variable of the model and its optimizer to OUT.npz at the end,
and the batches it trained on (a digest per step) to OUT.batches.npy.
"""

import os
import signal
import sys

import keras
import numpy as np

from keras_tricks.callbacks import BackupAndResume, ExponentialMovingAverage
from keras_tricks.data import DataGenerator

rng = np.random.default_rng(0)
X = rng.normal(size=(37, 4)).astype("float32")
Y = (X @ rng.normal(size=(4, 1))).astype("float32")


class Noisy(DataGenerator):
    """Each batch draws noise from its own generator: resuming must rebuild
    the very same batches, randomness included."""

    def __iter__(self, random=False):
        xs, ys = [], []
        for is_end, i in self.sample(random):
            xs.append(X[i] + 0.1 * self.rng.normal(size=4))
            ys.append(Y[i])
            if len(xs) == self.batch_size or is_end:
                yield np.stack(xs).astype("float32"), np.stack(ys)
                xs, ys = [], []


class Record(keras.callbacks.Callback):
    """Kills the process after step `kill_at` (with no chance to clean up)."""

    def __init__(self, kill_at):
        super().__init__()
        self.kill_at, self.steps = kill_at, 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if self.steps == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)


def main(out, backup_dir, kill_at):
    keras.utils.set_random_seed(0)
    gen = Noisy(list(range(len(X))), batch_size=8, seed=3)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    backup = BackupAndResume(gen, backup_dir, save_freq=3)
    model.fit(
        gen.forfit(),
        steps_per_epoch=len(gen),
        epochs=3,
        verbose=0,
        callbacks=[ExponentialMovingAverage(momentum=0.9), backup, Record(kill_at)],
    )
    variables = list(model.variables) + list(model.optimizer.variables)
    np.savez(out, *[keras.ops.convert_to_numpy(v) for v in variables])
    print(
        "steps",
        int(keras.ops.convert_to_numpy(model.optimizer.iterations)),
        "left",
        sorted(os.listdir(backup_dir)),
    )


if __name__ == "__main__":  # (pytest's doctest collection imports this file)
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
