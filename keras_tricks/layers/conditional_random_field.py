from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_tricks import _numerics, _validation
from keras_tricks._typing import Identifier, Shape, Tensor
from keras_tricks.layers import crf_ops


@keras.saving.register_keras_serializable(package="keras_tricks")
class ConditionalRandomField(keras.layers.Layer):
    """Linear-chain conditional random field: the tagging head of a sequence
    labeller, trained with `keras_tricks.losses.CRFLoss`.

    Lafferty, McCallum and Pereira, "Conditional Random Fields" (ICML 2001);
    Su Jianlin, "简明条件随机场CRF介绍" (https://kexue.fm/archives/5542). For
    emissions e_t (the tagger's scores) and transitions A (`A[i, j]`: score
    of tag i followed by tag j), a tag path y over the valid positions
    t_1 < ... < t_L has the score

        s(y) = b[y_1] + sum_l e_{t_l}[y_l] + sum_l A[y_{l-1}, y_l] + c[y_L]

    (b, c: the optional start and end transitions, else 0), and
    p(y | x) = exp(s(y)) / Z with Z the sum over all K^L paths (the forward
    algorithm, in log space).

    The layer returns the emissions unchanged at valid positions, and writes
    `keras_tricks.spans.MASK_VALUE` (-8192) into every tag of a padded
    position (the Keras mask, e.g. from `Embedding(mask_zero=True)`, or
    `mask=`). That is how the loss and both decoders find the padding, also
    after `predict()` and in a served model where no Keras mask survives.
    The output carries no Keras mask.

    bert4keras compatibility: the one weight is `trans` `(num_tags,
    num_tags)`, stored divided by `lr_multiplier` exactly as bert4keras 0.11
    does (the effective transitions are `lr_multiplier * trans`); a
    bert4keras CRF's `get_weights()` loads with `set_weights` (same
    `lr_multiplier`) and gives the same loss and paths.

    Args:
        num_tags: number of tags K, or None to take it from the input.
        lr_multiplier: positive float; the transitions learn that many times
            faster than the rest of the model under SGD-type optimizers
            (they are stored as `A / lr_multiplier`, so their gradient is
            scaled by `lr_multiplier` and their step in A by its square
            under SGD, by `lr_multiplier` under Adam).
        use_boundary_transitions: add the start and end transitions
            (weights `start_trans`, `end_trans` `(num_tags,)`, also scaled
            by `lr_multiplier`). Off by default, the bert4keras layout.
        transitions_initializer: initializer of the (effective) transitions.
        **kwargs: base `Layer` arguments (`name`, `dtype`, ...).

    Input shape: `(batch, seq_len, num_tags)` emissions, optional mask
    `(batch, seq_len)`. Output: the same shape, in the layer's compute
    dtype. The recursions of the loss and decoders run in float32.

    Examples:
    >>> import keras, numpy as np, keras_tricks
    >>> tokens = keras.Input((None,), dtype="int32")
    >>> x = keras.layers.Embedding(100, 16, mask_zero=True)(tokens)
    >>> crf = keras_tricks.layers.ConditionalRandomField()
    >>> scores = crf(keras.layers.Dense(5)(x))
    >>> model = keras.Model(tokens, scores)
    >>> out = model(np.array([[5, 6, 7, 0]]))
    >>> tuple(out.shape), tuple(crf.viterbi_decode(out).shape)
    ((1, 4, 5), (1, 4))
    """

    def __init__(
        self,
        num_tags: int | None = None,
        lr_multiplier: float = 1.0,
        use_boundary_transitions: bool = False,
        transitions_initializer: Identifier = "glorot_uniform",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.num_tags = _validation.check_int("num_tags", num_tags, minimum=1, allow_none=True)
        self.lr_multiplier = _validation.check_float(
            "lr_multiplier", lr_multiplier, minimum=0.0, min_inclusive=False
        )
        self.use_boundary_transitions = _validation.check_bool(
            "use_boundary_transitions", use_boundary_transitions
        )
        self.transitions_initializer = keras.initializers.get(transitions_initializer)
        self.supports_masking = True
        self.start_trans = self.end_trans = None

    def _check_input_shape(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) != 3 or input_shape[-1] is None:
            raise ValueError(
                "ConditionalRandomField expects `inputs` of rank 3 (batch, seq_len, num_tags) "
                f"with a known last axis, got shape {input_shape}."
            )
        if self.num_tags is not None and input_shape[-1] != self.num_tags:
            raise ValueError(
                f"ConditionalRandomField: `inputs` has {input_shape[-1]} tags on its last axis "
                f"but `num_tags`={self.num_tags}."
            )
        return input_shape

    def _scaled_initializer(self):
        base = self.transitions_initializer
        lr = self.lr_multiplier
        return lambda shape, dtype=None: base(shape, dtype=dtype) / lr

    def build(self, input_shape: Shape) -> None:
        k = self._check_input_shape(input_shape)[-1]
        self.num_tags = k
        # Variables read unrounded (float32 under mixed policies): the
        # recursions run in float32.
        self.trans = self.add_weight(
            name="trans", shape=(k, k), initializer=self._scaled_initializer(), autocast=False
        )
        if self.use_boundary_transitions:
            self.start_trans = self.add_weight(
                name="start_trans", shape=(k,), initializer="zeros", autocast=False
            )
            self.end_trans = self.add_weight(
                name="end_trans", shape=(k,), initializer="zeros", autocast=False
            )

    @property
    def transitions(self) -> Tensor:
        """The effective transition matrix `lr_multiplier * trans`."""
        return self._scaled(self.trans)

    @property
    def start_transitions(self) -> Tensor | None:
        return None if self.start_trans is None else self._scaled(self.start_trans)

    @property
    def end_transitions(self) -> Tensor | None:
        return None if self.end_trans is None else self._scaled(self.end_trans)

    def _scaled(self, variable):
        value = ops.convert_to_tensor(variable)
        return value if self.lr_multiplier == 1.0 else value * ops.cast(self.lr_multiplier, value.dtype)

    def call(self, inputs: Tensor, mask: Tensor | None = None) -> Tensor:
        if len(inputs.shape) != 3:
            self._check_input_shape(inputs.shape)
        x = ops.cast(inputs, self.compute_dtype)
        if mask is None:
            return x
        got, want = tuple(mask.shape), tuple(inputs.shape[:2])
        if len(got) != 2 or any(a is not None and b is not None and a != b for a, b in zip(got, want)):
            raise ValueError(
                f"ConditionalRandomField: `mask` must have shape (batch, seq_len) = {want} "
                f"to match `inputs` of shape {tuple(inputs.shape)}, got shape {got}."
            )
        fill = ops.cast(_numerics.mask_value(x.dtype), x.dtype)
        return ops.where(ops.cast(mask, "bool")[:, :, None], x, fill)

    def _args(self):
        return self.transitions, None, self.start_transitions, self.end_transitions

    def viterbi_decode(self, emissions: Tensor, mask: Tensor | None = None) -> Tensor:
        """Best paths `(batch, seq_len)` int32 (-1 at padding) for this
        layer's output `emissions` (in-graph; see `crf_ops.viterbi_decode`)."""
        trans, _, start, end = self._args()
        return crf_ops.viterbi_decode(emissions, trans, mask, start, end)

    def marginals(self, emissions: Tensor, mask: Tensor | None = None) -> Tensor:
        """P(y_t = k | x) `(batch, seq_len, num_tags)` float32, 0 at padding."""
        trans, _, start, end = self._args()
        return crf_ops.crf_marginals(emissions, trans, mask, start, end)

    def log_likelihood(self, emissions: Tensor, tags: Tensor, mask: Tensor | None = None) -> Tensor:
        """log p(tags | x) `(batch,)`, over the valid positions not tagged -1."""
        trans, _, start, end = self._args()
        return -crf_ops.crf_nll(emissions, tags, trans, mask, start, end)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return self._check_input_shape(input_shape)

    def compute_mask(self, inputs: Tensor, mask: Tensor | None = None) -> None:
        return None

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "num_tags": self.num_tags,
                "lr_multiplier": self.lr_multiplier,
                "use_boundary_transitions": self.use_boundary_transitions,
                "transitions_initializer": keras.initializers.serialize(self.transitions_initializer),
            }
        )
        return config
