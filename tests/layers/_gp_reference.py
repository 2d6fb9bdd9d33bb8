"""float64 NumPy re-implementations of bert4keras 0.11's GlobalPointer and
EfficientGlobalPointer, written from its formulas (sinusoidal embedding with
sin/cos interleaved, `apply_rotary_position_embeddings`, additive masking),
for the tests of keras_tricks's layers, losses and metric."""

import numpy as np

B4K_INF = 1e12  # bert4keras's K.infinity(), the value its masks subtract


def sinusoidal(seq_len, dim):
    """bert4keras SinusoidalPositionEmbedding(dim, 'zero'): (seq_len, dim)
    with [sin(p w_0), cos(p w_0), sin(p w_1), cos(p w_1), ...]."""
    pos = np.arange(seq_len, dtype=np.float64)[:, None]
    w = np.power(10000.0, -2.0 * np.arange(dim // 2, dtype=np.float64) / dim)[None]
    emb = np.stack([np.sin(pos * w), np.cos(pos * w)], axis=-1)
    return emb.reshape(seq_len, dim)


def apply_rotary(pos, x):
    """bert4keras apply_rotary_position_embeddings for x (..., n, [h,] d);
    pos (n, d), broadcast over a head axis when x has one."""
    cos_pos = np.repeat(pos[..., 1::2], 2, axis=-1)
    sin_pos = np.repeat(pos[..., ::2], 2, axis=-1)
    if x.ndim == 4:  # (b, n, h, d)
        cos_pos, sin_pos = cos_pos[:, None], sin_pos[:, None]
    x2 = np.stack([-x[..., 1::2], x[..., ::2]], axis=-1).reshape(x.shape)
    return x * cos_pos + x2 * sin_pos


def sequence_masking(logits, mask, axis):
    if mask is None:
        return logits
    m = mask.astype(np.float64)
    m = m[:, None, :, None] if axis == 2 else m[:, None, None, :]
    return logits * m - B4K_INF * (1 - m)


def tril(logits):
    n = logits.shape[-1]
    upper = np.triu(np.ones((n, n)))
    return logits - (1 - upper) * B4K_INF


def gp_scores(x, kernel, bias, heads, head_size, rope=True, mask=None, tril_mask=True):
    """bert4keras 0.11 GlobalPointer.call in float64."""
    x = np.asarray(x, np.float64)
    h = x @ np.asarray(kernel, np.float64)
    if bias is not None:
        h = h + np.asarray(bias, np.float64)
    h = np.stack(np.split(h, heads, axis=-1), axis=-2)  # (b, n, heads, 2d)
    qw, kw = h[..., :head_size], h[..., head_size:]
    if rope:
        pos = sinusoidal(x.shape[1], head_size)
        qw, kw = apply_rotary(pos, qw), apply_rotary(pos, kw)
    logits = np.einsum("bmhd,bnhd->bhmn", qw, kw)
    logits = sequence_masking(logits, mask, 2)
    logits = sequence_masking(logits, mask, 3)
    if tril_mask:
        logits = tril(logits)
    return logits / head_size**0.5


def egp_scores(x, p_kernel, p_bias, q_kernel, q_bias, heads, head_size, rope=True, mask=None, tril_mask=True):
    """bert4keras 0.11 EfficientGlobalPointer.call in float64."""
    x = np.asarray(x, np.float64)
    h = x @ np.asarray(p_kernel, np.float64)
    if p_bias is not None:
        h = h + np.asarray(p_bias, np.float64)
    qw, kw = h[..., ::2], h[..., 1::2]
    if rope:
        pos = sinusoidal(x.shape[1], head_size)
        qw, kw = apply_rotary(pos, qw), apply_rotary(pos, kw)
    logits = np.einsum("bmd,bnd->bmn", qw, kw) / head_size**0.5
    c = h @ np.asarray(q_kernel, np.float64)
    if q_bias is not None:
        c = c + np.asarray(q_bias, np.float64)
    bias = np.einsum("bnh->bhn", c) / 2
    logits = logits[:, None] + bias[:, ::2, None] + bias[:, 1::2, :, None]
    logits = sequence_masking(logits, mask, 2)
    logits = sequence_masking(logits, mask, 3)
    if tril_mask:
        logits = tril(logits)
    return logits


def valid_spans(mask, n, tril_mask=True):
    """bool (b, 1, n, n): spans that are not masked."""
    b = 1 if mask is None else mask.shape[0]
    m = np.ones((b, n), bool) if mask is None else np.asarray(mask, bool)
    valid = m[:, None, :, None] & m[:, None, None, :]
    if tril_mask:
        valid = valid & np.triu(np.ones((n, n), bool))
    return valid
