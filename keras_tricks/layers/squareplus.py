from __future__ import annotations

from typing import Any

import keras

from keras_tricks._typing import Shape, Tensor
from keras_tricks.activations import _validate_b, squareplus


@keras.saving.register_keras_serializable(package="keras_tricks")
class SquarePlus(keras.layers.Layer):
    """SquarePlus activation layer: y = (x + sqrt(x^2 + b)) / 2.

    A cheap smooth ReLU (Barron 2021, arXiv:2112.11687): one square root
    instead of softplus's exp and log. The layer wraps
    `keras_tricks.activations.squareplus`, which stays accurate over the whole
    finite range of every float dtype (see its docstring for how).

    Elementwise: it has no weights, keeps the shape, and passes a Keras mask
    through unchanged. Under `mixed_float16` / `mixed_bfloat16` it computes in
    float32 internally and returns the compute dtype.

    Args:
        b: curvature at zero, a finite real number > 0, Python or NumPy
            (default 4: f(0) = 1); `TypeError` for a wrong type (`bool`
            included), `ValueError` for a wrong value.
        **kwargs: base `Layer` arguments (`name`, `dtype`, ...).

    Input shape: any, empty ones included (an empty batch gives an empty
    output). Output shape: same as the input.

    Examples:
    >>> import keras, keras_tricks
    >>> model = keras.Sequential([
    ...     keras.Input((16,)),
    ...     keras.layers.Dense(32),
    ...     keras_tricks.layers.SquarePlus(b=4.0),
    ...     keras.layers.Dense(1),
    ... ])
    >>> tuple(model(keras.ops.ones((2, 16))).shape)
    (2, 1)
    """

    def __init__(self, b: float = 4.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.b = _validate_b(b)
        self.supports_masking = True
        self.built = True

    def call(self, inputs: Tensor) -> Tensor:
        return squareplus(inputs, b=self.b)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"b": self.b})
        return config
