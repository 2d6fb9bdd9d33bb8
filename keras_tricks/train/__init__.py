"""Train-step tricks that compose: adversarial training, R-Drop, gradient penalty.

`TrickModel(model, tricks=[...])` trains `model` through a chain of tricks.
Each trick rewrites one of two functions of the step (see
`keras_tricks.train._chain`):

    loss_fn  (params, state) -> (objective, aux)         <- loss tricks: RDrop, GradientPenalty
    grad_fn  (params, state) -> (objective, grads, aux)  <- gradient tricks: FGM, PGD

Loss tricks wrap the compiled loss in the order given, the gradient of the
result is taken once (times the loss scale), then the gradient tricks wrap
that in the order given; the optimizer (EMA, gradient accumulation, loss
scaling) applies the result. Docs: docs/training-tricks.md.
"""

from keras_tricks.train.adversarial import FGM, PGD, GradientPenalty
from keras_tricks.train.base import Trick, find_variable
from keras_tricks.train.rdrop import RDrop, divergence_for_head, symmetric_kl, symmetric_kl_from_logits
from keras_tricks.train.trick_model import TrickModel

__all__ = [
    "Trick",
    "TrickModel",
    "FGM",
    "PGD",
    "GradientPenalty",
    "RDrop",
    "find_variable",
    "divergence_for_head",
    "symmetric_kl",
    "symmetric_kl_from_logits",
]
