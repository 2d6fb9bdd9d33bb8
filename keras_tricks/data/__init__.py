"""Data pipeline utilities of keras_tricks."""

__all__ = []
