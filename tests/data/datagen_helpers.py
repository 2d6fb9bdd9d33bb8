"""DataGenerator subclasses for the tests, at module top level so that
worker processes started with `spawn` can import them."""

import os
import random
import signal
import time

import numpy as np

from keras_tricks.data import DataGenerator, sequence_padding


class RaggedGenerator(DataGenerator):
    """bert4keras style: ragged token ids, padded per batch, with random
    augmentation drawn from every source the generator seeds."""

    def __iter__(self, random_=False):
        tokens, labels, draws = [], [], []
        for is_end, (t, y) in self.sample(random_):
            tokens.append(t)
            labels.append(y)
            draws.append([random.random(), np.random.random(), self.rng.random()])
            if len(tokens) == self.batch_size or is_end:
                yield (sequence_padding(tokens), np.asarray(labels)), np.asarray(draws)
                tokens, labels, draws = [], [], []


class PidGenerator(DataGenerator):
    """Each batch: the sample values and the pid that built it."""

    def __iter__(self, random_=False):
        batch = []
        for is_end, x in self.sample(random_):
            batch.append(x)
            if len(batch) == self.batch_size or is_end:
                yield np.asarray(batch), os.getpid()
                batch = []


class FailingGenerator(DataGenerator):
    """Raises KeyError (stamped with the time it was raised) in the batch
    holding sample `fail_at`; the batch holding `slow_at` sleeps 30 s first."""

    fail_at = 5
    slow_at = None

    def __iter__(self, random_=False):
        batch = []
        for is_end, x in self.sample(random_):
            if x == self.slow_at:
                time.sleep(30)
            if x == self.fail_at:
                raise_deep(x)
            batch.append(x)
            if len(batch) == self.batch_size or is_end:
                yield np.asarray(batch)
                batch = []


def raise_deep(x):
    raise KeyError(f"bad sample {x} @{time.time()!r}")


class SuicideGenerator(DataGenerator):
    """The worker building the batch with sample `die_at` kills itself."""

    die_at = 5

    def __iter__(self, random_=False):
        batch = []
        for is_end, x in self.sample(random_):
            if x == self.die_at and self.worker_id is not None:
                os.kill(os.getpid(), signal.SIGKILL)
            batch.append(x)
            if len(batch) == self.batch_size or is_end:
                yield np.asarray(batch)
                batch = []


class SleepyGenerator(DataGenerator):
    """Sleeps `seconds` per batch (a stuck worker, for the timeout)."""

    seconds = 0.0

    def __iter__(self, random_=False):
        batch = []
        for is_end, x in self.sample(random_):
            batch.append(x)
            if len(batch) == self.batch_size or is_end:
                time.sleep(self.seconds)
                yield np.asarray(batch, dtype="float32")
                batch = []


class BigArrayGenerator(DataGenerator):
    """Batches of 1 MiB arrays (shared memory) and small ones (pickled)."""

    def __iter__(self, random_=False):
        batch = []
        for is_end, x in self.sample(random_):
            batch.append(x)
            if len(batch) == self.batch_size or is_end:
                big = np.stack([self.rng.standard_normal(1 << 15) + v for v in batch])
                yield {"big": big, "small": np.asarray(batch)}
                batch = []


class RegressionGenerator(DataGenerator):
    """(x, y) batches for a tiny Dense model; y = x @ w."""

    def __iter__(self, random_=False):
        xs = []
        for is_end, x in self.sample(random_):
            xs.append(x)
            if len(xs) == self.batch_size or is_end:
                x = np.asarray(xs, dtype="float32")
                yield x, x @ np.array([[1.0], [-2.0], [0.5], [3.0]], dtype="float32")
                xs = []


class UnpicklableGenerator(DataGenerator):
    """Yields a batch that cannot be pickled (a lambda)."""

    def __iter__(self, random_=False):
        for is_end, x in self.sample(random_):
            if is_end:
                yield np.zeros(1 << 15), (lambda: x)


class FailingRegressionGenerator(RegressionGenerator):
    """RegressionGenerator whose batch holding sample index `fail_at` raises
    ZeroDivisionError in `explode` (a name the worker's traceback must show)."""

    fail_at = 40

    def __iter__(self, random_=False):
        xs = []
        for is_end, (i, x) in self.sample(random_):
            if i == self.fail_at:
                explode(i)
            xs.append(x)
            if len(xs) == self.batch_size or is_end:
                x = np.asarray(xs, dtype="float32")
                yield x, x @ np.array([[1.0], [-2.0], [0.5], [3.0]], dtype="float32")
                xs = []


def explode(i):
    return i / 0
