"""Activation functions: `squareplus`.

Every function here is registered with Keras under the package name
`keras_tricks`, so a model using one by object (`activation=squareplus`) or by
its registered name (`activation="keras_tricks>squareplus"`) saves to `.keras`
and loads back without `custom_objects`.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from keras_tricks import _backend, _numerics
from keras_tricks._typing import Tensor
from keras_tricks._validation import check_float

__all__ = ["squareplus"]


def _validate_b(b: Any) -> float:
    """`b` as a Python float: a finite real number > 0 (NumPy scalars too)."""
    return check_float("b", b, minimum=0.0, min_inclusive=False)


@keras.saving.register_keras_serializable(package="keras_tricks")
def squareplus(x: Tensor, b: float = 4.0) -> Tensor:
    """SquarePlus: a smooth ReLU made of one square root, accurate everywhere.

    squareplus(x) = (x + sqrt(x^2 + b)) / 2        (Barron, 2021,
    "Squareplus: A Softplus-Like Algebraic Rectifier", arXiv:2112.11687)

    It is smooth, positive, tends to `relu(x)` as `b -> 0`, and equals
    `sqrt(b) / 2` at zero (with b = 4: f(0) = 1). Its derivative is
    `(1 + x / sqrt(x^2 + b)) / 2`, in (0, 1).

    Evaluated as written, the formula breaks at both ends of the float range:
    `x^2` overflows (float16 for |x| >= 256, float32 beyond 1.8e19) and for
    negative `x` the sum `x + sqrt(x^2 + b)` cancels, losing every digit. This
    implementation uses the identity `f(x) * f(-x) = b / 4`:

        a = |x|
        f(a)  = a / 2 + sqrt(a^2 + b) / 2        (no cancellation)
        f(-a) = (b / 4) / f(a)                   (no cancellation)

    with `f(a) = a` once `a` passes `sqrt(max) / 2`, where `b / (4 a^2)` is
    below half an ulp. Half-precision inputs are computed in float32 and
    rounded once. Eager PyTorch runs the same arithmetic as a few fused
    kernels (`hypot` in place of the threshold); eager TensorFlow and JAX
    run it as one compiled program (see docs/performance.md). The derivative is given explicitly as
    `f'(x) = f(x) / sqrt(x^2 + b)`, a quotient of two accurate quantities.
    Values and gradients are within 4 machine epsilons of the exact result for
    every finite input of every float dtype wherever the result is a normal
    number (tested against an extended-precision reference on a dense grid of
    both signs); results in the subnormal range, which TensorFlow and XLA
    flush to zero on CPUs, are within the smallest normal number. `+inf` maps
    to `+inf` and `-inf` to 0, with gradients exactly 1 and 0 there (the
    limits of f'); the gradient is finite everywhere, including at `x = 0`
    (where it is exactly 1/2). NaN maps to NaN. An empty tensor (any shape
    with a zero-sized axis, such as an empty batch) gives an empty result
    and an empty gradient.

    Args:
        x: a tensor of any shape; integer inputs are cast to `floatx()`.
        b: the curvature at zero, a finite real number > 0, Python or NumPy
            (default 4, the paper's choice, which makes f(0) = 1); a wrong
            type raises `TypeError`, a wrong value `ValueError`. For float16, bfloat16 and
            float32 inputs it must lie in [4 * tiny, eps * max] of float32
            (about [4.7e-38, 4e31]); for float64 in the float64 equivalent.

    Returns:
        A tensor of the same shape and dtype as `x` (`floatx()` for integers).

    Examples:
    >>> import keras, keras_tricks
    >>> y = keras_tricks.activations.squareplus(keras.ops.array([-300.0, 0.0, 2.0]))
    >>> tuple(round(float(v), 6) for v in y)
    (0.003333, 1.0, 2.414214)
    >>> layer = keras.layers.Dense(8, activation=keras_tricks.activations.squareplus)
    """
    b = _validate_b(b)
    x = ops.convert_to_tensor(x)
    dtype = keras.backend.standardize_dtype(x.dtype)
    if not _numerics.is_float(dtype):
        dtype = keras.backend.floatx()
        x = ops.cast(x, dtype)
    compute_dtype = _numerics.accurate_dtype(dtype)
    info = _numerics.finfo(compute_dtype)
    # Below 4 * tiny, b / 4 is subnormal and f(-a) = 0 / 0 at a = 0; above
    # eps * max, sqrt(a^2 + b) no longer rounds to `a` where we switch to it.
    if not 4.0 * float(info.tiny) <= b <= float(info.eps) * float(info.max):
        raise ValueError(
            f"`b` must lie in [{4.0 * float(info.tiny):.3g}, "
            f"{float(info.eps) * float(info.max):.3g}] for {dtype} inputs "
            f"(computed in {compute_dtype}), got b={b!r}."
        )

    x = ops.cast(x, compute_dtype)
    y = _backend.squareplus(x, b)
    if y is None:
        y = _squareplus_in(x, b, float(np.sqrt(info.max)) / 2.0)
    return ops.cast(y, dtype)


def _value_and_root(x, b, threshold):
    """f(x) and sqrt(x^2 + b) (taken as |x| past `threshold`), in the dtype of
    `x` (float32 or float64)."""
    # Python scalars would be converted to float32 by some backends before
    # meeting `x`, and sqrt(float64 max) / 2 does not fit in float32.
    threshold = ops.convert_to_tensor(threshold, dtype=x.dtype)
    quarter_b = ops.convert_to_tensor(0.25 * b, dtype=x.dtype)
    b = ops.convert_to_tensor(b, dtype=x.dtype)
    a = ops.abs(x)
    small_enough = ops.less(a, threshold)
    # Past the threshold, a^2 may overflow (its branch is discarded) and
    # b / (4 a^2) is below half an ulp, so f(a) = a and sqrt(a^2 + b) = a.
    root = ops.where(small_enough, ops.sqrt(ops.add(ops.square(a), b)), a)
    # Past the threshold f(a) = a is selected rather than computed: a + root
    # would overflow for a > max / 2, and a * 0.5 + root * 0.5 is no defence
    # under XLA, whose simplifier factors it back into (a + root) * 0.5.
    # `+`, not ops.add: Keras's TensorFlow add takes two tensors of the same
    # shape (0, n) for an input and a bias and calls BiasAdd, which refuses
    # a 2-D "bias" (an empty batch crashed).
    f_pos = ops.where(small_enough, ops.multiply(a + root, 0.5), a)
    y = ops.where(ops.greater_equal(x, 0), f_pos, ops.divide(quarter_b, f_pos))
    return y, root


def _value(x, b, threshold):
    return _value_and_root(x, b, threshold)[0]


def _derivative(x, b, threshold):
    y, root = _value_and_root(x, b, threshold)
    # Past the threshold on the positive side f(x) = x and f'(x) = 1 to the
    # last bit; selecting 1 there also gives f'(+inf) = 1 instead of
    # inf / inf = NaN. (On the negative side y / root = (b / 4) / a^2 goes to
    # 0, exactly 0 at -inf.)
    one = ops.convert_to_tensor(1.0, dtype=x.dtype)
    past = ops.greater_equal(x, ops.convert_to_tensor(threshold, dtype=x.dtype))
    return ops.where(past, one, ops.divide(y, root))


# One program instead of ~11 eagerly dispatched kernels on JAX and eager
# TensorFlow (see _backend.fuse); the custom gradient stays outside the
# compiled functions.
_value_fused = _backend.fuse(_value, static_argnums=(1, 2))
_derivative_fused = _backend.fuse(_derivative, static_argnums=(1, 2))


def _squareplus_in(x, b, threshold):
    """squareplus of `x` in its own (float32 or float64) dtype, with the
    derivative f'(x) = f(x) / sqrt(x^2 + b) given explicitly.

    Automatic differentiation of the forward formula splits the derivative
    into terms that underflow separately (0.5 * g * a / r loses half the
    gradient once g * a / r drops below the smallest normal number); the
    quotient of two accurate forward quantities does not. The backward pass
    recomputes that quotient from `x`, so that only `x` is kept between the
    passes (elementwise arithmetic is cheaper than memory traffic).
    """

    @ops.custom_gradient
    def forward(x):
        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            return ops.multiply(upstream, _derivative_fused(x, b, threshold))

        return _value_fused(x, b, threshold), grad

    return forward(x)
