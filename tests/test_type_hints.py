"""Every public signature of the annotated modules carries type hints, and
every hint resolves (`from __future__ import annotations` leaves them as
strings that nothing evaluates at import time, so a misspelt name would only
show here). See docs/design-notes.md, "Type hints"."""

import importlib
import inspect
import typing

import pytest

ANNOTATED = [
    "keras_tricks._backend",
    "keras_tricks._keras_compat",
    "keras_tricks._numerics",
    "keras_tricks._typing",
    "keras_tricks._validation",
    "keras_tricks.activations",
    "keras_tricks.callbacks.exponential_moving_average",
    "keras_tricks.callbacks.flood_level_scheduler",
    "keras_tricks.data._pool",
    "keras_tricks.data.generator",
    "keras_tricks.data.padding",
    "keras_tricks.entropy",
    "keras_tricks.hub.conditional_backbone",
    "keras_tricks.hub.masking",
    "keras_tricks.layers._rope",
    "keras_tricks.layers._span_base",
    "keras_tricks.layers.attach_mask",
    "keras_tricks.layers.conditional_layer_normalization",
    "keras_tricks.layers.efficient_global_pointer",
    "keras_tricks.layers.global_pointer",
    "keras_tricks.layers.log_n_multi_head_attention",
    "keras_tricks.layers.squareplus",
    "keras_tricks.losses._flooding_base",
    "keras_tricks.losses.flooding",
    "keras_tricks.losses.global_pointer_crossentropy",
    "keras_tricks.losses.global_pointer_kl",
    "keras_tricks.losses.individual_flooding",
    "keras_tricks.losses.multilabel_categorical_crossentropy",
    "keras_tricks.losses.sparse_global_pointer_crossentropy",
    "keras_tricks.metrics.span_f1",
    "keras_tricks.multitask._train_step",
    "keras_tricks.multitask.gradient_based",
    "keras_tricks.multitask.loss_based",
    "keras_tricks.multitask.multi_task_model",
    "keras_tricks.multitask.strategy",
    "keras_tricks.optimizers.exponential_moving_average",
    "keras_tricks.postprocessing.can",
    "keras_tricks.spans.conventions",
    "keras_tricks.spans.decoding",
    "keras_tricks.spans.labels",
    "keras_tricks.testing._core",
    "keras_tricks.testing.activations",
    "keras_tricks.testing.callbacks",
    "keras_tricks.testing.layers",
    "keras_tricks.testing.losses",
    "keras_tricks.testing.metrics",
    "keras_tricks.testing.multitask",
]

# Keras methods are public even when a base class is private (the span
# metrics inherit `update_state` from `_SpanCounts`, `Equal` and `Prior`
# `combine` from `_FixedWeights`); so are callbacks' `on_*` hooks.
_KERAS_METHODS = {
    "__init__",
    "__call__",
    "build",
    "call",
    "compute_mask",
    "compute_output_shape",
    "compute_output_spec",
    "from_config",
    "get_config",
    "reset_state",
    "result",
    "update_state",
}
_PUBLIC_BASES = {"_FixedWeights", "_SpanCounts"}


def _public_callables(module):
    for name, obj in vars(module).items():
        if getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isfunction(obj) and not name.startswith("_"):
            yield name, obj
        elif inspect.isclass(obj) and (not name.startswith("_") or name in _PUBLIC_BASES):
            for attr, value in vars(obj).items():
                if isinstance(value, property):
                    if not attr.startswith("_"):
                        yield from ((f"{name}.{attr}", f) for f in (value.fget, value.fset) if f)
                    continue
                fn = getattr(value, "__func__", value)
                public = not attr.startswith("_") or attr in _KERAS_METHODS or attr.startswith("on_")
                if inspect.isfunction(fn) and public:
                    yield f"{name}.{attr}", fn


@pytest.mark.parametrize("module_name", ANNOTATED)
def test_public_signatures_are_annotated(module_name):
    import keras

    from keras_tricks.multitask import Strategy

    # Names that modules import under TYPE_CHECKING only, for their hints.
    localns = {"Strategy": Strategy, "keras": keras}
    module = importlib.import_module(module_name)
    assert getattr(module, "annotations", None) is not None, "missing `from __future__ import annotations`"
    missing = []
    for where, fn in _public_callables(module):
        fn = inspect.unwrap(fn)
        hints = typing.get_type_hints(fn, localns=localns)
        for param in inspect.signature(fn).parameters:
            if param not in ("self", "cls") and param not in hints:
                missing.append(f"{where}({param})")
        if "return" not in hints:
            missing.append(f"{where} -> ?")
    assert not missing, f"unannotated in {module_name}: {missing}"


def test_the_check_sees_a_missing_hint():
    """The walk above is not vacuous: it finds methods and would flag one
    without hints."""
    module = importlib.import_module("keras_tricks.layers.global_pointer")
    names = [where for where, _ in _public_callables(module)]
    assert "GlobalPointer.call" in names and "GlobalPointer.build" in names
    names = [
        where for where, _ in _public_callables(importlib.import_module("keras_tricks.multitask.loss_based"))
    ]
    assert "_FixedWeights.combine" in names and "Uncertainty.sigmas" in names

    def bare(x, y=1):
        return x

    assert typing.get_type_hints(bare) == {}
