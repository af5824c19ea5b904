"""How much the network itself trusts each organ it segmented.

Two per-organ numbers, computed on the model grid from what the sliding window already has:

- **expected Dice**: the Dice between the soft probability map of an organ and its final
  (post-processed) mask, ``2 Σ p·m / (Σ p + Σ m)``. It is the overlap the network would expect
  between its contour and the truth if its probabilities were calibrated; a contour the network
  is unsure of (a wide band of 0.3–0.7 probabilities, or probability mass outside the kept
  component) scores low. No extra forward pass.
- **TTA disagreement** (only with test-time augmentation): ``1 -`` the mean Dice of each mirrored
  prediction's own arg-max with their majority vote.

Both feed the review flags of :mod:`medseg.qa.flags` (``confidence`` and ``tta``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["expected_dice", "organ_quality", "tta_disagreement"]


def expected_dice(probability: npt.ArrayLike, mask: npt.ArrayLike) -> float:
    """Soft Dice ``2 Σ p·m / (Σ p + Σ m)`` of a probability map and a binary mask.

    Parameters
    ----------
    probability
        Probabilities in ``[0, 1]`` of one organ.
    mask
        The organ's final mask, same shape.

    Returns
    -------
    float
        In ``[0, 1]``; 1.0 when both are empty (nothing predicted, nothing expected).

    Examples
    --------
    >>> expected_dice([1.0, 1.0, 0.0], [1, 1, 0])
    1.0
    >>> round(expected_dice([0.5, 0.5, 0.0], [1, 1, 0]), 3)
    0.667
    """
    p = np.asarray(probability, dtype=np.float64)
    m = np.asarray(mask, dtype=bool)
    denom = float(p.sum()) + float(m.sum())
    if denom == 0.0:
        return 1.0
    return 2.0 * float(p[m].sum()) / denom


def tta_disagreement(
    predictions: Sequence[npt.NDArray[np.integer]], label_ids: Sequence[int]
) -> dict[int, float]:
    """Per label: ``1 -`` mean Dice of each prediction with the majority-vote consensus.

    Parameters
    ----------
    predictions
        Label arrays of the same grid, one per test-time augmentation (e.g. mirrored inputs,
        mapped back).
    label_ids
        Labels to score; a label absent from every prediction scores 0.

    Examples
    --------
    >>> import numpy as np
    >>> a = np.zeros((4, 4, 4), np.uint8); a[1:3, 1:3, 1:3] = 1
    >>> b = a.copy(); b[1:3, 1:3, 3] = 1
    >>> tta_disagreement([a, a, b], [1])
    {1: 0.067}
    """
    out = {}
    n = len(predictions)
    for lab in label_ids:
        masks = [np.asarray(p == lab) for p in predictions]
        votes = np.sum(masks, axis=0)
        consensus = votes * 2 > n
        dices = []
        for m in masks:
            denom = int(m.sum()) + int(consensus.sum())
            dices.append(2.0 * int(np.logical_and(m, consensus).sum()) / denom if denom else 1.0)
        out[int(lab)] = round(1.0 - float(np.mean(dices)), 3)
    return out


def organ_quality(
    labels: npt.NDArray[np.integer],
    probabilities: npt.NDArray[np.floating] | None,
    channels: Mapping[str, tuple[int, int]],
    flip_labels: Sequence[npt.NDArray[np.integer]] = (),
) -> dict[str, dict[str, float]]:
    """Expected Dice (and TTA disagreement) per organ, on one grid.

    Parameters
    ----------
    labels
        Final label ids of the organs (after post-processing).
    probabilities
        ``(channels, *labels.shape)`` softmax of the network, or ``None`` (no expected Dice).
    channels
        Organ name → (label id in ``labels``, network channel in ``probabilities`` and
        ``flip_labels``).
    flip_labels
        Each TTA flip's arg-max channel map (empty without TTA).

    Returns
    -------
    dict
        Organ → ``{"expected_dice": ..., "tta_disagreement": ...}`` (keys present when
        computable), rounded to 4 decimals.
    """
    out: dict[str, dict[str, float]] = {}
    tta = (
        tta_disagreement(list(flip_labels), [c for _, c in channels.values()])
        if len(flip_labels) > 1
        else {}
    )
    for name, (label_id, channel) in channels.items():
        entry: dict[str, float] = {}
        if probabilities is not None:
            mask = labels == label_id
            entry["expected_dice"] = round(expected_dice(probabilities[channel], mask), 4)
        if channel in tta:
            entry["tta_disagreement"] = tta[channel]
        out[name] = entry
    return out
