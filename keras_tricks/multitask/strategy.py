"""The base class of every multi-task weighting strategy, and `get`.

A strategy turns the k task losses of a multi-output model (and, for the
gradient-based ones, the Gram matrix of the per-task gradients) into one
update. It is a `keras.layers.Layer` only so that its state (learned
log-variances, GradNorm's weights, DWA's loss history, a seed) lives in Keras
variables that are saved and restored with the model; it is never called on
a model's tensors.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import keras
from keras import ops

from keras_tricks import _keras_compat
from keras_tricks._typing import Shape, Tensor


class Strategy(keras.layers.Layer):
    """Base class: a rule that weighs k task losses into one update.

    Subclasses are one of two kinds:

    * loss-based (`uses_gradients = False`): `combine(losses)` returns the
      scalar objective that is differentiated once, and the effective weights
      d objective / d L_i (for the logs);
    * gradient-based (`uses_gradients = True`): `task_weights(losses, gram)`
      returns weights w such that the shared parameters move along
      d = sum_i w_i g_i, where gram[i, j] = <g_i, g_j> for the per-task
      gradients g_i. `scales_task_specific` says whether each task's own
      parameters (its head) get w_i * g_i (True: the weights are loss weights,
      as in GradNorm) or g_i (False: the strategy only chooses the direction of
      the shared update, as MGDA, PCGrad and CAGrad do).

    A gradient-based strategy with `elementwise = True` (GradDrop) does not
    combine whole gradients: for every shared variable, `MultiTaskModel`
    calls `combine_elementwise(grads)` on the k per-task gradients of that
    variable, which returns `(update, kept, present)`: the update (same
    shape and dtype), and two (k,) float32 counts over the variable's
    coordinates, `present` where g_i is non-zero and `kept` the sum of
    task i's coefficient there. The logged weight of task i is
    sum kept / sum present over the shared variables (1 where it has no
    non-zero coordinate); no Gram matrix is formed, and every other
    variable (a task's head) gets its plain gradient.

    `bind(tasks)` fixes the number of tasks (and resolves task names) before
    use; `MultiTaskModel` calls it. Everything is computed in float32
    whatever the global dtype policy. State variables use
    `aggregation="mean"`, so that under `tf.distribute` a replica may update
    them (gradient-based state is identical on every replica; loss-based
    running statistics are averaged).
    """

    uses_gradients = False
    scales_task_specific = True
    elementwise = False

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.tasks = None

    def bind(self, tasks: Iterable[str]) -> Strategy:
        """Fixes the task names (a list of k >= 2 strings) and builds the state."""
        tasks = [str(t) for t in tasks]
        if len(tasks) < 2:
            raise ValueError(f"A multi-task strategy needs at least 2 tasks; got tasks={tasks}.")
        if self.tasks is not None and self.tasks != tasks:
            raise ValueError(
                f"This strategy is already bound to the tasks {self.tasks}; create a "
                f"new one for the tasks {tasks}."
            )
        if self.tasks is None:
            self.tasks = tasks
            # Not `self.built`: a deserialized layer counts as built before
            # its state exists.
            self.build((len(tasks),))
        return self

    @property
    def num_tasks(self) -> int | None:
        return None if self.tasks is None else len(self.tasks)

    def build(self, input_shape: Shape) -> None:
        self.built = True

    def build_from_config(self, config: dict[str, Any]) -> None:
        # The state is created by `bind`, which needs the task names; Keras's
        # loader restores the saved values into it afterwards.
        pass

    def end_epoch(self) -> None:
        """Called by `MultiTaskModel.fit` after every epoch (eagerly)."""

    def task_specific_weights(self, losses: Tensor, weights: Tensor) -> Tensor:
        """Gradient-based strategies: the coefficient of each task's gradient on
        its own (task-specific) variables, given the shared `weights`: the
        weights if `scales_task_specific`, else 1. DB-MTL overrides it (its
        heads descend the log-losses)."""
        return weights if self.scales_task_specific else ops.ones_like(weights)

    def _task_value(self, argument, value):
        """A per-task list of floats from a list/tuple/dict, checked against the tasks."""
        return [float(v) for v in per_task(value, self.tasks, argument)]


class SeededStrategy(Strategy):
    """A strategy that draws random numbers (PCGrad's order, RLW's weights)
    from its own `keras.random.SeedGenerator`, whose state it saves and
    restores with the model: Keras does not save a SeedGenerator's state,
    and a resumed run must draw what an uninterrupted one would."""

    def __init__(self, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if seed is not None:
            validate_number("seed", seed, integer=True)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def save_own_variables(self, store: dict[str, Any]) -> None:
        # The layer's own state (GradVac's targets) as Keras saves it, then
        # the seed: overriding the method replaces Keras's default saving.
        for i, v in enumerate(self._own_state()):
            store[f"{i}"] = v
        store["seed_state"] = ops.convert_to_numpy(self.seed_generator.state)

    def load_own_variables(self, store: dict[str, Any]) -> None:
        for i, v in enumerate(self._own_state()):
            if f"{i}" not in store:
                raise ValueError(
                    f"The saved state of {type(self).__name__} lacks variable {i} ({v.path}); "
                    f"it holds {sorted(store.keys())}."
                )
            v.assign(store[f"{i}"])
        if "seed_state" in store:
            self.seed_generator.state.assign(store["seed_state"])

    def _own_state(self) -> list[Any]:
        return _keras_compat.layer_own_variables(self)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["seed"] = self.seed
        return config


def per_task(
    value: Any,
    tasks: Sequence[str],
    argument: str,
    *,
    allow_single: bool = False,
    extra_keys: bool = False,
) -> list[Any]:
    """`value` as a list in task order: from a dict keyed by task, a list or
    tuple in task order, or (allow_single) one value for every task.

    Raises ValueError naming `argument`, the tasks, and the unknown / missing
    keys or the wrong length. `extra_keys` lets a dict carry keys that are
    not tasks (e.g. targets a dataset yields for other purposes).
    """
    if isinstance(value, dict):
        unknown = [] if extra_keys else sorted(set(value) - set(tasks), key=str)
        missing = [t for t in tasks if t not in value]
        if unknown or missing:
            raise ValueError(
                f"`{argument}` dict must have one entry per task {tasks}; unknown: {unknown}, "
                f"missing: {missing}."
            )
        return [value[t] for t in tasks]
    if isinstance(value, (list, tuple)):
        if len(value) != len(tasks):
            raise ValueError(f"`{argument}` list must have one entry per task {tasks}; got {len(value)}.")
        return list(value)
    if allow_single:
        return [value] * len(tasks)
    raise ValueError(
        f"`{argument}` must be a dict keyed by task or a list in output order ({tasks}); "
        f"got a single {type(value).__name__}."
    )


def validate_positive_values(
    argument: str,
    value: Sequence[float] | dict[str, float] | None,
    allow_zero: bool = False,
) -> list[float] | dict[str, float] | None:
    """A list/tuple/dict of finite numbers > 0 (>= 0 with allow_zero), or None."""
    if value is None:
        return None
    items = value.values() if isinstance(value, dict) else value
    if not isinstance(value, (list, tuple, dict)):
        raise TypeError(
            f"`{argument}` must be a list, tuple or dict of numbers (one per task); "
            f"got {type(value).__name__}."
        )
    for v in items:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise TypeError(f"`{argument}` must hold finite numbers; got {v!r}.")
        if v < 0 or (v == 0 and not allow_zero):
            bound = ">= 0" if allow_zero else "> 0"
            raise ValueError(f"`{argument}` must hold numbers {bound}; got {v!r}.")
    return dict(value) if isinstance(value, dict) else [float(v) for v in value]


def validate_number(
    argument: str,
    value: float,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    integer: bool = False,
) -> float:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value):
        what = "an integer" if integer else "a finite number"
        raise TypeError(f"`{argument}` must be {what}; got {value!r}.")
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"`{argument}` must be {'>' if low_open else '>='} {low}; got {value!r}.")
    if high is not None and value > high:
        raise ValueError(f"`{argument}` must be <= {high}; got {value!r}.")
    return value


def safe_divide(x: Tensor, y: Tensor) -> Tensor:
    """x / y where y != 0, else 0 (no inf or NaN, and a zero gradient there)."""
    nonzero = ops.not_equal(y, 0)
    return ops.where(nonzero, x / ops.where(nonzero, y, ops.ones_like(y)), ops.zeros_like(x))


def tiny(dtype: str = "float32") -> float:
    """The smallest normal number of `dtype`, as a Python float."""
    from keras_tricks._numerics import finfo

    return float(finfo(dtype).tiny)


def eps(dtype: str = "float32") -> float:
    from keras_tricks._numerics import finfo

    return float(finfo(dtype).eps)


#: Strategy classes by name, filled by `register_strategy` as the strategy
#: modules load (kept here, not in the package `__init__`, so that `get` needs
#: no import of the package that imports this module).
STRATEGIES: dict[str, type[Strategy]] = {}


def register_strategy(name: str) -> Callable[[type[Strategy]], type[Strategy]]:
    """Class decorator: make `get(name)` (and `MultiTaskModel(strategy=name)`)
    build this strategy class."""

    def add(cls: type[Strategy]) -> type[Strategy]:
        if name in STRATEGIES and STRATEGIES[name] is not cls:
            raise ValueError(f"Strategy name {name!r} is already taken by {STRATEGIES[name].__name__}.")
        STRATEGIES[name] = cls
        return cls

    return add


def get(identifier: str | dict[str, Any] | Strategy) -> Strategy:
    """A strategy from its name, a config dict or a `Strategy` (returned as is).

    Names: "equal", "initial", "prior", "realtime", "generalized_mean",
    "uncertainty", "dwa", "grad_norm_normalization", "gradnorm", "mgda",
    "pcgrad", "cagrad", "primary_auxiliary", "rlw", "famo", "stch", "db_mtl", "upgrad", "dualproj", "imtl_g",
    "graddrop", "aligned_mtl", "gradvac", "nash_mtl", "fairgrad".
    Raises ValueError naming the
    unknown name and listing the known ones.
    """
    if isinstance(identifier, Strategy):
        return identifier
    if isinstance(identifier, dict):
        strategy = keras.saving.deserialize_keras_object(identifier)
        if not isinstance(strategy, Strategy):
            raise ValueError(f"`strategy` config does not describe a Strategy: {identifier}.")
        return strategy
    if isinstance(identifier, str):
        key = identifier.lower()
        if key not in STRATEGIES:
            raise ValueError(
                f"Unknown multi-task strategy {identifier!r}; expected one of "
                f"{sorted(STRATEGIES)} or a keras_tricks.multitask.Strategy instance."
            )
        return STRATEGIES[key]()
    raise TypeError(
        "`strategy` must be a strategy name, a config dict or a "
        f"keras_tricks.multitask.Strategy; got {type(identifier).__name__}."
    )
