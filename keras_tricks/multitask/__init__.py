"""Multi-task loss weighting for multi-output Keras models.

`MultiTaskModel(model, strategy=...)` trains a functional multi-output model
with one of the strategies below; switching strategy is one argument.

| name | class | kind | source |
|---|---|---|---|
| "equal" | `Equal` | loss | fixed weights (Keras's sum) |
| "initial" | `Initial` | loss | 1 / L_i(0) (Su, part I) |
| "prior" | `Prior` + `prior_loss` | loss | 1 / L_i of the label prior (Su, part I) |
| "realtime" | `Realtime` | loss | L_i / sg(L_i) (Su, part I) |
| "generalized_mean" | `GeneralizedMean` | loss | power mean of the L_i (Su, part I) |
| "uncertainty" | `Uncertainty` | loss, learned | Kendall et al. 2018 |
| "dwa" | `DWA` | loss, per epoch | Liu et al. 2019 |
| "rlw" | `RLW` | loss, random | Lin et al. 2022 |
| "famo" | `FAMO` | loss, learned | Liu et al. 2023 |
| "stch" | `STCH` | loss | Lin et al. 2024 |
| "grad_norm_normalization" | `GradNormNormalization` | gradient | 1 / ||g_i|| (Su, part II) |
| "gradnorm" | `GradNorm` | gradient, learned | Chen et al. 2018 |
| "mgda" | `MGDA` | gradient | Sener & Koltun 2018 |
| "pcgrad" | `PCGrad` | gradient | Yu et al. 2020 |
| "cagrad" | `CAGrad` | gradient | Liu et al. 2021 |
| "primary_auxiliary" | `PrimaryAuxiliary` | gradient | Su, part III |
| "db_mtl" | `DBMTL` | gradient | Lin et al. 2023 |
| "upgrad" | `UPGrad` | gradient | Quinton & Rey 2024 |
| "dualproj" | `DualProj` | gradient | Quinton & Rey 2024 |
| "imtl_g" | `IMTLG` | gradient | Liu et al. 2021 (IMTL) |
| "graddrop" | `GradDrop` | gradient, per coordinate, random | Chen et al. 2020 |
| "aligned_mtl" | `AlignedMTL` | gradient | Senushkin et al. 2023 |
| "gradvac" | `GradVac` | gradient, random, EMA state | Wang et al. 2021 |
| "nash_mtl" | `NashMTL` | gradient | Navon et al. 2022 |
| "fairgrad" | `FairGrad` | gradient | Ban & Ji 2024 |
"""

from keras_tricks.multitask.gradient_based import (
    DBMTL,
    IMTLG,
    MGDA,
    AlignedMTL,
    CAGrad,
    DualProj,
    FairGrad,
    GradDrop,
    GradNorm,
    GradNormNormalization,
    GradVac,
    NashMTL,
    PCGrad,
    PrimaryAuxiliary,
    UPGrad,
)
from keras_tricks.multitask.loss_based import (
    DWA,
    FAMO,
    RLW,
    STCH,
    Equal,
    GeneralizedMean,
    Initial,
    Prior,
    Realtime,
    Uncertainty,
    prior_loss,
)
from keras_tricks.multitask.multi_task_model import MultiTaskModel
from keras_tricks.multitask.strategy import STRATEGIES, Strategy, get

__all__ = [
    "AlignedMTL",
    "CAGrad",
    "DBMTL",
    "DualProj",
    "DWA",
    "Equal",
    "FairGrad",
    "FAMO",
    "GeneralizedMean",
    "get",
    "GradDrop",
    "GradNorm",
    "GradNormNormalization",
    "GradVac",
    "IMTLG",
    "Initial",
    "MGDA",
    "MultiTaskModel",
    "NashMTL",
    "PCGrad",
    "PrimaryAuxiliary",
    "Prior",
    "prior_loss",
    "Realtime",
    "RLW",
    "STCH",
    "STRATEGIES",
    "Strategy",
    "Uncertainty",
    "UPGrad",
]
