"""Review flags per organ, each with a reason a person understands, and one review score.

Each flag has a *severity* on a common scale: 0 is typical of the training contours, 1 is the
flag's threshold (the contour is flagged at ≥ 1), larger is worse. The combined review score of
an organ is its largest severity, so an organ is flagged when any of its flags is.

========== ======================================================================================
flag       severity
========== ======================================================================================
missing    :data:`MISSING_SEVERITY` when the organ has no voxel
volume     ``|z| / volume_z`` with ``z`` the log-volume z-score against the training contours
laterality left/right organs: ``(laterality_mm - d) / laterality_mm``, ``d`` the distance of the
           centroid from the midline towards the organ's own side (≥ 1 on the midline or beyond);
           midline organs: ``|offset| / midline_mm``
fragments  ``(1 - largest component share) / fragments`` when there are more components than in
           any training contour, else 0
shape      SRM reconstruction error ``/ (shape_k ×`` the 95th percentile of the training shapes'
           errors of that organ``)``
confidence the network's own expected Dice of its contour (soft probabilities against the final
           mask, :func:`medseg.inference.quality.expected_dice`): ``(1 - expected Dice) /
           (1 - expected_dice)`` (≥ 1 when the network expects Dice below ``expected_dice``)
tta        ``1 -`` mean Dice of the test-time-augmentation predictions with their consensus,
           ``/ tta``
model      the segmentation model's own record on this organ: ``(1 - validation Dice) /
           (1 - model_dice)`` (≥ 1 when the model's mean validation Dice for the organ is below
           ``model_dice``: every contour of that organ needs a look)
========== ======================================================================================
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from medseg.inference.quality import tta_disagreement
from medseg.qa.measure import OrganMeasure, expected_side, measure_organs

__all__ = [
    "DEFAULT_THRESHOLDS",
    "FLAG_NAMES",
    "MISSING_SEVERITY",
    "Flag",
    "OrganReview",
    "organ_flags",
    "review_labels",
    "tta_disagreement",
]

#: Flags in display order.
FLAG_NAMES: tuple[str, ...] = (
    "missing",
    "volume",
    "laterality",
    "fragments",
    "shape",
    "confidence",
    "tta",
    "model",
)
#: Severity of a missing organ (above any other flag, so missing organs sort first).
MISSING_SEVERITY = 10.0
#: Thresholds (units in the module docstring); fixed before the validation in docs/qa.md.
DEFAULT_THRESHOLDS: dict[str, float] = {
    "volume_z": 2.5,
    "laterality_mm": 10.0,
    "midline_mm": 15.0,
    "fragments": 0.05,
    "shape_k": 1.5,
    "tta": 0.15,
    "expected_dice": 0.7,
    "model_dice": 0.7,
}
_MIN_LOG_SD = 0.1


@dataclass(frozen=True)
class Flag:
    """One review flag of one organ.

    Attributes
    ----------
    name
        One of :data:`FLAG_NAMES`.
    severity
        0 typical, ≥ 1 flagged.
    reason
        A sentence for the reviewer.
    """

    name: str
    severity: float
    reason: str

    @property
    def flagged(self) -> bool:
        """Severity at or above the threshold."""
        return self.severity >= 1.0


@dataclass(frozen=True)
class OrganReview:
    """Measurements, flags and review score of one organ.

    Attributes
    ----------
    measure
        :class:`~medseg.qa.measure.OrganMeasure` of the contour.
    flags
        Every computed flag (flagged or not), in :data:`FLAG_NAMES` order.
    score
        Combined review score: the largest severity (0 when nothing was computed).
    volume_z
        Log-volume z-score against the training contours (``None`` without statistics).
    shape_error
        SRM reconstruction error (``None`` without SRM or organ).
    """

    measure: OrganMeasure
    flags: tuple[Flag, ...]
    score: float
    volume_z: float | None = None
    shape_error: float | None = None

    @property
    def flagged(self) -> bool:
        """Any flag at or above its threshold."""
        return self.score >= 1.0

    @property
    def reasons(self) -> list[str]:
        """The reasons of the raised flags, worst first."""
        return [f.reason for f in sorted(self.flags, key=lambda f: -f.severity) if f.flagged]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dictionary."""
        return {
            "measure": self.measure.to_json(),
            "flags": [asdict(f) | {"flagged": f.flagged} for f in self.flags],
            "score": self.score,
            "flagged": self.flagged,
            "volume_z": self.volume_z,
            "shape_error": self.shape_error,
        }


def _r(x: float) -> float:
    return round(float(x), 3)


def _volume_flag(
    m: OrganMeasure, stats: Mapping[str, Any], thr: float
) -> tuple[Flag | None, float | None]:
    lv = stats.get("log_volume")
    if not lv or stats.get("n", 0) < 2:
        return None, None
    z = (math.log(m.volume_cm3) - lv["mean"]) / max(lv["sd"], _MIN_LOG_SD)
    vol = stats["volume_cm3"]
    where = "below" if z < 0 else "above"
    reason = (
        f"volume {m.volume_cm3:.1f} cm³ is {where} the training contours "
        f"({vol['min']:.1f}–{vol['max']:.1f} cm³ in {stats['n']} patients; z = {z:+.1f})"
    )
    return Flag("volume", _r(abs(z) / thr), reason), z


def _laterality_flag(m: OrganMeasure, thresholds: Mapping[str, float]) -> Flag | None:
    side = expected_side(m.name)
    if side is None or m.lateral_offset_mm is None:
        return None
    off = m.lateral_offset_mm
    if side == "midline":
        sev = abs(off) / thresholds["midline_mm"]
        where = "left" if off > 0 else "right"
        return Flag(
            "laterality",
            _r(sev),
            f"centroid {abs(off):.0f} mm to the patient's {where} of the midline (a midline organ)",
        )
    d = off if side == "L" else -off
    tol = thresholds["laterality_mm"]
    sev = max(0.0, (tol - d) / tol)
    own = "left" if side == "L" else "right"
    if d < 0:
        reason = (
            f"on the patient's wrong side: centroid {abs(d):.0f} mm across the midline "
            f"from the {own}"
        )
    else:
        reason = (
            f"centroid only {d:.0f} mm to the patient's {own} of the midline "
            f"(expected > {tol:.0f} mm)"
        )
    return Flag("laterality", _r(sev), reason)


def _fragments_flag(m: OrganMeasure, stats: Mapping[str, Any], thr: float) -> Flag:
    max_train = int(stats.get("components", {}).get("max", 1))
    if m.components <= max_train:
        return Flag("fragments", 0.0, f"{m.components} connected component(s)")
    outside = 1.0 - m.largest_fraction
    return Flag(
        "fragments",
        _r(outside / thr),
        f"{m.components} disconnected pieces ({outside:.0%} of the volume outside the largest; "
        f"training contours have at most {max_train})",
    )


def _shape_flag(err: float, cal: Mapping[str, float], k: float) -> Flag:
    ref = max(float(cal.get("q95", 0.0)), 0.01)
    return Flag(
        "shape",
        _r(err / (k * ref)),
        f"implausible shape: the shape model reconstructs it with error {err:.2f} (1 − Dice); "
        f"training shapes {cal.get('q50', 0):.2f} median, {ref:.2f} at the 95th percentile",
    )


def organ_flags(
    measure: OrganMeasure,
    statistics: Mapping[str, Any] | None,
    thresholds: Mapping[str, float] | None = None,
    *,
    shape_error: float | None = None,
    shape_calibration: Mapping[str, float] | None = None,
    tta_disagreement: float | None = None,
    model_dice: float | None = None,
    expected_dice: float | None = None,
) -> OrganReview:
    """Flags and review score of one organ from its measurements (pure; see module docstring).

    Parameters
    ----------
    measure
        The organ's :class:`~medseg.qa.measure.OrganMeasure`.
    statistics
        Its training summary (:func:`~medseg.qa.statistics.summarise_measures`) or ``None``.
    thresholds
        Overrides of :data:`DEFAULT_THRESHOLDS`.
    shape_error, shape_calibration
        SRM reconstruction error and the organ's calibration on training shapes.
    tta_disagreement
        ``1 -`` mean Dice of TTA predictions with their consensus (``--tta`` only).
    model_dice
        The segmentation model's mean validation Dice for this organ (its checkpoint metrics).
    expected_dice
        The network's expected Dice of this contour from its probabilities
        (:func:`medseg.inference.quality.expected_dice`), when the segmentation recorded it.

    Examples
    --------
    >>> from medseg.qa.measure import OrganMeasure
    >>> stats = {"n": 20, "log_volume": {"mean": 3.3, "sd": 0.3},
    ...          "volume_cm3": {"min": 15.0, "max": 45.0}, "components": {"max": 1}}
    >>> m = OrganMeasure("LeftParotid", 500, 4.0, 1, 1.0, (-40.0, 0.0, 0.0), -40.0, "R")
    >>> r = organ_flags(m, stats)
    >>> r.flagged, [f.name for f in r.flags if f.flagged]
    (True, ['volume', 'laterality'])
    >>> print(r.reasons[0])
    on the patient's wrong side: centroid 40 mm across the midline from the left
    >>> organ_flags(OrganMeasure("Larynx", 0, 0.0, 0, 0.0, None, None, None), stats).score
    10.0
    """
    thr = {**DEFAULT_THRESHOLDS, **(thresholds or {})}
    stats = statistics or {}
    if measure.voxels == 0:
        flag = Flag("missing", MISSING_SEVERITY, "missing: no voxel of this organ was segmented")
        return OrganReview(measure, (flag,), MISSING_SEVERITY)
    flags: list[Flag] = [Flag("missing", 0.0, "present")]
    vflag, z = _volume_flag(measure, stats, thr["volume_z"])
    if vflag is not None:
        flags.append(vflag)
    lflag = _laterality_flag(measure, thr)
    if lflag is not None:
        flags.append(lflag)
    flags.append(_fragments_flag(measure, stats, thr["fragments"]))
    if shape_error is not None and shape_calibration:
        flags.append(_shape_flag(shape_error, shape_calibration, thr["shape_k"]))
    if expected_dice is not None:
        limit = thr["expected_dice"]
        flags.append(
            Flag(
                "confidence",
                _r((1.0 - expected_dice) / max(1.0 - limit, 1e-6)),
                f"the network is unsure of this contour: its probabilities expect Dice "
                f"{expected_dice:.2f} (flagged below {limit:.2f})",
            )
        )
    if tta_disagreement is not None:
        flags.append(
            Flag(
                "tta",
                _r(tta_disagreement / thr["tta"]),
                f"test-time augmentation disagrees: predictions overlap their consensus with "
                f"mean Dice {1 - tta_disagreement:.2f}",
            )
        )
    if model_dice is not None:
        limit = thr["model_dice"]
        flags.append(
            Flag(
                "model",
                _r((1.0 - model_dice) / max(1.0 - limit, 1e-6)),
                f"the model is weak on this organ: validation Dice {model_dice:.2f} "
                f"(below {limit:.2f} every contour needs a look)",
            )
        )
    score = max(f.severity for f in flags)
    return OrganReview(
        measure,
        tuple(flags),
        _r(score),
        None if z is None else _r(z),
        shape_error,
    )


def review_labels(
    labels: npt.NDArray[np.integer],
    affine: npt.NDArray[np.float64],
    model: Any,
    *,
    body: npt.NDArray[np.bool_] | None = None,
    tta: Mapping[str, float] | None = None,
    expected_dice: Mapping[str, float] | None = None,
) -> dict[str, OrganReview]:
    """Review every organ of a label map against a :class:`~medseg.qa.model.ReviewModel`.

    Parameters
    ----------
    labels
        Label array ``(slice, row, column)`` with the review model's label ids (1..K in
        ``model.labels`` order).
    affine
        Index → LPS mm affine.
    model
        :class:`~medseg.qa.model.ReviewModel`.
    body
        Optional body mask (midline when no midline organ is present).
    tta
        Organ → TTA disagreement (from :func:`tta_disagreement`), when ``--tta`` was on.
    expected_dice
        Organ → the network's expected Dice (``quality`` of the study's ``segmentation.json``).

    Returns
    -------
    dict
        Organ name → :class:`OrganReview`, in label order.
    """
    from medseg.volume import LabelMap, Volume

    label_map = LabelMap.from_names(list(model.labels))
    measures = measure_organs(labels, affine, label_map, body=body)
    errors: dict[str, float] = {}
    if model.shape is not None:
        errors = model.shape.errors(Volume(np.asarray(labels), affine))
    out = {}
    for name, m in measures.items():
        cal = model.shape.calibration.get(name) if model.shape is not None else None
        out[name] = organ_flags(
            m,
            model.statistics.get(name),
            model.thresholds,
            shape_error=errors.get(name),
            shape_calibration=cal,
            tta_disagreement=None if tta is None else tta.get(name),
            expected_dice=None if expected_dice is None else expected_dice.get(name),
            model_dice=model.model_dice.get(name),
        )
    return out
