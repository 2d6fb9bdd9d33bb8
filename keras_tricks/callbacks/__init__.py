"""Callbacks of keras_tricks, one file per callback."""

from keras_tricks.callbacks.backup_and_resume import BackupAndResume
from keras_tricks.callbacks.exponential_moving_average import ExponentialMovingAverage
from keras_tricks.callbacks.flood_level_scheduler import FloodLevelScheduler
from keras_tricks.callbacks.theseus_scheduler import TheseusScheduler
from keras_tricks.optimizers import ExponentialMovingAverageOptimizer  # its home before 0.2

__all__ = [
    "BackupAndResume",
    "ExponentialMovingAverage",
    "ExponentialMovingAverageOptimizer",
    "FloodLevelScheduler",
    "TheseusScheduler",
]
