"""Training: YAML configs, OpenKBP data pipeline, plain and SRM-regularised loops.

>>> from medseg.training import TrainConfig, train, load_train_config  # doctest: +SKIP
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
