"""`layerwise_lr_decay`: a smaller learning rate for the lower layers of a
stack, built on Keras's own `MultiOptimizer` where Keras has it, on
`ScaledUpdates` where it does not."""

from __future__ import annotations

import re
from collections.abc import Sequence

import keras

from keras_tricks import _validation
from keras_tricks.optimizers.piecewise_linear import PiecewiseLinear
from keras_tricks.optimizers.scaled_updates import ScaledUpdates


def _multi_optimizer():
    """Keras's (MultiOptimizer, OptimizerMap), or None where the installed
    Keras lacks them (before 3.15)."""
    multi = getattr(keras.optimizers, "MultiOptimizer", None)
    optimizer_map = getattr(keras.optimizers, "OptimizerMap", None)
    return None if multi is None or optimizer_map is None else (multi, optimizer_map)


def _scaled_learning_rate(learning_rate, factor):
    if isinstance(learning_rate, dict):
        learning_rate = keras.saving.deserialize_keras_object(learning_rate)
    if isinstance(learning_rate, PiecewiseLinear):
        config = learning_rate.get_config()
        config["learning_rate"] = config["learning_rate"] * factor
        return PiecewiseLinear(**config)
    if isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule):
        raise TypeError(
            "`optimizer` has a learning-rate schedule of type "
            f"{type(learning_rate).__name__}; layerwise_lr_decay can scale a float learning rate or a "
            "keras_tricks PiecewiseLinear (whose `learning_rate` it multiplies)."
        )
    return float(learning_rate) * factor


def layerwise_lr_decay(
    optimizer: keras.optimizers.Optimizer,
    layers: Sequence[keras.layers.Layer],
    decay: float,
) -> keras.optimizers.Optimizer:
    """Layer-wise learning-rate decay (as in ELECTRA / BEiT fine-tuning).

    `layers = [l_0, ..., l_{L-1}]` lists a stack from the input side up
    (typically the embedding layer, then the L - 1 blocks). The variables of
    `l_i` get the learning rate

        lr_i = lr * decay ** (L - i)

    so the top listed layer gets `lr * decay`, the embeddings
    `lr * decay ** L`, and every variable outside the listed layers (the
    head, a classifier on top) the base `lr` of `optimizer`. Each layer gets
    its own copy of `optimizer` (same class and settings, its learning rate
    scaled; a `PiecewiseLinear` schedule is scaled through its
    `learning_rate`), dispatched by Keras's `keras.optimizers.MultiOptimizer`
    on the variable paths, so the result saves to `.keras` as any Keras
    optimizer does. Scaling the gradients instead would be wrong for Adam
    and the like (their update does not depend on the gradient's scale).

    On a Keras without `keras.optimizers.MultiOptimizer` (before 3.15) it
    returns `ScaledUpdates(optimizer, {layer path: decay ** (L - i)})`
    instead: one optimizer whose update of each listed layer's variables is
    multiplied by the factor, which trains the same weights for every
    optimizer whose update is proportional to its learning rate (all of
    Keras's but Ftrl and Adafactor's relative step; tested against the
    same float64 reference as the MultiOptimizer path). Its
    `learning_rate` is the base rate.

    Args:
        optimizer: an unbuilt optimizer, used as the head's (unlisted
            variables') optimizer and as the template of the others.
        layers: the stack, bottom first; a layer must not contain another.
        decay: the factor per layer, in (0, 1].

    Example:

    >>> import keras
    >>> from keras_tricks.optimizers import layerwise_lr_decay
    >>> inputs = keras.Input((4,))
    >>> h1 = keras.layers.Dense(4, name="block_1")
    >>> h2 = keras.layers.Dense(4, name="block_2")
    >>> head = keras.layers.Dense(1, name="head")
    >>> model = keras.Model(inputs, head(h2(h1(inputs))))
    >>> opt = layerwise_lr_decay(keras.optimizers.Adam(1e-3), [h1, h2], decay=0.5)
    >>> model.compile(optimizer=opt, loss="mse")
    >>> _ = model.fit(keras.ops.ones((4, 4)), keras.ops.zeros((4, 1)), verbose=0)
    """
    multi = _multi_optimizer()
    _validation.check_type("optimizer", optimizer, keras.optimizers.Optimizer, "a keras.optimizers.Optimizer")
    if optimizer.built:
        raise ValueError("`optimizer` is already built; pass a fresh one.")
    refused = (keras.optimizers.LossScaleOptimizer, ScaledUpdates) + ((multi[0],) if multi else ())
    if isinstance(optimizer, refused):
        raise ValueError(
            f"`optimizer` must be a plain optimizer, got a {type(optimizer).__name__} "
            "(compile() adds the LossScaleOptimizer under mixed precision by itself)."
        )
    decay = _validation.check_float("decay", decay, minimum=0.0, maximum=1.0, min_inclusive=False)
    if isinstance(layers, keras.layers.Layer) or not isinstance(layers, Sequence) or not layers:
        raise TypeError(f"`layers` must be a non-empty list of Keras layers, got {layers!r}.")
    paths = []
    for layer in layers:
        _validation.check_type("layers", layer, keras.layers.Layer, "a list of Keras layers")
        paths.append(getattr(layer, "path", None) or layer.name)
    for a in paths:
        for b in paths:
            if a == b and paths.count(a) > 1 or (a != b and b.startswith(a + "/")):
                raise ValueError(f"`layers` must be distinct and not nested, got {a!r} and {b!r}.")
    depth = len(layers)
    if multi is None:
        return ScaledUpdates(
            optimizer, {re.escape(p) + "/.*": decay ** (depth - i) for i, p in enumerate(paths)}
        )
    multi, optimizer_map = multi
    config = optimizer.get_config()
    mapping = {}
    for i, path in enumerate(paths):
        factor = decay ** (depth - i)
        layer_config = dict(config)
        layer_config["learning_rate"] = _scaled_learning_rate(config["learning_rate"], factor)
        layer_config["name"] = f"{config['name']}_layer_{i}"
        mapping[re.escape(path) + "/.*"] = type(optimizer).from_config(layer_config)
    return multi(optimizer_map(optimizer, mapping))
