from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from keras_tricks._typing import Shape, Tensor


@keras.saving.register_keras_serializable(package="keras_tricks")
class AttachMask(keras.layers.Layer):
    """Pass a sequence through unchanged, carrying a given padding mask as its
    Keras mask.

    Backbones that take the padding as an input rather than as a Keras mask
    (keras_hub's BERT, RoBERTa, DeBERTa-v3, Gemma, Llama: their
    `sequence_output` carries no mask on any backend) leave the heads after
    them blind to the padding. Called on `[x, padding_mask]`, this layer
    returns `x` itself with `padding_mask` (nonzero or True: a real token) as
    its Keras mask, which Keras then hands to every mask-aware layer after
    it: `GlobalPointer`, `EfficientGlobalPointer`, the GPLinker heads and the
    CRF give padded positions `MASK_VALUE`, `Dense` and `Dropout` pass the
    mask on. Passing `mask=padding_mask` to a single head call does the same
    for that one call; this layer keeps the mask on the tensor for all of
    them.

    Call arguments:
        inputs: `[x, padding_mask]`, `x` of shape `(batch, seq_len, ...)` and
            `padding_mask` of shape `(batch, seq_len)`, boolean or integer
            (keras_hub's `padding_mask` input is int32).

    Output: `x`, unchanged, with the Keras mask `padding_mask != 0`.

    Examples:
    >>> import keras, numpy as np, keras_tricks
    >>> x = keras.Input((None, 8))
    >>> padding = keras.Input((None,), dtype="int32")
    >>> seq = keras_tricks.layers.AttachMask()([x, padding])
    >>> scores = keras_tricks.layers.GlobalPointer(heads=1, head_size=4)(seq)
    >>> model = keras.Model([x, padding], scores)
    >>> out = model([np.ones((1, 3, 8)), np.array([[1, 1, 0]])])
    >>> float(keras.ops.convert_to_numpy(out)[0, 0, 0, 2])  # a span ending on the padding
    -8192.0
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.supports_masking = True

    def _split(self, inputs):
        if not isinstance(inputs, (list, tuple)) or len(inputs) != 2:
            raise ValueError(
                f"{type(self).__name__} must be called on a list [x, padding_mask]; "
                f"received {type(inputs).__name__}."
            )
        x, padding_mask = inputs
        x_shape, mask_shape = tuple(x.shape), tuple(padding_mask.shape)
        if (
            len(x_shape) < 2
            or len(mask_shape) != 2
            or any(a is not None and b is not None and a != b for a, b in zip(mask_shape, x_shape[:2]))
        ):
            raise ValueError(
                f"{type(self).__name__}: `padding_mask` must have shape (batch, seq_len) matching "
                f"the first two axes of x; received x of shape {x_shape} and padding_mask of "
                f"shape {mask_shape}."
            )
        return x, padding_mask

    def call(self, inputs: Sequence[Tensor]) -> Tensor:
        x, _ = self._split(inputs)
        return x

    def compute_mask(self, inputs: Sequence[Tensor], mask: Tensor | Sequence[Tensor] | None = None) -> Tensor:
        _, padding_mask = self._split(inputs)
        return ops.not_equal(padding_mask, ops.zeros((), padding_mask.dtype))

    def compute_output_spec(self, inputs: Sequence[keras.KerasTensor]) -> keras.KerasTensor:
        x, _ = self._split(inputs)
        return keras.KerasTensor(x.shape, dtype=x.dtype)

    def compute_output_shape(self, input_shape: Sequence[Shape]) -> Shape:
        return tuple(input_shape[0])
