"""Flooding and iFlood on scikit-learn's digits with 20% flipped labels.

    PYTHONPATH=$PWD python demos/flooding.py            # full run (~2-4 min, 2 CPU cores)
    PYTHONPATH=$PWD python demos/flooding.py --smoke    # seconds: a tiny end-to-end check

Reproduces the qualitative result of Ishida et al. (ICML 2020) and Xie et al.
(ICLR 2022): a small MLP trained on noisy labels far past zero training error
memorises the noise and its test loss climbs; flooding the training loss at
a level b (or each sample's loss, iFlood) stops the memorisation and gives a
lower test loss and a better test accuracy.

Choosing b (the paper's recipe): hold out part of the (noisy) training data
as a validation set, train once per candidate level, pick the level with the
best validation accuracy (ties: lower validation loss), then report the test
set, which took no part in the choice. Only noisy labels are used for the
choice; the test set has clean labels.

Prints the search, then no flooding / Flooding / iFlood side by side, and
saves the train/test loss curves to demos/output/flooding_curves.png.
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _quiet  # noqa: E402

_quiet.quiet_backend_start()
import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_tricks import callbacks, losses  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def load(noise, seed):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=0.2, random_state=seed, stratify=y_rest
    )
    rng = np.random.default_rng(seed)

    def flip(labels):
        labels = labels.copy()
        idx = rng.choice(len(labels), int(round(noise * len(labels))), replace=False)
        labels[idx] = (labels[idx] + rng.integers(1, 10, size=len(idx))) % 10  # a wrong class
        return labels

    # Training and validation labels are noisy; test labels are clean.
    return (x_train, flip(y_train)), (x_val, flip(y_val)), (x_test, y_test)


def make_loss(method, level):
    base = keras.losses.SparseCategoricalCrossentropy()
    if method == "none":
        return base
    cls = losses.Flooding if method == "flooding" else losses.IndividualFlooding
    return cls(base, level)


def train(method, level, train_data, eval_data, epochs, batch_size, seed):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(keras.optimizers.Adam(2e-3), loss=make_loss(method, level), metrics=["accuracy"])
    cbs = [] if method == "none" else [callbacks.FloodLevelScheduler()]
    history = model.fit(
        *train_data, validation_data=eval_data, epochs=epochs, batch_size=batch_size, verbose=0, callbacks=cbs
    )
    return model, history.history


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny run for tests")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--noise", type=float, default=0.2)
    parser.add_argument("--levels", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.45])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=os.path.join(HERE, "output"))
    args = parser.parse_args(argv)
    epochs = args.epochs or (2 if args.smoke else 80)
    levels = args.levels[:1] if args.smoke else args.levels
    batch_size = 128
    start = time.time()

    train_data, val_data, test_data = load(args.noise, args.seed)
    print(
        f"digits: {len(train_data[0])} train / {len(val_data[0])} val (labels "
        f"{args.noise:.0%} flipped) / {len(test_data[0])} test (clean); "
        f"backend {keras.backend.backend()}, {epochs} epochs",
        flush=True,
    )

    # The validation search for b, for each flooded objective: one run per
    # level, scored on the noisy validation split only. Each run also records
    # the clean test loss per epoch, for the plot; that takes no part in the
    # choice of b.
    def run(method, level):
        model, h = train(method, level, train_data, test_data, epochs, batch_size, args.seed)
        val = model.evaluate(*val_data, verbose=0, return_dict=True)
        train_logs = model.evaluate(*train_data, verbose=0, return_dict=True)
        return dict(
            history=h,
            val_loss=val["loss"],
            val_acc=val["accuracy"],
            train_loss=train_logs["loss"],
            train_acc=train_logs["accuracy"],
            test_loss=h["val_loss"][-1],
            test_acc=h["val_accuracy"][-1],
            best_test_loss=min(h["val_loss"]),
            flooded=h.get("flood_fraction", [0.0])[-1],
        )

    results = {"no flooding": run("none", 0.0)}
    print(f"trained without flooding ({time.time() - start:.0f}s)")
    print("\nvalidation search for the flood level b (noisy validation labels)")
    print(f"{'method':<10} {'b':>6} {'val acc':>8} {'val loss':>9} {'train acc':>10}")
    for method, title in (("flooding", "Flooding"), ("iflood", "iFlood")):
        best = None
        for level in levels:
            r = run(method, level)
            print(
                f"{method:<10} {level:>6g} {r['val_acc']:>8.4f} {r['val_loss']:>9.4f} "
                f"{r['train_acc']:>10.4f}  ({time.time() - start:.0f}s)",
                flush=True,
            )
            score = (r["val_acc"], -r["val_loss"])
            if best is None or score > best[0]:
                best = (score, level, r)
        results[f"{title} b={best[1]:g}"] = best[2]
    print("chosen: " + ", ".join(list(results)[1:]))

    print("\nfinal models (train = noisy training labels, test = clean labels)")
    print(
        f"{'':<16} {'train loss':>10} {'train acc':>9} {'test loss':>9} {'test acc':>8} "
        f"{'min test loss':>13} {'flooded':>8}"
    )
    for label, r in results.items():
        print(
            f"{label:<16} {r['train_loss']:>10.4f} {r['train_acc']:>9.4f} "
            f"{r['test_loss']:>9.4f} {r['test_acc']:>8.4f} {r['best_test_loss']:>13.4f} "
            f"{r['flooded']:>8.2f}"
        )

    os.makedirs(args.output, exist_ok=True)
    path = os.path.join(args.output, "flooding_curves.png")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    for (label, r), color in zip(results.items(), ("tab:gray", "tab:blue", "tab:orange")):
        ax[0].plot(r["history"]["loss"], color=color, label=label)
        ax[1].plot(r["history"]["val_loss"], color=color, label=label)
    ax[0].set(
        title="training loss (noisy labels, plain cross-entropy)", xlabel="epoch", ylabel="loss", yscale="log"
    )
    ax[1].set(title="test loss (clean labels)", xlabel="epoch", ylabel="loss")
    for a in ax:
        a.legend()
        a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"\nsaved {path}; total {time.time() - start:.0f}s")
    return results


if __name__ == "__main__":
    main()
