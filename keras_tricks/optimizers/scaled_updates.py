"""`ScaledUpdates`: each variable's update multiplied by a factor chosen by
its path (a per-group learning-rate multiplier that works on any Keras)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import keras
from keras import ops

from keras_tricks import _backend, _keras_compat, _validation
from keras_tricks._typing import Tensor
from keras_tricks.optimizers._wrapper import OptimizerWrapper


@keras.saving.register_keras_serializable(package="keras_tricks")
class ScaledUpdates(OptimizerWrapper):
    """Multiply each variable's update by a factor chosen by its path.

    After the wrapped optimizer turns `theta` into `theta'`, a variable whose
    path matches a pattern of `scales` (`re.fullmatch`, the first matching
    pattern wins; unmatched variables keep factor 1) becomes

        theta <- theta + c * (theta' - theta)

    For every optimizer whose update is proportional to its learning rate
    this is that variable trained at `c * learning_rate`: SGD (with
    momentum: its momentum buffer is then `1/c` times the scaled one's, the
    weights are the same), Adam, AdamW and its decoupled weight decay,
    Nadam, Adamax, RMSprop, Adagrad, Adadelta, Lion, Lamb. Not for Ftrl or
    Adafactor's relative step (`min(lr, 1/sqrt(t))`), whose update is not
    proportional to the learning rate. It is what `layerwise_lr_decay`
    returns on a Keras without `keras.optimizers.MultiOptimizer`; scaling
    the *gradients* instead would do nothing for Adam-like optimizers.

    A skipped step (loss scaling on an overflow, gradient accumulation
    between updates) leaves `theta' = theta` and stays skipped. The cost is
    one copy of the scaled variables during the step. It has no state of its
    own; the wrapped optimizer's is saved with it, and loading into a fresh
    optimizer keeps the values until it is built. Not supported under a
    `tf.distribute` strategy with more than one replica (a clear error);
    JAX's `keras.distribution` goes through the stateless update.

    Args:
        inner_optimizer: an unbuilt optimizer without `use_ema` (its average
            would follow the unscaled update).
        scales: `{path regex: factor >= 0}`, matched against `variable.path`
            (e.g. `".*encoder/block_0/.*"`: a path starts with the
            model's name).
        name: the wrapper's name.

    Example:

    >>> import keras
    >>> from keras_tricks.optimizers import ScaledUpdates
    >>> model = keras.Sequential(
    ...     [keras.Input((2,)), keras.layers.Dense(2, name="body"), keras.layers.Dense(1, name="head")]
    ... )
    >>> optimizer = ScaledUpdates(keras.optimizers.SGD(0.1), {".*body/.*": 0.5})
    >>> model.compile(optimizer=optimizer, loss="mse")
    >>> [optimizer.scale_for(v) for v in model.trainable_variables]
    [0.5, 0.5, 1.0, 1.0]
    """

    def __init__(
        self,
        inner_optimizer: keras.optimizers.Optimizer,
        scales: Mapping[str, float],
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        if kwargs:
            raise ValueError(
                f"ScaledUpdates does not take {sorted(kwargs)}; set them on the wrapped optimizer."
            )
        _validation.check_type(
            "inner_optimizer", inner_optimizer, keras.optimizers.Optimizer, "a keras.optimizers.Optimizer"
        )
        if inner_optimizer.built:
            raise ValueError("`inner_optimizer` is already built; wrap a fresh optimizer.")
        if getattr(inner_optimizer, "use_ema", False):
            raise ValueError(
                "`inner_optimizer` has use_ema=True: its average would follow the unscaled update. "
                "Use keras_tricks.callbacks.ExponentialMovingAverage around this optimizer instead."
            )
        if not isinstance(scales, Mapping) or not scales:
            raise TypeError(f"`scales` must be a non-empty dict {{path regex: factor}}, got {scales!r}.")
        checked = {}
        for pattern, factor in scales.items():
            if not isinstance(pattern, str):
                raise TypeError(f"`scales` keys must be path regexes (str), got {pattern!r}.")
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(f"`scales` key {pattern!r} is not a valid regex: {e}.") from None
            checked[pattern] = _validation.check_float(f"scales[{pattern!r}]", factor, minimum=0.0)
        super().__init__(learning_rate=0.0, name=name)
        self.inner_optimizer = inner_optimizer
        self.scales = checked
        self._set_state(targets=[], pending={})

    def scale_for(self, variable: keras.Variable) -> float:
        """The factor of `variable`'s update (1.0 when no pattern matches)."""
        path = getattr(variable, "path", None) or variable.name
        for pattern, factor in self.scales.items():
            if re.fullmatch(pattern, path):
                return factor
        return 1.0

    @_keras_compat.no_automatic_dependency_tracking
    def build(self, var_list: Iterable[keras.Variable]) -> None:
        if _backend.name() == "tensorflow":
            import tensorflow as tf

            if tf.distribute.has_strategy() and tf.distribute.get_strategy().num_replicas_in_sync > 1:
                raise NotImplementedError(
                    "ScaledUpdates does not support tf.distribute strategies with more than one replica "
                    "yet (keras.optimizers.MultiOptimizer, on Keras 3.15 and later, does)."
                )
        var_list = list(var_list)
        if not self.inner_optimizer.built:
            self.inner_optimizer.build(var_list)
        factors = [self.scale_for(v) for v in var_list]
        self._set_state(targets=[(i, c) for i, c in enumerate(factors) if c != 1.0])
        super().build(var_list)
        self._apply_pending()

    @property
    def variables(self) -> list[keras.Variable]:
        return self._variables[:] + self.inner_optimizer.variables

    def _scaled(self, old, new):
        """theta + c * (theta' - theta) for the scaled variables."""
        factors = [c for _, c in self._targets]
        return [o + ops.cast(c, o.dtype) * (ops.cast(n, o.dtype) - o) for o, n, c in zip(old, new, factors)]

    def apply(
        self, grads: Sequence[Tensor], trainable_variables: Sequence[keras.Variable] | None = None
    ) -> None:
        if not self.built:
            with keras.name_scope(self.name, caller=self):
                self.build(trainable_variables)
        if trainable_variables is None:
            trainable_variables = _keras_compat.optimizer_trainable_variables(self)
        targets = [trainable_variables[i] for i, _ in self._targets]
        # Copies: on PyTorch a variable's tensor is updated in place.
        before = [ops.copy(ops.convert_to_tensor(v)) for v in targets]
        self._inner_apply(grads, trainable_variables)
        for v, value in zip(targets, self._scaled(before, [v.value for v in targets])):
            v.assign(value)

    def stateless_apply(
        self,
        optimizer_variables: Sequence[Tensor],
        grads: Sequence[Tensor],
        trainable_variables: Sequence[Tensor],
    ) -> tuple[list[Tensor], list[Tensor]]:
        own = len(self._variables)
        new_trainable, new_inner, _ = self._inner_stateless_apply(
            optimizer_variables, grads, trainable_variables
        )
        new_trainable = list(new_trainable)
        old = [ops.convert_to_tensor(trainable_variables[i]) for i, _ in self._targets]
        for (i, _), value in zip(
            self._targets, self._scaled(old, [new_trainable[i] for i, _ in self._targets])
        ):
            new_trainable[i] = value
        # LossScaleOptimizer passes our own variables themselves (read through
        # its StatelessScope): hand back their values.
        own_values = [ops.convert_to_tensor(v) for v in optimizer_variables[:own]]
        return new_trainable, own_values + list(new_inner)

    # ----------------------------------------------------- saving / loading

    def save_own_variables(self, store: dict[str, Any]) -> None:
        if not self.built:
            store.update(self._pending)
            return
        self._save_inner(store)

    @_keras_compat.no_automatic_dependency_tracking
    def load_own_variables(self, store: dict[str, Any]) -> None:
        self._pending = {k: store[k] for k in store.keys()}
        self._apply_pending()

    @_keras_compat.no_automatic_dependency_tracking
    def _apply_pending(self):
        if self._pending and self.built:
            self._load_inner(self._pending)
            self._pending = {}

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "inner_optimizer": keras.saving.serialize_keras_object(self.inner_optimizer),
            "scales": dict(self.scales),
        }
