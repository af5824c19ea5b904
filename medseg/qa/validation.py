"""Validation of the review flags against clinical contours the model never saw.

:func:`predict_cases` segments OpenKBP patient folders with one checkpoint and caches each
prediction as ``<cache>/<case>.npz`` (labels plus a cropped, 8-bit probability map per organ);
:func:`validation_table` scores the cached predictions against the clinical contours that
exist (per organ: Dice, HD95, the QA features and flags) and :func:`flag_performance` gives
ROC AUC, sensitivity and specificity per flag with bootstrap confidence intervals.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from medseg.io.atomic import write_atomic

logger = logging.getLogger(__name__)

__all__ = [
    "bootstrap_ci",
    "load_cached_prediction",
    "predict_cases",
    "roc_auc",
    "sensitivity_specificity",
    "validation_table",
]

#: Probabilities below this are not kept in the cached crops.
_PROB_FLOOR = 0.05


def _prob_crops(
    probs: npt.NDArray[np.float16], k: int
) -> dict[str, npt.NDArray[np.int64 | np.uint8]]:
    out: dict[str, npt.NDArray[np.int64 | np.uint8]] = {}
    for c in range(1, k + 1):
        p = probs[c]
        where = np.argwhere(p >= _PROB_FLOOR)
        if where.size == 0:
            out[f"box_{c}"] = np.zeros(6, np.int64)
            out[f"prob_{c}"] = np.zeros((0, 0, 0), np.uint8)
            continue
        lo, hi = where.min(0), where.max(0) + 1
        crop = p[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]].astype(np.float32)
        out[f"box_{c}"] = np.concatenate([lo, hi]).astype(np.int64)
        out[f"prob_{c}"] = np.round(np.clip(crop, 0, 1) * 255).astype(np.uint8)
    return out


def predict_cases(
    checkpoint: str | os.PathLike[str],
    case_folders: Sequence[str | os.PathLike[str]],
    cache_dir: str | os.PathLike[str],
    *,
    num_threads: int = 1,
) -> list[Path]:
    """Segment OpenKBP patients once and cache the predictions (skips cached cases).

    Parameters
    ----------
    checkpoint
        Segmentation checkpoint (``.pt`` path or shipped name).
    case_folders
        OpenKBP patient folders (``ct.csv`` or ``ct.csv.gz``).
    cache_dir
        Folder of ``<case>.npz`` files: ``labels`` (uint8, the CT grid), ``quality`` (the
        predictor's per-organ expected Dice, JSON), and per organ id ``c`` its probability
        (×255, uint8) cropped to ``box_c`` = (lo0, lo1, lo2, hi0, hi1, hi2).
    num_threads
        Torch CPU threads.

    Returns
    -------
    list of Path
        The cache file of every case, in the order given.
    """
    from medseg.inference import Predictor
    from medseg.io.openkbp import load_openkbp_ct

    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    predictor: Predictor | None = None
    paths = []
    for folder in case_folders:
        dest = cache / f"{Path(folder).name}.npz"
        paths.append(dest)
        if dest.is_file() and _has_quality(dest):
            continue
        if predictor is None:
            predictor = Predictor.from_checkpoint(checkpoint, device="cpu", num_threads=num_threads)
        ct = load_openkbp_ct(folder)
        labels, probs = predictor.predict(ct, return_probabilities=True)
        arrays = {
            "labels": labels.volume.array.astype(np.uint8),
            "affine": labels.volume.affine,
            "quality": np.array(json.dumps(predictor.last_quality)),
            **_prob_crops(probs, len(predictor.label_map)),
        }
        write_atomic(dest, lambda tmp, a=arrays: np.savez_compressed(tmp, **a))  # type: ignore[misc]
        logger.info("cached %s", dest)
    return paths


def _has_quality(path: Path) -> bool:
    """Whether a cache file holds the predictor's per-organ quality (newer caches do)."""
    try:
        with np.load(path) as z:
            return "quality" in z.files
    except (OSError, ValueError):
        return False


def cached_quality(path: str | os.PathLike[str]) -> dict[str, dict[str, float]]:
    """The :attr:`~medseg.inference.Predictor.last_quality` stored by :func:`predict_cases`."""
    with np.load(path) as z:
        return dict(json.loads(str(z["quality"]))) if "quality" in z.files else {}


def load_cached_prediction(
    path: str | os.PathLike[str],
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.float64], dict[int, npt.NDArray[np.float32]]]:
    """Labels, affine and full-grid probability per organ id from a :func:`predict_cases` file."""
    with np.load(path) as z:
        labels = z["labels"]
        affine = z["affine"]
        probs: dict[int, npt.NDArray[np.float32]] = {}
        c = 1
        while f"box_{c}" in z:
            full = np.zeros(labels.shape, np.float32)
            box = z[f"box_{c}"]
            if box[3:].any():
                full[box[0] : box[3], box[1] : box[4], box[2] : box[5]] = z[f"prob_{c}"] / 255.0
            probs[c] = full
            c += 1
    return labels, affine, probs


# ---------------------------------------------------------------------------- scoring flags
def roc_auc(scores: npt.ArrayLike, positive: npt.ArrayLike) -> float:
    """Area under the ROC curve (Mann–Whitney U with ties counted half).

    Examples
    --------
    >>> roc_auc([0.9, 0.8, 0.3, 0.1], [True, True, False, False])
    1.0
    >>> roc_auc([0.5, 0.5, 0.5, 0.5], [True, False, True, False])
    0.5
    >>> roc_auc([0.1, 0.4, 0.35, 0.8], [False, False, True, True])
    0.75
    """
    s = np.asarray(scores, float)
    y = np.asarray(positive, bool)
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    from scipy.stats import rankdata

    ranks = rankdata(s)
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def sensitivity_specificity(flagged: npt.ArrayLike, positive: npt.ArrayLike) -> tuple[float, float]:
    """Share of positives flagged and of negatives not flagged.

    Examples
    --------
    >>> sensitivity_specificity([True, False, True, False], [True, True, False, False])
    (0.5, 0.5)
    """
    f = np.asarray(flagged, bool)
    y = np.asarray(positive, bool)
    sens = float(f[y].mean()) if y.any() else float("nan")
    spec = float((~f[~y]).mean()) if (~y).any() else float("nan")
    return sens, spec


def bootstrap_ci(
    scores: npt.ArrayLike,
    positive: npt.ArrayLike,
    groups: Sequence[str],
    *,
    n: int = 1000,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """95 % percentile intervals of AUC, sensitivity, specificity (threshold 1), by patient.

    Patients (``groups``) are resampled with replacement, so organs of one patient stay
    together.
    """
    s = np.asarray(scores, float)
    y = np.asarray(positive, bool)
    g = np.asarray(groups)
    ids = np.unique(g)
    index = {k: np.flatnonzero(g == k) for k in ids}
    rng = np.random.default_rng(seed)
    out: dict[str, list[float]] = {"auc": [], "sensitivity": [], "specificity": []}
    for _ in range(n):
        take = np.concatenate([index[k] for k in rng.choice(ids, ids.size)])
        auc = roc_auc(s[take], y[take])
        sens, spec = sensitivity_specificity(s[take] >= 1.0, y[take])
        for key, v in (("auc", auc), ("sensitivity", sens), ("specificity", spec)):
            if np.isfinite(v):
                out[key].append(v)
    return {
        k: (round(float(np.quantile(v, 0.025)), 3), round(float(np.quantile(v, 0.975)), 3))
        for k, v in out.items()
        if v
    }


def validation_table(
    cache_files: Sequence[str | os.PathLike[str]],
    case_folders: Sequence[str | os.PathLike[str]],
    model: Any,
) -> list[dict[str, Any]]:
    """One row per (patient, organ with a clinical contour): metrics, features, flags.

    Parameters
    ----------
    cache_files
        :func:`predict_cases` files, in the order of ``case_folders``.
    case_folders
        The OpenKBP patients (their contour files are the references).
    model
        :class:`~medseg.qa.model.ReviewModel`.
    """
    from medseg.io.openkbp import load_openkbp_labels, openkbp_available_labels
    from medseg.qa.flags import FLAG_NAMES, review_labels
    from medseg.qa.report import _reference_metrics
    from medseg.volume import LabelMap, LabelVolume, Volume

    label_map = LabelMap.from_names(list(model.labels))
    rows = []
    for path, folder in zip(cache_files, case_folders, strict=True):
        labels, affine, probs = load_cached_prediction(path)
        have = openkbp_available_labels(folder, model.labels)
        ref = load_openkbp_labels(folder, list(model.labels))
        keep = np.isin(ref.array, [label_map.id_of(n) for n in have])
        ref = LabelVolume(
            ref.volume.with_array(np.where(keep, ref.array, 0).astype(np.uint8)), label_map
        )
        pred = LabelVolume(Volume(labels, affine), label_map)
        metrics = _reference_metrics(pred, ref)
        quality = cached_quality(path)
        expected = {n: q["expected_dice"] for n, q in quality.items() if "expected_dice" in q}
        review = review_labels(labels, affine, model, expected_dice=expected or None)
        for name in have:
            o = review[name]
            lid = label_map.id_of(name)
            mask = labels == lid
            p = probs.get(lid)
            conf = float(p[mask].mean()) if p is not None and mask.any() else 0.0
            sev = {f.name: f.severity for f in o.flags}
            m = metrics.get(name, {})
            rows.append(
                {
                    "case": Path(folder).name,
                    "organ": name,
                    "dice": m.get("dice", 0.0) if mask.any() else 0.0,
                    "hd95": m.get("hd95"),
                    "volume_cm3": o.measure.volume_cm3,
                    "score": o.score,
                    "score_intrinsic": max(
                        (f.severity for f in o.flags if f.name not in ("model", "confidence")),
                        default=0.0,
                    ),
                    "score_without_confidence": max(
                        (f.severity for f in o.flags if f.name != "confidence"), default=0.0
                    ),
                    "expected_dice": expected.get(name),
                    "confidence": round(conf, 4),
                    **{
                        f"sev_{k}": sev.get(k)
                        for k in FLAG_NAMES
                        if k != "tta"  # not validated: refused for a model without mirroring
                    },
                    "shape_error": o.shape_error,
                    "volume_z": o.volume_z,
                }
            )
    return rows


#: Scores evaluated by :func:`flag_performance`: row key → description.
SCORES: dict[str, str] = {
    "score": "combined review score (max severity of all flags; shipped)",
    "score_without_confidence": "combined, without the confidence flag (the flags of before)",
    "score_intrinsic": "combined, without the model and confidence flags (contour-only flags)",
    "sev_missing": "missing organ",
    "sev_volume": "volume outside the training distribution",
    "sev_laterality": "laterality / off-midline",
    "sev_fragments": "disconnected fragments",
    "sev_shape": "SRM shape plausibility",
    "sev_confidence": "the network's expected Dice of the contour (its probabilities)",
    "sev_model": "model weak on this organ (checkpoint's validation Dice)",
    "uncertainty": "1 - mean network probability in the organ (not shipped: experiment)",
}


def flag_performance(
    rows: Sequence[dict[str, Any]],
    *,
    dice_bad: float = 0.7,
    hd95_bad_mm: float | None = None,
    n_boot: int = 1000,
) -> dict[str, Any]:
    """ROC AUC, sensitivity and specificity (severity ≥ 1) of each score for "bad" contours.

    Parameters
    ----------
    rows
        :func:`validation_table` rows.
    dice_bad
        A contour is bad when its Dice with the clinical contour is below this...
    hd95_bad_mm
        ...or (when given) its HD95 is above this (a missing organ is always bad).
    n_boot
        Bootstrap resamples of patients for the 95 % intervals.
    """
    bad = []
    for r in rows:
        hd = r.get("hd95")
        b = r["dice"] < dice_bad
        if hd95_bad_mm is not None:
            b = b or hd is None or hd > hd95_bad_mm
        bad.append(bool(b))
    y = np.asarray(bad)
    groups = [r["case"] for r in rows]
    out: dict[str, Any] = {
        "contours": len(rows),
        "patients": len(set(groups)),
        "bad": int(y.sum()),
        "definition": f"Dice < {dice_bad}"
        + (f" or HD95 > {hd95_bad_mm} mm" if hd95_bad_mm is not None else ""),
        "scores": {},
    }
    for key in SCORES:
        if key == "uncertainty":
            s = np.array([1.0 - float(r["confidence"]) for r in rows])
            flagged = None
        else:
            s = np.array([float(r.get(key) or 0.0) for r in rows])
            flagged = s >= 1.0
        entry: dict[str, Any] = {"auc": round(roc_auc(s, y), 3)}
        if flagged is not None:
            sens, spec = sensitivity_specificity(flagged, y)
            entry |= {
                "sensitivity": round(sens, 3),
                "specificity": round(spec, 3),
                "flagged": int(flagged.sum()),
            }
            if n_boot:
                entry["ci95"] = bootstrap_ci(s, y, groups, n=n_boot)
        elif n_boot:
            entry["ci95"] = {"auc": bootstrap_ci(s, y, groups, n=n_boot)["auc"]}
        out["scores"][key] = entry
    per_organ = {}
    for organ in sorted({r["organ"] for r in rows}):
        idx = [i for i, r in enumerate(rows) if r["organ"] == organ]
        yy = y[idx]
        ss = np.array([float(rows[i]["score"]) for i in idx])
        per_organ[organ] = {
            "contours": len(idx),
            "bad": int(yy.sum()),
            "auc": round(roc_auc(ss, yy), 3),
            "flagged": int((ss >= 1).sum()),
        }
    out["per_organ"] = per_organ
    return out
