"""Callbacks of keras_tricks, one file per callback."""

from keras_tricks.callbacks.exponential_moving_average import (
    ExponentialMovingAverage,
    ExponentialMovingAverageOptimizer,
)
from keras_tricks.callbacks.flood_level_scheduler import FloodLevelScheduler

__all__ = [
    "ExponentialMovingAverage",
    "ExponentialMovingAverageOptimizer",
    "FloodLevelScheduler",
]
