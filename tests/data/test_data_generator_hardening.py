"""DataGenerator hardening: workers that outlive a killed main process,
arguments at the edge of what the pool accepts, masked and empty arrays, and
the error a spawned worker gives when the subclass cannot be imported. Real
scripts run in subprocesses where the behaviour is about a whole process."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import psutil
import pytest

from keras_tricks.data import DataGenerator

HELPERS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HELPERS))


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([REPO, HELPERS, env.get("PYTHONPATH", "")])
    env["KERAS_BACKEND"] = "numpy"  # the scripts need no backend: start in a second, not ten
    return env


def _gone(pid):
    """Dead or a zombie (an orphan is reaped by whoever adopted it, if ever)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _segments(pid):
    return [n for n in os.listdir("/dev/shm") if n.startswith(f"kt_{pid}_")]


KILLED_MAIN = textwrap.dedent(
    """
    import os, sys, time
    from datagen_helpers import BigArrayGenerator

    if __name__ == "__main__":
        gen = BigArrayGenerator(list(range(400)), batch_size=2, workers=2, seed=0,
                                start_method=sys.argv[1], timeout=120)
        it = gen.forfit()
        next(it)
        time.sleep(0.5)  # let the workers fill the prefetch window with segments
        print(" ".join(str(p) for pool in gen._pools for p in pool.pids), flush=True)
        time.sleep(600)
    """
)


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="needs /dev/shm to see the segments")
@pytest.mark.parametrize(
    "method, how",
    [
        pytest.param("fork", signal.SIGKILL, marks=pytest.mark.slow),
        pytest.param("fork", signal.SIGTERM, marks=pytest.mark.slow),
        pytest.param("spawn", signal.SIGKILL, marks=pytest.mark.slow),
    ],
)
def test_workers_and_segments_go_when_the_main_process_is_killed(tmp_path, method, how):
    if method == "fork" and "fork" not in __import__("multiprocessing").get_all_start_methods():
        pytest.skip("no fork here")
    script = tmp_path / "killed_main.py"
    script.write_text(KILLED_MAIN)
    proc = subprocess.Popen(
        [sys.executable, str(script), method], stdout=subprocess.PIPE, env=_env(), text=True
    )
    try:
        line = proc.stdout.readline()
        assert line.strip(), f"the script printed no pids (exit code {proc.poll()})"
        pids = [int(p) for p in line.split()]
        assert len(pids) == 2 and not any(_gone(p) for p in pids)
        assert _segments(proc.pid), "the test needs segments in flight at the kill"
        helpers = [c.pid for c in psutil.Process(proc.pid).children()]  # workers + resource tracker
        os.kill(proc.pid, how)
        proc.wait(timeout=10)
        killed = time.monotonic()
        while not all(_gone(p) for p in pids) and time.monotonic() - killed < 2.0:
            time.sleep(0.02)
        assert all(_gone(p) for p in pids), f"workers alive 2 s after the main process died: {pids}"
        while (_segments(proc.pid) or not all(_gone(p) for p in helpers)) and time.monotonic() - killed < 5.0:
            time.sleep(0.05)
        assert not _segments(proc.pid), f"segments left 5 s after: {_segments(proc.pid)}"
        assert all(_gone(p) for p in helpers), "a helper process (resource tracker?) outlived its parent"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for name in _segments(proc.pid):  # never leave litter on a failure
            os.unlink(os.path.join("/dev/shm", name))


# ------------------------------------------------------------------ timeout
def test_timeout_infinity_means_no_timeout_and_huge_values_are_refused():
    assert DataGenerator([1, 2], timeout=float("inf")).timeout is None
    assert DataGenerator([1, 2], timeout=np.float64(2.5)).timeout == 2.5
    # The wait for results takes whole milliseconds in a C int: 2**31 - 1 ms.
    assert DataGenerator([1, 2], timeout=2_147_483).timeout == 2_147_483.0
    for bad in (1e10, 2_147_484, float("nan"), 0, -1.0):
        with pytest.raises(ValueError, match="timeout"):
            DataGenerator([1, 2], timeout=bad)
    with pytest.raises(TypeError, match="timeout"):
        DataGenerator([1, 2], timeout="10")


def test_infinite_timeout_streams_with_workers():
    gen = DataGenerator(list(range(6)), batch_size=2, workers=1, start_method="fork", timeout=float("inf"))
    assert [b.tolist() for b in gen] == [[0, 1], [2, 3], [4, 5]]


# ------------------------------------------------------------ odd arrays
class _OddArrays(DataGenerator):
    """An empty array and a >= 64 KiB masked array per batch."""

    def __iter__(self, random=False):
        batch = []
        for is_end, x in self.sample(random):
            batch.append(x)
            if len(batch) == self.batch_size or is_end:
                data = np.arange(len(batch) * 10_000, dtype="float64").reshape(len(batch), -1) + batch[0]
                masked = np.ma.masked_array(data, mask=data % 3 == 0)
                yield np.zeros((0, 4), dtype="float32"), masked
                batch = []


@pytest.mark.parametrize("threshold", [0, 1 << 16])
def test_empty_and_masked_arrays_come_back_as_built(threshold):
    reference = list(_OddArrays(list(range(6)), batch_size=2, shm_threshold=threshold))
    stream = list(
        _OddArrays(list(range(6)), batch_size=2, workers=2, start_method="fork", shm_threshold=threshold)
    )
    assert len(stream) == len(reference) == 3
    for (empty, masked), (_ref_empty, ref_masked) in zip(stream, reference):
        assert empty.shape == (0, 4) and empty.dtype == np.float32
        assert masked.nbytes >= 1 << 16 and isinstance(masked, np.ma.MaskedArray)
        np.testing.assert_array_equal(masked.mask, ref_masked.mask)
        np.testing.assert_array_equal(masked.data, ref_masked.data)
        # Independent of the generator: every third value is masked.
        np.testing.assert_array_equal(masked.mask, masked.data % 3 == 0)


# --------------------------------------------------- spawn and __main__
UNIMPORTABLE = textwrap.dedent(
    """
    import numpy as np
    from keras_tricks.data import DataGenerator, WorkerError

    if __name__ == "__main__":
        class MainGen(DataGenerator):  # not re-created when a worker imports this file
            def __iter__(self, random=False):
                for is_end, x in self.sample(random):
                    yield np.asarray([x])

        try:
            list(MainGen([1, 2, 3], batch_size=1, workers=1, start_method="spawn", timeout=120))
        except WorkerError as e:
            print("WorkerError:", e, flush=True)
    """
)


@pytest.mark.slow
def test_spawn_with_a_class_in_main_says_why_and_what_to_do(tmp_path):
    script = tmp_path / "unimportable.py"
    script.write_text(UNIMPORTABLE)
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=_env(), timeout=300
    )
    message = out.stdout
    assert "WorkerError:" in message and "exited with code 1" in message, (out.stdout, out.stderr[-2000:])
    assert "__main__.MainGen" in message and "cannot be imported" in message
    assert "importable module" in message and "start_method='fork'" in message
    assert "AttributeError" in out.stderr  # the worker's own traceback, as the hint says


def test_fork_needs_no_import_hint():
    from keras_tricks.data import _pool

    class Local(DataGenerator):
        pass

    assert _pool._unimportable_hint(Local([1]), "fork") == ""
    assert "importable module" in _pool._unimportable_hint(Local([1]), "spawn")
    assert _pool._unimportable_hint(DataGenerator([1]), "spawn") == ""
