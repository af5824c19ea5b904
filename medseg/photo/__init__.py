"""2-D instance segmentation of wound and skin-lesion photographs (torchvision Mask R-CNN).

Modules: :mod:`~medseg.photo.datasets` (mask-PNG dataset readers, EXIF orientation, 16-bit
scaling, size checks, grouped splits), :mod:`~medseg.photo.models` (builders, no downloads),
:mod:`~medseg.photo.checkpoint` (typed checkpoints), :mod:`~medseg.photo.config` (training
config, ``--set`` overrides), :mod:`~medseg.photo.training`, :mod:`~medseg.photo.predict`,
:mod:`~medseg.photo.measure`, :mod:`~medseg.photo.series` (area over time),
:mod:`~medseg.photo.evaluate`, :mod:`~medseg.photo.crossval` (cross-validation).
Device and precision come from :mod:`medseg.runtime`.
See ``docs/photo.md``.
"""

from __future__ import annotations

from medseg.photo.checkpoint import PhotoCheckpointInfo, load_photo_model
from medseg.photo.config import TrainConfig, load_train_config, parse_overrides
from medseg.photo.crossval import evaluate_held_out, run_cross_validation
from medseg.photo.datasets import (
    check_photo,
    find_pairs,
    instances_from_mask,
    read_mask,
    read_photo,
    split_pairs,
)
from medseg.photo.evaluate import dice_jaccard, evaluate_folders
from medseg.photo.inference import PhotoPrediction, overlay, predict_array
from medseg.photo.measure import (
    Calibration,
    detect_circular_marker,
    measure_files,
    measure_mask,
)
from medseg.photo.models import ModelSpec, build_maskrcnn
from medseg.photo.predict import predict_files
from medseg.photo.series import build_series

__all__ = [
    "Calibration",
    "ModelSpec",
    "PhotoCheckpointInfo",
    "PhotoPrediction",
    "TrainConfig",
    "build_maskrcnn",
    "build_series",
    "check_photo",
    "detect_circular_marker",
    "dice_jaccard",
    "evaluate_folders",
    "evaluate_held_out",
    "find_pairs",
    "instances_from_mask",
    "load_photo_model",
    "load_train_config",
    "measure_files",
    "measure_mask",
    "overlay",
    "parse_overrides",
    "predict_array",
    "predict_files",
    "read_mask",
    "read_photo",
    "run_cross_validation",
    "split_pairs",
]
