"""Losses of keras_tricks, one file per loss, all registered under the
package name `keras_tricks`."""

from keras_tricks.losses.flooding import Flooding
from keras_tricks.losses.individual_flooding import IndividualFlooding

__all__ = ["Flooding", "IndividualFlooding"]
