from __future__ import annotations

import keras
from keras import ops

from keras_tricks._typing import DTypeLike, LossLike, Tensor
from keras_tricks.losses._flooding_base import FloodingBase, batch_size_of, flood_gradient


@keras.saving.register_keras_serializable(package="keras_tricks")
class IndividualFlooding(FloodingBase):
    """iFlood: flood each sample's loss, mean(|l_i - b| + b).

    Xie et al., "iFlood: A Stable and Effective Regularizer", ICLR 2022.
    Flooding (`Flooding`) compares the batch mean with b, so one batch can
    ascend on samples it already fits badly; iFlood compares each sample's
    (or token's) loss l_i with b:

        J = reduce_i(|l_i - b| + b),     dJ/dθ = reduce_i(sign(l_i - b) · dl_i/dθ),

    where `reduce` is Keras's reduction of the wrapped loss: sample weights
    multiply each term after flooding (b is compared with the unweighted
    l_i), a Keras mask on `y_pred` (sequence losses) drops padded tokens,
    and `reduction` is the wrapped loss's. The sign pattern is per element:
    samples fitted below b are pushed back up, the rest down.

    As for `Flooding`, only the training objective is flooded: the value
    returned is the plain reduced loss, bit for bit, and only the gradient is
    J's, so `loss`/`val_loss`/`evaluate()` report the plain loss on every
    backend and `model.losses` are never flooded. `objective()` gives J.
    With a `keras_tricks.callbacks.FloodLevelScheduler` in `fit()` the logs
    also carry `flood_objective` (J), `flood_fraction` (the fraction of
    unmasked samples/tokens with l_i < b) and `flood_level`.

    Args:
        loss: the loss to flood: a `keras.losses.Loss` (its `call()` gives
            the per-sample values), a loss function or a Keras loss name.
        level: the flood level b, a finite number >= 0.
        allow_negative_level: allow any finite b, for losses that can be
            negative.
        name, reduction, dtype: as `keras.losses.Loss`; `reduction` and
            `dtype` default to the wrapped loss's. With reduction `"none"`
            the per-sample values come back unreduced.

    Shapes: `y_true` and `y_pred` as the wrapped loss takes them, e.g.
    `(batch, classes)` or `(batch, time, classes)` with a mask; returns a
    scalar (per-sample values with reduction `"none"`).

    Examples:
    >>> import keras, keras_tricks
    >>> loss = keras_tricks.losses.IndividualFlooding("mse", level=0.05)
    >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1)])
    >>> model.compile("adam", loss=loss)
    """

    def __init__(
        self,
        loss: LossLike,
        level: float,
        allow_negative_level: bool = False,
        name: str = "individual_flooding",
        reduction: str | None = None,
        dtype: DTypeLike = None,
    ) -> None:
        super().__init__(
            loss,
            level,
            allow_negative_level=allow_negative_level,
            name=name,
            reduction=reduction,
            dtype=dtype,
        )

    def __call__(self, y_true: Tensor, y_pred: Tensor, sample_weight: Tensor | None = None) -> Tensor:
        with keras.name_scope(self.name):
            values, mask = self._values(y_true, y_pred)
            level = ops.cast(self.monitor.level, values.dtype)
            out = self._reduce(flood_gradient(values, level), sample_weight, mask)
            if self.monitor.attached:
                frozen = ops.stop_gradient(values)
                if mask is not None and tuple(mask.shape) == tuple(frozen.shape):
                    keep = ops.cast(mask, frozen.dtype)
                else:  # no mask, or one the wrapped loss already reduced over
                    keep = ops.ones_like(frozen)
                objective = self._reduce(ops.abs(frozen - level) + level, sample_weight, mask)
                if len(objective.shape):  # reduction "none"
                    objective = ops.mean(objective)
                self.monitor.record(
                    objective=objective * self._unscale(),
                    batch_size=batch_size_of(y_pred),
                    flooded=ops.sum(ops.cast(frozen < level, frozen.dtype) * keep),
                    units=ops.sum(keep),
                )
            return out

    def objective(self, y_true: Tensor, y_pred: Tensor, sample_weight: Tensor | None = None) -> Tensor:
        """J = reduce_i(|l_i - b| + b) itself (value and gradient)."""
        with keras.name_scope(self.name):
            values, mask = self._values(y_true, y_pred)
            level = ops.cast(self.monitor.level, values.dtype)
            return self._reduce(ops.abs(values - level) + level, sample_weight, mask)
