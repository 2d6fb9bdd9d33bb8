"""MultiTaskModel: a multi-output Keras model trained with a multi-task weighting strategy."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from keras_tricks import _backend, _keras_compat
from keras_tricks._typing import LossLike, Tensor
from keras_tricks.multitask import _representation_step, _train_step
from keras_tricks.multitask.strategy import Strategy, per_task, safe_divide
from keras_tricks.multitask.strategy import get as get_strategy


def _pairwise_gram(groups: Sequence[Sequence[Tensor]]) -> Tensor:
    """G_ij = sum over groups of <g_i, g_j>, float32 (k, k); `groups[v][i]`
    is task i's gradient in group v (a variable, or the representation).
    Pairwise reductions rather than a stacked (k, n) x (n, k) matmul: no
    copy of the gradients, and XLA:CPU runs them ~4x faster."""
    entries = {}
    k = len(groups[0])
    for group in groups:
        flat = [ops.cast(g, "float32") for g in group]
        for i in range(k):
            for j in range(i, k):
                dot = ops.sum(flat[i] * flat[j])
                entries[i, j] = dot if (i, j) not in entries else entries[i, j] + dot
    return ops.stack([ops.stack([entries[min(i, j), max(i, j)] for j in range(k)]) for i in range(k)])


class _FunctionLoss(keras.losses.Loss):
    """A plain loss function as a `Loss` (reduction, masks, sample weights)."""

    def __init__(self, fn, name):
        super().__init__(name=name)
        self.fn = fn

    def call(self, y_true, y_pred):
        return self.fn(y_true, y_pred)


class _EpochEnd(keras.callbacks.Callback):
    def __init__(self, strategy):
        super().__init__()
        self.strategy = strategy

    def on_epoch_end(self, epoch, logs=None):
        self.strategy.end_epoch()


@keras.saving.register_keras_serializable(package="keras_tricks")
class MultiTaskModel(keras.Model):
    """Trains a multi-output model with a multi-task weighting strategy.

    Wraps a functional Keras model with k >= 2 outputs (the tasks, named by
    its `output_names`) and keeps `compile()` / `fit()` / `evaluate()` /
    `predict()` / `save()`: only `strategy` changes how the k task losses
    L_i become an update.

    * Loss-based strategies ("equal", "initial", "prior", "realtime",
      "generalized_mean", "uncertainty", "dwa", "rlw", "famo", "stch")
      build one scalar from the L_i and differentiate it once: Keras's own
      train step.
    * Gradient-based strategies ("grad_norm_normalization", "gradnorm",
      "mgda", "pcgrad", "cagrad", "primary_auxiliary", "db_mtl", "upgrad",
      "dualproj", "imtl_g", "aligned_mtl", "gradvac", "graddrop", and every
      other strategy whose `uses_gradients` is True) take one
      backward pass per task, form the Gram matrix G_ij = <g_i, g_j> of the gradients with
      respect to the shared variables, and move those along
      d = sum_i w_i g_i with w from the strategy; each task's own variables
      get its own gradient (scaled by w_i for the loss-weighting ones; by
      1 / L_i for DB-MTL). GradDrop, an `elementwise` strategy, instead
      masks the task gradients coordinate by coordinate (no Gram matrix;
      its logged weights are the share of each task's coordinates kept). Under
      `tf.distribute` the per-task gradients are summed over replicas before
      the weights are computed, so every replica takes the same step.
      A task whose gradient with respect to the shared variables is zero or
      absent (an output with no path to them) takes no part in the shared
      combination; its own variables still train on its own loss (a warning
      at construction names such outputs).

    The logs show `loss` (the objective that is differentiated; for
    gradient-based strategies the plain sum of task losses), and for each
    task `<task>_loss` and `<task>_weight` (the weight in use; in
    `evaluate`, the weights the strategy's state gives now for loss-based
    strategies, the last training step's for gradient-based ones). Strategy state
    (learned log-variances, GradNorm's weights, DWA's history, seeds) is
    saved and restored with the model.

    Args:
        model: a functional `keras.Model` with at least 2 outputs.
        strategy: a strategy name or a `keras_tricks.multitask.Strategy`
            (see `keras_tricks.multitask.STRATEGIES`).
        tasks: optional list of the task names, to check against the model's
            output names (ValueError naming the mismatch).
        shared: for gradient-based strategies, the shared variables: None
            (every trainable variable that two or more outputs depend on), or
            a list of layer names, layers or variables.
        representation: for Gram-based strategies, a layer (or its name)
            whose output z every output depends on: the Gram matrix is then
            that of the per-task gradients with respect to z (MGDA-UB, Sener
            & Koltun 2018, Section 3.3), and the trunk below z is
            differentiated once, with the cotangent sum_i w_i dL_i/dz,
            instead of once per task. Excludes `shared`.
        **kwargs: base `keras.Model` arguments (`name`).

    Examples:
    >>> import keras, numpy as np
    >>> from keras_tricks import multitask
    >>> x = keras.Input((8,))
    >>> h = keras.layers.Dense(16, activation="relu", name="trunk")(x)
    >>> model = keras.Model(x, [keras.layers.Dense(3, name="digit")(h),
    ...                         keras.layers.Dense(1, name="size")(h)])
    >>> mt = multitask.MultiTaskModel(model, strategy="cagrad")
    >>> mt.compile(optimizer="adam", loss={
    ...     "digit": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    ...     "size": "mse"})
    >>> history = mt.fit(np.ones((4, 8)), {"digit": np.zeros(4), "size": np.ones(4)}, verbose=0)
    >>> sorted(k for k in history.history if k.endswith("_weight"))
    ['digit_weight', 'size_weight']
    """

    def __init__(
        self,
        model: keras.Model,
        strategy: str | Strategy = "equal",
        tasks: Sequence[str] | None = None,
        shared: Sequence[str | keras.layers.Layer | keras.Variable] | None = None,
        representation: str | keras.layers.Layer | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(model, keras.Model):
            raise TypeError(f"`model` must be a keras.Model; got {type(model).__name__}.")
        outputs = getattr(model, "outputs", None)
        if outputs is None:
            raise ValueError(
                "`model` must be a functional keras.Model (built from keras.Input), so "
                f"that its outputs are known; got {type(model).__name__} without `outputs`."
            )
        names = list(model.output_names)
        if len(outputs) < 2:
            raise ValueError(
                f"`model` must have at least 2 outputs (one per task); it has {len(outputs)}: {names}."
            )
        if tasks is not None:
            tasks = [str(t) for t in tasks]
            if sorted(tasks) != sorted(names) or len(tasks) != len(names):
                raise ValueError(
                    f"`tasks` must name the model's outputs {names}; unknown: "
                    f"{sorted(set(tasks) - set(names))}, missing: "
                    f"{sorted(set(names) - set(tasks))}."
                )
        self.model = model
        self.tasks = names
        self.output_names = names
        self.strategy = get_strategy(strategy).bind(names)
        self._shared_arg = shared
        self._shared_ids = self._find_shared(model, outputs, shared)
        self._owners = {
            i: feeds[0] for i, feeds in self._find_owners(model, outputs).items() if len(feeds) == 1
        }
        if self.strategy.uses_gradients and not self._shared_ids:
            raise ValueError(
                f"The outputs {names} share no trainable variable, so strategy "
                f"{self.strategy.name!r} has nothing to combine; check `shared`."
            )
        if self.strategy.uses_gradients:
            apart = [
                name
                for name, output in zip(names, outputs)
                if not any(id(v) in self._shared_ids for v in keras.Model(model.inputs, output).weights)
            ]
            if apart:
                warnings.warn(
                    f"The outputs {apart} have no path to the shared variables: strategy "
                    f"{self.strategy.name!r} leaves them out of the shared update (their own "
                    "variables still train on their own loss).",
                    stacklevel=2,
                )
        self._representation_arg = representation
        self._set_split(None if representation is None else self._split_at(model, representation, shared))
        k = len(names)
        self.last_task_weights = self.add_weight(
            shape=(k,), initializer="ones", trainable=False, aggregation="mean", name="last_task_weights"
        )
        self.task_loss_trackers = [keras.metrics.Mean(name=f"{t}_loss") for t in names]
        self.task_weight_trackers = [keras.metrics.Mean(name=f"{t}_weight") for t in names]
        self._task_loss_fns = None
        self._user_loss = None
        self.built = True

    @_keras_compat.no_automatic_dependency_tracking
    def _set_split(self, split):
        # Not tracked: the trunk and heads are views of `model`'s layers, and
        # as sublayers they would be saved a second time.
        self._split = split

    def _split_at(self, model, representation, shared):
        """(trunk, heads): `model` cut at the output z of `representation`,
        trunk(x) = z and heads(z) = model(x)."""
        if not self.strategy.uses_gradients:
            raise ValueError(
                f"`representation` is for gradient-based strategies; {self.strategy.name!r} "
                "combines the losses, not their gradients."
            )
        if self.strategy.elementwise:
            raise ValueError(
                f"`representation` needs a strategy that weights the task gradients; "
                f"{self.strategy.name!r} masks parameter gradients coordinate by coordinate."
            )
        if shared is not None:
            raise ValueError(
                "`shared` and `representation` exclude each other: with a representation the "
                "shared part is the trunk below it."
            )
        if isinstance(representation, str):
            try:
                representation = model.get_layer(representation)
            except ValueError:
                raise ValueError(
                    f"`representation` names {representation!r}, which is not a layer of the model; "
                    f"layers: {[layer.name for layer in model.layers]}."
                ) from None
        if not isinstance(representation, keras.layers.Layer):
            raise TypeError(
                f"`representation` must be a layer name or a layer; got {type(representation).__name__}."
            )
        try:
            z = representation.output
        except (AttributeError, ValueError) as e:
            raise ValueError(
                f"`representation` {representation.name!r} must be called exactly once in the model, "
                f"on a single output ({e})."
            ) from None
        if not isinstance(z, keras.KerasTensor):
            raise ValueError(
                f"`representation` {representation.name!r} must have one output tensor; it has "
                f"{len(keras.tree.flatten(z))}."
            )
        if getattr(z, "_keras_mask", None) is not None:
            # A backend tensor cannot carry it across the cut (JAX, PyTorch):
            # the heads would silently score the padding.
            raise ValueError(
                f"The output of `representation` {representation.name!r} carries a Keras mask (from "
                "an Embedding(mask_zero=True) or a Masking layer below it), which cutting the model "
                "there would drop; cut where the representation carries no mask (after a pooling "
                "layer, for example)."
            )
        try:
            trunk = keras.Model(model.input, z, name=f"{model.name}_trunk")
            heads = keras.Model(z, model.outputs, name=f"{model.name}_heads")
        except ValueError as e:
            raise ValueError(
                f"Every output must depend on the inputs only through `representation` "
                f"{representation.name!r}; cutting the model there failed: {e}"
            ) from None
        return trunk, heads

    @staticmethod
    def _find_owners(model, outputs):
        """id(variable) -> the outputs it feeds (from the functional graph)."""
        owners = {}
        for index, output in enumerate(outputs):
            for v in keras.Model(model.inputs, output).weights:
                owners.setdefault(id(v), []).append(index)
        return owners

    @classmethod
    def _find_shared(cls, model, outputs, shared):
        if shared is None:
            return {i for i, feeds in cls._find_owners(model, outputs).items() if len(feeds) >= 2}
        if not isinstance(shared, (list, tuple)):
            shared = [shared]
        ids = set()
        for item in shared:
            if isinstance(item, str):
                by_path = {v.path: v for v in model.weights}
                if item in by_path:
                    item = by_path[item]
                else:
                    try:
                        item = model.get_layer(item)
                    except ValueError:
                        raise ValueError(
                            f"`shared` names {item!r}, which is neither a layer nor a variable "
                            f"path of the model; layers: {[layer.name for layer in model.layers]}."
                        ) from None
            if isinstance(item, keras.layers.Layer):
                ids.update(id(v) for v in item.weights)
            elif isinstance(item, keras.Variable):
                ids.add(id(item))
            else:
                raise TypeError(
                    f"`shared` must hold layer names, layers or variables; got {type(item).__name__}."
                )
        return ids

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        return self.model(inputs, training=training)

    # -- compile and losses ---------------------------------------------------

    def compile(
        self,
        optimizer: str | keras.optimizers.Optimizer = "rmsprop",
        loss: LossLike | Sequence[LossLike] | dict[str, LossLike] | None = None,
        loss_weights: Any = None,
        metrics: Any = None,
        **kwargs: Any,
    ) -> None:
        """Keras's `compile`, with `loss` resolved per task.

        `loss`: one loss for every task, a list in output order, or a dict
        keyed by task. `loss_weights` is refused: fixed weights are the
        "equal" strategy's `Equal(weights=...)`.
        """
        if loss_weights is not None:
            raise ValueError(
                "`loss_weights` is not used by MultiTaskModel: the strategy sets the weights; "
                "for fixed weights use strategy=keras_tricks.multitask.Equal(weights=...)."
            )
        self._task_loss_fns = self._resolve_losses(loss)
        self._user_loss = loss
        super().compile(optimizer=optimizer, loss=None, metrics=metrics, **kwargs)

    def _resolve_losses(self, loss):
        tasks = self.tasks
        if loss is None:
            raise ValueError(
                f"`loss` is required: one loss for all tasks, a list in output order or a "
                f"dict keyed by task {tasks}."
            )
        items = per_task(loss, tasks, "loss", allow_single=True)
        resolved = []
        for task, item in zip(tasks, items):
            if item is None:
                raise ValueError(f"`loss` for task {task!r} is None; every task needs a loss.")
            fn = keras.losses.get(item)
            if fn is None:
                raise ValueError(f"`loss` for task {task!r} is not a known loss: {item!r}.")
            if not isinstance(fn, keras.losses.Loss):
                fn = _FunctionLoss(fn, name=f"{task}_loss")
            resolved.append(fn)
        return resolved

    def get_compile_config(self) -> dict[str, Any] | None:
        config = super().get_compile_config()
        if config:
            config["loss"] = keras.saving.serialize_keras_object(self._user_loss)
        return config

    def compile_from_config(self, config: dict[str, Any]) -> None:
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if getattr(self, "optimizer", None) is not None and self.built:
            self.optimizer.build(self.trainable_variables)

    def _per_task(self, value, argument, allow_single=False):
        return per_task(value, self.tasks, argument, allow_single=allow_single, extra_keys=True)

    def task_losses(self, y: Any, y_pred: Any, sample_weight: Any = None) -> Tensor:
        """The k task losses, float32 (k,), each as the task's Loss reduces it.

        Under `tf.distribute` they are the replica's share of the global-batch
        mean times the number of replicas (Keras's Loss divides by it).
        """
        if self._task_loss_fns is None:
            raise ValueError("The MultiTaskModel must be compiled (with a `loss`) before training.")
        ys = self._per_task(y, "y")
        preds = self._per_task(y_pred, "y_pred")
        weights = (
            [None] * len(self.tasks)
            if sample_weight is None
            else self._per_task(sample_weight, "sample_weight", allow_single=True)
        )
        replicas = float(_backend.num_replicas_in_sync())
        values = []
        for fn, y_t, y_p, w in zip(self._task_loss_fns, ys, preds, weights):
            values.append(ops.cast(fn(y_t, y_p, w), "float32") * replicas)
        return ops.stack(values)

    def _regularization(self):
        losses = [self._aggregate_additional_loss(loss) for loss in self.losses]
        return ops.sum(ops.stack([ops.cast(l, "float32") for l in losses])) if losses else None

    def _track(self, losses, weights, batch_size):
        for i in range(len(self.tasks)):
            self.task_loss_trackers[i].update_state(losses[i], sample_weight=batch_size)
            self.task_weight_trackers[i].update_state(weights[i])

    def compute_loss(
        self,
        x: Any = None,
        y: Any = None,
        y_pred: Any = None,
        sample_weight: Any = None,
        training: bool = True,
    ) -> Tensor:
        losses = self.task_losses(y, y_pred, sample_weight)
        if self.strategy.uses_gradients:
            total, weights = ops.sum(losses), ops.convert_to_tensor(self.last_task_weights)
        else:
            # In evaluation too, the logged weights are those that built `total`.
            if training:
                # A batch with a non-finite loss must not enter the strategy's
                # running statistics (DWA's epoch means, Initial's measurement).
                finite = ops.all(ops.isfinite(losses))
                state = _train_step.snapshot(self.strategy.non_trainable_variables)
                total, weights = self.strategy.combine(losses, training=True)
                _train_step.restore_unless(finite, state)
                weights = ops.where(finite, weights, ops.convert_to_tensor(self.last_task_weights))
                self.last_task_weights.assign(ops.stop_gradient(weights))
            else:
                total, weights = self.strategy.combine(losses, training=False)
        self._track(ops.stop_gradient(losses), ops.stop_gradient(weights), _train_step.batch_size(x, y))
        total = total / float(_backend.num_replicas_in_sync())
        regularization = self._regularization()
        return total if regularization is None else total + regularization

    # -- gradient-based training ----------------------------------------------

    def train_step(self, *args: Any) -> Any:
        if not self.strategy.uses_gradients:
            return _train_step.loss_based_step(self, super().train_step, *args)
        if self._split is not None:
            return _representation_step.train_step(self, *args)
        return _train_step.train_step(self, *args)

    def combine_task_gradients(
        self,
        losses: Tensor,
        task_grads: Sequence[Sequence[Tensor]],
        variables: Sequence[keras.Variable],
        training: bool = True,
        gradient_scale: float | Tensor = 1.0,
        output_scale: float | Tensor = 1.0,
        extra_finite: Tensor | None = None,
    ) -> tuple[list[Tensor], Tensor]:
        """The update for `variables` from per-task gradients (keras.ops, every backend).

        `task_grads[i][v]` is `gradient_scale` times the gradient of task i's
        loss with respect to `variables[v]` (a loss scale, for instance); the
        returned gradients are `output_scale / gradient_scale` times the
        combined update, so scales cost one multiplication of k numbers
        rather than passes over k gradients. Returns (gradients, weights).
        An `elementwise` strategy (GradDrop) combines each shared variable's
        k gradients itself (`Strategy.combine_elementwise`); its weights are
        the share of each task's shared coordinates kept.

        A step with a non-finite loss or gradient (or `extra_finite` False,
        e.g. a non-finite regularisation gradient), which `LossScaleOptimizer`
        skips, leaves the strategy's state as it was and reports the previous
        step's weights.
        """
        k = len(task_grads)
        shared = [id(v) in self._shared_ids for v in variables]
        if self.strategy.elementwise:
            return self._combine_elementwise(
                losses, task_grads, variables, shared, output_scale / gradient_scale, extra_finite
            )
        gram = _pairwise_gram(
            [[g[v] for g in task_grads] for v, is_shared in enumerate(shared) if is_shared]
        ) / (gradient_scale * gradient_scale)
        for v, is_shared in enumerate(shared):
            if not is_shared:
                for i in self._feeding(variables[v], k):
                    g_finite = ops.all(ops.isfinite(task_grads[i][v]))
                    extra_finite = (
                        g_finite if extra_finite is None else ops.logical_and(extra_finite, g_finite)
                    )
        shared_coefficients, head_coefficients, weights = self._gram_coefficients(
            losses, gram, extra_finite, output_scale / gradient_scale, training
        )
        return self._weighted_sum(task_grads, variables, shared_coefficients, head_coefficients), weights

    def representation_coefficients(
        self,
        losses: Tensor,
        z_grads: Sequence[Tensor],
        gradient_scale: float | Tensor = 1.0,
        output_scale: float | Tensor = 1.0,
        extra_finite: Tensor | None = None,
        training: bool = True,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(shared coefficients, task-specific coefficients, weights) from
        `z_grads[i]`, `gradient_scale` times the gradient of task i's loss
        with respect to the representation z (the `representation` mode):
        the strategy sees G_ij = <dL_i/dz, dL_j/dz> (Sener & Koltun's
        MGDA-UB bound, for any Gram-based strategy); the coefficients are
        those of `combine_task_gradients`, `output_scale / gradient_scale`
        times the weights."""
        gram = _pairwise_gram([z_grads]) / (gradient_scale * gradient_scale)
        return self._gram_coefficients(losses, gram, extra_finite, output_scale / gradient_scale, training)

    def _gram_coefficients(self, losses, gram, extra_finite, factor, training):
        """(shared, task-specific coefficients, weights): the strategy's
        weights from the Gram matrix, times `factor`.

        Under loss scaling a step may overflow; the optimizer then skips it
        (any non-finite gradient), and the strategy's state must not learn
        from it either: on a non-finite Gram matrix or loss, or
        `extra_finite` False, the strategy's state is left as it was and the
        previous step's weights are used."""
        finite = ops.logical_and(ops.all(ops.isfinite(gram)), ops.all(ops.isfinite(losses)))
        if extra_finite is not None:
            finite = ops.logical_and(finite, extra_finite)
        state = _train_step.snapshot(self.strategy.non_trainable_variables)
        # (A zero Gram matrix in its place: solvers must not see inf or NaN.)
        safe_gram = ops.where(finite, gram, ops.zeros_like(gram))
        weights = ops.stop_gradient(self.strategy.task_weights(losses, safe_gram, training=training))
        _train_step.restore_unless(finite, state)
        weights = ops.where(finite, weights, ops.convert_to_tensor(self.last_task_weights))
        specific = self.strategy.task_specific_weights(losses, weights)
        return weights * factor, specific * factor, weights

    def _weighted_sum(self, task_grads, variables, shared_coefficients, head_coefficients):
        """Each variable's update: the shared coefficients for a shared
        variable, the task-specific ones otherwise (a task's own variable
        gets only its task's term: the others are zero)."""
        gradients = []
        for v, variable in enumerate(variables):
            owner = self._owners.get(id(variable))
            shared = id(variable) in self._shared_ids
            if not shared and owner is not None:
                g = task_grads[owner][v]
                gradients.append(ops.cast(head_coefficients[owner], g.dtype) * g)
                continue
            coefficients = shared_coefficients if shared else head_coefficients
            total = None
            for i, g in enumerate(task_grads):
                term = ops.cast(coefficients[i], g[v].dtype) * g[v]
                total = term if total is None else total + term
            gradients.append(total)
        return gradients

    def _combine_elementwise(self, losses, task_grads, variables, shared, factor, extra_finite):
        """`combine_task_gradients` for an `elementwise` strategy (GradDrop):
        each shared variable's update is the strategy's `combine_elementwise`
        of its k gradients (a rule per coordinate, unchanged by the loss
        scale), every other variable gets the plain sum; the weights are
        each task's kept share of its non-zero shared coordinates."""
        k = len(task_grads)
        finite = ops.all(ops.isfinite(losses))
        for v, variable in enumerate(variables):
            for i in range(k) if shared[v] else self._feeding(variable, k):
                finite = ops.logical_and(finite, ops.all(ops.isfinite(task_grads[i][v])))
        if extra_finite is not None:
            finite = ops.logical_and(finite, extra_finite)
        state = _train_step.snapshot(self.strategy.non_trainable_variables)
        kept = present = ops.zeros((k,), "float32")
        gradients = []
        for v, variable in enumerate(variables):
            owner = self._owners.get(id(variable))
            if shared[v]:
                total, kept_v, present_v = self.strategy.combine_elementwise([g[v] for g in task_grads])
                kept, present = kept + kept_v, present + present_v
            elif owner is not None:
                total = task_grads[owner][v]
            else:
                total = task_grads[0][v]
                for g in task_grads[1:]:
                    total = total + g[v]
            gradients.append(ops.cast(factor, total.dtype) * total)
        _train_step.restore_unless(finite, state)
        weights = ops.where(ops.greater(present, 0.0), safe_divide(kept, present), 1.0)
        weights = ops.where(finite, weights, ops.convert_to_tensor(self.last_task_weights))
        return gradients, ops.stop_gradient(weights)

    def _feeding(self, variable, k):
        """The tasks whose gradient of a non-shared `variable` can be non-zero."""
        owner = self._owners.get(id(variable))
        return range(k) if owner is None else [owner]

    def fit(
        self, *args: Any, callbacks: Sequence[keras.callbacks.Callback] | None = None, **kwargs: Any
    ) -> keras.callbacks.History:
        callbacks = list(callbacks or [])
        if type(self.strategy).end_epoch is not Strategy.end_epoch:
            callbacks.append(_EpochEnd(self.strategy))
        return super().fit(*args, callbacks=callbacks, **kwargs)

    # -- config ----------------------------------------------------------------

    def get_config(self) -> dict[str, Any]:
        shared = self._shared_arg
        if shared is not None:
            items = shared if isinstance(shared, (list, tuple)) else [shared]
            shared = [
                s if isinstance(s, str) else s.path if isinstance(s, keras.Variable) else s.name
                for s in items
            ]
        return {
            "name": self.name,
            "model": keras.saving.serialize_keras_object(self.model),
            "strategy": keras.saving.serialize_keras_object(self.strategy),
            "shared": shared,
            "representation": (
                self._representation_arg
                if self._representation_arg is None or isinstance(self._representation_arg, str)
                else self._representation_arg.name
            ),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> MultiTaskModel:
        config = dict(config)
        model = keras.saving.deserialize_keras_object(config.pop("model"))
        strategy = keras.saving.deserialize_keras_object(config.pop("strategy"))
        return cls(model, strategy=strategy, **config)
