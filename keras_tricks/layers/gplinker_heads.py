from __future__ import annotations

from typing import Any

import keras

from keras_tricks import _validation
from keras_tricks._typing import Identifier
from keras_tricks.layers._gplinker_base import LinkedSpanHeads


@keras.saving.register_keras_serializable(package="keras_tricks")
class GPLinkerHeads(LinkedSpanHeads):
    """GPLinker's three span heads for joint entity-relation extraction, as
    one `(batch, 2 + 2R, n, n)` score tensor.

    Su Jianlin, "GPLinker：基于GlobalPointer的实体关系联合抽取" (2022),
    https://kexue.fm/archives/8888. For R relation types, three
    `GlobalPointer` heads (or `EfficientGlobalPointer` with `efficient=True`)
    read the same hidden states:

    - the entity head, 2 channels (0: subject spans, 1: object spans), with
      RoPE and the lower-triangle mask, as an NER head;
    - the head-link head, R channels: s_r(i, j) scores "a subject of
      relation r starts at i and its object starts at j";
    - the tail-link head, R channels: the same for the ends.

    The link heads use neither RoPE nor the lower-triangle mask (an object
    may precede its subject), as in the article. Their outputs are
    concatenated on the channel axis, in that order: `[0, 2)` entities,
    `[2, 2 + R)` head links, `[2 + R, 2 + 2R)` tail links. A triple
    `((a, b), r, (c, d))` is predicted iff scores[0, a, b], scores[1, c, d],
    scores[2 + r, a, c] and scores[2 + R + r, b, d] all exceed the threshold
    (`keras_tricks.spans.decode_triples`).

    Training: the article sums the sparse multilabel loss of every channel;
    `SparseGlobalPointerCrossentropy(tril_mask=False)` on the concatenated
    output is that sum divided by the constant 2 + 2R (its mean over
    channels). Labels come from `keras_tricks.spans.triples_to_sparse_labels`
    (`tril_mask=False`: a link row with object before subject counts; the
    entity channels mask their reversed spans anyway). One output and one
    label array keep `compile`, `fit`, the metrics (`TripleF1`) and saving as
    for any single-output model.

    Args:
        relations: R, the number of relation types, a positive integer.
        head_size: size of q and k of every head (even: the entity head uses
            RoPE).
        efficient: use `EfficientGlobalPointer` for the three heads.
        use_bias, kernel_initializer, bias_initializer: of every head.
        **kwargs: base `Layer` arguments (`name`, `dtype`, ...).

    Input shape: `(batch, seq_len, hidden)`, optional mask `(batch, seq_len)`
    (padding positions give `MASK_VALUE` in every channel).
    Output shape: `(batch, 2 + 2 * relations, seq_len, seq_len)` logits,
    float32 under mixed policies (as `GlobalPointer`).

    Examples:
    >>> import keras, numpy as np, keras_tricks
    >>> tokens = keras.Input((None,), dtype="int32")
    >>> x = keras.layers.Embedding(100, 32, mask_zero=True)(tokens)
    >>> scores = keras_tricks.layers.GPLinkerHeads(relations=5, head_size=16)(x)
    >>> model = keras.Model(tokens, scores)
    >>> tuple(model(np.array([[5, 6, 7, 0]])).shape)
    (1, 12, 4, 4)
    """

    def __init__(
        self,
        relations: int,
        head_size: int = 64,
        efficient: bool = False,
        use_bias: bool = True,
        kernel_initializer: Identifier = "lecun_normal",
        bias_initializer: Identifier = "zeros",
        **kwargs: Any,
    ) -> None:
        # Checked first: a wrong count is the likeliest mistake.
        relations = _validation.check_int("relations", relations, minimum=1)
        super().__init__(head_size, efficient, use_bias, kernel_initializer, bias_initializer, **kwargs)
        self.relations = relations
        self.entity_head = self._head(2, "entities")
        self.head_link = self._head(self.relations, "head_links", use_rope=False, tril_mask=False)
        self.tail_link = self._head(self.relations, "tail_links", use_rope=False, tril_mask=False)

    def _parts(self) -> tuple[keras.layers.Layer, ...]:
        return (self.entity_head, self.head_link, self.tail_link)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "relations": self.relations}
