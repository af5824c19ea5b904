"""Configuration of the evaluation metrics (:class:`MetricsConfig`, frozen, loadable from YAML)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medseg.config import checked_mapping
from medseg.errors import ConfigError
from medseg.metrics.surfaces import SURFACE_DEFINITIONS

__all__ = ["MetricsConfig"]

_HD_MODES = ("max_directed", "pooled")
_BOTH_EMPTY = ("perfect", "exclude")


@dataclass(frozen=True)
class MetricsConfig:
    """How segmentations are compared.

    Parameters
    ----------
    definition
        Surface definition: ``"surfel"`` (DeepMind surface-distance) or ``"voxel"`` (MONAI).
    tolerance_mm
        NSD (surface Dice) tolerance in mm.
    percentile
        Percentile of the robust Hausdorff distance (95 → ``hd95``).
    hd_mode
        ``"max_directed"``: max of the two directed percentiles (default, DeepMind/MONAI);
        ``"pooled"``: percentile of both directions pooled (MedPy).
    both_empty
        Label absent from both masks: ``"perfect"`` (Dice 1, distances 0, NSD 1) or
        ``"exclude"`` (metrics ``None``, left out of summaries).
    worst_case_mm
        Distance reported when exactly one mask is empty; ``None`` = image diagonal in mm.

    Examples
    --------
    >>> MetricsConfig(definition="voxel").hd_key
    'hd95'
    >>> MetricsConfig.from_dict({"tolerance_mm": 1}).tolerance_mm
    1.0
    """

    definition: str = "surfel"
    tolerance_mm: float = 2.0
    percentile: float = 95.0
    hd_mode: str = "max_directed"
    both_empty: str = "perfect"
    worst_case_mm: float | None = None

    def __post_init__(self) -> None:
        if self.definition not in SURFACE_DEFINITIONS:
            raise ConfigError(
                f"metrics.definition must be one of {SURFACE_DEFINITIONS}; got {self.definition!r}."
            )
        if self.hd_mode not in _HD_MODES:
            raise ConfigError(f"metrics.hd_mode must be one of {_HD_MODES}; got {self.hd_mode!r}.")
        if self.both_empty not in _BOTH_EMPTY:
            raise ConfigError(
                f"metrics.both_empty must be one of {_BOTH_EMPTY}; got {self.both_empty!r}."
            )
        try:
            tol = float(self.tolerance_mm)
            pct = float(self.percentile)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"tolerance_mm and percentile must be numbers ({exc}).") from exc
        if not tol >= 0:
            raise ConfigError(f"metrics.tolerance_mm must be ≥ 0 mm; got {self.tolerance_mm!r}.")
        if not 0 < pct <= 100:
            raise ConfigError(f"metrics.percentile must be in (0, 100]; got {self.percentile!r}.")
        object.__setattr__(self, "tolerance_mm", tol)
        object.__setattr__(self, "percentile", pct)
        if self.worst_case_mm is not None:
            worst = float(self.worst_case_mm)
            if not worst > 0:
                raise ConfigError(f"metrics.worst_case_mm must be > 0; got {self.worst_case_mm!r}.")
            object.__setattr__(self, "worst_case_mm", worst)

    @property
    def hd_key(self) -> str:
        """Output name of the robust Hausdorff distance, e.g. ``"hd95"``."""
        return f"hd{self.percentile:g}".replace(".", "_")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MetricsConfig:
        """Build from a mapping, rejecting unknown keys."""
        return cls(**checked_mapping(cls, data, what="metrics config"))

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> MetricsConfig:
        """Load from a YAML file (top level mapping, or a ``metrics:`` section)."""
        import yaml

        p = Path(path)
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{p}: cannot read metrics config ({exc}).") from exc
        if isinstance(data, dict) and set(data) == {"metrics"}:
            data = data["metrics"]
        if not isinstance(data, dict):
            raise ConfigError(
                f"{p}: expected a mapping of metrics options; got {type(data).__name__}."
            )
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for JSON outputs)."""
        return dataclasses.asdict(self)
