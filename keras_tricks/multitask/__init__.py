"""Multi-task loss weighting for multi-output Keras models."""

__all__ = []
