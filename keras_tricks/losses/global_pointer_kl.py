from __future__ import annotations

import keras
from keras import ops

from keras_tricks import _numerics
from keras_tricks._typing import Tensor


def _check_scores(name: str, x: Tensor) -> None:
    if len(x.shape) != 4:
        raise ValueError(
            f"`{name}` must be span scores of shape (batch, heads, n, n), got shape {tuple(x.shape)}."
        )
    if not _numerics.is_float(x.dtype):
        raise TypeError(
            f"`{name}` must be float logits, got dtype {keras.backend.standardize_dtype(x.dtype)}."
        )


@keras.saving.register_keras_serializable(package="keras_tricks")
def global_pointer_kl(s: Tensor, t: Tensor) -> Tensor:
    """Symmetric divergence between two GlobalPointer score tensors, for R-Drop.

    Each span is a binary decision with probability sigmoid(s); the symmetric
    KL divergence of two Bernoullis is (sigmoid(s) - sigmoid(t)) * (s - t)
    (Su Jianlin, https://kexue.fm/archives/8496 for R-Drop and the GlobalPointer
    form of the divergence). Per sample:

        D = mean over types of sum over spans (sigmoid(s) - sigmoid(t)) * (s - t)

    (the same per-type-mean reduction as `GlobalPointerCrossentropy`, so the
    R-Drop weight means the same thing for both). Spans masked in either
    tensor (exactly `keras_tricks.spans.MASK_VALUE`, as the layers output
    for impossible spans) are excluded. Computed in float32 for half inputs;
    >= 0, symmetric, 0 iff the unmasked scores agree; 0 for an empty sequence.

    Args:
        s, t: `(batch, heads, n, n)` float logits of two forward passes
            (dropout on), of one shape. Another rank raises `ValueError`, an
            integer dtype `TypeError`, each naming the argument.
    Returns:
        `(batch,)` divergence, float32 (float64 for float64 inputs).

    Example (R-Drop: the same batch twice through a model with dropout):
    >>> import numpy as np
    >>> s = np.zeros((2, 3, 4, 4)); t = s + 0.1
    >>> tuple(global_pointer_kl(s, t).shape)
    (2,)
    """
    s = ops.convert_to_tensor(s)
    t = ops.convert_to_tensor(t)
    _check_scores("s", s)
    _check_scores("t", t)
    if any(a is not None and b is not None and a != b for a, b in zip(s.shape, t.shape)):
        raise ValueError(f"`s` and `t` must have one shape, got {tuple(s.shape)} and {tuple(t.shape)}.")
    masked = ops.logical_or(_numerics.is_masked_logit(s), _numerics.is_masked_logit(t))
    dtype = _numerics.accurate_dtype(s.dtype)
    s, t = ops.cast(s, dtype), ops.cast(t, dtype)
    d = (ops.sigmoid(s) - ops.sigmoid(t)) * (s - t)
    d = ops.where(masked, ops.zeros_like(d), d)
    shape = ops.shape(d)
    d = ops.reshape(d, (shape[0], shape[1], shape[2] * shape[3]))
    return ops.mean(ops.sum(d, axis=-1), axis=-1)
