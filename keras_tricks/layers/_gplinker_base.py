"""What GPLinker's relation and event heads share: three span heads of one
kind (`GlobalPointer` or `EfficientGlobalPointer`) over the same hidden
states, concatenated on the channel axis into one score tensor."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_tricks import _validation
from keras_tricks._typing import Identifier, Shape, Tensor
from keras_tricks.layers.efficient_global_pointer import EfficientGlobalPointer
from keras_tricks.layers.global_pointer import GlobalPointer


class LinkedSpanHeads(keras.layers.Layer):
    """Base of `GPLinkerHeads` and `GPLinkerEventHeads`. A subclass creates
    its heads with `_head(...)` in `__init__` (as attributes, so that Keras
    tracks and saves them under stable names) and lists them, in channel
    order, in `_parts()`."""

    def __init__(
        self,
        head_size: int,
        efficient: bool,
        use_bias: bool,
        kernel_initializer: Identifier,
        bias_initializer: Identifier,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.head_size = _validation.check_int("head_size", head_size, minimum=1)
        self.efficient = _validation.check_bool("efficient", efficient)
        self.use_bias = _validation.check_bool("use_bias", use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.supports_masking = True

    def _head(self, heads: int, name: str, **options: Any) -> keras.layers.Layer:
        cls = EfficientGlobalPointer if self.efficient else GlobalPointer
        return cls(
            heads=heads,
            head_size=self.head_size,
            use_bias=self.use_bias,
            kernel_initializer=self.kernel_initializer,
            bias_initializer=self.bias_initializer,
            dtype=self.dtype_policy,
            name=name,
            **options,
        )

    def _parts(self) -> tuple[keras.layers.Layer, ...]:
        raise NotImplementedError

    def build(self, input_shape: Shape) -> None:
        for head in self._parts():
            head.build(input_shape)

    def call(self, inputs: Tensor, mask: Tensor | None = None) -> Tensor:
        return ops.concatenate([head(inputs, mask=mask) for head in self._parts()], axis=1)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        shapes = [head.compute_output_shape(input_shape) for head in self._parts()]
        first = shapes[0]
        return (first[0], sum(s[1] for s in shapes), first[2], first[3])

    def compute_output_spec(self, inputs: keras.KerasTensor, mask: Tensor | None = None) -> keras.KerasTensor:
        spec = self._parts()[0].compute_output_spec(inputs)
        return keras.KerasTensor(self.compute_output_shape(inputs.shape), dtype=spec.dtype)

    def compute_mask(self, inputs: Tensor, mask: Tensor | None = None) -> None:
        return None

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "head_size": self.head_size,
                "efficient": self.efficient,
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            }
        )
        return config
