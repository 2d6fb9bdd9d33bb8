"""Adversarial training on the embeddings: FGM, PGD and the gradient penalty.

All three act on one trainable variable the user names (the token embedding
matrix E; see `keras_tricks.train.find_variable`), and on the full
objective of the step (R-Drop's included when it is in the chain). g is the
gradient of the objective with respect to E, ||.|| the Frobenius norm of the
whole matrix (only the rows of the batch's tokens are non-zero).
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_tricks import _backend, _validation
from keras_tricks._typing import Tensor
from keras_tricks.train._chain import GradFn, LossFn, StepContext
from keras_tricks.train.base import Trick, find_variable


def _unit(g: Tensor) -> Tensor:
    """g / ||g|| in float32 (0 where g is 0). The norm is taken of g / max|g|,
    so that a loss-scaled gradient cannot overflow the sum of squares; a
    non-finite g gives a non-finite direction, which makes the step's
    gradient non-finite (a `LossScaleOptimizer` then skips the step)."""
    g = ops.cast(g, "float32")
    peak = ops.max(ops.abs(g))
    scaled = ops.divide_no_nan(g, peak)
    return ops.divide_no_nan(scaled, ops.sqrt(ops.sum(ops.square(scaled))))


def _project(r: Tensor, epsilon: float) -> Tensor:
    """r projected onto the ball ||r|| <= epsilon."""
    norm = ops.sqrt(ops.sum(ops.square(r)))
    return r * ops.minimum(1.0, ops.divide_no_nan(ops.convert_to_tensor(epsilon, "float32"), norm))


def _replace(params: list, index: int, value: Tensor) -> list:
    out = list(params)
    out[index] = value
    return out


def _add(grads: list, more: list) -> list:
    return [a + ops.cast(b, a.dtype) for a, b in zip(grads, more)]


def _check_embedding(embedding: Any) -> Any:
    if not isinstance(embedding, (str, keras.layers.Layer, keras.Variable)):
        raise TypeError(
            "`embedding` must be a layer name, a variable path, a layer or a keras.Variable; "
            f"got {embedding!r} of type {type(embedding).__name__}."
        )
    return embedding


class _Adversarial(Trick):
    adversarial = True

    def __init__(self, embedding: str | keras.layers.Layer | keras.Variable, epsilon: float) -> None:
        self.embedding = _check_embedding(embedding)
        self.epsilon = _validation.check_float("epsilon", epsilon, minimum=0.0, min_inclusive=False)
        self.variable: keras.Variable | None = None

    def bind(self, model: keras.Model) -> None:
        self.variable = find_variable(model, self.embedding)

    def _embedding_config(self) -> Any:
        e = self.embedding
        return e if isinstance(e, str) else e.path if isinstance(e, keras.Variable) else e.name


@keras.saving.register_keras_serializable(package="keras_tricks")
class FGM(_Adversarial):
    """Fast Gradient Method on the embedding (Miyato et al. 2017, "Adversarial
    Training Methods for Semi-Supervised Text Classification"; bert4keras's
    `adversarial_training`).

        r = epsilon * g / ||g||,   update gradient = grad L(E) + grad L(E + r)

    i.e. the step trains on L(E) + L(E + r), with r held constant; the
    perturbation lives only inside the step (E itself is never modified). One
    extra forward and backward pass. The logged `loss` is the clean one.

    Args:
        embedding: the embedding layer (name or object) or its variable
            (object or path).
        epsilon: the size of the perturbation, > 0 (bert4keras uses 0.5 to 1
            on BERT's token embeddings).

    Example:
    >>> import keras, numpy as np
    >>> from keras_tricks import train
    >>> x = keras.Input((4,), dtype="int32")
    >>> h = keras.layers.Embedding(10, 8, name="emb")(x)
    >>> out = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling1D()(h))
    >>> model = train.TrickModel(keras.Model(x, out), tricks=[train.FGM("emb", epsilon=0.5)])
    >>> model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> history = model.fit(np.ones((4, 4), "int32"), np.zeros(4), verbose=0)
    >>> sorted(history.history)
    ['loss']
    """

    kind = "gradient"

    def __init__(self, embedding: str | keras.layers.Layer | keras.Variable, epsilon: float = 1.0) -> None:
        super().__init__(embedding, epsilon)

    def transform_gradients(self, grad_fn: GradFn, context: StepContext) -> GradFn:
        index = context.index_of(self.variable)

        def fgm(params, non_trainable, metrics, x, y, sample_weight):
            objective, grads, aux = grad_fn(params, non_trainable, metrics, x, y, sample_weight)
            e = params[index]
            r = ops.cast(self.epsilon * _unit(grads[index]), e.dtype)
            _, adv, adv_aux = grad_fn(
                _replace(params, index, e + r), aux["non_trainable"], aux["metrics"], x, y, sample_weight
            )
            aux = dict(aux, non_trainable=adv_aux["non_trainable"], metrics=adv_aux["metrics"])
            return objective, _add(grads, adv), aux

        return fgm

    def get_config(self) -> dict[str, Any]:
        return {"embedding": self._embedding_config(), "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="keras_tricks")
class PGD(_Adversarial):
    """Projected Gradient Descent on the embedding (Madry et al. 2018,
    "Towards Deep Learning Models Resistant to Adversarial Attacks"), in the
    form used for language models (k steps, the clean gradient kept):

        r_0 = 0,  g_0 = grad_E L(E)
        r_t = Proj_{||r|| <= epsilon}(r_{t-1} + alpha * g_{t-1} / ||g_{t-1}||),
        g_t = grad_E L(E + r_t),                          t = 1..k
        update gradient = grad L(E) + grad L(E + r_k)

    k extra forward and backward passes (the first k - 1 only give a
    direction). The logged `loss` is the clean one.

    Args:
        embedding: as for `FGM`.
        epsilon: radius of the ball, > 0.
        alpha: step size, > 0; None: epsilon / steps (the common recipe
            for BERT is epsilon=1, alpha=0.3, steps=3).
        steps: k >= 1.

    Example:
    >>> from keras_tricks import train
    >>> train.PGD("emb", epsilon=1.0, steps=3)
    PGD(embedding='emb', epsilon=1.0, alpha=0.3333333333333333, steps=3)
    """

    kind = "gradient"

    def __init__(
        self,
        embedding: str | keras.layers.Layer | keras.Variable,
        epsilon: float = 1.0,
        alpha: float | None = None,
        steps: int = 3,
    ) -> None:
        super().__init__(embedding, epsilon)
        self.steps = _validation.check_int("steps", steps, minimum=1)
        alpha = self.epsilon / self.steps if alpha is None else alpha
        self.alpha = _validation.check_float("alpha", alpha, minimum=0.0, min_inclusive=False)

    def transform_gradients(self, grad_fn: GradFn, context: StepContext) -> GradFn:
        index = context.index_of(self.variable)

        def pgd(params, non_trainable, metrics, x, y, sample_weight):
            objective, grads, aux = grad_fn(params, non_trainable, metrics, x, y, sample_weight)
            e = params[index]
            g = grads[index]
            r = ops.zeros(ops.shape(e), "float32")
            state = aux
            for _ in range(self.steps):
                r = _project(r + self.alpha * _unit(g), self.epsilon)
                _, adv, state = grad_fn(
                    _replace(params, index, e + ops.cast(r, e.dtype)),
                    state["non_trainable"],
                    state["metrics"],
                    x,
                    y,
                    sample_weight,
                )
                g = adv[index]
            aux = dict(aux, non_trainable=state["non_trainable"], metrics=state["metrics"])
            return objective, _add(grads, adv), aux

        return pgd

    def get_config(self) -> dict[str, Any]:
        return {
            "embedding": self._embedding_config(),
            "epsilon": self.epsilon,
            "alpha": self.alpha,
            "steps": self.steps,
        }


@keras.saving.register_keras_serializable(package="keras_tricks")
class GradientPenalty(_Adversarial):
    """Gradient penalty on the embedding (Su Jianlin, "对抗训练浅谈：意义、方法和
    思考", https://kexue.fm/archives/7234): adversarial training to first order,

        L_gp = L(E) + 0.5 * epsilon * ||grad_E L(E)||^2

    (L(E + epsilon g/||g||) ~ L + epsilon ||g||; the post trains on the
    squared form, which is smooth at g = 0). One forward pass and a double
    backward pass (the gradient of a gradient). A loss trick: it penalises
    the objective it wraps (R-Drop's, when earlier in the chain). The logged
    `loss` is the task loss without the penalty.

    Args:
        embedding: as for `FGM`.
        epsilon: weight of the penalty, > 0 (the post uses 1).

    Example:
    >>> from keras_tricks import train
    >>> train.GradientPenalty("emb", epsilon=1.0)
    GradientPenalty(embedding='emb', epsilon=1.0)
    """

    kind = "loss"

    def __init__(self, embedding: str | keras.layers.Layer | keras.Variable, epsilon: float = 1.0) -> None:
        super().__init__(embedding, epsilon)

    def transform_loss(self, loss_fn: LossFn, context: StepContext) -> LossFn:
        index = context.index_of(self.variable)

        def penalised(params, non_trainable, metrics, x, y, sample_weight):
            def at(e):
                return loss_fn(_replace(params, index, e), non_trainable, metrics, x, y, sample_weight)

            objective, aux, (g,) = _backend.value_grad_and_aux(at, [params[index]], differentiable=True)
            g = ops.cast(g, "float32")
            return objective + 0.5 * self.epsilon * ops.sum(ops.square(g)), aux

        return penalised

    def get_config(self) -> dict[str, Any]:
        return {"embedding": self._embedding_config(), "epsilon": self.epsilon}
