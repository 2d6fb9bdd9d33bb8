"""Dtype-aware constants, so that no component hard-codes `1e12` or `1e-7`.

A fixed `-1e12` overflows float16 (max 65504) and turns `x - (1 - mask) * 1e12`
into `-inf` or NaN; a fixed `1e-7` is below bfloat16's resolution at 1.0. Every
constant a component needs is derived here from the dtype it computes in.
"""

import numpy as np
from keras import backend

_HALF_DTYPES = ("float16", "bfloat16")


def finfo(dtype):
    """`np.finfo` that also understands `"bfloat16"` (through `ml_dtypes`)."""
    dtype = backend.standardize_dtype(dtype)
    if dtype == "bfloat16":
        import ml_dtypes

        return ml_dtypes.finfo(ml_dtypes.bfloat16)
    return np.finfo(dtype)


def accurate_dtype(dtype):
    """The dtype to compute in: float32 for half types, the dtype otherwise.

    Half types carry 8 or 11 significant bits; doing the arithmetic of an
    elementwise formula in float32 and rounding once at the end costs nothing
    measurable (such ops are memory-bound) and keeps the result within half an
    ulp of the exact value.
    """
    dtype = backend.standardize_dtype(dtype)
    return "float32" if dtype in _HALF_DTYPES else dtype


def is_float(dtype):
    return backend.standardize_dtype(dtype).startswith(("float", "bfloat"))
