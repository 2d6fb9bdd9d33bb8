"""Batches per second of `keras_tricks.data.DataGenerator` with 0, 1 and 2
worker processes, against `keras.utils.PyDataset(workers=2,
use_multiprocessing=True)` and `tf.data.Dataset.from_generator(...).map(...,
num_parallel_calls=2)`, all with the same CPU-bound per-sample transform
(a pure-Python "tokenizer" of about `--ms` milliseconds per sample, the kind
of work a bert4keras generator does) and the same padding, in one run.

    PYTHONPATH=$PWD python benchmarks/bench_data_generator.py          # full
    PYTHONPATH=$PWD python benchmarks/bench_data_generator.py --quick  # sanity

Each pipeline is timed twice: `steady` is the batch rate once the first
batch has arrived (worker start-up excluded), `epoch` is one epoch from the
first request, start-up included (PyDataset builds a new process pool every
epoch, DataGenerator's `forfit()` once per stream). Targets on 2 idle cores:
workers=2 >= 1.7x workers=0 (steady), not slower than either alternative,
and workers=1 within 1.1x of workers=0 (the per-batch overhead of the
process hop). On a shared machine the speed-ups come out lower; the CPU
time per batch (all processes, steady part) does not depend on the load and
shows what each pipeline costs.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402

from keras_tricks.data import DataGenerator, sequence_padding  # noqa: E402

_LOOPS = None


def _calibrate(ms):
    """Loop count of `_work` that takes about `ms` milliseconds of CPU time
    (thread CPU time, not wall time: other load on the machine must not
    change the amount of work)."""
    n = 20000
    while True:
        start = time.thread_time()
        _work(n)
        took = time.thread_time() - start
        if took > 0.05:
            return max(1, int(n * ms / 1000 / took))
        n *= 2


def _work(n):
    h = 0
    for i in range(n):
        h = (h * 31 + i) % 1000003
    return h


def tokenize(i, loops):
    """The per-sample transform: CPU-bound Python, ragged int output. With a
    negative `loops` it sleeps -loops microseconds instead (`--transform
    sleep`: a diagnostic of the pipeline's overlap, independent of how many
    cores the machine can spare)."""
    if loops < 0:
        time.sleep(-loops / 1e6)
        h = i * 2654435761 % 1000003
    else:
        h = _work(loops + i % 7)
    length = 16 + (i * 7919 + h) % 48
    return (np.arange(length, dtype="int32") * (h % 97 + 1)) % 30000, i % 5


class TokenizingGenerator(DataGenerator):
    loops = 0

    def __iter__(self, random=False):
        tokens, labels = [], []
        for is_end, i in self.sample(random):
            t, y = tokenize(i, self.loops)
            tokens.append(t)
            labels.append(y)
            if len(tokens) == self.batch_size or is_end:
                yield sequence_padding(tokens), np.asarray(labels, "int32")
                tokens, labels = [], []


class ImageGenerator(DataGenerator):
    """Cheap to build, heavy to move: 16 float32 images of 256x256x3 (12 MiB)."""

    def __iter__(self, random=False):
        batch = []
        for is_end, i in self.sample(random):
            batch.append(i)
            if len(batch) == self.batch_size or is_end:
                images = np.empty((len(batch), 256, 256, 3), "float32")
                images[...] = np.asarray(batch, "float32")[:, None, None, None]
                yield images, np.asarray(batch)
                batch = []


def bench_transport(shm_threshold, steps):
    gen = ImageGenerator(
        list(range(16 * steps)), batch_size=16, workers=1, start_method="fork", shm_threshold=shm_threshold
    )
    stream = gen.forfit(random=False)
    try:
        return _time(stream, steps)
    finally:
        stream.close()


class TokenizingPyDataset(keras.utils.PyDataset):
    def __init__(self, n, batch_size, loops, **kwargs):
        super().__init__(**kwargs)
        self.n, self.batch_size, self.loops = n, batch_size, loops

    def __len__(self):
        return -(-self.n // self.batch_size)

    def __getitem__(self, index):
        samples = [
            tokenize(i, self.loops)
            for i in range(index * self.batch_size, min(self.n, (index + 1) * self.batch_size))
        ]
        return (sequence_padding([t for t, _ in samples]), np.asarray([y for _, y in samples], "int32"))


def _cpu_seconds():
    """CPU time of this process and its live children (the workers)."""
    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.Error:
            pass
    return total


def _time(iterator, n):
    """(steady batches/s after the first batch, whole-epoch batches/s, CPU
    seconds per batch over all processes in the steady part)."""
    start = time.perf_counter()
    next(iterator)
    first, cpu = time.perf_counter(), _cpu_seconds()
    for _ in range(n - 1):
        next(iterator)
    end, cpu = time.perf_counter(), _cpu_seconds() - cpu
    return (n - 1) / (end - first), n / (end - start), cpu / (n - 1)


def bench_datagenerator(workers, n_samples, batch_size, loops, steps):
    gen = TokenizingGenerator(
        list(range(n_samples)), batch_size=batch_size, workers=workers, seed=0, start_method="fork"
    )
    gen.loops = loops
    stream = gen.forfit(random=False)
    try:
        return _time(stream, steps)
    finally:
        stream.close()


def bench_pydataset(n_samples, batch_size, loops, steps):
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

    ds = TokenizingPyDataset(
        n_samples, batch_size, loops, workers=2, use_multiprocessing=True, max_queue_size=4
    )
    adapter = PyDatasetAdapter(ds, shuffle=False)
    iterator = iter(adapter.get_numpy_iterator())
    try:
        return _time(iterator, steps)
    finally:
        adapter.on_epoch_end()


def bench_tf_data(n_samples, batch_size, loops, steps):
    import tensorflow as tf

    def transform(i):
        t, y = tokenize(int(i), loops)
        return t, np.int32(y)

    ds = tf.data.Dataset.from_generator(
        lambda: iter(range(n_samples)), output_signature=tf.TensorSpec((), tf.int64)
    )
    ds = ds.map(lambda i: tf.numpy_function(transform, [i], (tf.int32, tf.int32)), num_parallel_calls=2)
    ds = ds.padded_batch(batch_size, padded_shapes=([None], []))
    return _time(iter(ds.as_numpy_iterator()), steps)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short sanity run")
    parser.add_argument("--ms", type=float, default=3.0, help="milliseconds per sample")
    parser.add_argument(
        "--transform",
        choices=("cpu", "sleep"),
        default="cpu",
        help="cpu: the real benchmark; sleep: overlap diagnostic",
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=None, help="batches timed per pipeline")
    parser.add_argument("--repeats", type=int, default=None, help="rounds (best is kept)")
    args = parser.parse_args()
    steps = args.steps or (8 if args.quick else 30)
    repeats = args.repeats or (1 if args.quick else 3)
    n_samples = steps * args.batch_size
    loops = _calibrate(args.ms) if args.transform == "cpu" else -int(args.ms * 1000)
    start = time.thread_time() if args.transform == "cpu" else time.perf_counter()
    for i in range(args.batch_size):
        tokenize(i, loops)
    per_sample = (
        ((time.thread_time() if args.transform == "cpu" else time.perf_counter()) - start)
        / args.batch_size
        * 1000
    )
    print(
        f"keras {keras.__version__} ({keras.backend.backend()}), {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}; {args.transform} transform "
        f"{per_sample:.1f} ms/sample, "
        f"batch {args.batch_size}, {steps} batches per pipeline, best of {repeats} rounds"
    )

    pipelines = {
        f"DataGenerator workers={w}": (
            lambda w=w: bench_datagenerator(w, n_samples, args.batch_size, loops, steps)
        )
        for w in (0, 1, 2)
    }
    pipelines["PyDataset workers=2 multiprocessing"] = lambda: bench_pydataset(
        n_samples, args.batch_size, loops, steps
    )
    pipelines["tf.data map num_parallel_calls=2"] = lambda: bench_tf_data(
        n_samples, args.batch_size, loops, steps
    )
    # Round-robin repeats, best of each: other load on the machine only ever
    # slows a pipeline down, so the best round is the least disturbed one.
    rows = {name: (0.0, 0.0, float("inf")) for name in pipelines}
    for _ in range(repeats):
        for name, run in pipelines.items():
            steady, epoch, cpu = run()
            rows[name] = (max(rows[name][0], steady), max(rows[name][1], epoch), min(rows[name][2], cpu))

    base = rows["DataGenerator workers=0"][0]
    print(
        f"\n{'pipeline':38s} {'steady b/s':>11s} {'epoch b/s':>10s} {'vs workers=0':>13s} "
        f"{'CPU ms/batch':>13s}"
    )
    for name, (steady, epoch, cpu) in rows.items():
        print(f"{name:38s} {steady:11.2f} {epoch:10.2f} {steady / base:12.2f}x {cpu * 1000:13.1f}")
    w1, w2 = rows["DataGenerator workers=1"][0], rows["DataGenerator workers=2"][0]
    py, tfd = rows["PyDataset workers=2 multiprocessing"], rows["tf.data map num_parallel_calls=2"]
    print()
    print(f"speed-up, 2 workers over 0 (steady):     {w2 / base:.2f}x  (target >= 1.7x)")
    print(f"per-batch time, 1 worker over in-process: {base / w1:.2f}x  (target <= 1.1x)")
    print(
        f"2 workers vs PyDataset(workers=2):       {w2 / py[0]:.2f}x steady, "
        f"{rows['DataGenerator workers=2'][1] / py[1]:.2f}x epoch  (target >= 1)"
    )
    print(
        f"2 workers vs tf.data(parallel=2):        {w2 / tfd[0]:.2f}x steady, "
        f"{rows['DataGenerator workers=2'][1] / tfd[1]:.2f}x epoch  (target >= 1)"
    )

    print("\ntransport of 12 MiB batches (workers=1, build cost ~nil):")
    for label, threshold in (("shared memory", 1 << 16), ("pickled through the pipe", None)):
        best = max(bench_transport(threshold, steps)[0] for _ in range(repeats))
        print(f"  {label:26s} {best:8.1f} batches/s")
    print(
        f"load average now {os.getloadavg()[0]:.1f} (above ~2 the machine is shared and the "
        "speed-ups read low)"
    )


if __name__ == "__main__":
    main()
