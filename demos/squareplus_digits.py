"""SquarePlus in a real model: an MLP on scikit-learn's bundled digits.

    python demos/squareplus_digits.py            # about a minute on 2 CPU cores
    python demos/squareplus_digits.py --smoke    # a few seconds, for the tests

Trains the same two-hidden-layer MLP with ReLU, GELU, Keras's built-in
`squareplus` and `keras_tricks`'s SquarePlus (same seeds, same data split) and
prints held-out accuracy side by side, then shows why the accurate version
matters: under float16 the textbook formula overflows at |x| >= 256 and
cancels for negative x, ours does not.

Data: the 1,797 8x8 handwritten digits that ship inside scikit-learn
(`sklearn.datasets.load_digits`, no download).
"""

import argparse
import os
import sys
import time

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
from keras_tricks.activations import squareplus  # noqa: E402

ACTIVATIONS = {
    "relu": "relu",
    "gelu": "gelu",
    "keras squareplus": lambda x: keras.ops.squareplus(x, 4.0),
    "keras_tricks SquarePlus": squareplus,
}


def build(activation, hidden):
    return keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(hidden, activation=activation),
            keras.layers.Dense(hidden, activation=activation),
            keras.layers.Dense(10),
        ]
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="2 epochs, 1 seed")
    args = parser.parse_args()
    if args.smoke:
        args.epochs, args.seeds = 2, 1

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
    print(
        f"keras {keras.__version__} on {keras.backend.backend()}, keras_tricks "
        f"{keras_tricks.__version__}; digits: {len(x_train)} train / {len(x_test)} test"
    )

    print(f"\n{'activation':26s}{'test accuracy (mean ± sd)':>28s}{'s/run':>9s}   per seed")
    for name, activation in ACTIVATIONS.items():
        accs, start = [], time.perf_counter()
        for seed in range(args.seeds):
            keras.utils.set_random_seed(seed)
            model = build(activation, args.hidden)
            model.compile(
                optimizer=keras.optimizers.Adam(1e-3),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"],
            )
            model.fit(x_train, y_train, epochs=args.epochs, batch_size=64, verbose=0)
            accs.append(model.evaluate(x_test, y_test, verbose=0)[1])
        seconds = (time.perf_counter() - start) / args.seeds
        per_seed = " ".join(f"{a:.4f}" for a in accs)
        print(f"{name:26s}{np.mean(accs):21.4f} ± {np.std(accs):.4f}{seconds:9.1f}   {per_seed}")

    print("\nfloat16 inputs (true values from the float64 formula):")
    xs = np.array([-1000.0, -300.0, -10.0, 0.0, 10.0, 300.0, 60000.0])
    true = np.where(xs >= 0, (xs + np.sqrt(xs**2 + 4)) / 2, 2 / (np.sqrt(xs**2 + 4) - xs))
    half = keras.ops.convert_to_tensor(xs.astype("float16"))
    naive = keras.ops.convert_to_numpy(keras.ops.squareplus(half, 4.0)).astype("float64")
    ours = keras.ops.convert_to_numpy(squareplus(half)).astype("float64")
    print(f"{'x':>10s}{'true':>14s}{'keras':>14s}{'keras_tricks':>14s}")
    for row in zip(xs, true, naive, ours):
        print("".join(f"{v:14.6g}" if i else f"{v:10g}" for i, v in enumerate(row)))


if __name__ == "__main__":
    main()
