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

import psutil
import pytest

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
