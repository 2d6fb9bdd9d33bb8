"""Dtype-aware constants, so that no component hard-codes `1e12` or `1e-7`.

A fixed `-1e12` overflows float16 (max 65504) and turns `x - (1 - mask) * 1e12`
into `-inf` or NaN; a fixed `1e-7` is below bfloat16's resolution at 1.0. Every
constant a component needs is derived here from the dtype it computes in.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from keras import backend

from keras_tricks._typing import Tensor

_HALF_DTYPES = ("float16", "bfloat16")


def finfo(dtype: Any) -> Any:
    """`np.finfo` that also understands `"bfloat16"` (through `ml_dtypes`)."""
    dtype = backend.standardize_dtype(dtype)
    if dtype == "bfloat16":
        import ml_dtypes

        return ml_dtypes.finfo(ml_dtypes.bfloat16)
    return np.finfo(dtype)


def accurate_dtype(dtype: Any) -> str:
    """The dtype to compute in: float32 for half types, the dtype otherwise.

    Half types carry 8 or 11 significant bits; doing the arithmetic of an
    elementwise formula in float32 and rounding once at the end costs nothing
    measurable (such ops are memory-bound) and keeps the result within half an
    ulp of the exact value.
    """
    dtype = backend.standardize_dtype(dtype)
    return "float32" if dtype in _HALF_DTYPES else dtype


def is_float(dtype: Any) -> bool:
    return backend.standardize_dtype(dtype).startswith(("float", "bfloat"))


def mask_value(dtype: Any) -> float:
    """The logit that masked positions get in layers computing in `dtype`.

    A fixed `-1e12` overflows float16 (max 65504), and `x - (1 - mask) * 1e12`
    then turns into `-inf` or NaN. The value returned here is the largest
    power of two whose magnitude is at most a quarter of the largest finite
    value of `dtype`, capped at the float16 bound (-2**13 = -8192 for
    float16, bfloat16, float32 and float64):

    - it is exact in every float type, so a model gives the same masked
      logits under `float32`, `mixed_float16` and `mixed_bfloat16`;
    - three of them can be added (or one subtracted twice) without overflow
      in the narrowest type;
    - `exp()` of it is exactly 0 in every float type (float64 underflows
      below -745), so a masked logit drops out of any log-sum-exp, and a
      sigmoid or threshold at 0 never selects it.

    Layers set masked positions with `where(mask, x, mask_value)` (never by
    arithmetic); consumers recognise them by exact equality
    (`is_masked_logit`). Equality, not a range such as `x <= mask_value / 2`:
    a trained score can be very negative (a badly wrong positive span at
    -5000 must still get its loss and its gradient), and only a value set by
    `where` is exactly -8192. The span layers compute their scores in
    float32 (float64 stays float64), where the sentinel is exact.
    """
    bound = min(float(finfo(dtype).max), float(np.finfo("float16").max)) / 4.0
    return -float(2.0 ** np.floor(np.log2(bound)))


def is_masked_logit(x: Tensor, dtype: Any = None) -> Tensor:
    """Boolean tensor: which entries of `x` are exactly the masking value of
    `mask_value` (the value the span layers give impossible spans)."""
    from keras import ops

    dtype = dtype or backend.standardize_dtype(x.dtype)
    return ops.equal(x, ops.cast(mask_value(dtype), x.dtype))
