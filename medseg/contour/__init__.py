"""Radiotherapy contouring batches: discovery, series selection, SQLite manifest, resume, Dask.

``medseg contour INPUT... -o OUT`` calls :func:`run_contour`; see ``docs/contour.md``.
"""

from __future__ import annotations

from medseg.contour.config import (
    TG263_NAME_MAP,
    ClusterConfig,
    ContourConfig,
    ReferenceConfig,
    SelectionRules,
    load_contour_config,
)
from medseg.contour.discovery import StudyPlan, choose_series, discover_studies
from medseg.contour.manifest import MANIFEST_NAME, Manifest
from medseg.contour.references import match_names, score_references
from medseg.contour.runner import BatchResult, model_sha256, run_contour

__all__ = [
    "MANIFEST_NAME",
    "TG263_NAME_MAP",
    "BatchResult",
    "ClusterConfig",
    "ContourConfig",
    "Manifest",
    "ReferenceConfig",
    "SelectionRules",
    "StudyPlan",
    "choose_series",
    "discover_studies",
    "load_contour_config",
    "match_names",
    "model_sha256",
    "run_contour",
    "score_references",
]
