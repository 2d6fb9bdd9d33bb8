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
    SeededStrategy,
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


def _loss_floor(epsilon: float | None) -> float:
    return eps() if epsilon is None else epsilon


@_register
@register_strategy("rlw")
class RLW(SeededStrategy):
    """Random loss weighting: w = softmax(e), e ~ N(0, I_k) drawn anew at every training step.

    Lin, Ye, Xu, Shi & Zhang, "Reasonable Effectiveness of Random Weighting:
    A Litmus Test for Multi-Task Learning" (TMLR 2022): total = sum_i w_i L_i
    with weights on the simplex (they sum to 1, as in the paper and LibMTL:
    the step is 1/k of `Equal`'s on average). Outside training (evaluation)
    the weights are 1/k, the mean of the distribution. The draws come from a
    `keras.random.SeedGenerator`, whose state is saved with the model, so a
    resumed run draws what an uninterrupted one would.

    Args:
        seed: int or None.

    Examples:
    >>> from keras import ops
    >>> s = RLW(seed=0).bind(["a", "b", "c"])
    >>> total, w = s.combine(ops.convert_to_tensor([1.0, 2.0, 3.0]))
    >>> round(float(ops.sum(w)), 5), tuple(w.shape)
    (1.0, (3,))
    """

    def combine(self, losses: Tensor, training: bool = True) -> tuple[Tensor, Tensor]:
        k = ops.shape(losses)[0]
        if training:
            weights = ops.softmax(keras.random.normal((k,), seed=self.seed_generator, dtype="float32"))
        else:
            weights = ops.ones((k,), "float32") / float(k)
        return ops.sum(weights * losses), weights


@_register
@register_strategy("famo")
class FAMO(Strategy):
    """FAMO: weights from learned logits that equalise the tasks' log-loss decrease, O(1) per step.

    Liu, Liang, Chen, Wang & Liu, "FAMO: Fast Adaptive Multitask
    Optimization" (NeurIPS 2023). With logits xi (k,), z = softmax(xi) and
    D_i = max(L_i - Lmin_i, 0) + epsilon:

        update direction  sum_i w_i grad L_i,  w_i = (z_i / D_i) / sum_j (z_j / D_j)
                          (= softmax(xi - log D)_i: the gradient of
                          sum_i z_i log D_i / c with c = sum_j z_j / D_j held constant),
        logit gradient    delta = log D(t-1) - log D(t)  (each task's log-loss decrease),
                          grad_xi = J_z^T delta = z * (delta - <z, delta>),
        logit step        xi <- xi - beta * Adam(grad_xi + gamma xi)   (optimizer="adam")
                          xi <- xi - beta * (grad_xi + gamma xi)        (optimizer="sgd", Algorithm 1).

    A task whose log-loss fell more than the others' gets a smaller logit.
    Conventions: the logit update at step t uses the losses of steps t-1
    and t (consecutive batches, as LibMTL), then step t is weighted with the
    updated logits; the authors' example instead re-evaluates the losses on
    the same batch after the step (an extra forward pass). Adam is PyTorch's
    (coupled weight decay, beta_1 = 0.9, beta_2 = 0.999), as the authors'
    code and LibMTL use. The logits, the previous log-losses and Adam's
    moments are saved with the model. Outside training the logits do not
    move. `total` = sum_i w_i L_i (a weighted mean of the losses).

    Args:
        learning_rate: beta > 0, the logits' step (paper and LibMTL: 0.025).
        weight_decay: gamma >= 0 on the logits (LibMTL: 1e-3).
        min_losses: None (0 for every task) or one number >= 0 per task, the
            losses' lower bounds Lmin.
        epsilon: added to D, > 0; None for the float32 machine epsilon
            (the authors' code: 1e-8).
        optimizer: "adam" or "sgd".
        adam_epsilon: Adam's denominator term (PyTorch's default 1e-8), > 0.

    Examples:
    >>> from keras import ops
    >>> s = FAMO().bind(["a", "b"])
    >>> _, w = s.combine(ops.convert_to_tensor([1.0, 3.0]))
    >>> [round(float(v), 4) for v in w]
    [0.75, 0.25]
    """

    def __init__(
        self,
        learning_rate: float = 0.025,
        weight_decay: float = 1e-3,
        min_losses: Sequence[float] | dict[str, float] | None = None,
        epsilon: float | None = None,
        optimizer: str = "adam",
        adam_epsilon: float = 1e-8,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.learning_rate = float(validate_number("learning_rate", learning_rate, low=0, low_open=True))
        self.weight_decay = float(validate_number("weight_decay", weight_decay, low=0))
        self.min_losses = validate_positive_values("min_losses", min_losses, allow_zero=True)
        if epsilon is not None:
            validate_number("epsilon", epsilon, low=0, low_open=True)
        self.epsilon = epsilon
        if optimizer not in ("adam", "sgd"):
            raise ValueError(f"`optimizer` must be 'adam' or 'sgd'; got {optimizer!r}.")
        self.optimizer = optimizer
        self.adam_epsilon = float(validate_number("adam_epsilon", adam_epsilon, low=0, low_open=True))

    def build(self, input_shape: Shape) -> None:
        k = input_shape[0]
        low = [0.0] * k if self.min_losses is None else self._task_value("min_losses", self.min_losses)
        self._min_losses = ops.convert_to_tensor(low, "float32")

        def state(name, shape=(k,)):
            return self.add_weight(
                shape=shape, initializer="zeros", trainable=False, aggregation="mean", name=name
            )

        self.logits = state("logits")
        self.previous_log_losses = state("previous_log_losses")
        self.started = state("started", ())
        self.first_moment = state("first_moment")
        self.second_moment = state("second_moment")
        self.updates = state("updates", ())
        self.built = True

    def _log_d(self, losses):
        return ops.log(ops.maximum(losses - self._min_losses, 0.0) + _loss_floor(self.epsilon))

    def combine(self, losses: Tensor, training: bool = True) -> tuple[Tensor, Tensor]:
        log_d = self._log_d(ops.stop_gradient(losses))
        # Copies: on PyTorch a variable's tensor is updated in place by assign.
        logits = ops.copy(ops.convert_to_tensor(self.logits))
        if training:
            started = ops.greater(ops.convert_to_tensor(self.started), 0.0)
            delta = ops.convert_to_tensor(self.previous_log_losses) - log_d
            z = ops.softmax(logits)
            grad = z * (delta - ops.sum(z * delta)) + self.weight_decay * logits
            if self.optimizer == "adam":
                b1, b2 = 0.9, 0.999
                t = ops.convert_to_tensor(self.updates) + 1.0
                m = b1 * ops.convert_to_tensor(self.first_moment) + (1.0 - b1) * grad
                v = b2 * ops.convert_to_tensor(self.second_moment) + (1.0 - b2) * grad * grad
                m_hat = m / (1.0 - ops.power(b1, t))
                v_hat = v / (1.0 - ops.power(b2, t))
                new = logits - self.learning_rate * m_hat / (ops.sqrt(v_hat) + self.adam_epsilon)
                self.first_moment.assign(ops.where(started, m, ops.convert_to_tensor(self.first_moment)))
                self.second_moment.assign(ops.where(started, v, ops.convert_to_tensor(self.second_moment)))
                self.updates.assign(ops.where(started, t, ops.convert_to_tensor(self.updates)))
            else:
                new = logits - self.learning_rate * grad
            logits = ops.where(started, new, logits)
            self.logits.assign(logits)
            self.previous_log_losses.assign(log_d)
            self.started.assign(1.0)
        weights = ops.softmax(logits - log_d)
        return ops.sum(weights * losses), weights

    @property
    def task_priorities(self) -> Tensor:
        """z = softmax(logits), the weights before the 1 / D_i scaling."""
        return ops.softmax(ops.convert_to_tensor(self.logits))

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "learning_rate": self.learning_rate,
                "weight_decay": self.weight_decay,
                "min_losses": self.min_losses,
                "epsilon": self.epsilon,
                "optimizer": self.optimizer,
                "adam_epsilon": self.adam_epsilon,
            }
        )
        return config


@_register
@register_strategy("stch")
class STCH(Strategy):
    """Smooth Tchebycheff scalarisation: total = mu log sum_i exp(p_i (f_i - z_i) / mu).

    Lin, Zhang, Zhang, Zhang & Zhang, "Smooth Tchebycheff Scalarization for
    Multi-Objective Optimization" (ICML 2024): a smooth max of the
    preference-weighted distances of the objectives f_i to the ideal point
    z; as mu -> 0 it tends to the Tchebycheff scalarisation
    max_i p_i (f_i - z_i), whose minimisers cover the whole Pareto front
    (convex or not). Effective weights:
    d total / d L_i = softmax_i(p (f - z) / mu) p_i df_i / dL_i.

    Conventions (the paper leaves z and the loss scales to the user):

    * f_i = L_i / n_i (or log(L_i / n_i) with `log_losses=True`, as LibMTL
      and the authors' MTL code), where n_i = 1, or with `warmup_steps` > 0
      the mean loss of the first `warmup_steps` training steps (the
      authors' "nadir" normalisation; during those steps total = sum_i f_i
      with n = 1: the plain sum of the losses, or of their logarithms).
      n is saved with the model.
    * z: `ideal` (one number per task), default 0, the ideal value of a
      non-negative loss (in log space: the loss equal to n_i).
    * p: `preference` (one number > 0 per task), default 1 for every task;
      multiplying p by a constant is the same as dividing mu by it.

    Losses are floored at the smallest normal float32 in the logarithm.

    Args:
        mu: smoothing > 0 (LibMTL's default 1).
        preference: None or one number > 0 per task.
        ideal: None or one finite number per task.
        warmup_steps: integer >= 0.
        log_losses: bool.

    Examples:
    >>> from keras import ops
    >>> s = STCH(mu=0.5).bind(["a", "b"])
    >>> total, w = s.combine(ops.convert_to_tensor([1.0, 1.0]))
    >>> round(float(total), 5), [round(float(v), 3) for v in w]
    (1.34657, [0.5, 0.5])
    """

    def __init__(
        self,
        mu: float = 1.0,
        preference: Sequence[float] | dict[str, float] | None = None,
        ideal: Sequence[float] | dict[str, float] | None = None,
        warmup_steps: int = 0,
        log_losses: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.mu = float(validate_number("mu", mu, low=0, low_open=True))
        self.preference = validate_positive_values("preference", preference)
        if ideal is not None:
            if not isinstance(ideal, (list, tuple, dict)):
                raise TypeError(
                    f"`ideal` must be a list, tuple or dict of numbers; got {type(ideal).__name__}."
                )
            values = ideal.values() if isinstance(ideal, dict) else ideal
            for v in values:
                validate_number("ideal", v)
            ideal = dict(ideal) if isinstance(ideal, dict) else [float(v) for v in ideal]
        self.ideal = ideal
        self.warmup_steps = validate_number("warmup_steps", warmup_steps, low=0, integer=True)
        if not isinstance(log_losses, bool):
            raise TypeError(f"`log_losses` must be a bool; got {log_losses!r}.")
        self.log_losses = log_losses

    def build(self, input_shape: Shape) -> None:
        k = input_shape[0]
        p = [1.0] * k if self.preference is None else self._task_value("preference", self.preference)
        z = [0.0] * k if self.ideal is None else self._task_value("ideal", self.ideal)
        self._preference = ops.convert_to_tensor(p, "float32")
        self._ideal = ops.convert_to_tensor(z, "float32")
        if self.warmup_steps:
            self.loss_sum = self.add_weight(
                shape=(k,), initializer="zeros", trainable=False, aggregation="mean", name="loss_sum"
            )
            self.count = self.add_weight(
                shape=(), initializer="zeros", trainable=False, aggregation="mean", name="count"
            )
        self.built = True

    def _transform(self, losses, scale):
        """f and df/dL for losses (k,) and scales n (k,)."""
        if self.log_losses:
            floored = ops.maximum(losses, tiny())
            f = ops.log(floored) - ops.log(scale)
            slope = ops.where(ops.greater(losses, tiny()), 1.0 / floored, 0.0)
            return f, slope
        return losses / scale, 1.0 / scale

    def combine(self, losses: Tensor, training: bool = True) -> tuple[Tensor, Tensor]:
        observed = ops.stop_gradient(losses)
        ones = ops.ones_like(observed)
        warming = None
        if self.warmup_steps:
            loss_sum = ops.convert_to_tensor(self.loss_sum)
            count = ops.convert_to_tensor(self.count)
            warming = ops.less(count, float(self.warmup_steps))
            if training:
                loss_sum = ops.where(warming, loss_sum + observed, loss_sum)
                self.loss_sum.assign(loss_sum)
                self.count.assign(ops.where(warming, count + 1.0, count))
            scale = ops.where(warming, ones, ops.maximum(loss_sum / ops.maximum(count, 1.0), tiny()))
        else:
            scale = ones
        f, slope = self._transform(losses, scale)
        x = self._preference * (f - self._ideal) / self.mu
        total = self.mu * ops.logsumexp(x)
        weights = ops.stop_gradient(ops.softmax(x) * self._preference * ops.stop_gradient(slope))
        if warming is not None:
            total = ops.where(warming, ops.sum(f), total)
            weights = ops.where(warming, ops.stop_gradient(slope), weights)
        return total, weights

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "mu": self.mu,
                "preference": self.preference,
                "ideal": self.ideal,
                "warmup_steps": self.warmup_steps,
                "log_losses": self.log_losses,
            }
        )
        return config
