"""Training on 8 virtual CPU devices equals training on one.

One model with our parts (a GlobalPointer head, a flooded classifier, a
gradient-based multi-task strategy, the EMA callback) trains from the same
weights on the same batches on one device and distributed; the worker
(tests/_distribution_worker.py, a fresh process because the device count is
fixed when the backend starts) saves both. On JAX: `DataParallel` over 8
devices and `ModelParallel` on a (2, 4) mesh sharding the kernels; on
TensorFlow: `MirroredStrategy` over 8 logical CPUs.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from keras_tricks import _backend, testing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "_distribution_worker.py")


def _run(mode, tmp_path):
    out = str(tmp_path / f"{mode}.npz")
    env = dict(os.environ, KERAS_BACKEND=_backend.name())
    proc = subprocess.run(
        [sys.executable, WORKER, mode, out], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return np.load(out)


def _assert_same_training(got, run):
    # Float32 sums in another order (8 partial batches, or sharded matmuls)
    # after 8 Adam steps: a few hundred ulps of the largest weight.
    for key in ("weights", "raw", "task_weights"):
        testing.assert_close(
            got[f"{run}_{key}"], got[f"single_{key}"], tolerance=512, what=f"{run}: {key} vs one device"
        )


@pytest.mark.skipif(_backend.name() != "jax", reason="keras.distribution is implemented for JAX")
def test_data_and_model_parallel_on_eight_virtual_devices(tmp_path):
    got = _run("keras_distribution", tmp_path)
    for run in ("data", "model"):
        _assert_same_training(got, run)
        # Every EMA average has its variable's layout, so its per-device
        # memory is exactly that of the variables it averages.
        assert got[f"{run}_layouts_match"]
        assert got[f"{run}_average_bytes_per_device"] == got[f"{run}_variable_bytes_per_device"]
    # ModelParallel shards the kernels: each device holds a fraction of them.
    assert got["model_variable_bytes_per_device"] < got["data_variable_bytes_per_device"] / 2
    # The Gram matrix of sharded gradients comes from reduced partial sums,
    # never from gathering a whole gradient on one device (the worker checks
    # that replicating a sharded array does show up as an all-gather).
    assert list(got["model_collectives"]) == ["all-reduce"]
    assert list(got["data_collectives"]) == []


@pytest.mark.skipif(_backend.name() != "tensorflow", reason="tf.distribute is TensorFlow's")
def test_mirrored_strategy_on_eight_virtual_cpus(tmp_path):
    _assert_same_training(_run("mirrored", tmp_path), "mirrored")
