"""Data shared by the flooding tests."""

import numpy as np


def regression_with_weights(seed, n, d):
    """float32 `(y_true, y_pred)` of shape `(n, d)` and per-sample weights in [0.2, 2]."""
    rng = np.random.default_rng(seed)
    y_true = rng.normal(size=(n, d)).astype("float32")
    y_pred = rng.normal(size=(n, d)).astype("float32")
    weight = rng.uniform(0.2, 2.0, size=(n,)).astype("float32")
    return y_true, y_pred, weight
