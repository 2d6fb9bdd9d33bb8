"""Subprocess side of tests/callbacks/test_exponential_moving_average.py.

Each mode runs in a fresh Python process because it needs a fresh one: a
resumed fit() must not share anything with the process that saved, and
virtual CPU devices must be configured before TensorFlow or JAX starts.

    python _ema_worker.py resume   <model.keras> <out.npz>
    python _ema_worker.py mirrored <out.npz>
    python _ema_worker.py dataparallel <out.npz>
"""

import os
import sys

MODE = sys.argv[1]
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from distributed_workers import configure_two_cpus  # noqa: E402

configure_two_cpus(MODE)
import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_tricks.callbacks import ExponentialMovingAverage  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ema_common import MOMENTUM, STEPS_PER_EPOCH, Recorder, data, make_model, numpy_ema  # noqa: E402


def resume(path, out):
    x, y = data()
    model = keras.saving.load_model(path)
    ema = ExponentialMovingAverage(momentum=MOMENTUM)
    model.fit(x, y, epochs=4, initial_epoch=2, batch_size=16, shuffle=False, verbose=0, callbacks=[ema])
    ema_weights = model.get_weights()
    with ema.raw_weights():
        raw = model.get_weights()
    np.savez(
        out,
        **{f"ema_{i}": w for i, w in enumerate(ema_weights)},
        **{f"raw_{i}": w for i, w in enumerate(raw)},
    )


def distributed(out, scope, replicas):
    # EMA_SKIP=accumulate: the optimizer accumulates 2 steps' gradients;
    # EMA_SKIP=loss_scale: a LossScaleOptimizer, which skips the steps of the
    # second batch of each epoch (infinite targets; float32, since under
    # MirroredStrategy on CPU Keras 3.15's mixed_float16 training turns the
    # weights to NaN at the first step, EMA or not). Either way the EMA must
    # average the weights of the applied updates only.
    skip = os.environ.get("EMA_SKIP", "")
    x, y = data()
    y_train = y.copy()
    if skip == "loss_scale":
        y_train[16:32] = np.inf
    with scope:
        optimizer = None
        if skip == "accumulate":
            optimizer = keras.optimizers.Adam(0.05, gradient_accumulation_steps=2)
        elif skip == "loss_scale":
            optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(0.05))
        model = make_model(optimizer=optimizer)
    rec = Recorder()
    ema = ExponentialMovingAverage(momentum=MOMENTUM)
    history = model.fit(
        x,
        y_train,
        epochs=2,
        batch_size=16,
        shuffle=False,
        verbose=0,
        callbacks=[rec, ema],
        validation_data=(x, y),
    )
    if skip:
        moved = [
            any(not np.array_equal(a, b) for a, b in zip(now, before))
            for before, now in zip(rec.trajectory[:-1], rec.trajectory[1:])
        ]
        if skip == "accumulate":
            assert moved == [(i + 1) % 2 == 0 for i in range(len(moved))], moved
        else:
            assert not moved[1] and not moved[STEPS_PER_EPOCH + 1], moved
        # The EMA after each micro-step: over the applied updates so far.
        applied, ref = [rec.trajectory[0]], []
        for w, a in zip(rec.trajectory[1:], moved):
            if a:
                applied.append(w)
            ref.append(numpy_ema(applied, MOMENTUM, True, False)[-1] if len(applied) > 1 else applied[0])
    else:
        ref = numpy_ema(rec.trajectory, MOMENTUM, True, False)
    np.savez(
        out,
        replicas=np.int64(replicas),
        final=np.concatenate([w.ravel() for w in model.get_weights()]),
        ref_final=np.concatenate([w.ravel() for w in ref[-1]]),
        epoch_end=np.concatenate([w.ravel() for w in rec.epoch_end[0]]),
        ref_epoch0=np.concatenate([w.ravel() for w in ref[STEPS_PER_EPOCH - 1]]),
        batch_begin=np.concatenate([w.ravel() for w in rec.batch_begin[STEPS_PER_EPOCH]]),
        raw_before=np.concatenate([w.ravel() for w in rec.trajectory[STEPS_PER_EPOCH]]),
        val_loss=np.asarray(history.history["val_loss"]),
    )


if __name__ == "__main__":
    if MODE == "resume":
        resume(sys.argv[2], sys.argv[3])
    elif MODE == "mirrored":
        import tensorflow as tf

        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        distributed(sys.argv[2], strategy.scope(), strategy.num_replicas_in_sync)
    elif MODE == "dataparallel":
        import contextlib

        devices = keras.distribution.list_devices("cpu")
        assert len(devices) == 2, devices
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        distributed(sys.argv[2], contextlib.nullcontext(), len(devices))
    else:
        raise SystemExit(f"unknown mode {MODE!r}")
