"""Data pipeline utilities of keras_tricks.

sequence_padding   pad or truncate ragged sequences to one batch array
DataGenerator      bert4keras-style batch generator with process workers
                   whose batch stream does not depend on their number
"""

from keras_tricks.data.generator import DataGenerator, RemoteTraceback, WorkerError
from keras_tricks.data.padding import sequence_padding

__all__ = ["DataGenerator", "RemoteTraceback", "WorkerError", "sequence_padding"]
