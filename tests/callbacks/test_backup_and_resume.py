"""BackupAndResume: a training process killed (SIGKILL) mid-epoch and started
again ends with the very weights of a run never interrupted."""

import json
import os
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_tricks.callbacks import BackupAndResume
from keras_tricks.data import DataGenerator

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def _run(out, backup, kill_at):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
    return subprocess.run(
        [sys.executable, os.path.join(HERE, "_resume_worker.py"), str(out), str(backup), str(kill_at)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow  # three training processes (about 10 s each on an idle 2-core machine)
def test_killed_mid_epoch_and_started_again_ends_bit_for_bit_like_an_uninterrupted_run(tmp_path):
    # 5 steps an epoch, 3 epochs, a checkpoint every 3 steps. Killed after
    # step 8 (the last checkpoint is step 6, inside epoch 1), then started
    # again: steps 7 and 8 are trained again, from the checkpoint's weights,
    # optimizer state, random state and data position. The model has Dropout
    # (random state) and an EMA callback (state in the optimizer).
    clean = _run(tmp_path / "clean.npz", tmp_path / "clean", -1)
    assert clean.returncode == 0, clean.stderr[-3000:]
    killed = _run(tmp_path / "resumed.npz", tmp_path / "backup", 8)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    with open(tmp_path / "backup" / "latest.json") as f:
        checkpoint = json.load(f)
    assert checkpoint["step"] == 6
    assert (checkpoint["data"]["epoch"], checkpoint["data"]["index"], checkpoint["data"]["offset"]) == (
        1,
        0,
        1,
    )
    resumed = _run(tmp_path / "resumed.npz", tmp_path / "backup", -1)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "steps 15 left []" in resumed.stdout  # the same step count; the checkpoint removed
    a, b = np.load(tmp_path / "clean.npz"), np.load(tmp_path / "resumed.npz")
    assert a.files == b.files and len(a.files) > 10
    for key in a.files:
        np.testing.assert_array_equal(b[key], a[key], err_msg=key)


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, 3)).astype("float32")
    return [(x[i], x[i, :1] * 2.0) for i in range(len(x))]


def _model(dropout=False):
    keras.utils.set_random_seed(1)
    layers = [keras.Input((3,)), keras.layers.Dense(4)]
    if dropout:
        layers.append(keras.layers.Dropout(0.4))  # no seed: PyTorch's global generator
    model = keras.Sequential([*layers, keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    return model


class _Crash(keras.callbacks.Callback):
    def __init__(self, at):
        super().__init__()
        self.at, self.steps = at, 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if self.steps == self.at:
            raise RuntimeError("simulated crash")


def _values(variables):
    return [keras.ops.convert_to_numpy(v) for v in variables]


def test_a_crashed_run_started_again_ends_like_an_uninterrupted_one_and_like_one_without_backups(tmp_path):
    # In one process (the SIGKILL test above runs three): 5 steps an epoch, 2
    # epochs; a crash after step 7, the last checkpoint at step 6.
    def fit(model, gen, callbacks):
        model.fit(gen.forfit(), steps_per_epoch=len(gen), epochs=2, verbose=0, callbacks=callbacks)
        return _values(model.variables) + _values(model.optimizer.variables)

    plain = fit(_model(dropout=True), DataGenerator(_data(), batch_size=5, seed=2), [])
    gen = DataGenerator(_data(), batch_size=5, seed=2)
    backed = fit(_model(dropout=True), gen, [BackupAndResume(gen, tmp_path / "a", save_freq=2)])
    assert os.listdir(tmp_path / "a") == []  # removed once the last step is done
    gen = DataGenerator(_data(), batch_size=5, seed=2)
    with pytest.raises(RuntimeError, match="simulated"):
        fit(_model(dropout=True), gen, [BackupAndResume(gen, tmp_path / "b", save_freq=3), _Crash(7)])
    keras.utils.set_random_seed(123)  # the checkpoint's random state must win
    gen = DataGenerator(_data(), batch_size=5, seed=2)
    resumed = fit(_model(dropout=True), gen, [BackupAndResume(gen, tmp_path / "b", save_freq=3)])
    for p, q, r in zip(plain, backed, resumed):
        np.testing.assert_array_equal(q, p)
        np.testing.assert_array_equal(r, p)


def test_a_checkpoint_of_another_model_or_schedule_is_refused(tmp_path):
    gen = DataGenerator(_data(), batch_size=5, seed=2)
    model = _model()
    backup = BackupAndResume(gen, tmp_path, save_freq=2, delete_on_completion=False)
    model.fit(gen.forfit(), steps_per_epoch=len(gen), epochs=1, verbose=0, callbacks=[backup])
    other = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    other.compile(optimizer="adam", loss="mse")
    gen = DataGenerator(_data(), batch_size=5, seed=2)
    with pytest.raises(ValueError, match="another model"):
        other.fit(
            gen.forfit(),
            steps_per_epoch=len(gen),
            epochs=1,
            verbose=0,
            callbacks=[BackupAndResume(gen, tmp_path)],
        )
    gen = DataGenerator(_data(), batch_size=5, seed=2)
    with pytest.raises(ValueError, match="steps_per_epoch=5"):
        _model().fit(
            gen.forfit(), steps_per_epoch=4, epochs=1, verbose=0, callbacks=[BackupAndResume(gen, tmp_path)]
        )


def test_bad_arguments_are_refused_with_the_argument_named(tmp_path):
    gen = DataGenerator(_data(), batch_size=5, seed=2)
    with pytest.raises(TypeError, match="`generator`"):
        BackupAndResume([1, 2], tmp_path)
    with pytest.raises(TypeError, match="`backup_dir`"):
        BackupAndResume(gen, 3)
    for bad in (0, -1, 2.5, True, "batch"):
        with pytest.raises(ValueError, match="`save_freq`"):
            BackupAndResume(gen, tmp_path, save_freq=bad)
    assert BackupAndResume(gen, tmp_path, save_freq=np.int64(3)).save_freq == 3  # NumPy ints too
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "latest.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a BackupAndResume checkpoint"):
        BackupAndResume(gen, tmp_path / "bad")
    (tmp_path / "bad" / "latest.json").write_text("[1]")
    with pytest.raises(ValueError, match="not a checkpoint of this version"):
        BackupAndResume(gen, tmp_path / "bad")
    with pytest.raises(TypeError, match="`delete_on_completion`"):
        BackupAndResume(gen, tmp_path, delete_on_completion="yes")
    with pytest.raises(ValueError, match="steps_per_epoch"):
        model = _model()
        model.fit(gen.forfit(), epochs=1, verbose=0, callbacks=[BackupAndResume(gen, tmp_path)])
