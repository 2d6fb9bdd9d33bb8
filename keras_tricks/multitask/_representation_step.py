"""The train step of gradient-based strategies in `representation` mode:
per-task gradients with respect to the shared representation z, then one
backward pass through the trunk.

    z = trunk(x), y = heads(z) -> k task losses (+ regularisation)
    -> one backward pass per task through the heads only: dL_i/dz and the
       heads' own gradients
    -> MultiTaskModel.representation_coefficients (the strategy on the Gram
       matrix of the dL_i/dz)
    -> one backward pass through the trunk with the cotangent
       sum_i c_i dL_i/dz, which is d(sum_i c_i L_i)/d(trunk)
    -> optimizer.apply -> metrics.

Sener & Koltun ("Multi-Task Learning as Multi-Objective Optimization",
NeurIPS 2018, Section 3.3) bound the Gram matrix of the parameter gradients
through the representation (MGDA-UB); the same cut serves every Gram-based
strategy. Loss scaling is handled as in `_train_step`.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_tricks.multitask import _train_step


def train_step(model: keras.Model, *args: Any) -> Any:
    return _train_step.dispatch(
        {"tensorflow": _tensorflow_step, "jax": _jax_step, "torch": _torch_step}, model, *args
    )


def _assemble(variables, head_vars, head_update, trunk_vars, trunk_update, reg_grads):
    """The update of every variable in `variables` order: its head part, its
    trunk part (a variable in both gets both), its regularisation gradient."""
    total = {}
    for parts_vars, parts in ((head_vars, head_update), (trunk_vars, trunk_update)):
        for v, g in zip(parts_vars, parts):
            if g is not None:
                total[id(v)] = g if id(v) not in total else total[id(v)] + g
    update = []
    for n, v in enumerate(variables):
        g = total.get(id(v))
        if g is None:
            g = ops.zeros(v.shape, v.dtype)
        if reg_grads is not None and reg_grads[n] is not None:
            g = g + reg_grads[n]
        update.append(g)
    return update


def _head_finite(head_grads, losses):
    finite = ops.all(ops.isfinite(losses))
    for grads in head_grads:
        for g in grads:
            finite = ops.logical_and(finite, ops.all(ops.isfinite(g)))
    return finite


def _tensorflow_step(model, data):
    import tensorflow as tf

    if tf.distribute.has_strategy() and tf.distribute.get_strategy().num_replicas_in_sync > 1:
        raise NotImplementedError(
            "MultiTaskModel(representation=...) does not support tf.distribute strategies with more "
            "than one replica yet; use the parameter gradients (no `representation`)."
        )
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    trunk, heads = model._split
    variables = model.trainable_variables
    trunk_vars, head_vars = trunk.trainable_variables, heads.trainable_variables
    with tf.GradientTape(persistent=True) as tape:
        z = trunk(x, training=True)
        y_pred = heads(z, training=True)
        losses = model.task_losses(y, y_pred, sample_weight)
        regularization = model._regularization()
        scale = _train_step._loss_scale(model)
        targets = _train_step._targets(model, losses, regularization, scale)
    k = len(model.tasks)
    z_grads, head_grads = [], []
    for i in range(k):
        found = tape.gradient(targets[i], [z] + head_vars)
        z_grads.append(ops.zeros_like(z) if found[0] is None else found[0])
        head_grads.append([_train_step._dense(v, g) for v, g in zip(head_vars, found[1:])])
    reg_grads = None
    extra = _head_finite(head_grads, losses)
    if regularization is not None:
        reg_grads = [
            _train_step._dense(v, g) for v, g in zip(variables, tape.gradient(targets[k], variables))
        ]
        extra = ops.logical_and(extra, ops.isfinite(regularization))
    shared, specific, weights = model.representation_coefficients(
        losses, z_grads, gradient_scale=scale, output_scale=scale, extra_finite=extra
    )
    cotangent = sum(ops.cast(shared[i], z.dtype) * z_grads[i] for i in range(k))
    trunk_update = [
        _train_step._dense(v, g)
        for v, g in zip(trunk_vars, tape.gradient(z, trunk_vars, output_gradients=cotangent))
    ]
    del tape
    head_update = model._weighted_sum(head_grads, head_vars, shared, specific)
    update = _assemble(variables, head_vars, head_update, trunk_vars, trunk_update, reg_grads)
    model.last_task_weights.assign(weights)
    model.optimizer.apply(update, variables)
    return _train_step._log(model, x, y, y_pred, sample_weight, losses, regularization, weights)


def _torch_step(model, data):
    import torch

    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    trunk, heads = model._split
    variables = model.trainable_variables
    trunk_vars, head_vars = trunk.trainable_variables, heads.trainable_variables
    model.zero_grad()
    z = trunk(x, training=True)
    y_pred = heads(z, training=True)
    losses = model.task_losses(y, y_pred, sample_weight)
    regularization = model._regularization()
    scale = _train_step._loss_scale(model)
    targets = _train_step._targets(model, losses, regularization, scale)
    k = len(model.tasks)
    head_params = [v.value for v in head_vars]
    z_grads, head_grads = [], []
    for i in range(k):
        found = torch.autograd.grad(targets[i], [z] + head_params, retain_graph=True, allow_unused=True)
        z_grads.append(torch.zeros_like(z) if found[0] is None else found[0])
        head_grads.append([torch.zeros_like(p) if g is None else g for p, g in zip(head_params, found[1:])])
    reg_grads = None
    with torch.no_grad():
        extra = _head_finite(head_grads, losses.detach())
    if regularization is not None:
        params = [v.value for v in variables]
        found = torch.autograd.grad(targets[k], params, retain_graph=True, allow_unused=True)
        reg_grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, found)]
        extra = torch.logical_and(extra, torch.isfinite(regularization.detach()))
    with torch.no_grad():
        losses = losses.detach()
        shared, specific, weights = model.representation_coefficients(
            losses, z_grads, gradient_scale=scale.detach(), output_scale=scale.detach(), extra_finite=extra
        )
        cotangent = sum(shared[i].to(z.dtype) * z_grads[i] for i in range(k))
    trunk_params = [v.value for v in trunk_vars]
    found = torch.autograd.grad(z, trunk_params, grad_outputs=cotangent, allow_unused=True)
    trunk_update = [torch.zeros_like(p) if g is None else g for p, g in zip(trunk_params, found)]
    with torch.no_grad():
        if regularization is not None:
            regularization = regularization.detach()
        head_update = model._weighted_sum(head_grads, head_vars, shared, specific)
        update = _assemble(variables, head_vars, head_update, trunk_vars, trunk_update, reg_grads)
        model.last_task_weights.assign(weights)
        model.optimizer.apply(update, variables)
        return _train_step._log(model, x, y, y_pred, sample_weight, losses, regularization, weights)


def _jax_step(model, state, data):
    import jax
    import jax.numpy as jnp
    from keras import StatelessScope

    trainable, non_trainable, optimizer_vars, metrics_vars = state
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    trunk, heads = model._split
    values = {id(v): t for v, t in zip(model.trainable_variables, trainable)}
    nt_values = {id(v): t for v, t in zip(model.non_trainable_variables, non_trainable)}
    trunk_vars, head_vars = trunk.trainable_variables, heads.trainable_variables
    optimizer_mapping = list(zip(model.optimizer.variables, optimizer_vars))
    # Whether the layers add losses (regularisers) is known while tracing.
    seen_losses = []

    def call(part, part_values, inputs):
        """`part` (the trunk or the heads) statelessly: (outputs, its new
        non-trainable values, the sum of its added losses, float32)."""
        out, new_nt, extra = part.stateless_call(
            part_values,
            [nt_values[id(v)] for v in part.non_trainable_variables],
            inputs,
            return_losses=True,
            training=True,
        )
        seen_losses.extend(extra)
        reg = (
            sum(jnp.sum(jnp.asarray(l, jnp.float32)) for l in extra) if extra else jnp.zeros((), jnp.float32)
        )
        return out, new_nt, reg

    def trunk_fn(trunk_values):
        z, new_nt, reg = call(trunk, trunk_values, x)
        return (z, reg), new_nt

    def heads_fn(head_values, z):
        y_pred, new_nt, reg = call(heads, head_values, z)
        with StatelessScope(state_mapping=optimizer_mapping):
            losses = model.task_losses(y, y_pred, sample_weight)
            scale = _train_step._loss_scale(model)
        targets = jnp.stack(_train_step._targets(model, losses, reg, scale))
        return targets, (losses, scale, y_pred, new_nt, reg)

    (z, trunk_reg), trunk_pullback, trunk_nt = jax.vjp(
        trunk_fn, [values[id(v)] for v in trunk_vars], has_aux=True
    )
    targets, heads_pullback, (losses, scale, y_pred, heads_nt, heads_reg) = jax.vjp(
        heads_fn, [values[id(v)] for v in head_vars], z, has_aux=True
    )
    k = len(model.tasks)
    basis = jnp.eye(targets.shape[0], dtype=targets.dtype)
    z_grads, head_grads = [], []
    for i in range(k):
        g_heads, g_z = heads_pullback(basis[i])
        z_grads.append(g_z)
        head_grads.append(list(g_heads))
    # Regularisation: the heads' part from the last target, the trunk's in
    # the trunk's one backward pass below (cotangent `scale` on its sum).
    regularization = (trunk_reg + heads_reg) if seen_losses else None
    extra = _head_finite(head_grads, losses)
    if regularization is not None:
        extra = jnp.logical_and(extra, jnp.isfinite(regularization))

    new_nt = dict(nt_values)
    new_nt.update(zip((id(v) for v in trunk.non_trainable_variables), trunk_nt))
    new_nt.update(zip((id(v) for v in heads.non_trainable_variables), heads_nt))
    non_trainable = [new_nt[id(v)] for v in model.non_trainable_variables]
    mapping = list(zip(model.trainable_variables, trainable))
    mapping += list(zip(model.non_trainable_variables, non_trainable))
    mapping += list(zip(model.metrics_variables, metrics_vars))
    with StatelessScope(state_mapping=mapping) as scope:
        shared, specific, weights = model.representation_coefficients(
            losses, z_grads, gradient_scale=scale, output_scale=scale, extra_finite=extra
        )
        cotangent = sum(shared[i].astype(z.dtype) * z_grads[i] for i in range(k))
        reg_cotangent = (
            scale.astype(jnp.float32) if regularization is not None else jnp.zeros((), jnp.float32)
        )
        (trunk_update,) = trunk_pullback((cotangent, reg_cotangent))
        head_update = model._weighted_sum(head_grads, head_vars, shared, specific)
        if regularization is not None:
            (g_heads_reg, _) = heads_pullback(basis[k])
            head_update = [u + r for u, r in zip(head_update, g_heads_reg)]
        update = _assemble(
            model.trainable_variables, head_vars, head_update, trunk_vars, list(trunk_update), None
        )
        model.last_task_weights.assign(weights)
        logs = _train_step._log(model, x, y, y_pred, sample_weight, losses, regularization, weights)

    non_trainable = _train_step.current_values(scope, model.non_trainable_variables, non_trainable)
    metrics_vars = _train_step.current_values(scope, model.metrics_variables, metrics_vars)
    trainable, optimizer_vars = model.optimizer.stateless_apply(optimizer_vars, update, trainable)
    return logs, (trainable, non_trainable, optimizer_vars, metrics_vars)
