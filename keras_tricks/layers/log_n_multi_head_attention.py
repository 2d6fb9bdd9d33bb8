from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_tricks._keras_compat import query_scaled_multi_head_attention
from keras_tricks._typing import Tensor
from keras_tricks._validation import check_int


@keras.saving.register_keras_serializable(package="keras_tricks")
class LogNMultiHeadAttention(query_scaled_multi_head_attention()):
    """`keras.layers.MultiHeadAttention` with the log-n (entropy-invariant) scale.

        softmax(log(n) / log(train_length) * q.k / sqrt(d))

    Su Jianlin, "从熵不变性看Attention的Scale操作" (kexue.fm/archives/8823); the
    function form is `keras_tricks.entropy.log_n_attention_scale`. n is the
    number of keys each query attends to after every mask (padding masks of
    query / value / key, `attention_mask`, `use_causal_mask`): masked keys do
    not count. At n = train_length it is exactly `MultiHeadAttention`.

    Args:
        num_heads, key_dim, ...: as `keras.layers.MultiHeadAttention`
            (`attention_axes` must stay the default).
        train_length: the length the model was trained at, an integer >= 2
            (512 in the post).

    Call: as `MultiHeadAttention`, except that `value` defaults to `query`
    (self-attention: `layer(x)`).

    Examples:
    >>> import keras, keras_tricks
    >>> layer = keras_tricks.layers.LogNMultiHeadAttention(num_heads=2, key_dim=4, train_length=16)
    >>> tuple(layer(keras.ops.ones((2, 5, 8))).shape)
    (2, 5, 8)
    """

    def __init__(self, num_heads: int, key_dim: int, *, train_length: int = 512, **kwargs: Any) -> None:
        axes = kwargs.get("attention_axes")
        # Keras writes the default as [1] in its config.
        if axes is not None and axes != 1 and tuple(np.atleast_1d(axes).tolist()) != (1,):
            raise ValueError(
                f"`attention_axes` must be None or (1,) (attention over the sequence axis) for LogNMultiHeadAttention, "
                f"got {kwargs['attention_axes']!r}."
            )
        super().__init__(num_heads, key_dim, **kwargs)
        self.train_length = check_int("train_length", train_length, minimum=2)

    def call(
        self,
        query: Tensor,
        value: Tensor | None = None,
        key: Tensor | None = None,
        query_mask: Tensor | None = None,
        value_mask: Tensor | None = None,
        key_mask: Tensor | None = None,
        attention_mask: Tensor | None = None,
        return_attention_scores: bool = False,
        training: bool | None = None,
        use_causal_mask: bool = False,
    ) -> Any:
        return super().call(
            query,
            query if value is None else value,
            key=key,
            query_mask=query_mask,
            value_mask=value_mask,
            key_mask=key_mask,
            attention_mask=attention_mask,
            return_attention_scores=return_attention_scores,
            training=training,
            use_causal_mask=use_causal_mask,
        )

    def compute_output_shape(self, query_shape: Any, value_shape: Any = None, key_shape: Any = None) -> Any:
        return super().compute_output_shape(
            query_shape, query_shape if value_shape is None else value_shape, key_shape
        )

    def compute_output_spec(self, query: Any, value: Any = None, key: Any = None, **kwargs: Any) -> Any:
        return super().compute_output_spec(query, query if value is None else value, key, **kwargs)

    def build(self, query_shape: Any, value_shape: Any = None, key_shape: Any = None) -> None:
        super().build(query_shape, query_shape if value_shape is None else value_shape, key_shape)

    def query_scale(
        self, query: Tensor, key: Tensor, attention_mask: Tensor | None, use_causal_mask: bool
    ) -> Tensor:
        """log(n) / log(train_length) per query, shape `(B, T, 1, 1)`."""
        t, s = ops.shape(query)[1], ops.shape(key)[1]
        mask = None if attention_mask is None else ops.cast(attention_mask, "bool")
        if use_causal_mask:
            rows = ops.arange(t)[:, None]
            cols = ops.arange(s)[None, :]
            causal = ops.greater_equal(rows, cols)[None]
            mask = causal if mask is None else ops.logical_and(mask, causal)
        if mask is None:
            n = ops.cast(s, "float32") * ops.ones((ops.shape(query)[0], t), "float32")
        else:
            n = ops.sum(ops.cast(mask, "float32"), axis=-1) * ops.ones((ops.shape(query)[0], 1), "float32")
        scale = ops.log(ops.maximum(n, 1.0)) / math.log(self.train_length)
        return scale[:, :, None, None]

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"train_length": self.train_length})
        return config
