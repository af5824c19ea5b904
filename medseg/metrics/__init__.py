"""Segmentation metrics in millimetres: Dice, Jaccard, HD, HD95, ASSD, MASD, NSD.

Two named surface definitions (``"surfel"``: DeepMind surface-distance; ``"voxel"``: MONAI),
explicit empty-mask rules (never NaN), label matching by name. See ``docs/evaluation.md``.

Entry points: :func:`evaluate_paths` (files or folders on disk → :class:`Evaluation`, what
``medseg evaluate`` runs), :func:`compute_metrics` (two label maps → :class:`CaseResult`),
:func:`surface_metrics` and :func:`overlap_metrics` (two boolean arrays + spacing),
:func:`summarize` (across cases).
"""

from __future__ import annotations

from medseg.metrics.case import (
    CaseResult,
    LabelMatch,
    LabelResult,
    compute_metrics,
    label_key,
    match_labels,
)
from medseg.metrics.config import MetricsConfig
from medseg.metrics.distances import (
    DirectedDistances,
    SurfaceDistances,
    image_diagonal_mm,
    surface_distances,
    surface_metrics,
    weighted_percentile,
)
from medseg.metrics.folders import (
    Evaluation,
    evaluate_pair,
    evaluate_paths,
    find_case_pairs,
    read_segmentation,
)
from medseg.metrics.overlap import dice_per_label, overlap_from_counts, overlap_metrics
from medseg.metrics.summary import (
    box_plots,
    format_table,
    results_to_csv,
    results_to_json,
    summarize,
)
from medseg.metrics.surfaces import SURFACE_DEFINITIONS, Surface, extract_surface, surfel_area_table

__all__ = [
    "SURFACE_DEFINITIONS",
    "CaseResult",
    "DirectedDistances",
    "Evaluation",
    "LabelMatch",
    "LabelResult",
    "MetricsConfig",
    "Surface",
    "SurfaceDistances",
    "box_plots",
    "compute_metrics",
    "dice_per_label",
    "evaluate_pair",
    "evaluate_paths",
    "extract_surface",
    "find_case_pairs",
    "format_table",
    "image_diagonal_mm",
    "label_key",
    "match_labels",
    "overlap_from_counts",
    "overlap_metrics",
    "read_segmentation",
    "results_to_csv",
    "results_to_json",
    "summarize",
    "surface_distances",
    "surface_metrics",
    "surfel_area_table",
    "weighted_percentile",
]
