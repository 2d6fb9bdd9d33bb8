"""The few things `keras.ops` cannot express, for each of the three backends.

Everything backend-specific in keras_tricks lives behind the small functions
of this module, each written for TensorFlow, JAX and PyTorch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
from keras import ops, tree

from keras_tricks._typing import Tensor


def name() -> str:
    return keras.backend.backend()


def value_and_grad(fn: Callable[..., Tensor], *args: Any) -> tuple[Tensor, list[Any]]:
    """Value of the scalar `fn(*args)` and its gradient with respect to `args`.

    `args` may be tensors or nested lists of tensors; the gradient has the same
    structure: a list with one entry per argument (`_, (g,) = value_and_grad(f, x)`
    for one argument). Inputs that `fn` does not use get a zero gradient.
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
        grads = tape.gradient(value, flat, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    elif backend == "jax":
        import jax

        value, grads = jax.value_and_grad(call)(flat)
    elif backend == "torch":
        import torch

        flat = [t.detach().clone().requires_grad_(True) for t in flat]
        value = call(flat)
        grads = torch.autograd.grad(value, flat, allow_unused=True)
        grads = [torch.zeros_like(t) if g is None else g for t, g in zip(flat, grads)]
        value = value.detach()
    else:
        raise NotImplementedError(f"Unsupported Keras backend {backend!r}.")
    return value, tree.pack_sequence_as(list(args), list(grads))


def list_devices() -> list[str]:
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


def exceeds_in_eager(x: Tensor, threshold: float) -> bool | None:
    """Whether max|x| > threshold, when that can be known without tracing.

    Returns a Python bool for a concrete tensor computed eagerly (one
    reduction and a device-to-host copy), and None inside a traced or compiled
    function or for a symbolic tensor, where the caller must take the path
    that is valid for every value. Lets eager code skip work that only
    extreme inputs need.
    """
    backend = name()
    if backend == "tensorflow":
        import tensorflow as tf

        if not tf.executing_eagerly() or not isinstance(x, tf.Tensor):
            return None
        if not hasattr(x, "numpy"):
            return None
        return bool(tf.reduce_max(tf.abs(x)) > threshold)
    if backend == "jax":
        import jax

        if isinstance(x, jax.core.Tracer) or not isinstance(x, jax.Array):
            return None
        return bool(jax.numpy.max(jax.numpy.abs(x)) > threshold)
    if backend == "torch":
        import torch

        if not isinstance(x, torch.Tensor) or x.is_meta:
            return None
        if torch.compiler.is_compiling():
            return None
        with torch.no_grad():
            # One pass, ~5x faster on CPU than vector_norm(ord=inf) or abs().amax().
            low, high = torch.aminmax(x.detach())
        return bool(high > threshold or -low > threshold)
    return None


def eager_numpy(x: Tensor) -> Any:
    """`x` as a NumPy array when it is a concrete tensor computed eagerly,
    None inside a traced or compiled function or for a symbolic tensor.

    Lets a component check values (labels out of range, say) where that can
    be done, and take the path valid for every value elsewhere.
    """
    backend = name()
    if backend == "tensorflow":
        import tensorflow as tf

        if not tf.executing_eagerly() or not isinstance(x, tf.Tensor) or not hasattr(x, "numpy"):
            return None
        return x.numpy()
    if backend == "jax":
        import jax

        if isinstance(x, jax.core.Tracer) or not isinstance(x, jax.Array):
            return None
        return np.asarray(x)
    if backend == "torch":
        import torch

        if not isinstance(x, torch.Tensor) or x.is_meta or torch.compiler.is_compiling():
            return None
        return x.detach().cpu().numpy()
    return None


def num_replicas_in_sync() -> int:
    """How many replicas Keras divides a reduced loss by (`tf.distribute`).

    Keras scales a `"sum_over_batch_size"` loss by 1/replicas under a
    `tf.distribute` strategy; the other backends never do.
    """
    if name() == "tensorflow":
        import tensorflow as tf

        return int(tf.distribute.get_strategy().num_replicas_in_sync)
    return 1


def global_rng_state() -> list[np.ndarray]:
    """The backend's own global random state, as uint8 arrays: PyTorch's
    generator (the CPU one, then one per CUDA device), which Keras's `Dropout`
    without a `seed` draws from on PyTorch. Empty on TensorFlow and JAX, where
    Keras draws every random number from `SeedGenerator` variables."""
    if name() != "torch":
        return []
    import torch

    states = [torch.get_rng_state()]
    if torch.cuda.is_available():
        states += list(torch.cuda.get_rng_state_all())
    return [s.cpu().numpy().copy() for s in states]


def set_global_rng_state(states: Sequence[np.ndarray]) -> None:
    """Restore what `global_rng_state()` returned (on the same devices)."""
    if name() != "torch" or not states:
        return
    import torch

    tensors = [torch.from_numpy(np.asarray(s, np.uint8).copy()) for s in states]
    torch.set_rng_state(tensors[0])
    if len(tensors) > 1:
        torch.cuda.set_rng_state_all(tensors[1:])


def ema_update(
    averages: Sequence[keras.Variable],
    variables: Sequence[Any],
    momentum: Tensor,
    applied: Tensor | None = None,
) -> None:
    """averages[i] <- momentum * averages[i] + (1 - momentum) * variables[i].

    `averages` are float32 `keras.Variable`s, `variables` Keras variables (or,
    inside a JAX `StatelessScope`, whatever they map to); `momentum` a scalar
    tensor. PyTorch runs it with multi-tensor (`_foreach`) kernels, a couple
    of launches for all variables instead of several per variable;
    TensorFlow and JAX compile the elementwise ops into the train step anyway.
    Same arithmetic, in the same order, on every backend. `applied`, a
    boolean tensor (TensorFlow and JAX only): when False, every average keeps
    its value, bit for bit.
    """
    c = 1.0 - momentum
    if name() == "torch":
        import torch

        if applied is not None:
            raise ValueError("ema_update: `applied` is not supported on PyTorch; branch on it first.")

        targets = [a.value for a in averages]
        sources = [ops.cast(ops.convert_to_tensor(v), t.dtype) for v, t in zip(variables, targets)]
        m = ops.convert_to_tensor(momentum, "float32")
        with torch.no_grad():
            torch._foreach_mul_(targets, m)
            torch._foreach_add_(targets, torch._foreach_mul(sources, ops.convert_to_tensor(c)))
        return
    for avg, var in zip(averages, variables):
        new = momentum * avg + c * ops.cast(var, avg.dtype)
        avg.assign(new if applied is None else ops.where(applied, new, ops.convert_to_tensor(avg)))


def fuse(fn: Callable[..., Any], static_argnums: int | Sequence[int] = ()) -> Callable[..., Any]:
    """`fn` compiled into one program where that costs nothing extra.

    On JAX every eager op is already compiled per shape and dtype, so
    `jax.jit` of an elementwise chain makes one kernel of many at no new
    cost (inside a traced function it is simply inlined). On TensorFlow eager
    ops run uncompiled, and `torch.compile` is expensive to start, so there
    `fn` is returned as it is: their compiled paths (`tf.function` with XLA,
    the user's own `torch.compile`) fuse it anyway.
    """
    if name() == "jax":
        import jax

        return jax.jit(fn, static_argnums=static_argnums)
    return fn


def value_grad_and_aux(
    fn: Callable[..., tuple[Tensor, Any]], args: Sequence[Any], differentiable: bool = False
) -> tuple[Tensor, Any, list[Any]]:
    """`fn(*args)` returns `(value, aux)`, `value` a scalar; returns
    `(value, aux, grads)`, `grads` shaped like `args` (one entry per argument,
    zeros for inputs `fn` does not use).

    With `differentiable=False` (a train step's gradient) the results carry no
    graph: PyTorch's are detached. With `differentiable=True` the gradient can
    itself be differentiated by an enclosing call (a gradient penalty): a
    nested `tf.GradientTape`, `jax.value_and_grad` inside the outer one,
    `torch.autograd.grad(create_graph=True)`.
    """
    args = list(args)
    flat = tree.flatten(args)

    def call(flat_values):
        return fn(*tree.pack_sequence_as(args, list(flat_values)))

    backend = name()
    if backend == "tensorflow":
        import tensorflow as tf

        flat = [tf.convert_to_tensor(t.value if isinstance(t, keras.Variable) else t) for t in flat]
        with tf.GradientTape() as tape:
            for t in flat:
                tape.watch(t)
            value, aux = call(flat)
        grads = tape.gradient(value, flat, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        # An embedding's gradient comes as IndexedSlices; tricks add and
        # normalise gradients, so make it dense (as JAX and PyTorch give it).
        grads = [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in grads]
    elif backend == "jax":
        import jax

        (value, aux), grads = jax.value_and_grad(call, has_aux=True)(flat)
    elif backend == "torch":
        import torch

        if differentiable:
            flat = [t if t.requires_grad else t.detach().requires_grad_(True) for t in flat]
        else:
            # detach() shares the storage: no copy of the weights per step.
            flat = [ops.convert_to_tensor(t).detach().requires_grad_(True) for t in flat]
        with torch.enable_grad():
            value, aux = call(flat)
            grads = torch.autograd.grad(value, flat, allow_unused=True, create_graph=differentiable)
        grads = [torch.zeros_like(t) if g is None else g for t, g in zip(flat, grads)]
        if not differentiable:
            value = value.detach()
            aux = tree.map_structure(lambda t: t.detach() if isinstance(t, torch.Tensor) else t, aux)
    else:
        raise NotImplementedError(f"Unsupported Keras backend {backend!r}.")
    return value, aux, tree.pack_sequence_as(args, list(grads))
