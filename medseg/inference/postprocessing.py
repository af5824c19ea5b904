"""Label-map post-processing: largest component, hole filling, minimum size, laterality check.

All functions take an integer label array ``(slice, row, column)`` (0 = background) and return a
new array; inputs are never modified. Work is done inside each organ's bounding box, so the cost
follows the organ sizes, not the volume size.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from medseg.config import checked_mapping
from medseg.errors import ConfigError
from medseg.volume import LabelMap

logger = logging.getLogger(__name__)

__all__ = [
    "PostprocessConfig",
    "fill_label_holes",
    "keep_largest_component",
    "label_side",
    "laterality_warnings",
    "postprocess_labels",
    "remove_small_labels",
]


@dataclass(frozen=True)
class PostprocessConfig:
    """Which clean-ups :func:`postprocess_labels` applies.

    Parameters
    ----------
    largest_component
        Keep only the largest 26-connected component of every organ.
    fill_holes
        Fill background holes fully enclosed by an organ (3D).
    min_volume_mm3
        Remove organs smaller than this (0 keeps everything); a warning names them.
    """

    largest_component: bool = True
    fill_holes: bool = True
    min_volume_mm3: float = 0.0

    def __post_init__(self) -> None:
        if self.min_volume_mm3 < 0:
            raise ConfigError(f"min_volume_mm3 must be ≥ 0; got {self.min_volume_mm3}.")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PostprocessConfig:
        """Build from a mapping (e.g. YAML), refusing unknown keys."""
        return cls(**checked_mapping(cls, data, what="postprocessing config"))


def _boxes(labels: npt.NDArray[np.integer]) -> dict[int, tuple[slice, ...]]:
    """Bounding box of every non-zero label value present."""
    from scipy import ndimage

    if labels.size == 0 or int(labels.max()) == 0:
        return {}
    found = ndimage.find_objects(labels.astype(np.int32, copy=False))
    return {i + 1: box for i, box in enumerate(found) if box is not None}


def keep_largest_component(labels: npt.NDArray[np.integer]) -> npt.NDArray[np.integer]:
    """Keep the largest 26-connected component of each label; other pieces become background.

    Examples
    --------
    >>> import numpy as np
    >>> a = np.zeros((1, 1, 7), np.uint8); a[0, 0, [0, 1, 2, 5]] = 1; a[0, 0, 6] = 2
    >>> keep_largest_component(a)[0, 0].tolist()
    [1, 1, 1, 0, 0, 0, 2]
    """
    from scipy import ndimage

    out = labels.copy()
    structure = np.ones((3, 3, 3), dtype=bool)
    for value, box in _boxes(labels).items():
        mask = labels[box] == value
        comp, n = ndimage.label(mask, structure=structure)
        if n <= 1:
            continue
        sizes = np.bincount(comp.ravel())
        sizes[0] = 0
        drop = mask & (comp != int(np.argmax(sizes)))
        out[box][drop] = 0
    return out


def fill_label_holes(labels: npt.NDArray[np.integer]) -> npt.NDArray[np.integer]:
    """Fill background voxels fully enclosed by one label (3D); other labels are never overwritten.

    Examples
    --------
    >>> import numpy as np
    >>> a = np.ones((3, 3, 3), np.uint8); a[1, 1, 1] = 0
    >>> int(fill_label_holes(a)[1, 1, 1])
    1
    """
    from scipy import ndimage

    out = labels.copy()
    for value, box in _boxes(labels).items():
        mask = labels[box] == value
        filled = ndimage.binary_fill_holes(mask)
        add = filled & ~mask & (labels[box] == 0)
        out[box][add] = value
    return out


def remove_small_labels(
    labels: npt.NDArray[np.integer], min_voxels: int
) -> tuple[npt.NDArray[np.integer], list[int]]:
    """Remove labels with fewer than ``min_voxels`` voxels; return the new array and removed ids.

    Examples
    --------
    >>> import numpy as np
    >>> a = np.array([[[1, 1, 1, 2]]], np.uint8)
    >>> out, removed = remove_small_labels(a, 2)
    >>> out.tolist(), removed
    ([[[1, 1, 1, 0]]], [2])
    """
    counts = np.bincount(labels.ravel().astype(np.int64))
    small = [i for i in range(1, len(counts)) if 0 < counts[i] < min_voxels]
    if not small:
        return labels.copy(), []
    out = labels.copy()
    out[np.isin(labels, small)] = 0
    return out, small


def postprocess_labels(
    labels: npt.NDArray[np.integer],
    spacing_mm: Sequence[float],
    config: PostprocessConfig,
    label_map: LabelMap | None = None,
) -> tuple[npt.NDArray[np.integer], list[str]]:
    """Apply the clean-ups of ``config``; return the labels and warnings for the user.

    Order: minimum size, largest component, hole filling (holes are filled last so that removed
    fragments do not leave enclosed gaps).
    """
    warnings: list[str] = []
    out = labels
    if config.min_volume_mm3 > 0:
        voxel_mm3 = float(np.prod(spacing_mm))
        min_voxels = int(np.ceil(config.min_volume_mm3 / voxel_mm3))
        out, removed = remove_small_labels(out, min_voxels)
        for value in removed:
            name = label_map[value].name if label_map is not None else f"label {value}"
            warnings.append(
                f"{name}: removed, predicted volume below the minimum of "
                f"{config.min_volume_mm3:g} mm³."
            )
    if config.largest_component:
        out = keep_largest_component(out)
    if config.fill_holes:
        out = fill_label_holes(out)
    return out, warnings


_LEFT_TOKENS = {"left", "lt", "l", "sinister"}
_RIGHT_TOKENS = {"right", "rt", "r", "dexter"}


def label_side(name: str) -> str | None:
    """``"L"``, ``"R"`` or ``None``: the patient side an organ name states.

    Recognises ``LeftParotid``/``Parotid_L``/``Parotid-Lt``/``kidney_left``/``Left Lung``.

    Examples
    --------
    >>> [label_side(n) for n in ["LeftParotid", "Parotid-Rt", "kidney_left", "Larynx", "Lung_R"]]
    ['L', 'R', 'L', None, 'R']
    """
    text = name.strip()
    lower = text.lower()
    if lower.startswith("left"):
        return "L"
    if lower.startswith("right"):
        return "R"
    tokens = [t for t in re.split(r"[\s_\-.]+", lower) if t]
    if tokens and (tokens[-1] in _LEFT_TOKENS or tokens[0] in _LEFT_TOKENS - {"l"}):
        return "L"
    if tokens and (tokens[-1] in _RIGHT_TOKENS or tokens[0] in _RIGHT_TOKENS - {"r"}):
        return "R"
    return None


def _centroid_x(
    mask: npt.NDArray[np.bool_], affine: npt.NDArray[np.float64], offset: Sequence[int] = (0, 0, 0)
) -> float:
    """LPS x (mm) of the centroid of ``mask``, from its axis projections (no index list)."""
    total = float(np.count_nonzero(mask))
    centre = []
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        counts = np.count_nonzero(mask, axis=others)
        centre.append(float(np.dot(counts, np.arange(mask.shape[axis]))) / total + offset[axis])
    return float(affine[0, :3] @ np.array(centre) + affine[0, 3])


def laterality_warnings(
    labels: npt.NDArray[np.integer],
    affine: npt.NDArray[np.float64],
    label_map: LabelMap,
    body: npt.NDArray[np.bool_],
) -> list[str]:
    """Warn about left organs predicted on the patient's right and vice versa.

    The midline is the mean LPS x of the ``body`` mask voxels (patient left is +x in LPS). An
    organ whose name states a side (see :func:`label_side`) is flagged when its centroid lies on
    the other side of the midline.

    Parameters
    ----------
    labels
        Label array ``(slice, row, column)``.
    affine
        Index → LPS mm affine of ``labels``.
    label_map
        Names of the label ids.
    body
        Body mask on the same grid (e.g. HU > -500).
    """
    if not body.any():
        return []

    sided = [(e, label_side(e.name)) for e in label_map]
    sided = [(e, s) for e, s in sided if s is not None]
    if not sided:
        return []
    midline = _centroid_x(body, affine)
    boxes = _boxes(labels)
    warnings = []
    for entry, side in sided:
        box = boxes.get(entry.id)
        if box is None:
            continue
        x = _centroid_x(labels[box] == entry.id, affine, offset=[s.start for s in box])
        if (side == "L" and x < midline) or (side == "R" and x > midline):
            where = "right" if x < midline else "left"
            warnings.append(
                f"{entry.name}: laterality check failed: predicted on the patient's {where} "
                f"(centroid x = {x:.1f} mm LPS, body midline x = {midline:.1f} mm). Check the "
                "image orientation (e.g. a flipped NIfTI header) before using this contour."
            )
    return warnings
