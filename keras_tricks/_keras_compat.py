"""Every use of Keras internals, and nothing else.

Keras 3 does not export everything a training trick needs: the reduction that
`Loss.__call__` applies, the wrapper `compile()` puts around a loss function,
the mask a tensor carries, the tracking switch of optimizers, the trainer's
loss tracker, the optimizer's `tf.distribute` strategy, the global seed
generator. Those live under `keras.src` or behind private attributes, which
Keras may move or rename in any release. Here is the only place the package
touches them, so that a Keras upgrade breaks in one file, and CI runs the suite
on the minimum Keras version the package declares as well as on the latest.

Each function says what it reaches into and why there is no public path.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: the data generator's workers use this module too
    import keras

__all__ = [
    "get_keras_mask",
    "reduce_weighted_values",
    "loss_function_wrapper",
    "no_automatic_dependency_tracking",
    "trainer_loss_tracker",
    "optimizer_distribution_strategy",
    "set_optimizer_distribution_strategy",
    "optimizer_trainable_variables",
    "variable_layout",
    "tf_maybe_merge_call",
    "keras_state_imported",
    "reset_global_seed_generator",
    "global_seed_generator_state",
    "restore_global_seed_generator",
    "data_adapter_base",
    "generator_data_adapter",
    "query_scaled_multi_head_attention",
    "losses_override",
]


def get_keras_mask(x: Any) -> Any:
    """The Keras mask a tensor carries (`None` if none).

    Public Keras reads it through `keras.src.backend.get_keras_mask`; the
    attribute is `_keras_mask` on every backend.
    """
    from keras.src.backend import get_keras_mask as _get

    return _get(x)


def reduce_weighted_values(
    values: Any,
    sample_weight: Any = None,
    mask: Any = None,
    reduction: str | None = "sum_over_batch_size",
    dtype: Any = None,
) -> Any:
    """The reduction `keras.losses.Loss.__call__` applies (sample weights,
    masks, reduction, `tf.distribute` scaling), so that a wrapped loss is
    reduced exactly as Keras reduces it."""
    from keras.src.losses.loss import reduce_weighted_values as _reduce

    return _reduce(values, sample_weight=sample_weight, mask=mask, reduction=reduction, dtype=dtype)


def loss_function_wrapper(fn: Any, name: str | None = None) -> keras.losses.Loss:
    """The `Loss` that `compile()` wraps a plain loss function in."""
    from keras.src.losses.losses import LossFunctionWrapper

    return LossFunctionWrapper(fn, name=name)


def no_automatic_dependency_tracking(method: Any) -> Any:
    """Decorator: attributes set inside `method` are not tracked as the
    object's variables (an optimizer wrapper keeps lists of the variables it
    averages without Keras saving them twice)."""
    from keras.src.utils.tracking import no_automatic_dependency_tracking as _no_tracking

    return _no_tracking(method)


def trainer_loss_tracker(model: keras.Model) -> keras.metrics.Metric:
    """The `Mean` metric behind the `loss` log of `fit()`/`evaluate()`.

    A custom `train_step` that computes its own total loss must update it, as
    Keras's own `compute_loss` does.
    """
    return model._loss_tracker


def optimizer_distribution_strategy(optimizer: keras.optimizers.Optimizer) -> Any:
    """The `tf.distribute` strategy a TensorFlow optimizer was created under."""
    return getattr(optimizer, "_distribution_strategy", None)


def set_optimizer_distribution_strategy(optimizer: keras.optimizers.Optimizer, strategy: Any) -> None:
    """Make `optimizer` create (and mirror) its variables under `strategy`."""
    optimizer._distribution_strategy = strategy


def optimizer_trainable_variables(optimizer: keras.optimizers.Optimizer) -> list:
    """The variables a built optimizer updates, in its own order."""
    variables = list(optimizer._trainable_variables)
    inner = getattr(optimizer, "inner_optimizer", None)
    if not variables and inner is not None:
        # Keras 3.10's LossScaleOptimizer.build builds the optimizer it wraps
        # but not its own base class, so its list stays empty (3.15 fills
        # it); the wrapped optimizer's is the same list.
        return optimizer_trainable_variables(inner)
    return variables


def layer_own_variables(layer: keras.layers.Layer) -> list:
    """The variables a layer created itself with `add_weight` (trainable,
    then non-trainable), without those of its sublayers or of attached
    objects such as a `SeedGenerator`: Keras keeps them in private lists
    and has no public accessor for just these."""
    return list(layer._trainable_variables) + list(layer._non_trainable_variables)


def variable_layout(variable: keras.Variable) -> Any:
    """The `keras.distribution` layout a variable was created with (None
    without one): private `_layout`, the attribute Keras's own
    `add_variable_from_reference` reads so that optimizer slots shard like
    their variables; there is no public accessor."""
    return getattr(variable, "_layout", None)


def set_initial_epoch(model: keras.Model, epoch: int) -> None:
    """Make the running `fit()` start at `epoch`: every backend's `fit()` reads
    `model._initial_epoch` after `on_train_begin` (what Keras's own
    BackupAndRestore sets)."""
    model._initial_epoch = int(epoch)


def tf_maybe_merge_call(fn: Any, strategy: Any, *args: Any) -> Any:
    """`tf.distribute`'s merge call: run `fn` once in cross-replica context
    when inside a replica context (what Keras's own TF optimizer does to
    apply its updates)."""
    import tensorflow as tf

    return tf.__internal__.distribute.interim.maybe_merge_call(fn, strategy, *args)


def _global_state() -> Any:
    # Read from sys.modules rather than imported: a data-generator worker
    # process that never imported Keras must not import it (and its backend)
    # just to reset a seed.
    return sys.modules.get("keras.src.backend.common.global_state")


def keras_state_imported() -> bool:
    """Whether Keras's global state module is loaded in this process."""
    return _global_state() is not None


def global_seed_generator_state() -> Any:
    """The global `SeedGenerator` that unseeded `keras.random.*` calls draw
    from (`None` when Keras is not imported or none was made yet)."""
    state = _global_state()
    return None if state is None else state.get_global_attribute("global_seed_generator")


def reset_global_seed_generator() -> None:
    """Drop the global `SeedGenerator`, so the next unseeded `keras.random.*`
    call makes a new one from Python's `random` (which the caller seeded)."""
    state = _global_state()
    if state is not None:
        state.set_global_attribute("global_seed_generator", None)


def restore_global_seed_generator(generator: Any) -> None:
    """Put back a global `SeedGenerator` taken with `global_seed_generator_state`."""
    state = _global_state()
    if state is not None:
        state.set_global_attribute("global_seed_generator", generator)


def data_adapter_base() -> type:
    """Keras's `DataAdapter` base class.

    `fit()`, `evaluate()` and `predict()` take an instance of it as `x` as it
    is (Keras 3.10 to 3.15: "Allow passing a custom data adapter"), and call
    its `on_epoch_end` in the calling thread; no public name exports it.
    """
    from keras.src.trainers.data_adapters.data_adapter import DataAdapter

    return DataAdapter


def generator_data_adapter(generator: Any) -> Any:
    """Keras's own adapter for a Python generator (what `fit(generator)` uses)."""
    from keras.src.trainers.data_adapters.generator_data_adapter import GeneratorDataAdapter

    return GeneratorDataAdapter(generator)


def padded_shape_tf_dataset(adapter: Any) -> Any:
    """`adapter.get_tf_dataset()` with the axes that per-batch padding can
    change of unknown size. Keras's generator adapter fixes each axis on which
    its first two batches agree, so batches padded per batch whose first two
    share a length fail later ("Generator yielded an element of shape ...");
    its `_output_signature` (3.10 to 3.15) is where it keeps that guess.

    Every axis becomes unknown but the feature axis, which a model without an
    `Input` builds its weights from: the last axis of an array of rank 3 or
    more, and of a floating rank-2 input (`(batch, features)`). So a rank-2
    integer input, token ids `(batch, n)`, and rank-1/2 targets and weights
    are free on every axis."""
    import tensorflow as tf
    from keras.src.trainers.data_adapters import data_adapter_utils

    if adapter._output_signature is None:

        def relaxed(inputs):
            def relax(spec):
                if type(spec) is not tf.TensorSpec or spec.shape.rank in (None, 0):
                    return spec
                rank = spec.shape.rank
                shape = [None] * rank
                if rank >= 3 or (inputs and rank == 2 and spec.dtype.is_floating):
                    shape[-1] = spec.shape[-1]
                return tf.TensorSpec(shape, spec.dtype, spec.name)

            return relax

        spec = data_adapter_utils.get_tensor_spec(adapter._first_batches)
        adapter._output_signature = tuple(
            tf.nest.map_structure(relaxed(k == 0), part) for k, part in enumerate(spec)
        )
    return adapter.get_tf_dataset()


_QUERY_SCALED_MHA: list = []


def query_scaled_multi_head_attention() -> type:
    """A `keras.layers.MultiHeadAttention` subclass whose attention calls
    `self.query_scale(query, attention_mask, use_causal_mask)` (a tensor
    broadcastable to the projected query `(B, T, N, H)`) and multiplies the
    projected query by it before the dot product: a per-query scale of the
    logits, on every attention path of Keras (explicit, `dot_product_attention`,
    flash).

    Keras has no public hook for the attention scale; its docstring invites
    overriding `_compute_attention`, whose signature grew
    (`return_attention_scores`, `use_causal_mask`) between 3.10 and 3.15,
    hence the pass-through of extra arguments.
    """
    if not _QUERY_SCALED_MHA:
        import keras

        class QueryScaledMultiHeadAttention(keras.layers.MultiHeadAttention):
            def _compute_attention(
                self, query, key, value, attention_mask=None, training=None, *args, **kwargs
            ):
                use_causal_mask = bool(kwargs.get("use_causal_mask", False))
                scale = self.query_scale(query, key, attention_mask, use_causal_mask)
                query = keras.ops.multiply(query, keras.ops.cast(scale, query.dtype))
                return super()._compute_attention(
                    query, key, value, attention_mask, training, *args, **kwargs
                )

        _QUERY_SCALED_MHA.append(QueryScaledMultiHeadAttention)
    return _QUERY_SCALED_MHA[0]


class losses_override:  # noqa: N801 - used as a context manager, like Keras's own scopes
    """Make `model.losses` return `losses` inside the block.

    A functional train step computes the model's added losses with
    `stateless_call(..., return_losses=True)`; Keras's `compute_loss` reads
    `model.losses`, which outside the call no longer holds them. Keras's own
    JAX trainer sets the private `_losses_override` list for this; there is
    no public switch.
    """

    def __init__(self, model: Any, losses: list) -> None:
        self.model = model
        self.losses = list(losses)

    def __enter__(self) -> None:
        if self.losses:
            self.model._losses_override.clear()
            self.model._losses_override = self.losses

    def __exit__(self, *exc: Any) -> None:
        if self.losses:
            self.model._losses_override = []
