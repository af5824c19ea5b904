"""Volume-overlap metrics from voxel counts: Dice, Jaccard, sensitivity, precision, volumes.

With ``tp = |P ∩ R|``, ``n_pred = |P|``, ``n_ref = |R|`` (voxels) and ``v`` the voxel volume:

* ``dice = 2 tp / (n_pred + n_ref)``; ``jaccard = tp / (n_pred + n_ref - tp)``
* ``sensitivity = tp / n_ref``; ``precision = tp / n_pred``
* ``volume_pred_ml = n_pred · v / 1000``; ``volume_difference_ml = (n_pred - n_ref) · v / 1000``
  (signed: positive means over-segmentation)

Empty-mask rules (never NaN): both empty → every score 1 (or ``None`` when excluded); exactly
one empty → every score 0.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

__all__ = ["OVERLAP_SCORES", "dice_per_label", "overlap_from_counts", "overlap_metrics"]

#: Overlap scores in [0, 1], in output order.
OVERLAP_SCORES: tuple[str, ...] = ("dice", "jaccard", "sensitivity", "precision")


def overlap_from_counts(
    tp: int,
    n_pred: int,
    n_ref: int,
    voxel_volume_mm3: float,
    *,
    both_empty_value: float | None = 1.0,
) -> dict[str, float | None]:
    """Overlap metrics from counts, with the empty-mask rules of this module.

    Examples
    --------
    >>> r = overlap_from_counts(3, 4, 6, 2.0)
    >>> r["dice"], r["jaccard"], r["sensitivity"], r["precision"], r["volume_difference_ml"]
    (0.6, 0.42857142857142855, 0.5, 0.75, -0.004)
    >>> overlap_from_counts(0, 0, 5, 1.0)["dice"]
    0.0
    """
    out: dict[str, float | None] = {
        "volume_pred_ml": n_pred * voxel_volume_mm3 / 1000.0,
        "volume_ref_ml": n_ref * voxel_volume_mm3 / 1000.0,
        "volume_difference_ml": (n_pred - n_ref) * voxel_volume_mm3 / 1000.0,
    }
    if n_pred == 0 and n_ref == 0:
        out.update({k: both_empty_value for k in OVERLAP_SCORES})
    elif n_pred == 0 or n_ref == 0:
        out.update({k: 0.0 for k in OVERLAP_SCORES})
    else:
        out["dice"] = 2.0 * tp / (n_pred + n_ref)
        out["jaccard"] = tp / (n_pred + n_ref - tp)
        out["sensitivity"] = tp / n_ref
        out["precision"] = tp / n_pred
    return out


def overlap_metrics(
    mask_pred: npt.NDArray[np.bool_],
    mask_ref: npt.NDArray[np.bool_],
    spacing_mm: tuple[float, float, float],
    *,
    both_empty_value: float | None = 1.0,
) -> dict[str, float | None]:
    """Overlap metrics of two boolean masks of the same shape.

    Examples
    --------
    >>> a = np.zeros((2, 2, 2), bool); a[0] = True
    >>> overlap_metrics(a, a, (1.0, 1.0, 1.0))["dice"]
    1.0
    """
    pred = np.asarray(mask_pred, dtype=bool)
    ref = np.asarray(mask_ref, dtype=bool)
    tp = int(np.count_nonzero(pred & ref))
    v = float(np.prod(spacing_mm))
    return overlap_from_counts(
        tp,
        int(np.count_nonzero(pred)),
        int(np.count_nonzero(ref)),
        v,
        both_empty_value=both_empty_value,
    )


def dice_per_label(
    pred: npt.NDArray[np.integer], gt: npt.NDArray[np.integer], label_ids: Iterable[int]
) -> list[float]:
    """Dice of each label id between two integer label maps (NaN when both masks are empty).

    Examples
    --------
    >>> import numpy as np
    >>> dice_per_label(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), [1, 2])
    [0.6666666666666666, 0.6666666666666666]
    """
    out = []
    for i in label_ids:
        a, b = pred == i, gt == i
        denom = int(a.sum() + b.sum())
        out.append(float("nan") if denom == 0 else 2.0 * float((a & b).sum()) / denom)
    return out
