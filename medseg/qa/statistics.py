"""Per-organ statistics of training contours, the reference for "outside the distribution".

:func:`organ_statistics` measures the ground-truth label maps a model was trained on
(:func:`medseg.qa.measure.measure_organs`) and summarises each organ: volume (cm³; mean, sd,
quantiles and the mean/sd of its logarithm), lateral offset from the midline (mm), number of
connected components. The review flags (:mod:`medseg.qa.flags`) compare a new contour to these.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from medseg.qa.measure import OrganMeasure, measure_organs

logger = logging.getLogger(__name__)

__all__ = ["organ_statistics", "summarise_measures"]


def _q(a: np.ndarray[Any, Any], q: float) -> float:
    return round(float(np.quantile(a, q)), 4)


def summarise_measures(measures: Iterable[OrganMeasure]) -> dict[str, Any]:
    """Summary of one organ's measurements over patients (missing organs are left out).

    Examples
    --------
    >>> from medseg.qa.measure import OrganMeasure
    >>> ms = [OrganMeasure("P", 10, v, 1, 1.0, (40.0, 0, 0), 40.0, "L") for v in (10.0, 20.0, 40.0)]
    >>> s = summarise_measures(ms)
    >>> s["n"], s["volume_cm3"]["q50"], round(s["log_volume"]["mean"], 3), s["components"]["max"]
    (3, 20.0, 2.996, 1)
    """
    ms = [m for m in measures if m.voxels > 0]
    if not ms:
        return {"n": 0}
    vol = np.array([m.volume_cm3 for m in ms], float)
    logv = np.log(vol)
    comp = np.array([m.components for m in ms], int)
    offs = np.array([m.lateral_offset_mm for m in ms if m.lateral_offset_mm is not None], float)
    sd = float(vol.std(ddof=1)) if vol.size > 1 else 0.0
    out: dict[str, Any] = {
        "n": len(ms),
        "volume_cm3": {
            "mean": round(float(vol.mean()), 4),
            "sd": round(sd, 4),
            "min": round(float(vol.min()), 4),
            "max": round(float(vol.max()), 4),
            **{
                f"q{int(q * 100):02d}": _q(vol, q)
                for q in (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
            },
            "values": [round(float(v), 3) for v in vol],
        },
        "log_volume": {
            "mean": round(float(logv.mean()), 5),
            "sd": round(float(logv.std(ddof=1)) if logv.size > 1 else 0.0, 5),
        },
        "components": {
            "max": int(comp.max()),
            "mean": round(float(comp.mean()), 3),
            "min_largest_fraction": round(min(m.largest_fraction for m in ms), 4),
        },
        "sides": {s: sum(m.side == s for m in ms) for s in ("L", "R", "midline")},
    }
    if offs.size:
        out["lateral_offset_mm"] = {
            "mean": round(float(offs.mean()), 3),
            "sd": round(float(offs.std(ddof=1)) if offs.size > 1 else 0.0, 3),
            "min": round(float(offs.min()), 3),
            "max": round(float(offs.max()), 3),
        }
    return out


def organ_statistics(
    case_folders: Sequence[str | os.PathLike[str]], labels: Sequence[str]
) -> dict[str, Any]:
    """Per-organ statistics of OpenKBP ground-truth contours.

    Only organs a patient *has* (its contour file exists) are counted, so partially contoured
    patients can be given.

    Parameters
    ----------
    case_folders
        OpenKBP patient folders.
    labels
        Organ names in label-id order (the segmentation model's labels).

    Returns
    -------
    dict
        ``{"cases": [...], "organs": {name: summary}}`` (see :func:`summarise_measures`).
    """
    from medseg.io.openkbp import load_openkbp_labels, openkbp_available_labels

    per_organ: dict[str, list[OrganMeasure]] = {n: [] for n in labels}
    cases = []
    for folder in case_folders:
        available = set(openkbp_available_labels(folder, labels))
        lv = load_openkbp_labels(folder, [n for n in labels])
        found = measure_organs(lv.array, lv.affine, lv.label_map)
        for name in labels:
            if name in available:
                per_organ[name].append(found[name])
        cases.append(os.path.basename(os.fspath(folder)))
    return {"cases": cases, "organs": {n: summarise_measures(v) for n, v in per_organ.items()}}
