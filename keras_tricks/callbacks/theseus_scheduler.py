from __future__ import annotations

from typing import Any

import keras

from keras_tricks._validation import check_float, check_int
from keras_tricks.layers.theseus_replacement import theseus_modules


@keras.saving.register_keras_serializable(package="keras_tricks")
class TheseusScheduler(keras.callbacks.Callback):
    """Set the replacement rate p of every `TheseusReplacement` in the model
    before each training batch: the curriculum of BERT-of-Theseus,

        p_t = min(1, k * t + b),

    t the training step (Xu et al. 2020, arXiv:2002.02925, section 3.3);
    `slope=0` gives the constant rate p = b.

    t is read from `model.optimizer.iterations`, so the schedule resumes
    where it stopped: a second `fit()`, or a model loaded from `.keras` (the
    optimizer's step count saves with it), continues the curriculum instead
    of restarting it. `initial_step` shifts t (t = iterations - initial_step,
    floored at 0), e.g. to start the curriculum after a warm-up.

    Args:
        base_rate: b, in [0, 1].
        slope: k >= 0 (per step). The paper reaches p = 1 at about half of
            training: k = (1 - b) / (steps / 2).
        initial_step: an integer >= 0.
        verbose: 1 prints p at the end of each epoch.

    Examples:
    >>> import keras_tricks
    >>> schedule = keras_tricks.callbacks.TheseusScheduler(base_rate=0.5, slope=1e-3)
    >>> [schedule.rate_at(t) for t in (0, 100, 1000)]
    [0.5, 0.6, 1.0]
    """

    def __init__(
        self, base_rate: float = 0.5, slope: float = 0.0, initial_step: int = 0, verbose: int = 0
    ) -> None:
        super().__init__()
        self.base_rate = check_float("base_rate", base_rate, minimum=0.0, maximum=1.0)
        self.slope = check_float("slope", slope, minimum=0.0)
        self.initial_step = check_int("initial_step", initial_step, minimum=0)
        self.verbose = check_int("verbose", verbose, minimum=0)
        self.rate = self.base_rate

    def rate_at(self, step: int) -> float:
        """p at optimizer step `step`."""
        t = max(0, int(step) - self.initial_step)
        return min(1.0, round(self.slope * t + self.base_rate, 12))

    def _modules(self):
        modules = theseus_modules(self.model)
        if not modules:
            raise ValueError("TheseusScheduler: the model holds no keras_tricks.layers.TheseusReplacement.")
        return modules

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._found = self._modules()

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        rate = self.rate_at(int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)))
        if rate != self.rate or batch == 0:
            for module in self._found:
                module.replace_rate.assign(rate)
            self.rate = rate

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is not None:
            logs["replace_rate"] = self.rate
        if self.verbose:
            print(f"\nEpoch {epoch + 1}: TheseusScheduler replace_rate = {self.rate:g}.")

    def get_config(self) -> dict[str, Any]:
        return {
            "base_rate": self.base_rate,
            "slope": self.slope,
            "initial_step": self.initial_step,
            "verbose": self.verbose,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TheseusScheduler:
        return cls(**config)
