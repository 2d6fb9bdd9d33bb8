"""Conditional Layer Normalization in place of a backbone's LayerNorms.

Why not a graph rewrite: keras_hub's backbones are Functional models whose
nodes are whole transformer blocks; the block's LayerNorms are sublayers
called inside the block's own `call` (BERT, RoBERTa and DeBERTa-v3 even
create them in `build`). `keras.models.clone_model(clone_function=...,
call_function=...)` therefore sees the blocks, never their LayerNorms; it
cannot add an input either (`input_tensors` must have the structure of
`model.input`); and assigning a new sublayer to a built block raises Keras's
"You cannot add new elements of state ... to a layer that is already built".
So the backbone is kept whole and its supported normalisation layers are
redirected, for the duration of each call and nowhere else, to
`ConditionalLayerNormalization` layers owned by `ConditionalBackbone`. No
keras_hub code is copied or patched at the class level, and the backbone's
config and weights stay those of an ordinary keras_hub backbone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import keras
import numpy as np

from keras_tricks import _validation
from keras_tricks._typing import Identifier, Tensor
from keras_tricks.layers.conditional_layer_normalization import ConditionalLayerNormalization

# keras_hub's own RMSNorm layers (keras_hub 0.32), recognised by name so that
# this module never imports keras_hub. Gemma's scales by (1 + scale).
_GEMMA_RMS = "keras_hub.src.models.gemma.rms_normalization.RMSNormalization"
_LLAMA_RMS = "keras_hub.src.models.llama.llama_layernorm.LlamaLayerNorm"
# Layers whose normalisation acts on a table shared by the whole batch, not on
# the tokens: a per-example condition cannot apply there. DeBERTa-v3's
# relative position embeddings (1, 2 * bucket_size, hidden) are normalised
# once per call, for every example at once.
_SHARED_BY_THE_BATCH = ("keras_hub.src.models.deberta_v3.relative_embedding.RelativeEmbedding",)


def _qualified_name(layer: keras.layers.Layer) -> str:
    cls = type(layer)
    return f"{cls.__module__}.{cls.__qualname__}"


def _last_axis_only(axis: Any) -> bool:
    return axis == -1 or (isinstance(axis, (list, tuple)) and list(axis) == [-1])


def _conversion(layer: keras.layers.Layer) -> tuple[dict[str, Any], list[np.ndarray]] | None:
    """The ConditionalLayerNormalization arguments that reproduce `layer`,
    and its weights in the order CLN creates `gamma` then `beta`; None for a
    layer this module does not convert."""
    if not layer.built:
        return None
    if isinstance(layer, keras.layers.LayerNormalization):
        if getattr(layer, "rms_scaling", False) or not (layer.center or layer.scale):
            return None
        if not _last_axis_only(layer.axis):
            return None
        weights = []
        if layer.scale:
            weights.append(keras.ops.convert_to_numpy(layer.gamma))
        if layer.center:
            weights.append(keras.ops.convert_to_numpy(layer.beta))
        args = {"epsilon": float(layer.epsilon), "center": bool(layer.center), "scale": bool(layer.scale)}
        return args, weights
    rms_classes = [_GEMMA_RMS, _LLAMA_RMS]
    name = _qualified_name(layer)
    is_keras_rms = hasattr(keras.layers, "RMSNormalization") and isinstance(
        layer, keras.layers.RMSNormalization
    )
    if is_keras_rms and not _last_axis_only(layer.axis):
        return None
    if is_keras_rms or name in rms_classes:
        scale = keras.ops.convert_to_numpy(layer.scale).astype("float64")
        if name == _GEMMA_RMS:
            scale = 1.0 + scale
        epsilon = layer.epsilon if layer.epsilon is not None else keras.config.epsilon()
        return {"epsilon": float(epsilon), "center": False, "scale": True, "rms": True}, [scale]
    return None


def _walk(layer: keras.layers.Layer, prefix: str, seen: set[int]) -> Iterator[tuple[str, keras.layers.Layer]]:
    """Every layer nested in `layer` once, with its path of layer names
    relative to `layer` ("transformer_layer_0/self_attention_layer_norm"),
    in a fixed order (attributes sorted by name, lists in order), so that a
    backbone rebuilt from its config gives the same paths."""
    found = []
    for attr in sorted(vars(layer)):
        value = vars(layer)[attr]
        items = (
            value.values()
            if isinstance(value, dict)
            else value
            if isinstance(value, (list, tuple))
            else [value]
        )
        for item in items:
            if isinstance(item, keras.layers.Layer) and id(item) not in seen:
                seen.add(id(item))
                found.append(item)
    for child in found:
        path = f"{prefix}{child.name}"
        yield path, child
        if _qualified_name(child) not in _SHARED_BY_THE_BATCH:
            yield from _walk(child, path + "/", seen)


def _normalization_layers(backbone: keras.layers.Layer) -> list[tuple[str, keras.layers.Layer]]:
    # Sorted by path: the attribute order differs between backends (PyTorch
    # keeps sublayers in `_modules`), and the conditional layers are saved in
    # this order, so a model saved on one backend loads on another.
    found = [(path, layer) for path, layer in _walk(backbone, "", {id(backbone)}) if _conversion(layer)]
    return sorted(found, key=lambda item: item[0])


def _select(
    backbone: keras.layers.Layer, layers: Sequence[str] | None
) -> list[tuple[str, keras.layers.Layer]]:
    """The (path, layer) pairs to convert; a clear error for a bad `layers`."""
    found = _normalization_layers(backbone)
    if layers is not None:
        if isinstance(layers, str) or not all(isinstance(p, str) for p in layers):
            raise TypeError(f"`layers` must be a list of layer paths or None, got {layers!r}.")
        available = dict(found)
        unknown = [p for p in layers if p not in available]
        if unknown or not layers:
            raise ValueError(
                f"`layers`: {unknown or 'an empty list'} are not supported normalisation layers of "
                f"the backbone; its supported ones are {list(available)}."
            )
        found = [(p, layer) for p, layer in found if p in set(layers)]
    if not found:
        raise ValueError(
            f"`backbone` ({type(backbone).__name__}) has no normalisation layer this function can "
            "convert (keras.layers.LayerNormalization over the last axis, keras.layers."
            "RMSNormalization, keras_hub's Gemma RMSNormalization and LlamaLayerNorm)."
        )
    return found


class _Converted:
    """The converted layers, held where Keras's tracking does not look: they
    belong to the backbone (and are saved with it), not to the wrapper."""

    def __init__(self, layers: list[keras.layers.Layer]) -> None:
        self.layers = layers


def _conditioned_call(cln: keras.layers.Layer, condition: Tensor) -> Callable[[Tensor], Tensor]:
    def call(inputs: Tensor) -> Tensor:
        return cln([inputs, condition])

    return call


@keras.saving.register_keras_serializable(package="keras_tricks")
class ConditionalBackbone(keras.Model):
    """A backbone whose LayerNorms are Conditional Layer Normalizations.

    The conditional text generation recipe of Su Jianlin, "基于Conditional
    Layer Normalization的条件文本生成" (2019, https://kexue.fm/archives/7124):
    every LayerNorm of a pretrained transformer becomes
    `ConditionalLayerNormalization`, its `gamma` and `beta` copied across and
    its condition kernels `W_g`, `W_b` at zero, so that the network starts
    as the pretrained one and learns how the condition (a class, a style, a
    sentence embedding) shifts each normalisation.

    Built by `swap_in_conditional_layer_norm` (which copies the backbone
    first); constructed directly it converts the `backbone` it is given.
    Called on the backbone's inputs plus `condition_name` (default
    `"condition"`, shape `(batch, condition_dim)`), it returns what the
    backbone returns (keras_hub: `{"sequence_output", ...}`), computed with
    every converted normalisation layer replaced by its conditional layer,
    for the duration of the call. Before training, and whatever the
    condition, the outputs are those of the backbone.

    Converted: `keras.layers.LayerNormalization` (normalising the last
    axis, not `rms_scaling`), `keras.layers.RMSNormalization` (last axis),
    and keras_hub's `RMSNormalization` (Gemma, `gamma = 1 + scale`) and
    `LlamaLayerNorm` (Llama). Other layers, unsupported normalisations
    included, run unchanged. The backbone keeps its original normalisation
    layers: frozen (`trainable=False`) and unused while this model runs, so
    the backbone's config, its weights and its `from_preset` checkpoint stay
    those of keras_hub.

    Args:
        backbone: a built Keras model (a keras_hub backbone) called on a dict
            of inputs.
        condition_dim: the size of the condition, a positive integer.
        layers: the paths (`conditioned_layers`) of the normalisation layers
            to convert, or None (default) for every supported one.
        hidden_units, hidden_activation: of every conditional layer (see
            `ConditionalLayerNormalization`): project the condition to
            `hidden_units` first, which saves parameters for a wide
            condition.
        condition_initializer: initializer of `W_g` and `W_b` (default
            zeros: the identity with the backbone at init).
        condition_name: the key of the condition among the inputs.
        **kwargs: base `Model` arguments (`name`, ...).

    Attributes:
        conditioned_layers: the paths of the converted layers, in the order
            of `conditional_norms` (the `ConditionalLayerNormalization`
            layers).
    """

    def __init__(
        self,
        backbone: keras.Model,
        condition_dim: int,
        layers: Sequence[str] | None = None,
        hidden_units: int | None = None,
        hidden_activation: Identifier | None = "linear",
        condition_initializer: Identifier = "zeros",
        condition_name: str = "condition",
        **kwargs: Any,
    ) -> None:
        if not isinstance(backbone, keras.layers.Layer) or not backbone.built:
            raise TypeError(
                f"`backbone` must be a built Keras model (a keras_hub backbone), got {type(backbone).__name__}."
            )
        condition_dim = _validation.check_int("condition_dim", condition_dim, minimum=1)
        _validation.check_type("condition_name", condition_name, str, "a string")
        kwargs.setdefault("dtype", backbone.dtype_policy)
        super().__init__(**kwargs)
        found = _select(backbone, layers)
        self.backbone = backbone
        self.condition_dim = condition_dim
        self.layer_paths = None if layers is None else list(layers)
        self.hidden_units = hidden_units
        self.hidden_activation = keras.activations.get(hidden_activation)
        self.condition_initializer = keras.initializers.get(condition_initializer)
        self.condition_name = condition_name
        self.conditioned_layers = [path for path, _ in found]
        self._originals = _Converted([layer for _, layer in found])
        norms = []
        for path, layer in found:
            args, weights = _conversion(layer)
            cln = ConditionalLayerNormalization(
                hidden_units=hidden_units,
                hidden_activation=hidden_activation,
                condition_initializer=condition_initializer,
                dtype=layer.dtype_policy,
                name="conditional_" + path.replace("/", "_"),
                **args,
            )
            hidden = int(weights[0].shape[-1])
            cln.build([(None, None, hidden), (None, condition_dim)])
            targets = [v for v in (cln.gamma, cln.beta) if v is not None]
            for variable, value in zip(targets, weights):
                variable.assign(value.astype(keras.backend.standardize_dtype(variable.dtype)))
            # Unused while this model runs (its copy does the work): out of the
            # trainable weights, so that no optimizer sees a None gradient.
            layer.trainable = False
            norms.append(cln)
        self.conditional_norms = norms
        self.built = True

    def call(self, inputs: dict[str, Tensor], training: bool | None = None) -> Any:
        if not isinstance(inputs, dict) or self.condition_name not in inputs:
            keys = list(inputs) if isinstance(inputs, dict) else type(inputs).__name__
            raise ValueError(
                f"{type(self).__name__} must be called on a dict of the backbone's inputs plus "
                f"{self.condition_name!r} (the condition); received {keys}."
            )
        inputs = dict(inputs)
        condition = inputs.pop(self.condition_name)
        if len(condition.shape) != 2 or (
            condition.shape[-1] is not None and condition.shape[-1] != self.condition_dim
        ):
            raise ValueError(
                f"`{self.condition_name}` must have shape (batch, condition_dim={self.condition_dim}), "
                f"got shape {tuple(condition.shape)}."
            )
        # Each converted layer's `call` is pointed at its conditional layer
        # for this call only (an instance attribute over the class's method),
        # and restored however the call ends.
        redirected = []
        try:
            for layer, cln in zip(self._originals.layers, self.conditional_norms):
                layer.call = _conditioned_call(cln, condition)
                redirected.append(layer)
            return self.backbone(inputs, training=training)
        finally:
            for layer in redirected:
                del layer.call

    def compute_output_spec(self, inputs: dict[str, Any], training: bool | None = None) -> Any:
        # What the backbone returns: the conditional layers keep every shape
        # and dtype. (Keras's default traces `call` on stand-in values, which
        # keras_hub's position embeddings refuse on JAX and PyTorch.)
        rest = {key: value for key, value in inputs.items() if key != self.condition_name}
        return self.backbone.compute_output_spec(rest)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "backbone": keras.saving.serialize_keras_object(self.backbone),
                "condition_dim": self.condition_dim,
                "layers": self.layer_paths,
                "hidden_units": self.hidden_units,
                "hidden_activation": keras.activations.serialize(self.hidden_activation),
                "condition_initializer": keras.initializers.serialize(self.condition_initializer),
                "condition_name": self.condition_name,
            }
        )
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ConditionalBackbone:
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)


def swap_in_conditional_layer_norm(
    backbone: keras.Model,
    condition_dim: int,
    *,
    layers: Sequence[str] | None = None,
    hidden_units: int | None = None,
    hidden_activation: Identifier | None = "linear",
    condition_name: str = "condition",
    name: str | None = None,
) -> ConditionalBackbone:
    """A copy of `backbone` with Conditional Layer Normalization in place of
    its LayerNorms, identical to `backbone` at init.

    The backbone is rebuilt from its config (`type(backbone).from_config`)
    and given its weights, so `backbone` itself is left as it was; the copy
    is wrapped in a `ConditionalBackbone`, whose conditional layers start
    from the copied `gamma` and `beta` with zero condition kernels. Train
    the result; it saves to `.keras` and loads back (with keras_hub
    imported, which registers the backbone's class).

    Args:
        backbone: a keras_hub backbone (`keras_hub.models.BertBackbone(...)`
            or `...from_preset(...)`) or a Keras model of the same kind.
        condition_dim: the size of the condition vector.
        layers, hidden_units, hidden_activation, condition_name: see
            `ConditionalBackbone`.
        name: the name of the returned model (default: the backbone's name
            with a `conditional_` prefix).

    Returns:
        A `ConditionalBackbone` called on `{**backbone_inputs, "condition":
        (batch, condition_dim)}`.
    """
    if not isinstance(backbone, keras.Model) or not backbone.built:
        raise TypeError(
            f"`backbone` must be a built Keras model (a keras_hub backbone), got {type(backbone).__name__}."
        )
    # The arguments are checked on `backbone` before the copy is made (the
    # copy has the same layer paths).
    _validation.check_int("condition_dim", condition_dim, minimum=1)
    _select(backbone, layers)
    copy = type(backbone).from_config(backbone.get_config())
    copy.set_weights(backbone.get_weights())
    return ConditionalBackbone(
        copy,
        condition_dim,
        layers=layers,
        hidden_units=hidden_units,
        hidden_activation=hidden_activation,
        condition_name=condition_name,
        name=name or f"conditional_{backbone.name}",
    )
