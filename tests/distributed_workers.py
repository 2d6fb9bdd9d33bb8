"""Shared plumbing of the tests that train on two virtual CPU devices.

Virtual devices must be configured before TensorFlow or JAX starts, so such
a test runs a worker script in a fresh Python process:

- the worker calls `configure_two_cpus(mode)` before it imports Keras
  ("mirrored": two logical TF CPUs for `tf.distribute.MirroredStrategy`;
  "dataparallel": two XLA host devices for JAX `DataParallel`);
- the test calls `run_worker(script, mode, tmp_path)`, which runs it on the
  current backend and returns the `.npz` it saved; `distributed_tests`
  makes the usual pair of tests (MirroredStrategy on TensorFlow,
  DataParallel on JAX) from a worker script and a check of its output.
"""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def configure_two_cpus(mode):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if mode == "dataparallel":
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
        )
    if mode == "mirrored":
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)


def run_worker(script, mode, tmp_path, env_extra=None):
    import numpy as np

    from keras_tricks import _backend

    out = str(tmp_path / f"{mode}.npz")
    env = dict(os.environ, KERAS_BACKEND=_backend.name(), **(env_extra or {}))
    proc = subprocess.run(
        [sys.executable, script, mode, out], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return np.load(out)


def distributed_tests(script, check):
    """(test on MirroredStrategy, test on DataParallel), each skipped off its backend.

    Assign them at module level under `test_...` names; `check(npz)` asserts
    on what the worker saved.
    """
    import pytest

    from keras_tricks import _backend

    @pytest.mark.skipif(_backend.name() != "tensorflow", reason="tf.distribute is TensorFlow's")
    def mirrored(tmp_path):
        check(run_worker(script, "mirrored", tmp_path))

    @pytest.mark.skipif(
        _backend.name() != "jax", reason="keras.distribution.DataParallel is implemented for JAX"
    )
    def data_parallel(tmp_path):
        check(run_worker(script, "dataparallel", tmp_path))

    return mirrored, data_parallel
