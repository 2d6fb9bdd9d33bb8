"""CAN, Classification with Alternating Normalization: a host-side
post-processing of predicted class probabilities."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from keras_tricks._validation import check_bool, check_float, check_int, check_type

__all__ = ["CANPredictor", "can_normalize", "class_prior", "top_k_uncertainty"]

# Elements of the (uncertain, reference + 1, classes) block processed at once:
# bounds the memory of `can_normalize` (128 MiB of float64) on large inputs.
_CHUNK_ELEMENTS = 1 << 24


def _row_sum_tolerance(dtype: np.dtype, classes: int) -> float:
    # A softmax computed in `dtype` sums to 1 within about `classes` roundings.
    eps = 2.0**-10 if dtype == np.float16 else float(np.finfo(dtype).eps) if dtype.kind == "f" else 2.0**-52
    return max(1e-6, 8.0 * classes * eps)


def _check_probabilities(
    name: str, probs: Any, *, classes: int | None = None, allow_empty: bool = True
) -> np.ndarray:
    """`probs` as a float64 (N, m) array of rows on the simplex, or an error."""
    array = np.asarray(probs)
    if array.dtype == object or not (array.dtype.kind in "fiu" or array.dtype.name == "bfloat16"):
        raise TypeError(f"`{name}` must be an array of real numbers, got dtype {array.dtype}.")
    if array.ndim != 2:
        raise ValueError(f"`{name}` must be a 2-D array (samples, classes), got shape {array.shape}.")
    if array.shape[1] < 2:
        raise ValueError(f"`{name}` must have at least 2 classes (columns), got shape {array.shape}.")
    if classes is not None and array.shape[1] != classes:
        raise ValueError(
            f"`{name}` must have {classes} classes (columns) like `probs`, got shape {array.shape}."
        )
    if not allow_empty and array.shape[0] == 0:
        raise ValueError(f"`{name}` must have at least one row, got shape {array.shape}.")
    tol = _row_sum_tolerance(
        np.dtype("float16") if array.dtype.name == "bfloat16" else array.dtype, array.shape[1]
    )
    if array.dtype.name == "bfloat16":
        tol = max(tol, 8.0 * array.shape[1] * 2.0**-7)
    values = array.astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError(f"`{name}` must be finite (NaN or inf found).")
    if np.any(values < 0):
        raise ValueError(f"`{name}` must be non-negative probabilities, min is {values.min()!r}.")
    sums = values.sum(axis=1)
    bad = np.abs(sums - 1.0) > tol
    if np.any(bad):
        row = int(np.argmax(bad))
        raise ValueError(
            f"`{name}` rows must sum to 1 (within {tol:.2g}); row {row} sums to {sums[row]!r}. "
            "Pass probabilities (a softmax output), not logits."
        )
    return values


def _check_prior(prior: Any, classes: int) -> np.ndarray:
    values = _check_probabilities("prior", np.asarray(prior)[None] if np.ndim(prior) == 1 else prior)
    if values.shape != (1, classes):
        raise ValueError(
            f"`prior` must be a vector of {classes} class probabilities, got shape {np.shape(prior)}."
        )
    if np.any(values <= 0):
        raise ValueError(
            "`prior` must be > 0 for every class (a zero prior erases the class from every re-normalised "
            "prediction); use `class_prior(labels, num_classes, pseudo_count=1)`."
        )
    return values[0] / values[0].sum()


def _check_top_k(top_k: Any, classes: int) -> int:
    top_k = check_int("top_k", top_k, minimum=2)
    if top_k > classes:
        raise ValueError(f"`top_k` must be <= the number of classes ({classes}), got {top_k}.")
    return top_k


def _check_settings(threshold: Any, top_k: Any, alpha: Any, iters: Any, classes: int) -> tuple:
    """CAN's four settings, checked (shared by `can_normalize` and `CANPredictor`,
    which checks them at construction so a bad one fails before any prediction)."""
    return (
        check_float("threshold", threshold, minimum=0.0, maximum=1.0, min_inclusive=False),
        _check_top_k(top_k, classes),
        check_float("alpha", alpha, minimum=0.0, min_inclusive=False),
        check_int("iters", iters, minimum=1),
    )


def _uncertainty(values: np.ndarray, top_k: int) -> np.ndarray:
    top = np.sort(values, axis=1)[:, -top_k:]
    top = top / top.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(top > 0, top * np.log(np.where(top > 0, top, 1.0)), 0.0)
    # `+ 0.0` turns the -0.0 of a one-hot row into 0.0.
    return -terms.sum(axis=1) / math.log(top_k) + 0.0


def top_k_uncertainty(probs: ArrayLike, top_k: int = 3) -> np.ndarray:
    """The uncertainty CAN uses: the entropy of the `top_k` largest
    probabilities, renormalised to sum to 1, divided by `log(top_k)`.

        u(p) = -sum_{i in top-k} q_i log q_i / log k,   q = top-k of p / their sum

    0 for a prediction with one class at probability 1 (0 log 0 = 0), 1 when
    the top `k` probabilities are equal.

    Args:
        probs: `(samples, classes)` probabilities, rows summing to 1.
        top_k: k, an integer in [2, classes] (3 in the post).

    Returns:
        A float64 array of shape `(samples,)`, values in [0, 1].

    Examples:
    >>> import numpy as np
    >>> from keras_tricks.postprocessing import top_k_uncertainty
    >>> top_k_uncertainty(np.array([[1.0, 0.0, 0.0], [0.5, 0.25, 0.25]]), top_k=2).round(4).tolist()
    [0.0, 0.9183]
    """
    values = _check_probabilities("probs", probs)
    return _uncertainty(values, _check_top_k(top_k, values.shape[1]))


def class_prior(labels: ArrayLike, num_classes: int, pseudo_count: float = 0.0) -> np.ndarray:
    """Class frequencies of integer `labels` (the prior CAN matches):
    `(count_c + pseudo_count) / (N + num_classes * pseudo_count)`.

    Args:
        labels: integer class ids in [0, num_classes), any shape.
        num_classes: the number of classes, >= 2.
        pseudo_count: added to every count (>= 0); a class that never occurs
            gets prior 0 without it, which `can_normalize` refuses.

    Returns:
        A float64 vector of shape `(num_classes,)` summing to 1.

    Examples:
    >>> from keras_tricks.postprocessing import class_prior
    >>> class_prior([0, 0, 1, 2], 3).tolist()
    [0.5, 0.25, 0.25]
    """
    num_classes = check_int("num_classes", num_classes, minimum=2)
    pseudo_count = check_float("pseudo_count", pseudo_count, minimum=0.0)
    labels = np.asarray(labels)
    if labels.dtype == bool or labels.dtype.kind not in "iu":
        raise TypeError(f"`labels` must be integer class ids, got dtype {labels.dtype}.")
    labels = labels.reshape(-1)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"`labels` must lie in [0, {num_classes}), got values in [{labels.min()}, {labels.max()}]."
        )
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64) + pseudo_count
    if counts.sum() == 0:
        raise ValueError("`labels` is empty and `pseudo_count` is 0: no prior can be estimated.")
    return counts / counts.sum()


def _alternate(
    reference: np.ndarray, uncertain: np.ndarray, prior: np.ndarray, alpha: float, iters: int
) -> np.ndarray:
    """The last row of the alternating normalisation of [reference; y] for
    every row y of `uncertain` (float64, vectorised over `uncertain`)."""
    n, m = reference.shape
    out = np.empty_like(uncertain)
    chunk = max(1, _CHUNK_ELEMENTS // ((n + 1) * m))
    for start in range(0, uncertain.shape[0], chunk):
        ys = uncertain[start : start + chunk]
        block = np.concatenate([np.broadcast_to(reference, (ys.shape[0], n, m)), ys[:, None, :]], axis=1)
        for _ in range(iters):
            # The order of the post's reference code: power, columns to the
            # prior (divide by the column sum, multiply by the prior), rows to 1.
            block = block**alpha
            col = block.sum(axis=1, keepdims=True)
            # A column that is 0 everywhere stays 0 (0 / 0 would be NaN).
            block = np.divide(block, col, out=np.zeros_like(block), where=col > 0) * prior
            block = block / block.sum(axis=2, keepdims=True)
        out[start : start + chunk] = block[:, -1, :]
    return out


def can_normalize(
    probs: ArrayLike,
    prior: ArrayLike,
    *,
    reference: ArrayLike | None = None,
    threshold: float = 0.9,
    top_k: int = 3,
    alpha: float = 1.0,
    iters: int = 1,
) -> np.ndarray:
    """CAN: re-normalise uncertain predictions against confident ones and the prior.

    Jia et al. 2021, "When in Doubt: Improving Classification Performance with
    Alternating Normalization" (arXiv:2109.13449); Su Jianlin, "CAN：借助先验分布
    提升分类性能的简单后处理技巧" (kexue.fm/archives/8728), whose reference code this
    follows step for step.

    1. Uncertainty of each row: `top_k_uncertainty(p, top_k)`. Rows with
       uncertainty `< threshold` are confident, the others (`>= threshold`)
       uncertain.
    2. For each uncertain row y, stack the n confident reference rows A and y
       into L0 = [A; y] of shape (n + 1, m), and repeat `iters` times:

           L <- L ** alpha                       (elementwise power)
           L <- L / colsum(L) * prior            (column step: column j sums to prior_j)
           L <- L / rowsum(L)                    (row step: every row sums to 1)

    3. The corrected prediction is the last row of L. Each uncertain row is
       processed on its own (against A, never against the other uncertain
       rows); confident rows are returned unchanged, bit for bit.

    With a uniform prior, `alpha=1` and `iters=1` the result is
    `y_j / c_j` renormalised, where `c_j = y_j + sum_i A_ij`: a class the
    confident rows already claim often is discounted.

    Args:
        probs: `(N, m)` predicted probabilities (rows on the simplex, m >= 2);
            any float dtype, computed in float64.
        prior: `(m,)` class prior, > 0, summing to 1: class frequencies of the
            training labels (`class_prior`).
        reference: optional `(R, m)` probabilities whose confident rows form A
            (the paper: high-confidence validation predictions). Default: the
            confident rows of `probs` itself (the post).
        threshold: tau in (0, 1] (0.9 in the post).
        top_k: k of the uncertainty, in [2, m] (3 in the post).
        alpha: the power, > 0 (1 in the post).
        iters: the number of alternations, >= 1 (1 in the post).

    Returns:
        A float array of the shape of `probs`, in its dtype (float64 for
        integer input). If no row is confident, there is nothing to
        normalise against and `probs` is returned unchanged.

    Raises:
        TypeError / ValueError: naming the argument, for non-numeric arrays,
            wrong shapes, rows that are negative or do not sum to 1, a prior
            with a zero, tau outside (0, 1], k outside [2, m].

    Examples:
    >>> import numpy as np
    >>> from keras_tricks.postprocessing import can_normalize
    >>> probs = np.array([[0.98, 0.01, 0.01], [0.97, 0.02, 0.01], [0.4, 0.35, 0.25]])
    >>> out = can_normalize(probs, prior=[1 / 3, 1 / 3, 1 / 3], threshold=0.9, top_k=3)
    >>> tuple(out.shape), out[2].round(3).tolist()
    ((3, 3), [0.084, 0.457, 0.459])
    """
    values = _check_probabilities("probs", probs)
    classes = values.shape[1]
    prior_values = _check_prior(prior, classes)
    threshold, top_k, alpha, iters = _check_settings(threshold, top_k, alpha, iters, classes)
    if reference is None:
        ref_values = values
    else:
        ref_values = _check_probabilities("reference", reference, classes=classes)

    array = np.asarray(probs)
    out_dtype = (
        array.dtype if array.dtype.kind == "f" or array.dtype.name == "bfloat16" else np.dtype("float64")
    )
    result = np.array(array, dtype=out_dtype, copy=True)
    uncertain = _uncertainty(values, top_k) >= threshold
    confident_ref = ref_values[_uncertainty(ref_values, top_k) < threshold]
    if not uncertain.any() or confident_ref.shape[0] == 0:
        return result
    corrected = _alternate(confident_ref, values[uncertain], prior_values, alpha, iters)
    result[uncertain] = corrected.astype(out_dtype)
    return result


class CANPredictor:
    """A model's predictions with CAN applied: `predict(x)` runs the model and
    re-normalises its uncertain predictions (see `can_normalize`).

    Post-processing only: the model is not changed, nothing is trained, and
    the result depends on the batch of predictions it is given (the
    confident rows of the same `predict` call, unless `reference` is set).

    Args:
        model: a Keras model (anything with `predict(x, batch_size=...,
            verbose=...)`) whose output is `(N, m)` class probabilities, or
            logits with `from_logits=True`.
        prior: the class prior, `(m,)` (`class_prior(train_labels, m)`).
        reference: optional fixed reference predictions, `(R, m)`
            probabilities (for example the model's predictions on a
            validation set: `model.predict(x_val)`); their confident rows are
            used for every call. Default: the confident rows of each call.
        threshold, top_k, alpha, iters: as in `can_normalize`.
        from_logits: the model outputs logits; a float64 softmax is applied
            first.

    Examples:
    >>> import keras, numpy as np
    >>> from keras_tricks.postprocessing import CANPredictor
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    >>> can = CANPredictor(model, prior=[0.5, 0.25, 0.25], top_k=2)
    >>> tuple(can.predict(np.ones((5, 4), "float32")).shape)
    (5, 3)
    """

    def __init__(
        self,
        model: Any,
        prior: ArrayLike,
        *,
        reference: ArrayLike | None = None,
        threshold: float = 0.9,
        top_k: int = 3,
        alpha: float = 1.0,
        iters: int = 1,
        from_logits: bool = False,
    ) -> None:
        if not callable(getattr(model, "predict", None)):
            check_type("model", model, (), "a Keras model (an object with `predict`)")
        self.model = model
        self.from_logits = check_bool("from_logits", from_logits)
        prior_array = np.asarray(prior, dtype=np.float64) if np.ndim(prior) == 1 else np.asarray(prior)
        if prior_array.ndim != 1:
            raise ValueError(
                f"`prior` must be a vector of class probabilities, got shape {prior_array.shape}."
            )
        self.prior = _check_prior(prior_array, prior_array.shape[0])
        classes = self.prior.shape[0]
        self.threshold, self.top_k, self.alpha, self.iters = _check_settings(
            threshold, top_k, alpha, iters, classes
        )
        self.reference = (
            None if reference is None else _check_probabilities("reference", reference, classes=classes)
        )

    def _probabilities(self, outputs: Any) -> np.ndarray:
        outputs = np.asarray(outputs, dtype=np.float64)
        if self.from_logits:
            shifted = outputs - outputs.max(axis=-1, keepdims=True)
            exp = np.exp(shifted)
            outputs = exp / exp.sum(axis=-1, keepdims=True)
        return outputs

    def predict(self, x: Any, batch_size: int | None = None, verbose: Any = 0) -> np.ndarray:
        """The model's probabilities for `x`, with CAN applied (float64, `(N, m)`)."""
        probs = self._probabilities(self.model.predict(x, batch_size=batch_size, verbose=verbose))
        return can_normalize(
            probs,
            self.prior,
            reference=self.reference,
            threshold=self.threshold,
            top_k=self.top_k,
            alpha=self.alpha,
            iters=self.iters,
        )

    def predict_classes(self, x: Any, batch_size: int | None = None, verbose: Any = 0) -> np.ndarray:
        """The argmax of `predict(x)`: one class id per sample (int64)."""
        return self.predict(x, batch_size=batch_size, verbose=verbose).argmax(axis=-1)
