"""Worker processes of `DataGenerator` (internal).

One `_Pool` holds N persistent worker processes. Each worker has its own
duplex pipe to the main process: tasks go down (small: the indices of one
batch, or its samples when the data cannot be indexed), results come back up.
Arrays of at least `shm_threshold` bytes travel through
`multiprocessing.shared_memory` instead of the pipe (the worker copies the
array in, the main process copies it out and unlinks the segment).

Why per-worker pipes rather than one shared queue: a worker killed in the
middle of writing can corrupt a shared queue and hang every reader; with its
own pipe only its own channel breaks, and the main process waits on the
pipes *and* the process sentinels together (`multiprocessing.connection.wait`),
so a death is seen at once instead of being waited on forever.

Each worker runs a reader thread that drains its task pipe into a local
queue, so the main process never blocks on a full pipe while the worker
blocks on sending a result; the reader also ends the worker (`os._exit`) as
soon as the main process says stop or goes away (end of file on the pipe).
"""

from __future__ import annotations

import collections
import ctypes
import itertools
import os
import pickle
import queue
import secrets
import signal
import sys
import threading
import time
import traceback
import warnings
import weakref
from multiprocessing import connection, resource_tracker, shared_memory
from multiprocessing.reduction import ForkingPickler

import numpy as np

# Main-process ends of the worker pipes: a worker created with `fork` closes
# the copies it inherited, so that each pipe has exactly one end per process.
_MAIN_SIDE = weakref.WeakSet()
_TASK_IDS = itertools.count()

# In a worker: the names of the shared-memory segments it created that the
# main process may not have unlinked yet (unlinked by the worker when the
# main process dies), and the pid the segment names carry.
_CREATED = collections.deque(maxlen=4096)
_OWNER_PID = None
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

# The longest `timeout` the wait for results accepts: `poll()` takes whole
# milliseconds in a C int.
MAX_TIMEOUT = (2**31 - 1) // 1000


class WorkerError(RuntimeError):
    """A `DataGenerator` worker process died or stopped answering."""


class RemoteTraceback(Exception):
    """Carries a worker's formatted traceback as the `__cause__` of the
    exception re-raised in the main process."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self):
        return f'\n"""\n{self.tb}"""'


# ------------------------------------------------------------ Ctrl-C
class _InterruptGuard:
    """Ctrl-C stops the workers before `KeyboardInterrupt` reaches the user.

    Under TensorFlow, `fit(gen.forfit())` pulls batches from a tf.data thread
    and keeps the suspended stream referenced, so a Ctrl-C in the main thread
    never reaches the stream, whose workers would live on until `close()`.
    While a pool is open and Python's default SIGINT handler is in place in
    the main thread, this guard's handler replaces it (a handler of the
    user's own is left alone, and the default is put back when the last pool
    closes): it first closes every open pool, then raises KeyboardInterrupt
    exactly as the default handler would.
    """

    def __init__(self):
        self.pools = weakref.WeakSet()

    @staticmethod
    def installed():
        try:
            return signal.getsignal(signal.SIGINT) is _on_sigint
        except (ValueError, OSError):
            return False

    def add(self, pool):
        self.pools.add(pool)
        if threading.current_thread() is not threading.main_thread():
            return
        try:
            if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
                signal.signal(signal.SIGINT, _on_sigint)
        except (ValueError, OSError):  # an embedded interpreter without signals
            pass

    def discard(self, pool):
        self.pools.discard(pool)
        self.uninstall_if_idle()

    def uninstall_if_idle(self):
        if self.pools:
            return
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread may; the handler stays, harmless
        if self.installed():
            signal.signal(signal.SIGINT, signal.default_int_handler)


def _on_sigint(signum, frame):
    for pool in list(GUARD.pools):
        try:
            pool.close()
        except Exception:  # noqa: BLE001 - the interrupt must go through
            pass
    GUARD.uninstall_if_idle()
    signal.default_int_handler(signum, frame)


GUARD = _InterruptGuard()


# ---------------------------------------------------------------- transport
class _Shm:
    """A reference to an array placed in a shared-memory segment."""

    __slots__ = ("name", "shape", "dtype")

    def __init__(self, name, shape, dtype):
        self.name, self.shape, self.dtype = name, shape, dtype

    def __reduce__(self):
        return _Shm, (self.name, self.shape, self.dtype)


def _remember(name):
    """Record a segment about to be created (before creating it, so that a
    death in between cannot strand it). Names the main process has already
    unlinked are dropped from time to time (Linux shows them in /dev/shm)."""
    if len(_CREATED) >= 256 and os.path.isdir("/dev/shm"):
        alive = [n for n in _CREATED if os.path.exists(os.path.join("/dev/shm", n))]
        _CREATED.clear()
        _CREATED.extend(alive)
    _CREATED.append(name)


def _unlink_created():
    """Unlink every segment this worker created that still exists."""
    while _CREATED:
        name = _CREATED.popleft()
        try:
            shm = shared_memory.SharedMemory(name=name)
        except (FileNotFoundError, OSError, ValueError):
            continue
        try:
            shm.close()
            shm.unlink()
        except (FileNotFoundError, OSError):
            pass


def _encode(obj, threshold):
    if isinstance(obj, np.ndarray):
        # Empty arrays always travel in the pipe (a segment cannot be empty);
        # masked arrays too, since only the data would survive the segment.
        if (
            threshold is not None
            and obj.nbytes >= threshold
            and obj.nbytes > 0
            and obj.dtype.kind not in "OV"
            and type(obj) is np.ndarray
        ):
            # Named after the consumer's pid, so that leaks can be traced to
            # their owner (tests; /dev/shm is shared by every process).
            owner = _OWNER_PID if _OWNER_PID is not None else os.getppid()
            name = f"kt_{owner}_{secrets.token_hex(8)}"
            _remember(name)
            shm = shared_memory.SharedMemory(name=name, create=True, size=obj.nbytes)
            try:
                np.ndarray(obj.shape, obj.dtype, buffer=shm.buf)[...] = obj
            finally:
                shm.close()
            return _Shm(shm.name, obj.shape, obj.dtype.str)
        return obj
    if isinstance(obj, tuple):
        items = [_encode(x, threshold) for x in obj]
        return type(obj)(*items) if hasattr(obj, "_fields") else type(obj)(items)
    if type(obj) is list:
        return [_encode(x, threshold) for x in obj]
    if type(obj) is dict:
        return {k: _encode(v, threshold) for k, v in obj.items()}
    return obj


def _decode(obj):
    if isinstance(obj, _Shm):
        shm = shared_memory.SharedMemory(name=obj.name)
        try:
            return np.array(np.ndarray(obj.shape, np.dtype(obj.dtype), buffer=shm.buf))
        finally:
            shm.close()
            shm.unlink()
    if isinstance(obj, tuple):
        items = [_decode(x) for x in obj]
        return type(obj)(*items) if hasattr(obj, "_fields") else type(obj)(items)
    if type(obj) is list:
        return [_decode(x) for x in obj]
    if type(obj) is dict:
        return {k: _decode(v) for k, v in obj.items()}
    return obj


def _discard(obj):
    """Unlink the shared-memory segments of a result nobody will read."""
    if isinstance(obj, _Shm):
        try:
            shm = shared_memory.SharedMemory(name=obj.name)
            shm.close()
            shm.unlink()
        except (FileNotFoundError, OSError):
            pass
    elif isinstance(obj, (tuple, list)):
        for x in obj:
            _discard(x)
    elif isinstance(obj, dict):
        for x in obj.values():
            _discard(x)


# ------------------------------------------------------------------- worker
def _parent_gone():
    """The main process is gone (or stopped listening): unlink what this
    worker created and exit at once."""
    try:
        _unlink_created()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(0)


def _set_parent_death_signal(parent_pid):
    """Linux: have the kernel send SIGTERM when the parent dies (a second
    line behind end of file on the pipe); no-op elsewhere or on failure."""
    if not sys.platform.startswith("linux"):
        return

    def on_sigterm(signum, frame):
        if os.getppid() != parent_pid:  # orphaned: clean up behind the parent
            _parent_gone()
        # A plain SIGTERM (e.g. DataGenerator.close() stopping a stuck
        # worker): the default action, so the exit status says so.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return
    signal.signal(signal.SIGTERM, on_sigterm)
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != parent_pid:  # died before the signal was armed
        _parent_gone()


def _worker_main(generator, worker_id, conn, threshold, owner_pid, death_signal):
    global _OWNER_PID
    for c in list(_MAIN_SIDE):  # fork: copies of the main ends of every pipe
        try:
            c.close()
        except OSError:
            pass
    _MAIN_SIDE.clear()
    _CREATED.clear()  # fork: a worker forked from a worker (nested pools)
    _OWNER_PID = owner_pid
    # Ctrl-C goes to the whole process group; the main process decides.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent_pid = os.getppid()
    if death_signal:
        _set_parent_death_signal(parent_pid)
    tasks = queue.SimpleQueue()
    # Held from the first shared-memory segment of a result until the result
    # is sent or its segments are unlinked, so that a stop never strands one.
    sending = threading.Lock()

    def reader():
        while True:
            try:
                msg = conn.recv()
                eof = False
            except Exception:  # noqa: BLE001 - EOF, or a message cut by an interrupt
                msg, eof = None, True
            if msg is None:  # stop, or the main process is gone
                sending.acquire(timeout=5)
                if eof or os.getppid() != parent_pid:
                    _parent_gone()
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(0)
            tasks.put(msg)

    threading.Thread(target=reader, daemon=True).start()
    generator._worker_id = worker_id
    while True:
        task_id, epoch, index, random, kind, payload = tasks.get()
        encoded = []
        sending_held = False
        try:
            batches = generator._build(epoch, index, random, kind, payload, restore=False)
            sending.acquire()
            sending_held = True
            for b in batches:
                encoded.append(_encode(b, threshold))
            blob = ForkingPickler.dumps(("ok", task_id, encoded))
        except BaseException as e:  # noqa: BLE001 - reported to the main process
            _discard(encoded)
            tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
            try:
                exc = pickle.dumps(e)
                pickle.loads(exc)
            except Exception:  # noqa: BLE001 - an unpicklable exception
                exc = pickle.dumps(RuntimeError(f"{type(e).__name__}: {e}"))
            blob = ForkingPickler.dumps(("err", task_id, exc, tb))
        try:
            conn.send_bytes(blob)
        except OSError:  # the main process is gone: nobody will read it
            _parent_gone()
        finally:
            if sending_held:
                sending.release()


# --------------------------------------------------------------------- pool
def _unimportable_hint(generator, method):
    """Why a spawned worker may die at once with exit code 1, when the
    generator's class cannot be found by import in a fresh interpreter."""
    cls = type(generator)
    if method == "fork" or (cls.__module__ != "__main__" and "<locals>" not in cls.__qualname__):
        return ""
    return (
        f" With start_method={method!r} a worker re-imports {cls.__module__}.{cls.__qualname__} "
        "to unpickle the generator, and a class defined in __main__ (a notebook, an interactive "
        "session, under `if __name__ == '__main__':`) or inside a function cannot be imported "
        "there (the worker's traceback is on stderr). Define the subclass at the top level of an "
        "importable module (and start the workers under `if __name__ == '__main__':`), or use "
        "start_method='fork'."
    )


class _Pool:
    def __init__(self, generator, workers, start_method, threshold):
        import multiprocessing

        ctx = multiprocessing.get_context(start_method)
        # One resource tracker for everybody (see `_encode`/`_decode`).
        resource_tracker.ensure_running()
        self.threshold = threshold
        self.processes, self.conns = [], []
        self.outstanding = [0] * workers
        self.tasks = {}  # task id -> (worker, epoch, index)
        self.results = {}  # task id -> message
        self.busy = False
        self.closed = False
        self.hint = _unimportable_hint(generator, ctx.get_start_method())
        # PR_SET_PDEATHSIG follows the thread that starts a worker: arm it only
        # from the main thread, which lives as long as the process.
        death_signal = threading.current_thread() is threading.main_thread()
        try:
            for w in range(workers):
                main_end, worker_end = ctx.Pipe(duplex=True)
                # Registered before the fork, so that this worker closes its
                # copy too: else it would never see end of file on its pipe.
                _MAIN_SIDE.add(main_end)
                self.conns.append(main_end)
                p = ctx.Process(
                    target=_worker_main,
                    args=(generator, w, worker_end, threshold, os.getpid(), death_signal),
                    name=f"DataGenerator-worker-{w}",
                    daemon=True,
                )
                with warnings.catch_warnings():
                    # JAX warns on every fork because JAX itself must not be
                    # used in the child; workers run NumPy code only (see
                    # DataGenerator's docstring), so the warning is noise here.
                    warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called")
                    p.start()
                # The pool must not keep the generator alive (its finalizer
                # stops the pool), and the child has its copy by now.
                p._args = ()
                worker_end.close()
                self.processes.append(p)
        except BaseException:
            self.close()
            raise
        GUARD.add(self)

    @property
    def pids(self):
        return [p.pid for p in self.processes]

    def submit(self, epoch, index, random, kind, payload):
        w = min(range(len(self.processes)), key=lambda i: self.outstanding[i])
        task_id = next(_TASK_IDS)
        try:
            self.conns[w].send((task_id, epoch, index, random, kind, payload))
        except (BrokenPipeError, ConnectionError, EOFError, OSError):
            self._check_alive()
            raise
        self.outstanding[w] += 1
        self.tasks[task_id] = (w, epoch, index)
        return task_id

    def forget(self, task_ids):
        """Drop tasks whose results nobody will read (an abandoned pass)."""
        for t in task_ids:
            msg = self.results.pop(t, None)
            if msg is not None and msg[0] == "ok":
                _discard(msg[2])
            if t in self.tasks:
                self.tasks[t] = (self.tasks[t][0], None, None)

    def get(self, task_id, timeout):
        """The batches of `task_id`. Raises a worker's exception as soon as
        one arrives (whichever batch it belongs to), and WorkerError when a
        worker dies or `timeout` seconds pass without any message."""
        while task_id not in self.results:
            ready = connection.wait(self.conns + [p.sentinel for p in self.processes], timeout=timeout)
            if not ready:
                w, epoch, index = self.tasks[task_id]
                raise WorkerError(
                    f"no result from DataGenerator worker {w} (pid {self.processes[w].pid}) "
                    f"for batch {index} of epoch {epoch} within timeout={timeout} s."
                )
            for c in self.conns:
                if c in ready:
                    failed = self._receive(c)
                    if failed is not None:
                        self._raise(failed)
            self._check_alive()
        msg = self.results.pop(task_id)
        if msg[0] == "err":
            self._raise(task_id, msg)
        self.tasks.pop(task_id)
        return [_decode(b) for b in msg[2]]

    def _raise(self, task_id, msg=None):
        msg = msg or self.results.pop(task_id)
        w, epoch, index = self.tasks.pop(task_id)
        _, _, blob, tb = msg
        try:
            exc = pickle.loads(blob)
        except Exception:  # noqa: BLE001 - unpicklable on this side
            exc = RuntimeError("an exception that could not be unpickled")
        # The worker's traceback goes into a note as well as the cause: Keras's
        # traceback filtering re-raises `from None`, which drops the cause.
        exc.add_note(
            f"(raised in DataGenerator worker {w}, pid {self.processes[w].pid}, "
            f"building batch {index} of epoch {epoch}; the worker's traceback:)\n{tb.rstrip()}"
        )
        raise exc from RemoteTraceback(tb)

    def _receive(self, conn):
        """Read every complete message on `conn`; the id of a failed task, if any."""
        failed = None
        while conn.poll():
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                break
            task_id = msg[1]
            if task_id not in self.tasks:
                continue
            w, epoch, _ = self.tasks[task_id]
            self.outstanding[w] -= 1
            if epoch is None:  # forgotten
                del self.tasks[task_id]
                if msg[0] == "ok":
                    _discard(msg[2])
                continue
            self.results[task_id] = msg
            if msg[0] == "err" and failed is None:
                failed = task_id
        return failed

    def _check_alive(self):
        for w, p in enumerate(self.processes):
            if p.exitcode is not None:
                code = p.exitcode
                how = (
                    f"was killed by signal {signal.Signals(-code).name}"
                    if code < 0
                    else f"exited with code {code}"
                )
                held = sorted((e, i) for t, (ww, e, i) in self.tasks.items() if ww == w and e is not None)
                what = f" while building batch {held[0][1]} of epoch {held[0][0]}" if held else ""
                raise WorkerError(
                    f"DataGenerator worker {w} (pid {p.pid}) {how}{what}; the other workers "
                    f"were stopped.{self.hint if code == 1 else ''}"
                )

    def _drain(self):
        for c in self.conns:
            try:
                while not c.closed and c.poll():
                    msg = c.recv()
                    if msg[0] == "ok":
                        _discard(msg[2])
            except (EOFError, OSError, ValueError):
                c.close()

    def close(self):
        if self.closed:
            return
        self.closed = True
        GUARD.discard(self)
        for c in self.conns:
            try:
                c.send(None)
            except (OSError, ValueError):
                pass
        # Keep reading while the workers stop, so that none blocks on a full
        # pipe, and unlink the shared memory of results nobody will read.
        deadline = time.monotonic() + 2.0
        while any(p.exitcode is None for p in self.processes):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            live = [c for c in self.conns if not c.closed]
            connection.wait(
                live + [p.sentinel for p in self.processes if p.exitcode is None], timeout=min(left, 0.1)
            )
            self._drain()
        for p in self.processes:
            if p.exitcode is None:
                p.terminate()
                p.join(timeout=1.0)
            if p.exitcode is None:
                p.kill()
                p.join(timeout=1.0)
            else:
                p.join()
        self._drain()
        for c in self.conns:
            c.close()
        for msg in self.results.values():
            if msg[0] == "ok":
                _discard(msg[2])
        self.results.clear()
        for p in self.processes:
            try:
                p.close()
            except ValueError:
                pass
