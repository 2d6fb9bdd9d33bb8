"""BERT-of-Theseus: compress a 6-block encoder to 3 blocks on scikit-learn's digits.

    python demos/theseus.py              # 3 seeds, about a minute a seed on 2 CPU cores
    python demos/theseus.py --smoke      # a few seconds, for the tests

For each seed it trains, on the same split:

1. the teacher: an embedding Dense, 6 residual MLP blocks (LayerNorm, Dense
   4w GELU, Dense w, plus the input), LayerNorm and a softmax head;
2. the successor alone: the same network with 3 blocks, from scratch, for
   the same number of epochs;
3. Theseus (Xu et al. 2020, arXiv:2002.02925): the teacher's 6 blocks in 3
   `keras_tricks.layers.TheseusReplacement` modules of 2, each with a 1-block
   successor initialised from the module's first teacher block, the teacher
   frozen, the embedding and head copied from the teacher and trained; the
   replacement rate follows `keras_tricks.callbacks.TheseusScheduler` from
   0.5 to 1 over the first half of the steps (the paper's curriculum), the
   second half trains the successors alone (p = 1); then
   `keras_tricks.layers.extract_successor` gives the 3-block model.

It prints held-out accuracy (mean and standard deviation over the seeds)
and the time of one forward pass over 16,384 rows for each model.

Data: the 1,797 8x8 handwritten digits that ship inside scikit-learn
(`sklearn.datasets.load_digits`, no download), split 60/20/20 with the seed
(train / dev for the best epoch / test).
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
from keras_tricks.callbacks import TheseusScheduler  # noqa: E402
from keras_tricks.layers import TheseusReplacement, extract_successor  # noqa: E402


class Block(keras.layers.Layer):
    """x + Dense(w)(GELU(Dense(4w)(LayerNorm(x)))): a pre-norm residual MLP block."""

    def __init__(self, width, dropout=0.1, **kwargs):
        super().__init__(**kwargs)
        self.width, self.dropout_rate = width, dropout
        self.norm = keras.layers.LayerNormalization()
        self.up = keras.layers.Dense(4 * width, activation="gelu")
        self.down = keras.layers.Dense(width)
        self.dropout = keras.layers.Dropout(dropout)

    def build(self, input_shape):
        self.norm.build(input_shape)
        self.up.build(input_shape)
        self.down.build(input_shape[:-1] + (4 * self.width,))

    def compute_output_shape(self, input_shape):
        return input_shape

    def call(self, x, training=None):
        return x + self.dropout(self.down(self.up(self.norm(x))), training=training)

    def get_config(self):
        return {**super().get_config(), "width": self.width, "dropout": self.dropout_rate}


def build(blocks, width):
    inputs = keras.Input((64,))
    embed = keras.layers.Dense(width, name="embed")
    norm = keras.layers.LayerNormalization(name="final_norm")
    head = keras.layers.Dense(10, name="head")
    x = embed(inputs)
    for block in blocks:
        x = block(x)
    return keras.Model(inputs, head(norm(x))), (embed, norm, head)


def compile_(model, lr):
    model.compile(
        keras.optimizers.Adam(lr),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def fit(model, data, args, callbacks=()):
    (x_tr, y_tr), (x_dev, y_dev) = data
    best = keras.callbacks.ModelCheckpoint(
        os.path.join(args.tmp, f"best_{model.name}_{time.monotonic_ns()}.weights.h5"),
        monitor="val_accuracy",
        save_best_only=True,
        save_weights_only=True,
    )
    model.fit(
        x_tr,
        y_tr,
        validation_data=(x_dev, y_dev),
        epochs=args.epochs,
        batch_size=args.batch_size,
        callbacks=[*callbacks, best],
        verbose=0,
    )
    model.load_weights(best.filepath)


def score(model, x, y, repeats=7):
    """Accuracy on (x, y), and the median time of one forward pass over 16,384
    rows (the test set tiled: per-call overheads would hide the blocks)."""
    logits = model.predict(x, batch_size=256, verbose=0)
    big = np.tile(x, (-(-16384 // len(x)), 1))[:16384]
    model.predict_on_batch(big)  # warm-up (tracing)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.predict_on_batch(big)
        times.append(time.perf_counter() - start)
    return float(np.mean(np.argmax(logits, -1) == y)), 1e3 * float(np.median(times))


def run(seed, args):
    digits = load_digits()
    x = (digits.data / 16.0).astype("float32")
    y = digits.target.astype("int32")
    x_tr, x_rest, y_tr, y_rest = train_test_split(x, y, test_size=0.4, random_state=seed, stratify=y)
    x_dev, x_te, y_dev, y_te = train_test_split(
        x_rest, y_rest, test_size=0.5, random_state=seed, stratify=y_rest
    )
    data = ((x_tr, y_tr), (x_dev, y_dev))
    out = {}

    keras.utils.set_random_seed(seed)
    teacher_blocks = [Block(args.width, name=f"teacher_{i}") for i in range(6)]
    teacher, (t_embed, t_norm, t_head) = build(teacher_blocks, args.width)
    compile_(teacher, args.lr)
    fit(teacher, data, args)
    out["teacher (6 blocks)"] = score(teacher, x_te, y_te)

    keras.utils.set_random_seed(seed)
    alone, _ = build([Block(args.width) for _ in range(3)], args.width)
    compile_(alone, args.lr)
    fit(alone, data, args)
    out["successor alone (3)"] = score(alone, x_te, y_te)

    keras.utils.set_random_seed(seed)
    successors = [Block(args.width, name=f"successor_{i}") for i in range(3)]
    modules = []
    for i, s in enumerate(successors):
        s.build((None, args.width))
        s.set_weights(teacher_blocks[2 * i].get_weights())  # the paper's initialisation
        modules.append(TheseusReplacement(teacher_blocks[2 * i : 2 * i + 2], s, seed=seed * 10 + i))
    model, (embed, norm, head) = build(modules, args.width)
    for mine, theirs in ((embed, t_embed), (norm, t_norm), (head, t_head)):
        mine.set_weights(theirs.get_weights())
    compile_(model, args.lr)
    steps = args.epochs * -(-len(x_tr) // args.batch_size)
    schedule = TheseusScheduler(base_rate=0.5, slope=0.5 / max(1, steps // 2))
    fit(model, data, args, callbacks=[schedule])
    small = extract_successor(model)
    compile_(small, args.lr)
    out["Theseus (3)"] = score(small, x_te, y_te)
    out["_check"] = teacher.count_params(), alone.count_params(), small.count_params()
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--smoke", action="store_true", help="tiny run for tests (seconds)")
    args = ap.parse_args(argv)
    if args.smoke:
        ap.set_defaults(seeds=1, epochs=2, width=8)
        args = ap.parse_args(argv)
    import tempfile

    print(
        f"keras_tricks {keras_tricks.__version__}, Keras {keras.__version__}, backend {keras.backend.backend()}"
    )
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        args.tmp = tmp
        for seed in range(args.seeds):
            results.append(run(seed, args))
            print(
                f"seed {seed}: " + ", ".join(f"{k} {v[0]:.4f}" for k, v in results[-1].items() if k[0] != "_")
            )
    names = [k for k in results[0] if k[0] != "_"]
    params = dict(zip(names, results[0]["_check"]))
    print(f"\nHeld-out accuracy over {args.seeds} seed(s), {args.epochs} epochs, width {args.width}:")
    print(f"{'model':<22}{'accuracy':>10}{'sd':>8}{'params':>9}{'forward ms':>12}")
    summary = {}
    for name in names:
        acc = np.array([r[name][0] for r in results])
        ms = float(np.median([r[name][1] for r in results]))
        summary[name] = {
            "accuracy": float(acc.mean()),
            "sd": float(acc.std()),
            "ms": ms,
            "params": params[name],
        }
        print(f"{name:<22}{acc.mean():>10.4f}{acc.std():>8.4f}{params[name]:>9d}{ms:>12.1f}")
    return summary


if __name__ == "__main__":
    main()
