from __future__ import annotations

from typing import Any

import keras

from keras_tricks import _validation
from keras_tricks._typing import Identifier
from keras_tricks.layers._gplinker_base import LinkedSpanHeads


@keras.saving.register_keras_serializable(package="keras_tricks")
class GPLinkerEventHeads(LinkedSpanHeads):
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
        # Checked first: a wrong count is the likeliest mistake.
        labels = _validation.check_int("labels", labels, minimum=1)
        super().__init__(head_size, efficient, use_bias, kernel_initializer, bias_initializer, **kwargs)
        self.labels = labels
        self.argument_head = self._head(self.labels, "arguments")
        self.head_link = self._head(1, "head_links", use_rope=False)
        self.tail_link = self._head(1, "tail_links", use_rope=False)

    def _parts(self) -> tuple[keras.layers.Layer, ...]:
        return (self.argument_head, self.head_link, self.tail_link)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "labels": self.labels}
