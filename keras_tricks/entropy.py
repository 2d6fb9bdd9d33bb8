"""Entropy normalisation of probability distributions and the log-n
("entropy-invariant") attention scale."""

from __future__ import annotations

import math

import keras
from keras import ops

from keras_tricks import _numerics
from keras_tricks._typing import Tensor
from keras_tricks._validation import check_float, check_int

__all__ = ["entropy_normalize", "log_n_attention_scale"]


def _entropy_terms(z: Tensor, support: Tensor) -> tuple[Tensor, Tensor]:
    """(entropy, log q) of q = softmax(z) over `support` (last axis)."""
    neg = ops.cast(_numerics.mask_value("float16") * 4.0, z.dtype)  # exp() is exactly 0
    z = ops.where(support, z, neg)
    log_q = z - ops.logsumexp(z, axis=-1, keepdims=True)
    q = ops.exp(log_q)
    h = -ops.sum(ops.where(support, q * log_q, ops.zeros_like(z)), axis=-1)
    return h, log_q


def entropy_normalize(p: Tensor, target_entropy: float, *, iterations: int = 60) -> Tensor:
    """Entropy normalisation: the power transform of `p` whose entropy is `target_entropy`.

        q_i = p_i^gamma / sum_j p_j^gamma,   gamma >= 0 such that H(q) = H*

    (Su Jianlin, "概率分布的熵归一化（Entropy Normalization）", kexue.fm/archives/8829.)
    H(q) falls monotonically from log(s) at gamma = 0 (uniform over the s
    non-zero entries) to log(t) as gamma -> inf (uniform over the t largest,
    tied entries), and the transform keeps the order of the entries. gamma is
    found per distribution by bisection on u = gamma / (1 + gamma) in [0, 1),
    in float32 (float64 for float64 input), in-graph (no host round trip).

    - A target outside [log t, log s] gives the nearest reachable
      distribution (gamma = 0 or the largest gamma of the bracket, ~1.7e7):
      a one-hot `p` stays one-hot, a uniform `p` stays uniform.
    - Zeros stay zero (the support is kept).
    - float16 / bfloat16 input is computed in float32 and returned in the
      input dtype.
    - The gradient with respect to `p` is the implicit one (gamma moves with
      `p` so that H(q) stays at the target), through one Newton correction
      at the root.

    Accuracy: |H(q) - H*| <= 1e-4 nats in float32 for reachable targets (the
    tests check it on random, sparse and near-uniform distributions); the
    rounding of q to a half type adds its own error (about 1e-2 nats).

    Args:
        p: probabilities, shape `(..., n)`, non-negative, summing to 1 over
            the last axis (not checked in-graph).
        target_entropy: H* in nats, a real number in [0, log n].
        iterations: bisection steps, an integer in [10, 200].

    Returns:
        q, shape and dtype of `p` (`floatx()` for integer input).

    Examples:
    >>> import keras, math
    >>> from keras_tricks.entropy import entropy_normalize
    >>> q = entropy_normalize(keras.ops.array([[0.7, 0.2, 0.1]]), target_entropy=0.5)
    >>> tuple(q.shape)
    (1, 3)
    """
    iterations = check_int("iterations", iterations, minimum=10, maximum=200)
    target = check_float("target_entropy", target_entropy, minimum=0.0)
    p = ops.convert_to_tensor(p)
    if p.shape is None or len(p.shape) < 1:
        raise ValueError(
            f"`p` must have at least one axis (the classes), got shape {getattr(p, 'shape', None)}."
        )
    n = p.shape[-1]
    # Checked only for a static length: a symbolic one (None, or JAX's shape
    # polymorphism in a functional model) has no value yet.
    if isinstance(n, int) and target > math.log(n) + 1e-12:
        raise ValueError(
            f"`target_entropy` must be in [0, log n] = [0, {math.log(n):.6g}] for n={n}, got {target!r}."
        )
    dtype = keras.backend.standardize_dtype(p.dtype)
    if not _numerics.is_float(dtype):
        dtype = keras.backend.floatx()
    compute = _numerics.accurate_dtype(dtype)
    x = ops.cast(p, compute)
    support = ops.greater(x, 0)
    log_p = ops.log(ops.where(support, x, ops.ones_like(x)))
    log_max = ops.max(ops.where(support, log_p, ops.full_like(log_p, -math.inf)), axis=-1, keepdims=True)
    s = ops.where(support, log_p - log_max, ops.zeros_like(log_p))  # <= 0 on the support
    tgt = ops.cast(target, compute)
    u_max = 1.0 - float(_numerics.finfo(compute).eps)

    def entropy_at(gamma):
        return _entropy_terms(gamma[..., None] * s, support)[0]

    def body(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        h = entropy_at(mid / (1.0 - mid))
        # H decreases with gamma: above the target, move right.
        above = ops.greater(h, tgt)
        return ops.where(above, mid, lo), ops.where(above, hi, mid)

    lo0 = ops.zeros(ops.shape(s)[:-1], compute)
    hi0 = ops.full(ops.shape(s)[:-1], u_max, compute)
    lo, hi = ops.fori_loop(0, iterations, body, (lo0, hi0))
    u = ops.stop_gradient(0.5 * (lo + hi))
    gamma0 = ops.stop_gradient(u / (1.0 - u))

    # Implicit gradient: gamma = gamma0 - (H(gamma0; p) - H*) / H'(gamma0),
    # with H' = -gamma Var_q(s) held constant; its value is gamma0 (the
    # correction is taken only where the bisection converged) and its
    # derivative is -dH/dp / H', the implicit-function-theorem gradient.
    h0, log_q = _entropy_terms(gamma0[..., None] * s, support)
    q0 = ops.stop_gradient(ops.exp(log_q))
    mean = ops.sum(q0 * s, axis=-1, keepdims=True)
    var = ops.sum(ops.where(support, q0 * ops.square(s - mean), ops.zeros_like(s)), axis=-1)
    slope = ops.stop_gradient(-gamma0 * var)
    usable = ops.logical_and(
        ops.less(ops.abs(ops.stop_gradient(h0) - tgt), 1e-3), ops.greater(ops.abs(slope), 1e-12)
    )
    safe_slope = ops.where(usable, slope, ops.ones_like(slope))
    correction = ops.where(usable, (h0 - tgt) / safe_slope, ops.zeros_like(h0))
    gamma = gamma0 - (correction - ops.stop_gradient(correction))
    _, log_q = _entropy_terms(gamma[..., None] * s, support)
    q = ops.where(support, ops.exp(log_q), ops.zeros_like(log_q))
    return ops.cast(q, dtype)


def log_n_attention_scale(logits: Tensor, mask: Tensor | None = None, *, train_length: int = 512) -> Tensor:
    """Scale attention logits by log(n) / log(train_length), n = attended keys per query.

        softmax(log_{L}(n) * q.k / sqrt(d))     L = train_length

    Su Jianlin, "从熵不变性看Attention的Scale操作" (kexue.fm/archives/8823): keeping
    the attention entropy independent of the length n calls for a scale
    kappa * log(n) / d; the post's practical form multiplies the usual
    1/sqrt(d) logits by log(n) / log(512), which is exactly 1 at the training
    length (512 by default) and grows slowly beyond it (length extrapolation).

    n counts the keys each query may attend to: the `True` entries of `mask`
    along the last axis (masked keys do not count); without a mask, the
    number of keys. n = 0 (a fully masked row) is taken as 1 (scale 0;
    such a row is masked anyway).

    Args:
        logits: `(..., queries, keys)` attention logits (already divided by
            sqrt(d) if that is the convention of the caller).
        mask: optional boolean, broadcastable to `logits` (`(..., queries,
            keys)` or a key mask `(..., 1, keys)`).
        train_length: L, an integer >= 2.

    Returns:
        The scaled logits, shape and dtype of `logits` (the scale is
        computed in float32).

    Examples:
    >>> import keras
    >>> from keras_tricks.entropy import log_n_attention_scale
    >>> out = log_n_attention_scale(keras.ops.ones((2, 4, 8)), train_length=8)
    >>> tuple(out.shape), float(out[0, 0, 0])
    ((2, 4, 8), 1.0)
    """
    train_length = check_int("train_length", train_length, minimum=2)
    logits = ops.convert_to_tensor(logits)
    if len(logits.shape) < 2:
        raise ValueError(
            f"`logits` must have at least 2 axes (queries, keys), got shape {tuple(logits.shape)}."
        )
    dtype = keras.backend.standardize_dtype(logits.dtype)
    compute = _numerics.accurate_dtype(dtype)
    if mask is None:
        n = ops.cast(ops.shape(logits)[-1], compute)
    else:
        mask = ops.cast(mask, "bool")
        full = ops.logical_and(mask, ops.ones(ops.shape(logits), "bool"))
        n = ops.sum(ops.cast(full, compute), axis=-1, keepdims=True)
    scale = ops.log(ops.maximum(n, 1.0)) / math.log(train_length)
    return ops.cast(ops.cast(logits, compute) * scale, dtype)
