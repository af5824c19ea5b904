"""The two surface definitions used by medseg's distance metrics.

``"surfel"`` (DeepMind ``surface-distance``, Nikolov et al. 2018)
    The surface of a mask is the set of voxel *corners* whose 2×2×2 neighbourhood is neither all
    inside nor all outside the mask. Each such corner carries the area (mm²) of the
    marching-cubes triangles of its neighbourhood code, computed for the voxel spacing. Distances
    are measured between corner points; averages and percentiles are weighted by area.

``"voxel"`` (MONAI ``get_mask_edges``, MedPy, most papers)
    The surface is the set of foreground voxels with at least one 6-connected neighbour outside
    the mask (the image border counts as outside): ``mask & ~erode(mask)``. Every surface voxel
    has weight 1; distances are measured between voxel centres.

Both return points as integer indices ``(slice, row, column)`` in the frame of the padded crop
they were computed on; distances only ever compare points of the same frame, so the half-voxel
offset of corners does not matter.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from medseg.errors import InputError
from medseg.metrics._surfel_table import SURFEL_NORMALS_EIGHTHS

__all__ = [
    "SURFACE_DEFINITIONS",
    "Surface",
    "SurfaceDefinition",
    "extract_surface",
    "surfel_area_table",
]

SurfaceDefinition = Literal["surfel", "voxel"]
#: The names accepted wherever a surface definition is chosen.
SURFACE_DEFINITIONS: tuple[str, ...] = ("surfel", "voxel")

# Bit of each corner of the 2×2×2 block (dz, dy, dx), DeepMind's encoding.
_CODE_BITS = (
    ((0, 0, 0), 7),
    ((0, 0, 1), 6),
    ((0, 1, 0), 5),
    ((0, 1, 1), 4),
    ((1, 0, 0), 3),
    ((1, 0, 1), 2),
    ((1, 1, 0), 1),
    ((1, 1, 1), 0),
)


@dataclass(frozen=True)
class Surface:
    """Surface points of one mask and their weights.

    Attributes
    ----------
    grid
        Boolean array of the frame, ``True`` at the surface points.
    flat
        ``(N,)`` int64 flat (C-order) indices of the surface points in ``grid``.
    weights
        ``(N,)`` float64: surfel area in mm² (``"surfel"``) or 1.0 (``"voxel"``).
    """

    grid: npt.NDArray[np.bool_]
    flat: npt.NDArray[np.int64]
    weights: npt.NDArray[np.float64]

    @classmethod
    def from_grid(
        cls, grid: npt.NDArray[np.bool_], weights_grid: npt.NDArray[np.float64] | None
    ) -> Surface:
        """Surface of the ``True`` voxels of ``grid``; weights from ``weights_grid`` or 1."""
        flat = np.flatnonzero(grid)
        if weights_grid is None:
            weights = np.ones(flat.size, dtype=np.float64)
        else:
            weights = np.asarray(weights_grid).ravel()[flat]
        return cls(grid, flat.astype(np.int64, copy=False), weights)

    @functools.cached_property
    def points(self) -> npt.NDArray[np.int64]:
        """``(N, 3)`` int64 indices ``(slice, row, column)`` of the points in the frame."""
        return np.stack(np.unravel_index(self.flat, self.grid.shape), axis=1).astype(np.int64)

    @property
    def size(self) -> int:
        """Number of surface points."""
        return int(self.flat.size)


@functools.lru_cache(maxsize=64)
def _area_table_cached(spacing_mm: tuple[float, float, float]) -> npt.NDArray[np.float64]:
    s0, s1, s2 = spacing_mm
    scale = np.array([s1 * s2, s0 * s2, s0 * s1], dtype=np.float64)
    table = np.zeros(256, dtype=np.float64)
    for code, normals in enumerate(SURFEL_NORMALS_EIGHTHS):
        area = 0.0
        for normal in normals:
            n = np.asarray(normal, dtype=np.float64) / 8.0 * scale
            area += float(np.linalg.norm(n))
        table[code] = area
    table.setflags(write=False)
    return table


def surfel_area_table(spacing_mm: tuple[float, float, float]) -> npt.NDArray[np.float64]:
    """Area in mm² of the surface elements of each of the 256 neighbourhood codes.

    Parameters
    ----------
    spacing_mm
        Voxel spacing along ``(slice, row, column)`` in mm.

    Returns
    -------
    numpy.ndarray
        ``(256,)`` float64, read-only; codes 0 and 255 have area 0.

    Examples
    --------
    >>> t = surfel_area_table((1.0, 1.0, 1.0))
    >>> float(t[0]), float(t[255]), round(float(t[0b00001111]), 3)
    (0.0, 0.0, 1.0)
    """
    key = tuple(float(s) for s in spacing_mm)
    if len(key) != 3 or not all(np.isfinite(key)) or min(key) <= 0:
        raise InputError(f"spacing_mm must be 3 positive numbers; got {spacing_mm!r}.")
    return _area_table_cached((key[0], key[1], key[2]))


def _pad(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.uint8]:
    padded = np.zeros(tuple(n + 2 for n in mask.shape), dtype=np.uint8)
    padded[1:-1, 1:-1, 1:-1] = mask
    return padded


def _neighbour_codes(padded: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """2×2×2 neighbourhood code of every corner of a zero-padded mask (shape ``n + 1``)."""
    nz, ny, nx = (n - 1 for n in padded.shape)
    codes = np.zeros((nz, ny, nx), dtype=np.uint8)
    for (dz, dy, dx), bit in _CODE_BITS:
        block = padded[dz : dz + nz, dy : dy + ny, dx : dx + nx]
        codes |= block << np.uint8(bit) if bit else block
    return codes


def _surfel_surface(mask: npt.NDArray[np.bool_], spacing_mm: tuple[float, float, float]) -> Surface:
    codes = _neighbour_codes(_pad(mask))
    border = (codes != 0) & (codes != 255)
    flat = np.flatnonzero(border)
    weights = surfel_area_table(spacing_mm)[codes.ravel()[flat]]
    return Surface(border, flat.astype(np.int64, copy=False), weights)


def _voxel_surface(mask: npt.NDArray[np.bool_]) -> Surface:
    p = _pad(mask).view(bool)
    inner = p[1:-1, 1:-1, 1:-1]
    interior = (
        inner
        & p[:-2, 1:-1, 1:-1]
        & p[2:, 1:-1, 1:-1]
        & p[1:-1, :-2, 1:-1]
        & p[1:-1, 2:, 1:-1]
        & p[1:-1, 1:-1, :-2]
        & p[1:-1, 1:-1, 2:]
    )
    return Surface.from_grid(inner & ~interior, None)


def extract_surface(
    mask: npt.NDArray[np.bool_],
    spacing_mm: tuple[float, float, float],
    definition: SurfaceDefinition = "surfel",
) -> Surface:
    """Surface points and weights of a 3D boolean mask under one definition.

    Parameters
    ----------
    mask
        Boolean array ``(slice, row, column)``; outside the array counts as background.
    spacing_mm
        Voxel spacing along ``(slice, row, column)`` in mm.
    definition
        ``"surfel"`` (corner points weighted by marching-cubes area) or ``"voxel"`` (boundary
        voxels, weight 1). See the module docstring for the formulas.

    Returns
    -------
    Surface
        Points in the frame of ``mask`` (corner ``i`` lies between voxels ``i - 1`` and ``i``).

    Examples
    --------
    >>> m = np.zeros((3, 3, 3), bool); m[1, 1, 1] = True
    >>> extract_surface(m, (1.0, 1.0, 1.0), "voxel").size
    1
    >>> s = extract_surface(m, (2.0, 1.0, 1.0), "surfel")
    >>> s.size, round(float(s.weights.sum()), 4)
    (8, 3.0)
    """
    m = np.asarray(mask)
    if m.ndim != 3:
        raise InputError(f"masks must be 3D (slice, row, column); got shape {m.shape}.")
    if m.dtype != np.bool_:
        m = m.astype(bool)
    if definition == "surfel":
        return _surfel_surface(m, spacing_mm)
    if definition == "voxel":
        return _voxel_surface(m)
    raise InputError(
        f"unknown surface definition {definition!r}; use one of {SURFACE_DEFINITIONS}."
    )
