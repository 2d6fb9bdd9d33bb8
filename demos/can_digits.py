"""CAN on a real multi-class task: an MLP on scikit-learn's bundled digits.

    python demos/can_digits.py            # about a minute on 2 CPU cores
    python demos/can_digits.py --smoke    # a few seconds, for the tests

Trains a small MLP on a deliberately small training split (so that a fair
share of held-out predictions is uncertain), then post-processes the test
predictions with `keras_tricks.postprocessing.can_normalize`:

- the headline: the post's defaults (tau = 0.9, k = 3, alpha = 1, iters = 1),
  test accuracy before and after, per seed;
- the parameters chosen on a validation split (never on the test split), then
  applied to the test split;
- the effect of each parameter: test accuracy change over a small grid.

The prior is the class frequencies of the training labels. Data: the 1,797
8x8 handwritten digits inside scikit-learn (`load_digits`, no download).
"""

import argparse
import itertools
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _quiet  # noqa: E402

_quiet.quiet_backend_start()
import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import keras_tricks  # noqa: E402
from keras_tricks.postprocessing import can_normalize, class_prior, top_k_uncertainty  # noqa: E402

TAUS = (0.5, 0.7, 0.9)
ALPHAS = (0.5, 1.0, 2.0)
ITERS = (1, 3)


def train(x_train, y_train, seed, epochs, hidden):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(hidden, activation="relu"),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    model.fit(x_train, y_train, epochs=epochs, batch_size=32, verbose=0)
    return model


def accuracy(probs, y):
    return float(np.mean(probs.argmax(1) == y))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--train-fraction", type=float, default=0.1)
    parser.add_argument("--smoke", action="store_true", help="3 epochs, 1 seed")
    args = parser.parse_args()
    if args.smoke:
        args.epochs, args.seeds = 3, 1

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    # Fixed split (random_state=0): train / validation / test, stratified.
    x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=0.4, random_state=0, stratify=y)
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, train_size=args.train_fraction / 0.6, random_state=0, stratify=y_rest
    )
    prior = class_prior(y_train, 10)
    print(
        f"keras {keras.__version__} on {keras.backend.backend()}, keras_tricks {keras_tricks.__version__}; "
        f"digits: {len(x_train)} train / {len(x_val)} validation / {len(x_test)} test; "
        f"{args.epochs} epochs, seeds 0..{args.seeds - 1}"
    )

    grid = list(itertools.product(TAUS, ALPHAS, ITERS))
    base, default, chosen, chosen_params, uncertain = [], [], [], [], []
    sweep = {params: [] for params in grid}
    for seed in range(args.seeds):
        model = train(x_train, y_train, seed, args.epochs, args.hidden)
        p_val = np.asarray(model.predict(x_val, verbose=0), np.float64)
        p_test = np.asarray(model.predict(x_test, verbose=0), np.float64)
        p_test /= p_test.sum(1, keepdims=True)
        p_val /= p_val.sum(1, keepdims=True)
        acc0 = accuracy(p_test, y_test)
        base.append(acc0)
        uncertain.append(float(np.mean(top_k_uncertainty(p_test, 3) >= 0.9)))
        default.append(accuracy(can_normalize(p_test, prior), y_test))
        for tau, alpha, iters in grid:
            out = can_normalize(p_test, prior, threshold=tau, alpha=alpha, iters=iters)
            sweep[(tau, alpha, iters)].append(accuracy(out, y_test) - acc0)
        # Choose on validation only (ties: the earliest in the grid).
        val_gain = [
            accuracy(can_normalize(p_val, prior, threshold=t, alpha=a, iters=i), y_val) for t, a, i in grid
        ]
        best = grid[int(np.argmax(val_gain))]
        chosen_params.append(best)
        chosen.append(
            accuracy(can_normalize(p_test, prior, threshold=best[0], alpha=best[1], iters=best[2]), y_test)
        )

    print("\nper seed: test accuracy without CAN, with CAN (tau=0.9, k=3, alpha=1, iters=1), uncertain share")
    for seed in range(args.seeds):
        print(f"  seed {seed}: {base[seed]:.4f} -> {default[seed]:.4f}  ({uncertain[seed]:.1%} uncertain)")
    diff = np.array(default) - np.array(base)
    print(
        f"mean: {np.mean(base):.4f} -> {np.mean(default):.4f}  "
        f"(change {np.mean(diff):+.4f}, min {diff.min():+.4f}, max {diff.max():+.4f})"
    )
    diff_c = np.array(chosen) - np.array(base)
    print(
        f"parameters chosen on validation {chosen_params}: mean {np.mean(base):.4f} -> {np.mean(chosen):.4f} "
        f"(change {np.mean(diff_c):+.4f})"
    )

    print("\neffect of the parameters: mean test accuracy change (k=3)")
    print(f"{'tau':>5s}{'alpha':>7s}" + "".join(f"{'iters=' + str(i):>11s}" for i in ITERS))
    for tau, alpha in itertools.product(TAUS, ALPHAS):
        cells = "".join(f"{np.mean(sweep[(tau, alpha, i)]):+11.4f}" for i in ITERS)
        print(f"{tau:5.1f}{alpha:7.1f}{cells}")


if __name__ == "__main__":
    main()
