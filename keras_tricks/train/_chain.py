"""How train-step tricks compose: two kinds of transformation, one chain.

A training step is, functionally,

    loss_fn(params, state) -> (objective, aux)          (forward + compiled loss)
    grad_fn(params, state) -> (objective, grads, aux)   (its gradient)

with `params` the trainable values, `state` the non-trainable values (the
dropout seed generators among them) and the metric values, and `aux` the
predictions, the new state and the task loss to log. Every trick is a small
object that rewrites one of these two functions and returns a function of
the same signature, so tricks stack the way optax's transformations do:

* a *loss trick* (R-Drop, gradient penalty) maps `loss_fn -> loss_fn`: it
  may call the loss it wraps several times (two passes with independent
  dropout) or differentiate it (a penalty on the gradient);
* a *gradient trick* (FGM, PGD) maps `grad_fn -> grad_fn`: it may call the
  gradient it wraps several times at perturbed parameters and add the results.

The chain is: loss tricks in the order given (the first one innermost), then
the gradient of the resulting objective times the loss scale, then the
gradient tricks in the order given. What stays outside the chain and so
composes with every trick unchanged: the compiled loss itself (`Flooding`
wraps it, each pass is flooded), the optimizer (`gradient_accumulation_steps`,
`LossScaleOptimizer`, the EMA wrapper all live in `optimizer.apply`), and the
dtype policy. The state threads through every call in order, so each forward
pass draws fresh dropout from the model's seed generators.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
from keras import ops

from keras_tricks import _backend, _keras_compat
from keras_tricks._typing import Tensor

# (params, non_trainable, metrics, x, y, sample_weight) -> (objective, aux)
LossFn = Callable[..., tuple[Tensor, dict[str, Any]]]
# (params, non_trainable, metrics, x, y, sample_weight) -> (objective, grads, aux)
GradFn = Callable[..., tuple[Tensor, list[Tensor], dict[str, Any]]]


class StepContext:
    """What a trick may read while its step is built: the model, the loss
    scale of this step and the index of a variable among the params."""

    def __init__(self, model: keras.Model, scale: Tensor) -> None:
        self.model = model
        self.scale = scale

    def index_of(self, variable: keras.Variable) -> int:
        for n, v in enumerate(self.model.trainable_variables):
            if v is variable:
                return n
        raise ValueError(
            f"The variable {variable.path!r} is not a trainable variable of the model "
            f"{self.model.name!r}; a trick can only perturb or penalise a trainable one."
        )


def base_loss_fn(model: keras.Model) -> LossFn:
    """One forward pass and the compiled loss, without side effects."""
    kwargs = {"training": True} if model._call_has_training_arg else {}

    def loss_fn(params, non_trainable, metrics, x, y, sample_weight):
        y_pred, non_trainable, losses = model.stateless_call(
            params, non_trainable, x, return_losses=True, **kwargs
        )
        with _keras_compat.losses_override(model, losses):
            loss, (_, non_trainable, metrics) = model.stateless_compute_loss(
                params, non_trainable, metrics, x=x, y=y, y_pred=y_pred, sample_weight=sample_weight
            )
        loss = ops.cast(loss, "float32")
        return loss, {"y_pred": y_pred, "non_trainable": non_trainable, "metrics": metrics, "loss": loss}

    return loss_fn


def gradient_of(loss_fn: LossFn, scale: Tensor) -> GradFn:
    """The gradient of `scale * objective` with respect to the params (the
    loss scale multiplies before differentiation, as in Keras's own step)."""

    def grad_fn(params, non_trainable, metrics, x, y, sample_weight):
        def scaled(p):
            objective, aux = loss_fn(p, non_trainable, metrics, x, y, sample_weight)
            return objective * scale, (objective, aux)

        _, (objective, aux), (grads,) = _backend.value_grad_and_aux(scaled, [list(params)])
        return objective, list(grads), aux

    return grad_fn


def build(model: keras.Model, tricks: Sequence[Any], scale: Tensor) -> GradFn:
    """The composed gradient function of one step (see the module doc)."""
    context = StepContext(model, scale)
    loss_fn = base_loss_fn(model)
    for trick in tricks:
        if trick.kind == "loss":
            loss_fn = trick.transform_loss(loss_fn, context)
    grad_fn = gradient_of(loss_fn, scale)
    for trick in tricks:
        if trick.kind == "gradient":
            grad_fn = trick.transform_gradients(grad_fn, context)
    return grad_fn
