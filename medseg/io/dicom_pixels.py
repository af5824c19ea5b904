"""Pixel data of a DICOM series: read once into one array, rescale, and the opt-in resamplers.

Uncompressed little-endian pixels are read straight from each file into the output buffer at the
offset found during the header scan (no per-slice dataset parsing). Compressed transfer syntaxes
(JPEG baseline/extended/lossless, JPEG-LS, JPEG 2000, RLE, deflate, big endian) go through
``pydicom.pixels.pixel_array`` with the installed plugins (pylibjpeg-openjpeg, pylibjpeg-libjpeg,
pyjpegls, pydicom's own RLE), on a small thread pool.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt

from medseg.errors import InputError
from medseg.io.dicom_scan import InstanceHeader
from medseg.io.grid_limits import check_voxel_count

logger = logging.getLogger(__name__)

__all__ = ["read_stack", "resample_along_normal", "shift_tilted_slices"]

_NATIVE_LE = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"})


def _stored_dtype(inst: InstanceHeader) -> np.dtype[Any] | None:
    if inst.bits_allocated not in (8, 16, 32):
        return None
    kind = "i" if inst.pixel_representation == 1 else "u"
    return np.dtype(f"<{kind}{inst.bits_allocated // 8}")


def _fast_path(inst: InstanceHeader) -> bool:
    return (
        inst.transfer_syntax_uid in _NATIVE_LE
        and inst.pixel_offset is not None
        and _stored_dtype(inst) is not None
        and (inst.bits_stored in (0, inst.bits_allocated) or inst.pixel_representation == 0)
        and inst.bits_stored <= inst.bits_allocated
    )


def _check_native_length(inst: InstanceHeader, need: int, name: str) -> None:
    if inst.pixel_length is None or inst.pixel_length < need or inst.truncated:
        raise InputError(
            f"{name}: {inst.path}: pixel data hold {inst.pixel_length} bytes but "
            f"{inst.rows}×{inst.columns} pixels need {need} (truncated or wrong Rows/Columns). "
            "Re-export or remove this file."
        )


def _read_native(inst: InstanceHeader, out: npt.NDArray[Any], name: str) -> None:
    need = out.nbytes
    _check_native_length(inst, need, name)
    try:
        with open(inst.path, "rb") as fh:
            fh.seek(inst.pixel_offset or 0)
            got = fh.readinto(memoryview(out).cast("B"))  # type: ignore[arg-type]
    except OSError as exc:
        from medseg.io.dicom_scan import unreadable

        raise unreadable(inst.path, exc) from exc
    if got != need:
        raise InputError(f"{name}: {inst.path}: file truncated inside the pixel data.")
    if inst.pixel_representation == 0 and 0 < inst.bits_stored < inst.bits_allocated:
        np.bitwise_and(out, (1 << inst.bits_stored) - 1, out=out)


def _decode(inst: InstanceHeader, name: str) -> npt.NDArray[Any]:
    from pydicom.pixels import pixel_array

    try:
        arr = pixel_array(inst.path)
    except (RuntimeError, NotImplementedError, ValueError, OSError, EOFError, KeyError) as exc:
        import pydicom.uid

        ts = pydicom.uid.UID(inst.transfer_syntax_uid)
        raise InputError(
            f"{name}: {inst.path}: cannot decode pixel data ({ts.name}; "
            f"{type(exc).__name__}: {exc}). For JPEG/JPEG 2000 install pylibjpeg with its "
            "libjpeg and openjpeg plugins; otherwise the file is corrupt."
        ) from exc
    if arr.shape != (inst.rows, inst.columns):
        raise InputError(
            f"{name}: {inst.path}: decoded pixels have shape {arr.shape}, header says "
            f"{(inst.rows, inst.columns)}."
        )
    return arr


def read_stack(
    instances: Sequence[InstanceHeader], *, threads: int = 2, name: str = "series"
) -> npt.NDArray[Any]:
    """Read every slice's pixels into one ``(slices, rows, columns)`` array and rescale.

    Returns int16 when slope is 1 and intercepts are whole numbers and the values fit (exact),
    else float32 (``stored × slope + intercept``). The size of the stack and the length of every
    uncompressed slice's pixel data are checked before the array is allocated.
    """
    n, rows, cols = len(instances), instances[0].rows, instances[0].columns
    check_voxel_count((n, rows, cols), name)
    dtypes = {_stored_dtype(i) for i in instances}
    common = dtypes.pop() if len(dtypes) == 1 else None
    if common is not None:
        for inst in instances:
            if _fast_path(inst):
                _check_native_length(inst, rows * cols * common.itemsize, name)
    raw: npt.NDArray[Any] = np.empty((n, rows, cols), dtype=common or np.float64)
    slow = []
    for k, inst in enumerate(instances):
        if common is not None and _fast_path(inst):
            _read_native(inst, raw[k], name)
        else:
            slow.append(k)
    if slow:
        if threads > 1 and len(slow) > 1:
            with ThreadPoolExecutor(max_workers=threads) as pool:
                decoded = list(pool.map(lambda k: _decode(instances[k], name), slow))
        else:
            decoded = [_decode(instances[k], name) for k in slow]
        if common is not None and any(d.dtype != common for d in decoded):
            raw = raw.astype(np.float64)
        for k, arr in zip(slow, decoded, strict=True):
            raw[k] = arr
    return _rescale(raw, instances)


def _rescale(raw: npt.NDArray[Any], instances: Sequence[InstanceHeader]) -> npt.NDArray[Any]:
    slopes = np.array([i.rescale_slope for i in instances], dtype=np.float64)
    inters = np.array([i.rescale_intercept for i in instances], dtype=np.float64)
    integral = bool(np.all(slopes == 1) and np.all(inters == np.round(inters)))
    if integral and np.issubdtype(raw.dtype, np.integer):
        lo, hi = int(raw.min()), int(raw.max())
        if lo + inters.min() >= -32768 and hi + inters.max() <= 32767:
            if raw.dtype == np.int16 or (raw.dtype == np.uint16 and hi <= 32767):
                out = raw.view(np.int16)  # same values, no copy
                if np.any(inters != 0):
                    out += inters.astype(np.int16)[:, None, None]
            else:
                wide = raw.astype(np.int32) + inters.astype(np.int32)[:, None, None]
                out = wide.astype(np.int16)
            return out
    out32 = raw.astype(np.float32)
    if np.any(slopes != 1):
        out32 *= slopes.astype(np.float32)[:, None, None]
    if np.any(inters != 0):
        out32 += inters.astype(np.float32)[:, None, None]
    return out32


def shift_tilted_slices(
    array: npt.NDArray[Any],
    offsets_rc_mm: npt.NDArray[np.float64],
    pixel_spacing: tuple[float, float] | None,
) -> npt.NDArray[np.float32]:
    """Undo gantry tilt: resample slice ``k`` displaced by ``offsets_rc_mm[k]`` (row, column mm).

    Slice ``k`` of a tilted series starts ``offsets_rc_mm[k]`` away from the line through slice
    0 along the normal; sampling it at the shifted position puts every slice on the orthogonal
    grid of slice 0. Linear interpolation; outside samples get the array minimum (air).
    """
    from scipy.ndimage import shift

    ps = np.asarray(pixel_spacing or (1.0, 1.0), dtype=np.float64)
    fill = float(array.min())
    out = np.empty(array.shape, dtype=np.float32)
    for k in range(array.shape[0]):
        # slice k's pixel (r, c) lies at the orthogonal grid's (r + off_r/ps_r, c + off_c/ps_c):
        # output[x] = input[x - off/ps], which is scipy's shift by +off/ps
        d = offsets_rc_mm[k] / ps
        shift(array[k].astype(np.float32), d, output=out[k], order=1, mode="constant", cval=fill)
    return out


def resample_along_normal(
    array: npt.NDArray[Any], positions_mm: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.float32], float]:
    """Linearly interpolate slices at ``positions_mm`` onto a regular grid (median step).

    Returns the new array and its slice step in mm; the first slice stays at ``positions_mm[0]``.

    Examples
    --------
    >>> import numpy as np
    >>> a = np.arange(4, dtype=np.float32)[:, None, None] * np.ones((4, 1, 1))
    >>> out, step = resample_along_normal(a, np.array([0.0, 1.0, 2.0, 4.0]))
    >>> out[:, 0, 0].tolist(), step
    ([0.0, 1.0, 2.0, 2.5, 3.0], 1.0)
    """
    s = np.asarray(positions_mm, dtype=np.float64)
    step = float(np.median(np.diff(s)))
    n = round((s[-1] - s[0]) / step) + 1
    targets = np.clip(s[0] + step * np.arange(n), s[0], s[-1])
    hi = np.clip(np.searchsorted(s, targets, side="right"), 1, len(s) - 1)
    lo = hi - 1
    w = ((targets - s[lo]) / (s[hi] - s[lo]))[:, None, None].astype(np.float32)
    src = array.astype(np.float32, copy=False)
    out = src[lo] * (1 - w) + src[hi] * w
    return out.astype(np.float32, copy=False), step
