"""A grain pipeline feeds our parts through Keras's grain adapter.

Keras (since its grain adapter, absent from 3.10) trains on a
`grain.MapDataset` directly. The same
batches in the same order, given as NumPy arrays, are the reference: a model
with a GlobalPointer head, a flooded classifier, a gradient-based multi-task
strategy and the EMA callback must end with the same weights either way.
"""

import importlib.util

import keras
import numpy as np
import pytest

from keras_tricks import layers, losses, multitask, testing
from keras_tricks.callbacks import ExponentialMovingAverage

grain = pytest.importorskip("grain", exc_type=ImportError)
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("keras.src.trainers.data_adapters.grain_dataset_adapter") is None,
    reason="this Keras has no grain adapter",
)

LENGTH, BATCH = 6, 8


def _data():
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 20, size=(32, LENGTH)).astype("int32")
    spans = (rng.random((32, 2, LENGTH, LENGTH)) < 0.1).astype("float32")
    return tokens, spans, (tokens[:, 0] % 3).astype("int32")


def _train(feed):
    keras.utils.set_random_seed(0)
    tokens = keras.Input((LENGTH,), dtype="int32")
    h = keras.layers.Embedding(20, 16)(tokens)
    spans = layers.GlobalPointer(heads=2, head_size=8)(h)
    label = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling1D()(h))
    model = multitask.MultiTaskModel(keras.Model(tokens, [spans, label]), strategy="mgda")
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=[
            losses.GlobalPointerCrossentropy(),
            losses.Flooding(keras.losses.SparseCategoricalCrossentropy(from_logits=True), 0.5),
        ],
    )
    ema = ExponentialMovingAverage(momentum=0.9)
    feed(model, [ema])
    return [np.asarray(w) for w in model.model.get_weights()]


def test_grain_map_dataset_trains_like_the_same_numpy_batches():
    x, spans, label = _data()
    source = [(x[i], (spans[i], label[i])) for i in range(len(x))]
    # Repeated, with steps_per_epoch: on Keras 3.15 a finite grain dataset
    # re-iterated by fit() runs extra steps per epoch on TensorFlow (15 for 3
    # epochs of 4 batches) and warns that it ran out of data on JAX.
    dataset = grain.MapDataset.source(source).batch(BATCH).repeat()
    steps = len(x) // BATCH
    from_grain = _train(
        lambda m, cb: m.fit(dataset, epochs=2, steps_per_epoch=steps, shuffle=False, verbose=0, callbacks=cb)
    )
    from_numpy = _train(
        lambda m, cb: m.fit(
            x, [spans, label], batch_size=BATCH, epochs=2, shuffle=False, verbose=0, callbacks=cb
        )
    )
    for got, want in zip(from_grain, from_numpy):
        testing.assert_close(got, want, tolerance=16, what="weights after fit on grain vs NumPy batches")
