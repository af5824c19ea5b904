"""DICOM-SEG frames → per-segment masks on a grid (used by :mod:`medseg.io.dicom_labels`).

Frames are placed by their own PlanePositionSequence / PlaneOrientationSequence and
PixelMeasuresSequence (per-frame or shared), decoded with pydicom (BINARY bit-packed, FRACTIONAL
thresholded at half the maximum, LABELMAP values as segment numbers). highdicom is deliberately
not used here so that the tests can use it as an independent reader of our SEG files.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset

from medseg.errors import GeometryError, InputError
from medseg.io._label_structures import SCT_DESIGNATORS as _SCT
from medseg.io._label_structures import StructureMask
from medseg.io._label_structures import warn as _warn
from medseg.volume import LabelEntry, LabelMap, Volume

logger = logging.getLogger(__name__)

__all__ = ["read_seg_masks"]


def _frame_attr(ds: Dataset, i: int, seq: str, attr: str) -> Any:
    """Attribute of a functional group, per-frame first, then shared; None when absent."""
    for groups in (
        ds.get("PerFrameFunctionalGroupsSequence"),
        ds.get("SharedFunctionalGroupsSequence"),
    ):
        if not groups:
            continue
        g = groups[i] if groups is ds.get("PerFrameFunctionalGroupsSequence") else groups[0]
        if seq in g and len(g[seq].value) and attr in g[seq].value[0]:
            return g[seq].value[0][attr].value
    return None


def _code_pair(item: Dataset, seq: str) -> tuple[str, str] | None:
    if seq not in item or not item[seq].value:
        return None
    c = item[seq].value[0]
    if str(c.get("CodingSchemeDesignator", "")) not in _SCT:
        return None
    return (str(c.CodeValue), str(c.CodeMeaning))


def _segment_entries(ds: Dataset, p: Path, warnings: list[str]) -> dict[int, LabelEntry]:
    import highdicom as hd

    entries: dict[int, LabelEntry] = {}
    seen: set[str] = set()
    for seg in ds.get("SegmentSequence", []):
        number = int(seg.SegmentNumber)
        if number == 0:  # LABELMAP background segment
            continue
        name = str(seg.get("SegmentLabel", "")).strip() or f"segment_{number}"
        if name.lower() in seen:
            new = f"{name}_{number}"
            _warn(warnings, p, f"duplicate segment label {name!r}; segment {number} named {new!r}.")
            name = new
        seen.add(name.lower())
        default = LabelMap.from_dict({number: name})[number]
        color = default.color
        if "RecommendedDisplayCIELabValue" in seg:
            lab = hd.color.CIELabColor.from_dicom_value(tuple(seg.RecommendedDisplayCIELabValue))
            color = tuple(int(v) for v in lab.to_rgb())  # type: ignore[assignment]
        type_code = _code_pair(seg, "SegmentedPropertyTypeCodeSequence")
        category = _code_pair(seg, "SegmentedPropertyCategoryCodeSequence")
        laterality = None
        if type_code is not None:
            modifier = seg.SegmentedPropertyTypeCodeSequence[0]
            laterality = _code_pair(modifier, "SegmentedPropertyTypeModifierCodeSequence")
        entries[number] = LabelEntry(
            number, name, color, type_code or default.snomed_type,
            category or default.snomed_category, laterality or default.snomed_laterality,
        )  # fmt: skip
    if not entries:
        raise InputError(f"{p}: the SEG has no segments (empty SegmentSequence).")
    return entries


def _frames(ds: Dataset, p: Path, warnings: list[str]) -> npt.NDArray[Any]:
    try:
        frames = np.asarray(ds.pixel_array)
    except Exception as exc:
        raise InputError(f"{p}: cannot decode the SEG pixel data ({exc}).") from exc
    n = int(ds.get("NumberOfFrames", 1))
    frames = frames.reshape(n, int(ds.Rows), int(ds.Columns))
    if str(ds.get("SegmentationType", "BINARY")) == "FRACTIONAL":
        top = float(ds.get("MaximumFractionalValue", 255))
        _warn(warnings, p, "FRACTIONAL segmentation thresholded at 50% of the maximum.")
        frames = frames >= top / 2.0
    return frames


def _own_grid(
    positions: npt.NDArray[np.float64],
    row_dir: npt.NDArray[np.float64],
    col_dir: npt.NDArray[np.float64],
    spacing: tuple[float, float],
    shape2d: tuple[int, int],
    ds: Dataset,
    p: Path,
) -> Volume:
    """Grid spanned by the frame positions when no reference image is given."""
    normal = np.cross(row_dir, col_dir)
    d = positions @ normal
    order = np.argsort(d)
    uniq = np.unique(np.round(d[order], 3))
    if len(uniq) > 1:
        steps = np.diff(uniq)
        step = float(ds.get("SpacingBetweenSlices", 0) or steps.min())
        ratio = steps / step
        if np.max(np.abs(ratio - np.rint(ratio))) > 0.05:
            raise GeometryError(
                f"{p}: SEG frames are not on evenly spaced planes (steps {np.unique(steps)} mm); "
                "give the reference image (reference=...) to place them."
            )
        n_slices = int(np.rint((uniq[-1] - uniq[0]) / step)) + 1
    else:
        step = float(ds.get("SliceThickness", 1.0) or 1.0)
        n_slices = 1
    first = positions[order[0]]
    affine = np.eye(4)
    affine[:3, 0] = normal * step
    affine[:3, 1] = col_dir * spacing[0]
    affine[:3, 2] = row_dir * spacing[1]
    affine[:3, 3] = first - normal * (float(first @ normal) - uniq[0])
    return Volume(np.zeros((n_slices, *shape2d), np.uint8), affine, modality="SEG")


def read_seg_masks(
    ds: Dataset, p: Path, reference: Volume | None
) -> tuple[Volume, list[StructureMask], list[str]]:
    """Per-segment masks of a SEG dataset on ``reference``'s grid (or the SEG's own grid)."""
    warnings: list[str] = []
    entries = _segment_entries(ds, p, warnings)
    frames = _frames(ds, p, warnings)
    n = frames.shape[0]
    iop = _frame_attr(ds, 0, "PlaneOrientationSequence", "ImageOrientationPatient")
    spacing = _frame_attr(ds, 0, "PixelMeasuresSequence", "PixelSpacing")
    if iop is None or spacing is None:
        raise InputError(
            f"{p}: SEG lacks PlaneOrientationSequence/PixelMeasuresSequence; cannot place frames."
        )
    iop_arr = np.asarray([float(v) for v in iop])
    row_dir, col_dir = iop_arr[:3], iop_arr[3:]
    sp = (float(spacing[0]), float(spacing[1]))
    positions = np.zeros((n, 3))
    for i in range(n):
        pos = _frame_attr(ds, i, "PlanePositionSequence", "ImagePositionPatient")
        if pos is None:
            raise InputError(f"{p}: frame {i + 1} has no ImagePositionPatient; cannot place it.")
        positions[i] = [float(v) for v in pos]
    labelmap = str(ds.get("SegmentationType", "")) == "LABELMAP"
    seg_numbers = np.zeros(n, int)
    if not labelmap:
        for i in range(n):
            sn = _frame_attr(ds, i, "SegmentIdentificationSequence", "ReferencedSegmentNumber")
            seg_numbers[i] = int(sn) if sn is not None else 1

    grid = reference if reference is not None else _own_grid(
        positions, row_dir, col_dir, sp, frames.shape[1:], ds, p
    )  # fmt: skip
    if reference is not None and reference.source is not None:
        for_uid = str(ds.get("FrameOfReferenceUID", ""))
        if for_uid and for_uid != reference.source.frame_of_reference_uid:
            ref_uid = reference.source.frame_of_reference_uid
            msg = f"SEG frame of reference {for_uid} differs from the reference image's {ref_uid}"
            _warn(warnings, p, msg + "; frames placed by coordinates.")
    # In-plane axes must match the grid's: column index ↔ row_dir, row index ↔ col_dir.
    g_col = grid.affine[:3, 2]
    g_row = grid.affine[:3, 1]
    if not (
        np.allclose(g_col, row_dir * sp[1], atol=1e-3)
        and np.allclose(g_row, col_dir * sp[0], atol=1e-3)
    ):
        raise GeometryError(
            f"{p}: SEG frames (orientation {iop_arr.round(4).tolist()}, spacing {sp}) are not "
            f"in the reference image planes ({grid!r}); resample the reference or load without it."
        )
    idx = grid.voxel_indices(positions)
    masks = {num: np.zeros(grid.shape, bool) for num in entries}
    counts = dict.fromkeys(entries, 0)
    off = 0
    for i in range(n):
        k, r0, c0 = idx[i]
        kk, rr, cc = (int(np.rint(v)) for v in (k, r0, c0))
        if max(abs(k - kk), abs(r0 - rr), abs(c0 - cc)) > 0.1 or not 0 <= kk < grid.shape[0]:
            off += 1
            continue
        frame = frames[i]
        h = min(frame.shape[0], grid.shape[1] - rr) if rr >= 0 else 0
        w = min(frame.shape[1], grid.shape[2] - cc) if cc >= 0 else 0
        if rr < 0 or cc < 0 or h < frame.shape[0] or w < frame.shape[1]:
            raise GeometryError(f"{p}: frame {i + 1} extends beyond the reference image.")
        if labelmap:
            for num in entries:
                hit = frame == num
                if hit.any():
                    masks[num][kk, rr : rr + h, cc : cc + w] |= hit
                    counts[num] += 1
        else:
            num = int(seg_numbers[i])
            if num not in masks:
                off += 1
                continue
            masks[num][kk, rr : rr + h, cc : cc + w] |= frame.astype(bool)
            counts[num] += 1
    if off:
        _warn(warnings, p, f"{off} of {n} frames are not on a reference slice or name an "
              "unknown segment; skipped.")  # fmt: skip
    grid_out = Volume(np.zeros(grid.shape, np.uint8), grid.affine, modality="SEG")
    structures = [StructureMask(e, masks[num], counts[num]) for num, e in entries.items()]
    return grid_out, structures, warnings
