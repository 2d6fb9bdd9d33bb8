"""The few things `keras.ops` cannot express, for each of the three backends.

Everything backend-specific in keras_tricks lives behind the small functions
of this module, each written for TensorFlow, JAX and PyTorch.
"""

from __future__ import annotations

import functools
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


# Shapes (and static arguments) one function fused by `fuse` is compiled for
# on eager TensorFlow, at tens of milliseconds each.
_FUSE_MAX_PROGRAMS = 32


def fuse(fn: Callable[..., Any], static_argnums: int | Sequence[int] = ()) -> Callable[..., Any]:
    """`fn` compiled into one program where that pays for itself.

    For elementwise chains, which eager execution runs one kernel (and one
    fresh output) per op. On JAX every eager op is already compiled per shape
    and dtype, so `jax.jit` of the chain makes one kernel of many at no new
    cost (inside a traced function it is simply inlined). On TensorFlow, a
    call made eagerly runs an XLA-compiled `tf.function` of `fn` (compiled
    once per shape, dtype and value of the static arguments: tens of
    milliseconds, the cost of a few eager calls on large tensors); traced
    code calls `fn` itself, which the enclosing graph or XLA cluster then
    optimises. Past 32 compiled shapes, new ones run op by op. PyTorch gets `fn` as it is: `torch.compile` takes seconds to
    start, and the user's own `torch.compile` fuses `fn` anyway (see
    `squareplus` for a hand-fused eager path).
    """
    static = (static_argnums,) if isinstance(static_argnums, int) else tuple(static_argnums)
    backend = name()
    if backend == "jax":
        import jax

        return jax.jit(fn, static_argnums=static)
    if backend != "tensorflow":
        return fn
    import tensorflow as tf

    programs: dict[tuple[Any, ...], Any] = {}
    compiled: set[tuple[Any, ...]] = set()

    def call(*args: Any) -> Any:
        if not tf.executing_eagerly():
            return fn(*args)
        fixed = {i: args[i] for i in static}
        dynamic = [a for i, a in enumerate(args) if i not in fixed]
        key = tuple(fixed.items())
        signature = (key, *((tuple(a.shape), a.dtype) for a in dynamic))
        if signature not in compiled:
            # XLA compiles per concrete shape; input shapes that keep
            # changing (a custom loop over unpadded sequences) would compile
            # without end, so past a budget new shapes run op by op.
            if len(compiled) >= _FUSE_MAX_PROGRAMS:
                return fn(*args)
            compiled.add(signature)
        program = programs.get(key)
        if program is None:

            def bound(*rest: Any) -> Any:
                values = iter(rest)
                return fn(*(fixed[i] if i in fixed else next(values) for i in range(len(fixed) + len(rest))))

            program = programs[key] = tf.function(bound, jit_compile=True, reduce_retracing=True)
        return program(*dynamic)

    return functools.wraps(fn)(call)


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


def squareplus(x: Tensor, b: float) -> Tensor | None:
    """squareplus (`keras_tricks.activations`) of a float32 or float64 `x`,
    with its derivative, in the backend's own kernels; None where the
    portable keras.ops formula is already the fast path.

    PyTorch (eager, not under `torch.compile`): one `autograd.Function` of
    seven kernels forward, two of which allocate (every fresh CPU tensor of
    this size costs page faults worth several elementwise passes, and
    `torch.where` is slower than two passes), four more forward when a
    gradient is needed, and one backward. The same cancellation-free
    arithmetic as the portable formula, by different means:

        r/2   = hypot(|x|/2, sqrt(b)/2)       (no overflow, no threshold)
        f(a)  = |x|/2 + r/2
        v     = copysign(f(a), x)
        f(x)  = max(v, -(b/4) / v)            (v, or (b/4) / f(a) for x < 0)
        f'(x) = min(f(x) / min(r, max), 1)    (1 at +inf, 0 at -inf)

    The derivative is computed in the forward pass, so that only it is kept
    between the passes; a backward pass that builds a graph (a gradient
    penalty) differentiates the same formula out of place. TensorFlow and
    JAX: None (`fuse` compiles the portable formula).
    """
    if name() != "torch":
        return None
    import torch

    if not isinstance(x, torch.Tensor) or torch.compiler.is_compiling():
        return None
    return _torch_squareplus_function().apply(x, float(b))


@functools.cache
def _torch_squareplus_function() -> Any:
    import torch

    def constants(x, b):
        def full(v):
            return torch.tensor(v, dtype=x.dtype, device=x.device)

        return full(float(np.sqrt(b)) / 2.0), full(-0.25 * b), float(torch.finfo(x.dtype).max)

    def slope_of(x, b):
        # Out of place and differentiable, for a backward pass that builds a
        # graph: a selection instead of |x| and copysign, whose derivatives
        # vanish at 0 (f''(0) = 1 / (2 sqrt(b)), not 0).
        half_root_b, minus_quarter_b, top = constants(x, b)
        half_x = x * 0.5
        half_r = torch.hypot(half_x, half_root_b)
        y = torch.where(x >= 0, half_x + half_r, -minus_quarter_b / (half_r + torch.abs(half_x)))
        return torch.clamp(y / torch.clamp(half_r * 2.0, max=top), max=1.0)

    class SquarePlus(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, b):
            half_root_b, minus_quarter_b, top = constants(x, b)
            y = torch.mul(x, 0.5).abs_()
            half_r = torch.hypot(y, half_root_b)
            # f(|x|) = |x|/2 + r/2: at most max for finite x, where (|x| + r) / 2
            # overflows from max / 2.
            y.add_(half_r).copysign_(x)
            need_grad = ctx.needs_input_grad[0]
            other = torch.div(minus_quarter_b, y, out=None if need_grad else half_r)
            torch.maximum(y, other, out=y)
            ctx.b = b
            if need_grad:
                # r <= max for finite x; clamping +inf to max gives
                # f'(+inf) = min(inf / max, 1) = 1 rather than inf / inf. min
                # and max keep NaN.
                half_r.mul_(2.0).clamp_(max=top)
                slope = torch.div(y, half_r, out=other).clamp_(max=1.0)
                ctx.save_for_backward(x, slope)
            return y

        @staticmethod
        def backward(ctx, upstream):
            x, slope = ctx.saved_tensors
            if torch.is_grad_enabled():
                slope = slope_of(x, ctx.b)
            return upstream * slope, None

    return SquarePlus


def layer_norm_per_example(
    x: Tensor, gamma: Tensor | None, beta: Tensor | None, axes: int, epsilon: float
) -> Tensor | None:
    """Layer normalization of `x` over its last `axes` axes, then `* gamma[i]
    + beta[i]` for each example `i`, in the backend's fused layer-norm
    kernels; None where the caller's portable formula is the better path.

    `x` is float32 of shape `(batch, ..., *S)`, `gamma` and `beta` (either may
    be None) of shape `(batch, *S)`: one gain and bias per example (a
    conditional layer norm). PyTorch (eager, not under `torch.compile`): an
    `autograd.Function` that allocates one tensor of `x`'s size forward
    (`native_layer_norm` without affine, then the gain and bias in place)
    and two backward (the normalised `x` recomputed by the same kernel, then
    `native_layer_norm_backward` written into it), against six for autograd
    of the composite formula: on CPUs each fresh tensor of that size costs
    page faults worth several elementwise passes. (One fused call per
    example, with that example's gain as the kernel's weight, would cost what
    the plain layer does, but turns one parallel region into `batch` of
    them, which a CPU shared with other work makes many times slower.) A
    backward pass that builds a graph (a gradient penalty) differentiates the
    composite formula instead. TensorFlow and JAX: None (XLA fuses the
    composite formula).
    """
    if name() != "torch":
        return None
    import torch

    if (
        not isinstance(x, torch.Tensor)
        or torch.compiler.is_compiling()
        or x.dtype != torch.float32
        or x.ndim <= axes
    ):
        return None
    return _torch_layer_norm_function().apply(x, gamma, beta, axes, float(epsilon))


@functools.cache
def _torch_layer_norm_function() -> Any:
    import torch

    aten = torch.ops.aten

    def broadcast(param, x, axes):
        return (
            None
            if param is None
            else param.reshape(param.shape[:1] + (1,) * (x.ndim - 1 - axes) + param.shape[1:])
        )

    def composite(x, gamma, beta, axes, epsilon):
        y = torch.nn.functional.layer_norm(x, x.shape[x.ndim - axes :], None, None, epsilon)
        if gamma is not None:
            y = y * broadcast(gamma, x, axes)
        if beta is not None:
            y = y + broadcast(beta, x, axes)
        return y

    class LayerNormPerExample(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, gamma, beta, axes, epsilon):
            shape = list(x.shape[x.ndim - axes :])
            y, mean, rstd = aten.native_layer_norm(x, shape, None, None, epsilon)
            if gamma is not None:
                y.mul_(broadcast(gamma, x, axes))
            if beta is not None:
                y.add_(broadcast(beta, x, axes))
            ctx.save_for_backward(x, mean, rstd, gamma, beta)
            ctx.axes, ctx.epsilon = axes, epsilon
            return y

        @staticmethod
        def backward(ctx, upstream):
            x, mean, rstd, gamma, beta = ctx.saved_tensors
            axes = ctx.axes
            needs = ctx.needs_input_grad[:3]
            if torch.is_grad_enabled():
                inputs = [t for t, n in zip((x, gamma, beta), needs) if n]
                grads = iter(
                    torch.autograd.grad(
                        composite(x, gamma, beta, axes, ctx.epsilon), inputs, upstream, create_graph=True
                    )
                )
                return (*(next(grads) if n else None for n in needs), None, None)
            shape = list(x.shape[x.ndim - axes :])
            rows = tuple(range(1, x.ndim - axes))
            dbeta = dgamma = None
            if beta is not None and needs[2]:
                dbeta = upstream.sum(rows) if rows else upstream
            if gamma is not None and needs[1]:
                # The normalised x, bit for bit as forward computed it.
                normed = aten.native_layer_norm(x, shape, None, None, ctx.epsilon)[0]
                dgamma = normed.mul_(upstream).sum(rows) if rows else normed.mul_(upstream)
            dx = None
            if needs[0]:
                dnormed = upstream if gamma is None else upstream * broadcast(gamma, x, axes)
                dx = aten.native_layer_norm_backward(
                    dnormed, x, shape, mean, rstd, None, None, [True, False, False]
                )[0]
            return dx, dgamma, dbeta, None, None

    return LayerNormPerExample
