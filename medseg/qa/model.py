"""The review model: training statistics, shape model and thresholds, shipped beside a checkpoint.

Files (for a segmentation checkpoint ``hn_oar.pt``)::

    medseg/weights/hn_oar_qa.json   per-organ training statistics, flag thresholds, provenance
    medseg/weights/hn_oar_srm.pt    the review SRM (shape autoencoder + its calibration)

:func:`fit_review_model` makes both from ground-truth OpenKBP patients; :func:`load_review_model`
reads them (:class:`ReviewModel`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medseg.errors import ModelError
from medseg.io.atomic import write_atomic
from medseg.qa.shape import ShapeModel, ShapeTrainConfig, train_shape_model
from medseg.qa.statistics import organ_statistics

logger = logging.getLogger(__name__)

__all__ = [
    "QA_FORMAT",
    "ReviewModel",
    "fit_review_model",
    "load_review_model",
    "model_validation_dice",
    "review_model_paths",
]

QA_FORMAT = "medseg-qa"
QA_FORMAT_VERSION = 1


@dataclass
class ReviewModel:
    """What the review flags compare a contour to.

    Attributes
    ----------
    labels
        Organ names (the segmentation model's label order).
    statistics
        Organ → training summary (:func:`medseg.qa.statistics.summarise_measures`).
    thresholds
        Flag name → threshold on its severity scale (see :mod:`medseg.qa.flags`).
    shape
        The review SRM, or ``None`` (the shape flag is then not computed).
    info
        Provenance: training cases, segmentation model, SRM training settings.
    model_dice
        Organ → the segmentation model's mean validation Dice (from its checkpoint's metrics;
        see :func:`model_validation_dice`), for the ``model`` flag. Empty: no such flag.
    """

    labels: tuple[str, ...]
    statistics: dict[str, Any]
    thresholds: dict[str, float] = field(default_factory=dict)
    shape: ShapeModel | None = None
    info: dict[str, Any] = field(default_factory=dict)
    model_dice: dict[str, float] = field(default_factory=dict)


def model_validation_dice(checkpoint: str | os.PathLike[str]) -> dict[str, float]:
    """Organ → mean validation Dice recorded in a segmentation checkpoint (empty if none)."""
    from medseg.models.checkpoint import read_checkpoint

    _, info = read_checkpoint(checkpoint)
    val = info.metrics.get("val_dice") if isinstance(info.metrics, dict) else None
    if not isinstance(val, dict):
        return {}
    return {str(k): float(v) for k, v in val.items() if isinstance(v, int | float)}


def review_model_paths(checkpoint: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``(<stem>_qa.json, <stem>_srm.pt)`` beside a segmentation checkpoint (name or path).

    Examples
    --------
    >>> [p.name for p in review_model_paths("runs/hn_oar_v1.pt")]
    ['hn_oar_v1_qa.json', 'hn_oar_v1_srm.pt']
    """
    from medseg.models.checkpoint import resolve_checkpoint_path

    text = os.fspath(checkpoint)
    path = Path(text) if text.endswith(".pt") else resolve_checkpoint_path(text)
    stem = path.name.removesuffix(".pt")
    return path.with_name(f"{stem}_qa.json"), path.with_name(f"{stem}_srm.pt")


def fit_review_model(  # noqa: PLR0913 -- two inputs, then keyword-only options
    case_folders: Sequence[str | os.PathLike[str]],
    labels: Sequence[str],
    *,
    qa_json: str | os.PathLike[str],
    srm_path: str | os.PathLike[str],
    spec: Any,
    shape_config: ShapeTrainConfig | None = None,
    thresholds: dict[str, float] | None = None,
    info: dict[str, Any] | None = None,
    statistics_folders: Sequence[str | os.PathLike[str]] | None = None,
    shape: ShapeModel | None = None,
) -> ReviewModel:
    """Measure training contours, train and calibrate the review SRM, write both files.

    Parameters
    ----------
    case_folders
        Completely contoured OpenKBP patients the segmentation model was trained on (the SRM
        learns whole organ sets from them).
    labels
        Organ names in label-id order.
    qa_json, srm_path
        Output files (written atomically).
    spec
        :class:`~medseg.preprocess.PreprocessingSpec` of the segmentation model (grid of the SRM).
    shape_config
        SRM training settings.
    thresholds
        Flag thresholds (default :data:`medseg.qa.flags.DEFAULT_THRESHOLDS`).
    info
        Extra provenance stored in the JSON.
    statistics_folders
        Patients whose contours give the per-organ statistics (volume, side, components);
        partially contoured ones count for the organs they have. Default: ``case_folders``.
    shape
        A review SRM already trained on ``case_folders`` (e.g. the one shipped, when only the
        statistics change): reused as it is instead of trained again.
    """
    from medseg.io.openkbp import load_openkbp_labels
    from medseg.qa.flags import DEFAULT_THRESHOLDS

    stats = organ_statistics(
        case_folders if statistics_folders is None else statistics_folders, labels
    )
    from medseg.volume import LabelMap

    label_map = LabelMap.from_names(list(labels))
    cfg = shape_config or ShapeTrainConfig()
    if shape is None:
        volumes = [load_openkbp_labels(f, list(labels)).volume for f in case_folders]
        shape = train_shape_model(volumes, label_map, spec, cfg)
    elif shape.label_map.names != label_map.names:
        raise ModelError(
            f"the review SRM to reuse has labels {shape.label_map.names}, the segmentation model "
            f"{label_map.names}; train a new one (leave shape unset)."
        )
    srm_cases = [os.path.basename(os.fspath(f)) for f in case_folders]
    shape.save(srm_path, metrics={"train_cases": srm_cases})
    meta = {
        **(info or {}),
        "train_cases": stats["cases"],
        "srm_train_cases": srm_cases,
        "srm_file": Path(srm_path).name,
        "srm_config": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(cfg).items()},
    }
    model = ReviewModel(
        tuple(labels), stats["organs"], dict(thresholds or DEFAULT_THRESHOLDS), shape, meta
    )
    payload = {
        "format": QA_FORMAT,
        "format_version": QA_FORMAT_VERSION,
        "labels": list(labels),
        "thresholds": model.thresholds,
        "statistics": model.statistics,
        "shape_calibration": shape.calibration,
        "info": meta,
    }
    write_atomic(qa_json, lambda t: t.write_text(json.dumps(payload, indent=1)))
    return model


def load_review_model(
    qa_json: str | os.PathLike[str], srm_path: str | os.PathLike[str] | None = None
) -> ReviewModel:
    """Read a review model written by :func:`fit_review_model`.

    Parameters
    ----------
    qa_json
        The statistics/thresholds JSON.
    srm_path
        The SRM checkpoint; default: the ``srm_file`` named in the JSON, beside it (no shape
        flag when that file does not exist).

    Raises
    ------
    ModelError
        Not a review-model JSON (wrong format or version).
    """
    path = Path(qa_json)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: cannot read the review model ({exc}).") from exc
    if not isinstance(data, dict) or data.get("format") != QA_FORMAT:
        raise ModelError(f"{path}: not a medseg review model (format {data.get('format')!r}).")
    if int(data.get("format_version", 0)) > QA_FORMAT_VERSION:
        raise ModelError(
            f"{path}: review model format {data['format_version']} is newer than this medseg "
            f"reads ({QA_FORMAT_VERSION}); upgrade medseg."
        )
    info = dict(data.get("info", {}))
    srm_name = str(info.get("srm_file") or "")
    srm = Path(srm_path) if srm_path else (path.with_name(srm_name) if srm_name else None)
    shape = ShapeModel.load(srm) if srm is not None and srm.is_file() else None
    from medseg.qa.flags import DEFAULT_THRESHOLDS

    return ReviewModel(
        tuple(data["labels"]),
        dict(data["statistics"]),
        {**DEFAULT_THRESHOLDS, **data.get("thresholds", {})},
        shape,
        info,
    )
