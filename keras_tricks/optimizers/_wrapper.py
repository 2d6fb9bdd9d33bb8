"""`OptimizerWrapper`: what every optimizer that wraps another one shares
(`ExponentialMovingAverageOptimizer`, `Lookahead`): the delegation to the
wrapped optimizer, state attributes kept out of Keras's tracking, and the
helpers that tell whether the wrapped optimizer applied an update."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

import keras
from keras import ops

from keras_tricks import _backend, _keras_compat
from keras_tricks._typing import Tensor


def _may_skip_updates(optimizer):
    """Whether `optimizer.apply` may leave the weights alone on some steps:
    gradient accumulation (the weights move every N-th call) or loss scaling
    (a step with non-finite gradients is skipped), anywhere in the chain of
    wrapped optimizers."""
    while optimizer is not None:
        if getattr(optimizer, "gradient_accumulation_steps", None) or isinstance(
            optimizer, keras.optimizers.LossScaleOptimizer
        ):
            return True
        optimizer = getattr(optimizer, "inner_optimizer", None)
    return False


def _applied(before, after):
    """A boolean tensor: the wrapped optimizer's `iterations` (the count of
    *applied* updates: Keras floor-divides it by the accumulation steps, and a
    loss-scale step that is skipped does not count) moved during this step."""
    return ops.not_equal(after, before)


@contextlib.contextmanager
def _eager_scope():
    """Create and initialise variables eagerly even when the optimizer is
    built lazily inside the first traced TensorFlow step."""
    if _backend.name() == "tensorflow":
        import tensorflow as tf

        with tf.init_scope():
            yield
    else:
        yield


class OptimizerWrapper(keras.optimizers.Optimizer):
    """Base of the optimizers that wrap `self.inner_optimizer`: the learning
    rate, `iterations` and loss scaling are the wrapped optimizer's; the
    subclass adds its own state and saves the wrapped optimizer's with it."""

    @_keras_compat.no_automatic_dependency_tracking
    def _set_state(self, **attrs):
        for key, value in attrs.items():
            setattr(self, "_" + key, value)

    def __dir__(self):
        # Keras's saving walks `dir(optimizer)` and would also save and load
        # the wrapped optimizer on its own, warning and dropping its state when
        # it is not built yet. Its state is saved by the subclass instead (with
        # deferred loading), so hide it from that walk.
        return [a for a in super().__dir__() if a != "inner_optimizer"]

    @property
    def learning_rate(self) -> Tensor:
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate: float | keras.optimizers.schedules.LearningRateSchedule) -> None:
        self.inner_optimizer.learning_rate = learning_rate

    @property
    def iterations(self) -> keras.Variable:
        return self.inner_optimizer.iterations

    def scale_loss(self, loss: Tensor) -> Tensor:
        return self.inner_optimizer.scale_loss(loss)

    def finalize_variable_values(self, var_list: Sequence[keras.Variable]) -> None:
        self.inner_optimizer.finalize_variable_values(var_list)

    def _inner_apply(
        self, grads: Sequence[Tensor], trainable_variables: Sequence[keras.Variable] | None
    ) -> Any:
        """Build on first use, let the wrapped optimizer apply `grads`, and
        return whether it applied them: a boolean tensor where the wrapped
        optimizer may skip a step (a LossScaleOptimizer on an overflow,
        gradient accumulation), None where it always applies."""
        if not self.built:
            with keras.name_scope(self.name, caller=self):
                self.build(trainable_variables)
        skip = _may_skip_updates(self.inner_optimizer)
        # A copy (on PyTorch a variable's tensor is updated in place).
        before = ops.copy(ops.convert_to_tensor(self.inner_optimizer.iterations)) if skip else None
        self.inner_optimizer.apply(grads, trainable_variables)
        return _applied(before, ops.convert_to_tensor(self.inner_optimizer.iterations)) if skip else None

    def _inner_stateless_apply(
        self,
        optimizer_variables: Sequence[Tensor],
        grads: Sequence[Tensor],
        trainable_variables: Sequence[Tensor],
    ) -> tuple[list[Tensor], list[Tensor], Any]:
        """The wrapped optimizer's `stateless_apply` on its part of
        `optimizer_variables` (those after the wrapper's own): (new trainable
        values, its new variables, applied or None as in `_inner_apply`)."""
        own = len(self._variables)
        inner = self.inner_optimizer

        def inner_iterations(values):
            with keras.StatelessScope(state_mapping=list(zip(inner.variables, values))):
                return ops.convert_to_tensor(inner.iterations)

        skip = _may_skip_updates(inner)
        before = inner_iterations(optimizer_variables[own:]) if skip else None
        new_trainable, new_inner = inner.stateless_apply(
            optimizer_variables[own:], grads, trainable_variables
        )
        applied = _applied(before, inner_iterations(new_inner)) if skip else None
        return new_trainable, new_inner, applied

    # ----------------------------------------------------- saving / loading

    def _save_inner(self, store: dict[str, Any]) -> None:
        """The wrapped optimizer's variables, as `inner_<i>` entries."""
        for i, v in enumerate(self.inner_optimizer.variables):
            store[f"inner_{i}"] = ops.convert_to_numpy(v)

    def _inner_keys(self, pending: Mapping[str, Any]) -> list[str]:
        """The `inner_<i>` keys of `pending` in order, checked against the
        wrapped optimizer's variables (before anything is assigned)."""
        keys = sorted((k for k in pending if k.startswith("inner_")), key=lambda k: int(k.split("_")[1]))
        variables = self.inner_optimizer.variables
        if len(keys) != len(variables):
            raise ValueError(
                f"The saved state of the wrapped optimizer has {len(keys)} variables, "
                f"but {type(self.inner_optimizer).__name__} here has {len(variables)}."
            )
        return keys

    def _load_inner(self, pending: Mapping[str, Any], keys: Sequence[str] | None = None) -> None:
        """Assign the `inner_<i>` entries of `pending` (a built optimizer)."""
        keys = self._inner_keys(pending) if keys is None else keys
        with _eager_scope():
            for key, var in zip(keys, self.inner_optimizer.variables):
                var.assign(pending[key])

    # --------------------------------------------------------------- config

    @classmethod
    def from_config(
        cls, config: dict[str, Any], custom_objects: dict[str, Any] | None = None
    ) -> OptimizerWrapper:
        config = dict(config)
        inner = keras.saving.deserialize_keras_object(
            config.pop("inner_optimizer"), custom_objects=custom_objects
        )
        return cls(inner, **config)
