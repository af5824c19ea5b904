"""Segmentation models: a registry of keyword-only builders and safe checkpoints.

>>> from medseg.models import build_model, available_models
>>> available_models()
('fcn3d', 'srm', 'unet3d')
>>> net = build_model("fcn3d", in_channels=1, out_channels=8, channels=(2, 4, 4, 8))
>>> type(net).__name__
'FCN3D'

Models output logits with ``out_channels`` = number of labels + 1 (channel 0 = background).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from medseg.errors import ModelError
from medseg.models.checkpoint import (
    CheckpointInfo,
    load_checkpoint,
    resolve_checkpoint_path,
    save_checkpoint,
)
from medseg.models.networks import fcn3d, unet3d
from medseg.models.srm import ShapeAutoencoder, ShapeRegularizedLoss, srm

__all__ = [
    "CheckpointInfo",
    "ShapeAutoencoder",
    "ShapeRegularizedLoss",
    "available_models",
    "build_model",
    "fcn3d",
    "load_checkpoint",
    "resolve_checkpoint_path",
    "save_checkpoint",
    "srm",
    "unet3d",
]

_REGISTRY: dict[str, Callable[..., nn.Module]] = {"unet3d": unet3d, "fcn3d": fcn3d, "srm": srm}


def available_models() -> tuple[str, ...]:
    """Names accepted by :func:`build_model`, sorted."""
    return tuple(sorted(_REGISTRY))


def build_model(name: str, *, in_channels: int, out_channels: int, **options: Any) -> nn.Module:
    """Build a registered model by name with keyword-only options.

    Raises
    ------
    ModelError
        Unknown name or an option the builder does not take.
    """
    if name not in _REGISTRY:
        raise ModelError(f"unknown model {name!r}; available: {list(available_models())}.")
    try:
        return _REGISTRY[name](in_channels=in_channels, out_channels=out_channels, **options)
    except TypeError as exc:
        raise ModelError(f"model {name!r}: bad options {sorted(options)} ({exc}).") from exc
