"""What GlobalPointer and EfficientGlobalPointer share: arguments and their
validation, the span mask, shapes and config."""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

from keras_tricks import _numerics, _validation
from keras_tricks._typing import Identifier, Shape, Tensor
from keras_tricks.layers import _rope


class SpanScorer(keras.layers.Layer):
    """Base class: validation, masking, shapes and config of span scorers."""

    def __init__(
        self,
        heads: int,
        head_size: int,
        use_rope: bool = True,
        tril_mask: bool = True,
        use_bias: bool = True,
        kernel_initializer: Identifier = "lecun_normal",
        bias_initializer: Identifier = "zeros",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.heads = _validation.check_int("heads", heads, minimum=1)
        self.head_size = _validation.check_int("head_size", head_size, minimum=1)
        self.use_rope = _validation.check_bool("use_rope", use_rope)
        if self.use_rope and self.head_size % 2:
            raise ValueError(
                "`head_size` must be even when `use_rope=True` (RoPE rotates "
                f"pairs of features), got head_size={head_size}."
            )
        self.tril_mask = _validation.check_bool("tril_mask", tril_mask)
        self.use_bias = _validation.check_bool("use_bias", use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        # The layer consumes the sequence mask: its output (batch, heads, n, n)
        # carries the mask in its values, not as a Keras mask.
        self.supports_masking = True

    def _check_input_shape(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) != 3:
            raise ValueError(
                f"{type(self).__name__} expects `inputs` of rank 3 "
                f"(batch, seq_len, hidden), got shape {input_shape}."
            )
        if input_shape[-1] is None:
            raise ValueError(
                f"{type(self).__name__}: the last axis of `inputs` (hidden) must "
                f"be known, got shape {input_shape}."
            )
        return input_shape

    # Span scores are computed in float32 under mixed precision (float64 stays
    # float64): a product of two projections of hidden states of size ~1e4
    # overflows float16 (max 65504), and a final head customarily outputs
    # float32 anyway. The variables are therefore read unrounded
    # (`autocast=False`) and the inputs cast up once.
    def _add_kernel(self, name, shape):
        return self.add_weight(name=name, shape=shape, initializer=self.kernel_initializer, autocast=False)

    def _add_bias(self, name, shape):
        return self.add_weight(name=name, shape=shape, initializer=self.bias_initializer, autocast=False)

    @property
    def _score_dtype(self) -> str:
        return _numerics.accurate_dtype(self.compute_dtype)

    def _prepare(self, inputs, mask):
        """Validate `inputs` and `mask` against each other, cast `inputs` to
        the score dtype; returns (inputs, batch, seq_len) with `batch` usable
        in a reshape even when the sequence is empty (where -1 is ambiguous)."""
        if len(inputs.shape) != 3:
            self._check_input_shape(inputs.shape)
        self._check_mask(mask, inputs)
        inputs = ops.cast(inputs, self._score_dtype)
        shape = ops.shape(inputs)
        batch = -1 if shape[0] is None else shape[0]
        return inputs, batch, shape[1]

    def _rope(self, x, seq_len):
        if not self.use_rope:
            return x
        return _rope.apply_rope(x, _rope.rope_angles(seq_len, self.head_size))

    def _check_mask(self, mask, inputs):
        if mask is None:
            return
        expected = tuple(inputs.shape[:2])
        got = tuple(mask.shape)
        if len(got) != 2 or any(a is not None and b is not None and a != b for a, b in zip(got, expected)):
            raise ValueError(
                f"{type(self).__name__}: `mask` must have shape (batch, seq_len) = "
                f"{expected} to match `inputs` of shape {tuple(inputs.shape)}, got "
                f"shape {got}."
            )

    def _mask_scores(self, scores, mask):
        """Give every invalid span (i, j) the value `_numerics.mask_value`:
        padding at i or j, and j < i when `tril_mask`. `where`, never
        `scores - big * (1 - mask)`, so that nothing can overflow."""
        n = ops.shape(scores)[-1]
        valid = None
        if self.tril_mask:
            idx = ops.arange(n)
            valid = ops.expand_dims(idx, 0) >= ops.expand_dims(idx, 1)
        if mask is not None:
            mask = ops.cast(mask, "bool")
            pad = ops.logical_and(mask[:, None, :, None], mask[:, None, None, :])
            valid = pad if valid is None else ops.logical_and(pad, valid)
        if valid is None:
            return scores
        fill = ops.cast(_numerics.mask_value(scores.dtype), scores.dtype)
        return ops.where(valid, scores, fill)

    def compute_output_spec(self, inputs: keras.KerasTensor, mask: Tensor | None = None) -> keras.KerasTensor:
        return keras.KerasTensor(self.compute_output_shape(inputs.shape), dtype=self._score_dtype)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        input_shape = self._check_input_shape(input_shape)
        return (input_shape[0], self.heads, input_shape[1], input_shape[1])

    def compute_mask(self, inputs: Tensor, mask: Tensor | None = None) -> None:
        return None

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "heads": self.heads,
                "head_size": self.head_size,
                "use_rope": self.use_rope,
                "tril_mask": self.tril_mask,
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            }
        )
        return config

    @property
    def _scale(self) -> float:
        return 1.0 / math.sqrt(self.head_size)
