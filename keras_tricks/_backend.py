"""The few things `keras.ops` cannot express, for each of the three backends.

Everything backend-specific in keras_tricks lives behind the small functions
of this module, each written for TensorFlow, JAX and PyTorch.
"""

import keras
from keras import ops, tree


def name():
    return keras.backend.backend()


def value_and_grad(fn, *args):
    """Value of the scalar `fn(*args)` and its gradient with respect to `args`.

    `args` may be tensors or nested lists of tensors; the gradient has the same
    structure. Inputs that `fn` does not use get a zero gradient.
    """
    flat = [ops.convert_to_tensor(t) for t in tree.flatten(list(args))]

    def call(flat_values):
        return fn(*tree.pack_sequence_as(list(args), list(flat_values)))

    backend = name()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            for t in flat:
                tape.watch(t)
            value = call(flat)
        grads = tape.gradient(
            value, flat, unconnected_gradients=tf.UnconnectedGradients.ZERO
        )
    elif backend == "jax":
        import jax

        value, grads = jax.value_and_grad(call)(flat)
    elif backend == "torch":
        import torch

        flat = [t.detach().clone().requires_grad_(True) for t in flat]
        value = call(flat)
        grads = torch.autograd.grad(value, flat, allow_unused=True)
        grads = [
            torch.zeros_like(t) if g is None else g for t, g in zip(flat, grads)
        ]
        value = value.detach()
    else:
        raise NotImplementedError(f"Unsupported Keras backend {backend!r}.")
    return value, tree.pack_sequence_as(list(args), list(grads))


def list_devices():
    """Every device Keras can place work on, as `keras.device` names.

    `keras.distribution.list_devices` is not implemented for PyTorch, hence
    this function. CPU first, then each accelerator: `["cpu:0", "gpu:0", ...]`.
    """
    backend = name()
    devices = ["cpu:0"]
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_logical_devices("GPU")
        devices += [f"gpu:{i}" for i in range(len(gpus))]
    elif backend == "jax":
        import jax

        try:
            gpus = jax.devices("gpu")
        except RuntimeError:  # no GPU platform in this jaxlib
            gpus = []
        devices += [f"gpu:{i}" for i in range(len(gpus))]
    elif backend == "torch":
        import torch

        devices += [f"gpu:{i}" for i in range(torch.cuda.device_count())]
    return devices



def ema_update(averages, variables, momentum):
    """averages[i] <- momentum * averages[i] + (1 - momentum) * variables[i].

    `averages` are float32 `keras.Variable`s, `variables` Keras variables (or,
    inside a JAX `StatelessScope`, whatever they map to); `momentum` a scalar
    tensor. PyTorch runs it with multi-tensor (`_foreach`) kernels, a couple
    of launches for all variables instead of several per variable;
    TensorFlow and JAX compile the elementwise ops into the train step anyway.
    Same arithmetic, in the same order, on every backend.
    """
    c = 1.0 - momentum
    if name() == "torch":
        import torch

        targets = [a.value for a in averages]
        sources = [ops.cast(ops.convert_to_tensor(v), t.dtype) for v, t in zip(variables, targets)]
        m = ops.convert_to_tensor(momentum, "float32")
        with torch.no_grad():
            torch._foreach_mul_(targets, m)
            torch._foreach_add_(targets, torch._foreach_mul(sources, ops.convert_to_tensor(c)))
        return
    for avg, var in zip(averages, variables):
        avg.assign(momentum * avg + c * ops.cast(var, avg.dtype))
