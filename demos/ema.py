"""Exponential moving average of weights on scikit-learn's digits.

An MLP is trained with a deliberately noisy SGD (large learning rate, small
batches, dropout); after every epoch the validation accuracy is measured on
the raw weights and on their EMA, in the same run (the EMA callback puts the
EMA weights in for validation; the raw ones are measured inside
`ema.raw_weights()`). Prints both side by side and saves a plot under
demos/output/.

    PYTHONPATH=$PWD python demos/ema.py            # ~15 s on 2 CPU cores (TF)
    PYTHONPATH=$PWD python demos/ema.py --smoke    # a few seconds
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _quiet  # noqa: E402

_quiet.quiet_backend_start()
import keras
import numpy as np

from keras_tricks.callbacks import ExponentialMovingAverage

OUTPUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "output")


def load_digits(seed):
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    x, y = sk_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    return train_test_split(x, y.astype("int32"), test_size=0.3, random_state=seed, stratify=y)


def build_model(seed, lr):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(10),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.SGD(lr, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


class RawAccuracy(keras.callbacks.Callback):
    """Validation accuracy of the raw weights, at the end of each epoch."""

    def __init__(self, ema, x, y):
        super().__init__()
        self.ema, self.x, self.y, self.history = ema, x, y, []

    def on_epoch_end(self, epoch, logs=None):
        with self.ema.raw_weights(self.model):
            logits = self.model.predict(self.x, verbose=0, batch_size=512)
        self.history.append(float(np.mean(np.argmax(logits, -1) == self.y)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--momentum", type=float, default=0.99)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="2 epochs, for tests")
    args = parser.parse_args(argv)
    if args.smoke:
        args.epochs = 2

    x_train, x_val, y_train, y_val = load_digits(args.seed)
    model = build_model(args.seed, args.lr)
    ema = ExponentialMovingAverage(momentum=args.momentum)
    raw = RawAccuracy(ema, x_val, y_val)
    print(
        f"digits: {len(x_train)} train / {len(x_val)} validation, "
        f"{model.count_params()} parameters, backend {keras.backend.backend()}, "
        f"EMA momentum {args.momentum}"
    )
    start = time.time()
    history = model.fit(
        x_train,
        y_train,
        epochs=args.epochs,
        batch_size=args.batch_size,
        validation_data=(x_val, y_val),
        callbacks=[ema, raw],
        verbose=0,
    )
    ema_acc = history.history["val_accuracy"]
    print(f"\n{'epoch':>5}  {'raw val acc':>11}  {'EMA val acc':>11}")
    for epoch, (r, e) in enumerate(zip(raw.history, ema_acc), 1):
        print(f"{epoch:5d}  {r:11.4f}  {e:11.4f}")
    last = max(1, len(ema_acc) // 4)
    print(
        f"\nmean over the last {last} epochs: raw {np.mean(raw.history[-last:]):.4f}, "
        f"EMA {np.mean(ema_acc[-last:]):.4f}; std raw "
        f"{np.std(raw.history[-last:]):.4f}, EMA {np.std(ema_acc[-last:]):.4f}"
    )
    print(f"final: raw {raw.history[-1]:.4f}, EMA {ema_acc[-1]:.4f} ({time.time() - start:.1f} s)")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(OUTPUT, exist_ok=True)
    epochs = np.arange(1, len(ema_acc) + 1)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, raw.history, label="raw weights")
    ax.plot(epochs, ema_acc, label=f"EMA (momentum {args.momentum})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy")
    ax.set_title("digits MLP, noisy SGD: raw vs EMA weights")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = os.path.join(OUTPUT, "ema.png")
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")
    return raw.history, ema_acc


if __name__ == "__main__":
    main()
