"""`Lookahead`: the optimizer wrapper of Zhang et al. 2019 (slow weights that
follow the fast ones every k steps)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_tricks import _backend, _keras_compat, _validation
from keras_tricks._typing import Tensor
from keras_tricks.optimizers._wrapper import OptimizerWrapper, _eager_scope


@keras.saving.register_keras_serializable(package="keras_tricks")
class Lookahead(OptimizerWrapper):
    """Lookahead (Zhang et al. 2019, "Lookahead Optimizer: k steps forward,
    1 step back", arXiv:1907.08610) around any Keras optimizer.

    The wrapped ("fast") optimizer updates the weights `theta` as usual. The
    wrapper keeps one slow copy `phi` of every weight, equal to `theta` when
    it is built, and after every `k`-th update of the fast optimizer

        phi   <- phi + alpha * (theta - phi)
        theta <- phi

    (the fast weights start again from the new slow weights; the fast
    optimizer's own state, e.g. Adam's moments, is kept, as in the paper and
    in bert4keras's `extend_with_lookahead`). The update runs inside the
    compiled train step, under a `cond`: the k - 1 steps in between cost a
    counter increment.

    `k` counts *applied* updates of the wrapped optimizer: with
    `gradient_accumulation_steps=N` on it, N micro-batches make one update,
    so the slow weights move every `k * N` micro-batches; a step that a
    `LossScaleOptimizer` skips for non-finite gradients does not count.
    Under mixed precision `compile()` puts the `LossScaleOptimizer` around
    this wrapper, which is what it expects. The EMA callback
    (`callbacks.ExponentialMovingAverage`) wraps it in turn and averages the
    weights after the Lookahead step.

    Its state (the step count and the slow weights, in the weights' dtype)
    is saved by `model.save()` / `save_weights()` / `ModelCheckpoint` with
    the wrapped optimizer's state, so that a resumed `fit()` continues
    bit for bit as an uninterrupted one. Not supported under a
    `tf.distribute` strategy (a clear error says so); JAX's
    `keras.distribution` works (the update is stateless there).

    Args:
        inner_optimizer: the fast optimizer (any `keras.optimizers.Optimizer`).
        k: the number of fast updates between two slow updates (paper: 5).
        alpha: the slow step size, in (0, 1] (paper: 0.5; 1 is the plain
            fast optimizer).
        name: the wrapper's name.

    Example:

    >>> import keras
    >>> from keras_tricks.optimizers import Lookahead
    >>> optimizer = Lookahead(keras.optimizers.Adam(1e-3), k=5, alpha=0.5)
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer=optimizer, loss="mse")
    >>> _ = model.fit(keras.ops.ones((8, 3)), keras.ops.zeros((8, 1)), epochs=1, verbose=0)
    >>> int(keras.ops.convert_to_numpy(optimizer.lookahead_step))
    1
    """

    def __init__(
        self,
        inner_optimizer: keras.optimizers.Optimizer,
        k: int = 5,
        alpha: float = 0.5,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        if kwargs:
            raise ValueError(f"Lookahead does not take {sorted(kwargs)}; set them on the wrapped optimizer.")
        _validation.check_type(
            "inner_optimizer", inner_optimizer, keras.optimizers.Optimizer, "a keras.optimizers.Optimizer"
        )
        if isinstance(inner_optimizer, Lookahead):
            raise ValueError(
                "`inner_optimizer` is already a Lookahead optimizer; wrap the fast optimizer once."
            )
        if inner_optimizer.built:
            raise ValueError(
                "`inner_optimizer` is already built: the slow weights must start from the weights "
                "the fast optimizer starts from. Wrap a fresh optimizer."
            )
        super().__init__(learning_rate=0.0, name=name)
        self.inner_optimizer = inner_optimizer
        self.k = _validation.check_int("k", k, minimum=1)
        self.alpha = _validation.check_float("alpha", alpha, minimum=0.0, maximum=1.0, min_inclusive=False)
        self._set_state(fast=[], slow=[], pending={})

    # ------------------------------------------------------------------ state

    @_keras_compat.no_automatic_dependency_tracking
    def build(self, var_list: Iterable[keras.Variable]) -> None:
        if _backend.name() == "tensorflow":
            import tensorflow as tf

            if tf.distribute.has_strategy() and tf.distribute.get_strategy().num_replicas_in_sync > 1:
                raise NotImplementedError(
                    "Lookahead does not support tf.distribute strategies with more than one replica yet."
                )
        var_list = list(var_list)
        if not self.inner_optimizer.built:
            self.inner_optimizer.build(var_list)
        with _eager_scope():
            self._lookahead_step = self.add_variable(
                (), initializer="zeros", dtype="int", name="lookahead_step"
            )
            slow = []
            for v in var_list:
                phi = self.add_variable(
                    v.shape, initializer="zeros", dtype=v.dtype, name=v.path.replace("/", "_") + "_slow"
                )
                # Through NumPy: a buffer of its own (JAX would share the
                # variable's, and its train step donates each buffer once).
                phi.assign(np.array(ops.convert_to_numpy(v)))
                slow.append(phi)
        self._set_state(fast=var_list, slow=slow)
        super().build(var_list)
        self._apply_pending()

    @property
    def lookahead_step(self) -> keras.Variable:
        """The number of fast updates applied so far (the slow weights move
        when it reaches a multiple of `k`)."""
        return self._lookahead_step

    @property
    def slow_variables(self) -> list[keras.Variable]:
        """The slow weights `phi`, aligned with the variables optimized."""
        return list(self._slow)

    @property
    def variables(self) -> list[keras.Variable]:
        return self._variables[:] + self.inner_optimizer.variables

    # --------------------------------------------------------------- updates

    def _moved(self, slow, fast):
        alpha = [ops.cast(self.alpha, p.dtype) for p in slow]
        return [p + a * (ops.cast(q, p.dtype) - p) for p, q, a in zip(slow, fast, alpha)]

    def _stateful_update(self, applied):
        """After the fast update: count it and, on every k-th, move the slow
        weights and copy them into the fast ones."""
        step = self._lookahead_step
        if applied is not None and _backend.name() == "torch":
            # PyTorch runs eagerly (Keras's own accumulation and loss scaling
            # branch on the host here too).
            if not bool(applied):
                return
            applied = None
        step.assign_add(1 if applied is None else ops.cast(applied, step.dtype))
        due = ops.equal(ops.mod(ops.convert_to_tensor(step), self.k), 0)
        if applied is not None:
            due = ops.logical_and(due, applied)

        def sync():
            new = self._moved([p.value for p in self._slow], [v.value for v in self._fast])
            for phi, theta, value in zip(self._slow, self._fast, new):
                phi.assign(value)
                theta.assign(ops.cast(value, theta.dtype))

        if _backend.name() == "tensorflow":
            ops.cond(due, sync, lambda: None)
        elif bool(ops.convert_to_numpy(due)):  # JAX and PyTorch eager
            sync()

    def apply(
        self, grads: Sequence[Tensor], trainable_variables: Sequence[keras.Variable] | None = None
    ) -> None:
        self._stateful_update(self._inner_apply(grads, trainable_variables))

    def stateless_apply(
        self,
        optimizer_variables: Sequence[Tensor],
        grads: Sequence[Tensor],
        trainable_variables: Sequence[Tensor],
    ) -> tuple[list[Tensor], list[Tensor]]:
        own = len(self._variables)
        new_fast, new_inner, applied = self._inner_stateless_apply(
            optimizer_variables, grads, trainable_variables
        )

        # LossScaleOptimizer passes our variables themselves (read through its
        # StatelessScope): take their values.
        own_values = dict(
            zip(
                (id(v) for v in self._variables),
                (ops.convert_to_tensor(v) for v in optimizer_variables[:own]),
            )
        )
        step = own_values[id(self._lookahead_step)]
        slow = [own_values[id(p)] for p in self._slow]
        step = step + (1 if applied is None else ops.cast(applied, step.dtype))
        due = ops.equal(ops.mod(step, self.k), 0)
        if applied is not None:
            due = ops.logical_and(due, applied)
        fast = [ops.convert_to_tensor(v) for v in new_fast]

        def sync(slow=slow, fast=fast):
            moved = self._moved(slow, fast)
            return moved, [ops.cast(m, q.dtype) for m, q in zip(moved, fast)]

        def keep(slow=slow, fast=fast):
            return slow, fast

        slow, fast = ops.cond(due, sync, keep)
        new_own_map = {id(self._lookahead_step): step}
        new_own_map.update(zip((id(p) for p in self._slow), slow))
        new_own = [new_own_map.get(id(v), own_values[id(v)]) for v in self._variables]
        return list(fast), new_own + list(new_inner)

    # ----------------------------------------------------- saving / loading

    def save_own_variables(self, store: dict[str, Any]) -> None:
        if not self.built:
            for key, value in self._pending.items():
                store[key] = value
            return
        store["lookahead_step"] = ops.convert_to_numpy(self._lookahead_step)
        for i, phi in enumerate(self._slow):
            store[f"slow_{i}"] = ops.convert_to_numpy(phi)
        self._save_inner(store)

    @_keras_compat.no_automatic_dependency_tracking
    def load_own_variables(self, store: dict[str, Any]) -> None:
        # Kept aside until built when loading into a fresh optimizer (Keras's
        # own optimizers warn and drop the values then).
        self._pending = {k: np.array(store[k]) for k in store.keys()}
        self._apply_pending()

    @_keras_compat.no_automatic_dependency_tracking
    def _apply_pending(self):
        pending = self._pending
        if not pending or not self.built:
            return
        slow_keys = [k for k in pending if k.startswith("slow_")]
        if len(slow_keys) != len(self._slow):
            raise ValueError(
                f"The saved Lookahead state has {len(slow_keys)} slow weights, but this optimizer "
                f"updates {len(self._slow)} variables."
            )
        inner_keys = self._inner_keys(pending)  # checked before anything is assigned
        with _eager_scope():
            if "lookahead_step" in pending:
                self._lookahead_step.assign(pending.pop("lookahead_step"))
            for i, phi in enumerate(self._slow):
                value = pending.pop(f"slow_{i}")
                if tuple(value.shape) != tuple(phi.shape):
                    raise ValueError(
                        f"The saved slow weight {i} has shape {value.shape}, but the variable it "
                        f"follows has shape {tuple(phi.shape)}."
                    )
                phi.assign(value)
        self._load_inner(pending, inner_keys)
        self._pending = {}

    # --------------------------------------------------------------- config

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "inner_optimizer": keras.saving.serialize_keras_object(self.inner_optimizer),
            "k": self.k,
            "alpha": self.alpha,
        }
