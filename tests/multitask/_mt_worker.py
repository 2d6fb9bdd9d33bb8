"""Subprocess side of the distribution tests in test_multi_task_model.py.

Virtual CPU devices must be configured before TensorFlow or JAX starts, hence
a fresh process:

    python _mt_worker.py mirrored <out.npz>
    python _mt_worker.py dataparallel <out.npz>

For each strategy, the same model (same initial weights) is trained on the
same batches once on one device and once on two replicas; the results are
saved side by side.
"""

import contextlib
import os
import sys

MODE = sys.argv[1]
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from distributed_workers import configure_two_cpus  # noqa: E402

configure_two_cpus(MODE)
if MODE == "mirrored":
    import tensorflow as tf  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_tricks import multitask  # noqa: E402

STRATEGIES = ["mgda", "cagrad", "gradnorm", "pcgrad", "uncertainty"] + (
    ["graddrop"] if MODE == "mirrored" else []
)


def strategy_of(name):
    # GradDrop draws random masks: the same seed on one device and on two
    return multitask.GradDrop(seed=5) if name == "graddrop" else name


def data(n=64, k=2):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 6)).astype("float32")
    ys = [
        (x @ rng.normal(size=(6, 1)) * 3.0**i + rng.normal(size=(n, 1))).astype("float32") for i in range(k)
    ]
    return x, ys


def build(weights=None):
    x = keras.Input((6,))
    h = keras.layers.Dense(8, activation="tanh", name="trunk")(x)
    model = keras.Model(x, [keras.layers.Dense(1, name=f"t{i}")(h) for i in range(2)])
    if weights is not None:
        model.set_weights(weights)
    return model


def train(name, scope, weights):
    x, ys = data()
    with scope():
        mt = multitask.MultiTaskModel(build(weights), strategy=strategy_of(name))
        mt.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    mt.fit(x, ys, epochs=2, batch_size=16, shuffle=False, verbose=0)
    flat = np.concatenate([np.ravel(w) for w in mt.get_weights()])
    return flat, np.asarray(keras.ops.convert_to_numpy(mt.last_task_weights))


def main(out, scope, replicas):
    rng = np.random.default_rng(1)
    weights = [rng.normal(size=w.shape).astype("float32") * 0.5 for w in build().get_weights()]
    result = {"replicas": np.int64(replicas)}
    for name in STRATEGIES:
        result[f"{name}_single"], result[f"{name}_tw_single"] = train(name, contextlib.nullcontext, weights)
        result[f"{name}_distributed"], result[f"{name}_tw_distributed"] = train(name, scope, weights)
    np.savez(out, **result)


if __name__ == "__main__":
    if MODE == "mirrored":
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        main(sys.argv[2], strategy.scope, strategy.num_replicas_in_sync)
    elif MODE == "dataparallel":
        devices = keras.distribution.list_devices("cpu")
        assert len(devices) == 2, devices
        distribution = keras.distribution.DataParallel(devices=devices)
        main(sys.argv[2], distribution.scope, len(devices))
    else:
        raise SystemExit(f"unknown mode {MODE!r}")
