"""Ctrl-C and worker exceptions under `fit(gen.forfit())` on every backend.

Under TensorFlow, fit() pulls the stream from a tf.data thread: a Ctrl-C in
the main thread never reached the stream (its workers lived on until
`close()`); `_pool._InterruptGuard` closes them first. A worker's exception
must come out of fit() with its type, message and the worker's traceback on
every backend (under TensorFlow it came out as tf.data's `UnknownError`).
Also: batches padded per batch whose first two share a length (Keras's
generator adapter fixed that length on TensorFlow and failed on the next).
"""

import os
import signal
import time
import traceback
import warnings

import keras
import numpy as np
import psutil
import pytest

import keras_tricks.data as keras_tricks_data
from tests.data.datagen_helpers import FailingRegressionGenerator, RegressionGenerator


def _model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    return model


def _data(n=64):
    return list(np.random.default_rng(0).normal(size=(n, 4)).astype("float32"))


def _gone_within(pids, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        alive = [
            p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
        ]
        if not alive:
            return []
        time.sleep(0.05)
    return alive


@pytest.fixture
def python_sigint_handler():
    """Python installs its KeyboardInterrupt handler at start-up only when SIGINT is
    not ignored, and a job a shell starts in the background (`cmd &`, as CI's
    minimum-Keras step is) inherits SIGINT ignored. The guard sits only over
    Python's default handler, so the Ctrl-C tests put that default in place."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


class _PressCtrlC(keras.callbacks.Callback):
    def __init__(self, gen):
        super().__init__()
        self.gen = gen
        self.pids = []

    def on_train_batch_end(self, batch, logs=None):
        if batch == 1:
            self.pids = [p for pool in self.gen._pools for p in pool.pids]
            os.kill(os.getpid(), signal.SIGINT)


def test_ctrl_c_during_fit_stops_the_workers(python_sigint_handler):
    gen = RegressionGenerator(_data(), batch_size=8, workers=2, start_method="fork", seed=0)
    press = _PressCtrlC(gen)
    with pytest.raises(KeyboardInterrupt) as info:
        _model().fit(gen.forfit(), steps_per_epoch=len(gen), epochs=3, verbose=0, callbacks=[press])
    # The traceback (held here, as a REPL or pytest would) keeps fit()'s
    # frames and the stream alive: the workers must be gone anyway.
    assert info.value is not None and len(press.pids) == 2
    assert _gone_within(press.pids, 2.0) == []
    gen.close()


@pytest.mark.parametrize("workers", [0, 2])
def test_worker_exception_under_fit_keeps_its_type_message_and_traceback(workers):
    data = list(enumerate(_data()))
    # spawn: forking a process that already runs TensorFlow's (and earlier
    # tests') threads can leave a child stuck on a lock one of them held.
    gen = FailingRegressionGenerator(
        data, batch_size=8, workers=workers, start_method="spawn", seed=0, timeout=120
    )
    # Under TensorFlow tf.data's thread pulls the stream; a plain generator's
    # exception came out as UnknownError there. Keras's "ran out of data"
    # warning would only mislead: the input ended because of the exception.
    with warnings.catch_warnings(record=True) as caught, pytest.raises(ZeroDivisionError) as info:
        warnings.simplefilter("always")
        _model().fit(gen.forfit(random=False), steps_per_epoch=len(gen), epochs=2, verbose=0)
    assert not [w for w in caught if "ran out of data" in str(w.message)], [str(w.message) for w in caught]
    shown = "".join(traceback.format_exception(info.value))
    assert "ZeroDivisionError" in shown and "division by zero" in shown
    assert "in explode" in shown and "return i / 0" in shown
    if workers:
        assert "raised in DataGenerator worker" in shown
    gen.close()


def test_a_handler_of_the_users_own_is_left_alone():
    calls = []

    def mine(signum, frame):
        calls.append(signum)

    previous = signal.signal(signal.SIGINT, mine)
    try:
        gen = RegressionGenerator(_data(16), batch_size=8, workers=1, start_method="fork", seed=0)
        with gen:
            next(iter(gen.forfit()))
            assert signal.getsignal(signal.SIGINT) is mine
        assert signal.getsignal(signal.SIGINT) is mine
    finally:
        signal.signal(signal.SIGINT, previous)


_HANDLER_SCRIPT = """
import gc, signal, sys
sys.path.insert(0, sys.argv[1])
from keras_tricks.data import _pool
from tests.data.datagen_helpers import PidGenerator

# A shell's background job starts with SIGINT ignored; the test is about
# Python's default handler, so it starts from that.
signal.signal(signal.SIGINT, signal.default_int_handler)
assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
for workers in (2, 1):
    gen = PidGenerator(list(range(8)), batch_size=4, workers=workers, start_method="fork")
    stream = gen.forfit()
    next(stream)
    assert signal.getsignal(signal.SIGINT) is _pool._on_sigint, workers
    stream.close()
    gen.close()
    gc.collect()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, workers
print("ok")
"""


def test_the_default_handler_comes_back_when_the_last_stream_closes(tmp_path):
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    script = tmp_path / "handler.py"
    script.write_text(_HANDLER_SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script), root], capture_output=True, text=True, timeout=300, cwd=root
    )
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]


def test_an_ignored_sigint_stays_ignored():
    # Started with SIGINT ignored (nohup, a background job), the process cannot
    # get a Ctrl-C: the guard must not install a handler that would make one
    # raise KeyboardInterrupt.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        gen = RegressionGenerator(_data(16), batch_size=8, workers=1, start_method="fork", seed=0)
        with gen:
            next(iter(gen.forfit()))
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_consumer_thread_of_the_users_own_gets_the_exception_itself():
    import threading

    gen = FailingRegressionGenerator(list(enumerate(_data(16))), batch_size=8, workers=0, seed=0)
    gen.fail_at = 0
    stream = gen.forfit(random=False)
    caught = []

    def consume():
        try:
            next(stream)
        except BaseException as e:  # noqa: BLE001 - recorded for the assertion
            caught.append(e)

    t = threading.Thread(target=consume)
    t.start()
    t.join(30)
    time.sleep(0.2)  # a stray interrupt of the main thread would land here
    assert len(caught) == 1 and isinstance(caught[0], ZeroDivisionError)


class _Batches(keras_tricks_data.DataGenerator):
    def __iter__(self, random=False):
        for _, batch in self.sample(random):
            yield batch


def test_padded_batches_whose_first_two_share_a_length():
    # Token ids (batch, n), targets (batch, n, 1) and weights (batch, n), n = 4, 4, 7, 5: fit()
    # over the stream must equal train_on_batch over the same batches in order.
    rng = np.random.default_rng(0)
    batches = [
        (
            rng.integers(0, 5, (3, n)).astype("int32"),
            rng.normal(size=(3, n, 1)).astype("float32"),
            rng.uniform(size=(3, n)).astype("float32"),
        )
        for n in (4, 4, 7, 5)
    ]

    def model():
        keras.utils.set_random_seed(0)
        inputs = keras.Input((None,), dtype="int32")
        out = keras.layers.Dense(1)(keras.layers.Embedding(5, 4)(inputs))
        m = keras.Model(inputs, out)
        m.compile(optimizer="sgd", loss="mse")
        return m

    streamed, manual = model(), model()
    gen = _Batches(batches, batch_size=1, workers=0)
    streamed.fit(gen.forfit(random=False), steps_per_epoch=len(gen), epochs=2, verbose=0)
    for _ in range(2):
        for x, y, w in batches:
            manual.train_on_batch(x, y, sample_weight=w)
    for a, b in zip(streamed.get_weights(), manual.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # A (batch, features) float input keeps its feature axis: a model without Input builds on it.
    tabular = keras.Sequential([keras.layers.Dense(3)])
    tabular.compile(optimizer="sgd", loss="mse")
    rows = [(rng.normal(size=(4, 20)).astype("float32"), np.zeros((4, 3), "float32")) for _ in range(3)]
    tabular.fit(_Batches(rows, batch_size=1, workers=0).forfit(), steps_per_epoch=3, verbose=0)
    assert tuple(tabular.layers[0].kernel.shape) == (20, 3)
