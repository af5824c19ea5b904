"""Per-organ measurements of a label map: volume, components, centroid and side of the midline.

Everything here is a pure function of a label array and its index → LPS affine (patient left
is +x in LPS), so the same numbers describe training contours (:mod:`medseg.qa.statistics`)
and predictions under review (:mod:`medseg.qa.flags`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from medseg.inference.postprocessing import label_side
from medseg.volume import LabelMap

__all__ = [
    "MIDLINE_ORGANS",
    "OrganMeasure",
    "measure_organs",
    "midline_x_mm",
    "organ_side",
]

#: Organs centred on the patient's midline; their centroids define the midline when present.
MIDLINE_ORGANS: tuple[str, ...] = ("Brainstem", "SpinalCord", "Esophagus", "Larynx", "Mandible")
#: Within this distance (mm) of the midline a centroid is called "midline".
MIDLINE_TOLERANCE_MM = 5.0


@dataclass(frozen=True)
class OrganMeasure:
    """What one organ's mask looks like.

    Attributes
    ----------
    name
        Organ (label) name.
    voxels
        Voxel count (0: the organ is missing).
    volume_cm3
        Volume in cm³.
    components
        Number of 26-connected components.
    largest_fraction
        Share of the volume in the largest component (1.0 for one component; 0 when missing).
    centroid_mm
        LPS centroid (x: patient left +, y: posterior +, z: superior +) or ``None``.
    lateral_offset_mm
        Centroid x minus the midline x (positive: patient's left) or ``None``.
    side
        ``"L"``, ``"R"``, ``"midline"`` (within 5 mm) or ``None`` when missing.
    """

    name: str
    voxels: int
    volume_cm3: float
    components: int
    largest_fraction: float
    centroid_mm: tuple[float, float, float] | None
    lateral_offset_mm: float | None
    side: str | None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dictionary."""
        return asdict(self)


def organ_side(offset_mm: float, tolerance_mm: float = MIDLINE_TOLERANCE_MM) -> str:
    """Side of the patient a lateral offset lies on (LPS: positive x is the patient's left).

    Examples
    --------
    >>> organ_side(42.0), organ_side(-30.0), organ_side(2.0)
    ('L', 'R', 'midline')
    """
    if offset_mm > tolerance_mm:
        return "L"
    if offset_mm < -tolerance_mm:
        return "R"
    return "midline"


def _centroid_index(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.float64]:
    total = float(np.count_nonzero(mask))
    out = []
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        counts = np.count_nonzero(mask, axis=others)
        out.append(float(np.dot(counts, np.arange(mask.shape[axis]))) / total)
    return np.array(out)


def midline_x_mm(
    centroids_x: dict[str, float],
    *,
    body: npt.NDArray[np.bool_] | None = None,
    affine: npt.NDArray[np.float64] | None = None,
    midline_organs: Sequence[str] = MIDLINE_ORGANS,
) -> float | None:
    """LPS x of the patient's midline: median centroid x of the midline organs present.

    Falls back to the centroid of a ``body`` mask (with its ``affine``) when none is present,
    and to ``None`` when neither is given.

    Examples
    --------
    >>> midline_x_mm({"Brainstem": 1.0, "Mandible": 3.0, "LeftParotid": 50.0})
    2.0
    >>> midline_x_mm({"LeftParotid": 50.0}) is None
    True
    """
    xs = [centroids_x[n] for n in midline_organs if n in centroids_x]
    if xs:
        return float(np.median(xs))
    if body is not None and affine is not None and body.any():
        c = _centroid_index(body)
        return float(affine[0, :3] @ c + affine[0, 3])
    return None


def measure_organs(
    labels: npt.NDArray[np.integer],
    affine: npt.NDArray[np.float64],
    label_map: LabelMap,
    *,
    body: npt.NDArray[np.bool_] | None = None,
) -> dict[str, OrganMeasure]:
    """Measure every organ of ``label_map`` in a label array.

    Parameters
    ----------
    labels
        Integer array ``(slice, row, column)``; 0 is background.
    affine
        Index → LPS mm affine of ``labels``.
    label_map
        Names of the ids to measure (an id absent from the array is measured as missing).
    body
        Optional body mask for the midline when no midline organ is present.

    Returns
    -------
    dict
        Organ name → :class:`OrganMeasure`, in label-map order.

    Examples
    --------
    >>> import numpy as np
    >>> from medseg.volume import LabelMap, affine_from_geometry
    >>> a = np.zeros((10, 10, 10), np.uint8)
    >>> a[2:6, 2:6, 4:6] = 1            # a midline organ, 32 voxels of 2 mm
    >>> a[2:4, 2:4, 8:10] = 2; a[7:9, 7:9, 8:10] = 2   # two pieces on the patient's left
    >>> lm = LabelMap.from_names(["Brainstem", "LeftGland"])
    >>> m = measure_organs(a, affine_from_geometry((2.0, 2.0, 2.0)), lm)
    >>> m["Brainstem"].volume_cm3, m["LeftGland"].components, m["LeftGland"].side
    (0.256, 2, 'L')
    """
    vox_cm3 = abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
    objects = ndimage.find_objects(np.asarray(labels, dtype=np.int64))
    centroid: dict[str, npt.NDArray[np.float64]] = {}
    parts: dict[str, tuple[int, int, float]] = {}
    structure = np.ones((3, 3, 3), bool)
    for entry in label_map:
        box = objects[entry.id - 1] if entry.id - 1 < len(objects) else None
        if box is None:
            continue
        mask = labels[box] == entry.id
        n = int(np.count_nonzero(mask))
        if n == 0:
            continue
        cc, count = ndimage.label(mask, structure=structure)
        sizes = np.bincount(cc.ravel())[1:]
        idx = _centroid_index(mask) + np.array([s.start for s in box])
        centroid[entry.name] = affine[:3, :3] @ idx + affine[:3, 3]
        parts[entry.name] = (n, int(count), float(sizes.max()) / n)
    mid = midline_x_mm({k: float(v[0]) for k, v in centroid.items()}, body=body, affine=affine)
    out: dict[str, OrganMeasure] = {}
    for entry in label_map:
        if entry.name not in parts:
            out[entry.name] = OrganMeasure(entry.name, 0, 0.0, 0, 0.0, None, None, None)
            continue
        n, count, largest = parts[entry.name]
        c = centroid[entry.name]
        offset = None if mid is None else float(c[0] - mid)
        out[entry.name] = OrganMeasure(
            entry.name,
            n,
            round(n * vox_cm3, 4),
            count,
            round(largest, 4),
            (round(float(c[0]), 2), round(float(c[1]), 2), round(float(c[2]), 2)),
            None if offset is None else round(offset, 2),
            None if offset is None else organ_side(offset),
        )
    return out


def expected_side(name: str) -> str | None:
    """``"L"``/``"R"`` for organs whose name states a side, ``"midline"`` for midline organs.

    Examples
    --------
    >>> expected_side("LeftParotid"), expected_side("Brainstem"), expected_side("Lens")
    ('L', 'midline', None)
    """
    side = label_side(name)
    if side is not None:
        return side
    return "midline" if name in MIDLINE_ORGANS else None
