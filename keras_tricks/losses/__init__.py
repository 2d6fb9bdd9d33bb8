"""Losses of keras_tricks, one file per loss, all registered under the
package name `keras_tricks`."""

__all__ = []
