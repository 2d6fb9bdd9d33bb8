"""In-graph linear-chain CRF algorithms (`keras.ops`, all three backends):
the forward algorithm (log partition function and negative log-likelihood),
Viterbi decoding and forward-backward marginals.

All of them take `emissions` `(batch, seq_len, num_tags)`, `transitions`
`(num_tags, num_tags)` (`transitions[i, j]`: score of tag i followed by tag
j), an optional boolean `mask` `(batch, seq_len)`, and optional
`start_transitions` / `end_transitions` `(num_tags,)`. A position is valid
when `mask` is True there (if given) and its emissions are not all
`keras_tricks.spans.MASK_VALUE` (what `ConditionalRandomField` writes into
padded positions). The chain runs over the valid positions only, in order:
padding (at the end, the start or inside) never changes the result, and a
row without valid positions has log Z = 0, loss 0 and no path. The
recursions run in float32 (float64 stays float64).
"""

from __future__ import annotations

from keras import ops

from keras_tricks import _numerics
from keras_tricks._typing import Tensor

#: The tag value that marks padding in integer tag sequences (labels of
#: `CRFLoss`, and the output of the decoders at invalid positions).
TAG_PADDING: int = -1


def _shape_error(name, expected, got):
    return ValueError(f"`{name}` must have shape {expected}, got {tuple(got)}.")


def _prepare(emissions, transitions, mask, start_transitions, end_transitions):
    emissions = ops.convert_to_tensor(emissions)
    if len(emissions.shape) != 3:
        raise _shape_error("emissions", "(batch, seq_len, num_tags)", emissions.shape)
    num_tags = emissions.shape[-1]
    dtype = _numerics.accurate_dtype(emissions.dtype) if _numerics.is_float(emissions.dtype) else "float32"
    # Padding is recognised in the dtype the layer wrote it in (exact there).
    valid = ops.logical_not(ops.all(_numerics.is_masked_logit(emissions), axis=-1))
    emissions = ops.cast(emissions, dtype)
    transitions = ops.cast(ops.convert_to_tensor(transitions), dtype)
    if tuple(transitions.shape) != (num_tags, num_tags):
        raise _shape_error(
            "transitions", f"(num_tags, num_tags) = ({num_tags}, {num_tags})", transitions.shape
        )
    if mask is not None:
        mask = ops.convert_to_tensor(mask)
        got, want = tuple(mask.shape), tuple(emissions.shape[:2])
        if len(got) != 2 or any(a is not None and b is not None and a != b for a, b in zip(got, want)):
            raise _shape_error("mask", f"(batch, seq_len) = {want}", got)
        valid = ops.logical_and(valid, ops.cast(mask, "bool"))
    boundaries = []
    for name, value in (("start_transitions", start_transitions), ("end_transitions", end_transitions)):
        if value is None:
            boundaries.append(ops.zeros((num_tags,), dtype))
            continue
        value = ops.cast(ops.convert_to_tensor(value), dtype)
        if tuple(value.shape) != (num_tags,):
            raise _shape_error(name, f"(num_tags,) = ({num_tags},)", value.shape)
        boundaries.append(value)
    return emissions, transitions, valid, boundaries[0], boundaries[1]


def _scan(step, init, xs, reverse=False):
    """`ops.scan`, with a statically empty sequence answered directly (the
    PyTorch scan cannot stack zero outputs): the carry, and no steps."""
    if xs[0].shape[0] == 0:
        empty = tuple(ops.zeros((0,) + tuple(ops.shape(c)), c.dtype) for c in init)
        return init, empty
    if len(xs) > 1 and xs[0].shape[0] is None:
        # Keras's TensorFlow scan fails on several `xs` of unknown length
        # (a model built on `Input((None, ...))`, traced by `fit`): scan
        # over the time index instead and gather each step's slices.
        def indexed(carry, t):
            return step(carry, tuple(ops.take(x, t, axis=0) for x in xs))

        return ops.scan(indexed, init, ops.arange(ops.shape(xs[0])[0], dtype="int32"), reverse=reverse)
    return ops.scan(step, init, xs, reverse=reverse)


def _time_major(x):
    return ops.moveaxis(x, 1, 0)


def _forward(emissions, transitions, valid, start):
    """alpha_t for every t (time-major) and the last valid alpha."""
    batch_tags = ops.shape(emissions)[0], ops.shape(emissions)[2]

    def step(carry, x):
        alpha, started = carry
        e_t, m_t = x
        first = start[None, :] + e_t
        nxt = ops.logsumexp(alpha[:, :, None] + transitions[None], axis=1) + e_t
        new = ops.where(started[:, None], nxt, first)
        carry = (ops.where(m_t[:, None], new, alpha), ops.logical_or(started, m_t))
        return carry, carry

    init = (ops.zeros(batch_tags, emissions.dtype), ops.zeros(batch_tags[:1], "bool"))
    (alpha, _), (alphas, _) = _scan(step, init, (_time_major(emissions), _time_major(valid)))
    return alpha, alphas


def crf_log_partition(
    emissions: Tensor,
    transitions: Tensor,
    mask: Tensor | None = None,
    start_transitions: Tensor | None = None,
    end_transitions: Tensor | None = None,
) -> Tensor:
    """log Z per row `(batch,)`: the log-sum-exp of the scores of all tag
    paths over the valid positions (forward algorithm in log space); 0 for a
    row without valid positions."""
    emissions, transitions, valid, start, end = _prepare(
        emissions, transitions, mask, start_transitions, end_transitions
    )
    alpha, _ = _forward(emissions, transitions, valid, start)
    log_z = ops.logsumexp(alpha + end[None, :], axis=-1)
    return ops.where(ops.any(valid, axis=1), log_z, ops.zeros_like(log_z))


def crf_path_score(
    emissions: Tensor,
    tags: Tensor,
    transitions: Tensor,
    mask: Tensor | None = None,
    start_transitions: Tensor | None = None,
    end_transitions: Tensor | None = None,
) -> Tensor:
    """Score `(batch,)` of the tag path `tags` `(batch, seq_len)`:
    sum of the emissions of its tags at the valid positions, of the
    transitions between consecutive valid positions, and of the start/end
    transitions. Positions with tag `TAG_PADDING` (-1) are padding too."""
    emissions, transitions, valid, start, end = _prepare(
        emissions, transitions, mask, start_transitions, end_transitions
    )
    tags = ops.cast(tags, "int32")
    valid = ops.logical_and(valid, tags >= 0)
    return _path_score(emissions, tags, transitions, valid, start, end)


def _path_score(emissions, tags, transitions, valid, start, end):
    num_tags = emissions.shape[-1]
    onehot = ops.one_hot(ops.maximum(tags, 0), num_tags, dtype=emissions.dtype)

    def step(carry, x):
        score, prev, started = carry
        e_t, y_t, m_t = x
        trans_in = ops.where(started[:, None], ops.matmul(prev, transitions), start[None, :])
        gain = ops.sum((e_t + trans_in) * y_t, axis=-1)
        score = score + ops.where(m_t, gain, ops.zeros_like(gain))
        prev = ops.where(m_t[:, None], y_t, prev)
        carry = (score, prev, ops.logical_or(started, m_t))
        return carry, carry

    batch = ops.shape(emissions)[0]
    init = (
        ops.zeros((batch,), emissions.dtype),
        ops.zeros((batch, num_tags), emissions.dtype),
        ops.zeros((batch,), "bool"),
    )
    (score, prev, started), _ = _scan(
        step, init, (_time_major(emissions), _time_major(onehot), _time_major(valid))
    )
    last = ops.sum(prev * end[None, :], axis=-1)
    return score + ops.where(started, last, ops.zeros_like(last))


def crf_nll(
    emissions: Tensor,
    tags: Tensor,
    transitions: Tensor,
    mask: Tensor | None = None,
    start_transitions: Tensor | None = None,
    end_transitions: Tensor | None = None,
) -> Tensor:
    """Negative log-likelihood `(batch,)` of `tags`: log Z - score(tags),
    both over the positions that are valid and not tagged -1 (0 for a row
    without any)."""
    emissions, transitions, valid, start, end = _prepare(
        emissions, transitions, mask, start_transitions, end_transitions
    )
    tags = ops.cast(tags, "int32")
    valid = ops.logical_and(valid, tags >= 0)
    alpha, _ = _forward(emissions, transitions, valid, start)
    log_z = ops.logsumexp(alpha + end[None, :], axis=-1)
    nll = log_z - _path_score(emissions, tags, transitions, valid, start, end)
    return ops.where(ops.any(valid, axis=1), nll, ops.zeros_like(nll))


def viterbi_decode(
    emissions: Tensor,
    transitions: Tensor,
    mask: Tensor | None = None,
    start_transitions: Tensor | None = None,
    end_transitions: Tensor | None = None,
) -> Tensor:
    """The best tag path: int32 `(batch, seq_len)`, -1 at invalid positions.

    Max-product recursion with back-pointers, then a backward scan; ties go
    to the lowest tag index (as `numpy.argmax`, so it agrees with the host
    version `keras_tricks.spans.viterbi_decode_numpy`).
    """
    emissions, transitions, valid, start, _end = _prepare(
        emissions, transitions, mask, start_transitions, end_transitions
    )
    num_tags = emissions.shape[-1]
    batch = ops.shape(emissions)[0]
    identity = ops.broadcast_to(ops.arange(num_tags, dtype="int32")[None, :], (batch, num_tags))

    def forward(carry, x):
        delta, started, _ = carry
        e_t, m_t = x
        cand = delta[:, :, None] + transitions[None]
        nxt = ops.max(cand, axis=1) + e_t
        back = ops.cast(ops.argmax(cand, axis=1), "int32")
        new = ops.where(started[:, None], nxt, start[None, :] + e_t)
        # Padding and the first valid position point to themselves, so the
        # backward pass walks through them unchanged.
        back = ops.where(ops.logical_and(started, m_t)[:, None], back, identity)
        carry = (ops.where(m_t[:, None], new, delta), ops.logical_or(started, m_t), back)
        return carry, carry

    # The back-pointers ride in the carry because Keras's TensorFlow scan
    # wants the per-step outputs shaped like the carry.
    init = (ops.zeros((batch, num_tags), emissions.dtype), ops.zeros((batch,), "bool"), identity)
    (delta, _, _), (_, _, backs) = _scan(forward, init, (_time_major(emissions), _time_major(valid)))
    last = ops.cast(ops.argmax(delta + _end[None, :], axis=-1), "int32")

    def backward(carry, x):
        (tag,) = carry
        back, m_t = x
        out = ops.where(m_t, tag, ops.full_like(tag, TAG_PADDING))
        tag = ops.squeeze(ops.take_along_axis(back, tag[:, None], axis=1), axis=1)
        return (tag,), (out,)

    _, (path,) = _scan(backward, (last,), (backs, _time_major(valid)), reverse=True)
    return _time_major(path)


def crf_marginals(
    emissions: Tensor,
    transitions: Tensor,
    mask: Tensor | None = None,
    start_transitions: Tensor | None = None,
    end_transitions: Tensor | None = None,
) -> Tensor:
    """P(y_t = k | x) `(batch, seq_len, num_tags)` by forward-backward, in
    the dtype the recursions ran in; rows sum to 1 at valid positions and
    are 0 at invalid ones."""
    emissions, transitions, valid, start, end = _prepare(
        emissions, transitions, mask, start_transitions, end_transitions
    )
    alpha, alphas = _forward(emissions, transitions, valid, start)
    log_z = ops.logsumexp(alpha + end[None, :], axis=-1)
    batch_tags = ops.shape(emissions)[0], ops.shape(emissions)[2]

    def backward(carry, x):
        # carry: emission + beta of the nearest valid position to the right.
        after, seen = carry
        e_t, m_t = x
        beta = ops.where(
            seen[:, None],
            ops.logsumexp(transitions[None] + after[:, None, :], axis=2),
            ops.broadcast_to(end[None, :], ops.shape(after)),
        )
        after = ops.where(m_t[:, None], e_t + beta, after)
        return (after, ops.logical_or(seen, m_t)), (beta, seen)

    init = (ops.zeros(batch_tags, emissions.dtype), ops.zeros(batch_tags[:1], "bool"))
    _, (betas, _) = _scan(backward, init, (_time_major(emissions), _time_major(valid)), reverse=True)
    log_p = _time_major(alphas) + _time_major(betas) - log_z[:, None, None]
    # Clamp before exp: invalid positions hold arbitrary sums, and the
    # `where` below must not see an overflowed branch (its gradient is NaN).
    probs = ops.exp(ops.minimum(log_p, ops.zeros_like(log_p)))
    return ops.where(valid[:, :, None], probs, ops.zeros_like(probs))
