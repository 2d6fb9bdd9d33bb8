"""DataGenerator.get_state / set_state: a generator given the state of
another goes on with exactly the batches the other would have yielded."""

import itertools

import numpy as np
import pytest

from keras_tricks.data import DataGenerator


class Twice(DataGenerator):
    """Two batches per shard, each with noise from the batch's own rng."""

    def __iter__(self, random=False):
        items = [item for _, item in self.sample(random)]
        for half in (items[: len(items) // 2 + 1], items[len(items) // 2 + 1 :]):
            yield np.array(half, "float64") + self.rng.normal(size=len(half))


class Reiterable:
    """Data with no length and no []: read in order, shuffled by buffer."""

    def __iter__(self):
        return iter(range(23))


def _take(stream, n):
    return [np.asarray(b).tolist() for b in itertools.islice(stream, n)]


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("kind", ["default", "two_per_shard", "no_length"])
def test_a_resumed_stream_goes_on_with_the_same_batches(kind, workers):
    def make(**kw):
        if kind == "two_per_shard":
            return Twice(list(range(23)), batch_size=5, seed=7, **kw)
        if kind == "no_length":
            return DataGenerator(Reiterable(), batch_size=5, buffer_size=6, seed=7, **kw)
        return DataGenerator(list(range(23)), batch_size=5, seed=7, **kw)

    reference = _take(make().forfit(), 30)  # three epochs and a half
    for cut in (0, 1, 4, 5, 9, 10, 17):
        gen = make()
        stream = gen.forfit()
        assert _take(stream, cut) == reference[:cut]
        state = gen.get_state()
        resumed = make(workers=workers)
        resumed.seed = 999  # taken from the state
        resumed.set_state(state)
        assert _take(resumed.forfit(), 30 - cut) == reference[cut:], f"cut after {cut} batches"


def test_the_state_after_n_trained_batches_ignores_those_pulled_ahead():
    gen = DataGenerator(list(range(20)), batch_size=3, seed=1)
    stream = gen.forfit()
    _take(stream, 12)  # fit() pulls ahead of training
    state = gen._state_after(8)
    ref = DataGenerator(list(range(20)), batch_size=3, seed=1)
    ref_stream = ref.forfit()
    _take(ref_stream, 8)
    assert state == ref.get_state()
    start = DataGenerator(list(range(20)), batch_size=3, seed=1).get_state()
    assert gen._state_after(0) == {**start, "random": True}  # the stream's
    with pytest.raises(ValueError, match="fewer than"):
        gen._state_after(13)


def test_state_is_plain_json_and_set_state_before_any_stream_round_trips():
    import json

    gen = DataGenerator(list(range(10)), batch_size=4, seed=5)
    state = json.loads(json.dumps(gen.get_state()))
    assert state == {
        "seed": 5,
        "epoch": 0,
        "index": 0,
        "offset": 0,
        "random": None,
        "batch_size": 4,
        "size": 10,
    }
    other = DataGenerator(list(range(10)), batch_size=4)
    other.set_state(state)
    assert other.get_state() == state
    assert _take(other.forfit(), 6) == _take(gen.forfit(), 6)


def test_bad_states_are_refused_with_the_argument_named():
    gen = DataGenerator(list(range(10)), batch_size=4, seed=0)
    good = gen.get_state()
    with pytest.raises(TypeError, match="`state` must be a dict"):
        gen.set_state([1, 2])
    with pytest.raises(ValueError, match="lacks the keys"):
        gen.set_state({"seed": 0})
    with pytest.raises(TypeError, match=r"state\['epoch'\]"):
        gen.set_state({**good, "epoch": -1})
    with pytest.raises(TypeError, match=r"state\['index'\]"):
        gen.set_state({**good, "index": 1.5})
    with pytest.raises(ValueError, match="batch_size=3"):
        gen.set_state({**good, "batch_size": 3})
    with pytest.raises(ValueError, match="over 11 samples"):
        gen.set_state({**good, "size": 11})
    gen.set_state({**good, "random": False})
    with pytest.raises(ValueError, match="random=False"):
        next(gen.forfit(random=True))


def test_setting_epoch_after_set_state_discards_the_position():
    gen = DataGenerator(list(range(10)), batch_size=4, seed=0)
    gen.set_state({**gen.get_state(), "index": 2})
    gen.epoch = 3  # documented: the user's epoch wins
    expected = DataGenerator(list(range(10)), batch_size=4, seed=0)
    expected.epoch = 3
    assert _take(gen.forfit(), 3) == _take(expected.forfit(), 3)
