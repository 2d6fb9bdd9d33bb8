"""Post-processing of predictions, on the host (NumPy): CAN.

- `can_normalize`: CAN (Classification with Alternating Normalization) on an
  array of predicted probabilities.
- `CANPredictor`: a model's `predict` with CAN applied.
- `class_prior`: class frequencies of training labels (CAN's prior).
- `top_k_uncertainty`: the normalised top-k entropy CAN thresholds.
"""

from keras_tricks.postprocessing.can import CANPredictor, can_normalize, class_prior, top_k_uncertainty

__all__ = ["CANPredictor", "can_normalize", "class_prior", "top_k_uncertainty"]
