"""2-D instance segmentation of wound and skin-lesion photographs (torchvision Mask R-CNN).

Modules: :mod:`~medseg.photo.datasets` (mask-PNG dataset readers, EXIF orientation, grouped
splits), :mod:`~medseg.photo.models` (builders, no downloads), :mod:`~medseg.photo.training`,
:mod:`~medseg.photo.predict`, :mod:`~medseg.photo.measure`, :mod:`~medseg.photo.series` (area
over time), :mod:`~medseg.photo.evaluate`.
See ``docs/photo.md``.
"""

from __future__ import annotations

from medseg.photo.checkpoint import load_photo_model
from medseg.photo.datasets import (
    find_pairs,
    instances_from_mask,
    read_mask,
    read_photo,
    split_pairs,
)
from medseg.photo.evaluate import dice_jaccard, evaluate_folders
from medseg.photo.inference import PhotoPrediction, overlay, predict_array
from medseg.photo.measure import Calibration, detect_circular_marker, measure_mask
from medseg.photo.models import ModelSpec, build_maskrcnn
from medseg.photo.predict import predict_files
from medseg.photo.series import build_series

__all__ = [
    "Calibration",
    "ModelSpec",
    "PhotoPrediction",
    "build_maskrcnn",
    "build_series",
    "detect_circular_marker",
    "dice_jaccard",
    "evaluate_folders",
    "find_pairs",
    "instances_from_mask",
    "load_photo_model",
    "measure_mask",
    "overlay",
    "predict_array",
    "predict_files",
    "read_mask",
    "read_photo",
    "split_pairs",
]
