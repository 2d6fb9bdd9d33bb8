"""`BackupAndResume`: a run killed mid-epoch resumes with exactly the batches
and weights of an uninterrupted one."""

from __future__ import annotations

import glob
import json
import numbers
import os
import random as python_random
from typing import Any

import keras
import numpy as np

from keras_tricks import _backend, _keras_compat
from keras_tricks.data.generator import DataGenerator

_LATEST = "latest.json"
_FORMAT = 1


def _to_numpy(variable):
    value = np.asarray(keras.ops.convert_to_numpy(variable))
    if value.dtype.kind not in "biuf":
        # bfloat16 and other ml_dtypes types: stored as their raw bits.
        value = value.view(f"u{value.dtype.itemsize}")
    return value


def _write_atomically(path, write):
    # Renamed once whole: a killed process leaves the old file or the new one.
    # No fsync (as Keras's BackupAndRestore): it cost 10x the write under load,
    # and only a crash of the machine itself, not of the process, needs it.
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        write(f)
    os.replace(tmp, path)


class BackupAndResume(keras.callbacks.Callback):
    """Back up training every `save_freq` batches; resume exactly after a kill.

    Keras's `BackupAndRestore` restores the weights of its last backup but
    restarts that epoch from its first batch, so a run killed mid-epoch trains
    those batches twice; and its weights file leaves out the layers' random
    state (a `Dropout`'s `SeedGenerator`). This callback saves, every
    `save_freq` batches, every variable of the model (trainable,
    non-trainable, seed generators) and of its optimizer (slots, iteration
    count, loss scale, an `ExponentialMovingAverage`'s averages), the host's
    random generators (Python's, NumPy's and, on PyTorch, torch's global one,
    which an unseeded `Dropout` draws from there) and the position of the
    `DataGenerator` stream, in one checkpoint. A run
    started again with the same code continues from the last checkpoint:
    the generator yields the batches that followed it, the variables hold
    their values of that step, and training stops after the same total
    number of steps, so the final weights equal those of a run that was never
    interrupted, bit for bit on a deterministic backend.

        gen = MyGenerator(train, batch_size=32, seed=0)
        backup = BackupAndResume(gen, "backup/", save_freq=100)   # before fit
        model.fit(gen.forfit(), steps_per_epoch=len(gen), epochs=10, callbacks=[backup])

    Create it before the stream yields its first batch (as in the line above:
    the generator's position is set when it is created). Give `fit()`
    `steps_per_epoch` and the same `epochs` on every start. Keras counts
    epochs from the one the checkpoint was in and cannot start an epoch in its
    middle, so after a resume Keras's epoch boundaries (`on_epoch_end`,
    validation, epoch-wise learning-rate schedules) fall `k` steps later than
    in the uninterrupted run, `k` being the checkpoint's step within its
    epoch; step-wise schedules (the optimizer's `iterations`) are exact.
    Metrics restart with the resumed `fit()`, and other callbacks keep only
    what they keep themselves (as with Keras's `BackupAndRestore`).

    Files: `backup_dir/latest.json` (the step, the generator's state, the
    variables' paths and shapes) names `state-<step>.npz`; both are written
    to a temporary file and renamed, so a process killed at any moment leaves
    the previous checkpoint whole (like Keras's `BackupAndRestore`, the files
    are not fsync'ed: a crash of the machine itself may lose the last one).
    They are deleted when training ends after its last step (unless
    `delete_on_completion=False`).

    Args:
        generator: the `DataGenerator` whose `forfit()` stream `fit()` trains
            on.
        backup_dir: the directory of the checkpoint (created when needed).
        save_freq: an int >= 1, batches between checkpoints, or `"epoch"`.
        delete_on_completion: remove the checkpoint once the last step is done.

    Raises:
        TypeError / ValueError: for arguments of the wrong type or value, a
            checkpoint of another model (variable count or shapes), another
            `steps_per_epoch`, or a `fit()` without `steps_per_epoch`.

    Unlike the package's other callbacks it is not registered for
    serialisation: it holds a generator, and Keras does not save callbacks.
    """

    def __init__(
        self,
        generator: DataGenerator,
        backup_dir: str | os.PathLike,
        save_freq: int | str = 100,
        delete_on_completion: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(generator, DataGenerator):
            raise TypeError(
                f"`generator` must be a keras_tricks DataGenerator; received {type(generator).__name__}."
            )
        if not isinstance(backup_dir, (str, os.PathLike)):
            raise TypeError(f"`backup_dir` must be a path; received {type(backup_dir).__name__}.")
        if save_freq != "epoch" and (
            isinstance(save_freq, bool) or not isinstance(save_freq, numbers.Integral) or save_freq < 1
        ):
            raise ValueError(f'`save_freq` must be an int >= 1 or "epoch"; received save_freq={save_freq!r}.')
        if not isinstance(delete_on_completion, bool):
            raise TypeError(f"`delete_on_completion` must be a bool; received {delete_on_completion!r}.")
        self.generator = generator
        self.backup_dir = os.fspath(backup_dir)
        self.save_freq = save_freq if save_freq == "epoch" else int(save_freq)
        self.delete_on_completion = delete_on_completion
        self._checkpoint = self._read_latest()
        if self._checkpoint is not None:
            if generator._yielded:
                raise ValueError(
                    "create BackupAndResume before the generator's stream yields its first batch: "
                    "the stream must start at the checkpoint's position."
                )
            generator.set_state(self._checkpoint["data"])
        self._step = 0 if self._checkpoint is None else int(self._checkpoint["step"])
        self._trained = 0  # batches trained since the stream started
        self._in_epoch = 0
        self._stream_start = None
        self._first_batch = True
        self._restore_pending = self._checkpoint is not None

    # ------------------------------------------------------------ files
    def _read_latest(self):
        path = os.path.join(self.backup_dir, _LATEST)
        if not os.path.exists(path):
            return None
        with open(path) as f:
            try:
                checkpoint = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path} is not a BackupAndResume checkpoint (not JSON: {e}).") from None
        if not isinstance(checkpoint, dict) or checkpoint.get("format") != _FORMAT:
            raise ValueError(f"{path} is not a checkpoint of this version of BackupAndResume.")
        return checkpoint

    def _variables(self):
        model = self.model
        variables = list(model.variables)
        seen = {id(v) for v in variables}
        optimizer = model.optimizer
        if optimizer is not None:
            # An EMA optimizer keeps the averages of non-trainable variables
            # (variables="all") outside `variables`.
            extra = list(optimizer.variables) + list(getattr(optimizer, "average_variables", []))
            for v in extra:
                if id(v) not in seen:
                    seen.add(id(v))
                    variables.append(v)
        return variables

    def _save(self):
        if hasattr(self.model, "jax_state_sync"):
            # JAX keeps this fit()'s values outside the variables until synced.
            self.model.jax_state_sync()
        os.makedirs(self.backup_dir, exist_ok=True)
        variables = self._variables()
        name = f"state-{self._step:012d}.npz"
        arrays = {f"v{i:05d}": _to_numpy(v) for i, v in enumerate(variables)}
        # The host's random generators: PyTorch's global one (unseeded
        # Dropout draws from it there), Python's and NumPy's (user code).
        for i, state in enumerate(_backend.global_rng_state()):
            arrays[f"backend_rng{i}"] = state
        np_state = np.random.get_state()
        arrays["numpy_rng"] = np_state[1]
        python_state = python_random.getstate()
        _write_atomically(os.path.join(self.backup_dir, name), lambda f: np.savez(f, **arrays))
        checkpoint = {
            "format": _FORMAT,
            "step": self._step,
            "steps_per_epoch": self._steps_per_epoch,
            "file": name,
            "data": self.generator._state_after(self._trained),
            "variables": [[v.path, list(v.shape), str(v.dtype)] for v in variables],
            "numpy_rng": [np_state[0], *[float(x) if isinstance(x, float) else int(x) for x in np_state[2:]]],
            "python_rng": [python_state[0], list(python_state[1]), python_state[2]],
        }
        _write_atomically(
            os.path.join(self.backup_dir, _LATEST), lambda f: f.write(json.dumps(checkpoint).encode())
        )
        for old in glob.glob(os.path.join(self.backup_dir, "state-*.npz")):
            if os.path.basename(old) != name:
                os.remove(old)

    def _restore(self):
        checkpoint = self._checkpoint
        variables = self._variables()
        saved = checkpoint["variables"]
        mismatch = len(saved) != len(variables) or any(
            list(v.shape) != shape for v, (_, shape, _) in zip(variables, saved)
        )
        if mismatch:
            raise ValueError(
                f"the checkpoint in {self.backup_dir} holds {len(saved)} variables that do not match "
                f"this model's and optimizer's {len(variables)} (paths, shapes): it is of another model."
            )
        with np.load(os.path.join(self.backup_dir, checkpoint["file"])) as arrays:
            for i, v in enumerate(variables):
                value = arrays[f"v{i:05d}"]
                target = keras.backend.standardize_dtype(v.dtype)
                if value.dtype.kind == "u" and target.startswith(("bfloat", "float8")):
                    value = value.view(np.asarray(keras.ops.convert_to_numpy(v)).dtype)
                v.assign(value)
            _backend.set_global_rng_state(
                [arrays[k] for k in sorted(arrays.files) if k.startswith("backend_rng")]
            )
            kind, *rest = checkpoint["numpy_rng"]
            np.random.set_state((kind, arrays["numpy_rng"], *rest))
        version, internal, gauss = checkpoint["python_rng"]
        python_random.setstate((version, tuple(internal), gauss))

    # ------------------------------------------------------------ hooks
    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        steps = self.params.get("steps")
        if not steps:
            raise ValueError("BackupAndResume needs fit(..., steps_per_epoch=len(generator)).")
        self._steps_per_epoch = int(steps)
        self._total = int(self.params["epochs"]) * self._steps_per_epoch
        self._first_batch = True
        if self._restore_pending:
            if int(self._checkpoint["steps_per_epoch"]) != self._steps_per_epoch:
                raise ValueError(
                    f"the checkpoint was taken with steps_per_epoch={self._checkpoint['steps_per_epoch']}; "
                    f"this fit() has {self._steps_per_epoch}."
                )
            _keras_compat.set_initial_epoch(self.model, self._step // self._steps_per_epoch)

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._in_epoch = 0

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self._first_batch:
            self._first_batch = False
            # The stream has started by now (not always by on_train_begin).
            if self.generator._stream_start is not self._stream_start:
                # A new stream, not the one a previous fit() stopped in.
                self._stream_start = self.generator._stream_start
                self._trained = 0
        if self._restore_pending:
            # Here, not in on_train_begin: every callback's on_train_begin has
            # run (an EMA callback wraps the optimizer there) and the
            # optimizer is built.
            if self.model.optimizer is not None and not self.model.optimizer.built:
                self.model.optimizer.build(self.model.trainable_variables)
            self._restore()
            self._restore_pending = False

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        done = batch + 1 - self._in_epoch  # several with steps_per_execution > 1
        self._in_epoch = batch + 1
        self._trained += done
        before, self._step = self._step, self._step + done
        if self.save_freq != "epoch" and self._step // self.save_freq > before // self.save_freq:
            self._save()
        if self._step >= self._total:
            # A resumed run: Keras would go on to the end of its last epoch.
            self.model.stop_training = True

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.save_freq == "epoch" and self._step < self._total:
            self._save()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self.delete_on_completion and self._step >= self._total:
            for path in glob.glob(os.path.join(self.backup_dir, "state-*.npz")) + [
                os.path.join(self.backup_dir, _LATEST)
            ]:
                if os.path.exists(path):
                    os.remove(path)
            self._checkpoint = None
