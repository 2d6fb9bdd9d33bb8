"""keras_tricks: training tricks of the bert4keras / Scientific Spaces lineage
for multi-backend Keras 3 (TensorFlow, JAX, PyTorch).

Submodules, one per capability:
    keras_tricks.activations  squareplus
    keras_tricks.layers       SquarePlus
    keras_tricks.losses       Flooding, IndividualFlooding
    keras_tricks.callbacks    FloodLevelScheduler
    keras_tricks.testing      the shared cross-backend test harness
"""

from keras_tricks import activations, callbacks, layers, losses
from keras_tricks.version import __version__

__all__ = ["activations", "callbacks", "layers", "losses", "__version__"]
