"""The padding mask of a keras_hub backbone as a Keras mask."""

from __future__ import annotations

from typing import Any

from keras_tricks._typing import Tensor
from keras_tricks.layers.attach_mask import AttachMask


def masked_sequence(outputs: Any, padding_mask: Tensor, name: str | None = None) -> Tensor:
    """A backbone's sequence output carrying its `padding_mask` as a Keras mask.

    keras_hub's text backbones take the padding as an input (`padding_mask`,
    int32, 1 on real tokens) and return `{"sequence_output": ...}` without a
    Keras mask, on every backend: heads put after them would score the
    padding as text. This returns `AttachMask()([sequence_output,
    padding_mask])`, the same tensor with the mask attached, so that
    `GlobalPointer`, `EfficientGlobalPointer`, the GPLinker heads and the
    CRF (and any `Dense` or `Dropout` in between) see it.

    Args:
        outputs: what the backbone returned: a dict with `"sequence_output"`
            (keras_hub), or the sequence tensor itself.
        padding_mask: the backbone's `padding_mask` input, shape
            `(batch, seq_len)`.
        name: optional name of the `AttachMask` layer.

    Returns:
        The sequence, `(batch, seq_len, hidden)`, with its Keras mask.

    Example (keras_hub installed; no weights needed):

        backbone = keras_hub.models.BertBackbone(vocabulary_size=1000, num_layers=2,
            num_heads=2, hidden_dim=64, intermediate_dim=128)
        inputs = backbone.input
        seq = keras_tricks.hub.masked_sequence(backbone(inputs), inputs["padding_mask"])
        scores = keras_tricks.layers.GlobalPointer(heads=4, head_size=32)(seq)
        model = keras.Model(inputs, scores)
    """
    if isinstance(outputs, dict):
        if "sequence_output" not in outputs:
            raise ValueError(
                "`outputs`: a dict of backbone outputs must hold 'sequence_output'; "
                f"received the keys {sorted(outputs)}."
            )
        outputs = outputs["sequence_output"]
    return AttachMask(name=name)([outputs, padding_mask])
