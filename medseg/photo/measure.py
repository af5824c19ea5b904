"""Measure wound/lesion masks: area, longest length, perpendicular width, perimeter.

Definitions (per connected component, and for the whole mask):

* ``area_px`` -- number of mask pixels; ``area_mm2 = area_px * mm_per_pixel**2``.
* ``length`` -- longest straight chord of the region (maximum Feret diameter), measured between
  pixel *corners* of the convex hull, so a single pixel has length sqrt(2) px.
* ``width`` -- extent of the region perpendicular to the length direction (the clinical
  "greatest width at right angles to the length").
* ``perimeter`` -- length of the 0.5 iso-contour (marching squares) of the mask smoothed with a
  Gaussian of sigma 1 px, which removes the pixel staircase (within ~1 % on drawn circles,
  ellipses and rectangles of >= 100 px across; corners are rounded, about -3 % at 20 px);
  regions narrower than 6 px use the Crofton estimate
  (:func:`skimage.measure.perimeter_crofton`), since smoothing shrinks them.

Calibration: millimetres are reported only when a scale is known, either given explicitly
(``mm_per_pixel``) or from a detected calibration marker (:func:`detect_circular_marker`: a
solid, strongly coloured circular sticker of known diameter). Otherwise every ``*_mm`` field is
``None`` and ``calibrated`` is ``False`` -- nothing is guessed from typical photo scales.
The scale assumes the wound plane is parallel to the sensor (no perspective correction).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError
from skimage.measure import find_contours, perimeter_crofton

from medseg.errors import InputError

logger = logging.getLogger(__name__)

__all__ = [
    "Calibration",
    "RegionMeasurement",
    "check_calibration_options",
    "detect_circular_marker",
    "measure_files",
    "measure_mask",
    "perimeter_px",
    "region_extent_px",
]


@dataclass(frozen=True)
class Calibration:
    """Pixel size and where it came from (``"explicit"`` or ``"marker"``)."""

    mm_per_pixel: float
    source: str
    detail: str = ""


@dataclass(frozen=True)
class RegionMeasurement:
    """Measurements of one region (``*_mm*`` are None when uncalibrated)."""

    area_px: int
    length_px: float
    width_px: float
    perimeter_px: float
    area_mm2: float | None = None
    length_mm: float | None = None
    width_mm: float | None = None
    perimeter_mm: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-ready)."""
        return asdict(self)


def region_extent_px(mask: npt.NDArray[np.bool_]) -> tuple[float, float]:
    """Longest chord and perpendicular width (pixels) of a non-empty boolean mask.

    >>> m = np.zeros((10, 10), bool); m[2:5, 1:9] = True   # 3 x 8 rectangle
    >>> [round(v, 3) for v in region_extent_px(m)]
    [8.544, 5.618]
    """
    rows, cols = np.nonzero(mask & ~ndimage.binary_erosion(mask))
    if rows.size == 0:
        return 0.0, 0.0
    corners = np.concatenate(
        [np.stack([rows + dr, cols + dc], axis=1) for dr in (0, 1) for dc in (0, 1)]
    ).astype(np.float64)
    try:
        points = corners[ConvexHull(corners).vertices]
    except QhullError:  # degenerate (a line of pixels): the corners themselves suffice
        points = np.unique(corners, axis=0)
    diff = points[:, None, :] - points[None, :, :]
    dist = np.sqrt((diff**2).sum(axis=2))
    i, j = np.unravel_index(int(np.argmax(dist)), dist.shape)
    length = float(dist[i, j])
    direction = (points[j] - points[i]) / length
    normal = np.array([-direction[1], direction[0]])
    projection = points @ normal
    return length, float(projection.max() - projection.min())


def perimeter_px(region: npt.NDArray[np.bool_]) -> float:
    """Boundary length (pixels) of a boolean region (see the module docstring).

    >>> m = np.zeros((60, 60), bool); m[10:50, 10:30] = True   # 40 x 20 rectangle
    >>> round(perimeter_px(m) / 120, 2)   # corners are rounded by the smoothing
    0.97
    """
    if not region.any():
        return 0.0
    if region_extent_px(region)[1] < 6:
        return float(perimeter_crofton(region, directions=4))
    rows, cols = np.nonzero(region)
    crop = region[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    smooth = ndimage.gaussian_filter(np.pad(crop, 4).astype(np.float64), 1.0)
    return float(
        sum(
            np.sqrt((np.diff(c, axis=0) ** 2).sum(axis=1)).sum() for c in find_contours(smooth, 0.5)
        )
    )


def _measure(region: npt.NDArray[np.bool_], mm: float | None) -> RegionMeasurement:
    area = int(region.sum())
    length, width = region_extent_px(region)
    perim = perimeter_px(region)
    if mm is None:
        return RegionMeasurement(area, length, width, perim)
    return RegionMeasurement(
        area, length, width, perim, area * mm * mm, length * mm, width * mm, perim * mm
    )


def measure_mask(
    mask: npt.NDArray[np.bool_], calibration: Calibration | None = None
) -> dict[str, Any]:
    """Measure a binary mask as a whole and per connected component (8-connectivity).

    Returns
    -------
    dict
        ``calibrated`` (bool), ``calibration`` (dict or None), ``note`` (what is missing when
        uncalibrated), ``total`` (area/perimeter over all regions; length/width of the largest
        region), ``regions`` (list, largest first).

    Examples
    --------
    >>> m = np.zeros((20, 20), bool); m[5:15, 5:10] = True
    >>> r = measure_mask(m, Calibration(0.5, "explicit"))
    >>> r["total"]["area_px"], r["total"]["area_mm2"]
    (50, 12.5)
    >>> measure_mask(m)["total"]["area_mm2"] is None
    True
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise InputError(f"measure_mask needs a 2-D mask, got shape {mask.shape}.")
    mm = calibration.mm_per_pixel if calibration else None
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), bool))
    regions = sorted(
        (_measure(labels == k, mm) for k in range(1, count + 1)), key=lambda r: -r.area_px
    )
    area = int(mask.sum())
    perim = float(sum(r.perimeter_px for r in regions))
    largest = regions[0] if regions else RegionMeasurement(0, 0.0, 0.0, 0.0)
    total = RegionMeasurement(
        area,
        largest.length_px,
        largest.width_px,
        perim,
        None if mm is None else area * mm * mm,
        largest.length_mm,
        largest.width_mm,
        None if mm is None else perim * mm,
    )
    return {
        "calibrated": calibration is not None,
        "calibration": asdict(calibration) if calibration else None,
        "note": ""
        if calibration
        else "uncalibrated: no --mm-per-pixel and no calibration marker; sizes in pixels only",
        "n_regions": count,
        "total": total.to_dict(),
        "regions": [r.to_dict() for r in regions],
    }


def check_calibration_options(mm_per_pixel: float | None, marker_diameter_mm: float | None) -> None:
    """Reject contradictory or impossible scale options (``--mm-per-pixel`` and
    ``--marker-diameter-mm``; at most one, and positive).

    Raises
    ------
    InputError
        Both given, or a value that is not > 0.
    """
    if mm_per_pixel is not None and marker_diameter_mm is not None:
        raise InputError("give either --mm-per-pixel or --marker-diameter-mm, not both.")
    for flag, value in (
        ("--mm-per-pixel", mm_per_pixel),
        ("--marker-diameter-mm", marker_diameter_mm),
    ):
        if value is not None and not value > 0:
            raise InputError(f"{flag} must be > 0, got {value}.")


def _hex_rgb(color: str) -> npt.NDArray[np.float64]:
    named = {"red": "#ff0000", "green": "#00ff00", "blue": "#0000ff", "yellow": "#ffff00"}
    text = named.get(color.lower(), color)
    if not (text.startswith("#") and len(text) == 7):
        raise InputError(f"marker colour {color!r}: expected #RRGGBB or one of {sorted(named)}.")
    try:
        return np.array([int(text[k : k + 2], 16) for k in (1, 3, 5)], dtype=np.float64)
    except ValueError as exc:
        raise InputError(f"marker colour {color!r} is not #RRGGBB hex.") from exc


def detect_circular_marker(
    image: npt.NDArray[np.uint8],
    *,
    diameter_mm: float,
    color: str = "#0000ff",
    tolerance: float = 60.0,
    min_area_px: int = 200,
    min_circularity: float = 0.85,
) -> Calibration:
    """Find a solid circular sticker of a known colour and diameter; return its scale.

    Pixels within ``tolerance`` (Euclidean RGB distance) of ``color`` are candidates; holes are
    filled; among connected components of at least ``min_area_px`` pixels the most circular
    one (``4 pi A / P^2`` and filled-area/hull-disc ratio) is the marker, and its
    equivalent-area diameter ``2 sqrt(A / pi)`` gives ``mm_per_pixel = diameter_mm / d``.
    Works for a flat, fronto-parallel, evenly lit sticker whose colour does not occur in the
    wound or skin; it is *not* robust to glare, strong perspective or partial occlusion.

    Raises
    ------
    InputError
        No component passes the colour / size / circularity tests (the message says why).
    """
    if diameter_mm <= 0:
        raise InputError(f"marker diameter must be > 0 mm, got {diameter_mm}.")
    target = _hex_rgb(color)
    distance = np.sqrt(((image[..., :3].astype(np.float64) - target) ** 2).sum(axis=2))
    candidates = ndimage.binary_fill_holes(ndimage.binary_opening(distance <= tolerance))
    labels, count = ndimage.label(candidates)
    best: tuple[float, int] | None = None
    for k in range(1, count + 1):
        region = labels == k
        area = int(region.sum())
        if area < min_area_px:
            continue
        length, width = region_extent_px(region)
        roundness = 4 * area / (math.pi * length * length) if length else 0.0
        aspect = width / length if length else 0.0
        score = min(roundness, aspect)
        if score >= min_circularity and (best is None or score > best[0]):
            best = (score, k)
    if best is None:
        raise InputError(
            f"no circular marker of colour {color} (tolerance {tolerance}) with >= {min_area_px} "
            f"px and circularity >= {min_circularity} found ({count} colour blob(s)); use "
            "--mm-per-pixel instead or adjust --marker-color."
        )
    area = int((labels == best[1]).sum())
    diameter_px = 2 * math.sqrt(area / math.pi)
    return Calibration(
        diameter_mm / diameter_px,
        "marker",
        f"circular marker {color}, {diameter_px:.1f} px = {diameter_mm} mm, "
        f"circularity {best[0]:.3f}",
    )


def measure_files(
    masks: Sequence[str | Path],
    *,
    mm_per_pixel: float | None = None,
    photo: str | Path | None = None,
    marker_diameter_mm: float | None = None,
    marker_color: str = "#0000ff",
    output: str | Path | None = None,
    overwrite: bool = False,
) -> dict[str, dict[str, Any]]:
    """Measure mask files (``medseg photo measure``); optionally write the JSON to ``output``.

    The scale is ``mm_per_pixel``, or detected from a circular marker of
    ``marker_diameter_mm`` in ``photo`` (:func:`detect_circular_marker`), or absent (sizes in
    pixels, with a warning). Options, output and masks are checked before anything is written:
    an existing ``output`` is refused unless ``overwrite``.

    Returns
    -------
    dict
        ``{mask path: measure_mask(...)}``.

    Raises
    ------
    InputError
        Contradictory scale options, a marker without a photo, no marker found, unreadable
        masks, or an existing ``output`` without ``overwrite``.
    """
    from medseg.photo.datasets import read_mask, read_photo
    from medseg.photo.outputs import check_output_file, write_text

    check_calibration_options(mm_per_pixel, marker_diameter_mm)
    if marker_diameter_mm is not None and photo is None:
        raise InputError("--marker-diameter-mm needs --photo (the photo with the marker).")
    if output is not None:
        check_output_file(Path(output), overwrite=overwrite)
    calibration = None
    if mm_per_pixel is not None:
        calibration = Calibration(mm_per_pixel, "explicit")
    elif marker_diameter_mm is not None and photo is not None:
        calibration = detect_circular_marker(
            read_photo(photo), diameter_mm=marker_diameter_mm, color=marker_color
        )
    results = {str(m): measure_mask(read_mask(m), calibration) for m in masks}
    if calibration is None:
        logger.warning("uncalibrated: sizes are in pixels only (no --mm-per-pixel or marker)")
    if output is not None:
        write_text(Path(output), json.dumps(results, indent=2), overwrite=overwrite)
    return results
