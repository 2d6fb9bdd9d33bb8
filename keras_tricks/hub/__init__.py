"""keras_tricks on top of keras_hub backbones: the padding mask as a Keras
mask for the heads (`masked_sequence`), and Conditional Layer Normalization
swapped into a backbone in place of its LayerNorms
(`swap_in_conditional_layer_norm`, `ConditionalBackbone`).

Nothing here imports keras_hub: the functions take a backbone you built
(`keras_hub.models.BertBackbone(...)`, `...from_preset(...)`) or any Keras
model with the same structure. See docs/keras-hub.md."""

from keras_tricks.hub.conditional_backbone import (
    ConditionalBackbone,
    swap_in_conditional_layer_norm,
)
from keras_tricks.hub.masking import masked_sequence

__all__ = ["ConditionalBackbone", "masked_sequence", "swap_in_conditional_layer_norm"]
