"""`TrickModel`: a Keras model trained through a chain of train-step tricks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from keras_tricks.train import _step
from keras_tricks.train.base import Trick


def _check_tricks(tricks: Any) -> list[Trick]:
    if isinstance(tricks, Trick):
        tricks = [tricks]
    if not isinstance(tricks, (list, tuple)):
        raise TypeError(f"`tricks` must be a list of keras_tricks.train tricks; got {type(tricks).__name__}.")
    for t in tricks:
        if not isinstance(t, Trick):
            raise TypeError(
                f"`tricks` must hold keras_tricks.train.Trick objects (FGM, PGD, GradientPenalty, "
                f"RDrop, ...); got {t!r} of type {type(t).__name__}."
            )
    adversarial = [type(t).__name__ for t in tricks if t.adversarial]
    if len(adversarial) > 1:
        raise ValueError(
            f"`tricks` holds {len(adversarial)} adversarial methods {adversarial}: they perturb or "
            "penalise the same embedding for the same purpose, and stacking them has no defined "
            "meaning; use one."
        )
    kinds = [type(t).__name__ for t in tricks]
    duplicates = sorted({k for k in kinds if kinds.count(k) > 1})
    if duplicates:
        raise ValueError(f"`tricks` holds {duplicates} more than once; use each trick once.")
    return list(tricks)


@keras.saving.register_keras_serializable(package="keras_tricks")
class TrickModel(keras.Model):
    """Wraps a Keras model and trains it through `tricks` (see
    `keras_tricks.train` for the order they compose in).

    Keeps `compile()` / `fit()` / `evaluate()` / `predict()` / `save()` of
    Keras: only the train step changes, on TensorFlow, JAX and PyTorch. The
    compiled loss (`Flooding` included), the optimizer (EMA wrapper,
    `gradient_accumulation_steps`, `LossScaleOptimizer` under
    `mixed_float16`) and the metrics are Keras's. `tricks=[]` is Keras's own
    step computed functionally (the same update).

    Not combinable: a `MultiTaskModel` (it owns its train step: its
    gradient-based strategies take one backward pass per task, and its
    loss-based ones update their state inside the loss, which R-Drop and the
    adversarial passes would run several times) raises `TypeError`; two
    adversarial tricks raise `ValueError`.

    Args:
        model: the `keras.Model` to train (functional, subclassed, or a
            keras_hub task).
        tricks: a list of `keras_tricks.train` tricks.
        **kwargs: base `keras.Model` arguments (`name`).

    Example:
    >>> import keras, numpy as np
    >>> from keras_tricks import train
    >>> x = keras.Input((4,), dtype="int32")
    >>> h = keras.layers.Embedding(10, 8, name="emb")(x)
    >>> h = keras.layers.Dropout(0.1)(keras.layers.GlobalAveragePooling1D()(h))
    >>> out = keras.layers.Dense(3, activation="softmax")(h)
    >>> model = train.TrickModel(keras.Model(x, out),
    ...                          tricks=[train.RDrop(alpha=4.0), train.FGM("emb", epsilon=0.5)])
    >>> model.compile("adam", "sparse_categorical_crossentropy")
    >>> history = model.fit(np.ones((4, 4), "int32"), np.zeros(4), epochs=2, verbose=0)
    >>> len(history.history["loss"])
    2
    """

    def __init__(self, model: keras.Model, tricks: Sequence[Trick] = (), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not isinstance(model, keras.Model):
            raise TypeError(f"`model` must be a keras.Model; got {type(model).__name__}.")
        from keras_tricks.multitask import MultiTaskModel

        if isinstance(model, MultiTaskModel):
            raise TypeError(
                "`model` is a MultiTaskModel, which owns its train step: gradient-based strategies "
                "take one backward pass per task, and loss-based ones update their state inside the "
                "loss, which R-Drop and adversarial passes would run several times per step. "
                "TrickModel cannot wrap it (train tricks and multi-task strategies do not compose yet)."
            )
        self.model = model
        self.tricks = _check_tricks(tricks)
        self._bound = False
        if getattr(model, "output_names", None):
            self.output_names = list(model.output_names)
        # The wrapped model's variables are this model's: built when it is.
        self.built = bool(model.built)

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        return self.model(inputs, training=training)

    def build(self, input_shape: Any = None) -> None:
        if not self.model.built and input_shape is not None:
            self.model.build(input_shape)
        self.built = True

    def _bind(self) -> None:
        if not self._bound:
            for t in self.tricks:
                t.bind(self)
            self._bound = True

    def train_step(self, *args: Any) -> Any:
        self._bind()
        return _step.train_step(self, self.tricks, *args)

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": keras.saving.serialize_keras_object(self.model),
            "tricks": [keras.saving.serialize_keras_object(t) for t in self.tricks],
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TrickModel:
        config = dict(config)
        model = keras.saving.deserialize_keras_object(config.pop("model"))
        tricks = [keras.saving.deserialize_keras_object(t) for t in config.pop("tricks", [])]
        return cls(model, tricks=tricks, **config)
