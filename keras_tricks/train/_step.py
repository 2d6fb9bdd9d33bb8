"""The train step of a `TrickModel` on each backend.

The same five stages everywhere; only how state is read and written differs
(variables on TensorFlow and PyTorch, the state tuple on JAX):

    loss scale -> composed grad_fn (keras_tricks.train._chain)
    -> write back non-trainable and metric values -> `loss` tracker
    -> optimizer.apply / stateless_apply -> compiled metrics.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_tricks import _backend, _keras_compat
from keras_tricks.multitask._train_step import batch_size
from keras_tricks.train import _chain


def _scale(model):
    return ops.convert_to_tensor(model.optimizer.scale_loss(ops.ones((), "float32")), "float32")


def _track_loss(model, loss, x, y):
    replicas = float(_backend.num_replicas_in_sync())
    _keras_compat.trainer_loss_tracker(model).update_state(loss * replicas, sample_weight=batch_size(x, y))


def train_step(model: keras.Model, tricks: list, *args: Any) -> Any:
    if _backend.name() == "jax":
        return _jax_step(model, tricks, *args)
    return _eager_step(model, tricks, *args)


def _values(variables):
    return [ops.convert_to_tensor(v) for v in variables]


def _eager_step(model, tricks, data):
    """TensorFlow (traced or not) and PyTorch: state lives in the variables."""
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    grad_fn = _chain.build(model, tricks, _scale(model))
    _, grads, aux = grad_fn(
        _values(model.trainable_variables),
        _values(model.non_trainable_variables),
        _values(model.metrics_variables),
        x,
        y,
        sample_weight,
    )
    for v, value in zip(model.non_trainable_variables, aux["non_trainable"]):
        v.assign(value)
    for v, value in zip(model.metrics_variables, aux["metrics"]):
        v.assign(value)
    _track_loss(model, aux["loss"], x, y)
    if model.trainable_variables:
        model.optimizer.apply(grads, model.trainable_variables)
    return model.compute_metrics(x, y, aux["y_pred"], sample_weight=sample_weight)


def _jax_step(model, tricks, state, data):
    from keras import StatelessScope

    trainable, non_trainable, optimizer_vars, metrics_vars = state
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    with StatelessScope(state_mapping=list(zip(model.optimizer.variables, optimizer_vars))):
        scale = _scale(model)
    grad_fn = _chain.build(model, tricks, scale)
    _, grads, aux = grad_fn(list(trainable), list(non_trainable), list(metrics_vars), x, y, sample_weight)
    non_trainable, metrics_vars = aux["non_trainable"], aux["metrics"]
    mapping = list(zip(model.trainable_variables, trainable))
    mapping += list(zip(model.non_trainable_variables, non_trainable))
    mapping += list(zip(model.metrics_variables, metrics_vars))
    with StatelessScope(state_mapping=mapping) as scope:
        _track_loss(model, aux["loss"], x, y)
        logs = model.compute_metrics(x, y, aux["y_pred"], sample_weight=sample_weight)
    metrics_vars = [
        value if scope.get_current_value(v) is None else scope.get_current_value(v)
        for v, value in zip(model.metrics_variables, metrics_vars)
    ]
    if model.trainable_variables:
        trainable, optimizer_vars = model.optimizer.stateless_apply(optimizer_vars, grads, trainable)
    return logs, (trainable, non_trainable, optimizer_vars, metrics_vars)
