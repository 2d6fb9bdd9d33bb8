from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from keras_tricks import _backend, _validation
from keras_tricks._typing import Tensor
from keras_tricks.layers import crf_ops
from keras_tricks.layers.conditional_random_field import ConditionalRandomField


@keras.saving.register_keras_serializable(package="keras_tricks")
class CRFLoss(keras.losses.Loss):
    """Negative log-likelihood of a linear-chain CRF, from integer tags.

    Per sample, `log Z - s(y)` (see `layers.ConditionalRandomField` for the
    score s and Lafferty et al. 2001 / https://kexue.fm/archives/5542), by
    the forward algorithm in log space in float32, over the valid positions:
    those whose emissions are not `MASK_VALUE` (the layer writes it into
    padded positions) and whose tag is not `TAG_PADDING` (-1). A sample
    without valid positions has loss 0. Then the Keras `reduction` (the
    mean over the batch by default, `sample_weight` per sample).

    The loss reads the transitions of the `crf` layer it is given, so the
    layer's weights get their gradients through it. Saving: the config
    keeps the layer's name only; a model loaded from `.keras` has identical
    outputs and weights, and its loss must be re-created with
    `CRFLoss(loaded.get_layer(name))` and `compile()` before training (the
    loaded loss says so if used unbound).

    Args:
        crf: the `ConditionalRandomField` whose output is `y_pred`.
        reduction, name: as for every Keras loss.

    Labels: int `(batch, seq_len)` (or `(batch, seq_len, 1)`) tags in
    `[0, num_tags)`, -1 for padding. Out-of-range tags are a `ValueError`
    when the loss runs eagerly; in a compiled step they are not checked.

    Examples:
    >>> import numpy as np, keras_tricks
    >>> crf = keras_tricks.layers.ConditionalRandomField()
    >>> emissions = crf(np.zeros((2, 3, 4), "float32"))
    >>> loss = keras_tricks.losses.CRFLoss(crf)
    >>> tuple(loss(np.array([[0, 1, 2], [3, 3, -1]]), emissions).shape)
    ()
    """

    def __init__(
        self,
        crf: ConditionalRandomField | None = None,
        reduction: str = "sum_over_batch_size",
        name: str = "crf_loss",
        *,
        crf_name: str | None = None,
    ) -> None:
        super().__init__(reduction=reduction, name=name)
        if crf is not None:
            _validation.check_type("crf", crf, ConditionalRandomField, "a ConditionalRandomField layer")
            crf_name = crf.name
        self.crf = crf
        self.crf_name = crf_name

    def call(self, y_true: Tensor, y_pred: Tensor) -> Tensor:
        if self.crf is None:
            raise ValueError(
                "This CRFLoss is not bound to a ConditionalRandomField (it was loaded from a "
                f"config, which keeps only the layer name {self.crf_name!r}); re-compile with "
                f"`CRFLoss(model.get_layer({self.crf_name!r}))`."
            )
        y_pred = ops.convert_to_tensor(y_pred)
        y_true = ops.convert_to_tensor(y_true)
        if len(y_true.shape) == 3 and y_true.shape[-1] == 1:
            y_true = ops.squeeze(y_true, axis=-1)
        true_shape, pred_shape = tuple(y_true.shape), tuple(y_pred.shape)
        if len(true_shape) != 2 or any(
            a is not None and b is not None and a != b for a, b in zip(true_shape, pred_shape[:2])
        ):
            raise ValueError(
                "`y_true` must be integer tags of shape (batch, seq_len) matching `y_pred` "
                f"{pred_shape}, got shape {true_shape}."
            )
        num_tags = pred_shape[-1]
        values = _backend.eager_numpy(y_true)
        if values is not None and values.size:
            bad = (values != np.round(values)) | (values < crf_ops.TAG_PADDING) | (values >= num_tags)
            if bad.any():
                raise ValueError(
                    f"`y_true` must hold tags in [0, {num_tags}) or {crf_ops.TAG_PADDING} for padding, "
                    f"got {values[bad].ravel()[0]!r}."
                )
        trans, _, start, end = self.crf._args()
        return crf_ops.crf_nll(y_pred, ops.cast(y_true, "int32"), trans, None, start, end)

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "reduction": self.reduction, "crf_name": self.crf_name}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> CRFLoss:
        config = dict(config)
        config.pop("crf", None)
        return cls(**config)
