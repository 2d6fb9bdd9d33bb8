"""DataGenerator(process_index=, process_count=): each of several processes
builds its part of every global batch; the parts, in process order, are the
single-process stream."""

import multiprocessing
import sys

import numpy as np
import pytest

from keras_tricks.data import DataGenerator


def _process(index, count, workers=0):
    """3 epochs of a shuffled stream, as this process would build them."""
    gen = DataGenerator(
        list(range(43)), batch_size=6, seed=11, workers=workers, process_index=index, process_count=count
    )
    stream = gen.forfit()
    return {"steps": len(gen), "batches": [next(stream).tolist() for _ in range(3 * len(gen))]}


def _send(conn, args):
    conn.send(_process(*args))
    conn.close()


def _in_processes(*args):
    """Each `args` tuple run by `_process` in its own (forked) process."""
    # Forked: the children only run NumPy, and a fresh interpreter would spend
    # seconds importing Keras. Not a Pool: its daemonic processes could not
    # start the generator's own workers.
    ctx = multiprocessing.get_context("fork")
    results = []
    for a in args:
        parent, child = ctx.Pipe(duplex=False)
        process = ctx.Process(target=_send, args=(child, a))
        process.start()
        results.append((process, parent))
    out = [parent.recv() for _, parent in results]
    for process, _ in results:
        process.join(timeout=60)
        assert process.exitcode == 0
    return out


@pytest.mark.skipif(sys.platform == "win32", reason="fork")
def test_two_processes_build_the_single_process_stream_between_them():
    single, a, b = _in_processes((0, 1), (0, 2, 2), (1, 2, 0))
    # 43 samples in batches of 6: 7 full batches and one of 1 sample, which
    # cannot be split in two: both processes skip it.
    assert single["steps"] == 8
    assert a["steps"] == b["steps"] == 7
    expected = [batch for batch in single["batches"] if len(batch) >= 2]
    joined = [x + y for x, y in zip(a["batches"], b["batches"])]
    assert joined == expected[: len(joined)] and len(joined) == 21
    assert all(len(x) == len(y) == 3 for x, y in zip(a["batches"], b["batches"]))


def test_uneven_parts_are_contiguous_and_near_equal():
    parts = [
        [b.tolist() for b in DataGenerator(list(range(10)), batch_size=10, process_index=i, process_count=3)]
        for i in range(3)
    ]
    assert [len(p[0]) for p in parts] == [3, 4, 3]
    assert sum((p[0] for p in parts), []) == list(range(10))


def test_iterable_data_is_split_alike():
    class Reiterable:
        def __iter__(self):
            return iter(range(9))

    parts = [
        [b.tolist() for b in DataGenerator(Reiterable(), batch_size=4, process_index=i, process_count=2)]
        for i in range(2)
    ]
    assert parts == [[[0, 1], [4, 5]], [[2, 3], [6, 7]]]  # the last batch, one sample, skipped


def test_bad_process_arguments_are_refused_with_the_argument_named():
    with pytest.raises(TypeError, match="`process_count`"):
        DataGenerator([1, 2], process_count=2.0)
    with pytest.raises(TypeError, match="`process_index`"):
        DataGenerator([1, 2], process_index=True, process_count=2)
    with pytest.raises(ValueError, match="`process_count` must be >= 1"):
        DataGenerator([1, 2], process_count=0)
    with pytest.raises(ValueError, match=r"`process_index` must be in \[0, process_count=2\)"):
        DataGenerator([1, 2], process_index=2, process_count=2)


def test_steps_leave_out_only_a_last_batch_smaller_than_the_process_count():
    assert DataGenerator(list(range(7)), batch_size=3).steps == 3
    assert DataGenerator(list(range(7)), batch_size=3, process_count=2).steps == 2
    assert DataGenerator(list(range(8)), batch_size=3, process_count=2).steps == 3


class _Noise(DataGenerator):
    def __iter__(self, random=False):
        items = [item for _, item in self.sample(random)]
        yield self.rng.normal(size=len(items))


def test_the_parts_of_a_batch_draw_different_numbers_and_one_process_keeps_its_stream():
    a, b = (
        next(iter(_Noise(list(range(8)), batch_size=8, seed=0, process_index=i, process_count=2)))
        for i in (0, 1)
    )
    assert a.shape == b.shape == (4,) and not np.allclose(a, b)
    single = next(iter(_Noise(list(range(8)), batch_size=8, seed=0)))
    expected = np.random.default_rng(np.random.SeedSequence(0, spawn_key=(1, 0, 0, 0))).normal(size=8)
    np.testing.assert_array_equal(single, expected)  # the documented key (1, epoch, batch, 0)
