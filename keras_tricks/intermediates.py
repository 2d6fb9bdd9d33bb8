"""Intermediate tensors from inside a layer's `call`, at prediction time,
without rebuilding the model.

Su Jianlin, "“让Keras更酷一些！”：中间变量、权重滑动和安全生成器" (2019),
https://kexue.fm/archives/6311. A layer marks a tensor it computes (an
attention matrix, a gate) with `record(self, "name", tensor)`; `capture`
runs the model in inference mode, compiled as Keras's `predict` would be,
and returns its outputs together with every marked tensor:

    outputs, found = capture(model, x)
    found["block_1/attention"]          # [one array per call of the layer]

`record` returns its tensor unchanged and, outside `capture`, does nothing
else: nothing is added to the graphs of `fit`, `predict` or a saved model,
so a marked layer costs nothing when nobody asks. Inside `capture` the marked
tensors become extra outputs of the one compiled function (`tf.function` on
TensorFlow, `jax.jit` of `stateless_call` on JAX; PyTorch runs eagerly under
`torch.no_grad()`), on every backend.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

import keras

from keras_tricks._typing import Tensor

_STATE = threading.local()
_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

__all__ = ["capture", "record"]


def record(layer: keras.layers.Layer | str, name: str, value: Tensor) -> Tensor:
    """Mark `value`, computed inside `layer.call`, as the intermediate
    `"<layer.name>/<name>"` (or `"<layer>/<name>"` for a string), and return
    it unchanged. Outside `capture` this is a no-op.

    Examples:
    >>> import keras
    >>> from keras_tricks import intermediates
    >>> class Gate(keras.layers.Layer):
    ...     def call(self, x):
    ...         gate = intermediates.record(self, "gate", keras.ops.sigmoid(x))
    ...         return x * gate
    >>> model = keras.Sequential([keras.Input((2,)), Gate(name="g")])
    >>> out, found = intermediates.capture(model, keras.ops.zeros((1, 2)))
    >>> found["g/gate"][0].tolist()
    [[0.5, 0.5]]
    """
    store = getattr(_STATE, "store", None)
    if store is None:
        return value
    if not isinstance(name, str) or not name:
        raise TypeError(f"`name` must be a non-empty string, got {name!r}.")
    owner = layer if isinstance(layer, str) else getattr(layer, "name", None)
    if not isinstance(owner, str):
        raise TypeError(f"`layer` must be a Keras layer or a string, got {type(layer).__name__}.")
    key = f"{owner}/{name}"
    _STATE.seen.add(key)
    if _STATE.names is None or key in _STATE.names:
        store.setdefault(key, []).append(value)
    return value


@contextlib.contextmanager
def _recording(names: frozenset[str] | None, seen: set[str]) -> Iterator[dict[str, list[Tensor]]]:
    if getattr(_STATE, "store", None) is not None:
        raise RuntimeError("capture() cannot run inside another capture().")
    _STATE.store, _STATE.names, _STATE.seen = {}, names, seen
    try:
        yield _STATE.store
    finally:
        _STATE.store, _STATE.names, _STATE.seen = None, None, None


def _compiled(model: keras.Model, names: frozenset[str] | None) -> tuple[Any, set[str]]:
    """The capturing function of `model` for `names`, and the set of every
    name its layers recorded (filled while tracing: compiled code runs no
    Python)."""
    per_model = _COMPILED.setdefault(model, {})
    if names in per_model:
        return per_model[names]
    seen: set[str] = set()
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        def run(trainable, non_trainable, inputs):
            with _recording(names, seen) as store:
                outputs, _ = model.stateless_call(trainable, non_trainable, inputs, training=False)
            return outputs, store

        jitted = jax.jit(run)

        def fn(inputs):
            return jitted(
                [v.value for v in model.trainable_variables],
                [v.value for v in model.non_trainable_variables],
                inputs,
            )

    elif backend == "tensorflow":
        import tensorflow as tf

        @tf.function(reduce_retracing=True)
        def fn(inputs):
            with _recording(names, seen) as store:
                outputs = model(inputs, training=False)
            return outputs, store

    else:

        def fn(inputs):
            import torch

            with torch.no_grad(), _recording(names, seen) as store:
                outputs = model(inputs, training=False)
            return outputs, store

    per_model[names] = fn, seen
    return fn, seen


def capture(
    model: keras.Model, inputs: Any, names: Sequence[str] | None = None
) -> tuple[Any, dict[str, list[Any]]]:
    """Run `model` on `inputs` (one batch, inference mode) and return
    `(outputs, intermediates)` as NumPy: `intermediates` maps each recorded
    `"<layer name>/<name>"` to the list of its values, one per call of the
    layer (a shared layer called twice gives two).

    Args:
        model: a built Keras model (functional, Sequential or subclassed).
        inputs: what `model(inputs)` takes: arrays or tensors, or a
            structure of them.
        names: record only these (the rest cost nothing); `None`, all.
            A requested name that no layer recorded is a `ValueError` that
            lists those recorded.

    Returns:
        `(outputs, {name: [array, ...]})`; bfloat16 values come back as
        float32 (NumPy has no bfloat16).

    The compiled function is cached per model and set of names (retraced
    only for new input shapes, as `predict`).
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a keras.Model, got {type(model).__name__}.")
    if not model.built:
        raise ValueError("`model` is not built; call it on data (or give it an Input) first.")
    if names is not None:
        if isinstance(names, str) or not all(isinstance(n, str) for n in names):
            raise TypeError(f"`names` must be a sequence of strings or None, got {names!r}.")
        names = frozenset(names)
    inputs = keras.tree.map_structure(keras.ops.convert_to_tensor, inputs)
    fn, seen = _compiled(model, names)
    outputs, store = fn(inputs)
    from keras_tricks.testing._core import to_numpy  # the one bfloat16-safe conversion

    found = {key: [to_numpy(v) for v in values] for key, values in store.items()}
    if names is not None and names - set(found):
        missing = sorted(names - set(found))
        raise ValueError(
            f"`names` {missing} were not recorded by any layer of the model; recorded: "
            f"{sorted(seen) or 'none'}."
        )
    return to_numpy(outputs), found
