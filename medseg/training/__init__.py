"""Training: YAML configs, OpenKBP data pipeline, plain and SRM-regularised loops.

Entry points: :func:`load_train_config` (YAML → :class:`TrainConfig`) and :func:`train`;
the CLI is ``medseg train CONFIG [--resume CKPT]``. See ``docs/training.md``.
"""

from __future__ import annotations

from medseg.training.config import (
    DataConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    SRMConfig,
    TrainConfig,
    load_train_config,
)
from medseg.training.loop import TrainResult, train
from medseg.training.losses import PartialLabelLoss

__all__ = [
    "DataConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "PartialLabelLoss",
    "SRMConfig",
    "TrainConfig",
    "TrainResult",
    "load_train_config",
    "train",
]
