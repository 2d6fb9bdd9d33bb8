"""The train step of gradient-based strategies: one backward pass per task.

Keras's train step differentiates one scalar; a gradient-based strategy needs
the gradient of every task loss separately. That takes each backend's own
autodiff (a persistent `tf.GradientTape`, `jax.vjp`, `torch.autograd.grad`),
so this module has one step per backend, all with the same shape:

    forward once -> k task losses (+ regularisation)
    -> one backward pass per task -> (TF) sum over replicas
    -> MultiTaskModel.combine_task_gradients (keras.ops, shared by all)
    -> optimizer.apply -> metrics.

Loss scaling (`LossScaleOptimizer`, `loss_scale_factor`) is honoured: the
losses are scaled before differentiation, the strategy sees the Gram matrix
divided by the scale squared, and the update keeps the scale for the
optimizer (which divides it out and skips non-finite steps); the scale only
ever multiplies the k coefficients, never the gradients themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
from keras import ops

from keras_tricks import _backend, _keras_compat
from keras_tricks._typing import Tensor


def train_step(model: keras.Model, *args: Any) -> Any:
    """The step of a gradient-based strategy on this backend (`model` is the
    `MultiTaskModel`; `args` what Keras passes to its `train_step`)."""
    return dispatch({"tensorflow": _tensorflow_step, "jax": _jax_step, "torch": _torch_step}, model, *args)


def dispatch(steps: dict[str, Callable[..., Any]], model: keras.Model, *args: Any) -> Any:
    """Run this backend's step from `steps` ({backend name: step})."""
    backend = _backend.name()
    if backend not in steps:
        raise NotImplementedError(f"Unsupported Keras backend {backend!r}.")
    return steps[backend](model, *args)


def loss_based_step(model: keras.Model, keras_step: Callable[..., Any], *args: Any) -> Any:
    """Keras's own train step, undone for the strategy's state when the optimizer skipped it.

    `LossScaleOptimizer` skips a step whose gradients are not finite (its
    `iterations` then stay put); the losses of that step must not enter the
    strategy's state (DWA's epoch means, Initial's measurement) nor the
    logged weights. A non-finite loss is already kept out by `compute_loss`
    (that covers optimizers that do not skip).
    """
    guarded = list(model.strategy.non_trainable_variables) + [model.last_task_weights]
    iterations = model.optimizer.iterations
    if _backend.name() == "jax":
        import jax.numpy as jnp

        state, data = args
        logs, new_state = keras_step(state, data)
        index = [n for n, v in enumerate(model.optimizer.variables) if v is iterations]
        if not index:
            return logs, new_state
        trainable, non_trainable, optimizer_vars, metrics_vars = new_state
        applied = jnp.not_equal(optimizer_vars[index[0]], state[2][index[0]])
        ids = {id(v) for v in guarded}
        non_trainable = [
            jnp.where(applied, new, old) if id(v) in ids else new
            for v, old, new in zip(model.non_trainable_variables, state[1], non_trainable)
        ]
        return logs, (trainable, non_trainable, optimizer_vars, metrics_vars)
    before = snapshot(guarded)
    count = ops.copy(ops.convert_to_tensor(iterations))
    logs = keras_step(*args)
    restore_unless(ops.not_equal(ops.convert_to_tensor(iterations), count), before)
    return logs


def snapshot(variables: list[Any]) -> list[tuple[Any, Tensor]]:
    """(variable, copy of its value) pairs, for `restore_unless`."""
    return [(v, ops.copy(ops.convert_to_tensor(v))) for v in variables]


def restore_unless(keep: Tensor, saved: list[tuple[Any, Tensor]]) -> None:
    """Put back the values `snapshot` saved, unless `keep` (a boolean scalar,
    traced or not: the choice is a `where`, not a Python branch)."""
    for variable, before in saved:
        variable.assign(ops.where(keep, ops.convert_to_tensor(variable), before))


def _targets(model, losses, regularization, scale):
    """The scalars to differentiate: each task's share of the step, scaled."""
    replicas = float(_backend.num_replicas_in_sync())
    targets = [losses[i] * (scale / replicas) for i in range(len(model.tasks))]
    if regularization is not None:
        targets.append(regularization * scale)
    return targets


def _finish(model, losses, regularization, grads, variables, scale):
    """Combine per-task gradients; returns (update for the optimizer, weights).

    grads[i] carry the loss scale; the optimizer divides the update by it
    again and (tf.distribute) sums the replicas' updates.
    """
    k = len(model.tasks)
    extra_finite = None
    if regularization is not None:
        extra_finite = ops.isfinite(regularization)
        for g in grads[k]:
            extra_finite = ops.logical_and(extra_finite, ops.all(ops.isfinite(g)))
    update, weights = model.combine_task_gradients(
        losses,
        grads[:k],
        variables,
        gradient_scale=scale,
        output_scale=scale / float(_backend.num_replicas_in_sync()),
        extra_finite=extra_finite,
    )
    if regularization is not None:
        update = [u + r for u, r in zip(update, grads[k])]
    model.last_task_weights.assign(weights)
    return update, weights


def _log(model, x, y, y_pred, sample_weight, losses, regularization, weights):

    batch = batch_size(x, y)
    total = ops.sum(losses)
    if regularization is not None:
        total = total + regularization
    _keras_compat.trainer_loss_tracker(model).update_state(total, sample_weight=batch)
    model._track(losses, weights, batch)
    return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)


def _loss_scale(model):
    return ops.convert_to_tensor(model.optimizer.scale_loss(ops.ones((), "float32")), "float32")


def _forward(model, x, y, sample_weight):
    y_pred = model(x, training=True) if model._call_has_training_arg else model(x)
    losses = model.task_losses(y, y_pred, sample_weight)
    return y_pred, losses, model._regularization()


def _tensorflow_step(model, data):
    import tensorflow as tf

    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    variables = model.trainable_variables
    with tf.GradientTape(persistent=True) as tape:
        y_pred, losses, regularization = _forward(model, x, y, sample_weight)
        scale = _loss_scale(model)
        targets = _targets(model, losses, regularization, scale)
    grads = []
    for target in targets:
        found = tape.gradient(target, variables)
        grads.append([_dense(v, g) for v, g in zip(variables, found)])
    del tape
    k = len(model.tasks)
    context = tf.distribute.get_replica_context()
    if context is not None and context.num_replicas_in_sync > 1:
        # Weights from the global batch, identical on every replica.
        grads[:k] = context.all_reduce(tf.distribute.ReduceOp.SUM, grads[:k])
        losses = context.all_reduce(tf.distribute.ReduceOp.MEAN, losses)
    update, weights = _finish(model, losses, regularization, grads, variables, scale)
    model.optimizer.apply(update, variables)
    return _log(model, x, y, y_pred, sample_weight, losses, regularization, weights)


def _dense(variable, gradient):
    """A TensorFlow gradient as a dense tensor: zeros for an unconnected
    variable, and an embedding's `IndexedSlices` densified, because the Gram
    matrix multiplies the tasks' gradients elementwise and the tasks look up
    different rows (one dense copy per task, the size of the table)."""
    import tensorflow as tf

    if gradient is None:
        return ops.zeros(variable.shape, variable.dtype)
    if isinstance(gradient, tf.IndexedSlices):
        return tf.convert_to_tensor(gradient)
    return gradient


def _torch_step(model, data):
    import torch

    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    variables = model.trainable_variables
    model.zero_grad()
    y_pred, losses, regularization = _forward(model, x, y, sample_weight)
    scale = _loss_scale(model)
    targets = _targets(model, losses, regularization, scale)
    params = [v.value for v in variables]
    grads = []
    for n, target in enumerate(targets):
        found = torch.autograd.grad(target, params, retain_graph=n < len(targets) - 1, allow_unused=True)
        grads.append([torch.zeros_like(p) if g is None else g for p, g in zip(params, found)])
    with torch.no_grad():
        losses = losses.detach()
        if regularization is not None:
            regularization = regularization.detach()
        update, weights = _finish(model, losses, regularization, grads, variables, scale.detach())
        model.optimizer.apply(update, variables)
        return _log(model, x, y, y_pred, sample_weight, losses, regularization, weights)


def _jax_step(model, state, data):
    import jax
    import jax.numpy as jnp
    from keras import StatelessScope

    trainable, non_trainable, optimizer_vars, metrics_vars = state
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    kwargs = {"training": True} if model._call_has_training_arg else {}
    optimizer_mapping = list(zip(model.optimizer.variables, optimizer_vars))

    def forward(trainable_values):
        y_pred, new_non_trainable, extra_losses = model.stateless_call(
            trainable_values, non_trainable, x, return_losses=True, **kwargs
        )
        mapping = list(zip(model.trainable_variables, trainable_values))
        mapping += list(zip(model.non_trainable_variables, new_non_trainable))
        with StatelessScope(state_mapping=mapping + optimizer_mapping):
            losses = model.task_losses(y, y_pred, sample_weight)
            scale = _loss_scale(model)
        regularization = None
        if extra_losses:
            regularization = sum(jnp.sum(jnp.asarray(l, jnp.float32)) for l in extra_losses)
        targets = jnp.stack(_targets(model, losses, regularization, scale))
        return targets, (losses, regularization, scale, y_pred, new_non_trainable)

    targets, pullback, aux = jax.vjp(forward, trainable, has_aux=True)
    losses, regularization, scale, y_pred, non_trainable = aux
    basis = jnp.eye(targets.shape[0], dtype=targets.dtype)
    grads = [pullback(basis[n])[0] for n in range(targets.shape[0])]

    mapping = list(zip(model.trainable_variables, trainable))
    mapping += list(zip(model.non_trainable_variables, non_trainable))
    mapping += list(zip(model.metrics_variables, metrics_vars))
    with StatelessScope(state_mapping=mapping) as scope:
        update, weights = _finish(model, losses, regularization, grads, model.trainable_variables, scale)
        logs = _log(model, x, y, y_pred, sample_weight, losses, regularization, weights)

    non_trainable = current_values(scope, model.non_trainable_variables, non_trainable)
    metrics_vars = current_values(scope, model.metrics_variables, metrics_vars)
    trainable, optimizer_vars = model.optimizer.stateless_apply(optimizer_vars, update, trainable)
    return logs, (trainable, non_trainable, optimizer_vars, metrics_vars)


def current_values(scope: Any, variables: list[Any], values: list[Any]) -> list[Any]:
    """The values a JAX `StatelessScope` assigned to `variables`, or the
    given ones where it assigned none."""
    out = []
    for ref, value in zip(variables, values):
        new = scope.get_current_value(ref)
        out.append(value if new is None else new)
    return out


def batch_size(x: Any, y: Any) -> int | Tensor:
    """The batch size of a step: the first axis of the first tensor with one
    (1 when there is none, e.g. scalar inputs)."""
    for t in keras.tree.flatten(x) + keras.tree.flatten(y):
        if t is not None and len(ops.shape(t)) > 0:
            return ops.shape(t)[0]
    return 1
