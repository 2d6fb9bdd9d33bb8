"""The object `DataGenerator.forfit()` returns: an iterator, and a Keras data adapter.

Why an adapter: TensorFlow's `fit()` pulls a Python generator from a tf.data
thread, and tf.data turns whatever that thread raises into `UnknownError`
("Graph execution error"), so the type of a worker's exception was lost there.
As a data adapter, the stream instead notes the exception in that thread,
ends tf.data's input cleanly, and raises the original (its type, message and
worker traceback) from `on_epoch_end`, which Keras calls in the thread that
called `fit()` as soon as the input ends. On JAX and PyTorch, Keras pulls the
stream in the calling thread, where the exception is raised as it happens.

Batches still go through Keras's own generator adapter, so shapes, dtypes and
structures are handled exactly as for a plain generator. Keras is imported
only when a stream is made: worker processes import this package's data
module without it.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from typing import Any

from keras_tricks import _keras_compat

_CLASS = None
# Keras warns that the input "ran out of data" when tf.data's input ends; when
# it ends because of an exception about to be raised, that warning would only
# mislead, so it is silenced for that one epoch end.
_RAN_OUT = "Your input ran out of data"


def fit_stream(stream: Iterator[Any]) -> Iterator[Any]:
    """Wrap a batch iterator so that `fit()` raises its exceptions as they are."""
    global _CLASS
    if _CLASS is None:
        _CLASS = _make_class(_keras_compat.data_adapter_base())
    return _CLASS(stream)


def _make_class(base: type) -> type:
    class FitStream(base):
        """A `DataGenerator` stream: iterate it, or hand it to `fit()`."""

        def __init__(self, stream: Iterator[Any]) -> None:
            self._stream = stream
            self._inner = None
            self._error = None
            self._filter = None

        def __iter__(self) -> FitStream:
            return self

        def __next__(self) -> Any:
            return next(self._stream)

        def close(self) -> None:
            """Stop the stream (and the workers it started)."""
            self._stream.close()

        def _adapter(self) -> Any:
            if self._inner is None:
                self._inner = _keras_compat.generator_data_adapter(self._guarded(threading.get_ident()))
            return self._inner

        def _guarded(self, owner: int) -> Iterator[Any]:
            while True:
                try:
                    batch = next(self._stream)
                except StopIteration:
                    return
                except Exception as error:
                    if threading.get_ident() == owner:
                        raise  # pulled in the calling thread: raise it there
                    self._error = error
                    warnings.filterwarnings("ignore", message=_RAN_OUT, category=UserWarning)
                    self._filter = warnings.filters[0]
                    return
                yield batch

        def get_numpy_iterator(self) -> Any:
            return self._adapter().get_numpy_iterator()

        def get_tf_dataset(self) -> Any:
            # Batches are padded per batch: no padded axis may be fixed from the first two.
            return _keras_compat.padded_shape_tf_dataset(self._adapter())

        def get_jax_iterator(self) -> Any:
            return self._adapter().get_jax_iterator()

        def get_torch_dataloader(self) -> Any:
            return self._adapter().get_torch_dataloader()

        @property
        def num_batches(self) -> None:
            return None  # endless

        @property
        def batch_size(self) -> None:
            return None  # batches are padded per batch; their size is the generator's

        @property
        def has_partial_batch(self) -> None:
            return None

        @property
        def partial_batch_size(self) -> None:
            return None

        def on_epoch_begin(self) -> None:
            self._adapter().on_epoch_begin()

        def on_epoch_end(self) -> None:
            self._adapter().on_epoch_end()
            if self._filter is not None:
                try:
                    warnings.filters.remove(self._filter)
                except ValueError:
                    pass  # someone reset the filters meanwhile
                self._filter = None
            if self._error is not None:
                error, self._error = self._error, None
                raise error

    return FitStream
