"""The model registry: names → keyword-only builders.

A module of its own so that :mod:`medseg.models.checkpoint` can build the model a checkpoint
names without importing the :mod:`medseg.models` package that re-exports it (no import cycle).

>>> available_models()
('dynunet3d', 'fcn3d', 'srm', 'unet3d')
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from medseg.errors import ModelError
from medseg.models.networks import dynunet3d, fcn3d, unet3d
from medseg.models.srm import srm

__all__ = ["available_models", "build_model"]

_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "unet3d": unet3d,
    "dynunet3d": dynunet3d,
    "fcn3d": fcn3d,
    "srm": srm,
}


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
