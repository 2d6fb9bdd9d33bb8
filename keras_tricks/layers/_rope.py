"""Rotary position embedding (RoPE) in the interleaved-pair convention of
bert4keras / RoFormer, shared by the GlobalPointer layers.

Su, Lu, Pan, Murtadha, Wen and Liu, "RoFormer: Enhanced Transformer with
Rotary Position Embedding", arXiv:2104.09864.

For a vector x of even size d at position p, the pairs (x[2i], x[2i+1]) are
rotated by the angle theta_i = p * 10000^(-2i/d):

    y[2i]   = x[2i] cos(theta_i) - x[2i+1] sin(theta_i)
    y[2i+1] = x[2i+1] cos(theta_i) + x[2i] sin(theta_i)

so that <R_m q, R_n k> depends on m - n only. This is bert4keras's
`SinusoidalPositionEmbedding(d, "zero")` (sin at even, cos at odd indices)
followed by `apply_rotary_position_embeddings`.
"""

from __future__ import annotations

import numpy as np
from keras import ops

from keras_tricks._typing import Tensor


def rope_angles(seq_len: int | Tensor, dim: int) -> Tensor:
    """float32 `(seq_len, dim // 2)` angles p * 10000^(-2i/dim).

    The angles and their sines are computed in float32 whatever the compute
    dtype: float16 cannot even represent positions above 2048 exactly, and its
    spacing at 512 (0.25 rad) would scramble the rotation.
    """
    inv_freq = np.power(10000.0, -2.0 * np.arange(dim // 2) / dim).astype("float32")
    positions = ops.arange(seq_len, dtype="float32")
    return positions[:, None] * ops.convert_to_tensor(inv_freq)[None, :]


def apply_rope(x: Tensor, angles: Tensor, seq_axis: int = 1) -> Tensor:
    """Rotate the interleaved pairs of the last axis of `x` by `angles`.

    Args:
        x: `(batch, seq_len, ..., d)` with d even; `seq_axis` is the axis of
            the positions.
        angles: `(seq_len, d // 2)` from `rope_angles`.
    Returns:
        a tensor of the shape and dtype of `x`.
    """
    shape = ops.shape(x)
    d = shape[-1]
    extra = len(shape) - seq_axis - 2
    angles = ops.reshape(angles, ops.shape(angles)[:1] + (1,) * extra + (d // 2,))
    sin = ops.sin(angles)
    cos = ops.cos(angles)
    # y = x * [c0, c0, c1, c1, ...] + swap(x) * [-s0, s0, -s1, s1, ...], where
    # swap exchanges the two members of each pair. Written with a flip of the
    # (d/2, 2) view instead of slicing out the even and odd members and
    # stacking them back: same arithmetic, bit for bit, but a third of the
    # train-step cost of slicing on XLA CPU (TensorFlow and JAX).
    half_shape = ops.shape(sin)[:-1]
    cos = ops.reshape(ops.stack([cos, cos], axis=-1), half_shape + (d,))
    sin = ops.reshape(ops.stack([-sin, sin], axis=-1), half_shape + (d,))
    swapped = ops.reshape(ops.flip(ops.reshape(x, tuple(shape[:-1]) + (d // 2, 2)), axis=-1), shape)
    return x * ops.cast(cos, x.dtype) + swapped * ops.cast(sin, x.dtype)
