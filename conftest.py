"""Repository-wide pytest hooks: docstring examples carry the `doctest` marker,
and the tests of every module that reaches into Keras internals carry the
`keras_internals` marker, so that run_backends.py's tiers can select them
(`-m "harness or doctest"`, and the minimum-Keras tier)."""

from pathlib import Path

import pytest

# Each package module that imports keras_tricks/_keras_compat.py (Keras's
# private API, the part most likely to break on another Keras release), with
# the test files that exercise it. tests/test_floor_tier.py fails when a
# module starts importing _keras_compat without an entry here, so the
# minimum-Keras check never silently skips it.
KERAS_INTERNALS_TESTS = {
    "keras_tricks/callbacks/backup_and_resume.py": ["tests/callbacks/test_backup_and_resume.py"],
    "keras_tricks/callbacks/exponential_moving_average.py": [
        "tests/callbacks/test_exponential_moving_average.py"
    ],
    "keras_tricks/optimizers/exponential_moving_average.py": [
        "tests/callbacks/test_exponential_moving_average.py"
    ],
    "keras_tricks/data/generator.py": ["tests/data/test_data_generator.py"],
    "keras_tricks/data/_fit_stream.py": ["tests/data/test_data_generator_main_thread.py"],
    "keras_tricks/layers/log_n_multi_head_attention.py": ["tests/layers/test_log_n_multi_head_attention.py"],
    "keras_tricks/losses/_flooding_base.py": [
        "tests/losses/test_flooding.py",
        "tests/losses/test_individual_flooding.py",
    ],
    "keras_tricks/multitask/_train_step.py": [
        "tests/multitask/test_multi_task_model.py",
        "tests/multitask/test_representation.py",  # the representation step uses its helpers
    ],
    "keras_tricks/multitask/strategy.py": ["tests/multitask/test_multi_task_model.py"],
    "keras_tricks/multitask/multi_task_model.py": [
        "tests/multitask/test_multi_task_model.py",
        "tests/multitask/test_representation.py",
    ],
    "keras_tricks/optimizers/lookahead.py": ["tests/optimizers/test_lookahead.py"],
    "keras_tricks/optimizers/_wrapper.py": [
        "tests/callbacks/test_exponential_moving_average.py",
        "tests/optimizers/test_lookahead.py",
        "tests/optimizers/test_scaled_updates.py",
    ],
    "keras_tricks/optimizers/scaled_updates.py": [
        "tests/optimizers/test_scaled_updates.py",
        "tests/optimizers/test_layerwise_lr_decay.py",
    ],
    "keras_tricks/train/_chain.py": ["tests/train/test_tricks.py"],
    "keras_tricks/train/_step.py": ["tests/train/test_tricks.py"],
}
_ROOT = Path(__file__).resolve().parent
_INTERNALS_FILES = {str(_ROOT / f) for files in KERAS_INTERNALS_TESTS.values() for f in files}


def pytest_collection_modifyitems(items):
    for item in items:
        if isinstance(item, pytest.DoctestItem):
            item.add_marker("doctest")
        elif str(item.path) in _INTERNALS_FILES:
            item.add_marker("keras_internals")
