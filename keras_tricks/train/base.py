"""`Trick`: the base of every train-step trick, and finding the embedding variable."""

from __future__ import annotations

from typing import Any

import keras

from keras_tricks.train._chain import GradFn, LossFn, StepContext


class Trick:
    """A transformation of the train step (see `keras_tricks.train`).

    A subclass sets `kind` to `"loss"` and implements `transform_loss`, or
    to `"gradient"` and implements `transform_gradients`; `adversarial`
    marks the tricks of which one at most may be used (they perturb the same
    embedding); `bind(model)` resolves names against the model once, before
    the first step. `get_config` / `from_config` make it part of a saved
    `TrickModel`.
    """

    kind: str = "loss"
    adversarial: bool = False

    def bind(self, model: keras.Model) -> None:
        return None

    def transform_loss(self, loss_fn: LossFn, context: StepContext) -> LossFn:
        raise NotImplementedError

    def transform_gradients(self, grad_fn: GradFn, context: StepContext) -> GradFn:
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Trick:
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def _walk(layer):
    yield layer
    for child in getattr(layer, "layers", None) or []:
        yield from _walk(child)
    for attr in ("model", "backbone"):
        child = getattr(layer, attr, None)
        if isinstance(child, keras.layers.Layer) and child is not layer:
            yield from _walk(child)


def find_variable(model: keras.Model, embedding: str | keras.layers.Layer | keras.Variable) -> keras.Variable:
    """The one trainable variable that `embedding` names in `model`.

    `embedding`: a `keras.Variable`; its path (`"token_embedding/embeddings"`);
    a layer or a layer name anywhere in the model (nested models and keras_hub
    backbones included), whose `embeddings` variable (Keras's `Embedding`,
    keras_hub's token embeddings) or only trainable variable is taken.
    """
    variables = model.trainable_variables
    if isinstance(embedding, keras.Variable):
        if any(v is embedding for v in variables):
            return embedding
        raise ValueError(
            f"`embedding`: the variable {embedding.path!r} is not a trainable variable of the model."
        )
    layer = embedding
    if isinstance(embedding, str):
        by_path = [v for v in variables if v.path == embedding]
        if by_path:
            return by_path[0]
        layer = next((lay for lay in _walk(model) if lay.name == embedding), None)
        if layer is None:
            raise ValueError(
                f"`embedding` names {embedding!r}, which is neither a trainable variable path nor "
                f"a layer of the model; variables: {[v.path for v in variables][:20]}."
            )
    if not isinstance(layer, keras.layers.Layer):
        raise TypeError(
            "`embedding` must be a layer name, a variable path, a layer or a keras.Variable; "
            f"got {type(embedding).__name__}."
        )
    own = getattr(layer, "embeddings", None)
    if isinstance(own, keras.Variable) and own.trainable:
        return find_variable(model, own)
    candidates = layer.trainable_weights
    if len(candidates) != 1:
        raise ValueError(
            f"`embedding`: the layer {layer.name!r} has {len(candidates)} trainable variables "
            f"({[v.path for v in candidates]}) and no `embeddings`; name the variable by its path."
        )
    return find_variable(model, candidates[0])
