"""Callbacks of keras_tricks, one file per callback."""

__all__ = []
