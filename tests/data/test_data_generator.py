"""DataGenerator: bert4keras semantics, worker-count invariance, seeds, failure
handling and clean-up. Worker processes use `fork` (cheap) except in the
spawn test; the user subclasses live in `datagen_helpers` so that spawned
workers can import them."""

import gc
import math
import os
import random
import signal
import threading
import time
from multiprocessing import resource_tracker

import keras
import numpy as np
import psutil
import pytest
from datagen_helpers import (
    BigArrayGenerator,
    FailingGenerator,
    PidGenerator,
    RaggedGenerator,
    RegressionGenerator,
    SleepyGenerator,
    SuicideGenerator,
    UnpicklableGenerator,
)

from keras_tricks.data import DataGenerator, RemoteTraceback, WorkerError, _pool

RAGGED = [(list(range(i, i + i % 7 + 1)), i) for i in range(45)]  # 6 batches of 8, last 5


def _take(iterable, n):
    it = iter(iterable)
    out = [next(it) for _ in range(n)]
    if hasattr(it, "close"):
        it.close()
    return out


def _flat(batch):
    if isinstance(batch, dict):
        return [a for k in sorted(batch) for a in _flat(batch[k])]
    if isinstance(batch, (tuple, list)):
        return [a for b in batch for a in _flat(b)]
    return [np.asarray(batch)]


def _assert_same_stream(a, b):
    assert len(a) == len(b)
    for i, (x, y) in enumerate(zip(a, b)):
        fx, fy = _flat(x), _flat(y)
        assert len(fx) == len(fy), f"batch {i}: structure differs"
        for u, v in zip(fx, fy):
            assert u.dtype == v.dtype and u.shape == v.shape, f"batch {i}"
            np.testing.assert_array_equal(u, v, err_msg=f"batch {i}")


@pytest.fixture
def no_orphans():
    """Fails the test when a child process it started is still alive (or a
    zombie) at its end; the resource tracker, shared by design, is exempt."""
    resource_tracker.ensure_running()
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}

    def check():
        gc.collect()
        deadline = time.monotonic() + 5
        while True:
            left = [p for p in me.children(recursive=True) if p.pid not in before]
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        described = []
        for p in left:
            try:
                described.append((p.pid, p.status(), " ".join(p.cmdline())[:80]))
            except psutil.Error:
                pass
        assert not described, f"child processes left: {described}"

    yield check
    check()


def _our_segments():
    """Shared-memory segments of this process's workers (named kt_<our pid>_...);
    /dev/shm is shared with every other process on the machine."""
    return {n for n in os.listdir("/dev/shm") if n.startswith(f"kt_{os.getpid()}_")}


def _children_now(before):
    return {p.pid for p in psutil.Process().children(recursive=True)} - before


# ------------------------------------------------------------------ arguments
@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": -3}, "batch_size"),
        ({"batch_size": 2.5}, "batch_size"),
        ({"workers": -1}, "workers"),
        ({"workers": 1.5}, "workers"),
        ({"seed": -1}, "seed"),
        ({"buffer_size": 0}, "buffer_size"),
        ({"timeout": 0}, "timeout"),
        ({"prefetch": 0}, "prefetch"),
        ({"start_method": "teleport"}, "start_method"),
        ({"shm_threshold": -1}, "shm_threshold"),
    ],
)
def test_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        DataGenerator(list(range(4)), **kwargs)


def test_bad_data_and_missing_length():
    with pytest.raises(ValueError, match="data"):
        DataGenerator(42)
    gen = DataGenerator(x for x in range(5))
    assert gen.steps is None and bool(gen)
    with pytest.raises(ValueError, match="length"):
        len(gen)
    # Still usable where a length is optional (list() asks for a length hint).
    assert [b.tolist() for b in gen] == [[0, 1, 2, 3, 4]]
    with pytest.raises(ValueError, match="one-shot"):
        _take(DataGenerator(iter(range(3)), batch_size=2).forfit(), 5)


# ------------------------------------------------------ bert4keras semantics
def test_plain_iteration_and_len_keep_order_and_last_partial_batch():
    gen = PidGenerator(list(range(45)), batch_size=8)
    batches = [b for b, _ in gen]
    assert len(gen) == len(batches) == math.ceil(45 / 8)
    assert [len(b) for b in batches] == [8] * 5 + [5]
    np.testing.assert_array_equal(np.concatenate(batches), np.arange(45))
    # bert4keras's sample(): (is_end, sample), is_end true only on the last.
    flags = list(DataGenerator(list("abc")).sample())
    assert flags == [(False, "a"), (False, "b"), (True, "c")]


def test_forfit_is_endless_and_reshuffles_every_epoch():
    gen = PidGenerator(list(range(45)), batch_size=8, seed=1)
    stream = [b for b, _ in _take(gen.forfit(), 3 * len(gen))]
    epochs = [np.concatenate(stream[i * 6 : (i + 1) * 6]) for i in range(3)]
    for e in epochs:  # every sample exactly once per epoch
        np.testing.assert_array_equal(np.sort(e), np.arange(45))
    assert not np.array_equal(epochs[0], epochs[1])
    assert not np.array_equal(epochs[1], epochs[2])
    assert not np.array_equal(epochs[0], np.arange(45))
    assert gen.epoch == 3


def test_default_batching_pads_and_stacks_fields():
    gen = DataGenerator([([1, 2, 3], 0), ([4], 1), ([5, 6], 2)], batch_size=2)
    (x0, y0), (x1, y1) = list(gen)
    np.testing.assert_array_equal(x0, [[1, 2, 3], [4, 0, 0]])
    np.testing.assert_array_equal(y0, [0, 1])
    np.testing.assert_array_equal(x1, [[5, 6]])


def test_same_seed_same_stream_other_seed_other_stream():
    a = _take(RaggedGenerator(RAGGED, batch_size=8, seed=5).forfit(), 12)
    b = _take(RaggedGenerator(RAGGED, batch_size=8, seed=5).forfit(), 12)
    c = _take(RaggedGenerator(RAGGED, batch_size=8, seed=6).forfit(), 12)
    _assert_same_stream(a, b)
    assert not np.array_equal(a[0][1], c[0][1])


def test_in_process_batches_leave_global_random_state_alone():
    random.seed(123)
    np.random.seed(123)
    expected_py, expected_np = random.random(), np.random.random()
    random.seed(123)
    np.random.seed(123)
    _take(RaggedGenerator(RAGGED, batch_size=8, seed=0).forfit(), 3)
    assert (random.random(), np.random.random()) == (expected_py, expected_np)


def test_keras_random_is_seeded_per_batch_in_process():
    class KerasDraws(DataGenerator):
        def __iter__(self, random=False):
            batch = []
            for is_end, x in self.sample(random):
                batch.append(x)
                if len(batch) == self.batch_size or is_end:
                    yield keras.ops.convert_to_numpy(keras.random.uniform((3,)))
                    batch = []

    a = _take(KerasDraws(list(range(10)), batch_size=2, seed=3).forfit(), 8)
    b = _take(KerasDraws(list(range(10)), batch_size=2, seed=3).forfit(), 8)
    _assert_same_stream(a, b)
    assert len({tuple(x) for x in a}) == 8  # no batch repeats another's draw


# ----------------------------------------------- invariance to worker count
@pytest.mark.parametrize("random_", [True, False])
def test_stream_identical_for_0_1_2_4_workers(no_orphans, random_):
    n = 3 * 6 + 2  # three epochs and the start of a fourth
    reference = _take(RaggedGenerator(RAGGED, batch_size=8, seed=7).forfit(random_), n)
    for workers in (1, 2, 4):
        gen = RaggedGenerator(RAGGED, batch_size=8, seed=7, workers=workers, start_method="fork", timeout=60)
        _assert_same_stream(_take(gen.forfit(random_), n), reference)
    plain = list(RaggedGenerator(RAGGED, batch_size=8, seed=7))
    plain2 = list(RaggedGenerator(RAGGED, batch_size=8, seed=7, workers=2, start_method="fork"))
    _assert_same_stream(plain, plain2)


def test_iterable_data_without_indexing_is_invariant_too(no_orphans):
    class Stream:  # re-iterable, no len, no []
        def __iter__(self):
            return iter(RAGGED)

    reference = _take(RaggedGenerator(Stream(), batch_size=8, seed=2, buffer_size=10).forfit(), 14)
    gen = RaggedGenerator(Stream(), batch_size=8, seed=2, buffer_size=10, workers=2, start_method="fork")
    stream = _take(gen.forfit(), 14)
    _assert_same_stream(stream, reference)
    first_epoch = np.concatenate([b[0][1] for b in stream[:6]])
    np.testing.assert_array_equal(np.sort(first_epoch), np.arange(45))
    assert not np.array_equal(first_epoch, np.arange(45))


def test_every_batch_and_worker_draws_its_own_random_numbers(no_orphans):
    gen = RaggedGenerator(RAGGED, batch_size=8, seed=11, workers=2, start_method="fork")
    draws = np.concatenate([b[1] for b in _take(gen.forfit(), 3 * 6)])
    for source in range(3):  # random, np.random, self.rng
        assert len(np.unique(draws[:, source])) == len(draws)
    pids = {
        pid
        for _, pid in _take(
            PidGenerator(list(range(64)), batch_size=4, workers=2, start_method="fork").forfit(), 32
        )
    }
    assert len(pids) == 2 and os.getpid() not in pids


def test_workers_persist_across_epochs(no_orphans):
    gen = PidGenerator(list(range(20)), batch_size=4, workers=2, start_method="fork", seed=0)
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    it = gen.forfit()
    pids_per_epoch, started = [], set()
    for _ in range(4):
        pids_per_epoch.append({next(it)[1] for _ in range(len(gen))})
        started |= _children_now(before)
    it.close()
    assert len(started) == 2, "one pool of two workers for all four epochs"
    assert set().union(*pids_per_epoch) <= started


def test_with_block_keeps_one_pool_for_several_passes(no_orphans):
    gen = PidGenerator(list(range(20)), batch_size=4, workers=2, start_method="fork")
    with gen:
        pids = set(gen._pool.pids)
        first = list(gen)
        # An abandoned pass leaves results in flight; the next pass must not see them.
        for _ in gen:
            break
        second = list(gen)
        assert set(gen._pool.pids) == pids
        assert {pid for _, pid in first + second} <= pids
    _assert_same_stream([b for b, _ in first], [b for b, _ in second])
    no_orphans()


# ------------------------------------------------------- shared memory
def test_large_arrays_travel_through_shared_memory(no_orphans, monkeypatch):
    attached = []

    class Spy(_pool.shared_memory.SharedMemory):
        def __init__(self, name=None, create=False, size=0):
            super().__init__(name=name, create=create, size=size)
            if not create:
                attached.append(name)

    monkeypatch.setattr(_pool.shared_memory, "SharedMemory", Spy)
    shm_before = _our_segments()
    reference = list(BigArrayGenerator(list(range(10)), batch_size=4, seed=0))
    stream = list(BigArrayGenerator(list(range(10)), batch_size=4, seed=0, workers=2, start_method="fork"))
    _assert_same_stream(stream, reference)
    assert len(attached) == 3, "one segment per big array, none for the small ones"
    assert all(n.startswith(f"kt_{os.getpid()}_") for n in attached), attached
    assert _our_segments() - shm_before == set(), "segments left behind"


# ------------------------------------------------------------ failures
def test_worker_exception_raised_at_once_with_worker_traceback(no_orphans):
    # Batch 0 sleeps 30 s in one worker while batch 1 fails in the other: the
    # failure must reach the main process at once, not after batch 0.
    class Gen(FailingGenerator):
        fail_at, slow_at = 5, 0

    gen = Gen(list(range(40)), batch_size=4, workers=2, start_method="fork")
    start = time.monotonic()
    with pytest.raises(KeyError, match="bad sample 5") as info:
        list(gen)
    received, elapsed = time.time(), time.monotonic() - start
    raised = float(str(info.value.args[0]).rsplit("@", 1)[1])
    latency = received - raised
    print(f"worker exception latency {latency * 1000:.0f} ms")
    assert latency < 2.0, f"the worker's exception took {latency:.2f} s to arrive"
    assert elapsed < 20, f"the exception waited for the slow batch ({elapsed:.1f} s)"
    cause = info.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert "raise_deep" in cause.tb and "KeyError" in cause.tb
    assert any("worker" in note and "batch 1 of epoch 0" in note for note in info.value.__notes__)
    no_orphans()


def test_worker_killed_by_signal_is_reported(no_orphans):
    gen = SuicideGenerator(list(range(40)), batch_size=4, workers=2, start_method="fork", timeout=60)
    with pytest.raises(WorkerError, match="killed by signal SIGKILL") as info:
        _take(gen.forfit(random=False), 20)
    assert "batch 1 of epoch 0" in str(info.value)
    no_orphans()


def test_timeout_on_a_stuck_worker(no_orphans):
    class Stuck(SleepyGenerator):
        seconds = 30

    gen = Stuck(list(range(8)), batch_size=4, workers=1, start_method="fork", timeout=0.5)
    start = time.monotonic()
    with pytest.raises(WorkerError, match="timeout"):
        list(gen)
    assert time.monotonic() - start < 20
    no_orphans()


def test_unpicklable_batch_is_an_error_not_a_dead_worker(no_orphans):
    shm_before = _our_segments()
    gen = UnpicklableGenerator(list(range(4)), batch_size=2, workers=1, start_method="fork")
    with pytest.raises(Exception, match="pickle|lambda") as info:
        list(gen)
    assert isinstance(info.value.__cause__, RemoteTraceback)
    assert _our_segments() - shm_before == set()
    no_orphans()


def test_exception_in_process_propagates_unchanged():
    with pytest.raises(KeyError, match="bad sample 5"):
        list(FailingGenerator(list(range(10)), batch_size=4))


# -------------------------------------------------------------- clean-up
def test_no_child_left_after_exhaustion_break_and_gc(no_orphans):
    data = list(range(24))
    list(PidGenerator(data, batch_size=4, workers=2, start_method="fork"))
    no_orphans()  # normal exhaustion

    gen = PidGenerator(data, batch_size=4, workers=2, start_method="fork")
    for _ in gen.forfit():
        break  # the abandoned stream is released right here
    no_orphans()

    it = PidGenerator(data, batch_size=4, workers=2, start_method="fork").forfit()
    next(it)
    del it  # garbage collection of a suspended stream
    no_orphans()

    gen = PidGenerator(data, batch_size=4, workers=2, start_method="fork")
    gen.__enter__()  # a pool nobody closes
    assert len(gen._pool.pids) == 2
    del gen  # garbage collection of the generator itself
    no_orphans()


def test_no_child_left_after_keyboard_interrupt(no_orphans):
    class Slow(SleepyGenerator):
        seconds = 30

    gen = Slow(list(range(8)), batch_size=4, workers=2, start_method="fork")
    main = threading.main_thread().ident
    # A process started in the background by a non-interactive shell inherits
    # SIGINT ignored, and Python then installs no handler: the signal below
    # would be lost and the test would wait forever. Install Python's own.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(1.0, lambda: signal.pthread_kill(main, signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            for _ in gen.forfit():
                pass
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
    no_orphans()


# ------------------------------------------------------------------ spawn
def test_spawn_workers_same_stream_and_clean_exit(no_orphans):
    if keras.backend.backend() != "tensorflow":
        pytest.skip(
            "start methods do not depend on the backend; spawned workers import "
            "Keras (seconds each), so this runs on the default backend only"
        )
    reference = _take(RaggedGenerator(RAGGED, batch_size=8, seed=4).forfit(), 8)
    reference_plain = list(RaggedGenerator(RAGGED, batch_size=8, seed=4))
    gen = RaggedGenerator(RAGGED, batch_size=8, seed=4, workers=2, start_method="spawn", timeout=120)
    with gen:
        _assert_same_stream(_take(gen.forfit(), 8), reference)
        gen.epoch = 0
        _assert_same_stream(list(gen), reference_plain)
    no_orphans()


# -------------------------------------------------------------------- fit
def test_fit_consumes_forfit_with_workers(no_orphans):
    rng = np.random.default_rng(0)
    data = list(rng.normal(size=(64, 4)).astype("float32"))
    gen = RegressionGenerator(data, batch_size=16, workers=1, start_method="fork", seed=0)
    valid = RegressionGenerator(data[:32], batch_size=16)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    before = model.get_weights()[0].copy()
    # `with`: TensorFlow's fit() keeps the stream referenced after it returns;
    # leaving the block stops the workers whatever holds the stream.
    with gen:
        history = model.fit(
            gen.forfit(),
            steps_per_epoch=len(gen),
            epochs=3,
            verbose=0,
            shuffle=False,
            validation_data=valid.forfit(random=False),
            validation_steps=len(valid),
        )
    no_orphans()
    loss = history.history["loss"]
    assert np.all(np.isfinite(loss)) and loss[-1] < loss[0]
    assert not np.array_equal(before, model.get_weights()[0])
    predictions = model.predict(iter(valid), steps=len(valid), verbose=0)
    assert predictions.shape == (32, 1)


def test_to_dataset_matches_the_stream():
    if keras.backend.backend() != "tensorflow":
        pytest.skip("tf.data is TensorFlow's")
    reference = _take(RaggedGenerator(RAGGED, batch_size=8, seed=9).forfit(), 7)
    dataset = RaggedGenerator(RAGGED, batch_size=8, seed=9).to_dataset()
    stream = [((x.numpy(), y.numpy()), d.numpy()) for (x, y), d in dataset.take(7)]
    _assert_same_stream(stream, reference)


def test_fit_on_to_dataset():
    if keras.backend.backend() != "tensorflow":
        pytest.skip("tf.data is TensorFlow's")
    data = list(np.random.default_rng(1).normal(size=(48, 4)).astype("float32"))
    gen = RegressionGenerator(data, batch_size=16, seed=0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    loss = model.fit(gen.to_dataset(), steps_per_epoch=len(gen), epochs=3, shuffle=False, verbose=0).history[
        "loss"
    ]
    assert np.all(np.isfinite(loss)) and loss[-1] < loss[0]


def test_iter_without_random_argument_and_subclass_chain():
    class NoRandom(DataGenerator):
        def __iter__(self):  # shuffling is the generator's business anyway
            for _, x in self.sample():
                yield np.asarray([x])

    class Doubled(NoRandom):
        def __iter__(self, random=False):
            for batch in super().__iter__():
                yield batch * 2

    assert [b.tolist() for b in NoRandom([1, 2, 3], batch_size=1)] == [[1], [2], [3]]
    assert [b.tolist() for b in Doubled([1, 2, 3], batch_size=1)] == [[2], [4], [6]]
    epoch = np.concatenate(_take(Doubled(list(range(6)), batch_size=1, seed=0).forfit(), 6))
    np.testing.assert_array_equal(np.sort(epoch), np.arange(0, 12, 2))


def test_documented_seed_derivation(no_orphans):
    """The shuffle of epoch e and the generators of batch k follow the
    documented SeedSequence spawn keys, computed here independently."""
    seed, n, bs = 21, 45, 8
    gen = RaggedGenerator(RAGGED, batch_size=bs, seed=seed, workers=2, start_method="fork")
    stream = _take(gen.forfit(), 2 * 6)
    for e in range(2):
        order = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0, e))).permutation(n)
        labels = np.concatenate([b[0][1] for b in stream[6 * e : 6 * (e + 1)]])
        np.testing.assert_array_equal(labels, order)
        for k in range(6):
            draws = stream[6 * e + k][1]
            rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, e, k, 0)))
            np.testing.assert_array_equal(draws[:, 2], rng.random(len(draws)))
            state = np.random.SeedSequence(seed, spawn_key=(1, e, k, 1)).generate_state(4, np.uint32)
            np.testing.assert_array_equal(draws[:, 1], np.random.RandomState(state).random_sample(len(draws)))
            py = random.Random(int.from_bytes(state.tobytes(), "little"))
            np.testing.assert_array_equal(draws[:, 0], [py.random() for _ in range(len(draws))])
