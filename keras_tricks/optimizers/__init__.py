"""Optimizer wrappers of keras_tricks, one file per wrapper, registered under
the package name `keras_tricks`."""

from keras_tricks.optimizers.exponential_moving_average import ExponentialMovingAverageOptimizer

__all__ = ["ExponentialMovingAverageOptimizer"]
