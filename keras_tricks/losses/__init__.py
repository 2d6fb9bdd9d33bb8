"""Losses of keras_tricks, one file per loss, all registered under the
package name `keras_tricks`."""

from keras_tricks.losses.crf_loss import CRFLoss
from keras_tricks.losses.flooding import Flooding
from keras_tricks.losses.global_pointer_crossentropy import GlobalPointerCrossentropy
from keras_tricks.losses.global_pointer_kl import global_pointer_kl
from keras_tricks.losses.individual_flooding import IndividualFlooding
from keras_tricks.losses.multilabel_categorical_crossentropy import (
    multilabel_categorical_crossentropy,
)
from keras_tricks.losses.sparse_global_pointer_crossentropy import (
    SPAN_PADDING,
    SparseGlobalPointerCrossentropy,
)

__all__ = [
    "SPAN_PADDING",
    "CRFLoss",
    "Flooding",
    "GlobalPointerCrossentropy",
    "IndividualFlooding",
    "SparseGlobalPointerCrossentropy",
    "global_pointer_kl",
    "multilabel_categorical_crossentropy",
]
