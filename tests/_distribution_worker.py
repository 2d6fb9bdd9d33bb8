"""Subprocess side of tests/test_distribution.py: 8 virtual CPU devices on JAX.

XLA's host device count must be set before JAX starts, hence a fresh process:

    python tests/_distribution_worker.py keras_distribution <out.npz>   (JAX)
    python tests/_distribution_worker.py mirrored <out.npz>             (TensorFlow)

The same model (a token encoder with a GlobalPointer head and a flooded
sentence classifier, trained by MultiTaskModel with MGDA, plus the EMA
callback) is trained from the same initial weights on the same batches three
times on JAX: on one device, under DataParallel over 8 devices, and under
ModelParallel on a (2, 4) mesh whose LayoutMap shards the kernels over the
"model" axis; on TensorFlow, on one device and under MirroredStrategy over 8
logical CPUs. Everything the test compares is saved side by side.
"""

import contextlib
import os
import sys

MODE = sys.argv[1]
DEVICES = 8
os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + (
    f" --xla_force_host_platform_device_count={DEVICES}"
    # The 8 device threads share the cores: under load one may reach a
    # collective long after the others, and XLA's default (abort after 40 s
    # of waiting) would kill a run that is only slow.
    " --xla_cpu_collective_call_terminate_timeout_seconds=300"
)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
if MODE == "mirrored":
    import tensorflow as tf

    _cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(_cpu, [tf.config.LogicalDeviceConfiguration()] * DEVICES)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_tricks import layers, losses, multitask  # noqa: E402
from keras_tricks.callbacks import ExponentialMovingAverage  # noqa: E402

VOCAB, LENGTH, HIDDEN, BATCH, N = 40, 8, 32, 16, 64


def data():
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, VOCAB, size=(N, LENGTH)).astype("int32")
    spans = np.zeros((N, 2, LENGTH, LENGTH), "float32")
    for n in range(N):
        for head in range(2):
            start = rng.integers(0, LENGTH - 1)
            spans[n, head, start, rng.integers(start, LENGTH)] = 1.0
    classes = (tokens[:, 0] % 3).astype("int32")
    return tokens, [spans, classes]


def build():
    tokens = keras.Input((LENGTH,), dtype="int32", name="tokens")
    h = keras.layers.Embedding(VOCAB, HIDDEN, name="embedding")(tokens)
    h = keras.layers.Dense(HIDDEN, activation="gelu", name="trunk_dense")(h)
    spans = layers.GlobalPointer(heads=2, head_size=8, name="spans")(h)
    pooled = keras.layers.GlobalAveragePooling1D(name="pool")(h)
    label = keras.layers.Dense(3, name="label")(pooled)
    return keras.Model(tokens, [spans, label])


def layout_map(mesh):
    layout = keras.distribution.LayoutMap(mesh)
    layout["embedding/embeddings"] = (None, "model")
    layout["trunk_dense/kernel"] = (None, "model")
    layout["trunk_dense/bias"] = ("model",)
    layout["spans/.*kernel"] = ("model", None)
    return layout


def train(initial, distribution):
    """`distribution`: None (one device), a keras.distribution.Distribution or
    a tf.distribute.Strategy."""
    x, ys = data()
    scope = distribution.scope() if distribution is not None else contextlib.nullcontext()
    with scope:
        model = build()
        model.set_weights(initial)
        mt = multitask.MultiTaskModel(model, strategy="mgda")
        mt.compile(
            optimizer=keras.optimizers.Adam(1e-2),
            loss=[
                losses.GlobalPointerCrossentropy(),
                losses.Flooding(keras.losses.SparseCategoricalCrossentropy(from_logits=True), 0.5),
            ],
        )
        ema = ExponentialMovingAverage(momentum=0.9)
        mt.fit(x, ys, epochs=2, batch_size=BATCH, shuffle=False, verbose=0, callbacks=[ema])
        optimizer = mt.optimizer
        out = {
            "weights": np.concatenate([np.ravel(w) for w in model.get_weights()]),
            "task_weights": np.asarray(keras.ops.convert_to_numpy(mt.last_task_weights)),
        }
        with ema.raw_weights():
            out["raw"] = np.concatenate([np.ravel(w) for w in model.get_weights()])
        if isinstance(distribution, (keras.distribution.DataParallel, keras.distribution.ModelParallel)):
            variable_bytes = average_bytes = 0
            matched = True
            for variable, average in zip(optimizer.averaged_variables, optimizer.average_variables):
                v, a = variable.value, average.value
                matched &= v.sharding.is_equivalent_to(a.sharding, v.ndim)
                variable_bytes += v.addressable_shards[0].data.nbytes
                average_bytes += a.addressable_shards[0].data.nbytes
            out["layouts_match"] = np.bool_(matched)
            out["variable_bytes_per_device"] = np.int64(variable_bytes)
            out["average_bytes_per_device"] = np.int64(average_bytes)
            out["collectives"] = np.array(collectives(mt))
    return out


def collectives(mt):
    """The collective ops XLA emits for the strategy's combination of per-task
    gradients laid out like their (sharded) variables: the Gram matrix must
    come from partial sums reduced across devices (all-reduce), never from
    gathering a full gradient on one device (all-gather)."""
    import jax

    variables = mt.trainable_variables
    rng = np.random.default_rng(2)
    grads = [
        [jax.device_put(rng.normal(size=v.shape).astype("float32"), v.value.sharding) for v in variables]
        for _ in range(2)
    ]

    def combine(task_grads):
        with keras.StatelessScope():
            update, _ = mt.combine_task_gradients(keras.ops.ones((2,)), task_grads, variables)
        return update

    def found(text):
        return [
            op
            for op in ("all-gather", "all-reduce", "all-to-all")
            if f" {op}(" in text or f"{op}-start" in text
        ]

    # The control: replicating a sharded gradient must show up as an all-gather.
    for sharded in [g for g in grads[0] if not g.sharding.is_fully_replicated][:1]:
        replicated = jax.sharding.NamedSharding(sharded.sharding.mesh, jax.sharding.PartitionSpec())
        control = jax.jit(lambda g: g * 2.0, out_shardings=replicated).lower(sharded).compile().as_text()
        assert "all-gather" in found(control), control
    return found(jax.jit(combine).lower(grads).compile().as_text())


def main(out):
    initial = [np.asarray(w) for w in build().get_weights()]
    if MODE == "mirrored":
        runs = {
            "single": None,
            "mirrored": tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(DEVICES)]),
        }
    else:
        devices = keras.distribution.list_devices("cpu")
        assert len(devices) == DEVICES, devices
        runs = {
            "single": None,
            "data": keras.distribution.DataParallel(devices=devices),
            "model": keras.distribution.ModelParallel(
                layout_map=layout_map(keras.distribution.DeviceMesh((2, 4), ["batch", "model"], devices)),
                batch_dim_name="batch",
            ),
        }
    result = {}
    for name, distribution in runs.items():
        for key, value in train(initial, distribution).items():
            result[f"{name}_{key}"] = value
    np.savez(out, **result)


if __name__ == "__main__":
    main(sys.argv[2])
