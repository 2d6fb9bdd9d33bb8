"""Every multi-task strategy through the shared harness (`testing.check_strategy`)."""

import pytest

from keras_tricks import _backend, multitask, testing

FACTORIES = {
    "equal": lambda: multitask.Equal(weights=[1.0, 0.5]),
    "initial": lambda: multitask.Initial(steps=2),
    "prior": lambda: multitask.Prior(losses=[2.0, 5.0]),
    "realtime": multitask.Realtime,
    "generalized_mean": lambda: multitask.GeneralizedMean(gamma=0.5),
    "uncertainty": multitask.Uncertainty,
    "dwa": multitask.DWA,
    "grad_norm_normalization": multitask.GradNormNormalization,
    "gradnorm": multitask.GradNorm,
    "mgda": multitask.MGDA,
    "pcgrad": lambda: multitask.PCGrad(seed=1),
    "cagrad": multitask.CAGrad,
    "primary_auxiliary": lambda: multitask.PrimaryAuxiliary(primary=1),
    "rlw": lambda: multitask.RLW(seed=3),
    "famo": multitask.FAMO,
    "stch": lambda: multitask.STCH(mu=0.5, warmup_steps=1, log_losses=True),
    "db_mtl": multitask.DBMTL,
    "upgrad": multitask.UPGrad,
    "dualproj": multitask.DualProj,
    "imtl_g": multitask.IMTLG,
    "graddrop": lambda: multitask.GradDrop(leak=[0.0, 0.5], seed=2),
    "aligned_mtl": multitask.AlignedMTL,
    "gradvac": lambda: multitask.GradVac(beta=0.5, seed=2),
    "nash_mtl": multitask.NashMTL,
    "fairgrad": lambda: multitask.FairGrad(alpha=2.0),
}


def test_every_strategy_is_covered():
    assert sorted(FACTORIES) == sorted(multitask.STRATEGIES)


@pytest.mark.harness
@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_strategy_harness(name):
    checks = testing.STRATEGY_CHECKS
    if name in ("rlw", "graddrop") and _backend.name() == "tensorflow":
        # RLW's weights and GradDrop's masks are drawn from keras.random at
        # every step, whose stream differs between XLA and plain TF (see PCGrad below).
        checks = tuple(c for c in checks if c != "call")
    testing.check_strategy(FACTORIES[name], checks=checks)


@pytest.mark.harness
@pytest.mark.parametrize("name", ["mgda", "pcgrad", "cagrad", "primary_auxiliary", "gradnorm"])
def test_strategy_harness_three_tasks(name):
    # PCGrad draws its task orders from keras.random, whose stream differs
    # between XLA and plain TF, so its compiled modes agree only for k = 2.
    # (GradVac, which draws the same way, trains and resumes with three tasks in
    # test_multi_task_model.py's save/load/resume test.)
    checks = ("fit", "serialization") if name == "pcgrad" else ("call", "fit", "serialization")
    testing.check_strategy(FACTORIES[name], tasks=3, checks=checks)
