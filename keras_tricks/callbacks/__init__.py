"""Callbacks of keras_tricks, one file per callback."""

from keras_tricks.callbacks.flood_level_scheduler import FloodLevelScheduler

__all__ = ["FloodLevelScheduler"]
