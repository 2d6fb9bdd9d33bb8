"""Keras layers of keras_tricks, one class per file, all registered under the
package name `keras_tricks` (so models using them save to `.keras` and load
back without `custom_objects`)."""

from keras_tricks.layers.attach_mask import AttachMask
from keras_tricks.layers.conditional_layer_normalization import (
    ConditionalLayerNormalization,
)
from keras_tricks.layers.conditional_random_field import ConditionalRandomField
from keras_tricks.layers.crf_ops import (
    TAG_PADDING,
    crf_log_partition,
    crf_marginals,
    crf_nll,
    crf_path_score,
    viterbi_decode,
)
from keras_tricks.layers.efficient_global_pointer import EfficientGlobalPointer
from keras_tricks.layers.global_pointer import GlobalPointer
from keras_tricks.layers.gplinker_event_heads import GPLinkerEventHeads
from keras_tricks.layers.gplinker_heads import GPLinkerHeads
from keras_tricks.layers.log_n_multi_head_attention import LogNMultiHeadAttention
from keras_tricks.layers.squareplus import SquarePlus
from keras_tricks.layers.theseus_replacement import (
    TheseusReplacement,
    extract_successor,
    theseus_modules,
)
from keras_tricks.spans.decoding import decode_spans

__all__ = [
    "TAG_PADDING",
    "AttachMask",
    "ConditionalLayerNormalization",
    "ConditionalRandomField",
    "EfficientGlobalPointer",
    "GPLinkerEventHeads",
    "GPLinkerHeads",
    "GlobalPointer",
    "LogNMultiHeadAttention",
    "SquarePlus",
    "TheseusReplacement",
    "crf_log_partition",
    "crf_marginals",
    "crf_nll",
    "crf_path_score",
    "decode_spans",
    "extract_successor",
    "theseus_modules",
    "viterbi_decode",
]
