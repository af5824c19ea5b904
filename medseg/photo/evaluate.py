"""Per-image Dice and Jaccard of binary photo masks (ISIC challenge definition).

The ISIC 2017 challenge (task 1) scores each image by the Jaccard index of the binary lesion
mask, ``|P ∩ R| / |P ∪ R|``, and ranks by the mean over images (not a pooled pixel count). Dice
is ``2|P ∩ R| / (|P| + |R|)``. ISIC 2018 additionally reported a *thresholded* Jaccard (a
per-image score below 0.65 counts as 0), given here too. Empty-mask rule (explicit): both
empty -> 1.0 (a correct "no wound"); exactly one empty -> 0.0.

Some wound-segmentation papers instead report a *pooled* ("data-based") Dice: intersections and
areas summed over all images first, ``2 Σ|P ∩ R| / (Σ|P| + Σ|R|)``. It weights each image by its
wound's size, so a missed 50-pixel wound barely moves it while it costs a whole image in the
mean. Both are given (``pooled_dice``, ``pooled_jaccard``); say which one you compare with.

The scores themselves come from :func:`medseg.metrics.overlap_from_counts` (the CT metrics'
definitions and empty-mask rules, on pixel counts); this module only counts pixels and pools.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from medseg.errors import InputError
from medseg.metrics import overlap_from_counts
from medseg.photo.datasets import IMAGE_SUFFIXES, read_mask
from medseg.photo.outputs import check_output_file, write_text

logger = logging.getLogger(__name__)

__all__ = [
    "ImageScore",
    "dice_jaccard",
    "evaluate_folders",
    "pick_threshold",
    "score_pairs",
    "summarise",
]


def dice_jaccard(pred: npt.NDArray[np.bool_], ref: npt.NDArray[np.bool_]) -> tuple[float, float]:
    """Dice and Jaccard of two boolean masks of the same shape.

    >>> a = np.zeros((4, 4), bool); a[:2] = True
    >>> b = np.zeros((4, 4), bool); b[1:3] = True
    >>> dice_jaccard(a, b)
    (0.5, 0.3333333333333333)
    >>> dice_jaccard(np.zeros((2, 2), bool), np.zeros((2, 2), bool))
    (1.0, 1.0)
    """
    return _from_counts(*_counts(pred, ref))


def _counts(pred: npt.NDArray[np.bool_], ref: npt.NDArray[np.bool_]) -> tuple[int, int, int]:
    """Intersection, prediction and reference pixel counts of two same-shape masks."""
    if pred.shape != ref.shape:
        raise InputError(f"mask shapes differ: prediction {pred.shape} vs reference {ref.shape}.")
    return int(np.logical_and(pred, ref).sum()), int(pred.sum()), int(ref.sum())


def _from_counts(inter: int, pred_area: int, ref_area: int) -> tuple[float, float]:
    """Dice and Jaccard from pixel counts via :func:`medseg.metrics.overlap_from_counts`
    (both empty -> 1.0, exactly one empty -> 0.0)."""
    scores = overlap_from_counts(inter, pred_area, ref_area, 1.0, both_empty_value=1.0)
    # never None: both_empty_value is a number
    return float(cast(float, scores["dice"])), float(cast(float, scores["jaccard"]))


@dataclass(frozen=True)
class ImageScore:
    """Scores of one image."""

    name: str
    dice: float
    jaccard: float
    pred_area_px: int
    ref_area_px: int
    intersection_px: int = 0


def summarise(scores: Sequence[ImageScore]) -> dict[str, Any]:
    """Means (and the ISIC 2018 thresholded Jaccard) over per-image scores.

    Photos whose reference is empty score 1.0 when nothing is predicted, which lifts the mean;
    the means over photos with a non-empty reference are therefore reported separately.

    >>> summarise([ImageScore("a", 1.0, 1.0, 1, 1), ImageScore("b", 0.5, 0.6, 1, 1)])["mean_dice"]
    0.75

    Pooled over images, a large good image outweighs a small missed one:

    >>> big, missed = ImageScore("a", 0.9, 0.818, 90, 110, 90), ImageScore("b", 0.0, 0.0, 0, 10)
    >>> s = summarise([big, missed]); s["mean_dice"], round(s["pooled_dice"], 4)
    (0.45, 0.8571)
    """
    if not scores:
        return {"n_images": 0}
    dice = np.array([s.dice for s in scores])
    jac = np.array([s.jaccard for s in scores])
    nonempty = [s for s in scores if s.ref_area_px > 0]
    return {
        "n_images": len(scores),
        "n_empty_reference": len(scores) - len(nonempty),
        "mean_dice_nonempty_reference": float(np.mean([s.dice for s in nonempty]))
        if nonempty
        else float("nan"),
        "mean_jaccard_nonempty_reference": float(np.mean([s.jaccard for s in nonempty]))
        if nonempty
        else float("nan"),
        "mean_dice": float(dice.mean()),
        "median_dice": float(np.median(dice)),
        "mean_jaccard": float(jac.mean()),
        "thresholded_jaccard_0.65": float(np.where(jac < 0.65, 0.0, jac).mean()),
        **_pooled(scores),
    }


def _pooled(scores: Sequence[ImageScore]) -> dict[str, float]:
    """Dice and Jaccard of all images' pixels taken together (1.0 when every mask is empty)."""
    dice, jaccard = _from_counts(
        sum(s.intersection_px for s in scores),
        sum(s.pred_area_px for s in scores),
        sum(s.ref_area_px for s in scores),
    )
    return {"pooled_dice": dice, "pooled_jaccard": jaccard}


def _index(folder: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        stem = path.stem
        for suffix in ("_mask", "_segmentation"):
            if stem.endswith(suffix):
                stem = stem[: -len(suffix)]
        if path.stem.endswith("_overlay"):
            continue
        out[stem] = path
    return out


def score_pairs(pairs: Sequence[tuple[str, Path, Path]]) -> list[ImageScore]:
    """Score ``(name, prediction mask, reference mask)`` files; sorted by name.

    Raises
    ------
    InputError
        Unreadable masks or a shape mismatch.
    """
    scores = []
    for name, pred_path, ref_path in sorted(pairs):
        pred, ref = read_mask(pred_path), read_mask(ref_path)
        if pred.shape != ref.shape:
            raise InputError(
                f"{name}: prediction {Path(pred_path).name} is {pred.shape}, reference is "
                f"{ref.shape}."
            )
        inter, pred_area, ref_area = _counts(pred, ref)
        dice, jac = _from_counts(inter, pred_area, ref_area)
        scores.append(ImageScore(name, dice, jac, pred_area, ref_area, inter))
    return scores


def evaluate_folders(
    pred_dir: str | Path,
    ref_dir: str | Path,
    *,
    output: str | Path | None = None,
    overwrite: bool = False,
) -> tuple[list[ImageScore], dict[str, Any]]:
    """Score every reference mask against the prediction of the same name.

    With ``output`` the scores are also written there as JSON (:func:`scores_json`,
    atomically); an existing ``output`` is refused before any work unless ``overwrite``.

    Predictions are ``<stem>_mask.png`` (as written by ``medseg photo predict``) or
    ``<stem>.png``; references ``<stem>.png`` or ``<stem>_segmentation.png``. A reference
    without prediction is an error (a missing prediction is not an empty one).

    Returns
    -------
    scores, summary
        Per-image scores (sorted by name) and :func:`summarise` of them.

    Raises
    ------
    InputError
        Missing folders, no common names, missing predictions, shape mismatch, or an existing
        ``output`` without ``overwrite``.
    """
    if output is not None:
        check_output_file(Path(output), overwrite=overwrite)
    pred_dir, ref_dir = Path(pred_dir), Path(ref_dir)
    for folder in (pred_dir, ref_dir):
        if not folder.is_dir():
            raise InputError(f"{folder} is not a folder of mask PNGs.")
    preds, refs = _index(pred_dir), _index(ref_dir)
    if not refs:
        raise InputError(f"no mask images in {ref_dir}.")
    missing = sorted(set(refs) - set(preds))
    if missing:
        raise InputError(
            f"{len(missing)} reference mask(s) have no prediction in {pred_dir} (first: "
            f"{missing[0]}); expected {missing[0]}_mask.png. Run `medseg photo predict` on them."
        )
    scores = score_pairs([(name, preds[name], refs[name]) for name in refs])
    summary = summarise(scores)
    if output is not None:
        write_text(Path(output), scores_json(scores, summary), overwrite=overwrite)
    return scores, summary


def scores_table(scores: Sequence[ImageScore], summary: dict[str, Any]) -> str:
    """Plain-text table of per-image scores and the means."""
    lines = [f"{'image':<32} {'dice':>7} {'jaccard':>8} {'pred_px':>9} {'ref_px':>9}"]
    for s in scores:
        lines.append(
            f"{s.name:<32} {s.dice:7.4f} {s.jaccard:8.4f} {s.pred_area_px:9d} {s.ref_area_px:9d}"
        )
    if scores:
        lines.append(
            f"{'MEAN (n=' + str(summary['n_images']) + ')':<32} {summary['mean_dice']:7.4f} "
            f"{summary['mean_jaccard']:8.4f}"
        )
        lines.append(
            f"{'POOLED (all pixels)':<32} {summary['pooled_dice']:7.4f} "
            f"{summary['pooled_jaccard']:8.4f}"
        )
    return "\n".join(lines)


def scores_json(scores: Sequence[ImageScore], summary: dict[str, Any]) -> str:
    """JSON text with ``summary`` and ``images`` (list of per-image dicts)."""
    return json.dumps(
        {"summary": summary, "images": [s.__dict__ for s in scores]}, indent=2, sort_keys=True
    )


def pick_threshold(table: dict[float, float], tolerance: float = 0.005) -> float:
    """The highest threshold whose mean Dice is within ``tolerance`` of the best one.

    >>> pick_threshold({0.1: 0.875, 0.5: 0.874, 0.7: 0.863})
    0.5
    >>> pick_threshold({0.1: 0.875, 0.5: 0.874, 0.7: 0.863}, tolerance=0.0)
    0.1
    """
    top = max(table.values())
    return max(t for t, dice in table.items() if dice >= top - tolerance - 1e-9)
