"""Multi-task loss weighting on scikit-learn's digits: every strategy, one table.

    PYTHONPATH=$PWD python demos/multitask.py                  # every strategy, seeds 0, 1, 2 (~10 min, 2 CPU cores, TF)
    PYTHONPATH=$PWD python demos/multitask.py --seeds 0        # one seed (~3 min)
    PYTHONPATH=$PWD python demos/multitask.py --smoke          # 2 epochs, 300 images, every strategy, seed 0 only
    PYTHONPATH=$PWD python demos/multitask.py --smoke --strategies equal,mgda   # seconds
    PYTHONPATH=$PWD python demos/multitask.py --strategies equal,uncertainty,cagrad --epochs 20
    KERAS_BACKEND=jax PYTHONPATH=$PWD python demos/multitask.py --smoke

Three tasks on the 1,797 8x8 handwritten digits that ship inside
scikit-learn (`sklearn.datasets.load_digits`, no download), deliberately on
different scales:

* "digit":  which digit, 10 classes, sparse categorical cross-entropy from
  logits (loss ~2.3 at the start);
* "parity": is the digit odd, binary cross-entropy from logits (~0.69);
* "ink":    the ink mass, the sum of the 64 grey levels (0..16 each) in raw
  units, mean squared error (~1,200 at the start, since the head's bias starts
  at the training mean). Ink mass hardly depends on the digit (class means
  303..330, sd ~34), so it competes with the other two for the trunk.

One functional model: a shared MLP trunk (64 -> 64 -> 32, ReLU) and one
linear head per task. The same architecture, initial weights, data order and
optimizer (Adam) are trained under each strategy of
`keras_tricks.multitask.MultiTaskModel`, once per seed (`--seeds`: the seed
sets the initial weights, the batch order and a strategy's own random
draws; the train/test split is fixed); the table shows held-out metrics
(mean and sample standard deviation over the seeds), the weights the
strategy ended with (mean of the last epoch's `<task>_weight` logs, mean
over seeds) and the training time. `*` marks the best mean per column.
The figure (demos/output/multitask.png) shows the test metrics per strategy
and how the weights of "uncertainty", "gradnorm" and "dwa" move over epochs.

Only "equal" sees the raw scales: the ink MSE is ~500x the cross-entropies,
so with the plain sum the trunk serves the ink regression first. The
scale-free rules ("initial", "prior", "realtime", "generalized_mean",
"uncertainty", "grad_norm_normalization", "mgda", "cagrad", ...) do not
depend on the units at all.
"""

import argparse
import logging
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# A new model per strategy retraces Keras's predict function each time; TF's
# warning about it is expected here.
logging.getLogger("tensorflow").setLevel(logging.ERROR)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _quiet  # noqa: E402

_quiet.quiet_backend_start()
import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_tricks  # noqa: E402
from keras_tricks import multitask  # noqa: E402
from keras_tricks.multitask.strategy import SeededStrategy  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
TASKS = ("digit", "parity", "ink")
# The 13 of the first table, in its order, then every strategy registered
# since (in registration order), so that a new strategy joins the demo.
FIRST = (
    "equal",
    "initial",
    "prior",
    "realtime",
    "generalized_mean",
    "uncertainty",
    "dwa",
    "grad_norm_normalization",
    "gradnorm",
    "mgda",
    "pcgrad",
    "cagrad",
    "primary_auxiliary",
)
STRATEGIES = FIRST + tuple(n for n in multitask.STRATEGIES if n not in FIRST)
# (column title, task, metric, higher is better)
METRICS = (
    ("digit acc", "digit", "accuracy", True),
    ("parity acc", "parity", "accuracy", True),
    ("ink MAE", "ink", "mae", False),
    ("ink RMSE", "ink", "rmse", False),
)
PLOTTED_WEIGHTS = ("uncertainty", "gradnorm", "dwa")


def load(seed=0):
    """Train/test split (75/25, stratified by digit, fixed seed) and the three targets."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    images, digit = load_digits(return_X_y=True)
    targets = {
        "digit": digit.astype("int32"),
        "parity": (digit % 2).astype("float32")[:, None],
        "ink": images.sum(axis=1).astype("float32")[:, None],  # raw grey levels
    }
    x = (images / 16.0).astype("float32")
    index = np.arange(len(x))
    train, test = train_test_split(index, test_size=0.25, random_state=seed, stratify=digit)
    pick = lambda rows: {t: v[rows] for t, v in targets.items()}  # noqa: E731
    return (x[train], pick(train)), (x[test], pick(test))


def build_model(ink_mean):
    inputs = keras.Input((64,), name="pixels")
    h = keras.layers.Dense(64, activation="relu", name="trunk_1")(inputs)
    h = keras.layers.Dense(32, activation="relu", name="trunk_2")(h)
    outputs = [
        keras.layers.Dense(10, name="digit")(h),
        keras.layers.Dense(1, name="parity")(h),
        # Starting at the training mean keeps the ink loss at its variance
        # (~1,200) instead of mean^2 (~100,000) for every strategy.
        keras.layers.Dense(1, name="ink", bias_initializer=keras.initializers.Constant(ink_mean))(h),
    ]
    return keras.Model(inputs, outputs, name="digits_multitask")


def make_strategy(name, y_train, seed):
    if name == "prior":
        return multitask.Prior(
            {
                "digit": multitask.prior_loss(y_train["digit"], "categorical"),
                "parity": multitask.prior_loss(y_train["parity"], "binary"),
                "ink": multitask.prior_loss(y_train["ink"], "regression"),
            }
        )
    if name == "stch":
        # The authors' normalisation: one warm-up epoch (43 steps of 32) measures
        # the mean losses, then f_i = L_i / mean_i. Without it the raw ink MSE
        # (~1,000) is the max that smooth Tchebycheff minimises, and the
        # classifiers get weights ~0.003 (measured: digit accuracy 0.09).
        return multitask.STCH(warmup_steps=43)
    cls = multitask.STRATEGIES[name]
    if issubclass(cls, SeededStrategy):  # PCGrad's order, RLW's weights, GradDrop's masks
        return cls(seed=seed)
    # primary_auxiliary: "digit" (index 0, the default) is the primary task.
    return name


def losses():
    return {
        "digit": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        "parity": keras.losses.BinaryCrossentropy(from_logits=True),
        "ink": keras.losses.MeanSquaredError(),
    }


def test_metrics(predictions, y):
    """Held-out metrics from the predictions, in NumPy (float64)."""
    if isinstance(predictions, dict):
        predictions = [predictions[t] for t in TASKS]
    digit, parity, ink = (np.asarray(p, dtype="float64") for p in predictions)
    error = ink[:, 0] - y["ink"][:, 0]
    return {
        ("digit", "accuracy"): float(np.mean(digit.argmax(-1) == y["digit"])),
        ("parity", "accuracy"): float(np.mean((parity[:, 0] > 0) == (y["parity"][:, 0] > 0.5))),
        ("ink", "mae"): float(np.mean(np.abs(error))),
        ("ink", "rmse"): float(np.sqrt(np.mean(error**2))),
    }


def run_strategy(name, data, args, seed):
    (x_train, y_train), (x_test, y_test) = data
    keras.utils.set_random_seed(seed)  # same initial weights and batch order for all
    model = build_model(float(y_train["ink"].mean()))
    mt = multitask.MultiTaskModel(model, strategy=make_strategy(name, y_train, seed))
    mt.compile(optimizer=keras.optimizers.Adam(args.learning_rate), loss=losses())
    start = time.perf_counter()
    history = mt.fit(
        x_train, y_train, epochs=args.epochs, batch_size=args.batch_size, shuffle=True, verbose=0
    )
    seconds = time.perf_counter() - start
    logs = history.history
    predictions = mt.predict(x_test, batch_size=512, verbose=0)
    return {
        "metrics": test_metrics(predictions, y_test),
        "weights": [float(logs[f"{t}_weight"][-1]) for t in TASKS],
        "weight_history": np.array([logs[f"{t}_weight"] for t in TASKS]).T,
        "train_loss": [float(logs[f"{t}_loss"][-1]) for t in TASKS],
        "seconds": seconds,
    }


def summarize(runs):
    """One strategy's runs (one per seed) as one result: metrics, weights and
    time averaged over the seeds, `spread` the metrics' sample standard
    deviation (absent for one seed), the weight history of the first seed."""
    result = {
        "metrics": {key: float(np.mean([r["metrics"][key] for r in runs])) for key in runs[0]["metrics"]},
        "weights": list(np.mean([r["weights"] for r in runs], axis=0)),
        "weight_history": runs[0]["weight_history"],
        "seconds": float(np.mean([r["seconds"] for r in runs])),
        "seeds": len(runs),
    }
    if len(runs) > 1:
        result["spread"] = {
            key: float(np.std([r["metrics"][key] for r in runs], ddof=1)) for key in runs[0]["metrics"]
        }
    return result


def format_table(results):
    """One row per strategy; `*` marks the best (mean) value of each metric column and of time.
    With several seeds a metric cell is `mean±sd`."""
    names = list(results)
    columns = [
        (title, (lambda r, t=task, m=metric: r["metrics"][(t, m)]), high)
        for title, task, metric, high in METRICS
    ]
    columns.append(("train s", lambda r: r["seconds"], False))
    ranks = mean_ranks(results)
    texts, spreads = {}, {}
    for (title, task, metric, _high), (_, get, _) in zip(METRICS, columns[:-1]):
        digits = 4 if "acc" in title else 2
        texts[title] = {n: f"{get(results[n]):.{digits}f}" for n in names}
        spreads[title] = {
            n: (f"±{results[n]['spread'][(task, metric)]:.{digits}f}" if "spread" in results[n] else "")
            for n in names
        }
    texts["rank"] = {n: f"{ranks[n]:.1f}" for n in names}
    texts["train s"] = {n: f"{results[n]['seconds']:.1f}" for n in names}
    best = {}  # compared as printed, so that equal-looking values are marked alike
    for title, get, high in columns:
        pick = max if high else min
        best[title] = texts[title][pick(names, key=lambda n, g=get: g(results[n]))]
    best["rank"] = texts["rank"][min(names, key=lambda n: ranks[n])]

    width = max(len("strategy"), *(len(n) for n in names)) + 2
    size = 12 + max(len(t) for column in spreads.values() for t in column.values())
    header = f"{'strategy':<{width}}" + "".join(f"{title:>{size}}" for title, _, _ in columns[:-1])
    header += f"{'rank':>7}" + "".join(f"{'w_' + t:>10}" for t in TASKS) + f"{'train s':>10}"
    lines = [header, "-" * len(header)]
    for n in names:

        def cell(title, size):
            text = texts[title][n]
            spread = spreads.get(title, {}).get(n, "")
            return f"{text + spread + ('*' if text == best[title] else ' '):>{size}}"

        row = f"{n:<{width}}" + "".join(cell(title, size) for title, _, _ in columns[:-1])
        row += cell("rank", 7) + "".join(f"{w:>10.3g}" for w in results[n]["weights"])
        lines.append(row + cell("train s", 10))
    return "\n".join(lines)


def mean_ranks(results):
    """Mean rank (1 = best, ties share the mean) over digit acc, parity acc and ink MAE."""
    names = list(results)
    total = np.zeros(len(names))
    for _, task, metric, high in METRICS[:3]:
        values = np.array([results[n]["metrics"][(task, metric)] for n in names])
        values = -values if high else values
        for i, v in enumerate(values):
            total[i] += np.sum(values < v) + (np.sum(values == v) + 1) / 2
    return dict(zip(names, total / 3))


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    weighted = [n for n in PLOTTED_WEIGHTS if n in results]
    rows = 2 if weighted else 1
    fig, axes = plt.subplots(rows, 3, figsize=(15, 4.2 * rows), squeeze=False)
    shown = [m for m in METRICS if m[0] != "ink RMSE"]
    for ax, (title, task, metric, high) in zip(axes[0], shown):
        values = [results[n]["metrics"][(task, metric)] for n in names]
        best = max(values) if high else min(values)
        colors = ["tab:orange" if v == best else "tab:blue" for v in values]
        ax.barh(names, values, color=colors)
        ax.invert_yaxis()
        ax.set_title(f"test {title} ({'higher' if high else 'lower'} is better)")
        low = min(values)
        if high:
            ax.set_xlim(max(0.0, low - 0.05), 1.0)
    for ax, n in zip(axes[1] if weighted else [], weighted):
        history = results[n]["weight_history"]
        epochs = np.arange(1, len(history) + 1)
        for i, t in enumerate(TASKS):
            ax.plot(epochs, history[:, i], label=t)
        if np.all(history > 0):
            ax.set_yscale("log")
        ax.set_title(f"{n}: task weights per epoch")
        ax.set_xlabel("epoch")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument(
        "--seeds",
        default="0,1,2",
        help="comma-separated seeds, one run per strategy and seed (default: 0,1,2)",
    )
    parser.add_argument(
        "--strategies",
        default=",".join(STRATEGIES),
        help=f"comma-separated names (default: all {len(STRATEGIES)})",
    )
    parser.add_argument("--output", default=os.path.join(HERE, "output"), help="folder for multitask.png")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="2 epochs on 300 training images for each strategy, the first seed only (one compiled model "
        "per strategy: minutes on 2 cores; add --strategies equal,mgda for seconds)",
    )
    args = parser.parse_args(argv)
    names = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = [n for n in names if n not in STRATEGIES]
    if unknown:
        parser.error(f"unknown strategies {unknown}; choose from {list(STRATEGIES)}")
    if args.epochs < 1:
        parser.error("--epochs must be >= 1")
    try:
        seeds = [int(t) for t in args.seeds.split(",") if t.strip()]
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers; got {args.seeds!r}")
    if not seeds:
        parser.error("--seeds must name at least one seed")

    (x_train, y_train), test = load()
    if args.smoke:
        seeds = seeds[:1]
        args.epochs = min(args.epochs, 2)
        x_train, y_train = x_train[:300], {t: v[:300] for t, v in y_train.items()}
    data = ((x_train, y_train), test)
    print(
        f"keras {keras.__version__} on {keras.backend.backend()}, keras_tricks "
        f"{keras_tricks.__version__}; digits: {len(x_train)} train / {len(test[0])} test; "
        f"{args.epochs} epochs, batch {args.batch_size}, Adam({args.learning_rate}); seeds {seeds}"
    )
    prior = [
        multitask.prior_loss(y_train["digit"], "categorical"),
        multitask.prior_loss(y_train["parity"], "binary"),
        multitask.prior_loss(y_train["ink"], "regression"),
    ]
    print("label-prior losses (digit, parity, ink): " + ", ".join(f"{p:.4g}" for p in prior))

    results = {}
    total = time.perf_counter()
    for n in names:
        r = results[n] = summarize([run_strategy(n, data, args, seed) for seed in seeds])
        m = r["metrics"]
        print(
            f"  {n:<24} digit {m[('digit', 'accuracy')]:.4f}  parity "
            f"{m[('parity', 'accuracy')]:.4f}  ink MAE {m[('ink', 'mae')]:6.2f}  "
            f"({r['seconds']:.1f} s)",
            flush=True,
        )
    total = time.perf_counter() - total

    print(
        f"\ntest metrics ({len(test[0])} images; mean±sd over {len(seeds)} seeds when several), final "
        "task weights (mean over the last epoch), training time per run; rank = mean rank over digit acc, parity acc and ink MAE "
        "(1 = best); * = best in column"
    )
    print(format_table(results))
    os.makedirs(args.output, exist_ok=True)
    path = os.path.join(args.output, "multitask.png")
    plot(results, path)
    print(f"\ntotal {total:.1f} s; figure: {path}")
    return results


if __name__ == "__main__":
    main()
