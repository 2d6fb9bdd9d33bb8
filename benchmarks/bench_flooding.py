"""Step time of Flooding / iFlood relative to the plain loss they wrap.

    PYTHONPATH=$PWD python benchmarks/bench_flooding.py            # ~1-2 min
    PYTHONPATH=$PWD python benchmarks/bench_flooding.py --quick    # seconds
    KERAS_BACKEND=jax PYTHONPATH=$PWD python benchmarks/bench_flooding.py

What a user would otherwise run is the same model compiled with the plain
loss; each variant trains the same model on the same data with `fit()`,
the variants interleaved repeat by repeat so that drifts in machine load hit
all of them alike; the figure is the median time per training step (one
epoch of many steps per timing, so that fit()'s set-up is amortised and
JAX's asynchronous dispatch is waited for) and its ratio to the plain loss
(target <= 1.03x); the fastest epoch of each variant and its ratio are
printed too, a steadier figure when other jobs share the machine. Variants: Flooding, iFlood, and
each with a FloodLevelScheduler in `fit()` (which adds the logged
statistics). Two models: an MLP classifier (dense, cross-entropy) and a
masked token tagger (embedding, per-token cross-entropy), where the loss is a
larger part of the step.
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_tricks import callbacks, losses  # noqa: E402


def mlp_case(quick):
    rng = np.random.default_rng(0)
    n, d, c = (256 * 16, 256, 10) if quick else (256 * 96, 512, 10)
    x = rng.normal(size=(n, d)).astype("float32")
    y = rng.integers(0, c, size=(n,))

    def model():
        keras.utils.set_random_seed(0)
        return keras.Sequential(
            [
                keras.Input((d,)),
                keras.layers.Dense(512, activation="relu"),
                keras.layers.Dense(512, activation="relu"),
                keras.layers.Dense(c),
            ]
        )

    return "MLP 512x512, batch 256", model, x, y, 256


def tagger_case(quick):
    rng = np.random.default_rng(1)
    n, t, vocab, c = (64 * 16, 32, 2000, 9) if quick else (64 * 96, 64, 5000, 9)
    lengths = rng.integers(t // 4, t + 1, size=n)
    x = rng.integers(1, vocab, size=(n, t))
    x[np.arange(t)[None, :] >= lengths[:, None]] = 0
    y = rng.integers(0, c, size=(n, t))

    def model():
        keras.utils.set_random_seed(0)
        inp = keras.Input((t,), dtype="int32")
        h = keras.layers.Embedding(vocab, 64, mask_zero=True)(inp)
        h = keras.layers.Dense(128, activation="relu")(h)
        return keras.Model(inp, keras.layers.Dense(c)(h))

    return f"masked tagger T={t}, batch 64", model, x, y, 64


def variants():
    plain = lambda: keras.losses.SparseCategoricalCrossentropy(from_logits=True)  # noqa: E731
    return {
        "plain loss": (plain, False),
        "Flooding": (lambda: losses.Flooding(plain(), 0.1), False),
        "iFlood": (lambda: losses.IndividualFlooding(plain(), 0.1), False),
        "Flooding + scheduler": (lambda: losses.Flooding(plain(), 0.1), True),
        "iFlood + scheduler": (lambda: losses.IndividualFlooding(plain(), 0.1), True),
    }


def bench(case, repeats, steps):
    title, make_model, x, y, batch = case
    x, y = x[: steps * batch], y[: steps * batch]
    runs = {}
    for name, (make_loss, scheduled) in variants().items():
        model = make_model()
        model.compile(keras.optimizers.Adam(1e-3), loss=make_loss())
        cbs = [callbacks.FloodLevelScheduler()] if scheduled else []
        model.fit(x, y, batch_size=batch, epochs=1, verbose=0, callbacks=cbs)  # compile
        runs[name] = (model, cbs)
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, (model, cbs) in runs.items():
            start = time.perf_counter()
            model.fit(x, y, batch_size=batch, epochs=1, verbose=0, callbacks=cbs)
            times[name].append((time.perf_counter() - start) / steps)
    base = statistics.median(times["plain loss"])
    print(f"\n{title} ({keras.backend.backend()}, {steps} steps x {repeats} repeats)")
    fastest = min(times["plain loss"])
    print(f"{'variant':<22} {'ms/step':>8} {'ratio':>7} {'min ms':>8} {'ratio':>7}")
    out = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        out[name] = med / base
        print(
            f"{name:<22} {1e3 * med:>8.2f} {med / base:>6.3f}x "
            f"{1e3 * min(ts):>8.2f} {min(ts) / fastest:>6.3f}x"
        )
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fast sanity run")
    args = parser.parse_args(argv)
    repeats, steps = (2, 16) if args.quick else (5, 96)
    results = {}
    for case in (mlp_case(args.quick), tagger_case(args.quick)):
        results[case[0]] = bench(case, repeats, steps)
    return results


if __name__ == "__main__":
    main()
