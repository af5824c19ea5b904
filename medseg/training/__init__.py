"""Training: YAML configs, OpenKBP data pipeline, plain and SRM-regularised loops.

Entry points: :func:`load_train_config` (YAML → :class:`TrainConfig`) and :func:`train`;
the CLI is ``medseg train CONFIG [--resume CKPT]``. See ``docs/training.md``.
"""

from __future__ import annotations

from medseg.training.config import (
    DataConfig,
    ModelConfig,
    OptimConfig,
    SRMConfig,
    TrainConfig,
    load_train_config,
)
from medseg.training.loop import TrainResult, dice_per_label, select_device, train

__all__ = [
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "SRMConfig",
    "TrainConfig",
    "TrainResult",
    "dice_per_label",
    "load_train_config",
    "select_device",
    "train",
]
