"""`ExponentialMovingAverageOptimizer`: an optimizer wrapper that keeps an
exponential moving average of the weights it updates (the engine of the
`callbacks.ExponentialMovingAverage` callback)."""

from __future__ import annotations

import contextlib
import hashlib
import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_tricks import _backend, _keras_compat, _numerics
from keras_tricks._typing import Tensor
from keras_tricks.optimizers._wrapper import OptimizerWrapper, _eager_scope

_VARIABLES = ("trainable", "all")
_WEIGHTS = ("ema", "raw")


def _validate_momentum(momentum):
    if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real):
        raise ValueError(
            f"`momentum` must be a number in [0, 1), got {momentum!r} of type {type(momentum).__name__}."
        )
    momentum = float(momentum)
    if not (0.0 <= momentum < 1.0) or math.isnan(momentum):
        raise ValueError(f"`momentum` must be in [0, 1), got {momentum!r}.")
    if np.float32(momentum) >= np.float32(1.0):
        # The averages are float32: a momentum that rounds to 1 there would
        # never move them (and, with bias correction, divide by zero).
        raise ValueError(
            f"`momentum`={momentum!r} rounds to 1.0 in float32, so the average "
            "would never change; use a value <= 1 - 2**-24."
        )
    return momentum


def _validate_choice(name, value, choices):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"`{name}` must be one of {choices}, got {value!r}.")
    return value


def _validate_bool(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"`{name}` must be True or False, got {value!r}.")
    return bool(value)


def _fingerprint(values):
    """A digest of each array's exact bits (dtype and shape included), to tell
    later whether a variable still holds exactly the value assigned to it."""
    out = []
    for value in values:
        value = np.ascontiguousarray(value)
        h = hashlib.blake2b(digest_size=16)
        h.update(f"{value.dtype.str}{value.dtype.name}{value.shape}".encode())
        h.update(value.reshape(-1).view(np.uint8).data)
        out.append(h.digest())
    return out


def _momentum_at(momentum, warmup, step):
    """m_t for the update that follows `step` earlier updates (a tensor)."""
    m = ops.convert_to_tensor(momentum, "float32")
    if warmup:
        t = ops.cast(step, "float32")
        m = ops.minimum(m, (1.0 + t) / (10.0 + t))
    return m


@contextlib.contextmanager
def _strategy_scope(strategy):
    if strategy is None:
        yield
    else:
        with strategy.scope():
            yield


@keras.saving.register_keras_serializable(package="keras_tricks")
class ExponentialMovingAverageOptimizer(OptimizerWrapper):
    """Wraps an optimizer and keeps an EMA of the weights inside its step.

    This is the machinery behind the `ExponentialMovingAverage` callback,
    which installs it on `model.optimizer`; users normally never build it by
    hand. It owns the state that must travel with the model: the step count
    `t`, the bias-correction denominator and one float32 average per averaged
    variable. The update runs right after the wrapped optimizer's update,
    inside the compiled train step (TensorFlow graph, JAX `jit`, PyTorch
    step), so it costs a few fused elementwise ops per variable and no
    host round trip.

    The EMA steps only when the wrapped optimizer applied an update (its
    `iterations` moved): not on the accumulating steps of
    `gradient_accumulation_steps=N`, nor on a step a `LossScaleOptimizer`
    skips for non-finite gradients (on PyTorch that check is a host sync,
    as Keras's own accumulation and loss scaling are).

    Its state is saved by `model.save()` / `save_weights()` /
    `ModelCheckpoint` together with the wrapped optimizer's, under keys of its
    own; loading into an optimizer that is not built yet keeps the values
    aside and assigns them when it is built (Keras's own optimizers warn and
    drop them).
    """

    def __init__(
        self,
        inner_optimizer: keras.optimizers.Optimizer,
        momentum: float = 0.999,
        warmup: bool = True,
        bias_correction: bool = False,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        if kwargs:
            raise ValueError(
                "ExponentialMovingAverageOptimizer does not take "
                f"{sorted(kwargs)}; set them on the wrapped optimizer."
            )
        if not isinstance(inner_optimizer, keras.optimizers.Optimizer):
            raise ValueError(
                f"`inner_optimizer` must be a keras.optimizers.Optimizer, got {inner_optimizer!r}."
            )
        if getattr(inner_optimizer, "use_ema", False):
            raise ValueError(
                "The optimizer already has `use_ema=True`: two EMAs would fight "
                "over the weights at the end of fit(). Drop `use_ema` from it."
            )
        super().__init__(learning_rate=0.0, name=name)
        self.inner_optimizer = inner_optimizer
        self.momentum = _validate_momentum(momentum)
        self.warmup = _validate_bool("warmup", warmup)
        self.bias_correction = _validate_bool("bias_correction", bias_correction)
        if _backend.name() == "tensorflow":
            # Our variables must be mirrored exactly like the wrapped ones.
            _keras_compat.set_optimizer_distribution_strategy(
                self, _keras_compat.optimizer_distribution_strategy(inner_optimizer)
            )
        self._set_state(
            averaged=[], averages=[], extra=[], extra_averages=[], pending={}, backup=None, swapped_in=None
        )

    # ------------------------------------------------------------------ state

    def _strategy(self):
        if _backend.name() != "tensorflow":
            return None
        import tensorflow as tf

        strategy = _keras_compat.optimizer_distribution_strategy(self)
        return None if strategy is tf.distribute.get_strategy() else strategy

    @_keras_compat.no_automatic_dependency_tracking
    def build(self, var_list: Iterable[keras.Variable]) -> None:
        var_list = list(var_list)
        if not self.inner_optimizer.built:
            self.inner_optimizer.build(var_list)
        with _eager_scope(), _strategy_scope(self._strategy()):
            self._ema_step = self.add_variable((), initializer="zeros", dtype="int", name="ema_step")
            self._ema_debias = self.add_variable((), initializer="zeros", dtype="float32", name="ema_debias")
            averages = [self._new_average(v, track=True) for v in var_list]
        self._set_state(averaged=var_list, averages=averages)
        super().build(var_list)
        provider = getattr(self, "_extra_provider", None)
        if provider is not None:
            self.attach_extra_variables(provider())
        self._apply_pending()

    def _new_average(self, variable, track):
        # One float32 copy per averaged variable: the "exactly one extra copy".
        # Starting from the current weights makes the warm-up-free average
        # unbiased; with bias correction it must start from zero. The average
        # takes its variable's layout (keras.distribution): a sharded kernel
        # gets a sharded average, not a full copy on every device.
        layout = _keras_compat.variable_layout(variable)
        if track:
            avg = self.add_variable(
                variable.shape,
                initializer="zeros",
                dtype="float32",
                layout=layout,
                name=variable.path.replace("/", "_") + "_average",
            )
        else:
            avg = keras.Variable(
                np.zeros(variable.shape, "float32"),
                trainable=False,
                name=variable.path.replace("/", "_") + "_average",
                **({} if layout is None else {"layout": layout}),
            )
        if not self.bias_correction:
            # Through NumPy: a fresh buffer (JAX would otherwise share the
            # variable's, and its train step donates each buffer once).
            avg.assign(np.array(ops.convert_to_numpy(variable), "float32"))
        return avg

    @_keras_compat.no_automatic_dependency_tracking
    def attach_extra_variables(self, variables: Iterable[keras.Variable]) -> None:
        """Also average these (non-trainable) variables, e.g. BatchNorm stats.

        Their averages are kept outside `optimizer.variables` (the JAX train
        step never sees the new non-trainable values, so they are updated by
        the callback there) but are saved and loaded with the rest.
        """
        variables = [v for v in variables if _numerics.is_float(v.dtype)]
        known = {id(v) for v in self._extra}
        new = [v for v in variables if id(v) not in known]
        if not new:
            return
        with _eager_scope(), _strategy_scope(self._strategy()):
            averages = [self._new_average(v, track=False) for v in new]
        self._set_state(extra=self._extra + new, extra_averages=self._extra_averages + averages)
        self._apply_pending()

    @property
    def averaged_variables(self) -> list[keras.Variable]:
        """The model variables averaged, in the order of `average_variables`."""
        return list(self._averaged) + list(self._extra)

    @property
    def average_variables(self) -> list[keras.Variable]:
        """The float32 averages (before bias correction)."""
        return list(self._averages) + list(self._extra_averages)

    @property
    def ema_step(self) -> keras.Variable:
        return self._ema_step

    @property
    def variables(self) -> list[keras.Variable]:
        return self._variables[:] + self.inner_optimizer.variables

    # --------------------------------------------------------------- updates

    def _update_ema(self, pairs, applied=None):
        """avg <- m_t * avg + (1 - m_t) * var for each pair; then t <- t + 1.

        `applied` (a boolean tensor, or None for always): whether the wrapped
        optimizer applied an update this step; when not, nothing changes."""
        if _backend.name() == "tensorflow":
            import tensorflow as tf

            def merge_fn(distribution, pairs, applied):
                if applied is not None:
                    # The same on every replica (the gradients are
                    # all-reduced): take the first, as LossScaleOptimizer does.
                    applied = distribution.experimental_local_results(applied)[0]
                m = _momentum_at(self.momentum, self.warmup, self._ema_step.value)
                c = 1.0 - m

                def keep_unless_applied(new, old):
                    return new if applied is None else tf.where(applied, new, old)

                def update(avg, var, m, c):
                    avg.assign(keep_unless_applied(m * avg + c * tf.cast(var, avg.dtype), avg))

                for avg, var in pairs:
                    distribution.extended.update(avg.value, update, args=(var.value, m, c), group=False)
                if self.bias_correction:
                    distribution.extended.update(
                        self._ema_debias.value,
                        lambda d, m: d.assign(keep_unless_applied(m * d + (1.0 - m), d)),
                        args=(m,),
                        group=False,
                    )
                one = 1 if applied is None else tf.cast(applied, self._ema_step.dtype)
                distribution.extended.update(
                    self._ema_step.value, lambda s, one: s.assign_add(one), args=(one,), group=False
                )

            _keras_compat.tf_maybe_merge_call(
                merge_fn, _keras_compat.optimizer_distribution_strategy(self), pairs, applied
            )
            return
        if applied is not None and _backend.name() == "torch":
            # PyTorch runs eagerly, and Keras's own accumulation and loss
            # scaling already branch on the host here: do the same.
            if not bool(applied):
                return
            applied = None
        m = _momentum_at(self.momentum, self.warmup, self._ema_step)
        if pairs:
            _backend.ema_update([a for a, _ in pairs], [v for _, v in pairs], m, applied)
        if self.bias_correction:
            debias = m * self._ema_debias + (1.0 - m)
            if applied is not None:
                debias = ops.where(applied, debias, ops.convert_to_tensor(self._ema_debias))
            self._ema_debias.assign(debias)
        self._ema_step.assign_add(1 if applied is None else ops.cast(applied, self._ema_step.dtype))

    def _pairs(self, include_extra):
        pairs = list(zip(self._averages, self._averaged))
        if include_extra:
            pairs += list(zip(self._extra_averages, self._extra))
        return pairs

    def apply(
        self, grads: Sequence[Tensor], trainable_variables: Sequence[keras.Variable] | None = None
    ) -> None:
        applied = self._inner_apply(grads, trainable_variables)
        # Non-trainable variables (BatchNorm statistics) already hold this
        # step's values here on TensorFlow and PyTorch.
        self._update_ema(self._pairs(include_extra=True), applied)

    def stateless_apply(
        self,
        optimizer_variables: Sequence[Tensor],
        grads: Sequence[Tensor],
        trainable_variables: Sequence[Tensor],
    ) -> tuple[list[Tensor], list[Tensor]]:
        own = len(self._variables)
        new_trainable, new_inner, applied = self._inner_stateless_apply(
            optimizer_variables, grads, trainable_variables
        )
        mapping = list(zip(self._variables, optimizer_variables[:own]))
        mapping += list(zip(self._averaged, new_trainable))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            self._update_ema(self._pairs(include_extra=False), applied)
        new_own = [scope.get_current_value(v) for v in self._variables]
        return new_trainable, new_own + list(new_inner)

    def update_extra_from_values(
        self, values: Sequence[Tensor], step_after: Tensor, step_before: Tensor
    ) -> None:
        """JAX: update the extra averages from this step's non-trainable values
        (`values`, aligned with `attach_extra_variables`), `step_before` and
        `step_after` being the EMA step count before and after the step (equal
        when the wrapped optimizer applied no update: then nothing changes)."""
        if not self._extra:
            return
        fn = getattr(self, "_jax_extra_fn", None)
        if fn is None:
            import jax

            momentum, warmup = self.momentum, self.warmup

            def fn(avgs, vals, step_after, step_before):
                m = _momentum_at(momentum, warmup, step_after - 1)
                applied = step_after != step_before
                return [
                    ops.where(applied, m * a + (1.0 - m) * v.astype(a.dtype), a) for a, v in zip(avgs, vals)
                ]

            fn = jax.jit(fn)
            self._set_state(jax_extra_fn=fn)
        new = fn([a.value for a in self._extra_averages], values, step_after, step_before)
        for avg, value in zip(self._extra_averages, new):
            avg.assign(value)

    # ------------------------------------------------------- delegation

    def finalize_variable_values(self, var_list: Sequence[keras.Variable]) -> None:
        # Called by fit() after the last epoch and before any on_train_end:
        # the callback has put its hook here so that what the model holds is
        # settled before EarlyStopping & co. restore anything.
        hook = getattr(self, "_finalize_hook", None)
        if hook is not None:
            hook()
        self.inner_optimizer.finalize_variable_values(var_list)

    # --------------------------------------------------------- swapping

    @property
    def holds_ema(self) -> bool:
        """True while the model holds the EMA weights (raw ones kept aside).

        Call `settle()` first to take into account weights written by anything
        else (EarlyStopping, load_weights, ...) since they were swapped in."""
        return self._backup is not None

    def ema_values(self) -> list[np.ndarray]:
        """The EMA weights (bias-corrected when asked), as NumPy arrays."""
        values = []
        debias = float(ops.convert_to_numpy(self._ema_debias)) if self.built else 0.0
        for var, avg in zip(self.averaged_variables, self.average_variables):
            if self.bias_correction:
                if debias > 0.0:
                    value = ops.convert_to_numpy(avg) / np.float32(debias)
                else:  # no update yet: the EMA of nothing is the weights
                    value = ops.convert_to_numpy(var) if self._backup is None else self._backup[len(values)]
            else:
                value = ops.convert_to_numpy(avg)
            values.append(np.asarray(value).astype(keras.backend.standardize_dtype(var.dtype)))
        return values

    def _written_since_swap_in(self):
        """True when the model's weights are no longer, bit for bit, the EMA
        weights that `swap_in` put there (someone else wrote them)."""
        if self._backup is None or self._swapped_in is None:
            return False
        current = [np.array(ops.convert_to_numpy(v)) for v in self.averaged_variables]
        return _fingerprint(current) != self._swapped_in

    @_keras_compat.no_automatic_dependency_tracking
    def settle(self) -> bool:
        """Take in weights written by anything else while the EMA weights were
        in the model: they stay, and the raw weights kept aside are dropped
        (so no later swap reverts them). Returns True when that happened."""
        if self._written_since_swap_in():
            self.discard_raw()
            return True
        return False

    @_keras_compat.no_automatic_dependency_tracking
    def swap_in(self) -> None:
        """Put the EMA weights in the model, keeping the raw ones aside."""
        if not self.built:
            return
        self.settle()
        if self._backup is not None:
            return
        variables = self.averaged_variables
        ema = self.ema_values()
        backup = [np.array(ops.convert_to_numpy(v)) for v in variables]
        with _strategy_scope(self._strategy()):
            for v, value in zip(variables, ema):
                v.assign(value)
        self._backup = backup
        self._swapped_in = _fingerprint(ema)

    @_keras_compat.no_automatic_dependency_tracking
    def swap_out(self) -> None:
        """Put the raw weights back, bit for bit, unless something else wrote
        the model's weights since `swap_in` (then those stay, see `settle`)."""
        if self._backup is None or self.settle():
            return
        with _strategy_scope(self._strategy()):
            for v, value in zip(self.averaged_variables, self._backup):
                v.assign(value)
        self.discard_raw()

    @_keras_compat.no_automatic_dependency_tracking
    def discard_raw(self) -> None:
        """Keep whatever the model holds and forget the raw weights."""
        self._backup = None
        self._swapped_in = None

    # ----------------------------------------------------- saving / loading

    def save_own_variables(self, store: dict[str, Any]) -> None:
        if not self.built:
            for key, value in self._pending.items():
                store[key] = value
            return
        self.settle()  # raw weights made stale by e.g. EarlyStopping are not saved
        store["ema_step"] = ops.convert_to_numpy(self._ema_step)
        store["ema_debias"] = ops.convert_to_numpy(self._ema_debias)
        for i, avg in enumerate(self.average_variables):
            store[f"average_{i}"] = ops.convert_to_numpy(avg)
        if self._backup is not None:
            # The model's weights are the EMA ones right now; keep the raw ones
            # so that a resumed fit() continues from them.
            for i, value in enumerate(self._backup):
                store[f"raw_{i}"] = value
        for i, v in enumerate(self.inner_optimizer.variables):
            store[f"inner_{i}"] = ops.convert_to_numpy(v)

    @_keras_compat.no_automatic_dependency_tracking
    def load_own_variables(self, store: dict[str, Any]) -> None:
        # Loading writes the model's weights too: raw weights kept aside from
        # before are stale now. The file's own, if any, come in below.
        self.discard_raw()
        self._pending = {k: np.array(store[k]) for k in store.keys()}
        self._apply_pending()

    @_keras_compat.no_automatic_dependency_tracking
    def _apply_pending(self):
        pending = self._pending
        if not pending or not self.built:
            return
        with _eager_scope(), _strategy_scope(self._strategy()):
            for key, var in (("ema_step", self._ema_step), ("ema_debias", self._ema_debias)):
                if key in pending:
                    var.assign(pending.pop(key))
            for i, avg in enumerate(self.average_variables):
                key = f"average_{i}"
                if key in pending:
                    value = pending.pop(key)
                    if tuple(value.shape) != tuple(avg.shape):
                        raise ValueError(
                            f"The saved EMA average {i} has shape {value.shape}, "
                            f"but the variable it averages has shape {tuple(avg.shape)}."
                        )
                    avg.assign(value)
            inner_keys = sorted(
                (k for k in pending if k.startswith("inner_")), key=lambda k: int(k.split("_")[1])
            )
            inner_vars = self.inner_optimizer.variables
            if inner_keys and len(inner_keys) == len(inner_vars):
                for key, var in zip(inner_keys, inner_vars):
                    var.assign(pending.pop(key))
        # The raw weights go back only as a whole: wait until the extra
        # (non-trainable) averaged variables, if any were saved, are attached.
        raw_keys = [f"raw_{i}" for i in range(len(self.averaged_variables))]
        saved_raw = sum(k.startswith("raw_") for k in pending)
        if raw_keys and saved_raw == len(raw_keys) and all(k in pending for k in raw_keys):
            self._backup = [pending.pop(k) for k in raw_keys]
            # The file's model weights are the EMA weights of its averages.
            self._swapped_in = _fingerprint(self.ema_values())

    # --------------------------------------------------------------- config

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "inner_optimizer": keras.saving.serialize_keras_object(self.inner_optimizer),
            "momentum": self.momentum,
            "warmup": self.warmup,
            "bias_correction": self.bias_correction,
        }
