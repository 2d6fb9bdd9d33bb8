"""Type aliases of the package's annotations (see docs/design-notes.md,
"Type hints").

Keras 3 has no public tensor type: a tensor argument may be a TensorFlow,
JAX or PyTorch tensor, a NumPy array or anything `keras.ops.convert_to_tensor`
takes, so `Tensor` is `Any` and documents intent only. The aliases are
ordinary module attributes (they run on Python 3.10, without `TypeAlias`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras

__all__ = ["DTypeLike", "Identifier", "LossLike", "Shape", "Tensor"]

#: A backend tensor (TensorFlow, JAX, PyTorch) or a NumPy array.
Tensor = Any

#: A static shape, `None` for an unknown axis (what Keras passes to `build`
#: and `compute_output_shape`).
Shape = tuple[int | None, ...]

#: A dtype name such as `"float32"`, or None for the default.
DTypeLike = str | None

#: What `keras.initializers.get` / `regularizers.get` / `constraints.get` /
#: `activations.get` take: a registered name, a serialised config, or the
#: object (a callable) itself.
Identifier = str | dict[str, Any] | Callable[..., Any]

#: What the flooding losses wrap: a `keras.losses.Loss` (object or class), a
#: loss function `fn(y_true, y_pred)`, a Keras loss name or its config.
LossLike = keras.losses.Loss | type[keras.losses.Loss] | Callable[..., Any] | str | dict[str, Any]
