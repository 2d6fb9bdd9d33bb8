from __future__ import annotations

import keras
from keras import ops

from keras_tricks._typing import DTypeLike, LossLike, Tensor
from keras_tricks.losses._flooding_base import (
    FloodingBase,
    batch_size_of,
    flood_gradient,
)


@keras.saving.register_keras_serializable(package="keras_tricks")
class Flooding(FloodingBase):
    """Flooding: train on |L - b| + b, keeping the batch loss L near level b.

    Ishida et al., "Do We Need Zero Training Loss After Achieving Zero
    Training Error?", ICML 2020 (arXiv:2002.08709). With L the wrapped loss
    reduced over the batch by Keras's rules (sample weights, masks and the
    wrapped loss's `reduction`), the objective is

        J = |L - b| + b,        dJ/dθ = sign(L - b) · dL/dθ,

    gradient descent while L > b and gradient ascent while L < b. Su Jianlin
    (kexue.fm/archives/7643) showed that alternating around b amounts to
    descending on L + (lr / 2) ||∇L||², a push towards flat minima.

    Only the training objective is flooded. The value this loss returns is
    the plain L, bit for bit; only its gradient is that of J (see
    `keras_tricks.losses._flooding_base` for the construction). So `loss`
    and `val_loss` in `fit()` logs, `evaluate()` and every callback report
    the plain loss on TensorFlow, JAX and PyTorch, and regularisation losses
    (`model.losses`), which Keras adds after the compiled loss, are never
    flooded. `objective()` gives J itself. With a
    `keras_tricks.callbacks.FloodLevelScheduler` in `fit()`, the logs also
    carry `flood_objective` (mean J), `flood_fraction` (the fraction of
    batches with L < b, i.e. ascent steps) and `flood_level` (b), each
    prefixed with `<output>_` on multi-output models.

    Args:
        loss: the loss to flood: a `keras.losses.Loss`, a loss function
            `fn(y_true, y_pred)` returning per-sample values, or the name of
            a Keras loss (`"mse"`, `"sparse_categorical_crossentropy"`).
        level: the flood level b, a finite number >= 0 (the paper searches
            it on validation data; see `demos/flooding.py`). Stored in a
            float32 variable, so `FloodLevelScheduler` or `self.level = ...`
            change it without recompiling.
        allow_negative_level: allow any finite b, for losses that can be
            negative (a Gaussian negative log-likelihood, say).
        name, reduction, dtype: as `keras.losses.Loss`; `reduction` and
            `dtype` default to the wrapped loss's. The reduction must reduce
            (not `"none"`): flooding compares one batch loss with b.

    Shapes: `y_true` and `y_pred` as the wrapped loss takes them; returns a
    scalar. On one output of a multi-output model, give each output its own
    `Flooding` (its own level) in the `loss` dict or list of `compile()`.

    Examples:
    >>> import keras, keras_tricks
    >>> flood = keras_tricks.losses.Flooding("sparse_categorical_crossentropy", level=0.1)
    >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3, activation="softmax")])
    >>> model.compile("adam", loss=flood)
    >>> float(flood(keras.ops.array([0, 2]), keras.ops.full((2, 3), 1 / 3)))  # the plain loss
    1.0986...
    """

    def __init__(
        self,
        loss: LossLike,
        level: float,
        allow_negative_level: bool = False,
        name: str = "flooding",
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
        if self.reduction in (None, "none"):
            raise ValueError(
                "`loss`: Flooding floods the batch loss, so it needs a reducing "
                f"`reduction`; got reduction={self.reduction!r}. Use "
                "IndividualFlooding to flood each sample's loss."
            )

    def __call__(self, y_true: Tensor, y_pred: Tensor, sample_weight: Tensor | None = None) -> Tensor:
        with keras.name_scope(self.name):
            values, mask = self._values(y_true, y_pred)
            plain = self._reduce(values, sample_weight, mask)
            unscale = self._unscale()
            level = ops.cast(self.monitor.level, plain.dtype)
            if self.monitor.attached:
                frozen = ops.stop_gradient(plain) * unscale
                self.monitor.record(
                    objective=ops.abs(frozen - level) + level,
                    batch_size=batch_size_of(y_pred),
                    flooded=ops.cast(frozen < level, "float32"),
                    units=1.0,
                )
            return flood_gradient(plain, level, unscale)

    def objective(self, y_true: Tensor, y_pred: Tensor, sample_weight: Tensor | None = None) -> Tensor:
        """J = |L - b| + b itself (value and gradient), for custom loops."""
        plain = self.plain(y_true, y_pred, sample_weight) * self._unscale()
        level = ops.cast(self.monitor.level, plain.dtype)
        return (ops.abs(plain - level) + level) / self._unscale()
