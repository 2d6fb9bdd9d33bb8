"""Optimizer wrappers and learning-rate schedules of keras_tricks, one file
per component, registered under the package name `keras_tricks`."""

from keras_tricks.optimizers.exponential_moving_average import ExponentialMovingAverageOptimizer
from keras_tricks.optimizers.layerwise_lr_decay import layerwise_lr_decay
from keras_tricks.optimizers.lookahead import Lookahead
from keras_tricks.optimizers.piecewise_linear import PiecewiseLinear
from keras_tricks.optimizers.scaled_updates import ScaledUpdates

__all__ = [
    "ExponentialMovingAverageOptimizer",
    "Lookahead",
    "PiecewiseLinear",
    "ScaledUpdates",
    "layerwise_lr_decay",
]
