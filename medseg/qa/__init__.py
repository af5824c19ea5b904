"""Quality assurance of contours: review flags per organ, a review score, an HTML report.

- :func:`review_labels` — flags (missing, volume, laterality, fragments, shape, confidence, TTA,
  model) and the combined review score of every organ of a label map, against a
  :class:`ReviewModel` (training statistics from :func:`organ_statistics` + the review SRM,
  :class:`ShapeModel`).
- :func:`write_report` — ``OUT/report/index.html`` for a contouring batch.

See docs/qa.md for the flags' validation.
"""

from __future__ import annotations

from medseg.qa.flags import (
    DEFAULT_THRESHOLDS,
    FLAG_NAMES,
    Flag,
    OrganReview,
    organ_flags,
    review_labels,
    tta_disagreement,
)
from medseg.qa.measure import OrganMeasure, measure_organs
from medseg.qa.model import ReviewModel, fit_review_model, load_review_model, review_model_paths
from medseg.qa.records import StudyRecord, StudySources
from medseg.qa.report import write_report
from medseg.qa.shape import ShapeModel, ShapeTrainConfig, train_shape_model
from medseg.qa.statistics import organ_statistics

__all__ = [
    "DEFAULT_THRESHOLDS",
    "FLAG_NAMES",
    "Flag",
    "OrganMeasure",
    "OrganReview",
    "ReviewModel",
    "ShapeModel",
    "ShapeTrainConfig",
    "StudyRecord",
    "StudySources",
    "fit_review_model",
    "load_review_model",
    "measure_organs",
    "organ_flags",
    "organ_statistics",
    "review_labels",
    "review_model_paths",
    "train_shape_model",
    "tta_disagreement",
    "write_report",
]
