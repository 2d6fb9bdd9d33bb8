"""`DataGenerator`: bert4keras's data generator, with parallel workers that
never hang, repeat or lose data."""

from __future__ import annotations

import collections.abc
import contextlib
import inspect
import math
import numbers
import random as python_random
import weakref
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from keras_tricks import _keras_compat
from keras_tricks._validation import check_float
from keras_tricks.data import _fit_stream, _pool
from keras_tricks.data._pool import RemoteTraceback, WorkerError
from keras_tricks.data.padding import sequence_padding

__all__ = ["DataGenerator", "WorkerError", "RemoteTraceback"]

# SeedSequence spawn keys: the shuffle of epoch e is (0, e); the randomness
# of batch k of epoch e is (1, e, k, 0) for `self.rng` and (1, e, k, 1) for
# the global generators (Python `random`, NumPy's legacy `np.random`, Keras).
_SHUFFLE, _BATCH = 0, 1
# Positions remembered per stream: far more batches than fit() (tf.data's
# prefetch included) holds ahead of training.
_POSITIONS_KEPT = 1024
_STATE_KEYS = ("seed", "epoch", "index", "offset", "random", "batch_size", "size")


class _LengthError(ValueError, TypeError):
    """`len()` of a generator whose data has no length. A ValueError as the
    package promises, and a TypeError so that `list(gen)` and
    `operator.length_hint` still treat it as "no length" instead of failing."""


def _dispatching_iter(user_iter):
    """Wrap a subclass's `__iter__` so that `for batch in gen` runs the
    parallel, seeded pipeline, while the pipeline itself calls the user's
    code on one batch worth of samples at a time."""

    try:
        takes_random = len(inspect.signature(user_iter).parameters) > 1
    except (TypeError, ValueError):
        takes_random = True

    def __iter__(self, random=False):
        if self._shard is not None:
            return user_iter(self, random) if takes_random else user_iter(self)
        return self._stream(random, forever=False)

    __iter__.__doc__ = user_iter.__doc__
    __iter__.__wrapped__ = user_iter
    __iter__._kt_dispatcher = True
    return __iter__


def _collate(samples):
    """The default batching: stack (padding ragged ones) field by field."""
    first = samples[0]
    if isinstance(first, dict):
        return {k: _collate([s[k] for s in samples]) for k in first}
    if isinstance(first, (tuple, list)) and not _is_sequence_of_numbers(first):
        return tuple(_collate([s[i] for s in samples]) for i in range(len(first)))
    arrays = [np.asarray(s) for s in samples]
    if all(a.shape == arrays[0].shape for a in arrays):
        return np.stack(arrays)
    return sequence_padding(arrays)


def _is_sequence_of_numbers(x):
    return all(isinstance(v, numbers.Number) for v in x)


class DataGenerator:
    """A batch generator in the style of bert4keras, with optional workers.

    Subclass it and write the batching once, as in bert4keras: iterate over
    `self.sample(random)`, which yields `(is_end, sample)`, and yield a batch
    when `batch_size` samples are collected or `is_end` is true (so the last,
    partial batch is kept):

        class NerGenerator(DataGenerator):
            def __iter__(self, random=False):
                tokens, labels = [], []
                for is_end, (t, l) in self.sample(random):
                    tokens.append(t)
                    labels.append(l)
                    if len(tokens) == self.batch_size or is_end:
                        yield sequence_padding(tokens), sequence_padding(labels)
                        tokens, labels = [], []

        gen = NerGenerator(train_samples, batch_size=32, workers=2, seed=0)
        model.fit(gen.forfit(), steps_per_epoch=len(gen), epochs=10)
        for x, y in NerGenerator(test_samples, batch_size=64): ...

    Without an `__iter__`, samples are stacked field by field (ragged ones
    padded with `sequence_padding`):

    >>> gen = DataGenerator([[1, 2], [3], [4, 5, 6]], batch_size=2)
    >>> len(gen), [batch.tolist() for batch in gen]
    (2, [[[1, 2], [3, 0]], [[4, 5, 6]]])

    How batches are made (identically for every number of workers): each epoch
    the data is cut into shards of `batch_size` samples, in order
    (`random=False`) or shuffled (`random=True`: a permutation of the indices
    drawn from `(seed, epoch)` for data with `len` and `[]`; for other
    iterables bert4keras's buffered shuffle, `buffer_size` samples deep). Your
    `__iter__` is then run on each shard alone: there `self.sample(random)`
    yields that shard's samples (`is_end` true on its last), so each shard
    gives one batch. Shard k of epoch e is built with its own seeds derived
    from `(seed, e, k)` by `numpy.random.SeedSequence`:

    - `self.rng`, a `numpy.random.Generator` (the recommended source);
    - Python's `random` and NumPy's global `np.random` are reseeded;
    - Keras's global `SeedGenerator` (what `keras.random.*` uses without a
      `seed`) is reset, so it is re-created from the reseeded `random`.

    In the main process (`workers=0`) those global states are restored after
    each batch, so the training loop's own randomness is untouched. Because the
    seeds belong to the batch, not to the process that builds it, the stream of
    batches (content and order) is the same for `workers=0, 1, 2, 4, ...`, no
    two batches (hence no two workers, no two epochs) share a random stream,
    and a run is reproduced exactly by the same `seed`.

    `workers=N > 0` builds the batches in N worker processes, which persist
    for as long as the stream that started them: a whole `forfit()` (every
    epoch, no new pool per epoch), one pass of plain iteration, or a
    `with gen:` block, in which the pool stays up for every pass. The main
    process hands out up to `prefetch * N` batches ahead and yields them in
    order. Arrays of at least `shm_threshold` bytes come back through shared
    memory rather than the pipe. An exception in a worker is raised in the main
    process as soon as it happens (the original exception, with the worker's
    traceback as its cause); a worker that dies (e.g. killed by a signal)
    raises `WorkerError` at once; `timeout` bounds the wait for any result
    (e.g. a deadlock in user code). After the stream ends, fails, is
    interrupted (`KeyboardInterrupt`), abandoned (`break`, then the generator
    object is released) or garbage-collected, its workers are stopped and
    joined. Under the `spawn`/`forkserver` start methods the subclass must be
    importable (defined at the top level of a module, not in `__main__` of a
    notebook); under `fork` (Linux's default before Python 3.14) it need not,
    but then `__iter__` must not call the backend (TensorFlow, JAX and PyTorch
    do not survive a fork), which NumPy and Python code never do. Workers get
    the generator as it is when they start (copy-on-write under `fork`, one
    pickle per worker under `spawn`): attributes changed later are not seen
    until the next pool. Only a worker killed in the middle of copying a
    result can strand a shared-memory segment; Python's resource tracker
    removes it when the program exits.

    Args:
        data: the samples: a sequence (`len` and integer `[]`: shuffled by
            index, sent to workers as indices) or any re-iterable (read in the
            main process, sent to workers as samples; `len(gen)` then needs
            `len(data)`).
        batch_size: samples per batch, an int >= 1.
        buffer_size: shuffle buffer for data without `[]` (default
            `1000 * batch_size`).
        workers: worker processes, an int >= 0 (0: build batches in-process).
        seed: an int >= 0; None draws one from the OS (see `self.seed`).
        start_method: `"fork"`, `"spawn"`, `"forkserver"` or None
            (multiprocessing's default).
        timeout: seconds to wait for a worker's result before giving up with
            `WorkerError`: a number > 0 and at most `MAX_TIMEOUT` (about 24.8
            days, the longest wait `select`/`poll` accept); None or `math.inf`:
            wait while the workers live.
        prefetch: batches in flight per worker (default 2).
        shm_threshold: arrays of at least this many bytes travel through
            shared memory (default 64 KiB; None: never). Empty arrays,
            object/structured arrays and ndarray subclasses (e.g.
            `np.ma.MaskedArray`, whose mask a segment would lose) are always
            pickled through the pipe.
        process_index, process_count: for training in several processes
            (`keras.distribution` on several hosts, e.g.
            `process_index=jax.process_index(),
            process_count=jax.process_count()`): `batch_size` is then the
            global batch, and this process builds only its contiguous part
            of each (part i of `process_count` near-equal parts; pick a
            `batch_size` they divide for equal local batches). The parts of
            all processes, in process order, are exactly the single-process
            stream's batches, except a last batch of fewer samples than
            processes, which every process skips. Ints, `0 <= process_index
            < process_count` (default: one process).

    Attributes:
        steps: batches per epoch, or None when the data has no length.
        epoch: the epoch number the next stream starts from (settable;
            setting it discards a position given by `set_state`).

    `get_state()` / `set_state()` save and restore the stream's position
    (see `callbacks.BackupAndResume` to resume a training run mid-epoch).
    """

    def __init__(
        self,
        data: Sequence[Any] | Iterable[Any],
        batch_size: int = 32,
        buffer_size: int | None = None,
        workers: int = 0,
        seed: int | None = None,
        *,
        start_method: str | None = None,
        timeout: float | None = None,
        prefetch: int = 2,
        shm_threshold: int | None = 1 << 16,
        process_index: int = 0,
        process_count: int = 1,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise ValueError(f"`batch_size` must be an int >= 1; received batch_size={batch_size!r}.")
        if isinstance(workers, bool) or not isinstance(workers, numbers.Integral) or workers < 0:
            raise ValueError(f"`workers` must be an int >= 0; received workers={workers!r}.")
        if buffer_size is not None and (
            isinstance(buffer_size, bool) or not isinstance(buffer_size, numbers.Integral) or buffer_size < 1
        ):
            raise ValueError(
                f"`buffer_size` must be None or an int >= 1; received buffer_size={buffer_size!r}."
            )
        if seed is not None and (
            isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0
        ):
            raise ValueError(f"`seed` must be None or an int >= 0; received seed={seed!r}.")
        if isinstance(prefetch, bool) or not isinstance(prefetch, numbers.Integral) or prefetch < 1:
            raise ValueError(f"`prefetch` must be an int >= 1; received prefetch={prefetch!r}.")
        timeout = check_float(
            "timeout", timeout, minimum=0, min_inclusive=False, finite=False, allow_none=True
        )
        if timeout is not None and math.isinf(timeout):
            timeout = None  # documented: infinity is "no timeout"
        elif timeout is not None and timeout > _pool.MAX_TIMEOUT:
            raise ValueError(
                f"`timeout` must be at most {_pool.MAX_TIMEOUT} s (what the wait for a result "
                f"accepts; pass None or math.inf for no timeout), got {timeout!r}."
            )
        if shm_threshold is not None and (
            isinstance(shm_threshold, bool)
            or not isinstance(shm_threshold, numbers.Integral)
            or shm_threshold < 0
        ):
            raise ValueError(
                f"`shm_threshold` must be None or an int >= 0; received shm_threshold={shm_threshold!r}."
            )
        for name, value in (("process_count", process_count), ("process_index", process_index)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise TypeError(f"`{name}` must be an int; received {name}={value!r}.")
        if process_count < 1:
            raise ValueError(f"`process_count` must be >= 1; received process_count={process_count!r}.")
        if not 0 <= process_index < process_count:
            raise ValueError(
                f"`process_index` must be in [0, process_count={process_count}); "
                f"received process_index={process_index!r}."
            )
        if start_method is not None:
            import multiprocessing

            methods = multiprocessing.get_all_start_methods()
            if start_method not in methods:
                raise ValueError(
                    f"`start_method` must be None or one of {methods}; "
                    f"received start_method={start_method!r}."
                )
        self._indexable = (
            hasattr(data, "__len__")
            and hasattr(data, "__getitem__")
            and not isinstance(data, collections.abc.Mapping)
        )
        if not self._indexable and not hasattr(data, "__iter__"):
            raise ValueError(
                "`data` must be a sequence (with `len` and `[]`) or an iterable; "
                f"received an object of type {type(data).__name__}."
            )
        self.data = data
        self.batch_size = int(batch_size)
        self.buffer_size = int(buffer_size) if buffer_size is not None else 1000 * self.batch_size
        self.workers = int(workers)
        self.seed = int(seed) if seed is not None else int(np.random.SeedSequence().entropy % (1 << 63))
        self.start_method = start_method
        self.timeout = None if timeout is None else float(timeout)
        self.prefetch = int(prefetch)
        self.shm_threshold = None if shm_threshold is None else int(shm_threshold)
        self.process_index = int(process_index)
        self.process_count = int(process_count)
        self.epoch = 0
        self.rng = None
        # The position set by set_state(), taken by the next stream.
        self._resume = None
        # Of the latest stream: where it started, how many batches it
        # yielded and the positions after the last of them, so that a
        # callback can map "batches trained" to a position although fit()
        # pulls a few batches ahead.
        self._positions = collections.deque(maxlen=_POSITIONS_KEPT)
        self._forget_stream()
        self._shard = None
        self._worker_id = None
        self._pool = None  # the pool of a `with` block
        self._pools = set()  # every live pool, closed by close() / on GC
        weakref.finalize(self, _close_all, self._pools)

    # ----------------------------------------------------------- user API
    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        fn = cls.__dict__.get("__iter__")
        if fn is not None and not getattr(fn, "_kt_dispatcher", False):
            cls.__iter__ = _dispatching_iter(fn)

    @property
    def steps(self) -> int | None:
        if not hasattr(self.data, "__len__"):
            return None
        n = len(self.data)
        steps = math.ceil(n / self.batch_size)
        if 0 < n % self.batch_size < self.process_count:
            steps -= 1  # a last batch too small to give every process a sample
        return steps

    def __len__(self):
        steps = self.steps
        if steps is None:
            raise _LengthError(
                "len() of a DataGenerator needs `data` with a length; received data of type "
                f"{type(self.data).__name__}, which has none. Pass steps_per_epoch to fit()."
            )
        return steps

    def __bool__(self):  # not len(): data without a length is still a generator
        return True

    @property
    def worker_id(self) -> int | None:
        """The worker building the current batch (None in the main process)."""
        return self._worker_id

    def sample(self, random: bool = False) -> Iterator[tuple[bool, Any]]:
        """Yield `(is_end, sample)`: inside `__iter__`, the samples of the
        batch being built; called directly, a whole epoch (shuffled when
        `random`) as in bert4keras."""
        if self._shard is not None:
            items = self._shard
            for i, item in enumerate(items):
                yield i == len(items) - 1, item
            return
        previous, have = None, False
        for kind, payload in self._epoch_shards(random, self.epoch):
            for item in self._resolve(kind, payload):
                if have:
                    yield False, previous
                previous, have = item, True
        if have:
            yield True, previous

    def forfit(self, random: bool = True) -> Iterator[Any]:
        """An endless stream of batches for `model.fit`, reshuffled every epoch
        (when `random`), its workers kept for the whole stream:

            model.fit(gen.forfit(), steps_per_epoch=len(gen), epochs=...)

        Accepted by `fit()` on every Keras backend. Raises ValueError when an
        epoch yields no batch (empty data, or a one-shot iterator read twice).

        Ctrl-C stops the workers before `KeyboardInterrupt` reaches you, on
        every backend: under TensorFlow, which pulls the stream from a
        tf.data thread, this takes a SIGINT handler of the package's in the
        main thread while a stream is open, installed only over Python's
        default one. An exception raised while building a batch comes out of
        `fit()` (or `evaluate()`, `predict()`) with its own type, message and
        the worker's traceback, on every backend: the stream is also a Keras
        data adapter, which under TensorFlow ends tf.data's input when the
        exception comes and raises it in the calling thread (a plain
        generator's would reach you as tf.data's `UnknownError`). A
        `tf.data.Dataset` from `to_dataset()` cannot do that.
        """
        return _fit_stream.fit_stream(self._stream(random, forever=True))

    def to_dataset(self, output_signature: Any = None, random: bool = True) -> Any:
        """A `tf.data.Dataset` of `forfit(random)` (TensorFlow only).

        `output_signature` defaults to the structure and dtypes of the first
        batch, with every axis of unknown size (batches are padded per batch).
        Use `.take(len(gen))` or `steps_per_epoch=len(gen)` with it."""
        import tensorflow as tf

        if output_signature is None:
            kind, payload = next(iter(self._epoch_shards(random, self.epoch)), (None, None))
            if kind is None:
                raise ValueError("to_dataset() needs at least one sample in `data`.")
            batches = self._build(self.epoch, 0, random, kind, payload, restore=True)
            if not batches:
                raise ValueError("to_dataset(): the first shard gave no batch; pass output_signature.")

            def spec(x):
                x = np.asarray(x)
                return tf.TensorSpec(shape=(None,) * x.ndim, dtype=tf.as_dtype(x.dtype))

            output_signature = tf.nest.map_structure(spec, _as_tuples(batches[0]))
        return tf.data.Dataset.from_generator(
            lambda: (_as_tuples(b) for b in self.forfit(random)), output_signature=output_signature
        )

    def get_state(self) -> dict[str, Any]:
        """The position of the next batch, as a small JSON-serialisable dict.

        Every batch is a function of `(seed, epoch, shard index)` alone (see
        the class docstring), so this is the whole state of the stream: a
        generator given it with `set_state()` (the same data, `batch_size`
        and `random`, any number of workers) goes on with exactly the batches
        this one would have yielded next. It is the position after the last
        batch the latest stream yielded (before any stream: where the next
        one starts). Nothing is built or read to get it.

        >>> gen = DataGenerator(list(range(10)), batch_size=3, seed=0)
        >>> stream = gen.forfit()
        >>> _ = [next(stream) for _ in range(5)]   # epoch 0, then 1 of epoch 1
        >>> state = gen.get_state()
        >>> (state["epoch"], state["index"], state["offset"])
        (1, 0, 1)
        >>> other = DataGenerator(list(range(10)), batch_size=3)
        >>> other.set_state(state)
        >>> next(other.forfit()).tolist() == next(stream).tolist()
        True

        Keys: `seed`, `epoch`, `index` (the shard within the epoch), `offset`
        (batches of that shard already yielded, for an `__iter__` that makes
        several of one shard), `random` (of the stream), and `batch_size`
        and `size` (`len(data)`, or None), checked by `set_state`.
        """
        if self._positions:
            position = self._positions[-1]
        elif self._stream_start is not None:
            position = self._stream_start
        elif self._resume is not None:
            position = self._resume
        else:
            position = (self.epoch, 0, 0, None)
        return self._state(position)

    def set_state(self, state: dict[str, Any]) -> None:
        """Make the next stream start at `state`, from `get_state()` (also
        `seed` is taken from it). Raises `TypeError` for a state that is not a
        dict of the documented keys and types, and `ValueError` when it was
        taken from a generator of another `batch_size` or data size."""
        if not isinstance(state, dict):
            raise TypeError(f"`state` must be a dict from get_state(); received {type(state).__name__}.")
        missing = [k for k in _STATE_KEYS if k not in state]
        if missing:
            raise ValueError(f"`state` lacks the keys {missing}; pass what get_state() returned.")
        for key in ("seed", "epoch", "index", "offset", "batch_size"):
            value = state[key]
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
                raise TypeError(f"`state[{key!r}]` must be an int >= 0; received {value!r}.")
        if state["random"] is not None and not isinstance(state["random"], bool):
            raise TypeError(f"`state['random']` must be a bool or None; received {state['random']!r}.")
        if state["batch_size"] != self.batch_size:
            raise ValueError(
                f"`state` is of a generator with batch_size={state['batch_size']}; this one has "
                f"batch_size={self.batch_size}: its batches would not be the same."
            )
        if state["size"] != self._size():
            raise ValueError(
                f"`state` is of a generator over {state['size']} samples; this one has {self._size()}: "
                "its batches would not be the same."
            )
        self.seed = int(state["seed"])
        self.epoch = int(state["epoch"])
        self._resume = (self.epoch, int(state["index"]), int(state["offset"]), state["random"])
        self._forget_stream()

    def _size(self):
        return len(self.data) if hasattr(self.data, "__len__") else None

    def _forget_stream(self, start=None):
        self._stream_start = start
        self._positions.clear()
        self._yielded = 0

    def _state(self, position):
        epoch, index, offset, random = position
        return {
            "seed": self.seed,
            "epoch": int(epoch),
            "index": int(index),
            "offset": int(offset),
            "random": random,
            "batch_size": self.batch_size,
            "size": self._size(),
        }

    def _state_after(self, count):
        """`get_state()` as it was after the latest stream's first `count`
        batches (what a training callback saves: fit() pulls ahead)."""
        if self._stream_start is None:
            raise ValueError("no stream of this generator has started.")
        if count == 0:
            return self._state(self._stream_start)
        if count > self._yielded:
            raise ValueError(
                f"the stream yielded {self._yielded} batches, fewer than the {count} trained: "
                "was the model trained on another stream than this generator's latest?"
            )
        back = self._yielded - count  # batches yielded after that one
        if back < len(self._positions):
            return self._state(self._positions[-1 - back])
        raise ValueError(
            f"the position after batch {count} is no longer known (the stream is "
            f"{self._yielded - count} batches ahead of training; at most {_POSITIONS_KEPT} are kept)."
        )

    def close(self) -> None:
        """Stop every worker this generator started: the pool of a `with gen:`
        block and those of streams still alive (e.g. a `forfit()` that
        TensorFlow's `fit()` keeps referenced after it returns). A stream
        resumed afterwards raises WorkerError. Called on `with` exit and
        when the generator is garbage-collected."""
        for pool in list(self._pools):
            pool.close()
        self._pool = None

    def __enter__(self):
        if self.workers and (self._pool is None or self._pool.closed):
            self._pool = self._new_pool()
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_pool"] = None
        state["_pools"] = set()
        return state

    # ----------------------------------------------------------- internals
    def _epoch_shards(self, random, epoch):
        """Yield `(kind, payload)` per batch of `epoch`: ("idx", indices) or
        ("items", samples)."""
        bs = self.batch_size
        rng = (
            np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(_SHUFFLE, epoch)))
            if random
            else None
        )
        if self._indexable:
            n = len(self.data)
            order = rng.permutation(n) if random else np.arange(n)
            shards = (("idx", order[start : start + bs].tolist()) for start in range(0, n, bs))
        else:
            shards = self._chunks(self._buffered_shuffle(rng) if random else iter(self.data))
        for kind, payload in shards:
            if self.process_count > 1:
                # This process's contiguous part of the global batch (parts
                # in process order make the batch). Every process reads the
                # whole order and skips the same too-small last batch, so all
                # make the same number of steps.
                if len(payload) < self.process_count:
                    continue
                bounds = np.linspace(0, len(payload), self.process_count + 1).round().astype(int)
                payload = payload[bounds[self.process_index] : bounds[self.process_index + 1]]
            yield kind, payload

    def _chunks(self, items):
        chunk = []
        for item in items:
            chunk.append(item)
            if len(chunk) == self.batch_size:
                yield "items", chunk
                chunk = []
        if chunk:
            yield "items", chunk

    def _buffered_shuffle(self, rng):
        buffer = []
        for item in self.data:
            buffer.append(item)
            if len(buffer) > self.buffer_size:
                i = int(rng.integers(len(buffer)))
                buffer[i], buffer[-1] = buffer[-1], buffer[i]
                yield buffer.pop()
        for i in rng.permutation(len(buffer)):
            yield buffer[i]

    def _resolve(self, kind, payload):
        if kind == "idx":
            return [self.data[i] for i in payload]
        return payload

    def _build(self, epoch, index, random, kind, payload, restore):
        """The batches of shard `index` of `epoch`, under that shard's seeds."""
        items = self._resolve(kind, payload)
        # Each process's part of a batch draws its own numbers (not the same
        # noise in every part); one process keeps the keys it always had.
        part = (self.process_index,) if self.process_count > 1 else ()
        with _seeded(self.seed, epoch, index, restore, part):
            self.rng = np.random.default_rng(
                np.random.SeedSequence(self.seed, spawn_key=(_BATCH, epoch, index, 0, *part))
            )
            self._shard = items
            try:
                return list(self.__iter__(random))
            finally:
                self._shard = None
                self.rng = None

    def _new_pool(self):
        pool = _pool._Pool(self, self.workers, self.start_method, self.shm_threshold)
        self._pools.add(pool)
        return pool

    def _start(self, random):
        """The first epoch, shard and offset of a new stream, taking the
        position `set_state()` left (when the epoch was not changed since)."""
        resume, self._resume = self._resume, None
        if resume is not None and resume[0] == self.epoch:
            if resume[3] is not None and resume[3] != random:
                raise ValueError(
                    f"the state given to set_state() is of a stream with random={resume[3]}; "
                    f"this one has random={random}: its batches would not be the same."
                )
            start = resume[:3]
        else:
            start = (self.epoch, 0, 0)
        self._forget_stream((*start, random))
        return start

    def _yielding(self, epoch, index, offset, random):
        self.epoch = max(self.epoch, epoch + 1)
        self._yielded += 1
        self._positions.append((epoch, index, offset + 1, random))

    def _stream(self, random, forever):
        first_epoch, first_index, first_offset = self._start(random)
        pool, owned = None, False
        pending = collections.deque()
        try:
            tasks = self._tasks(random, forever, first_epoch, first_index)

            def numbered(batches, epoch, index):
                # (offset, batch); a resumed shard's batches yielded before
                # its position are left out.
                if (epoch, index) == (first_epoch, first_index):
                    return enumerate(list(batches)[first_offset:], first_offset)
                return enumerate(batches)

            if not self.workers:
                for epoch, index, kind, payload in tasks:
                    batches = self._build(epoch, index, random, kind, payload, restore=True)
                    for offset, batch in numbered(batches, epoch, index):
                        self._yielding(epoch, index, offset, random)
                        yield batch
                return
            if self._pool is not None and not self._pool.closed and not self._pool.busy:
                pool = self._pool
            else:
                pool, owned = self._new_pool(), True
            pool.busy = True
            window = self.prefetch * self.workers
            exhausted = False
            while True:
                if pool.closed:
                    raise WorkerError(
                        "the workers of this stream were stopped by "
                        "DataGenerator.close(); start a new stream."
                    )
                while not exhausted and len(pending) < window:
                    try:
                        epoch, index, kind, payload = next(tasks)
                    except StopIteration:
                        exhausted = True
                        break
                    pending.append((pool.submit(epoch, index, random, kind, payload), epoch, index))
                if not pending:
                    return
                task_id, epoch, index = pending[0]
                batches = pool.get(task_id, self.timeout)
                pending.popleft()
                for offset, batch in numbered(batches, epoch, index):
                    self._yielding(epoch, index, offset, random)
                    yield batch
        except GeneratorExit:
            raise
        except BaseException:
            # A failed pool may hold dead or stuck workers: never reuse it.
            owned = True
            raise
        finally:
            if pool is not None:
                if owned:
                    pool.close()
                    self._pools.discard(pool)
                    if pool is self._pool:
                        self._pool = None
                else:
                    pool.forget([t for t, _, _ in pending])
                    pool.busy = False

    def _tasks(self, random, forever, first_epoch, first_index=0):
        epoch = first_epoch
        while True:
            n = 0
            for index, (kind, payload) in enumerate(self._epoch_shards(random, epoch)):
                n += 1
                # A resumed stream's shards before its position: drawn (the
                # shuffle must advance as before), not built.
                if epoch == first_epoch and index < first_index:
                    continue
                yield epoch, index, kind, payload
            if not forever:
                return
            if n == 0:
                raise ValueError(
                    f"epoch {epoch} of `data` gave no sample, so forfit() would loop forever: "
                    "`data` is empty or a one-shot iterator (pass a list or a re-iterable)."
                )
            epoch += 1

    def _default_iter(self, random=False):
        batch = []
        for is_end, item in self.sample(random):
            batch.append(item)
            if len(batch) == self.batch_size or is_end:
                yield _collate(batch)
                batch = []

    __iter__ = _dispatching_iter(_default_iter)


def _close_all(pools):
    for pool in list(pools):
        pool.close()
    pools.clear()


def _as_tuples(batch):
    """tf.data wants tuples, not lists, for fixed structures like (x, y)."""
    if isinstance(batch, list):
        return tuple(_as_tuples(b) for b in batch)
    if isinstance(batch, tuple):
        return tuple(_as_tuples(b) for b in batch)
    if isinstance(batch, dict):
        return {k: _as_tuples(v) for k, v in batch.items()}
    return batch


@contextlib.contextmanager
def _seeded(seed, epoch, index, restore, part=()):
    """Seed Python `random`, NumPy's global generator and Keras's global
    SeedGenerator for one batch (`part`: this process's, when several);
    restore them afterwards when `restore`."""
    key = (_BATCH, epoch, index, 1, *part)
    state = np.random.SeedSequence(seed, spawn_key=key).generate_state(4, np.uint32)
    keras_imported = _keras_compat.keras_state_imported()
    if restore:
        saved_py, saved_np = python_random.getstate(), np.random.get_state()
        saved_keras = _keras_compat.global_seed_generator_state()
    python_random.seed(int.from_bytes(state.tobytes(), "little"))
    np.random.seed(state)
    if keras_imported:
        _keras_compat.reset_global_seed_generator()
    try:
        yield
    finally:
        if restore:
            python_random.setstate(saved_py)
            np.random.set_state(saved_np)
            if keras_imported:
                _keras_compat.restore_global_seed_generator(saved_keras)
