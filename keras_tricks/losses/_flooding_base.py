"""What `Flooding` and `IndividualFlooding` share: the wrapped loss, the level,
the value-preserving flooded gradient and the statistics they log.

How the plain loss stays in the logs (all three backends, no Model subclass):
Keras logs, as `loss`, the very value it differentiates (`compute_loss`
feeds both the optimizer and the loss tracker, in `train_step` and
`test_step` alike). The flooded objective |L - b| + b has the gradient
sign(L - b) * grad(L), so instead of |L - b| + b these losses return

    L_out = stop_gradient(L) + s * (L - stop_gradient(L)),   s = stop_gradient(sign(L - b))

whose value is exactly L (L - stop_gradient(L) is exactly 0 in floating
point) and whose gradient is exactly s * grad(L), the gradient of the flooded
objective. The optimizer therefore trains on the flooded objective while
`loss`, `val_loss`, `evaluate()` and every callback see the plain loss, with
nothing to switch between training and evaluation: evaluation takes no
gradient. Regularisation losses (`model.losses`) are added by Keras after the
compiled loss and are never flooded. The true flooded value is available
from `objective()` and, with a `FloodLevelScheduler` in `fit()`, in the logs.
"""

from __future__ import annotations

import warnings
from typing import Any

import keras
import numpy as np
from keras import ops, tree

from keras_tricks import _backend, _keras_compat, _validation
from keras_tricks._typing import DTypeLike, LossLike, Tensor

_MONITOR_ATTR = "__keras_tricks_flooding_monitor_{}"


_FLOAT32_MAX = float(np.finfo("float32").max)

# Keras losses whose values go below 0. Flooding trains on |L - b| + b, which
# assumes L >= 0 (at level 0 on a loss that is negative it ascends: exactly
# minus the gradient, every step). bounded below by -1: cosine similarity;
# Poisson's y_pred - y log(y_pred) is negative wherever y > y_pred / log(y_pred).
_NEGATIVE_LOSSES = ("cosine_similarity", "poisson", "CosineSimilarity", "Poisson")


def validate_level(level: float, allow_negative_level: bool = False, what: str = "level") -> float:
    """`level` as a float: finite, representable in float32 (the level
    lives in a float32 variable), and >= 0 unless `allow_negative_level`."""
    level = _validation.check_float(what, level, minimum=-_FLOAT32_MAX, maximum=_FLOAT32_MAX)
    if level < 0.0 and not allow_negative_level:
        raise ValueError(
            f"`{what}` must be >= 0 for a non-negative loss, got {what}={level!r}; "
            "pass `allow_negative_level=True` for a loss that can be negative "
            "(for example a Gaussian negative log-likelihood)."
        )
    return level


def refuse_negative_loss(loss: LossLike, resolved: keras.losses.Loss, allow_negative_level: bool) -> None:
    """ValueError for a Keras loss known to take negative values, unless the
    user has said (`allow_negative_level=True`) that they chose the level
    for such a loss."""
    if allow_negative_level:
        return
    names = {
        getattr(loss, "__name__", None),
        loss if isinstance(loss, str) else None,
        type(resolved).__name__,
        getattr(getattr(resolved, "fn", None), "__name__", None),
    }
    hit = sorted(n for n in names if n in _NEGATIVE_LOSSES)
    if hit:
        raise ValueError(
            f"`loss` ({hit[0]}) takes negative values, and flooding assumes a loss "
            "bounded below by 0: at level 0 it would train on minus the gradient "
            "and maximise the loss. Pass `allow_negative_level=True` with a level "
            "above the loss's lower bound (for cosine similarity, in (-1, 0]) if "
            "that is what you want."
        )


def _resolve(loss: LossLike) -> keras.losses.Loss:
    """The user's loss (object, function or string) as a `keras.losses.Loss`."""
    if isinstance(loss, keras.losses.Loss):
        return loss
    if isinstance(loss, (str, dict)):
        try:
            resolved = keras.losses.get(loss)
        except (ValueError, TypeError) as e:
            raise ValueError(f"`loss`: unknown Keras loss {loss!r} ({e}).") from None
        return _resolve(resolved)
    if isinstance(loss, type) and issubclass(loss, keras.losses.Loss):
        return loss()
    if callable(loss):
        return _keras_compat.loss_function_wrapper(loss, name=getattr(loss, "__name__", None))
    raise ValueError(
        "`loss` must be a Keras loss object, a loss function or the name of a "
        f"Keras loss, got {loss!r} of type {type(loss).__name__}."
    )


def keras_mask(x: Tensor) -> Tensor | None:
    """The Keras mask attached to `x`, or None, read as `Loss.__call__` reads
    it (on JAX it is not an attribute of the traced array)."""
    return _keras_compat.get_keras_mask(x)


def flood_gradient(value: Tensor, level: Tensor | float, unscale: float = 1.0) -> Tensor:
    """`value` unchanged, with the gradient of |value - level| + level.

    `unscale` undoes Keras's division of the loss by the number of replicas
    under `tf.distribute`, so that the comparison with `level` is made on the
    loss the user means.
    """
    frozen = ops.stop_gradient(value)
    level = ops.cast(level, value.dtype)
    sign = ops.stop_gradient(ops.sign(frozen * unscale - level))
    return frozen + sign * (value - frozen)


class FloodingMonitor(keras.metrics.Metric):
    """The level and the flooding statistics of one flooding loss.

    Holds the current level (a variable, so that `FloodLevelScheduler` can
    change it without recompiling), the mean flooded objective and the
    fraction of flooded units (batches for `Flooding`, samples or tokens for
    `IndividualFlooding`). The loss updates it; `update_state` is a no-op.
    A `FloodLevelScheduler` attaches it to the model, which makes its
    variables part of the training state (JAX) and its result part of the
    logs: `flood_objective`, `flood_fraction`, `flood_level` (prefixed with
    `<output name>_` for multi-output models).
    """

    def __init__(self, level: float, name: str = "flooding", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.prefix = ""
        self.attached = False
        self.level = self.add_variable(
            shape=(),
            initializer=keras.initializers.Constant(level),
            dtype="float32",
            name="level",
        )
        self.objective_sum = self.add_variable(
            shape=(), initializer="zeros", dtype="float32", name="objective_sum"
        )
        self.samples = self.add_variable(shape=(), initializer="zeros", dtype="float32", name="samples")
        self.flooded = self.add_variable(shape=(), initializer="zeros", dtype="float32", name="flooded")
        self.units = self.add_variable(shape=(), initializer="zeros", dtype="float32", name="units")

    def update_state(self, *args: Any, **kwargs: Any) -> None:
        # Updated by the loss from inside the loss computation (`record`).
        return None

    def record(
        self, objective: Tensor, batch_size: int | Tensor, flooded: float | Tensor, units: float | Tensor
    ) -> None:
        if not self.attached:
            return

        def f32(t):
            return ops.stop_gradient(ops.cast(ops.convert_to_tensor(t), "float32"))

        batch_size = f32(batch_size)
        self.objective_sum.assign(self.objective_sum + f32(objective) * batch_size)
        self.samples.assign(self.samples + batch_size)
        self.flooded.assign(self.flooded + f32(flooded))
        self.units.assign(self.units + f32(units))

    def result(self) -> dict[str, Tensor]:
        return {
            f"{self.prefix}flood_objective": ops.divide_no_nan(self.objective_sum, self.samples),
            f"{self.prefix}flood_fraction": ops.divide_no_nan(self.flooded, self.units),
            # A fresh array: JAX donates the variable buffers to the next step.
            f"{self.prefix}flood_level": ops.add(self.level, 0.0),
        }

    def reset_state(self) -> None:
        # The level is training state, not a statistic: it survives resets.
        for v in (self.objective_sum, self.samples, self.flooded, self.units):
            v.assign(0.0)


class FloodingBase(keras.losses.Loss):
    """Common part of `Flooding` and `IndividualFlooding` (see their docs)."""

    def __init__(
        self,
        loss: LossLike,
        level: float,
        allow_negative_level: bool = False,
        name: str | None = None,
        reduction: str | None = None,
        dtype: DTypeLike | keras.DTypePolicy = None,
    ) -> None:
        self.allow_negative_level = _validation.check_bool("allow_negative_level", allow_negative_level)
        level = validate_level(level, self.allow_negative_level)
        self.loss = loss
        self.inner = _resolve(loss)
        refuse_negative_loss(loss, self.inner, self.allow_negative_level)
        reduction = self.inner.reduction if reduction is None else reduction
        if dtype is None:
            dtype = self.inner._dtype_policy  # compute in the wrapped loss's dtype
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.monitor = FloodingMonitor(level, name=f"{self.name}_monitor")

    # ------------------------------------------------------------------ level
    @property
    def level(self) -> float:
        """The current flood level b (a Python float)."""
        return float(ops.convert_to_numpy(self.monitor.level))

    @level.setter
    def level(self, value: float) -> None:
        value = validate_level(value, self.allow_negative_level)
        if _backend.name() == "jax" and not self.monitor.attached and value != self.level:
            warnings.warn(
                "On JAX a compiled training step reads the flood level as a "
                "constant unless the loss is attached to the model; call "
                "`loss.attach(model)` (FloodLevelScheduler does) or recompile "
                "the model for the new level to take effect.",
                stacklevel=2,
            )
        self.monitor.level.assign(value)

    @property
    def level_variable(self) -> keras.Variable:
        """The `keras.Variable` holding b (float32, not trainable)."""
        return self.monitor.level

    # ---------------------------------------------------------- Keras plumbing
    def _values(self, y_true, y_pred):
        """Unreduced values of the wrapped loss and the Keras mask, exactly as
        `keras.losses.Loss.__call__` would compute them."""
        in_mask = keras_mask(y_pred)
        y_pred = tree.map_structure(lambda x: ops.convert_to_tensor(x, dtype=self.dtype), y_pred)
        y_true = tree.map_structure(lambda x: ops.convert_to_tensor(x, dtype=self.dtype), y_true)
        values = self.inner.call(y_true, y_pred)
        out_mask = keras_mask(values)
        if in_mask is not None and out_mask is not None:
            mask = ops.logical_and(in_mask, out_mask)
        else:
            mask = in_mask if in_mask is not None else out_mask
        return values, mask

    def _reduce(self, values, sample_weight, mask):
        return _keras_compat.reduce_weighted_values(
            values, sample_weight=sample_weight, mask=mask, reduction=self.reduction, dtype=self.dtype
        )

    def call(self, y_true: Tensor, y_pred: Tensor) -> Tensor:
        return self.inner.call(y_true, y_pred)

    def _unscale(self) -> float:
        """Undo Keras's 1/replicas scaling of a mean-reduced loss (tf.distribute)."""
        if self.reduction in ("sum_over_batch_size", "mean", "mean_with_sample_weight"):
            return replica_unscale()
        return 1.0

    def plain(self, y_true: Tensor, y_pred: Tensor, sample_weight: Tensor | None = None) -> Tensor:
        """The wrapped loss reduced by Keras's rules, with its own gradient."""
        with keras.name_scope(self.name):
            values, mask = self._values(y_true, y_pred)
            return self._reduce(values, sample_weight, mask)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "loss": self.loss
                if isinstance(self.loss, str)
                else keras.saving.serialize_keras_object(self.loss),
                "level": self.level,
                "allow_negative_level": self.allow_negative_level,
            }
        )
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> FloodingBase:
        config = dict(config)
        loss = config.pop("loss")
        if isinstance(loss, dict):
            loss = keras.saving.deserialize_keras_object(loss)
        return cls(loss=loss, **config)

    def attach(self, model: keras.Model, index: int = 0, prefix: str = "") -> bool:
        """Make the level and statistics part of `model`: its state and logs.

        `FloodLevelScheduler` calls this for every flooding loss of the model
        at the start of `fit()`; call it yourself to log the statistics
        without a scheduler or, on JAX, to change `level` between `fit()`
        calls without recompiling (a level is a constant of the compiled
        JAX step otherwise). `index` tells apart several flooding losses of
        one model; `prefix` is put before the logged names. Returns True
        when it was newly attached. The attribute name starts
        with `__` so that `.keras` saving skips it (the level is saved in the
        loss config instead).
        """
        if any(m is self.monitor for m in model.metrics):
            return False
        self.monitor.prefix = prefix
        self.monitor.attached = True
        setattr(model, _MONITOR_ATTR.format(index), self.monitor)
        return True


def replica_unscale() -> float:
    """The factor that undoes Keras's per-replica scaling of a reduced loss."""
    return float(_backend.num_replicas_in_sync())


def batch_size_of(y_pred: Tensor) -> int | Tensor:
    return ops.shape(tree.flatten(y_pred)[0])[0]
