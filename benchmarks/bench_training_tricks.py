"""Step time and peak memory of the train-step tricks relative to a plain step.

    PYTHONPATH=$PWD python benchmarks/bench_training_tricks.py --quick
    KERAS_BACKEND=jax PYTHONPATH=$PWD python benchmarks/bench_training_tricks.py

What a user would otherwise run is the same model with Keras's own train
step (`keras.Model`); each variant trains the same token classifier
(Embedding -> Transformer-ish MLP block with dropout -> softmax) with `fit()`
on the same data, variants interleaved repeat by repeat so that load drifts
hit all alike. Printed: median and fastest time per step (one epoch of many
steps per timing) and their ratio to the plain step (targets: FGM <= 2.1x,
PGD-k <= (k + 1.1)x, R-Drop <= 2.1x), and the process's peak resident memory
after each variant's first epoch (ru_maxrss grows monotonically, so only its
increase over the previous variant is informative; device memory is not
measured on CPU).
"""

import argparse
import os
import resource
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_tricks import train  # noqa: E402


def build(vocab, length, width, classes):
    keras.utils.set_random_seed(0)
    x = keras.Input((length,), dtype="int32")
    h = keras.layers.Embedding(vocab, width, name="emb")(x)
    h = keras.layers.Dense(width * 2, activation="gelu")(h)
    h = keras.layers.Dropout(0.1)(h)
    h = keras.layers.Dense(width)(h)
    h = keras.layers.GlobalAveragePooling1D()(h)
    out = keras.layers.Dense(classes, activation="softmax")(h)
    return keras.Model(x, out)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    vocab, length, width, classes = 2000, 32, 64, 5
    batches, batch = (20, 32) if args.quick else (60, 64)
    rng = np.random.default_rng(0)
    x = rng.integers(0, vocab, size=(batches * batch, length)).astype("int32")
    y = rng.integers(0, classes, size=(batches * batch,))
    variants = {
        "plain (keras.Model)": None,
        "TrickModel, no tricks": [],
        "FGM": [train.FGM("emb", epsilon=0.5)],
        "PGD-3": [train.PGD("emb", epsilon=0.5, steps=3)],
        "GradientPenalty": [train.GradientPenalty("emb", epsilon=1.0)],
        "R-Drop": [train.RDrop(alpha=4.0)],
        "R-Drop + FGM": [train.RDrop(alpha=4.0), train.FGM("emb", epsilon=0.5)],
    }
    models, memory = {}, {}
    for name, tricks in variants.items():
        m = build(vocab, length, width, classes)
        m = m if tricks is None else train.TrickModel(m, tricks=tricks)
        m.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
        m.fit(x, y, batch_size=batch, epochs=1, verbose=0)  # compile / warm up
        memory[name] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        models[name] = m
    times = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, m in models.items():
            start = time.perf_counter()
            m.fit(x, y, batch_size=batch, epochs=1, verbose=0)
            times[name].append((time.perf_counter() - start) / batches)
    base_med = statistics.median(times["plain (keras.Model)"])
    base_min = min(times["plain (keras.Model)"])
    print(f"backend {keras.backend.backend()}, batch {batch}, {batches} steps x {args.repeats} repeats")
    print(
        f"{'variant':24s} {'median ms':>10s} {'ratio':>6s} {'min ms':>8s} {'ratio':>6s} {'peak RSS MiB':>13s}"
    )
    for name in variants:
        med, low = statistics.median(times[name]), min(times[name])
        print(
            f"{name:24s} {1e3 * med:10.2f} {med / base_med:6.2f} {1e3 * low:8.2f} "
            f"{low / base_min:6.2f} {memory[name]:13.0f}"
        )


if __name__ == "__main__":
    main()
