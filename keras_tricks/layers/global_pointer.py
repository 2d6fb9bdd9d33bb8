from __future__ import annotations

import keras
from keras import ops

from keras_tricks._typing import Shape, Tensor
from keras_tricks.layers._span_base import SpanScorer


@keras.saving.register_keras_serializable(package="keras_tricks")
class GlobalPointer(SpanScorer):
    """GlobalPointer: one score for every span (i, j) and entity type.

    Su Jianlin, "GlobalPointer: 用统一的方式处理嵌套和非嵌套NER" (2021),
    https://kexue.fm/archives/8373. For each type (head) alpha, the hidden
    state h_t is projected to q_t = W_q h_t + b_q and k_t = W_k h_t + b_k, and

        s_alpha(i, j) = (R_i q_i)^T (R_j k_j) / sqrt(head_size)

    where R_p is the rotary position embedding (RoPE, interleaved pairs,
    theta_k = p * 10000^(-2k/head_size)) when `use_rope`. A span (i, j) is an
    entity of type alpha when s_alpha(i, j) > 0; flat and nested entities are
    decoded the same way (`keras_tricks.spans.decode_spans`). Train with
    `keras_tricks.losses.GlobalPointerCrossentropy` (dense labels) or
    `SparseGlobalPointerCrossentropy` (span lists).

    Masking: every span that is impossible gets the logit
    `keras_tricks.spans.MASK_VALUE` (-8192 in every float type):
    spans starting or ending on a padding position (the Keras mask from
    `Embedding(mask_zero=True)`, or `mask=`), and spans with j < i when
    `tril_mask`. It is set with `where`, so nothing overflows in float16, the
    losses drop those logits out of their sums, and a threshold at 0 never
    selects them. Consumers (losses, metrics, the KL divergence) recognise a
    masked span by exact equality with that value, so a trained score however
    negative is never taken for padding. The output carries no Keras mask (the sequence mask is not
    aligned with its axes; its information is in the values).

    bert4keras compatibility: `get_weights()` is `[kernel, bias]` with kernel
    `(hidden, heads * 2 * head_size)` laid out per head as [q, k] (head h's
    q is columns `h*2*head_size : h*2*head_size + head_size`, its k the next
    `head_size`), exactly as bert4keras 0.11's `GlobalPointer` dense layer; a
    head trained there loads with `set_weights` and gives the same scores on
    every unmasked span.

    Args:
        heads: number of entity types, a positive integer.
        head_size: size of q and k, a positive integer (even with RoPE).
        use_rope: apply rotary position embeddings to q and k.
        tril_mask: mask the spans with end < start (the lower triangle).
        use_bias: whether the projection has a bias.
        kernel_initializer, bias_initializer: initializers of the projection.
        **kwargs: base `Layer` arguments (`name`, `dtype`, ...).

    Input shape: `(batch, seq_len, hidden)`, optional mask `(batch, seq_len)`.
    Output shape: `(batch, heads, seq_len, seq_len)` logits, float32 under
    every float32 or mixed policy (float64 under float64): the projections
    and the span products are computed in float32, because hidden states of
    size ~1e4 make q.k overflow float16 (max 65504), and a final head under
    mixed precision customarily outputs float32. An empty sequence or batch
    gives an empty output.

    Examples:
    >>> import keras, numpy as np, keras_tricks
    >>> tokens = keras.Input((None,), dtype="int32")
    >>> x = keras.layers.Embedding(100, 32, mask_zero=True)(tokens)
    >>> scores = keras_tricks.layers.GlobalPointer(heads=4, head_size=16)(x)
    >>> model = keras.Model(tokens, scores)
    >>> tuple(model(np.array([[5, 6, 7, 0]])).shape)
    (1, 4, 4, 4)
    """

    def build(self, input_shape: Shape) -> None:
        input_shape = self._check_input_shape(input_shape)
        units = self.heads * 2 * self.head_size
        self.kernel = self._add_kernel("kernel", (input_shape[-1], units))
        self.bias = self._add_bias("bias", (units,)) if self.use_bias else None

    def call(self, inputs: Tensor, mask: Tensor | None = None) -> Tensor:
        inputs, batch, n = self._prepare(inputs, mask)
        x = ops.matmul(inputs, self.kernel)
        if self.bias is not None:
            x = x + self.bias
        x = ops.reshape(x, (batch, n, self.heads, 2 * self.head_size))
        q, k = x[..., : self.head_size], x[..., self.head_size :]
        q = self._rope(q, n)
        k = self._rope(k, n)
        # Scaling q (n*d values) is cheaper than scaling the n*n scores.
        q = q * ops.cast(self._scale, q.dtype)
        scores = ops.einsum("bmhd,bnhd->bhmn", q, k)
        return self._mask_scores(scores, mask)
