"""Slice geometry of a DICOM series: ordering along the normal and every check on it.

:func:`analyze_slices` sorts single-frame instances along the slice normal
``n = row cosine × column cosine`` and lists the problems it finds (:class:`SeriesProblem`), each
with a code, a message saying what and where, the error class to raise and the opt-in fix (a
:class:`~medseg.io.dicom_series.DicomReadOptions` field) if one exists. The reader raises the
first problem whose fix is not enabled; ``medseg info`` only lists them.

Geometry convention (medseg, see CONVENTIONS.md): array axes ``(slice, row, column)``; the
affine maps ``(k, r, c)`` to LPS mm with column axis = DICOM row cosine × PixelSpacing[1], row
axis = column cosine × PixelSpacing[0], slice axis = ``n`` × slice spacing, origin = the
ImagePositionPatient of the first slice (smallest position along ``n``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NoReturn

import numpy as np
import numpy.typing as npt

from medseg.errors import GeometryError, InputError, MedsegError
from medseg.io.dicom_scan import InstanceHeader
from medseg.io.grid_limits import check_grid, check_voxel_count

logger = logging.getLogger(__name__)

__all__ = [
    "SeriesProblem",
    "SliceGeometry",
    "analyze_slices",
    "geometry_or_raise",
    "pixel_bytes_needed",
    "plane_of",
    "raise_problem",
    "slice_steps_report",
]

#: Two positions closer than this along the normal are the same slice position.
DUPLICATE_TOLERANCE_MM = 1e-3
#: Direction cosines closer than this are the same orientation.
ORIENTATION_TOLERANCE = 1e-4


@dataclass(frozen=True)
class SeriesProblem:
    """A problem found in a series.

    Attributes
    ----------
    code
        Short identifier (``"gantry_tilt"``, ``"missing_slices"``, ...).
    message
        What is wrong, where, and how to proceed.
    error
        Error class raised when the problem is not fixed.
    fix
        Name of the :class:`DicomReadOptions` field that fixes it, or ``""``.
    """

    code: str
    message: str
    error: type[MedsegError] = GeometryError
    fix: str = ""


@dataclass(frozen=True)
class SliceGeometry:
    """Instances sorted along the normal, their positions, and the regular-grid affine."""

    instances: tuple[InstanceHeader, ...]
    positions_mm: npt.NDArray[np.float64]  # (N,) along the normal, ascending
    normal: npt.NDArray[np.float64]
    affine: npt.NDArray[np.float64]
    problems: tuple[SeriesProblem, ...]
    tilt_offsets_mm: npt.NDArray[np.float64]  # (N, 2) in-plane offsets (row, col) vs slice 0


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def slice_steps_report(steps: npt.NDArray[np.float64], limit: int = 5) -> str:
    """Describe the distinct slice steps, e.g. ``'2 mm ×18, 4 mm ×1'``.

    Examples
    --------
    >>> import numpy as np
    >>> slice_steps_report(np.array([2.0, 2.0, 4.0]))
    '2 mm ×2, 4 mm ×1'
    """
    rounded = np.round(steps, 3)
    vals, counts = np.unique(rounded, return_counts=True)
    order = np.argsort(-counts, kind="stable")[:limit]
    return ", ".join(f"{vals[i]:g} mm ×{counts[i]}" for i in order)


def pixel_bytes_needed(inst: InstanceHeader) -> int | None:
    """Bytes of uncompressed pixel data the header's matrix needs, or None when unknown.

    ``Rows × Columns × SamplesPerPixel × NumberOfFrames × BitsAllocated / 8`` (bits rounded up
    to whole bytes; 1-bit data packed).
    """
    if inst.bits_allocated <= 0:
        return None
    n = inst.rows * inst.columns * max(inst.samples_per_pixel, 1) * max(inst.number_of_frames, 1)
    if inst.bits_allocated == 1:
        return (n + 7) // 8
    return n * ((inst.bits_allocated + 7) // 8)


def _short_pixel_data(inst: InstanceHeader) -> bool:
    need = pixel_bytes_needed(inst)
    return inst.pixel_length is not None and need is not None and inst.pixel_length < need


def _basic_problems(insts: Sequence[InstanceHeader], name: str) -> list[SeriesProblem]:
    out: list[SeriesProblem] = []
    no_pix = [i.path for i in insts if not i.has_pixel_data]
    if no_pix:
        out.append(
            SeriesProblem(
                "missing_pixel_data",
                f"{name}: {len(no_pix)} instance(s) have no PixelData (e.g. {no_pix[0]}): the "
                "file is truncated or corrupt, or not an image. Remove it from the folder or "
                "re-export the series.",
                InputError,
            )
        )
    trunc = [i.path for i in insts if i.truncated]
    if trunc:
        out.append(
            SeriesProblem(
                "truncated_file",
                f"{name}: {len(trunc)} file(s) are truncated (pixel data end past the end of "
                f"the file, e.g. {trunc[0]}). Copy the series again; the transfer was incomplete.",
                InputError,
            )
        )
    multi = [i for i in insts if i.number_of_frames > 1]
    if multi:
        out.append(
            SeriesProblem(
                "multiframe",
                f"{name}: multi-frame instance ({multi[0].number_of_frames} frames, e.g. "
                f"{multi[0].path}); enhanced multi-frame CT/MR is not supported yet. Convert it "
                "to single-frame slices (e.g. dcmtk/dcm2niix) and load those.",
                InputError,
            )
        )
    color = [i for i in insts if i.samples_per_pixel != 1]
    if color:
        out.append(
            SeriesProblem(
                "color_image",
                f"{name}: {color[0].samples_per_pixel} samples per pixel (colour image, e.g. "
                f"{color[0].path}); only greyscale CT/MR/PT volumes can be loaded.",
                InputError,
            )
        )
    empty = [i for i in insts if i.has_pixel_data and (i.rows <= 0 or i.columns <= 0)]
    if empty:
        out.append(
            SeriesProblem(
                "empty_matrix",
                f"{name}: Rows × Columns is {empty[0].rows} × {empty[0].columns} (e.g. "
                f"{empty[0].path}); an image slice needs at least 1 × 1 pixels. The header is "
                "corrupt; re-export the series.",
                InputError,
            )
        )
    short = [i for i in insts if _short_pixel_data(i)]
    if short:
        i = short[0]
        out.append(
            SeriesProblem(
                "short_pixel_data",
                f"{name}: {len(short)} file(s) hold less pixel data than their header's matrix "
                f"needs: e.g. {i.path} has {i.pixel_length:,} bytes, Rows × Columns = "
                f"{i.rows} × {i.columns} at {i.bits_allocated} bits needs "
                f"{pixel_bytes_needed(i):,}. The header (Rows/Columns/BitsAllocated) or the "
                "file is corrupt; re-export the series.",
                InputError,
            )
        )
    no_geo = [
        i.path
        for i in insts
        if i.position is None or i.orientation is None or i.pixel_spacing is None
    ]
    if no_geo:
        out.append(
            SeriesProblem(
                "missing_geometry",
                f"{name}: {len(no_geo)} instance(s) lack ImagePositionPatient, "
                f"ImageOrientationPatient or PixelSpacing (e.g. {no_geo[0]}); without them the "
                "slice geometry is unknown. Re-export the series from the scanner/PACS.",
                InputError,
            )
        )
    sizes = sorted({(i.rows, i.columns) for i in insts})
    if len(sizes) > 1:
        out.append(
            SeriesProblem(
                "mixed_matrix",
                f"{name}: slices have different matrix sizes {sizes} (rows, columns). Select "
                "one size with DicomReadOptions(series_instance_uid=...) after splitting the "
                "folder, or remove the odd slices.",
            )
        )
    return out


def analyze_slices(
    insts: Sequence[InstanceHeader], name: str
) -> SliceGeometry | list[SeriesProblem]:
    """Sort ``insts`` along the slice normal and check the geometry.

    Returns a :class:`SliceGeometry` (possibly with fixable problems listed) or, when the slices
    cannot even be ordered, the list of blocking problems.
    """
    problems = _basic_problems(insts, name)
    if problems:
        return problems
    try:
        check_voxel_count((len(insts), insts[0].rows, insts[0].columns), name)
    except InputError as exc:
        return [SeriesProblem("too_large", str(exc), InputError)]
    if len(insts) < 2:
        return [
            SeriesProblem(
                "single_slice",
                f"{name}: only 1 image slice; a volume needs at least 2 slices to know its "
                "slice spacing. Give the folder with the whole series.",
                InputError,
            )
        ]
    iops = np.array([i.orientation for i in insts], dtype=np.float64)
    if np.max(np.abs(iops - iops[0])) > ORIENTATION_TOLERANCE:
        kinds = {_plane(o) for o in iops}
        return [
            SeriesProblem(
                "mixed_orientation",
                f"{name}: slices have {len(np.unique(np.round(iops, 4), axis=0))} different "
                f"orientations ({', '.join(sorted(kinds))}). Choose one with "
                "DicomReadOptions(orientation='axial'|'coronal'|'sagittal').",
                fix="orientation",
            )
        ]
    row_cos, col_cos = iops[0, :3], iops[0, 3:]
    if abs(np.linalg.norm(row_cos) - 1) > 1e-2 or abs(np.linalg.norm(col_cos) - 1) > 1e-2:
        return [
            SeriesProblem(
                "bad_orientation",
                f"{name}: ImageOrientationPatient {_fmt(iops[0])} is not made of unit vectors.",
            )
        ]
    row_cos = row_cos / np.linalg.norm(row_cos)
    col_cos = col_cos / np.linalg.norm(col_cos)
    if abs(float(row_cos @ col_cos)) > 1e-3:
        return [
            SeriesProblem(
                "bad_orientation",
                f"{name}: ImageOrientationPatient {_fmt(iops[0])} has non-orthogonal row and "
                "column directions; the header is corrupt.",
            )
        ]
    spacings = np.array([i.pixel_spacing for i in insts], dtype=np.float64)
    if np.max(np.abs(spacings - spacings[0])) > 1e-4 * max(1.0, float(spacings[0].max())):
        return [
            SeriesProblem(
                "mixed_spacing",
                f"{name}: slices have different PixelSpacing "
                f"({sorted({tuple(np.round(s, 4)) for s in spacings})}). Remove the odd slices.",
            )
        ]
    if np.any(spacings[0] <= 0):
        msg = f"{name}: PixelSpacing {spacings[0]} is not positive; the header is corrupt."
        return [SeriesProblem("bad_spacing", msg)]
    normal = np.cross(row_cos, col_cos)
    normal /= np.linalg.norm(normal)
    ipps = np.array([i.position for i in insts], dtype=np.float64)
    s = ipps @ normal
    inst_no = np.array([i.instance_number if i.instance_number is not None else 0 for i in insts])
    order = np.lexsort((inst_no, s))
    insts_sorted = tuple(insts[int(j)] for j in order)
    ipps, s = ipps[order], s[order]
    problems = []
    steps = np.diff(s)
    dup = np.nonzero(steps < DUPLICATE_TOLERANCE_MM)[0]
    if dup.size:
        acqs = {i.acquisition_number for i in insts_sorted}
        where = f"e.g. position {s[dup[0]]:.3f} mm along the normal ({insts_sorted[dup[0]].path}"
        where += f" and {insts_sorted[dup[0] + 1].path})"
        if len(acqs) > 1:
            problems.append(
                SeriesProblem(
                    "multiple_acquisitions",
                    f"{name}: several acquisitions in one series (AcquisitionNumber "
                    f"{sorted(a for a in acqs if a is not None)}) cover the same positions "
                    f"({dup.size} repeated, {where}). Choose one with "
                    "DicomReadOptions(acquisition_number=N).",
                    fix="acquisition_number",
                )
            )
        else:
            problems.append(
                SeriesProblem(
                    "duplicate_positions",
                    f"{name}: {dup.size} slice position(s) occur twice, {where}. Remove the "
                    "duplicates or pass DicomReadOptions(drop_duplicates=True) to keep the "
                    "first of each (lowest InstanceNumber).",
                    fix="drop_duplicates",
                )
            )
        return SliceGeometry(insts_sorted, s, normal, np.eye(4), tuple(problems), np.zeros((0, 2)))
    # in-plane offsets of each slice origin relative to slice 0 (gantry tilt shows up here)
    rel = ipps - ipps[0]
    perp = rel - np.outer(rel @ normal, normal)
    offsets = np.stack([perp @ col_cos, perp @ row_cos], axis=1)
    span = float(s[-1] - s[0])
    tilt_tol = 0.01 + 1e-4 * span
    if float(np.max(np.abs(offsets))) > tilt_tol:
        angle = float(np.degrees(np.arctan2(np.linalg.norm(perp[-1]), span)))
        problems.append(
            SeriesProblem(
                "gantry_tilt",
                f"{name}: slice positions are sheared against the slice normal by {angle:.2f}° "
                f"(gantry tilt; in-plane offset {np.linalg.norm(perp[-1]):.2f} mm over "
                f"{span:.1f} mm). Pass DicomReadOptions(correct_tilt=True) to shift each slice "
                "in-plane onto an orthogonal grid (linear interpolation).",
                fix="correct_tilt",
            )
        )
    median = float(np.median(steps))
    tol = max(0.005, 0.01 * median)
    bad = np.nonzero(np.abs(steps - median) > tol)[0]
    if bad.size:
        ratio = steps[bad] / median
        gaps = np.all((np.abs(ratio - np.round(ratio)) * median <= tol) & (np.round(ratio) >= 2))
        if gaps:
            missing = int(np.sum(np.round(ratio) - 1))
            first = int(bad[0])
            problems.append(
                SeriesProblem(
                    "missing_slices",
                    f"{name}: {missing} slice(s) missing: the slice step is {median:g} mm but "
                    f"jumps to {steps[first]:g} mm between positions {s[first]:.3f} and "
                    f"{s[first + 1]:.3f} mm ({bad.size} gap(s)). Find the missing files, or "
                    "pass DicomReadOptions(resample_irregular=True) to interpolate them "
                    "(linear, recorded in provenance).",
                    fix="resample_irregular",
                )
            )
        else:
            problems.append(
                SeriesProblem(
                    "irregular_spacing",
                    f"{name}: irregular slice spacing ({slice_steps_report(steps)}); a volume "
                    "needs one spacing. Pass DicomReadOptions(resample_irregular=True) to "
                    f"resample onto a regular {median:g} mm grid (linear, recorded in provenance).",
                    fix="resample_irregular",
                )
            )
    dz = span / (len(s) - 1) if not bad.size else median
    ps = spacings[0]
    try:
        check_grid(
            (len(s), insts[0].rows, insts[0].columns),
            (dz, float(ps[0]), float(ps[1])),
            f"{name} (slice step, PixelSpacing)",
        )
    except GeometryError as exc:
        return [SeriesProblem("bad_spacing", str(exc))]
    affine = np.eye(4)
    affine[:3, 0] = normal * dz
    affine[:3, 1] = col_cos * ps[0]
    affine[:3, 2] = row_cos * ps[1]
    affine[:3, 3] = ipps[0]
    return SliceGeometry(insts_sorted, s, normal, affine, tuple(problems), offsets)


def _plane(iop: npt.NDArray[np.float64]) -> str:
    n = np.abs(np.cross(iop[:3], iop[3:]))
    return ("sagittal", "coronal", "axial")[int(np.argmax(n))]


def plane_of(iop: Sequence[float]) -> str:
    """``"axial"``, ``"coronal"`` or ``"sagittal"`` from an ImageOrientationPatient.

    Examples
    --------
    >>> plane_of([1, 0, 0, 0, 0, -1])
    'coronal'
    """
    return _plane(np.asarray(iop, dtype=np.float64))


def raise_problem(problem: SeriesProblem) -> NoReturn:
    """Raise ``problem`` as its error class."""
    raise problem.error(problem.message)


def geometry_or_raise(insts: Sequence[InstanceHeader], name: str) -> SliceGeometry:
    """:func:`analyze_slices`, raising the first blocking problem."""
    geom = analyze_slices(insts, name)
    if isinstance(geom, list):
        raise_problem(geom[0])
    return geom
