from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import activations, constraints, initializers, ops, regularizers
from numpy.typing import ArrayLike

from keras_tricks import _backend, _numerics, _validation
from keras_tricks._typing import Identifier, Shape, Tensor

_LN_EPSILON = 1e-3  # keras.layers.LayerNormalization's default
_RMS_EPSILON = 1e-6  # keras.layers.RMSNormalization's default
# Rows with max|x| above 2^50 are rescaled into [2^50, 2^51): float32 squares
# of such values (< 2^102), summed over up to 2^26 elements, stay finite.
_RESCALE_EXPONENT = 50.0
_RESCALE_ABOVE = 2.0**50
# Keras's fused layer/RMS normalisation ops (torch.nn.functional kernels on
# PyTorch) arrived after Keras 3.10, the floor we support.
_HAS_FUSED_NORMALIZATION = hasattr(ops, "layer_normalization")


@keras.saving.register_keras_serializable(package="keras_tricks")
class ConditionalLayerNormalization(keras.layers.Layer):
    """Layer normalization whose gain and bias are functions of a condition.

    Conditional Layer Normalization (Su Jianlin, 2019, "基于Conditional Layer
    Normalization的条件文本生成", https://kexue.fm/archives/7124), also the
    "adaptive LayerNorm" (adaLN) of diffusion transformers (Peebles & Xie
    2023, arXiv:2212.09748). Called on `[x, cond]`:

        h        = act(cond @ W_h)               (only when hidden_units is set;
                                                  else h = cond)
        gamma(c) = gamma + h @ W_g
        beta(c)  = beta  + h @ W_b
        mean     = mean(x over axis)             (0 when rms=True)
        var      = mean((x - mean)^2 over axis)  (mean(x^2) when rms=True)
        y        = (x - mean) / sqrt(var + epsilon) * gamma(c) + beta(c)

    `W_g` and `W_b` start at zero, so before training the layer computes
    exactly `keras.layers.LayerNormalization` (or `keras.layers.RMSNormalization`
    when `rms=True`) with the same arguments, whatever the condition: a
    pretrained network's LayerNorms can be swapped for this layer (copy
    `gamma` and `beta` across) and it starts out as it was.

    `gamma`, `beta`, `W_g`, `W_b` span the normalised axes (`axis`); the
    condition is projected to that shape. Statistics and the affine part are
    computed in float32 under `mixed_float16` / `mixed_bfloat16` (in the
    compute dtype otherwise: float32, or float64), with a two-pass variance
    that is never negative, and the result is cast to the compute dtype. Rows
    whose largest magnitude exceeds 2^50 are first divided by an exact power
    of two (epsilon by its square), so values and gradients stay finite and
    correct for any finite input, up to the float32 maximum; epsilon gets
    sqrt(tiny) (1e-19 in float32) added, which keeps the gradient finite on a
    constant row even with `epsilon=0`. A Keras mask on `x` passes through
    unchanged (normalisation does not mix positions).

    Args:
        axis: int or list of ints, the axes to normalise over (default -1).
            The batch axis 0 cannot be one of them (the condition is per
            example). Their sizes must be known when the layer is built.
        epsilon: added to the variance; default `None` means Keras's own
            default for the layer being mirrored: 1e-3 (LayerNormalization),
            or 1e-6 when `rms=True` (RMSNormalization).
        center: add the conditional bias `beta(c)` (default True).
        scale: multiply by the conditional gain `gamma(c)` (default True).
            `center` and `scale` cannot both be False: the condition would
            then have no effect.
        rms: RMSNorm variant (Zhang & Sennrich 2019, arXiv:1910.07467): no
            mean subtraction, divide by sqrt(mean(x^2) + epsilon).
        hidden_units: optional int; project the condition to this many
            units (`act(cond @ W_h)`, no bias) before `W_g` and `W_b`, which
            saves parameters when the condition is wide and many layers are
            conditioned.
        hidden_activation: activation of that projection (default linear).
        hidden_initializer: initializer of `W_h` (default glorot_uniform).
        beta_initializer, gamma_initializer: of `beta` (zeros) and `gamma`
            (ones), as in LayerNormalization.
        condition_initializer: of `W_g` and `W_b` (default zeros; anything
            else breaks the identity with LayerNormalization at init).
        beta_regularizer, gamma_regularizer, condition_regularizer, hidden_regularizer: optional
            regularizers of `beta`, `gamma`, `W_g`/`W_b` and `W_h`.
        beta_constraint, gamma_constraint: optional constraints.
        **kwargs: base `Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: `[x, cond]`. `x` of rank >= 2, batch axis first. `cond` is
            either `(batch, c)`, one condition per example broadcast over
            every non-normalised axis, or a per-position condition whose
            shape is `x`'s shape with the normalised axes removed, plus `c`
            (for the usual `axis=-1`: `x.shape[:-1] + (c,)`). Any other shape
            raises a `ValueError` naming both shapes.

    Output shape: the shape of `x`.

    Examples:
    >>> import keras, numpy as np
    >>> from keras_tricks.layers import ConditionalLayerNormalization
    >>> tokens = keras.Input((None,), dtype="int32")
    >>> label = keras.Input((), dtype="int32")
    >>> x = keras.layers.Embedding(100, 32)(tokens)
    >>> cond = keras.layers.Embedding(3, 8)(label)          # (batch, 8)
    >>> y = ConditionalLayerNormalization()([x, cond])       # (batch, seq, 32)
    >>> model = keras.Model([tokens, label], y)
    >>> tuple(model([np.zeros((2, 5), "int32"), np.array([0, 2])]).shape)
    (2, 5, 32)
    """

    def __init__(
        self,
        axis: int | list[int] | tuple[int, ...] = -1,
        epsilon: float | None = None,
        center: bool = True,
        scale: bool = True,
        rms: bool = False,
        hidden_units: int | None = None,
        hidden_activation: Identifier | None = "linear",
        hidden_initializer: Identifier = "glorot_uniform",
        beta_initializer: Identifier = "zeros",
        gamma_initializer: Identifier = "ones",
        condition_initializer: Identifier = "zeros",
        beta_regularizer: Identifier | None = None,
        gamma_regularizer: Identifier | None = None,
        condition_regularizer: Identifier | None = None,
        hidden_regularizer: Identifier | None = None,
        beta_constraint: Identifier | None = None,
        gamma_constraint: Identifier | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(axis, (list, tuple)):
            if not axis or not all(_is_int(a) for a in axis):
                raise TypeError(f"`axis` must be an int or a non-empty list of ints; received axis={axis!r}.")
            axis = [int(a) for a in axis]
        elif _is_int(axis):
            axis = int(axis)
        else:
            raise TypeError(f"`axis` must be an int or a list of ints; received axis={axis!r}.")
        center = _validation.check_bool("center", center)
        scale = _validation.check_bool("scale", scale)
        rms = _validation.check_bool("rms", rms)
        if not (center or scale):
            raise ValueError(
                "`center` and `scale` are both False: the condition would have "
                "no effect. Use keras.layers.LayerNormalization instead."
            )
        if epsilon is None:
            epsilon = _RMS_EPSILON if rms else _LN_EPSILON
        epsilon = _validation.check_float("epsilon", epsilon, minimum=0.0)
        hidden_units = _validation.check_int("hidden_units", hidden_units, minimum=1, allow_none=True)
        self.axis = axis
        self.epsilon = float(epsilon)
        self.center = center
        self.scale = scale
        self.rms = rms
        self.hidden_units = None if hidden_units is None else int(hidden_units)
        self.hidden_activation = activations.get(hidden_activation)
        self.hidden_initializer = initializers.get(hidden_initializer)
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.condition_initializer = initializers.get(condition_initializer)
        self.beta_regularizer = regularizers.get(beta_regularizer)
        self.gamma_regularizer = regularizers.get(gamma_regularizer)
        self.condition_regularizer = regularizers.get(condition_regularizer)
        self.hidden_regularizer = regularizers.get(hidden_regularizer)
        self.beta_constraint = constraints.get(beta_constraint)
        self.gamma_constraint = constraints.get(gamma_constraint)
        self.supports_masking = True
        # Statistics are computed in float32 from half inputs; the weights
        # must not be cast down to the compute dtype inside call().
        self.autocast = False

    # ------------------------------------------------------------------
    # Shapes
    # ------------------------------------------------------------------

    def _split_shapes(self, input_shape):
        if (
            not isinstance(input_shape, (list, tuple))
            or len(input_shape) != 2
            or not all(isinstance(s, (list, tuple)) for s in input_shape)
        ):
            raise ValueError(
                f"{type(self).__name__} must be called on a list [x, cond]; "
                f"received inputs of shape {input_shape}."
            )
        return tuple(input_shape[0]), tuple(input_shape[1])

    def _resolve_axes(self, ndim, x_shape):
        axes = self.axis if isinstance(self.axis, list) else [self.axis]
        resolved = []
        for a in axes:
            if a >= ndim or a < -ndim:
                raise ValueError(
                    f"`axis` {a} is out of bounds for x of shape {x_shape} (received axis={self.axis})."
                )
            resolved.append(a % ndim)
        resolved = sorted(set(resolved))
        if 0 in resolved:
            raise ValueError(
                f"`axis` cannot include the batch axis 0 (received axis="
                f"{self.axis} for x of shape {x_shape}): the condition is given "
                "per example."
            )
        return resolved

    def _condition_form(self, x_shape, cond_shape):
        """'batch' for (batch, c), 'position' for a per-position condition.

        Raises a ValueError naming both shapes otherwise. Unknown (None)
        dimensions are taken as compatible.
        """
        x_shape, cond_shape = tuple(x_shape), tuple(cond_shape)
        if len(x_shape) < 2:
            raise ValueError(
                f"x must have rank >= 2 (batch first); received x of shape "
                f"{x_shape} and cond of shape {cond_shape}."
            )
        axes = self._resolve_axes(len(x_shape), x_shape)
        kept = [x_shape[i] for i in range(len(x_shape)) if i not in axes]

        def same(a, b):
            return a is None or b is None or a == b

        def matches(leading):
            return len(cond_shape) == len(leading) + 1 and all(
                same(a, b) for a, b in zip(cond_shape[:-1], leading)
            )

        if matches(kept):
            form = "position" if len(kept) > 1 else "batch"
        elif matches(kept[:1]):
            form = "batch"
        else:
            per_position = tuple(kept) + ("c",)
            raise ValueError(
                f"{type(self).__name__}: the condition must have shape "
                f"(batch, c) or, per position, {per_position} (x's shape "
                f"without the normalised axes {axes}, plus c); received x of "
                f"shape {x_shape} and cond of shape {cond_shape}."
            )
        if cond_shape[-1] is None:
            raise ValueError(
                "The last axis of the condition must be known; received x of "
                f"shape {x_shape} and cond of shape {cond_shape}."
            )
        return form, axes

    def build(self, input_shape: Sequence[Shape]) -> None:
        x_shape, cond_shape = self._split_shapes(input_shape)
        _, axes = self._condition_form(x_shape, cond_shape)
        param_shape = tuple(x_shape[i] for i in axes)
        if any(d is None for d in param_shape):
            raise ValueError(
                f"The normalised axes {axes} of x must have known sizes; received x of shape {x_shape}."
            )
        cond_units = int(cond_shape[-1])
        if self.hidden_units is not None:
            self.hidden_kernel = self.add_weight(
                name="hidden_kernel",
                shape=(cond_units, self.hidden_units),
                initializer=self.hidden_initializer,
                regularizer=self.hidden_regularizer,
                autocast=False,
            )
            cond_units = self.hidden_units
        else:
            self.hidden_kernel = None
        self.gamma = self.gamma_kernel = None
        self.beta = self.beta_kernel = None
        if self.scale:
            self.gamma = self.add_weight(
                name="gamma",
                shape=param_shape,
                initializer=self.gamma_initializer,
                regularizer=self.gamma_regularizer,
                constraint=self.gamma_constraint,
                autocast=False,
            )
            self.gamma_kernel = self.add_weight(
                name="gamma_kernel",
                shape=(cond_units,) + param_shape,
                initializer=self.condition_initializer,
                regularizer=self.condition_regularizer,
                autocast=False,
            )
        if self.center:
            self.beta = self.add_weight(
                name="beta",
                shape=param_shape,
                initializer=self.beta_initializer,
                regularizer=self.beta_regularizer,
                constraint=self.beta_constraint,
                autocast=False,
            )
            self.beta_kernel = self.add_weight(
                name="beta_kernel",
                shape=(cond_units,) + param_shape,
                initializer=self.condition_initializer,
                regularizer=self.condition_regularizer,
                autocast=False,
            )

    def set_bert4keras_weights(self, weights: Sequence[ArrayLike]) -> None:
        """Load the weights of bert4keras's `LayerNormalization(conditional=True)`.

        bert4keras 0.11 lists them as `[beta, gamma, hidden_kernel,
        beta_kernel, gamma_kernel]` (`beta` / `beta_kernel` absent when
        `center=False`, `gamma` / `gamma_kernel` when `scale=False`,
        `hidden_kernel` when it has no `hidden_units`), whereas
        `get_weights()` here follows the order the variables are created in.
        This method takes bert4keras's list on a built layer and assigns each
        array to the variable of the same role, checking every shape.

        To reproduce bert4keras's outputs, build this layer with the same
        `center`, `scale`, `hidden_units` and `hidden_activation`, `rms=False`
        (bert4keras's layer subtracts the mean whenever `center=True`), the
        normalised axis -1, and bert4keras's `epsilon` passed explicitly
        (its default is not ours: read it from the bert4keras layer's config).

        Args:
            weights: list of NumPy arrays in bert4keras's order.

        Example:
        >>> import numpy as np
        >>> from keras_tricks.layers import ConditionalLayerNormalization
        >>> cln = ConditionalLayerNormalization(epsilon=1e-12)
        >>> cln.build([(None, 5, 8), (None, 3)])
        >>> beta, gamma = np.zeros(8), np.ones(8)
        >>> beta_dense, gamma_dense = np.zeros((3, 8)), np.full((3, 8), 0.1)
        >>> cln.set_bert4keras_weights([beta, gamma, beta_dense, gamma_dense])
        """
        if not self.built:
            raise ValueError(
                "`set_bert4keras_weights` needs a built layer: call it on its inputs "
                "or `build([x_shape, condition_shape])` first."
            )
        roles = []
        if self.beta is not None:
            roles.append(("beta", self.beta))
        if self.gamma is not None:
            roles.append(("gamma", self.gamma))
        if self.hidden_kernel is not None:
            roles.append(("hidden_kernel", self.hidden_kernel))
        if self.beta_kernel is not None:
            roles.append(("beta_kernel", self.beta_kernel))
        if self.gamma_kernel is not None:
            roles.append(("gamma_kernel", self.gamma_kernel))
        if not isinstance(weights, (list, tuple)) or len(weights) != len(roles):
            raise ValueError(
                f"`weights` must be bert4keras's list {[r for r, _ in roles]} "
                f"({len(roles)} arrays for this configuration), got "
                f"{len(weights) if isinstance(weights, (list, tuple)) else type(weights).__name__}."
            )
        values = []
        for (role, var), w in zip(roles, weights):
            w = np.asarray(w)
            # bert4keras's kernels act on the last axis only: (c, hidden).
            target = tuple(var.shape)
            if w.size != int(np.prod(target)) or w.shape[-1:] != target[-1:]:
                raise ValueError(f"`weights`: {role} has shape {w.shape}, expected {target}.")
            values.append((var, w.reshape(target)))
        for var, w in values:
            var.assign(w.astype(keras.backend.standardize_dtype(var.dtype)))

    def compute_output_shape(self, input_shape: Sequence[Shape]) -> Shape:
        x_shape, cond_shape = self._split_shapes(input_shape)
        self._condition_form(x_shape, cond_shape)
        return x_shape

    def compute_mask(
        self, inputs: Sequence[Tensor], mask: Tensor | Sequence[Tensor | None] | None = None
    ) -> Tensor | None:
        if isinstance(mask, (list, tuple)):
            return mask[0]
        return mask

    # ------------------------------------------------------------------
    # Computation
    # ------------------------------------------------------------------

    def _rescale(self, x, axes):
        """`x / s` and `s` (None where it would be 1 everywhere)."""
        # Rows whose largest magnitude exceeds 2^50 are divided by a power of
        # two s (exactly) that brings it down to [2^50, 2^51): squares and
        # their sums then cannot overflow float32 (they do from |x| ~ 1.8e19,
        # which float32 and bfloat16 inputs can reach, and the variance turns
        # inf or NaN). Other rows have s = 1. `s` is a constant for the
        # gradient: the formula does not depend on it.
        # Run eagerly on values all below 2^50, s would be 1 everywhere: skip
        # the rescaling (the result is bit-identical). Traced code always
        # rescales.
        if _backend.exceeds_in_eager(x, _RESCALE_ABOVE) is False:
            s = None
        else:
            peak = ops.max(ops.abs(x), axis=axes, keepdims=True)
            # (Keras's maximum and floor return float32 for float64 inputs on
            # some backends; s is a power of two, exact in any float dtype, so
            # the cast to x's dtype loses nothing.)
            exponent = ops.maximum(ops.floor(ops.log2(ops.maximum(peak, 1.0))) - _RESCALE_EXPONENT, 0.0)
            s = ops.stop_gradient(ops.cast(ops.power(2.0, exponent), x.dtype))
            x = x / s
        return x, s

    def _normalize(self, x, s, axes):
        """(x - mean) / sqrt(var + eps), or x / sqrt(mean(x^2) + eps), in x's
        dtype, of `x` rescaled by `s` (`_rescale`)."""
        ndim = len(x.shape)
        # eps / s^2 underflows to 0 for large s (and epsilon may be 0): adding
        # sqrt(tiny) (1e-19 in float32, far below any useful epsilon) keeps
        # rsqrt(var + eps) and its derivative, which goes as (var + eps)^-1.5,
        # finite on a constant row (var = 0).
        floor = float(np.sqrt(_numerics.finfo(x.dtype).tiny))
        trailing = axes == list(range(ndim - len(axes), ndim))
        single = keras.backend.standardize_dtype(x.dtype) == "float32"
        if _backend.name() == "torch" and trailing and single and _HAS_FUSED_NORMALIZATION:
            # One fused kernel (torch.nn.functional layer_norm / rms_norm), as
            # Keras's own layers use on PyTorch: the composite below is several
            # times slower there in eager mode. It takes epsilon as a number, not
            # eps / s^2 per row; on rows with s > 1 the difference is below
            # float32 rounding unless std(x) < 1e-11 max|x| (a row so close to
            # constant that float32 cannot resolve its variance anyway).
            # (Keras's op computes float64 inputs in float32, hence `single`.)
            if self.rms:
                return ops.rms_normalization(x, axis=axes, epsilon=max(self.epsilon, floor))
            return ops.layer_normalization(x, axis=axes, epsilon=max(self.epsilon, floor))
        eps = self.epsilon + floor if s is None else self.epsilon / ops.square(s) + floor
        # sum / n, not ops.mean: Keras's mean on PyTorch reduces float64 in
        # float32.
        n = math.prod(x.shape[a] for a in axes)

        def mean(t):
            return ops.sum(t, axis=axes, keepdims=True) / n

        if self.rms:
            mean_square = mean(ops.square(x))
            return x * ops.rsqrt(mean_square + eps)
        # Two passes: the variance of the centred values is never negative
        # (E[x^2] - E[x]^2 can be, and its rsqrt NaN), and (x - mean) * inv
        # keeps the precision that x * inv - mean * inv loses for inputs with
        # a large common offset.
        centred = x - mean(x)
        variance = mean(ops.square(centred))
        return centred * ops.rsqrt(variance + eps)

    @staticmethod
    def _project(h, kernel):
        """h (..., c) times kernel (c, *S) -> (..., *S)."""
        if keras.backend.standardize_dtype(h.dtype) == "float64":
            # Keras's matmul and tensordot on PyTorch compute float64 in
            # float32; its einsum does not (but is slow there on small inputs).
            lead = "abcdefgh"[: len(h.shape) - 1]
            param = "stuvwxy"[: len(kernel.shape) - 1]
            return ops.einsum(f"{lead}z,z{param}->{lead}{param}", h, kernel)
        return ops.tensordot(h, kernel, axes=1)

    def call(self, inputs: Sequence[Tensor]) -> Tensor:
        if not isinstance(inputs, (list, tuple)) or len(inputs) != 2:
            raise ValueError(
                f"{type(self).__name__} must be called on a list [x, cond]; received {type(inputs).__name__}."
            )
        x, cond = inputs
        form, axes = self._condition_form(tuple(x.shape), tuple(cond.shape))
        dtype = _numerics.accurate_dtype(self.compute_dtype)
        x = ops.cast(x, dtype)
        h = ops.cast(cond, dtype)
        ndim = len(x.shape)
        kept = [i for i in range(ndim) if i not in axes]

        if self.hidden_kernel is not None:
            h = self.hidden_activation(self._project(h, ops.cast(self.hidden_kernel, dtype)))

        def projected(param, kernel):
            # param + h @ kernel: (batch, *S), or (kept axes..., *S) per position.
            return self._project(h, ops.cast(kernel, dtype)) + ops.cast(param, dtype)

        def laid_out(value):
            # As x: (kept axes..., normalised axes...) in that order, then
            # transposed when the normalised axes are not the trailing ones.
            if form == "batch":
                for _ in range(len(kept) - 1):
                    value = ops.expand_dims(value, 1)
            order = kept + axes
            if order != list(range(ndim)):
                value = ops.transpose(value, [order.index(i) for i in range(ndim)])
            return value

        gain = projected(self.gamma, self.gamma_kernel) if self.scale else None
        bias = projected(self.beta, self.beta_kernel) if self.center else None
        x, s = self._rescale(x, axes)
        outputs = None
        if form == "batch" and axes == list(range(ndim - len(axes), ndim)) and not self.rms:
            # One gain and bias per example: the backend may fuse them into
            # its layer-norm kernels (on PyTorch, the plain layer's cost).
            floor = float(np.sqrt(_numerics.finfo(dtype).tiny))
            outputs = _backend.layer_norm_per_example(x, gain, bias, len(axes), max(self.epsilon, floor))
        if outputs is None:
            outputs = self._normalize(x, s, axes)
            if gain is not None:
                outputs = outputs * laid_out(gain)
            if bias is not None:
                outputs = outputs + laid_out(bias)
        return ops.cast(outputs, self.compute_dtype)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "axis": self.axis,
                "epsilon": self.epsilon,
                "center": self.center,
                "scale": self.scale,
                "rms": self.rms,
                "hidden_units": self.hidden_units,
                "hidden_activation": activations.serialize(self.hidden_activation),
                "hidden_initializer": initializers.serialize(self.hidden_initializer),
                "beta_initializer": initializers.serialize(self.beta_initializer),
                "gamma_initializer": initializers.serialize(self.gamma_initializer),
                "condition_initializer": initializers.serialize(self.condition_initializer),
                "beta_regularizer": regularizers.serialize(self.beta_regularizer),
                "gamma_regularizer": regularizers.serialize(self.gamma_regularizer),
                "condition_regularizer": regularizers.serialize(self.condition_regularizer),
                "hidden_regularizer": regularizers.serialize(self.hidden_regularizer),
                "beta_constraint": constraints.serialize(self.beta_constraint),
                "gamma_constraint": constraints.serialize(self.gamma_constraint),
            }
        )
        return config


def _is_int(value: Any) -> bool:
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        or (hasattr(value, "__index__") and not isinstance(value, (bool, float)))
    )
