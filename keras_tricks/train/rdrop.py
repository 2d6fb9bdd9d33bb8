"""R-Drop: two forward passes with independent dropout, and their divergence."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
from keras import ops, tree

from keras_tricks import _numerics, _validation
from keras_tricks._typing import Tensor
from keras_tricks.losses.global_pointer_kl import global_pointer_kl
from keras_tricks.train._chain import LossFn, StepContext
from keras_tricks.train.base import Trick

_NAMED = ("kl", "kl_logits", "global_pointer")


def symmetric_kl(p: Tensor, q: Tensor) -> Tensor:
    """KL(p||q) + KL(q||p) = sum_c (p - q)(log p - log q) over the last axis,
    averaged over the other non-batch axes (tokens): `(batch,)`, float32.
    `p`, `q` are probabilities (a softmax output); log is taken of
    max(p, tiny) so that a probability that underflowed to 0 stays finite."""
    p = ops.cast(p, "float32")
    q = ops.cast(q, "float32")
    tiny = float(_numerics.finfo("float32").tiny)
    d = ops.sum((p - q) * (ops.log(ops.maximum(p, tiny)) - ops.log(ops.maximum(q, tiny))), axis=-1)
    return _per_sample(d)


def symmetric_kl_from_logits(s: Tensor, t: Tensor) -> Tensor:
    """`symmetric_kl` of softmax(s) and softmax(t), from the logits (exact:
    log-softmax never underflows)."""
    ls = ops.log_softmax(ops.cast(s, "float32"), axis=-1)
    lt = ops.log_softmax(ops.cast(t, "float32"), axis=-1)
    return _per_sample(ops.sum((ops.exp(ls) - ops.exp(lt)) * (ls - lt), axis=-1))


def _per_sample(d: Tensor) -> Tensor:
    if len(d.shape) == 1:
        return d
    return ops.mean(ops.reshape(d, (ops.shape(d)[0], -1)), axis=-1)


def _divergence_fn(name: str) -> Callable[[Tensor, Tensor], Tensor]:
    return {
        "kl": symmetric_kl,
        "kl_logits": symmetric_kl_from_logits,
        "global_pointer": lambda s, t: ops.cast(global_pointer_kl(s, t), "float32"),
    }[name]


def _output_layer(model: keras.Model) -> keras.layers.Layer | None:
    inner = getattr(model, "model", model)
    names = list(getattr(inner, "output_names", None) or [])
    if len(names) != 1:
        return None
    try:
        return inner.get_layer(names[0])
    except ValueError:
        return None


def divergence_for_head(layer: keras.layers.Layer | None) -> str | None:
    """The divergence R-Drop uses for an output layer: "global_pointer" for
    the span heads, "kl" for a softmax output, "kl_logits" for a `Dense` head
    without activation feeding a loss `from_logits`, None if unknown."""
    from keras_tricks.layers._span_base import SpanScorer

    if layer is None:
        return None
    if isinstance(layer, SpanScorer):
        return "global_pointer"
    if isinstance(layer, keras.layers.Softmax):
        return "kl"
    activation = getattr(layer, "activation", None)
    name = getattr(activation, "__name__", None)
    if name == "softmax":
        return "kl"
    if name == "linear":
        return "kl_logits"
    return None


@keras.saving.register_keras_serializable(package="keras_tricks")
class RDrop(Trick):
    """R-Drop (Liang et al. 2021, "R-Drop: Regularized Dropout for Neural
    Networks"; Su Jianlin, https://kexue.fm/archives/8496).

    The batch goes twice through the model with dropout on; the two passes
    draw independent masks from the model's seed generators. The objective is

        0.5 * (L(pass 1) + L(pass 2)) + alpha / 4 * mean_batch D(p1, p2),
        D = KL(p1||p2) + KL(p2||p1)

    which is the paper's loss (NLL summed over the two passes plus
    alpha/2 * (KL12 + KL21)) divided by 2, so `alpha` means the paper's alpha
    (and bert4keras's). L is the compiled loss (flooded per pass when it is a
    `Flooding` loss). The logged `loss` is 0.5 * (L1 + L2); the metrics see
    pass 1.

    Args:
        alpha: weight of the divergence, >= 0 (the paper: 0.3 to 5 on text
            tasks; 4 in bert4keras's example).
        divergence: "auto" (from the output layer: `global_pointer_kl` for
            `GlobalPointer` / `EfficientGlobalPointer`, "kl" for a softmax
            output, "kl_logits" for a linear one), "kl" (probabilities),
            "kl_logits", "global_pointer", or a callable
            `(y_pred_1, y_pred_2) -> (batch,)` (any output structure).
            Token-level divergences are averaged over all positions
            (padding included); `global_pointer_kl` leaves masked spans out.

    Example:
    >>> from keras_tricks import train
    >>> train.RDrop(alpha=4.0)
    RDrop(alpha=4.0, divergence='auto')
    """

    kind = "loss"

    def __init__(self, alpha: float = 4.0, divergence: str | Callable[[Any, Any], Tensor] = "auto") -> None:
        self.alpha = _validation.check_float("alpha", alpha, minimum=0.0)
        if not callable(divergence):
            _validation.check_choice("divergence", divergence, ("auto",) + _NAMED)
        self.divergence = divergence
        self._fn: Callable[[Any, Any], Tensor] | None = None

    def bind(self, model: keras.Model) -> None:
        if callable(self.divergence):
            self._fn = self.divergence
            return
        name = self.divergence
        if name == "auto":
            layer = _output_layer(model)
            name = divergence_for_head(layer)
            if name is None:
                what = "a model with several outputs" if layer is None else f"the output layer {layer.name!r}"
                raise ValueError(
                    f"RDrop: cannot tell the divergence for {what}; pass `divergence=` one of "
                    f"{_NAMED} or a callable (y_pred_1, y_pred_2) -> (batch,)."
                )
        self._fn = _divergence_fn(name)

    def transform_loss(self, loss_fn: LossFn, context: StepContext) -> LossFn:
        fn = self._fn

        def rdrop(params, non_trainable, metrics, x, y, sample_weight):
            first, aux1 = loss_fn(params, non_trainable, metrics, x, y, sample_weight)
            second, aux2 = loss_fn(params, aux1["non_trainable"], aux1["metrics"], x, y, sample_weight)
            p1, p2 = aux1["y_pred"], aux2["y_pred"]
            if not callable(self.divergence):
                (p1,), (p2,) = tree.flatten(p1), tree.flatten(p2)
            d = ops.mean(ops.cast(fn(p1, p2), "float32"))
            aux = dict(
                aux1,
                non_trainable=aux2["non_trainable"],
                metrics=aux2["metrics"],
                loss=0.5 * (aux1["loss"] + aux2["loss"]),
            )
            return 0.5 * (first + second) + (self.alpha / 4.0) * d, aux

        return rdrop

    def get_config(self) -> dict[str, Any]:
        divergence = self.divergence
        if callable(divergence):
            divergence = keras.saving.serialize_keras_object(divergence)
        return {"alpha": self.alpha, "divergence": divergence}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> RDrop:
        config = dict(config)
        if isinstance(config.get("divergence"), dict):
            config["divergence"] = keras.saving.deserialize_keras_object(config["divergence"])
        return cls(**config)
