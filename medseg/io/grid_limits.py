"""Checks every reader runs on an image grid *before* allocating its voxels.

A header is untrusted input: a zero voxel size, a sheared axis system, a 10 m voxel or a
65535 × 65535 matrix must end in a clear :class:`~medseg.errors.GeometryError` or
:class:`~medseg.errors.InputError` naming the file, never in a silently invented value or an
attempt to allocate hundreds of GiB. The limits are far outside anything a CT/MR/PET scanner
produces:

* :data:`MAX_VOXELS` voxels per volume (2³⁰ ≈ 1.07 billion, e.g. 1024³ or 512 × 512 × 4096),
* :data:`MAX_SPACING_MM` per voxel axis (100 mm) and :data:`MAX_EXTENT_MM` per grid axis (5 m),
* axes orthogonal to within :data:`SHEAR_TOLERANCE` (cosine of the angle between two axes), the
  same rule as a tilted DICOM series (refused: medseg works on orthogonal grids only).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from medseg.errors import GeometryError, InputError

__all__ = [
    "MAX_EXTENT_MM",
    "MAX_SPACING_MM",
    "MAX_VOXELS",
    "SHEAR_TOLERANCE",
    "check_axes",
    "check_grid",
    "check_voxel_count",
]

#: Largest number of voxels a reader accepts (2**30; 2 GiB as int16, 4 GiB as float32).
MAX_VOXELS = 2**30
#: Largest voxel size accepted on any axis, in mm.
MAX_SPACING_MM = 100.0
#: Largest physical size of the grid along any axis (shape × spacing), in mm.
MAX_EXTENT_MM = 5000.0
#: Largest |cos| of the angle between two grid axes (1e-3 ≈ 0.06° away from 90°).
SHEAR_TOLERANCE = 1e-3


def check_voxel_count(shape: Sequence[int], where: str) -> None:
    """Refuse a grid with more than :data:`MAX_VOXELS` voxels (before allocating it).

    Examples
    --------
    >>> check_voxel_count((512, 512, 300), "ct.nii")
    >>> check_voxel_count((65535, 65535, 2), "x.dcm")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    medseg.errors.InputError: x.dcm: the image grid 65535×65535×2 has 8,589,672,450 voxels, ...
    """
    n = math.prod(int(s) for s in shape)
    if n > MAX_VOXELS:
        dims = "×".join(str(int(s)) for s in shape)
        raise InputError(
            f"{where}: the image grid {dims} has {n:,} voxels, more than the {MAX_VOXELS:,} "
            "medseg reads (2**30); the header is corrupt or the image is not a CT/MR/PET "
            "volume. Check the matrix size in the header (dim / Rows, Columns / sizes)."
        )


def check_grid(shape: Sequence[int], spacing_mm: Sequence[float], where: str) -> None:
    """Refuse zero, negative, non-finite or absurd voxel sizes, and grids larger than 5 m.

    Parameters
    ----------
    shape
        Number of voxels along each axis (same order as ``spacing_mm``).
    spacing_mm
        Voxel size along each axis in mm.
    where
        File or series named in the message.

    Examples
    --------
    >>> check_grid((30, 101, 122), (3.0, 3.0, 3.0), "ct.nii.gz")
    >>> check_grid((4, 4, 4), (0.0, 1.0, 1.0), "z.nii")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    medseg.errors.GeometryError: z.nii: voxel size (0, 1, 1) mm has a zero, negative or ...
    """
    sp = [float(s) for s in spacing_mm]
    shown = "(" + ", ".join(f"{s:g}" for s in sp) + ")"
    for axis, s in enumerate(sp):
        if not math.isfinite(s) or s <= 0:
            raise GeometryError(
                f"{where}: voxel size {shown} mm has a zero, negative or non-finite value on "
                f"axis {axis} (expected > 0 mm); the header is corrupt. Fix the voxel size in "
                "the header (NIfTI pixdim/srow, NRRD space directions, DICOM PixelSpacing) "
                "rather than letting a value be guessed."
            )
        if s > MAX_SPACING_MM:
            raise GeometryError(
                f"{where}: voxel size {shown} mm is {s:g} mm on axis {axis}, larger than "
                f"{MAX_SPACING_MM:g} mm; no CT/MR/PET scanner makes such voxels, so the header "
                "is corrupt or in the wrong unit (metres or micrometres instead of mm). Fix "
                "the voxel size in the header."
            )
    for axis, (n, s) in enumerate(zip(shape, sp, strict=True)):
        if int(n) * s > MAX_EXTENT_MM:
            raise GeometryError(
                f"{where}: the grid is {int(n) * s / 1000:.1f} m long on axis {axis} "
                f"({int(n)} voxels × {s:g} mm), more than {MAX_EXTENT_MM / 1000:g} m; the "
                "header's matrix size or voxel size is corrupt. Fix the header."
            )


def check_axes(axes: npt.ArrayLike, where: str) -> None:
    """Refuse a sheared (non-orthogonal) axis system, like a tilted DICOM series.

    Parameters
    ----------
    axes
        3 × 3 matrix whose *columns* are the grid axes in world space (any length).
    where
        File or series named in the message.

    Examples
    --------
    >>> check_axes(np.diag([0.8, 0.8, 2.5]), "ok.nii")
    >>> shear = [[1.0, 0.3, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    >>> check_axes(shear, "shear.nii")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    medseg.errors.GeometryError: shear.nii: ... sheared ...: axes 0 and 1 are 73.30° apart...
    """
    m = np.asarray(axes, dtype=np.float64).reshape(3, 3)
    norms = np.linalg.norm(m, axis=0)
    if not np.all(np.isfinite(m)) or np.any(norms == 0):
        raise GeometryError(
            f"{where}: the image axes {np.round(m, 4).tolist()} include a zero-length or "
            "non-finite axis; the header is corrupt. Fix the affine/direction in the header."
        )
    unit = m / norms
    for i, j in ((0, 1), (0, 2), (1, 2)):
        cos = float(unit[:, i] @ unit[:, j])
        if abs(cos) > SHEAR_TOLERANCE:
            angle = math.degrees(math.acos(max(-1.0, min(1.0, cos))))
            raise GeometryError(
                f"{where}: the image axes are sheared (non-orthogonal): axes {i} and {j} are "
                f"{angle:.2f}° apart (expected 90°). medseg refuses sheared grids as it refuses "
                "a gantry-tilted DICOM series; resample the image onto an orthogonal grid "
                "first (e.g. SimpleITK Resample with an orthogonal direction)."
            )
