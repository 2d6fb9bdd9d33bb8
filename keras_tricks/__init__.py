"""keras_tricks: training tricks of the bert4keras / Scientific Spaces lineage
for multi-backend Keras 3 (TensorFlow, JAX, PyTorch).

Submodules, one per capability:
    keras_tricks.activations  squareplus
    keras_tricks.entropy      entropy_normalize, log_n_attention_scale
    keras_tricks.intermediates  record / capture: tensors from inside a layer's call
    keras_tricks.hub          on keras_hub backbones: masked_sequence (the padding
                              mask as a Keras mask), swap_in_conditional_layer_norm
    keras_tricks.postprocessing  CAN (can_normalize, CANPredictor), on the host
    keras_tricks.layers       SquarePlus, GlobalPointer, EfficientGlobalPointer,
                              ConditionalLayerNormalization, LogNMultiHeadAttention,
                              GPLinkerHeads, GPLinkerEventHeads, ConditionalRandomField,
                              TheseusReplacement, AttachMask, decode_spans
    keras_tricks.losses       GlobalPointer losses, flooding
    keras_tricks.metrics      SpanF1, SpanPrecision, SpanRecall
    keras_tricks.spans        span conventions (MASK_VALUE, SPAN_PADDING), labels,
                              decode_spans
    keras_tricks.callbacks    ExponentialMovingAverage, FloodLevelScheduler
    keras_tricks.optimizers   ExponentialMovingAverageOptimizer (the EMA callback's engine)
    keras_tricks.data         DataGenerator, sequence_padding
    keras_tricks.multitask    MultiTaskModel and the multi-task weighting strategies
    keras_tricks.train        TrickModel: FGM, PGD, GradientPenalty, RDrop, composed
    keras_tricks.testing      the shared cross-backend test harness (import it
                              explicitly: it is for tests)
"""

from keras_tricks import (
    activations,
    callbacks,
    data,
    entropy,
    hub,
    intermediates,
    layers,
    losses,
    metrics,
    multitask,
    optimizers,
    postprocessing,
    spans,
    train,
)
from keras_tricks.version import __version__

__all__ = [
    "activations",
    "callbacks",
    "data",
    "entropy",
    "hub",
    "intermediates",
    "layers",
    "losses",
    "metrics",
    "multitask",
    "optimizers",
    "postprocessing",
    "spans",
    "train",
    "__version__",
]
