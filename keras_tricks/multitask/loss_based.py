"""Loss-based weighting: one backward pass through a scalar built from the task losses.

Every class here maps the vector of k task losses L (float32, shape (k,)) to
`(total, weights)`: the scalar that is differentiated and the effective
weights d total / d L_i, which `MultiTaskModel` logs as `<task>_weight`.
Su Jianlin, 多任务学习漫谈 (一): 以损失之名 (Multi-task learning notes I, 2022)
derives `initial`, `prior`, `realtime` and `generalized_mean` from the
requirement that the total be invariant to rescaling any one task's loss.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops
from numpy.typing import ArrayLike

from keras_tricks._typing import Shape, Tensor
from keras_tricks.multitask.strategy import (
    Strategy,
    eps,
    register_strategy,
    safe_divide,
    tiny,
    validate_number,
    validate_positive_values,
)

_register = keras.saving.register_keras_serializable(package="keras_tricks")


class _FixedWeights(Strategy):
    """total = sum_i w_i L_i with weights fixed when the tasks are bound."""

    def fixed_weights(self, k: int) -> list[float]:
        raise NotImplementedError

    def build(self, input_shape: Shape) -> None:
        self._weights = ops.convert_to_tensor(self.fixed_weights(input_shape[0]), "float32")
        self.built = True

    def combine(self, losses: Tensor, training: bool = True) -> tuple[Tensor, Tensor]:
        return ops.sum(self._weights * losses), self._weights


@_register
@register_strategy("equal")
class Equal(_FixedWeights):
    """Fixed weights: total = sum_i w_i L_i (default w_i = 1, Keras's own sum).

    The baseline, and the equivalent of `compile(loss_weights=...)`.

    Args:
        weights: None (all ones), or one number >= 0 per task: a list in the
            model's output order or a dict keyed by task name.

    Examples:
    >>> from keras import ops
    >>> s = Equal(weights=[1.0, 0.5]).bind(["a", "b"])
    >>> total, w = s.combine(ops.convert_to_tensor([2.0, 4.0]))
    >>> float(total)
    4.0
    """

    def __init__(self, weights: Sequence[float] | dict[str, float] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.weights_arg = validate_positive_values("weights", weights, allow_zero=True)

    def fixed_weights(self, k: int) -> list[float]:
        return [1.0] * k if self.weights_arg is None else self._task_value("weights", self.weights_arg)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["weights"] = self.weights_arg
        return config


@_register
@register_strategy("initial")
class Initial(Strategy):
    """alpha_i = 1 / L_i at the start of training: total = sum_i L_i / L_i(0).

    Su (part I): weigh each task by the inverse of its initial loss, so that
    every task starts at 1 and no task's unit matters. The initial losses are
    either given (`losses`) or measured: the mean of each task's loss over the
    first `steps` training steps (during those steps the running mean is
    used). Measured values are saved with the model.

    Args:
        losses: None (measure), or one number > 0 per task (list or dict).
        steps: how many training steps to average over when measuring (>= 1).

    Examples:
    >>> from keras import ops
    >>> s = Initial().bind(["a", "b"])
    >>> _, w = s.combine(ops.convert_to_tensor([2.0, 0.5]))
    >>> [round(float(v), 6) for v in w]
    [0.5, 2.0]
    """

    def __init__(
        self, losses: Sequence[float] | dict[str, float] | None = None, steps: int = 1, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.losses_arg = validate_positive_values("losses", losses)
        self.steps = validate_number("steps", steps, low=1, integer=True)

    def build(self, input_shape: Shape) -> None:
        k = input_shape[0]
        given = self.losses_arg is not None
        values = self._task_value("losses", self.losses_arg) if given else [0.0] * k
        self.loss_sum = self.add_weight(
            shape=(k,),
            initializer=keras.initializers.Constant(values),
            trainable=False,
            aggregation="mean",
            name="loss_sum",
        )
        self.count = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(1.0 if given else 0.0),
            trainable=False,
            aggregation="mean",
            name="count",
        )
        self.built = True

    def combine(self, losses: Tensor, training: bool = True) -> tuple[Tensor, Tensor]:
        observed = ops.stop_gradient(losses)
        loss_sum = ops.convert_to_tensor(self.loss_sum)
        count = ops.convert_to_tensor(self.count)
        if training and self.losses_arg is None:
            measuring = ops.less(count, float(self.steps))
            loss_sum = ops.where(measuring, loss_sum + observed, loss_sum)
            count = ops.where(measuring, count + 1.0, count)
            self.loss_sum.assign(loss_sum)
            self.count.assign(count)
        loss_sum = ops.where(ops.equal(count, 0.0), observed, loss_sum)
        count = ops.maximum(count, 1.0)
        weights = count / (loss_sum + eps() * count)
        return ops.sum(weights * losses), weights

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"losses": self.losses_arg, "steps": self.steps})
        return config


@_register
@register_strategy("prior")
class Prior(_FixedWeights):
    """alpha_i = 1 / L_i(prior): the loss of a predictor that knows only the label prior.

    Su (part I): the loss a model reaches without looking at the input is a
    scale for the task that does not depend on the initialisation. For
    classification with cross-entropy it is the entropy of the class
    frequencies; for regression with squared error, the variance of the
    targets. Compute them from a sample of the training targets with
    `prior_loss` and pass them here.

    Args:
        losses: one number > 0 per task (list in output order or dict by task).

    Examples:
    >>> import numpy as np
    >>> losses = {"digit": prior_loss(np.arange(10), "categorical"),
    ...           "size": prior_loss(np.array([1.0, 3.0]), "regression")}
    >>> round(losses["digit"], 4), losses["size"]
    (2.3026, 1.0)
    >>> s = Prior(losses).bind(["digit", "size"])
    """

    def __init__(self, losses: Sequence[float] | dict[str, float] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if losses is None:
            raise ValueError(
                "`Prior` needs `losses`: one prior loss per task; compute them "
                "from training targets with keras_tricks.multitask.prior_loss."
            )
        self.losses_arg = validate_positive_values("losses", losses)

    def fixed_weights(self, k: int) -> list[float]:
        return [1.0 / v for v in self._task_value("losses", self.losses_arg)]

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["losses"] = self.losses_arg
        return config


def prior_loss(y: ArrayLike, kind: str) -> float:
    """The loss of the best input-blind predictor on targets `y` (float, natural log).

    * "categorical": integer labels of any shape, or one-hot/probability rows
      (last axis = classes): entropy -sum_c p_c log p_c of the class
      frequencies (cross-entropy of predicting p).
    * "binary": 0/1 targets of shape (n,) or (n, labels): the binary entropy
      of each label's frequency, averaged over labels (Keras's
      `binary_crossentropy` averages over the last axis).
    * "regression": targets (n,) or (n, outputs): the variance of each output
      around its mean, averaged over outputs (mean squared error of
      predicting the mean).

    Raises ValueError for an unknown kind, an empty sample, or a target with
    nothing to learn (a loss of 0).
    """
    y = np.asarray(y, dtype=np.float64)
    if y.size == 0:
        raise ValueError("`y` is empty; prior_loss needs a sample of training targets.")
    if not np.all(np.isfinite(y)):
        raise ValueError("`y` must be finite.")
    if kind == "categorical":
        if y.ndim >= 2 and y.shape[-1] > 1 and np.all((y >= 0) & (y <= 1)) and np.allclose(y.sum(-1), 1):
            p = y.reshape(-1, y.shape[-1]).mean(axis=0)
        else:
            if np.any(y != np.round(y)) or np.any(y < 0):
                raise ValueError("`y` for kind='categorical' must be integer labels or one-hot rows.")
            p = np.bincount(y.astype(np.int64).ravel()) / y.size
        p = p[p > 0]
        value = float(-(p * np.log(p)).sum())
    elif kind == "binary":
        if np.any((y != 0) & (y != 1)):
            raise ValueError("`y` for kind='binary' must hold 0/1 targets.")
        p = y.reshape(y.shape[0], -1).mean(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            h = -(np.where(p > 0, p * np.log(p), 0.0) + np.where(p < 1, (1 - p) * np.log1p(-p), 0.0))
        value = float(h.mean())
    elif kind == "regression":
        value = float(y.reshape(y.shape[0], -1).var(axis=0).mean())
    else:
        raise ValueError(f"`kind` must be 'categorical', 'binary' or 'regression'; got {kind!r}.")
    if value <= 0:
        raise ValueError(f"The targets have nothing to learn (prior loss 0) for kind={kind!r}.")
    return value


@_register
@register_strategy("realtime")
class Realtime(Strategy):
    """total = sum_i L_i / (stop_gradient(L_i) + epsilon).

    Su (part I): weigh each task by its current loss. The value stays near k
    (that is what `loss` shows in the logs); the gradient is
    sum_i grad L_i / L_i = grad sum_i log L_i, the gradient of the geometric
    mean's logarithm, so every task is scale-free at every step.

    Args:
        epsilon: floor added to the detached loss, > 0; None for the float32
            machine epsilon (keeps a loss of exactly 0 from dividing by 0).

    Examples:
    >>> from keras import ops
    >>> total, w = Realtime().bind(["a", "b"]).combine(ops.convert_to_tensor([2.0, 0.5]))
    >>> round(float(total), 5)
    2.0
    """

    def __init__(self, epsilon: float | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if epsilon is not None:
            validate_number("epsilon", epsilon, low=0, low_open=True)
        self.epsilon = epsilon

    def combine(self, losses: Tensor, training: bool = True) -> tuple[Tensor, Tensor]:
        epsilon = eps() if self.epsilon is None else self.epsilon
        weights = 1.0 / (ops.stop_gradient(losses) + epsilon)
        return ops.sum(weights * losses), weights

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["epsilon"] = self.epsilon
        return config


@_register
@register_strategy("generalized_mean")
class GeneralizedMean(Strategy):
    """total = ((1/k) sum_i L_i^gamma)^(1/gamma); gamma = 0 is the geometric mean.

    Su (part I): the power mean interpolates between the minimum (gamma ->
    -inf), the geometric mean (gamma = 0: exp(mean_i log L_i), the limit),
    the arithmetic mean (gamma = 1) and the maximum (gamma -> +inf): larger
    gamma puts more weight on the worst task. Effective weights:
    d total / d L_i = (1/k) (L_i / total)^(gamma - 1).

    Losses are floored at the smallest normal float32 so that log L stays
    finite. Evaluated as exp(log1p(mean(expm1(gamma log L))) / gamma) for
    |gamma| < 1 (no cancellation as gamma -> 0) and through logsumexp
    otherwise (no overflow).

    Args:
        gamma: a finite number.

    Examples:
    >>> from keras import ops
    >>> s = GeneralizedMean(gamma=0.0).bind(["a", "b"])
    >>> round(float(s.combine(ops.convert_to_tensor([1.0, 4.0]))[0]), 5)
    2.0
    """

    def __init__(self, gamma: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gamma = float(validate_number("gamma", gamma))

    def combine(self, losses: Tensor, training: bool = True) -> tuple[Tensor, Tensor]:
        k = float(self.num_tasks or ops.shape(losses)[0])
        log_l = ops.log(ops.maximum(losses, tiny()))
        g = self.gamma
        if g == 0.0:
            log_total = ops.mean(log_l)
        elif abs(g) < 1.0:
            log_total = ops.log1p(ops.mean(ops.expm1(g * log_l))) / g
        else:
            log_total = (ops.logsumexp(g * log_l) - math.log(k)) / g
        total = ops.exp(log_total)
        weights = ops.exp((g - 1.0) * (ops.stop_gradient(log_l) - ops.stop_gradient(log_total))) / k
        return total, weights

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["gamma"] = self.gamma
        return config


@_register
@register_strategy("uncertainty")
class Uncertainty(Strategy):
    """Homoscedastic uncertainty: total = sum_i L_i / (2 sigma_i^2) + log sigma_i.

    Kendall, Gal & Cipolla, "Multi-Task Learning Using Uncertainty to Weigh
    Losses for Scene Geometry and Semantics" (CVPR 2018). The log-variances
    s_i = log sigma_i^2 are trainable (initialised to 0) and learned by the
    model's optimizer with the rest: total = sum_i (exp(-s_i) L_i + s_i) / 2,
    whose minimum over s_i is at sigma_i^2 = L_i (the noise variance for a
    squared-error loss). Logged weights are 1 / (2 sigma_i^2); `sigmas`
    returns sigma.

    Examples:
    >>> from keras import ops
    >>> s = Uncertainty().bind(["a", "b"])
    >>> [float(v) for v in s.combine(ops.convert_to_tensor([2.0, 4.0]))[1]]
    [0.5, 0.5]
    """

    def build(self, input_shape: Shape) -> None:
        self.log_variances = self.add_weight(
            shape=(input_shape[0],), initializer="zeros", trainable=True, name="log_variances"
        )
        self.built = True

    def combine(self, losses: Tensor, training: bool = True) -> tuple[Tensor, Tensor]:
        s = ops.cast(self.log_variances, "float32")
        scale = 0.5 * ops.exp(-s)
        return ops.sum(scale * losses + 0.5 * s), ops.stop_gradient(scale)

    @property
    def sigmas(self) -> Tensor:
        return ops.exp(0.5 * ops.convert_to_tensor(self.log_variances))


@_register
@register_strategy("dwa")
class DWA(Strategy):
    """Dynamic Weight Average: w_i(t) = k softmax_i(r_i(t-1) / T), total = sum_i w_i L_i.

    Liu, Johns & Davison, "End-to-End Multi-Task Learning with Attention"
    (CVPR 2019): r_i(t-1) = L_i(t-1) / L_i(t-2), the ratio of the task's mean
    training loss over the last two epochs; a task whose loss falls slowly
    gets more weight. w_i = 1 during the first two epochs. Epochs are
    delimited by `MultiTaskModel.fit` (which calls `end_epoch`); in a custom
    loop, call `end_epoch()` yourself. The loss history is saved with the
    model.

    Args:
        temperature: T > 0 (the paper's 2); larger is closer to equal weights.
    """

    def __init__(self, temperature: float = 2.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.temperature = float(validate_number("temperature", temperature, low=0, low_open=True))

    def build(self, input_shape: Shape) -> None:
        k = input_shape[0]

        def state(name, shape=(k,)):
            return self.add_weight(
                shape=shape, initializer="zeros", trainable=False, aggregation="mean", name=name
            )

        self.epoch_sum = state("epoch_sum")
        self.epoch_count = state("epoch_count", ())
        self.previous = state("previous")  # mean loss of epoch t-1
        self.before_previous = state("before_previous")  # of epoch t-2
        self.epochs = state("epochs", ())
        self.built = True

    def combine(self, losses: Tensor, training: bool = True) -> tuple[Tensor, Tensor]:
        k = float(ops.shape(losses)[0])
        previous = ops.convert_to_tensor(self.previous)
        ratio = safe_divide(previous, ops.convert_to_tensor(self.before_previous))
        weights = ops.where(
            ops.greater_equal(ops.convert_to_tensor(self.epochs), 2.0),
            k * ops.softmax(ratio / self.temperature),
            ops.ones_like(losses),
        )
        if training:
            self.epoch_sum.assign(self.epoch_sum + ops.stop_gradient(losses))
            self.epoch_count.assign(self.epoch_count + 1.0)
        return ops.sum(weights * losses), weights

    def end_epoch(self) -> None:
        count = float(ops.convert_to_numpy(self.epoch_count))
        if count == 0:
            return
        self.before_previous.assign(ops.convert_to_tensor(self.previous))
        self.previous.assign(ops.convert_to_tensor(self.epoch_sum) / count)
        self.epochs.assign(ops.convert_to_tensor(self.epochs) + 1.0)
        self.epoch_sum.assign(ops.zeros(self.epoch_sum.shape))
        self.epoch_count.assign(0.0)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["temperature"] = self.temperature
        return config
