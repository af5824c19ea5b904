"""Planar contours ↔ 2D masks (pixel units), the geometry behind RTSTRUCT export and import.

A module of its own (not under ``medseg.export`` or ``medseg.io``) because both the RTSTRUCT
writer (:func:`mask_to_contours`) and the RTSTRUCT reader (:func:`fill_even_odd`) use it, and
``medseg.io`` must not import ``medseg.export``.

Conventions, shared by the writer and the reader so that a round trip is exact up to the
dropped fragments:

* A contour is an ``(N, 2)`` array of ``(row, column)`` pixel coordinates; pixel ``(i, j)`` has its
  centre at ``(i, j)``. Contours are closed implicitly (the last point is not repeated).
* A pixel belongs to a structure when its centre lies inside an **odd** number of the
  structure's contours on that slice (even-odd rule). Holes are therefore written as separate
  inner contours on the same slice (no keyhole cuts); an island inside a hole is a third contour.
  This is how dicompyler, plastimatch, 3D Slicer (SlicerRT) and Eclipse read nested contours.
* Contours come from marching squares at level 0.5 on the zero-padded mask, so each runs halfway
  between foreground and background pixel centres; collinear vertices are removed.
* Contours with fewer than 3 distinct points or enclosing less than one pixel of area
  (isolated single pixels, one-pixel holes) are dropped: they are sub-voxel fragments that
  several planning systems reject.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from skimage.measure import find_contours

__all__ = ["MIN_AREA_PX", "fill_even_odd", "mask_to_contours", "polygon_area"]

#: Contours enclosing less than this many pixels of area are dropped.
MIN_AREA_PX = 1.0


def polygon_area(points: npt.NDArray[np.float64]) -> float:
    """Signed area (shoelace) of a closed polygon given as ``(N, 2)`` points.

    Examples
    --------
    >>> polygon_area(np.array([[0, 0], [0, 2], [3, 2], [3, 0]], float))
    -6.0
    """
    x, y = points[:, 0], points[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def mask_to_contours(
    mask: npt.NDArray[np.bool_], *, min_area_px: float = MIN_AREA_PX
) -> list[npt.NDArray[np.float64]]:
    """Outer and hole contours of a 2D mask, in ``(row, column)`` pixel coordinates.

    Parameters
    ----------
    mask
        2D boolean array ``(rows, columns)``.
    min_area_px
        Contours enclosing less area (in pixels) are dropped.

    Returns
    -------
    list of ndarray
        ``(N, 2)`` float arrays, ``N >= 3``, not closed (first point not repeated).

    Examples
    --------
    >>> m = np.zeros((6, 6), bool); m[1:5, 1:5] = True; m[2:4, 2:4] = False
    >>> [len(c) for c in mask_to_contours(m)]  # outer square and its hole
    [8, 8]
    >>> bool(np.array_equal(fill_even_odd(mask_to_contours(m), m.shape), m))
    True
    """
    m = np.asarray(mask, dtype=bool)
    if not m.any():
        return []
    padded = np.pad(m, 1).astype(np.float32)
    out = []
    for c in find_contours(padded, 0.5):
        pts = _drop_collinear(c[:-1] if len(c) > 1 and np.array_equal(c[0], c[-1]) else c) - 1.0
        if len(pts) < 3 or abs(polygon_area(pts)) < min_area_px:
            continue
        out.append(np.ascontiguousarray(pts, dtype=np.float64))
    return out


def _drop_collinear(pts: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Remove vertices of a closed polygon that lie on a straight run (vectorised).

    Marching-squares vertices sit on a half-pixel lattice, so steps are compared after rounding
    to 1e-6 pixel.
    """
    if len(pts) < 4:
        return pts
    step_in = np.round(pts - np.roll(pts, 1, axis=0), 6)
    step_out = np.round(np.roll(pts, -1, axis=0) - pts, 6)
    cross = step_in[:, 0] * step_out[:, 1] - step_in[:, 1] * step_out[:, 0]
    dot = (step_in * step_out).sum(axis=1)
    keep = ~((np.abs(cross) < 1e-9) & (dot > 0))
    return pts[keep]


def fill_even_odd(
    contours: list[npt.NDArray[np.float64]], shape: tuple[int, int]
) -> npt.NDArray[np.bool_]:
    """Rasterise contours on a ``shape`` grid with the even-odd rule (pixel centres inside).

    Scanline fill: each pixel-centre row is crossed by the contour edges (half-open rule, so a
    vertex on a row counts once); centres between the 1st and 2nd, 3rd and 4th, ... crossing of a
    row are inside. Cost grows with the contour length, not with the area.

    Examples
    --------
    >>> sq = np.array([[0.5, 0.5], [0.5, 3.5], [3.5, 3.5], [3.5, 0.5]])
    >>> int(fill_even_odd([sq], (5, 5)).sum())
    9
    >>> hole = np.array([[1.5, 1.5], [2.5, 1.5], [2.5, 2.5], [1.5, 2.5]])  # around pixel (2, 2)
    >>> int(fill_even_odd([sq, hole], (5, 5)).sum())
    8
    """
    rows, cols = shape
    out = np.zeros((rows, cols + 1), dtype=np.int8)
    ys_all, xs_all = [], []
    for c in contours:
        r0, c0 = c[:, 0], c[:, 1]
        r1, c1 = np.roll(r0, -1), np.roll(c0, -1)
        lo, hi = np.minimum(r0, r1), np.maximum(r0, r1)
        first = np.maximum(np.ceil(lo), 0).astype(np.int64)  # rows y with lo <= y < hi
        last = np.minimum(np.ceil(hi) - 1, rows - 1).astype(np.int64)
        n = np.maximum(last - first + 1, 0)
        if n.sum() == 0:
            continue
        edge = np.repeat(np.arange(len(r0)), n)
        y = first[edge] + (np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n))
        t = (y - r0[edge]) / (r1[edge] - r0[edge])
        ys_all.append(y)
        xs_all.append(c0[edge] + t * (c1[edge] - c0[edge]))
    if not ys_all:
        return np.zeros(shape, dtype=bool)
    ys, xs = np.concatenate(ys_all), np.concatenate(xs_all)
    order = np.lexsort((xs, ys))
    ys, xs = ys[order].reshape(-1, 2), xs[order].reshape(-1, 2)
    start = np.clip(np.floor(xs[:, 0]).astype(np.int64) + 1, 0, cols)
    stop = np.clip(np.floor(xs[:, 1]).astype(np.int64) + 1, 0, cols)
    keep = stop > start
    np.add.at(out, (ys[keep, 0], start[keep]), 1)
    np.add.at(out, (ys[keep, 0], stop[keep]), -1)
    return np.cumsum(out, axis=1)[:, :cols] > 0
