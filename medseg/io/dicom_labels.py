"""Read DICOM-SEG and RTSTRUCT files into label maps on a reference grid.

Tolerant reading (CONVENTIONS.md): anything odd but recoverable (contours off the slice planes,
open or 2-point contours, unknown codes, fractional segments) is skipped or fixed with a message in
``LabelVolume.warnings`` and the log; only input that cannot be placed raises.

Overlap policy (both formats): :func:`load_dicom_masks` returns one mask per structure, overlaps
kept. :func:`load_dicom_labels` must give one label per voxel, so where structures overlap **the
smaller structure (fewer voxels) wins**: organs inside BODY or an external contour keep their
voxels. Every overlap is reported as a warning naming both structures and the voxel count.

Placement: a SEG frame goes to the reference slice its ImagePositionPatient falls on (its in-plane
axes must be the reference's); an RTSTRUCT contour is mapped to reference voxel indices with the
reference affine, assigned to the slice it lies on (within a quarter slice) and filled with the
even-odd rule (pixel centres inside an odd number of the ROI's contours on that slice; see
:mod:`medseg.raster`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset

from medseg.errors import GeometryError, InputError
from medseg.io._dicom_seg_read import read_seg_masks
from medseg.io._label_structures import SCT_DESIGNATORS as _SCT
from medseg.io._label_structures import StructureMask
from medseg.io._label_structures import warn as _warn
from medseg.raster import fill_even_odd
from medseg.volume import LabelEntry, LabelMap, LabelVolume, Volume

logger = logging.getLogger(__name__)

__all__ = ["StructureMask", "load_dicom_labels", "load_dicom_masks"]


def load_dicom_masks(
    path: str | os.PathLike[str], reference: Volume | None = None
) -> tuple[Volume, list[StructureMask], list[str]]:
    """Read every structure of a DICOM-SEG or RTSTRUCT file as a separate boolean mask.

    Parameters
    ----------
    path
        The ``.dcm`` file.
    reference
        The image grid to place the structures on. Required for RTSTRUCT. For SEG, ``None``
        uses the SEG's own frame geometry (covering only the slices that have frames).

    Returns
    -------
    grid, structures, warnings
        The grid Volume (array of zeros, ``uint8``), one :class:`StructureMask` per segment/ROI
        in file order, and the messages about what was skipped or fixed.
    """
    p = Path(path)
    if p.is_dir():
        raise InputError(
            f"{p}: a folder, not a DICOM-SEG or RTSTRUCT file; give the .dcm file itself (a "
            "folder of per-organ masks needs <organ>.nrrd / .nii.gz files in it)."
        )
    try:
        ds = pydicom.dcmread(p)
    except PermissionError as exc:
        raise InputError(f"{p}: permission denied; make the file readable.") from exc
    except FileNotFoundError as exc:
        raise InputError(f"{p}: no such file.") from exc
    except (OSError, pydicom.errors.InvalidDicomError) as exc:
        raise InputError(f"{p}: not a readable DICOM file ({exc}).") from exc
    modality = str(ds.get("Modality", ""))
    if modality == "SEG":
        return read_seg_masks(ds, p, reference)
    if modality == "RTSTRUCT":
        if reference is None:
            raise InputError(
                f"{p}: an RTSTRUCT holds contours, not a grid; give the reference image "
                "(reference=load_volume(<CT folder>); CLI: --reference) to rasterise it on."
            )
        return _read_rtstruct_masks(ds, p, reference)
    raise InputError(
        f"{p}: DICOM modality {modality or '(none)'} is not a label object; expected SEG or "
        "RTSTRUCT (for an image series use load_volume)."
    )


def load_dicom_labels(path: str | os.PathLike[str], reference: Volume | None = None) -> LabelVolume:
    """Read a DICOM-SEG or RTSTRUCT file as one label map (smaller structure wins overlaps).

    Label ids are the SEG segment numbers or the RTSTRUCT ROI numbers (renumbered 1..n when
    those are not usable); names, colours and SNOMED codes go into the LabelMap. See
    :func:`load_dicom_masks` for the arguments.
    """
    grid, structures, warnings = load_dicom_masks(path, reference)
    sizes = [int(s.mask.sum()) for s in structures]
    max_id = max((s.entry.id for s in structures), default=0)
    out = np.zeros(grid.shape, dtype=np.uint8 if max_id < 256 else np.uint16)
    names = {s.entry.id: s.entry.name for s in structures}
    for i in sorted(range(len(structures)), key=lambda j: -sizes[j]):
        s = structures[i]
        if sizes[i] == 0:
            continue
        under = out[s.mask]
        for other, count in zip(*np.unique(under[under > 0], return_counts=True), strict=True):
            msg = (
                f"{int(count)} voxels are in both {s.entry.name!r} and the larger "
                f"{names[int(other)]!r}; labelled {s.entry.name!r} (smaller structure wins)."
            )
            warnings.append(msg)
            logger.warning("%s: %s", Path(path).name, msg)
        out[s.mask] = s.entry.id
    label_map = LabelMap(tuple(s.entry for s in structures))
    volume = grid.with_array(out)
    return LabelVolume(volume, label_map, tuple(warnings))


# ----------------------------------------------------------------------------------------------
# RTSTRUCT
# ----------------------------------------------------------------------------------------------
def _roi_entries(ds: Dataset, p: Path, warnings: list[str]) -> dict[int, LabelEntry]:
    """LabelEntry per ROINumber; ids are the ROI numbers when they are 1..65535, else 1..n."""
    rois = list(ds.get("StructureSetROISequence", []))
    numbers = [int(r.ROINumber) for r in rois]
    usable = len(set(numbers)) == len(numbers) and all(1 <= n <= 65535 for n in numbers)
    if not usable:
        _warn(warnings, p, f"ROI numbers {numbers} are not unique 1..65535; renumbered 1..n.")
    colors = {}
    for rc in ds.get("ROIContourSequence", []):
        if "ROIDisplayColor" in rc:
            colors[int(rc.ReferencedROINumber)] = tuple(int(v) for v in rc.ROIDisplayColor)
    codes: dict[int, tuple[str, str]] = {}
    for obs in ds.get("RTROIObservationsSequence", []):
        seq = obs.get("RTROIIdentificationCodeSequence")
        if seq and str(seq[0].get("CodingSchemeDesignator", "")) in _SCT and "CodeValue" in seq[0]:
            code = (str(seq[0].CodeValue), str(seq[0].get("CodeMeaning", "")))
            codes[int(obs.ReferencedROINumber)] = code
    entries: dict[int, LabelEntry] = {}
    seen: set[str] = set()
    for i, roi in enumerate(rois, start=1):
        number = int(roi.ROINumber)
        name = str(roi.get("ROIName", "")).strip() or f"ROI_{number}"
        if name.lower() in seen:
            new = f"{name}_{number}"
            _warn(warnings, p, f"duplicate ROI name {name!r}; ROI {number} renamed {new!r}.")
            name = new
        seen.add(name.lower())
        label_id = number if usable else i
        known = LabelMap.from_dict({label_id: name})[label_id]
        color = colors.get(number, known.color)
        if len(color) != 3 or any(not 0 <= v <= 255 for v in color):
            color = known.color
        entries[number] = LabelEntry(
            label_id, name, color, codes.get(number, known.snomed_type), known.snomed_category,
            known.snomed_laterality,
        )  # fmt: skip
    return entries


def _contour_data(item: Dataset) -> npt.NDArray[np.float64]:
    """ContourData as floats, parsed from the raw bytes when possible (100× faster)."""
    tag = 0x30060050
    if tag not in item:
        return np.zeros(0)
    elem = item.get_item(tag)
    raw = getattr(elem, "value", None)
    if isinstance(raw, bytes) and getattr(elem, "is_raw", False):
        try:
            return np.array(raw.replace(b"\x00", b"").split(b"\\"), dtype=np.float64)
        except ValueError:
            pass  # unusual formatting: let pydicom parse it
    return np.asarray(item.ContourData, dtype=np.float64)


def _contour_slice(
    points: npt.NDArray[np.float64], reference: Volume
) -> tuple[int, npt.NDArray[np.float64]] | tuple[str, float]:
    """Slice index and (row, col) points of a contour, or (why it cannot be placed, slice index)."""
    idx = reference.voxel_indices(points)
    k = idx[:, 0]
    if np.ptp(k) > 0.1:
        return "is not parallel to the reference slices", float(k.mean())
    kk = int(np.rint(k.mean()))
    if not 0 <= kk < reference.shape[0]:
        return "lies outside the reference volume", float(k.mean())
    if abs(k.mean() - kk) > 0.25:
        return "lies between reference slices", float(k.mean())
    return kk, idx[:, 1:]


class _Skipped:
    """Contours that could not be placed, counted per (ROI, reason) with their slice range."""

    def __init__(self) -> None:
        self.by_why: dict[tuple[str, str], list[float]] = {}

    def add(self, name: str, why: str, where: float = float("nan")) -> None:
        self.by_why.setdefault((name, why), []).append(where)

    @property
    def total(self) -> int:
        return sum(len(v) for v in self.by_why.values())

    def messages(self, n_slices: int) -> list[str]:
        out = []
        for (name, why), where in self.by_why.items():
            n = len(where)
            msg = f"{name}: {why}: {n} skipped"
            ks = [w for w in where if np.isfinite(w)]
            if ks:
                lo, hi = min(ks), max(ks)
                span = f"slice index {lo:.2f}" if n == 1 else f"slice indices {lo:.2f} to {hi:.2f}"
                msg += f" ({span}; the reference has slices 0 to {n_slices - 1})"
            out.append(msg + ".")
        return out


def _nothing_placed_error(
    p: Path, reference: Volume, n_contours: int, z_mm: list[float], for_uids: set[str]
) -> GeometryError:
    corners = reference.world_coordinates(np.array([[0, 0, 0], [reference.shape[0] - 1, 0, 0]]))
    img = sorted(float(c[2]) for c in corners)
    msg = (
        f"{p}: none of the RTSTRUCT's {n_contours} contours lies on a slice of the reference "
        f"image (contours at z {min(z_mm):.1f} to {max(z_mm):.1f} mm, the reference image's "
        f"slices at z {img[0]:.1f} to {img[1]:.1f} mm"
    )
    src = reference.source
    if src is not None and for_uids - {src.frame_of_reference_uid, ""}:
        msg += (
            f"; the ROIs reference frame of reference {sorted(for_uids - {''})}, the image is in "
            f"{src.frame_of_reference_uid}"
        )
    return GeometryError(
        msg + "). The RTSTRUCT was drawn on another image (another patient or study): give the "
        "CT series it references as the reference, or the matching RTSTRUCT."
    )


def _read_rtstruct_masks(
    ds: Dataset, p: Path, reference: Volume
) -> tuple[Volume, list[StructureMask], list[str]]:
    warnings: list[str] = []
    grid = Volume(np.zeros(reference.shape, np.uint8), reference.affine, modality="RTSTRUCT")
    src = reference.source
    for_uids = {
        str(r.get("ReferencedFrameOfReferenceUID", ""))
        for r in ds.get("StructureSetROISequence", [])
    }
    other_frame = src is not None and bool(for_uids - {src.frame_of_reference_uid, ""})
    entries = _roi_entries(ds, p, warnings)
    contours_by_roi: dict[int, dict[int, list[npt.NDArray[np.float64]]]] = {n: {} for n in entries}
    counts = dict.fromkeys(entries, 0)
    skipped = _Skipped()
    n_placeable, n_placed = 0, 0
    z_mm: list[float] = []
    for rc in ds.get("ROIContourSequence", []):
        number = int(rc.ReferencedROINumber)
        if number not in entries:
            _warn(warnings, p, f"contours for ROI {number}, which is not in the ROI list; skipped.")
            continue
        name = entries[number].name
        for c in rc.get("ContourSequence", []):
            counts[number] += 1
            gtype = str(c.get("ContourGeometricType", "CLOSED_PLANAR"))
            data = _contour_data(c)
            if gtype != "CLOSED_PLANAR" or len(data) < 9 or len(data) % 3:
                skipped.add(name, f"{gtype} contour with {len(data) // 3} points")
                continue
            points = data.reshape(-1, 3)
            n_placeable += 1
            z_mm.append(float(points[:, 2].mean()))
            placed = _contour_slice(points, reference)
            if isinstance(placed[0], str):
                skipped.add(name, f"contour {placed[0]}", float(placed[1]))
                continue
            n_placed += 1
            contours_by_roi[number].setdefault(int(placed[0]), []).append(
                np.asarray(placed[1], dtype=np.float64)
            )
    if n_placeable and not n_placed:
        raise _nothing_placed_error(p, reference, n_placeable, z_mm, for_uids)
    if other_frame:
        assert src is not None
        _warn(
            warnings, p,
            f"ROIs reference frame of reference {sorted(for_uids)} but the reference image is "
            f"in {src.frame_of_reference_uid}; contours placed by coordinates anyway.",
        )  # fmt: skip
    for msg in skipped.messages(reference.shape[0]):
        _warn(warnings, p, msg)
    shape2d = reference.shape[1:]
    structures = []
    for number, entry in entries.items():
        mask = np.zeros(reference.shape, dtype=bool)
        for k, polys in contours_by_roi[number].items():
            mask[k] = fill_even_odd(polys, shape2d)
        structures.append(StructureMask(entry, mask, counts[number]))
    return grid, structures, warnings
