from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
from keras import tree

from keras_tricks.losses._flooding_base import FloodingBase, validate_level

#: `schedule(epoch, level) -> level`: the new flood level at the start of an epoch.
Schedule = Callable[[int, float], float]


def flooding_losses(model: keras.Model) -> list[tuple[str | None, FloodingBase]]:
    """`[(output_name or None, loss)]` for each flooding loss `model` was
    compiled with (a single loss, or a list/dict of per-output losses)."""
    loss = getattr(model, "loss", None)
    if loss is None:
        return []
    if isinstance(loss, FloodingBase):
        return [(None, loss)]
    names = list(getattr(model, "output_names", None) or [])
    found = []
    if isinstance(loss, dict):
        items = list(loss.items())
    else:
        flat = tree.flatten(loss) if isinstance(loss, (list, tuple)) else [loss]
        items = [(names[i] if i < len(names) else str(i), l) for i, l in enumerate(flat)]
    for key, value in items:
        if isinstance(value, FloodingBase):
            found.append((str(key), value))
    return found


@keras.saving.register_keras_serializable(package="keras_tricks")
class FloodLevelScheduler(keras.callbacks.Callback):
    """Set the flood level b of `Flooding` / `IndividualFlooding` each epoch.

    Like `keras.callbacks.LearningRateScheduler`: at the start of every epoch
    `schedule(epoch, level)` (epoch counted from 0, `level` the current b)
    returns the new b, which is validated as the loss validates it (finite,
    >= 0 unless the loss has `allow_negative_level=True`; otherwise
    `ValueError`) and written into the loss's level variable, so nothing
    recompiles. `schedule=None` keeps the level and only logs.

    It drives every flooding loss the model was compiled with (one per
    output on a multi-output model); pass a dict `{output_name: schedule}`
    to give outputs their own schedules (outputs not named keep their
    level).

    Logging: at the start of training it attaches each flooding loss's
    statistics to the model, so the `fit()` logs (and `History`) carry,
    besides the plain `loss`/`val_loss`, `flood_level` (the current b),
    `flood_objective` (the mean flooded objective) and `flood_fraction` (the
    fraction of flooded batches, or of flooded samples/tokens for iFlood),
    prefixed with `<output>_` on multi-output models, and `val_` for the
    validation pass (where nothing is flooded: there it tells how much of
    the validation data sits below b).

    Args:
        schedule: `fn(epoch, level) -> level`, a dict of them by output
            name, or None.
        verbose: 1 prints each change of level.

    Examples:
    >>> import keras, keras_tricks
    >>> warm_up = keras_tricks.callbacks.FloodLevelScheduler(
    ...     lambda epoch, level: 0.0 if epoch < 5 else 0.1)
    >>> # model.fit(x, y, epochs=20, callbacks=[warm_up])
    """

    def __init__(self, schedule: Schedule | dict[str, Schedule] | None = None, verbose: int = 0) -> None:
        super().__init__()
        if not (
            schedule is None
            or callable(schedule)
            or (isinstance(schedule, dict) and all(callable(f) for f in schedule.values()))
        ):
            raise ValueError(
                "`schedule` must be a function (epoch, level) -> level, a dict "
                f"of such functions by output name, or None; got {schedule!r}."
            )
        self.schedule = schedule
        self.verbose = int(verbose)

    def _losses(self) -> list[tuple[str | None, FloodingBase]]:
        found = flooding_losses(self.model)
        if not found:
            raise ValueError(
                "FloodLevelScheduler: the model is not compiled with a "
                "keras_tricks.losses.Flooding or IndividualFlooding loss "
                f"(model.loss={getattr(self.model, 'loss', None)!r})."
            )
        if isinstance(self.schedule, dict):
            unknown = set(self.schedule) - {name for name, _ in found}
            if unknown:
                raise ValueError(
                    f"`schedule`: no flooding loss on outputs {sorted(unknown)}; "
                    f"flooded outputs: {[name for name, _ in found]}."
                )
        return found

    def set_model(self, model: keras.Model) -> None:
        super().set_model(model)
        # fit() sets the model before it records the training state (JAX
        # on Keras 3.10 fixes the list of metric variables there, and a
        # statistic attached later overran it: IndexError), so attach here.
        if getattr(model, "compiled", False):
            self._attach()

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._attach()  # a model compiled after set_model

    def _attach(self) -> None:
        newly = False
        found = self._losses()
        for index, (name, loss) in enumerate(found):
            prefix = "" if name is None else f"{name}_"
            newly |= loss.attach(self.model, index, prefix)
        if newly:
            # A step traced before the statistics were attached would not
            # update them; rebuild the (lazily traced) step functions.
            for make in ("make_train_function", "make_test_function"):
                if getattr(self.model, make.replace("make_", ""), None) is not None:
                    getattr(self.model, make)(force=True)

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.schedule is None:
            return
        for name, loss in self._losses():
            fn = self.schedule.get(name) if isinstance(self.schedule, dict) else self.schedule
            if fn is None:
                continue
            old = loss.level
            new = fn(epoch, old)
            try:
                new = validate_level(new, loss.allow_negative_level)
            except ValueError as e:
                raise ValueError(
                    f"FloodLevelScheduler: schedule({epoch}, {old}) returned an invalid `level`: {e}"
                ) from None
            if new != old:
                loss.level = new
                if self.verbose:
                    where = f" ({name})" if name else ""
                    print(f"\nEpoch {epoch + 1}: FloodLevelScheduler sets the flood level{where} to {new:g}.")

    def get_config(self) -> dict[str, Any]:
        # Schedules are Python functions; like LearningRateScheduler, the
        # config records only what serialises.
        return {"verbose": self.verbose}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> FloodLevelScheduler:
        return cls(**config)
