import os

import keras
import numpy as np
import pytest

from keras_tricks.optimizers import PiecewiseLinear


def reference(t, schedule, from_zero=True):
    """bert4keras's piecewise_linear written out in float64 Python: sorted
    points, (0, 0) in front when asked, linear in between, the first value
    before the first point and the last value after the last one."""
    points = sorted(schedule.items())
    if from_zero and points[0][0] != 0:
        points = [(0, 0.0)] + points
    if t <= points[0][0]:
        return float(points[0][1])
    for (s0, m0), (s1, m1) in zip(points, points[1:]):
        if s0 <= t <= s1:
            return m0 + (m1 - m0) * (t - s0) / (s1 - s0)
    return float(points[-1][1])


SCHEDULES = [
    ({1000: 1.0, 2000: 0.1}, True),
    ({0: 1.0}, True),
    ({3: 2.0}, False),  # before the first point: its value
    ({10: 0.5, 0: 0.0, 4: 1.0, 7: 0.25}, True),  # unsorted dict keys
    ({5: 1.0, 6: 1.0, 9: 0.0}, True),
]


@pytest.mark.parametrize("schedule,from_zero", SCHEDULES)
def test_matches_float64_reference(schedule, from_zero):
    lr = PiecewiseLinear(schedule, learning_rate=0.3, from_zero=from_zero)
    steps = sorted({0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 500, 999, 1000, 1001, 1500, 2000, 5000, 10**6})
    got = [float(keras.ops.convert_to_numpy(lr(np.int32(t)))) for t in steps]
    want = [0.3 * reference(t, schedule, from_zero) for t in steps]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
    # The points themselves are exact (in float32).
    for s, m in schedule.items():
        assert float(keras.ops.convert_to_numpy(lr.multiplier(np.int32(s)))) == float(np.float32(m))


def test_float_steps_interpolate():
    lr = PiecewiseLinear({10: 1.0})
    got = float(keras.ops.convert_to_numpy(lr(np.float32(2.5))))
    assert got == pytest.approx(0.25, rel=1e-6)


def test_large_step_offsets_are_exact():
    # 2**24 + 1 is not a float32: an offset computed in float32 would round it.
    s = 2**24
    lr = PiecewiseLinear([(s, 0.0), (s + 4, 1.0)], from_zero=False)
    got = float(keras.ops.convert_to_numpy(lr(np.int32(s + 1))))
    assert got == 0.25


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"schedule": {}}, ValueError, "at least one"),
        ({"schedule": []}, ValueError, "at least one"),
        ({"schedule": {-1: 1.0}}, ValueError, "schedule step"),
        ({"schedule": {1.5: 1.0}}, TypeError, "schedule step"),
        ({"schedule": {True: 1.0}}, TypeError, "schedule step"),
        ({"schedule": {1: -0.1}}, ValueError, "multiplier at step 1"),
        ({"schedule": {1: float("nan")}}, ValueError, "multiplier at step 1"),
        ({"schedule": [(5, 1.0), (2, 0.5)]}, ValueError, "strictly increasing"),
        ({"schedule": [(2, 1.0), (2, 0.5)]}, ValueError, "strictly increasing"),
        ({"schedule": [(2, 1.0, 3)]}, TypeError, "pair"),
        ({"schedule": 3}, TypeError, "`schedule`"),
        ({"schedule": {1: 1.0}, "learning_rate": -1.0}, ValueError, "learning_rate"),
        ({"schedule": {1: 1.0}, "from_zero": 1}, TypeError, "from_zero"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        PiecewiseLinear(**kwargs)


def test_config_round_trip():
    lr = PiecewiseLinear({np.int64(8): np.float32(0.5), 4: 1.0}, learning_rate=0.1, name="warm")
    config = lr.get_config()
    assert config["schedule"] == [[4, 1.0], [8, 0.5]]
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(lr))
    assert isinstance(again, PiecewiseLinear)
    assert again.get_config() == config


def test_drives_an_optimizer_and_saves_in_keras_file(tmp_path):
    """SGD with the schedule moves w by exactly lr(t) * grad at update t
    (the schedule sees the count of earlier updates); the optimizer and its
    schedule come back from a .keras file and continue the same way."""
    schedule, base = {2: 1.0, 4: 0.5}, 0.1
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((1,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")]
    )
    opt = keras.optimizers.SGD(learning_rate=PiecewiseLinear(schedule, learning_rate=base))
    opt.learning_rate_config = PiecewiseLinear(schedule, learning_rate=base).get_config()
    model.compile(optimizer=opt, loss="mse")
    x = np.ones((1, 1), "float32")
    y = np.full((1, 1), 10.0, "float32")
    w = 0.0
    for t in range(3):
        model.train_on_batch(x, y)
        w -= base * reference(t, schedule) * 2.0 * (w - 10.0)  # d/dw (w - 10)^2
        np.testing.assert_allclose(keras.ops.convert_to_numpy(model.weights[0])[0, 0], w, rtol=1e-6)
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    saved_lr = keras.saving.deserialize_keras_object(loaded.optimizer.get_config()["learning_rate"])
    assert isinstance(saved_lr, PiecewiseLinear) and saved_lr.get_config() == opt.learning_rate_config
    for t in range(3, 6):
        loaded.train_on_batch(x, y)
        w -= base * reference(t, schedule) * 2.0 * (w - 10.0)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded.weights[0])[0, 0], w, rtol=1e-6)
