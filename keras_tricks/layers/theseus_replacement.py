from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from keras_tricks._typing import Shape, Tensor
from keras_tricks._validation import check_bool, check_choice, check_float, check_int

_BRANCHES = ("successor", "predecessor")


def _as_block(name: str, value: Any) -> keras.layers.Layer:
    """A layer, a (serialised) layer config, or a non-empty list of either
    (chained in a `keras.Sequential`) -> one layer."""
    if isinstance(value, dict):
        value = keras.saving.deserialize_keras_object(value)
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError(f"`{name}` must be a layer or a non-empty list of layers, got an empty list.")
        items = [_as_block(f"{name}[{i}]", v) for i, v in enumerate(value)]
        block = keras.Sequential(items, name=name)
        # A Sequential hands a mask from layer to layer itself; say so, or
        # Keras warns that it drops the mask of its input.
        block.supports_masking = True
        return block
    if not isinstance(value, keras.layers.Layer):
        raise TypeError(
            f"`{name}` must be a keras Layer (a Model included), a list of layers or a layer "
            f"config dict, got {value!r} of type {type(value).__name__}."
        )
    return value


def _call_block(block: keras.layers.Layer, x: Tensor, mask: Tensor | None, training: Any) -> Tensor:
    kwargs = {}
    if mask is not None and ("mask" in _call_args(block)):
        kwargs["mask"] = mask
    if "training" in _call_args(block):
        kwargs["training"] = training
    return block(x, **kwargs)


def _call_args(layer: keras.layers.Layer) -> set[str]:
    import inspect

    return set(inspect.signature(layer.call).parameters)


@keras.saving.register_keras_serializable(package="keras_tricks")
class TheseusReplacement(keras.layers.Layer):
    """BERT-of-Theseus module replacement: a frozen predecessor block and the
    smaller successor that replaces it, chosen per batch.

    Xu et al. 2020, "BERT-of-Theseus: Compressing BERT by Progressive Module
    Replacing" (arXiv:2002.02925); Su Jianlin, "BERT-of-Theseus：基于模块替换
    的模型压缩方法" (kexue.fm/archives/7575). A teacher's stack of blocks is cut
    into groups (e.g. 6 blocks -> 3 groups of 2); each group (the
    *predecessor*) is wrapped with a smaller *successor* (e.g. 1 block). In
    training, for every batch and every module independently,

        r ~ Bernoulli(p),    y = r * successor(x) + (1 - r) * predecessor(x),

    with p the *replacement rate* (a variable, so a schedule such as
    `keras_tricks.callbacks.TheseusScheduler` changes it without a retrace).
    The successors thus learn to work with the teacher's remaining blocks,
    and at p = 1 the model is the successor alone
    (`keras_tricks.layers.extract_successor` then drops the predecessors).

    Design choices:

    - The predecessor is frozen (`trainable=False`), as in the paper: only
      the successor (and the layers outside the modules) learn.
      `freeze_predecessor=False` leaves it as it is.
    - One draw r per batch per module, from a seeded
      `keras.random.SeedGenerator` (whose state saves with the layer):
      r = [u < p], u ~ U[0, 1), so p = 0 is exactly the predecessor and
      p = 1 exactly the successor.
    - In training both blocks run and `ops.where` selects one: the output
      *and the gradients* are exactly those of the chosen block (the other
      receives a zero cotangent), but a training step costs both forward
      passes. A branch (`ops.cond`) would run only one, but cannot hold
      state updates (dropout's seed, batch statistics) on JAX.
    - At inference (`training` falsy) only the `inference` block runs:
      `"successor"` (the default: the compressed model is what one
      deploys) or `"predecessor"` (to evaluate the teacher). It is a Python
      attribute; after changing it, recompile (or call
      `model.make_predict_function(force=True)`) so predict traces again.
    - The mask, when the blocks take one, reaches both blocks; the output
      mask is the input mask (blocks keep the sequence axis).
    - The output is cast to the layer's compute dtype, so mixed precision
      gives one dtype whichever block ran.

    Args:
        predecessor: the block to replace: a layer (a `keras.Model`
            included), a list of layers (chained in a `keras.Sequential`),
            or a serialised layer config.
        successor: the replacing block, same forms; its output shape must
            equal the predecessor's.
        replace_rate: initial p, a number in [0, 1] (default 0.5).
        inference: `"successor"` or `"predecessor"`.
        freeze_predecessor: set `predecessor.trainable = False`.
        seed: int seed of the per-batch draws, or None.
        **kwargs: base `Layer` arguments.

    Input shape: whatever the blocks take (one tensor). Output shape: the
    blocks' common output shape.

    Examples:
    >>> import keras, keras_tricks
    >>> teacher = [keras.layers.Dense(8, activation="relu") for _ in range(2)]
    >>> module = keras_tricks.layers.TheseusReplacement(
    ...     teacher, keras.layers.Dense(8, activation="relu"), replace_rate=0.5, seed=0)
    >>> x = keras.ops.ones((2, 8))
    >>> tuple(module(x, training=True).shape), len(module.trainable_weights)
    ((2, 8), 2)
    """

    def __init__(
        self,
        predecessor: keras.layers.Layer | Sequence[keras.layers.Layer] | dict,
        successor: keras.layers.Layer | Sequence[keras.layers.Layer] | dict,
        replace_rate: float = 0.5,
        inference: str = "successor",
        freeze_predecessor: bool = True,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.predecessor = _as_block("predecessor", predecessor)
        self.successor = _as_block("successor", successor)
        if self.predecessor is self.successor:
            raise ValueError("`predecessor` and `successor` must be different layers, got the same object.")
        self._initial_rate = check_float("replace_rate", replace_rate, minimum=0.0, maximum=1.0)
        self.inference = check_choice("inference", inference, _BRANCHES)
        self.freeze_predecessor = check_bool("freeze_predecessor", freeze_predecessor)
        self.seed = check_int("seed", seed, allow_none=True)
        if self.freeze_predecessor:
            self.predecessor.trainable = False
        self.seed_generator = keras.random.SeedGenerator(self.seed, name="theseus_seed")
        self.replace_rate = self.add_weight(
            shape=(),
            dtype="float32",
            initializer=keras.initializers.Constant(self._initial_rate),
            trainable=False,
            autocast=False,  # p stays float32 under mixed precision (0.3 is not a float16)
            name="replace_rate",
        )
        self.supports_masking = True

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "inference" and hasattr(self, "inference"):
            value = check_choice("inference", value, _BRANCHES)
        super().__setattr__(name, value)

    def build(self, input_shape: Shape) -> None:
        # Both blocks now: a symbolic (inference) call runs the successor
        # only, and a block first built inside a compiled train step would
        # create its variables in the trace.
        self._input_shape = tuple(input_shape)
        for block in (self.predecessor, self.successor):
            if not block.built:
                block.build(input_shape)

    def _check_shapes(self, old: Tensor, new: Tensor) -> None:
        if tuple(old.shape) != tuple(new.shape):
            raise ValueError(
                "`successor` must give the predecessor's output shape: for input shape "
                f"{self._input_shape} the predecessor gives {tuple(old.shape)}, the successor "
                f"{tuple(new.shape)}."
            )

    def set_replace_rate(self, p: float) -> None:
        """Set p (a number in [0, 1]) without retracing."""
        self.replace_rate.assign(check_float("p", p, minimum=0.0, maximum=1.0))

    def call(self, inputs: Tensor, training: Any = None, mask: Tensor | None = None) -> Tensor:
        if not training:
            block = self.successor if self.inference == "successor" else self.predecessor
            return ops.cast(_call_block(block, inputs, mask, training), self.compute_dtype)
        old = ops.cast(_call_block(self.predecessor, inputs, mask, training), self.compute_dtype)
        new = ops.cast(_call_block(self.successor, inputs, mask, training), self.compute_dtype)
        self._check_shapes(old, new)
        u = keras.random.uniform((), dtype="float32", seed=self.seed_generator)
        return ops.where(u < ops.cast(self.replace_rate, "float32"), new, old)

    def compute_mask(self, inputs: Tensor, mask: Tensor | None = None) -> Tensor | None:
        return mask

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return self.successor.compute_output_shape(input_shape)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "predecessor": keras.saving.serialize_keras_object(self.predecessor),
                "successor": keras.saving.serialize_keras_object(self.successor),
                "replace_rate": self._initial_rate,
                "inference": self.inference,
                "freeze_predecessor": self.freeze_predecessor,
                "seed": self.seed,
            }
        )
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TheseusReplacement:
        return cls(**config)


def theseus_modules(model: keras.layers.Layer) -> list[TheseusReplacement]:
    """Every `TheseusReplacement` inside `model` (nested models included),
    each once, in layer order."""
    found: list[TheseusReplacement] = []
    seen: set[int] = set()

    def walk(layer: keras.layers.Layer) -> None:
        if id(layer) in seen:
            return
        seen.add(id(layer))
        if isinstance(layer, TheseusReplacement):
            found.append(layer)
            return
        for child in getattr(layer, "layers", None) or []:
            walk(child)

    walk(model)
    return found


def extract_successor(model: keras.Model) -> keras.Model:
    """The compressed model: a copy of the functional or Sequential `model`
    in which every `TheseusReplacement` is replaced by its successor block
    (the very same layer object, so its trained weights are kept, and no
    predecessor weight is left). Other layers are shared, not copied.

    >>> import keras, keras_tricks
    >>> inputs = keras.Input((8,))
    >>> module = keras_tricks.layers.TheseusReplacement(
    ...     [keras.layers.Dense(8), keras.layers.Dense(8)], keras.layers.Dense(8))
    >>> model = keras.Model(inputs, keras.layers.Dense(1)(module(inputs)))
    >>> small = keras_tricks.layers.extract_successor(model)
    >>> len(model.weights), len(small.weights)  # p and 4 predecessor weights dropped
    (9, 4)
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a keras.Model, got {model!r} of type {type(model).__name__}.")
    if not theseus_modules(model):
        raise ValueError("`model` holds no TheseusReplacement layer.")

    swapped: set[int] = set()

    def swap(layer: keras.layers.Layer) -> keras.layers.Layer:
        if isinstance(layer, TheseusReplacement):
            swapped.add(id(layer.successor))
            return layer.successor
        if isinstance(layer, keras.Model) and theseus_modules(layer):
            return extract_successor(layer)
        return layer

    def call(layer: keras.layers.Layer, *args: Any, **kwargs: Any) -> Any:
        if id(layer) in swapped:
            # The recorded call was the module's (inputs, training, mask);
            # pass on only what the successor block takes.
            return _call_block(layer, args[0], kwargs.get("mask"), kwargs.get("training"))
        return layer(*args, **kwargs)

    try:
        return keras.models.clone_model(model, clone_function=swap, call_function=call)
    except ValueError as e:
        raise ValueError(
            f"extract_successor needs a functional or Sequential model (clone_model failed: {e})."
        ) from None
