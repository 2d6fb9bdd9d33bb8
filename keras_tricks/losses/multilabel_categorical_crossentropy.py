from __future__ import annotations

import keras
from keras import ops

from keras_tricks import _numerics
from keras_tricks._typing import Tensor


def _log1p_sum_exp(x: Tensor) -> Tensor:
    """log(1 + sum(exp(x), axis=-1)), stable, for x with -inf entries (which
    drop out). The "1" is the implicit logit 0 of the threshold class; no
    concatenation, so no copy of x."""
    # initial=0 is the implicit logit 0, and makes an empty last axis valid.
    m = ops.stop_gradient(ops.max(x, axis=-1, keepdims=True, initial=0.0))
    total = ops.exp(-m[..., 0]) + ops.sum(ops.exp(x - m), axis=-1)
    return m[..., 0] + ops.log(total)


@keras.saving.register_keras_serializable(package="keras_tricks")
def multilabel_categorical_crossentropy(y_true: Tensor, y_pred: Tensor) -> Tensor:
    """Multi-label "softmax + cross-entropy" with a threshold at logit 0.

    Su Jianlin, "将'softmax+交叉熵'推广到多标签分类问题" (2020,
    https://kexue.fm/archives/7359), and its soft-label form (2022,
    https://kexue.fm/archives/9064). With t_i in [0, 1] the target of class i
    and s_i its logit, over the last axis:

        L = log(1 + sum_i (1 - t_i) e^{s_i}) + log(1 + sum_i t_i e^{-s_i})

    which for hard labels is log(1 + sum_neg e^{s}) + log(1 + sum_pos e^{-s}):
    every positive is pushed above 0 and every negative below it, without the
    class imbalance of per-class sigmoids. Masked logits (exactly
    `keras_tricks.spans.MASK_VALUE`, -8192, the value the GlobalPointer
    layers give impossible spans) drop out of both sums; any other logit,
    however negative, counts (a positive at -5000 gets a loss of about 5000
    and a gradient of -1).

    Computed in float32 for half-precision logits (float64 stays float64),
    with a max-shifted log-sum-exp: finite value and gradient for any finite
    logits, and exactly 0 contribution from masked ones.

    Args:
        y_true: targets in [0, 1], the shape of `y_pred`.
        y_pred: logits (no sigmoid/softmax), `(..., num_classes)`.

    Returns:
        The loss per row, shape `y_pred.shape[:-1]`, float32 (or float64).

    Examples:
    >>> import numpy as np
    >>> y_true = np.array([[0.0, 1.0, 1.0]])
    >>> y_pred = np.array([[-3.0, 2.0, 4.0]])
    >>> round(float(multilabel_categorical_crossentropy(y_true, y_pred)[0]), 4)
    0.1915
    """
    y_pred = ops.convert_to_tensor(y_pred)
    dtype = _numerics.accurate_dtype(y_pred.dtype) if _numerics.is_float(y_pred.dtype) else "float32"
    masked = _numerics.is_masked_logit(y_pred) if _numerics.is_float(y_pred.dtype) else None
    s = ops.cast(y_pred, dtype)
    t = ops.cast(y_true, dtype)
    tiny = float(_numerics.finfo(dtype).tiny)
    neg_ok = ops.less(t, 1.0)
    pos_ok = ops.greater(t, 0.0)
    if masked is not None:
        keep = ops.logical_not(masked)
        neg_ok = ops.logical_and(neg_ok, keep)
        pos_ok = ops.logical_and(pos_ok, keep)
    minus_inf = ops.cast(float("-inf"), dtype)
    # Weights enter as log-weights added to the exponent; clamped logs keep
    # the unselected branch of `where` finite.
    neg = ops.where(neg_ok, s + ops.log(ops.maximum(1.0 - t, tiny)), minus_inf)
    pos = ops.where(pos_ok, -s + ops.log(ops.maximum(t, tiny)), minus_inf)
    return _log1p_sum_exp(neg) + _log1p_sum_exp(pos)
