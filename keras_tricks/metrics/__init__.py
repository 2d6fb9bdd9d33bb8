"""Metrics of keras_tricks, one file per metric, all registered under the
package name `keras_tricks`."""

from keras_tricks.metrics.span_f1 import SpanF1, SpanPrecision, SpanRecall
from keras_tricks.metrics.triple_f1 import TripleF1, TriplePrecision, TripleRecall, triple_prf

__all__ = [
    "SpanF1",
    "SpanPrecision",
    "SpanRecall",
    "TripleF1",
    "TriplePrecision",
    "TripleRecall",
    "triple_prf",
]
