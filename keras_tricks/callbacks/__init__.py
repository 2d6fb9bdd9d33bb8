"""Callbacks of keras_tricks, one file per callback."""

from keras_tricks.callbacks.exponential_moving_average import (
    ExponentialMovingAverage,
    ExponentialMovingAverageOptimizer,
)

__all__ = ["ExponentialMovingAverage", "ExponentialMovingAverageOptimizer"]
