"""Exponential moving average (EMA) of model weights, one line in `fit()`.

The averaging itself is `keras_tricks.optimizers.ExponentialMovingAverageOptimizer`,
which this callback puts around the model's optimizer."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_tricks import _backend, _keras_compat
from keras_tricks.optimizers.exponential_moving_average import (
    _VARIABLES,
    _WEIGHTS,
    ExponentialMovingAverageOptimizer,
    _validate_bool,
    _validate_choice,
    _validate_momentum,
)


@keras.saving.register_keras_serializable(package="keras_tricks")
class ExponentialMovingAverage(keras.callbacks.Callback):
    """Exponential moving average of the weights, validated and saved for you.

    After each training step (inside the compiled step, for every variable
    averaged):

        m_t       = min(momentum, (1 + t) / (10 + t))   if warmup else momentum
        avg_{t+1} = m_t * avg_t + (1 - m_t) * theta_{t+1}
        t         = number of updates before this one (0, 1, 2, ...)

    with `avg_0 = theta_0` (the weights when training starts). With
    `bias_correction=True` the average starts at `avg_0 = 0` instead and the
    EMA weights are `avg_t / d_t` with `d_{t+1} = m_t * d_t + (1 - m_t)`
    (`d_t = 1 - prod m_i`, computed this way so that it never rounds to 0);
    before the first update the EMA weights are the weights themselves, so
    nothing is ever divided by zero. The warm-up is TensorFlow's
    `ExponentialMovingAverage(num_updates=t)`; averaging weights is Polyak
    averaging, used in bert4keras (`extend_with_exponential_moving_average`)
    and Su Jianlin's "making Keras cooler" post.

    One line in `fit()`: the callback wraps `model.optimizer` in an
    `ExponentialMovingAverageOptimizer` (any Keras optimizer works, including
    a `LossScaleOptimizer`), which owns the averages so that they run inside
    the compiled step and are saved with the model.

    What the model holds, and when:

    - during training steps: the raw weights, always;
    - in validation inside `fit()`, in `evaluate()` and `predict()` given this
      callback, and in every callback's `on_epoch_end` (`ModelCheckpoint`,
      `EarlyStopping(restore_best_weights=True)`, ...): the EMA weights
      (`evaluate_with="raw"` turns this off). The raw weights are put back,
      bit for bit, before the next training step;
    - after `fit()`: the EMA weights (`weights_after_fit="raw"` for the raw
      ones). `EarlyStopping(restore_best_weights=True)` then restores the best
      EMA weights, since it snapshots them at `on_epoch_end`.

    Weights written by anything else while the EMA weights are in the model
    (`EarlyStopping` restoring the best ones, `model.load_weights()` of a
    checkpoint, `model.set_weights()`) are never reverted: when the model no
    longer holds, bit for bit, the EMA weights put there, what it holds is
    kept as its weights and the raw weights kept aside are dropped. So after
    `EarlyStopping(restore_best_weights=True)` the model holds the best
    weights through `raw_weights()` / `ema_weights()` blocks, and a later
    `fit()` continues from them. Loading a file saved while the EMA weights
    were in (`ModelCheckpoint` at `on_epoch_end`, `BackupAndRestore`) brings
    its raw weights back with it; `keras.callbacks.SwapEMAWeights` works only
    with Keras's own `use_ema`, which is refused, and raises.

    The EMA steps once per update the wrapped optimizer applies (`t` counts
    those): with `gradient_accumulation_steps=N` once every N steps, on the
    weights of the applied update (Keras's own `use_ema` averages every
    micro-step), and not on a step a `LossScaleOptimizer` skips for
    non-finite gradients.

    Order in the callbacks list does not matter when `fit()` has validation
    data (the EMA weights go in at the start of validation); without
    validation data, put this callback before the callbacks that read the
    weights at `on_epoch_end`.

    The state (averages, step count, bias-correction denominator, and the
    raw weights while the model holds the EMA ones) is saved by
    `model.save()`, `model.save_weights()` and `ModelCheckpoint`, and
    restored by `keras.saving.load_model()` / `model.load_weights()` (even
    into a compiled model whose optimizer is not built yet). Training 2
    epochs, saving, loading in a fresh process and training 2 more with this
    callback gives the same EMA as 4 epochs in one go. To resume from a
    weights file into a freshly compiled model, call `ema.install(model)`
    before `model.load_weights(path)`, so that the EMA optimizer receives
    its state (`load_model()` of a `.keras` file needs nothing).

    Args:
        momentum: m in [0, 1), default 0.999 (an average over about
            1 / (1 - m) steps).
        warmup: use min(m, (1 + t) / (10 + t)) so that early averages are not
            dominated by the random initialisation. Default True.
        bias_correction: start from zero and divide by 1 - prod(m_i) (Adam's
            correction). Default False.
        variables: "trainable" (default) or "all", which also averages the
            float non-trainable variables such as BatchNorm statistics.
        evaluate_with: "ema" (default) or "raw": the weights validation,
            `evaluate()`, `predict()` and epoch-end callbacks see.
        weights_after_fit: "ema" (default) or "raw".

    Examples:
    >>> import numpy as np, keras, keras_tricks.callbacks
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer="adam", loss="mse")
    >>> x, y = np.ones((8, 4)), np.ones((8, 1))
    >>> ema = keras_tricks.callbacks.ExponentialMovingAverage(momentum=0.99)
    >>> _ = model.fit(x, y, epochs=2, verbose=0, callbacks=[ema])
    >>> with ema.raw_weights():  # the model holds the EMA weights otherwise
    ...     raw = model.get_weights()
    """

    def __init__(
        self,
        momentum: float = 0.999,
        warmup: bool = True,
        bias_correction: bool = False,
        variables: str = "trainable",
        evaluate_with: str = "ema",
        weights_after_fit: str = "ema",
        **kwargs: Any,
    ) -> None:
        if kwargs:
            raise ValueError(
                f"ExponentialMovingAverage got unknown options {sorted(kwargs)}; "
                "it takes momentum, warmup, bias_correction, variables, "
                "evaluate_with and weights_after_fit."
            )
        super().__init__()
        self.momentum = _validate_momentum(momentum)
        self.warmup = _validate_bool("warmup", warmup)
        self.bias_correction = _validate_bool("bias_correction", bias_correction)
        self.variables = _validate_choice("variables", variables, _VARIABLES)
        self.evaluate_with = _validate_choice("evaluate_with", evaluate_with, _WEIGHTS)
        self.weights_after_fit = _validate_choice("weights_after_fit", weights_after_fit, _WEIGHTS)
        self._in_fit = False
        self._swapped_by = None
        self._jax_last_step = None
        if _backend.name() == "jax" and self.variables == "all":
            # The JAX train step never hands the new non-trainable values to
            # the optimizer, so those averages are updated here after each
            # step. Set now, before fit() builds its CallbackList: a batch hook
            # makes Keras call the callbacks synchronously (in order, on the
            # live state) rather than on a worker thread. Only then, since it
            # costs a sync per step.
            self.on_train_batch_end = self._jax_update_extra

    # ------------------------------------------------------------ install

    def set_model(self, model: keras.Model) -> None:
        super().set_model(model)
        self.install(model)

    def install(self, model: keras.Model) -> ExponentialMovingAverageOptimizer | None:
        """Wrap `model.optimizer` (once) and return the wrapper, or None when
        the model has no optimizer (not compiled for training).

        `fit()` does this; call it yourself before `model.load_weights()` of
        a file saved with the EMA into a freshly compiled model."""
        optimizer = getattr(model, "optimizer", None)
        if optimizer is None:
            return None
        if isinstance(optimizer, ExponentialMovingAverageOptimizer):
            same = (optimizer.momentum, optimizer.warmup, optimizer.bias_correction) == (
                self.momentum,
                self.warmup,
                self.bias_correction,
            )
            if not same:
                if optimizer.built and int(ops.convert_to_numpy(optimizer.ema_step)) > 0:
                    raise ValueError(
                        "The model's optimizer already keeps an EMA with momentum="
                        f"{optimizer.momentum}, warmup={optimizer.warmup}, "
                        f"bias_correction={optimizer.bias_correction}; this callback "
                        f"asks for momentum={self.momentum}, warmup={self.warmup}, "
                        f"bias_correction={self.bias_correction}. Use the same "
                        "settings to continue it."
                    )
                optimizer.momentum = self.momentum
                optimizer.warmup = self.warmup
                optimizer.bias_correction = self.bias_correction
                self._reset_compiled(model)
            wrapper = optimizer
        else:
            wrapper = ExponentialMovingAverageOptimizer(
                optimizer, momentum=self.momentum, warmup=self.warmup, bias_correction=self.bias_correction
            )
            model.optimizer = wrapper
            compile_config = getattr(model, "_compile_config", None)
            if compile_config is not None:
                # So that model.save() records the wrapper, and load_model()
                # rebuilds it (and its state) without custom_objects.
                compile_config.config["optimizer"] = wrapper
                if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
                    # Under mixed_float16 compile() wrapped the optimizer in a
                    # LossScaleOptimizer, now inside ours; loading must not
                    # wrap ours in another one (scaling twice, state skipped).
                    compile_config.config["auto_scale_loss"] = False
            self._reset_compiled(model)
        if not wrapper.built and optimizer.built:
            # fit() built the wrapped optimizer just before calling us. An
            # optimizer never built stays so: load_weights() then defers the
            # saved state to the build that fit() does.
            wrapper.build(_keras_compat.optimizer_trainable_variables(optimizer))
        if self.variables == "all":
            wrapper._extra_provider = lambda: model.non_trainable_variables
            if wrapper.built:
                wrapper.attach_extra_variables(model.non_trainable_variables)
        wrapper._finalize_hook = self._finalize
        if (
            _backend.name() == "jax"
            and self.variables == "all"
            and getattr(model, "steps_per_execution", 1) != 1
        ):
            raise ValueError(
                "variables='all' on JAX needs steps_per_execution=1: the "
                "non-trainable averages are updated after each step."
            )
        return wrapper

    @staticmethod
    def _reset_compiled(model):
        # The compiled train step captured the old optimizer (and, on JAX,
        # the list of optimizer variables): build it again.
        model.train_function = None

    def _wrapper(self, model=None):
        model = model if model is not None else self._model_or_none()
        optimizer = getattr(model, "optimizer", None)
        if isinstance(optimizer, ExponentialMovingAverageOptimizer):
            return optimizer
        return None

    def _model_or_none(self):
        return getattr(self, "_model", None)

    def _jax_update_extra(self, batch, logs=None):
        model = self._model
        state = getattr(model, "_jax_state", None)
        wrapper = self._wrapper(model)
        if not state or wrapper is None:
            return
        index = {id(v): i for i, v in enumerate(model.non_trainable_variables)}
        values = [state["non_trainable_variables"][index[id(v)]] for v in wrapper._extra]
        step_index = next(i for i, v in enumerate(model.optimizer.variables) if v is wrapper.ema_step)
        step_after = state["optimizer_variables"][step_index]
        step_before = self._jax_last_step
        if step_before is None:  # not built at on_train_begin: it started at 0
            step_before = step_after - 1
        wrapper.update_extra_from_values(values, step_after, step_before)
        self._jax_last_step = ops.copy(step_after)  # the next step donates step_after

    # ---------------------------------------------------------- swapping

    def _swap_in(self, who):
        wrapper = self._wrapper()
        if wrapper is None or self.evaluate_with != "ema":
            return
        self.model  # on JAX, reading .model syncs the training state first
        if wrapper.built:
            wrapper.settle()
        if wrapper.holds_ema:
            return
        wrapper.swap_in()
        self._swapped_by = who

    def _swap_out(self, who=None):
        wrapper = self._wrapper()
        if wrapper is None:
            return
        if who is not None and self._swapped_by != who:
            return
        self.model
        wrapper.swap_out()
        self._swapped_by = None

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._in_fit = True
        self._swap_out()  # e.g. resumed from a checkpoint saved with EMA in
        wrapper = self._wrapper()
        # JAX, variables="all": the step count before each step, to tell the
        # steps that applied an update (a skipped one does not count).
        self._jax_last_step = (
            np.array(ops.convert_to_numpy(wrapper.ema_step))
            if wrapper is not None and wrapper.built
            else None
        )

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._swap_out()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._swap_in("epoch")

    def _finalize(self):
        wrapper = self._wrapper()
        if wrapper is None or not self._in_fit:
            return
        if self.weights_after_fit == "ema":
            # Keep the raw weights aside so that a later fit() or a checkpoint
            # resumes from them.
            if not wrapper.holds_ema:
                self.model
                wrapper.swap_in()
        else:
            self.model
            wrapper.swap_out()
        self._swapped_by = None

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self._in_fit = False

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._swap_in("test")

    def on_test_end(self, logs: dict[str, Any] | None = None) -> None:
        if not self._in_fit:  # inside fit(), keep them for on_epoch_end
            self._swap_out("test")

    def on_predict_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._swap_in("predict")

    def on_predict_end(self, logs: dict[str, Any] | None = None) -> None:
        self._swap_out("predict")

    # ------------------------------------------------- context managers

    @contextlib.contextmanager
    def ema_weights(self, model: keras.Model | None = None) -> Iterator[None]:
        """Within the block the model holds the EMA weights; on exit it holds
        what it held before (bit for bit), including weights another callback
        wrote (see the class docstring)."""
        with self._holding(model, ema=True):
            yield

    @contextlib.contextmanager
    def raw_weights(self, model: keras.Model | None = None) -> Iterator[None]:
        """Within the block the model holds the raw (trained) weights; on exit
        it holds what it held before (bit for bit). After weights written by
        something else (e.g. EarlyStopping's best ones), those are the raw
        weights."""
        with self._holding(model, ema=False):
            yield

    @contextlib.contextmanager
    def _holding(self, model, ema):
        model = model if model is not None else self._model_or_none()
        if model is None:
            raise ValueError("No model: pass `model=` or use the callback in fit() first.")
        wrapper = self._wrapper(model) or self.install(model)
        if wrapper is None or not wrapper.built:
            raise ValueError(
                "The model keeps no EMA yet: compile it and train it with this "
                "callback (or load a model saved with it)."
            )
        wrapper.settle()  # e.g. EarlyStopping restored weights since the swap
        before = wrapper.holds_ema
        (wrapper.swap_in if ema else wrapper.swap_out)()
        try:
            yield
        finally:
            if before != wrapper.holds_ema:
                (wrapper.swap_in if before else wrapper.swap_out)()

    def get_config(self) -> dict[str, Any]:
        return {
            "momentum": self.momentum,
            "warmup": self.warmup,
            "bias_correction": self.bias_correction,
            "variables": self.variables,
            "evaluate_with": self.evaluate_with,
            "weights_after_fit": self.weights_after_fit,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ExponentialMovingAverage:
        return cls(**config)
