from __future__ import annotations

import keras
from keras import ops

from keras_tricks._typing import Shape, Tensor
from keras_tricks.layers._span_base import SpanScorer


@keras.saving.register_keras_serializable(package="keras_tricks")
class EfficientGlobalPointer(SpanScorer):
    """Efficient GlobalPointer: span scores with a shared q/k projection and
    per-type start/end biases, for a fraction of GlobalPointer's parameters.

    Su Jianlin, "Efficient GlobalPointer：少点参数，多点效果" (2022),
    https://kexue.fm/archives/8877. One projection shared by every type gives
    p_t = W_p h_t + b_p of size 2 * head_size, split interleaved into
    q_t = p_t[0::2] and k_t = p_t[1::2]; a second projection of p_t gives
    2 * heads biases c_t = W_c p_t + b_c, and for type alpha

        s_alpha(i, j) = (R_i q_i)^T (R_j k_j) / sqrt(head_size)
                        + (c_i[2 alpha + 1] + c_j[2 alpha]) / 2

    (start bias from the odd columns at i, end bias from the even columns
    at j, as in bert4keras 0.11). R_p is RoPE (interleaved pairs,
    theta_k = p * 10000^(-2k/head_size)) when `use_rope`; the biases are
    computed from p_t before the rotation.

    Masking, output and training are as for `GlobalPointer`: invalid spans
    (padding at i or j, j < i with `tril_mask`) get the logit
    `keras_tricks.spans.MASK_VALUE` (-8192), and no Keras mask is
    returned.

    bert4keras compatibility: `get_weights()` is `[p_kernel, p_bias,
    c_kernel, c_bias]` with shapes `(hidden, 2*head_size)`, `(2*head_size,)`,
    `(2*head_size, 2*heads)`, `(2*heads,)` (the biases absent when
    `use_bias=False`): bert4keras 0.11's `p_dense` then `q_dense`.

    Args: as `GlobalPointer` (`heads`, `head_size`, `use_rope`, `tril_mask`,
    `use_bias`, `kernel_initializer`, `bias_initializer`).

    Input shape: `(batch, seq_len, hidden)`, optional mask `(batch, seq_len)`.
    Output shape: `(batch, heads, seq_len, seq_len)` logits, float32 under
    float32 and mixed policies (see `GlobalPointer`).

    Examples:
    >>> import keras, numpy as np, keras_tricks
    >>> x = keras.Input((None, 32))
    >>> scores = keras_tricks.layers.EfficientGlobalPointer(heads=9, head_size=16)(x)
    >>> tuple(keras.Model(x, scores)(np.zeros((2, 5, 32), "float32")).shape)
    (2, 9, 5, 5)
    """

    def build(self, input_shape: Shape) -> None:
        input_shape = self._check_input_shape(input_shape)
        width = 2 * self.head_size
        self.p_kernel = self._add_kernel("p_kernel", (input_shape[-1], width))
        self.p_bias = self._add_bias("p_bias", (width,)) if self.use_bias else None
        self.c_kernel = self._add_kernel("c_kernel", (width, 2 * self.heads))
        self.c_bias = self._add_bias("c_bias", (2 * self.heads,)) if self.use_bias else None

    def call(self, inputs: Tensor, mask: Tensor | None = None) -> Tensor:
        inputs, batch, n = self._prepare(inputs, mask)
        p = ops.matmul(inputs, self.p_kernel)
        if self.p_bias is not None:
            p = p + self.p_bias
        c = ops.matmul(p, self.c_kernel)
        if self.c_bias is not None:
            c = c + self.c_bias
        pairs = ops.reshape(p, (batch, n, self.head_size, 2))
        q, k = pairs[..., 0], pairs[..., 1]
        q = self._rope(q, n)
        k = self._rope(k, n)
        q = q * ops.cast(self._scale, q.dtype)
        scores = ops.einsum("bmd,bnd->bmn", q, k)
        c = ops.reshape(c * ops.cast(0.5, c.dtype), (batch, n, self.heads, 2))
        end_bias = ops.transpose(c[..., 0], (0, 2, 1))  # (batch, heads, n)
        start_bias = ops.transpose(c[..., 1], (0, 2, 1))
        scores = scores[:, None, :, :] + start_bias[:, :, :, None] + end_bias[:, :, None, :]
        return self._mask_scores(scores, mask)
