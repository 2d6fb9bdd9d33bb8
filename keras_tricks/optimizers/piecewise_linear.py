"""`PiecewiseLinear`: the learning-rate schedule of bert4keras's
`piecewise_linear` (`{step: multiplier}`, linear in between) for Keras 3."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras
from keras import ops

from keras_tricks import _validation
from keras_tricks._typing import Tensor


def _check_points(schedule: Any) -> list[tuple[int, float]]:
    """The (step, multiplier) points, sorted by step, checked."""
    if isinstance(schedule, Mapping):
        items = list(schedule.items())
        ordered = False  # a dict is sorted by its keys, as bert4keras does
    elif isinstance(schedule, Sequence) and not isinstance(schedule, (str, bytes)):
        items = list(schedule)
        ordered = True  # pairs must already be in increasing step order
    else:
        raise TypeError(
            "`schedule` must be a dict {step: multiplier} or a list of (step, multiplier) "
            f"pairs, got {schedule!r} of type {type(schedule).__name__}."
        )
    if not items:
        raise ValueError("`schedule` must hold at least one (step, multiplier) point, got an empty one.")
    points = []
    for item in items:
        if isinstance(item, Mapping) or not isinstance(item, Sequence) or len(item) != 2:
            raise TypeError(f"Each point of `schedule` must be a (step, multiplier) pair, got {item!r}.")
        step = _validation.check_int("schedule step", item[0], minimum=0)
        value = _validation.check_float(f"schedule multiplier at step {step}", item[1], minimum=0.0)
        points.append((step, value))
    if ordered:
        for (a, _), (b, _) in zip(points, points[1:]):
            if b <= a:
                raise ValueError(
                    "The steps of a `schedule` given as pairs must be strictly increasing, "
                    f"got step {b} after step {a}."
                )
    else:
        points.sort()
    return points


@keras.saving.register_keras_serializable(package="keras_tricks")
class PiecewiseLinear(keras.optimizers.schedules.LearningRateSchedule):
    """A piecewise-linear learning rate: `learning_rate * f(step)`.

    `f` is bert4keras's `piecewise_linear`: `schedule` gives the points
    `{s_0: m_0, s_1: m_1, ...}` (steps are sorted); between two points `f`
    is the straight line through them,

        f(t) = m_i + (m_{i+1} - m_i) * (t - s_i) / (s_{i+1} - s_i)
               for s_i <= t <= s_{i+1},

    after the last point `f(t) = m_last`, and before the first point
    `f(t) = m_0`. With `from_zero=True` (bert4keras's default) a point
    `(0, 0.0)` is put in front when the first step is not 0, so that
    `{1000: 1.0, 2000: 0.1}` warms up linearly from 0 to 1 over the first
    1000 steps, decays to 0.1 at step 2000 and stays there: the usual
    "warm-up then linear decay" of BERT fine-tuning.

    `step` is the optimizer's `iterations`, the number of updates applied
    before this one (Keras optimizers call the schedule with it, as
    bert4keras's optimizers did): the first update uses `f(0)`. With
    `gradient_accumulation_steps=N` it counts applied updates, not
    micro-batches. The offset `t - s_i` is computed in integers, so the
    schedule is exact for any step count an int32 holds.

    Args:
        schedule: `{step: multiplier}` (a dict, sorted by step) or a list of
            `(step, multiplier)` pairs in strictly increasing step order.
            Steps are integers >= 0, multipliers real numbers >= 0.
        learning_rate: the base learning rate the multiplier scales.
        from_zero: start from `(0, 0.0)` when the first step is not 0.
        name: a name for the schedule.

    Example:

    >>> import keras
    >>> from keras_tricks.optimizers import PiecewiseLinear
    >>> lr = PiecewiseLinear({4: 1.0, 8: 0.5}, learning_rate=0.1)
    >>> [round(float(lr(t)), 4) for t in (0, 2, 4, 6, 8, 100)]
    [0.0, 0.05, 0.1, 0.075, 0.05, 0.05]
    >>> optimizer = keras.optimizers.Adam(learning_rate=lr)
    """

    def __init__(
        self,
        schedule: Mapping[int, float] | Sequence[tuple[int, float]],
        learning_rate: float = 1.0,
        from_zero: bool = True,
        name: str | None = None,
    ) -> None:
        super().__init__()
        self.points = _check_points(schedule)
        self.learning_rate = _validation.check_float("learning_rate", learning_rate, minimum=0.0)
        self.from_zero = _validation.check_bool("from_zero", from_zero)
        if name is not None:
            _validation.check_type("name", name, str, "a string or None")
        self.name = name
        points = list(self.points)
        if self.from_zero and points[0][0] != 0:
            points.insert(0, (0, 0.0))
        self._knots = points

    def multiplier(self, step: Tensor | int) -> Tensor:
        """`f(step)` without the base learning rate (float32)."""
        t = ops.convert_to_tensor(step)
        if "int" not in keras.backend.standardize_dtype(t.dtype):
            # A float step (someone calling the schedule by hand): the
            # formula holds for real t as well.
            t = ops.cast(t, "float32")
        knots = self._knots
        value = ops.full(ops.shape(t), knots[0][1], dtype="float32")
        for (s0, m0), (s1, m1) in zip(knots, knots[1:]):
            # Clipping makes the segment flat at m1 beyond s1, so the last
            # segment also gives "constant after the last point".
            offset = ops.cast(ops.clip(t, s0, s1) - s0, "float32")
            frac = offset / float(s1 - s0)
            # This form gives m0 and m1 exactly at the two ends (float32
            # m0 + (m1 - m0) * 1 need not round back to m1).
            segment = m0 * (1.0 - frac) + m1 * frac
            value = ops.where(t >= s0, segment, value)
        return value

    def __call__(self, step: Tensor | int) -> Tensor:
        return self.multiplier(step) * self.learning_rate

    def get_config(self) -> dict[str, Any]:
        # Pairs rather than a dict: JSON would turn integer keys into strings.
        return {
            "schedule": [[s, m] for s, m in self.points],
            "learning_rate": self.learning_rate,
            "from_zero": self.from_zero,
            "name": self.name,
        }
