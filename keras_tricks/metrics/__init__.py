"""Metrics of keras_tricks, one file per metric, all registered under the
package name `keras_tricks`."""

__all__ = []
