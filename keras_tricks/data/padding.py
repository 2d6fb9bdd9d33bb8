"""`sequence_padding`: ragged sequences to one rectangular batch array."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from numpy.typing import ArrayLike

_MODES = ("post", "pre")


def _check_mode(name, mode):
    if mode not in _MODES:
        raise ValueError(f"`{name}` must be 'post' or 'pre'; received {name}={mode!r}.")


def sequence_padding(
    inputs: Sequence[ArrayLike] | np.ndarray,
    length: int | Sequence[int] | None = None,
    value: float = 0,
    seq_dims: int = 1,
    mode: str = "post",
    dtype: npt.DTypeLike = None,
    truncating: str = "post",
) -> np.ndarray:
    """Pad (or truncate) ragged sequences to one batch array.

    The first `seq_dims` axes of every input are sequence axes: each is padded
    with `value` (or truncated) to `length`, the longest input along that axis
    when `length` is None. The remaining axes must agree across the inputs.

        out[b, i_1..i_d, ...] = x_b[i_1..i_d, ...]   where x_b has that position
                              = value                 elsewhere

    with the input's positions placed at the end of each sequence axis
    (`mode="pre"`) or at its start (`mode="post"`, the default).

    As in bert4keras, truncation keeps the head of a too-long sequence
    (`truncating="post"` drops the tail); pass `truncating="pre"` to keep the
    tail instead.

    Args:
        inputs: a non-empty sequence of array-likes (lists, tuples, NumPy
            arrays), each with at least `seq_dims` axes.
        length: None (the longest input per sequence axis), an int (the same
            for every sequence axis) or one int per sequence axis.
        value: the padding value, a number (Python or NumPy scalar, bool
            included); anything else (a string, None, an array) raises
            TypeError.
        seq_dims: how many leading axes of each input are padded (>= 1).
        mode: "post" pads at the end, "pre" at the start.
        dtype: the output dtype. None: NumPy's common type of the non-empty
            inputs, widened when `value` is not representable in it (int
            token ids padded with 0 stay integers; padding them with 0.5 gives
            floats). An explicit `dtype` must hold the inputs (same kind
            casting, e.g. int to float but not float to int) and `value`
            exactly, else ValueError.
        truncating: "post" (drop the tail, the default) or "pre" (drop the head).

    Returns:
        A NumPy array of shape `(len(inputs), *length, *trailing_shape)`.

    Examples:
    >>> sequence_padding([[1, 2, 3], [4]])
    array([[1, 2, 3],
           [4, 0, 0]])
    >>> sequence_padding([[1, 2, 3], [4]], length=2, mode="pre")
    array([[1, 2],
           [0, 4]])
    """
    if isinstance(value, np.ndarray) or not isinstance(value, (numbers.Number, np.number, np.bool_)):
        raise TypeError(
            f"`value` must be a number (Python or NumPy scalar), got {value!r} of type {type(value).__name__}."
        )
    _check_mode("mode", mode)
    _check_mode("truncating", truncating)
    if isinstance(seq_dims, bool) or not isinstance(seq_dims, numbers.Integral) or seq_dims < 1:
        raise ValueError(f"`seq_dims` must be an int >= 1; received seq_dims={seq_dims!r}.")
    seq_dims = int(seq_dims)
    if isinstance(inputs, np.ndarray) and inputs.dtype != object:
        arrays = list(inputs)
    else:
        try:
            arrays = [np.asarray(x) for x in inputs]
        except ValueError as e:
            raise ValueError(
                "`inputs` must be a sequence of rectangular array-likes (each one "
                f"sequence); converting an element to an array failed: {e}"
            ) from None
    if not arrays:
        raise ValueError("`inputs` must hold at least one sequence; received an empty sequence.")
    for i, x in enumerate(arrays):
        if x.ndim < seq_dims:
            raise ValueError(
                f"`inputs[{i}]` has {x.ndim} axes but seq_dims={seq_dims} sequence axes "
                f"are padded; received an element of shape {x.shape}."
            )
    trailing = arrays[0].shape[seq_dims:]
    for i, x in enumerate(arrays):
        if x.shape[seq_dims:] != trailing:
            raise ValueError(
                f"the axes after the {seq_dims} sequence axes must agree across `inputs`; "
                f"inputs[0] has {trailing} there and inputs[{i}] has {x.shape[seq_dims:]}."
            )

    if length is None:
        length = tuple(max(x.shape[d] for x in arrays) for d in range(seq_dims))
    else:
        if isinstance(length, numbers.Integral) and not isinstance(length, bool):
            length = (int(length),) * seq_dims
        else:
            try:
                length = tuple(length)
            except TypeError:
                raise ValueError(
                    f"`length` must be None, an int or a sequence of ints; received length={length!r}."
                ) from None
        if len(length) != seq_dims or any(
            isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0 for n in length
        ):
            raise ValueError(
                f"`length` must be None, an int >= 0 or {seq_dims} such ints (one per "
                f"sequence axis); received length={length!r}."
            )
        length = tuple(int(n) for n in length)

    value_array = np.asarray(value)
    if dtype is None:
        nonempty = [x.dtype for x in arrays if x.size] or [x.dtype for x in arrays]
        dtype = np.result_type(*nonempty)
        if not _represents(value_array, dtype):
            dtype = np.result_type(dtype, value_array.dtype)
    else:
        dtype = np.dtype(dtype)
        for i, x in enumerate(arrays):
            if x.size and not np.can_cast(x.dtype, dtype, casting="same_kind"):
                raise ValueError(
                    f"`inputs[{i}]` of dtype {x.dtype} cannot be cast to dtype={dtype} "
                    "without changing its kind (e.g. float to int); cast it first."
                )
        if not _represents(value_array, dtype):
            raise ValueError(f"`value`={value!r} is not representable in dtype={dtype}.")

    out = np.full((len(arrays), *length, *trailing), value, dtype=dtype)
    for b, x in enumerate(arrays):
        src, dst = [], []
        for d in range(seq_dims):
            n = min(x.shape[d], length[d])
            src.append(slice(0, n) if truncating == "post" else slice(x.shape[d] - n, x.shape[d]))
            dst.append(slice(0, n) if mode == "post" else slice(length[d] - n, length[d]))
        out[(b, *dst)] = x[tuple(src)]
    return out


def _represents(value_array, dtype):
    """Whether `value` survives a round trip through `dtype` unchanged."""
    try:
        cast = value_array.astype(dtype)
        return bool(np.all(cast == value_array))
    except (TypeError, ValueError):
        return False
