"""Segmentation models: a registry of keyword-only builders and safe checkpoints.

>>> from medseg.models import build_model, available_models
>>> available_models()
('dynunet3d', 'fcn3d', 'srm', 'unet3d')
>>> net = build_model("fcn3d", in_channels=1, out_channels=8, channels=(2, 4, 4, 8))
>>> type(net).__name__
'FCN3D'

Models output logits with ``out_channels`` = number of labels + 1 (channel 0 = background).
"""

from __future__ import annotations

from medseg.models.checkpoint import (
    CheckpointInfo,
    load_checkpoint,
    resolve_checkpoint_path,
    save_checkpoint,
)
from medseg.models.networks import dynunet3d, fcn3d, unet3d
from medseg.models.registry import available_models, build_model
from medseg.models.srm import ShapeAutoencoder, ShapeRegularizedLoss, srm

__all__ = [
    "CheckpointInfo",
    "ShapeAutoencoder",
    "ShapeRegularizedLoss",
    "available_models",
    "build_model",
    "dynunet3d",
    "fcn3d",
    "load_checkpoint",
    "resolve_checkpoint_path",
    "save_checkpoint",
    "srm",
    "unet3d",
]
