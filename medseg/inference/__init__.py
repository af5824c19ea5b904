"""Inference: the :class:`Predictor` (CT in, labels on the CT's own grid out).

>>> from medseg.inference import InferenceConfig
>>> InferenceConfig().overlap
0.5
"""

from __future__ import annotations

from medseg.inference.allocator import fix_mmap_threshold
from medseg.inference.postprocessing import (
    PostprocessConfig,
    fill_label_holes,
    keep_largest_component,
    label_side,
    laterality_warnings,
    postprocess_labels,
    remove_small_labels,
)
from medseg.inference.predictor import (
    PRECISIONS,
    InferenceConfig,
    Predictor,
    resolve_device,
    resolve_precision,
)
from medseg.inference.sliding_window import (
    SlidingWindowResult,
    WindowConfig,
    flip_combinations,
    gaussian_importance_map,
    sliding_window_labels,
    window_starts,
)

__all__ = [
    "PRECISIONS",
    "InferenceConfig",
    "PostprocessConfig",
    "Predictor",
    "SlidingWindowResult",
    "WindowConfig",
    "fill_label_holes",
    "fix_mmap_threshold",
    "flip_combinations",
    "gaussian_importance_map",
    "keep_largest_component",
    "label_side",
    "laterality_warnings",
    "postprocess_labels",
    "remove_small_labels",
    "resolve_device",
    "resolve_precision",
    "sliding_window_labels",
    "window_starts",
]
