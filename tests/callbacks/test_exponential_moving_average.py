import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from distributed_workers import distributed_tests, run_worker

from keras_tricks import _backend, testing
from keras_tricks.callbacks import ExponentialMovingAverage
from keras_tricks.optimizers import ExponentialMovingAverageOptimizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ema_common import (  # noqa: E402
    BATCH,
    MOMENTUM,
    STEPS_PER_EPOCH,
    Recorder,
    data,
    linear_mse,
    make_model,
    numpy_ema,
    weights,
)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def _fit(model, callbacks, epochs=2, validation=True, **kwargs):
    x, y = data()
    return model.fit(
        x,
        y,
        epochs=epochs,
        batch_size=BATCH,
        shuffle=False,
        verbose=0,
        callbacks=callbacks,
        validation_data=(x, y) if validation else None,
        **kwargs,
    )


def _close(actual, expected, what, tolerance=4.0):
    testing.assert_close(
        [np.asarray(a, np.float64) for a in actual],
        [np.asarray(e, np.float64) for e in expected],
        "float32",
        tolerance,
        what,
    )


def _identical(actual, expected, what):
    for a, e in zip(actual, expected):
        assert np.array_equal(a, e), f"{what}: not bit-identical"


# --------------------------------------------------------------- arguments


@pytest.mark.parametrize("momentum", [-0.1, 1.0, 1.5, float("nan"), 1 - 1e-9, "0.9", True, None])
def test_bad_momentum_raises(momentum):
    with pytest.raises(ValueError, match="momentum"):
        ExponentialMovingAverage(momentum=momentum)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"variables": "everything"}, "variables"),
        ({"evaluate_with": "best"}, "evaluate_with"),
        ({"weights_after_fit": None}, "weights_after_fit"),
        ({"warmup": "yes"}, "warmup"),
        ({"bias_correction": 1}, "bias_correction"),
        ({"decay": 0.9}, "decay"),
    ],
)
def test_bad_options_raise(kwargs, name):
    with pytest.raises(ValueError, match=name):
        ExponentialMovingAverage(**kwargs)


def test_momentum_zero_is_allowed_and_config_round_trips():
    ema = ExponentialMovingAverage(
        momentum=0.0,
        warmup=False,
        bias_correction=True,
        variables="all",
        evaluate_with="raw",
        weights_after_fit="raw",
    )
    config = ema.get_config()
    assert ExponentialMovingAverage.from_config(config).get_config() == config
    assert (
        keras.saving.get_registered_name(ExponentialMovingAverage) == "keras_tricks>ExponentialMovingAverage"
    )


# --------------------------------------------------- the formula, exactly


@pytest.mark.parametrize(
    "warmup, bias_correction", [(True, False), (False, False), (False, True), (True, True)]
)
def test_ema_matches_numpy_on_recorded_trajectory(warmup, bias_correction):
    model = make_model()
    rec = Recorder()
    ema = ExponentialMovingAverage(momentum=MOMENTUM, warmup=warmup, bias_correction=bias_correction)
    history = _fit(model, [rec, ema])
    ref = numpy_ema(rec.trajectory, MOMENTUM, warmup, bias_correction)
    assert len(ref) == 2 * STEPS_PER_EPOCH
    # What every callback sees at on_epoch_end, and what the model holds
    # after fit(): the EMA weights.
    for epoch in range(2):
        _close(
            rec.epoch_end[epoch], ref[(epoch + 1) * STEPS_PER_EPOCH - 1], f"weights at on_epoch_end({epoch})"
        )
    _close(weights(model.trainable_variables), ref[-1], "weights after fit()")
    # Validation inside fit() ran on the EMA weights.
    x, y = data()
    for epoch in range(2):
        expected = linear_mse(ref[(epoch + 1) * STEPS_PER_EPOCH - 1], x, y)
        _close([history.history["val_loss"][epoch]], [expected], "val_loss", 64)
    # The raw weights were back, bit for bit, at every training step.
    for step in range(1, len(rec.batch_begin)):
        _identical(rec.batch_begin[step], rec.trajectory[step], f"raw weights at step {step}")
    with ema.raw_weights():
        _identical(weights(model.trainable_variables), rec.trajectory[-1], "raw after fit()")
    _close(weights(model.trainable_variables), ref[-1], "EMA back after raw_weights()")


def test_training_is_bit_identical_with_and_without_ema():
    plain = make_model()
    _fit(plain, [])
    model = make_model()
    ema = ExponentialMovingAverage(momentum=MOMENTUM)
    _fit(model, [ema])
    with ema.raw_weights():
        _identical(
            weights(model.trainable_variables),
            weights(plain.trainable_variables),
            "raw weights vs plain training",
        )


def test_bias_correction_never_divides_by_zero():
    # bert4keras issue #332: the first EMA divided 0 by 0.
    model = make_model()
    x, y = data()
    ema = ExponentialMovingAverage(momentum=0.0, warmup=False, bias_correction=True)
    before = weights(model.trainable_variables)
    ema.install(model).build(model.trainable_variables)  # step 0
    model.evaluate(x, y, verbose=0, callbacks=[ema])
    _identical(weights(model.trainable_variables), before, "raw after evaluate()")
    with ema.ema_weights():
        _identical(weights(model.trainable_variables), before, "EMA before any step")
    rec = Recorder()
    _fit(model, [rec, ema], epochs=1, validation=False)
    # momentum 0: the EMA is the latest weights.
    _close(weights(model.trainable_variables), rec.trajectory[-1], "momentum=0 EMA")
    for w in weights(model.trainable_variables):
        assert np.all(np.isfinite(w))


def test_non_trainable_variables_are_averaged_when_asked():
    model = make_model(batchnorm=True)
    rec_t, rec_n = Recorder(), Recorder("non_trainable")
    ema = ExponentialMovingAverage(momentum=MOMENTUM, variables="all")
    _fit(model, [rec_t, rec_n, ema], validation=False)
    ref_n = numpy_ema(rec_n.trajectory, MOMENTUM, True, False)
    ref_t = numpy_ema(rec_t.trajectory, MOMENTUM, True, False)
    moving = [v for v in model.non_trainable_variables if "float" in str(v.dtype)]
    assert len(moving) == 2  # moving mean and variance
    _close(weights(moving), ref_n[-1], "BatchNorm statistics EMA")
    _close(weights(model.trainable_variables), ref_t[-1], "trainable EMA")
    with ema.raw_weights():
        _identical(weights(moving), rec_n.trajectory[-1], "raw BatchNorm statistics")


def test_trainable_only_by_default_leaves_batchnorm_statistics_raw():
    model = make_model(batchnorm=True)
    rec_n = Recorder("non_trainable")
    _fit(model, [rec_n, ExponentialMovingAverage(momentum=MOMENTUM)], validation=False)
    moving = [v for v in model.non_trainable_variables if "float" in str(v.dtype)]
    _identical(weights(moving), rec_n.trajectory[-1], "BatchNorm statistics")


# ------------------------------------------ Keras 3.15 pitfalls, regression


def test_predict_and_evaluate_leave_the_raw_weights_in_place():
    # Keras's SwapEMAWeights.on_predict_end has its condition inverted and
    # leaves the EMA weights in the model after predict().
    model = make_model()
    rec = Recorder()
    ema = ExponentialMovingAverage(momentum=MOMENTUM, weights_after_fit="raw")
    _fit(model, [rec, ema], validation=False)
    raw = weights(model.trainable_variables)
    _identical(raw, rec.trajectory[-1], "raw weights after fit(weights_after_fit='raw')")
    ref = numpy_ema(rec.trajectory, MOMENTUM, True, False)[-1]
    x, y = data()
    pred = model.predict(x, verbose=0, callbacks=[ema])
    kernel, bias = ref
    _close([pred], [x.astype(np.float64) @ kernel + bias], "predict() on EMA", 16)
    _identical(weights(model.trainable_variables), raw, "weights after predict()")
    loss = model.evaluate(x, y, verbose=0, callbacks=[ema])
    _close([loss], [linear_mse(ref, x, y)], "evaluate() on EMA", 64)
    _identical(weights(model.trainable_variables), raw, "weights after evaluate()")
    # And configurable: evaluate_with="raw".
    raw_eval = ExponentialMovingAverage(momentum=MOMENTUM, evaluate_with="raw")
    loss = model.evaluate(x, y, verbose=0, callbacks=[raw_eval])
    _close([loss], [linear_mse(raw, x, y)], "evaluate(evaluate_with='raw')", 64)


@pytest.mark.parametrize("ema_first", [True, False])
def test_early_stopping_restores_the_best_ema_weights(ema_first):
    # Keras: EarlyStopping(restore_best_weights=True) put back a raw snapshot.
    # mode="max" on a falling loss: the best epoch is the first, training
    # stops after the second and restores the first epoch's weights.
    model = make_model()
    rec = Recorder()
    ema = ExponentialMovingAverage(momentum=MOMENTUM)
    stop = keras.callbacks.EarlyStopping(
        monitor="val_loss", mode="max", patience=1, restore_best_weights=True
    )
    callbacks = [rec, ema, stop] if ema_first else [rec, stop, ema]
    history = _fit(model, callbacks, epochs=5)
    assert len(history.history["loss"]) == 2
    ref = numpy_ema(rec.trajectory, MOMENTUM, True, False)
    _close(weights(model.trainable_variables), ref[STEPS_PER_EPOCH - 1], "weights restored by EarlyStopping")


@pytest.mark.parametrize("ema_first", [True, False])
def test_model_checkpoint_saves_the_ema_weights(tmp_path, ema_first):
    model = make_model()
    rec = Recorder()
    ema = ExponentialMovingAverage(momentum=MOMENTUM)
    best = keras.callbacks.ModelCheckpoint(
        str(tmp_path / "best.weights.h5"),
        monitor="val_loss",
        mode="max",
        save_best_only=True,
        save_weights_only=True,
    )
    last = keras.callbacks.ModelCheckpoint(str(tmp_path / "last.keras"))
    callbacks = [rec, ema, best, last] if ema_first else [rec, best, last, ema]
    _fit(model, callbacks, epochs=2)
    ref = numpy_ema(rec.trajectory, MOMENTUM, True, False)
    loaded = keras.saving.load_model(str(tmp_path / "last.keras"))
    _close(weights(loaded.trainable_variables), ref[-1], "last.keras weights")
    fresh = make_model(seed=1, compile=False)
    fresh.load_weights(str(tmp_path / "best.weights.h5"))
    _close(weights(fresh.trainable_variables), ref[STEPS_PER_EPOCH - 1], "best (epoch 0) checkpoint weights")


def test_load_weights_into_unbuilt_optimizer_keeps_the_ema_state(tmp_path):
    # Keras: load_weights into a model whose optimizer is not built yet warns
    # and drops the optimizer state, EMA included.
    model = make_model()
    rec = Recorder()
    ema = ExponentialMovingAverage(momentum=MOMENTUM)
    _fit(model, [rec, ema], validation=False)
    path = str(tmp_path / "state.weights.h5")
    model.save_weights(path)
    ref = numpy_ema(rec.trajectory, MOMENTUM, True, False)[-1]

    fresh = make_model(seed=1)
    ExponentialMovingAverage(momentum=MOMENTUM).install(fresh)
    assert not fresh.optimizer.built
    fresh.load_weights(path)
    wrapper = fresh.optimizer
    assert isinstance(wrapper, ExponentialMovingAverageOptimizer)
    wrapper.build(fresh.trainable_variables)  # what fit() does
    assert int(keras.ops.convert_to_numpy(wrapper.ema_step)) == 2 * STEPS_PER_EPOCH
    _close(weights(wrapper.average_variables), ref, "EMA state after deferred load")
    _identical(
        weights(wrapper.inner_optimizer.variables),
        weights(model.optimizer.inner_optimizer.variables),
        "Adam state",
    )
    with ExponentialMovingAverage(momentum=MOMENTUM).raw_weights(fresh):
        _identical(weights(fresh.trainable_variables), rec.trajectory[-1], "raw weights")


def test_resume_in_a_fresh_process_equals_uninterrupted_training(tmp_path):
    straight = make_model()
    ema = ExponentialMovingAverage(momentum=MOMENTUM)
    _fit(straight, [ema], epochs=4, validation=False)
    expected_ema = weights(straight.get_weights())
    with ema.raw_weights():
        expected_raw = weights(straight.get_weights())

    first = make_model()
    _fit(first, [ExponentialMovingAverage(momentum=MOMENTUM)], epochs=2, validation=False)
    path = str(tmp_path / "half.keras")
    first.save(path)
    out = str(tmp_path / "resumed.npz")
    env = dict(os.environ, KERAS_BACKEND=_backend.name())
    proc = subprocess.run(
        [sys.executable, os.path.join(HERE, "_ema_worker.py"), "resume", path, out],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = np.load(out)
    n = len(expected_ema)
    _close([got[f"ema_{i}"] for i in range(n)], expected_ema, "resumed EMA", 16)
    _close([got[f"raw_{i}"] for i in range(n)], expected_raw, "resumed raw weights", 16)


def test_batchnorm_averages_survive_a_keras_file_round_trip(tmp_path):
    def callback():
        return ExponentialMovingAverage(momentum=MOMENTUM, variables="all")

    model = make_model(batchnorm=True)
    _fit(model, [callback()], epochs=1, validation=False)
    path = str(tmp_path / "bn.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    _fit(model, [callback()], epochs=1, validation=False)
    _fit(loaded, [callback()], epochs=1, validation=False)
    _close(weights(loaded.weights), weights(model.weights), "EMA weights after resume", 16)
    ema = callback()
    with ema.raw_weights(model), ema.raw_weights(loaded):
        _close(weights(loaded.weights), weights(model.weights), "raw weights after resume", 16)


def test_mixed_float16_keras_file_round_trip_keeps_one_loss_scaler(tmp_path):
    # compile() wraps the optimizer in a LossScaleOptimizer under
    # mixed_float16; loading must not wrap the EMA optimizer in a second one
    # (double unscaling, and the saved optimizer state skipped).
    with testing.dtype_policy("mixed_float16"):
        model = make_model()
        _fit(model, [ExponentialMovingAverage(momentum=MOMENTUM)], epochs=1, validation=False)
        path = str(tmp_path / "mixed.keras")
        model.save(path)
        loaded = keras.saving.load_model(path)
        assert isinstance(loaded.optimizer, ExponentialMovingAverageOptimizer)
        assert isinstance(loaded.optimizer.inner_optimizer, keras.optimizers.LossScaleOptimizer)
        _fit(model, [ExponentialMovingAverage(momentum=MOMENTUM)], epochs=1, validation=False)
        _fit(loaded, [ExponentialMovingAverage(momentum=MOMENTUM)], epochs=1, validation=False)
    _close(weights(loaded.weights), weights(model.weights), "EMA weights after resume", 16)


def test_an_optimizer_with_its_own_ema_is_refused():
    model = make_model(optimizer=keras.optimizers.Adam(use_ema=True))
    with pytest.raises(ValueError, match="use_ema"):
        _fit(model, [ExponentialMovingAverage()], epochs=1, validation=False)


# ------------------------------------------------------- other behaviour


def test_context_managers_swap_bit_for_bit():
    model = make_model()
    rec = Recorder()
    ema = ExponentialMovingAverage(momentum=MOMENTUM, weights_after_fit="raw")
    _fit(model, [rec, ema], epochs=1, validation=False)
    raw = weights(model.trainable_variables)
    ref = numpy_ema(rec.trajectory, MOMENTUM, True, False)[-1]
    with ema.ema_weights():
        _close(weights(model.trainable_variables), ref, "inside ema_weights()")
        with ema.raw_weights():
            _identical(weights(model.trainable_variables), raw, "nested raw_weights()")
        with ema.ema_weights():
            _close(weights(model.trainable_variables), ref, "nested ema_weights()")
    _identical(weights(model.trainable_variables), raw, "after ema_weights()")
    with pytest.raises(ValueError, match="model"):
        with ExponentialMovingAverage().ema_weights():
            pass


def test_any_optimizer_and_a_second_fit_continue_the_same_average():
    model = make_model(optimizer=keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True))
    rec = Recorder()
    ema = ExponentialMovingAverage(momentum=MOMENTUM)
    _fit(model, [rec, ema], epochs=1, validation=False)
    _fit(model, [rec, ema], epochs=1, validation=False)  # continues from raw
    ref = numpy_ema(rec.trajectory, MOMENTUM, True, False)
    assert len(ref) == 2 * STEPS_PER_EPOCH
    _close(weights(model.trainable_variables), ref[-1], "EMA over two fit() calls")
    assert model.optimizer.learning_rate is not None
    model.optimizer.learning_rate = 0.01  # e.g. ReduceLROnPlateau
    np.testing.assert_allclose(
        float(keras.ops.convert_to_numpy(model.optimizer.inner_optimizer.learning_rate)), 0.01
    )


def test_mismatched_settings_on_a_running_average_raise():
    model = make_model()
    _fit(model, [ExponentialMovingAverage(momentum=MOMENTUM)], epochs=1, validation=False)
    with pytest.raises(ValueError, match="momentum"):
        _fit(model, [ExponentialMovingAverage(momentum=0.5)], epochs=1, validation=False)


def test_keras_file_round_trip_without_custom_objects(tmp_path):
    model = make_model()
    ema = ExponentialMovingAverage(momentum=MOMENTUM)
    _fit(model, [ema], epochs=1, validation=False)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.optimizer, ExponentialMovingAverageOptimizer)
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    _identical(weights(loaded.get_weights()), weights(model.get_weights()), "weights")
    _identical(
        weights(loaded.optimizer.average_variables), weights(model.optimizer.average_variables), "averages"
    )
    x, _ = data()
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


@pytest.mark.harness
def test_exponential_moving_average_through_harness():
    testing.check_callback(lambda: ExponentialMovingAverage(momentum=MOMENTUM))


# ----------------------------------------------------------- distribution


def _check_distributed(got):
    assert int(got["replicas"]) == 2
    _close([got["final"]], [got["ref_final"]], "distributed EMA after fit()")
    _close([got["epoch_end"]], [got["ref_epoch0"]], "distributed EMA at on_epoch_end")
    assert np.array_equal(got["batch_begin"], got["raw_before"]), "raw weights not restored"
    assert np.all(np.isfinite(got["val_loss"]))


test_mirrored_strategy_on_two_virtual_cpus, test_data_parallel_on_two_virtual_cpus = distributed_tests(
    os.path.join(HERE, "_ema_worker.py"), _check_distributed
)


# ------------------ callbacks that write the weights (hardening item 11)


def _round_trips(ema, model, what):
    """`with ema.raw_weights(): pass` and `with ema.ema_weights(): pass` leave
    the model holding exactly what it held before."""
    held = weights(model.weights)
    with ema.raw_weights():
        pass
    _identical(weights(model.weights), held, f"{what}: after raw_weights()")
    with ema.ema_weights():
        pass
    _identical(weights(model.weights), held, f"{what}: after ema_weights()")
    return held


@pytest.mark.parametrize("ema_first", [True, False])
def test_weights_restored_by_early_stopping_stay_through_swaps_and_the_next_fit(tmp_path, ema_first):
    # It restored the best EMA weights, but `with ema.raw_weights(): pass`
    # put the last epoch's EMA weights back, a saved model kept the last raw
    # weights to resume from, and the next fit() started from them.
    model = make_model()
    rec = Recorder()
    ema = ExponentialMovingAverage(momentum=MOMENTUM)
    stop = keras.callbacks.EarlyStopping(
        monitor="val_loss", mode="max", patience=1, restore_best_weights=True
    )
    _fit(model, [rec, ema, stop] if ema_first else [rec, stop, ema], epochs=5)
    best = weights(model.trainable_variables)
    _close(best, numpy_ema(rec.trajectory, MOMENTUM, True, False)[STEPS_PER_EPOCH - 1], "restored")
    path = str(tmp_path / "stopped.keras")
    model.save(path)  # right away: loading it must not bring the last raw weights back
    loaded = keras.saving.load_model(path)
    with ExponentialMovingAverage(momentum=MOMENTUM).raw_weights(loaded):
        _identical(weights(loaded.trainable_variables), best, "raw weights of the saved model")
    _round_trips(ema, model, "EarlyStopping")
    with ema.raw_weights():  # the restored weights are the model's now
        _identical(weights(model.trainable_variables), best, "inside raw_weights()")
    later = Recorder()
    _fit(model, [later, ema], epochs=1, validation=False)
    _identical(later.batch_begin[0], best, "the next fit() starts from the restored weights")


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            raise RuntimeError("interrupted")


def test_backup_and_restore_resumes_the_raw_weights_and_the_average(tmp_path):
    straight = make_model()
    ema = ExponentialMovingAverage(momentum=MOMENTUM)
    _fit(straight, [ema], epochs=2)
    expected = weights(straight.weights)
    with ema.raw_weights():
        expected_raw = weights(straight.weights)

    model = make_model()
    ema = ExponentialMovingAverage(momentum=MOMENTUM)
    backup = str(tmp_path / "backup")
    with pytest.raises(RuntimeError, match="interrupted"):
        _fit(model, [ema, keras.callbacks.BackupAndRestore(backup), _Interrupt()], epochs=2)
    _round_trips(ema, model, "after the interruption")
    # Resumed from epoch 1 out of the backup (saved with the EMA weights in).
    _fit(model, [keras.callbacks.BackupAndRestore(backup), ema], epochs=2)
    _close(weights(model.weights), expected, "EMA after the resumed fit()", 16)
    _round_trips(ema, model, "BackupAndRestore")
    with ema.raw_weights():
        _close(weights(model.weights), expected_raw, "raw after the resumed fit()", 16)


@pytest.mark.parametrize("with_ema", [True, False])
def test_loading_a_checkpoint_after_fit_is_not_reverted(tmp_path, with_ema):
    # with_ema: saved by ModelCheckpoint(save_weights_only) at on_epoch_end,
    # with the EMA weights in (and the raw ones in the file); otherwise saved
    # with the raw weights in. Either way loading it into a model that holds
    # the EMA weights must not be undone by the raw weights kept from before.
    model = make_model()
    rec = Recorder()
    ema = ExponentialMovingAverage(momentum=MOMENTUM)
    path = str(tmp_path / "epoch{epoch}.weights.h5")
    saver = keras.callbacks.ModelCheckpoint(path, save_weights_only=True)
    _fit(model, [rec, ema, saver], epochs=2)
    first = path.format(epoch=1)
    if not with_ema:
        model.load_weights(first)
        with ema.raw_weights():
            model.save_weights(first)
    model.load_weights(first)
    _round_trips(ema, model, "ModelCheckpoint")
    raw0 = rec.trajectory[STEPS_PER_EPOCH]
    if with_ema:
        ref = numpy_ema(rec.trajectory, MOMENTUM, True, False)[STEPS_PER_EPOCH - 1]
        _close(weights(model.trainable_variables), ref, "the EMA epoch-1 weights loaded")
    else:
        _identical(weights(model.trainable_variables), raw0, "the raw epoch-1 weights loaded")
    with ema.raw_weights():
        _identical(weights(model.trainable_variables), raw0, "raw weights of the checkpoint")
    later = Recorder()
    _fit(model, [later, ema], epochs=1, validation=False)
    _identical(later.batch_begin[0], raw0, "the next fit() resumes from the checkpoint's raw weights")


def test_keras_swap_ema_weights_is_refused_and_leaves_the_model_consistent():
    # SwapEMAWeights works with Keras's own `use_ema`, which this callback
    # refuses: it raises (Keras's error) when it first runs.
    model = make_model()
    ema = ExponentialMovingAverage(momentum=MOMENTUM)
    with pytest.raises(ValueError, match="use_ema"):
        _fit(model, [ema, keras.callbacks.SwapEMAWeights(swap_on_epoch=True)], epochs=2)
    _round_trips(ema, model, "SwapEMAWeights")


# ------------- one EMA step per applied update (hardening item 12)


def _changed(trajectory):
    """[whether step i moved the weights] for the steps of a trajectory."""
    return [
        any(not np.array_equal(a, b) for a, b in zip(now, before))
        for before, now in zip(trajectory[:-1], trajectory[1:])
    ]


@pytest.mark.parametrize("warmup, bias_correction", [(True, False), (True, True)])
def test_gradient_accumulation_averages_the_applied_updates_only(warmup, bias_correction):
    # The EMA stepped on every micro-step (as Keras's own `use_ema` does),
    # averaging the same weights N times over and running the warm-up N
    # times too fast.
    steps = 2
    model = make_model(optimizer=keras.optimizers.Adam(0.05, gradient_accumulation_steps=steps))
    rec = Recorder()
    ema = ExponentialMovingAverage(momentum=MOMENTUM, warmup=warmup, bias_correction=bias_correction)
    _fit(model, [rec, ema], epochs=2, validation=False)
    applied = [(i + 1) % steps == 0 for i in range(2 * STEPS_PER_EPOCH)]
    assert _changed(rec.trajectory) == applied  # what Keras documents
    sequence = [rec.trajectory[0]] + [w for w, a in zip(rec.trajectory[1:], applied) if a]
    ref = numpy_ema(sequence, MOMENTUM, warmup, bias_correction)
    _close(weights(model.trainable_variables), ref[-1], "EMA of the applied updates")
    assert int(keras.ops.convert_to_numpy(model.optimizer.ema_step)) == len(ref) == STEPS_PER_EPOCH
    with ema.raw_weights():
        _identical(weights(model.trainable_variables), rec.trajectory[-1], "raw weights")


@pytest.mark.parametrize("bias_correction", [False, True])
def test_skipped_loss_scale_steps_do_not_enter_the_average(bias_correction):
    # Under mixed_float16 the LossScaleOptimizer skips a step whose gradients
    # are not finite (here: the second batch of each epoch has an infinite
    # target); the EMA averaged the unchanged weights in all the same.
    x, y = data()
    y[BATCH : 2 * BATCH] = np.inf
    with testing.dtype_policy("mixed_float16"):
        model = make_model()
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        rec = Recorder()
        ema = ExponentialMovingAverage(momentum=MOMENTUM, bias_correction=bias_correction)
        model.fit(x, y, epochs=2, batch_size=BATCH, shuffle=False, verbose=0, callbacks=[rec, ema])
    applied = _changed(rec.trajectory)
    assert not applied[1] and not applied[STEPS_PER_EPOCH + 1], "the infinite batches were not skipped"
    sequence = [rec.trajectory[0]] + [w for w, a in zip(rec.trajectory[1:], applied) if a]
    ref = numpy_ema(sequence, MOMENTUM, True, bias_correction)
    _close(weights(model.trainable_variables), ref[-1], "EMA of the applied updates")
    assert int(keras.ops.convert_to_numpy(model.optimizer.ema_step)) == len(ref) < 2 * STEPS_PER_EPOCH
    for w in weights(model.trainable_variables):
        assert np.all(np.isfinite(w))


def test_gradient_accumulation_averages_batchnorm_statistics_at_applied_updates_only():
    # The statistics move on every micro-step; their average (variables="all",
    # updated outside the train step on JAX) steps with the applied updates.
    steps = 2
    model = make_model(
        batchnorm=True, optimizer=keras.optimizers.Adam(0.05, gradient_accumulation_steps=steps)
    )
    rec_n = Recorder("non_trainable")
    ema = ExponentialMovingAverage(momentum=MOMENTUM, variables="all")
    _fit(model, [rec_n, ema], epochs=1, validation=False)
    applied = [(i + 1) % steps == 0 for i in range(STEPS_PER_EPOCH)]
    assert all(_changed(rec_n.trajectory))
    sequence = [rec_n.trajectory[0]] + [w for w, a in zip(rec_n.trajectory[1:], applied) if a]
    moving = [v for v in model.non_trainable_variables if "float" in str(v.dtype)]
    _close(weights(moving), numpy_ema(sequence, MOMENTUM, True, False)[-1], "BatchNorm statistics EMA")


@pytest.mark.slow
@pytest.mark.parametrize("skip", ["accumulate", "loss_scale"])
def test_skipped_updates_on_two_virtual_cpus(tmp_path, skip):
    # On TensorFlow the "applied" flag crosses a tf.distribute merge call.
    if _backend.name() not in ("tensorflow", "jax"):
        pytest.skip("tf.distribute / JAX DataParallel")
    if skip == "accumulate" and _backend.name() == "tensorflow":
        pytest.skip("Keras 3.15's gradient accumulation fails under MirroredStrategy, EMA or not")
    mode = "mirrored" if _backend.name() == "tensorflow" else "dataparallel"
    _check_distributed(run_worker(os.path.join(HERE, "_ema_worker.py"), mode, tmp_path, {"EMA_SKIP": skip}))
