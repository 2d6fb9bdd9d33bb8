from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_tricks import _validation
from keras_tricks._typing import Identifier, Shape, Tensor
from keras_tricks.layers.efficient_global_pointer import EfficientGlobalPointer
from keras_tricks.layers.global_pointer import GlobalPointer


@keras.saving.register_keras_serializable(package="keras_tricks")
class GPLinkerEventHeads(keras.layers.Layer):
    """GPLinker's three span heads for event extraction, as one
    `(batch, L + 2, n, n)` score tensor.

    Su Jianlin, "GPLinker：基于GlobalPointer的事件联合抽取" (2022),
    https://kexue.fm/archives/8926. For L argument labels (the
    `(event_type, role)` pairs of a schema, one trigger label per event type
    among them), three `GlobalPointer` heads (or `EfficientGlobalPointer`
    with `efficient=True`) read the same hidden states:

    - the argument head, L channels: s_l(i, j) scores "an argument labelled l
      spans tokens i..j", with RoPE, as an NER head over the labels;
    - the head-link head, 1 channel: s(i, j), i <= j, scores "two arguments
      of one event start at i and j";
    - the tail-link head, 1 channel: the same for their ends.

    The link heads use no RoPE (as in the article); their rows are ordered
    (min, max), so every channel keeps the lower-triangle mask. Outputs are
    concatenated in that order: `[0, L)` arguments, `L` head links, `L + 1`
    tail links. `keras_tricks.spans.decode_events` turns them into events
    (maximal cliques of the links within each event type).

    Training: the article sums the sparse multilabel loss of every channel
    of the three heads; `SparseGlobalPointerCrossentropy()` on the
    concatenated output is that sum divided by the constant L + 2 (its mean
    over channels), and every channel uses the upper triangle, its default.
    Labels come from `keras_tricks.spans.events_to_sparse_labels`.

    Args:
        labels: L, the number of argument labels (triggers included), a
            positive integer.
        head_size: size of q and k of every head (even: RoPE).
        efficient: use `EfficientGlobalPointer` for the three heads.
        use_bias, kernel_initializer, bias_initializer: of every head.
        **kwargs: base `Layer` arguments (`name`, `dtype`, ...).

    Input shape: `(batch, seq_len, hidden)`, optional mask `(batch, seq_len)`
    (padding positions give `MASK_VALUE` in every channel).
    Output shape: `(batch, labels + 2, seq_len, seq_len)` logits, float32
    under mixed policies (as `GlobalPointer`).

    Examples:
    >>> import keras, numpy as np, keras_tricks
    >>> tokens = keras.Input((None,), dtype="int32")
    >>> x = keras.layers.Embedding(100, 32, mask_zero=True)(tokens)
    >>> scores = keras_tricks.layers.GPLinkerEventHeads(labels=7, head_size=16)(x)
    >>> model = keras.Model(tokens, scores)
    >>> tuple(model(np.array([[5, 6, 7, 0]])).shape)
    (1, 9, 4, 4)
    """

    def __init__(
        self,
        labels: int,
        head_size: int = 64,
        efficient: bool = False,
        use_bias: bool = True,
        kernel_initializer: Identifier = "lecun_normal",
        bias_initializer: Identifier = "zeros",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.labels = _validation.check_int("labels", labels, minimum=1)
        self.head_size = _validation.check_int("head_size", head_size, minimum=1)
        self.efficient = _validation.check_bool("efficient", efficient)
        self.use_bias = _validation.check_bool("use_bias", use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        cls = EfficientGlobalPointer if self.efficient else GlobalPointer
        common = {
            "head_size": self.head_size,
            "use_bias": self.use_bias,
            "kernel_initializer": self.kernel_initializer,
            "bias_initializer": self.bias_initializer,
            "dtype": self.dtype_policy,
        }
        self.argument_head = cls(heads=self.labels, name="arguments", **common)
        self.head_link = cls(heads=1, use_rope=False, name="head_links", **common)
        self.tail_link = cls(heads=1, use_rope=False, name="tail_links", **common)
        self.supports_masking = True

    def build(self, input_shape: Shape) -> None:
        for head in (self.argument_head, self.head_link, self.tail_link):
            head.build(input_shape)

    def call(self, inputs: Tensor, mask: Tensor | None = None) -> Tensor:
        parts = [head(inputs, mask=mask) for head in (self.argument_head, self.head_link, self.tail_link)]
        return ops.concatenate(parts, axis=1)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        shape = self.argument_head.compute_output_shape(input_shape)
        return (shape[0], self.labels + 2, shape[2], shape[3])

    def compute_output_spec(self, inputs: keras.KerasTensor, mask: Tensor | None = None) -> keras.KerasTensor:
        spec = self.argument_head.compute_output_spec(inputs)
        return keras.KerasTensor(self.compute_output_shape(inputs.shape), dtype=spec.dtype)

    def compute_mask(self, inputs: Tensor, mask: Tensor | None = None) -> None:
        return None

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "labels": self.labels,
                "head_size": self.head_size,
                "efficient": self.efficient,
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            }
        )
        return config
