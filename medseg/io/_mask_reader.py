"""One binary mask file → its grid and the mask cropped to its bounding box (used by mask folders).

A head-and-neck organ mask is a 512×512×150 file (40 MB once decompressed) of which an organ
fills a few per cent. :func:`read_cropped_mask` never holds the full volume: NRRD files
(``gzip`` or ``raw`` encoding, integer voxels, data in the same file — every NRRD mask we have
met) are decompressed in small chunks that are scanned and dropped, keeping only the slices that
hold voxels. Geometry comes from SimpleITK's header reader, so it is exactly what
:func:`medseg.io.image_files.read_image_file` gives. Other files (NIfTI, MetaImage, float NRRD)
are read whole and cropped.

Decompression uses zlib-ng when it is installed (about 30× faster than the standard ``zlib`` on
the long zero runs of a mask); the values are the same either way.
"""

from __future__ import annotations

import importlib
import logging
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

from medseg.errors import InputError
from medseg.volume import Volume, affine_from_geometry

logger = logging.getLogger(__name__)

__all__ = ["Box", "CroppedMask", "read_cropped_mask"]

Box = tuple[slice, slice, slice]


def _inflater() -> ModuleType:
    """zlib-ng (same API as zlib, much faster inflate of long zero runs), else zlib."""
    try:
        return importlib.import_module("zlib_ng.zlib_ng")
    except ImportError:  # pragma: no cover - zlib-ng is a declared dependency
        logger.debug("zlib-ng not installed; mask files are decompressed with zlib (slower)")
        return zlib


_zlib = _inflater()
_ZLIB_ERRORS: tuple[type[BaseException], ...] = (zlib.error, _zlib.error)

_CHUNK_BYTES = 1 << 21  # decompressed bytes scanned at a time (stays in cache)

# NRRD type names (teem's list) → numpy dtype character; floats take the general reader.
_NRRD_TYPES = {
    **dict.fromkeys(("signed char", "int8", "int8_t"), "i1"),
    **dict.fromkeys(("uchar", "unsigned char", "uint8", "uint8_t"), "u1"),
    **dict.fromkeys(
        ("short", "short int", "signed short", "signed short int", "int16", "int16_t"), "i2"
    ),
    **dict.fromkeys(("ushort", "unsigned short", "unsigned short int", "uint16", "uint16_t"), "u2"),
    **dict.fromkeys(("int", "signed int", "int32", "int32_t"), "i4"),
    **dict.fromkeys(("uint", "unsigned int", "uint32", "uint32_t"), "u4"),
    **dict.fromkeys(
        ("longlong", "long long", "long long int", "signed long long", "int64", "int64_t"), "i8"
    ),
    **dict.fromkeys(
        ("ulonglong", "unsigned long long", "unsigned long long int", "uint64", "uint64_t"), "u8"
    ),
}


@dataclass(frozen=True, eq=False)
class CroppedMask:
    """A boolean mask stored as its tight bounding box and the voxels inside it.

    Attributes
    ----------
    shape
        Shape ``(slice, row, column)`` of the full mask.
    box
        Tight bounding box of the ``True`` voxels, ``None`` when the mask is empty.
    crop
        Boolean array of the box's shape (``(0, 0, 0)`` when empty).

    Examples
    --------
    >>> m = np.zeros((3, 4, 5), bool); m[1, 1:3, 2] = True
    >>> c = CroppedMask.from_array(m)
    >>> c.box, c.crop.shape, c.count, bool((c.full() == m).all())
    ((slice(1, 2, None), slice(1, 3, None), slice(2, 3, None)), (1, 2, 1), 2, True)
    """

    shape: tuple[int, int, int]
    box: Box | None
    crop: npt.NDArray[np.bool_]

    @classmethod
    def from_array(cls, mask: npt.NDArray[Any]) -> CroppedMask:
        """Crop a full 3D mask (any dtype; non-zero = inside)."""
        m = np.asarray(mask)
        shape = (int(m.shape[0]), int(m.shape[1]), int(m.shape[2]))
        box = tight_box(m)
        if box is None:
            return cls(shape, None, np.zeros((0, 0, 0), bool))
        return cls(shape, box, np.asarray(m[box] != 0))

    @property
    def count(self) -> int:
        """Number of ``True`` voxels."""
        return int(np.count_nonzero(self.crop))

    def cropped(self, box: Box) -> npt.NDArray[np.bool_]:
        """The mask inside ``box`` (any box of the full grid), as a new boolean array."""
        out = np.zeros(tuple(s.stop - s.start for s in box), dtype=bool)
        if self.box is None:
            return out
        lo = [max(a.start, b.start) for a, b in zip(self.box, box, strict=True)]
        hi = [min(a.stop, b.stop) for a, b in zip(self.box, box, strict=True)]
        if any(h <= low for low, h in zip(lo, hi, strict=True)):
            return out
        src = tuple(
            slice(low - a.start, h - a.start) for low, h, a in zip(lo, hi, self.box, strict=True)
        )
        dst = tuple(
            slice(low - b.start, h - b.start) for low, h, b in zip(lo, hi, box, strict=True)
        )
        out[dst] = self.crop[src]
        return out

    def full(self) -> npt.NDArray[np.bool_]:
        """The whole mask as a new boolean array of :attr:`shape`."""
        out = np.zeros(self.shape, dtype=bool)
        if self.box is not None:
            out[self.box] = self.crop
        return out


def tight_box(mask: npt.NDArray[Any]) -> Box | None:
    """Tight bounding box of the non-zero voxels of a 3D array, or ``None`` when all zero.

    Examples
    --------
    >>> m = np.zeros((4, 5, 6), np.uint8); m[1, 2:4, 5] = 7
    >>> tight_box(m)
    (slice(1, 2, None), slice(2, 4, None), slice(5, 6, None))
    """
    m = np.asarray(mask)
    z = np.flatnonzero(m.reshape(m.shape[0], -1).any(axis=1))
    if z.size == 0:
        return None
    plane = np.logical_or.reduce(m[z[0] : z[-1] + 1] != 0, axis=0)
    rows = np.flatnonzero(plane.any(axis=1))
    cols = np.flatnonzero(plane.any(axis=0))
    return (
        slice(int(z[0]), int(z[-1]) + 1),
        slice(int(rows[0]), int(rows[-1]) + 1),
        slice(int(cols[0]), int(cols[-1]) + 1),
    )


def _short(exc: BaseException) -> str:
    """The informative line of an exception (ITK messages span many lines)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for ln in lines:
        if "description:" in ln.lower():
            return ln.split(":", 1)[1].strip()
    return lines[-1] if lines else type(exc).__name__


def header_grid(f: Path) -> Volume:
    """Grid of an image file from its header only (array: a zero-stride placeholder).

    Raises
    ------
    InputError
        The header cannot be read; the message names the file and the problem.
    """
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(f))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise InputError(
            f"{f}: cannot read the image header ({_short(exc)}). Is it a complete NRRD/NIfTI/"
            "MetaImage file? Re-export or remove it."
        ) from exc
    if reader.GetDimension() != 3 or reader.GetNumberOfComponents() != 1:
        raise InputError(
            f"{f}: a mask must be a 3D scalar image; this one has {reader.GetDimension()} "
            f"dimensions and {reader.GetNumberOfComponents()} component(s) per voxel."
        )
    size = reader.GetSize()
    sp = reader.GetSpacing()
    d = np.asarray(reader.GetDirection(), dtype=np.float64).reshape(3, 3)
    affine = affine_from_geometry(
        (sp[2], sp[1], sp[0]), origin_mm=reader.GetOrigin(), direction=d[:, [2, 1, 0]]
    )
    shape = (int(size[2]), int(size[1]), int(size[0]))
    return Volume(np.broadcast_to(np.zeros((), np.uint8), shape), affine)


@dataclass(frozen=True)
class _NrrdLayout:
    offset: int
    dtype: np.dtype[Any]
    encoding: str  # "gzip" or "raw"


def _nrrd_layout(f: Path) -> _NrrdLayout | None:
    """Where and how the voxels of an NRRD file are stored; ``None`` = not for the fast path."""
    with open(f, "rb") as fh:
        head = fh.read(1 << 16)
    if not head.startswith(b"NRRD000"):
        return None
    end = head.find(b"\n\n")
    if end < 0:
        return None
    fields: dict[str, str] = {}
    for raw in head[:end].decode("latin-1").splitlines()[1:]:
        line = raw.strip()
        if not line or line.startswith("#") or ":=" in line or ": " not in line:
            continue
        key, value = line.split(": ", 1)
        fields[key.strip().lower()] = value.strip()
    code = _NRRD_TYPES.get(fields.get("type", "").lower())
    encoding = {"gzip": "gzip", "gz": "gzip", "raw": "raw"}.get(fields.get("encoding", "").lower())
    skips = {fields.get(k, "0") for k in ("line skip", "lineskip", "byte skip", "byteskip")}
    detached = "data file" in fields or "datafile" in fields
    if code is None or encoding is None or detached or skips != {"0"}:
        return None
    if fields.get("dimension") != "3":
        return None
    dtype = np.dtype(code)
    if dtype.itemsize > 1:
        dtype = dtype.newbyteorder("<" if fields.get("endian", "little") == "little" else ">")
    return _NrrdLayout(end + 2, dtype, encoding)


def _inflate(data: bytes, f: Path) -> Iterator[bytes]:
    """Decompressed pieces of a gzip (or zlib) stream, a few MB at a time, members chained."""
    pending = data
    while pending:
        d = _zlib.decompressobj(47)  # 32 + 15: gzip or zlib header, detected
        buf = pending
        try:
            while buf:
                out = d.decompress(buf, _CHUNK_BYTES)
                if out:
                    yield out
                buf = d.unconsumed_tail
                if d.eof:
                    break
            tail = d.flush()
        except _ZLIB_ERRORS as exc:
            raise InputError(
                f"{f}: the compressed voxel data is corrupt ({exc}); the file is damaged or was "
                "cut short. Re-export it."
            ) from exc
        if tail:
            yield tail
        if not d.eof:
            raise InputError(
                f"{f}: the compressed voxel data ends early (file cut short?). Re-export it."
            )
        pending = d.unused_data.lstrip(b"\x00")


def _read_raw(fh: Any, offset: int) -> Iterator[bytes]:
    fh.seek(offset)
    while chunk := fh.read(_CHUNK_BYTES):
        yield chunk


def _stream_nrrd(f: Path, layout: _NrrdLayout, shape: tuple[int, int, int]) -> CroppedMask:
    """Scan the voxels slice by slice; keep only slices with foreground."""
    nz, ny, nx = shape
    slice_bytes = ny * nx * layout.dtype.itemsize
    word = np.uint64 if slice_bytes % 8 == 0 else np.uint8
    expected = slice_bytes * nz
    kept: dict[int, npt.NDArray[np.bool_]] = {}
    values: set[Any] = set()
    k = 0
    carry = b""
    with open(f, "rb") as fh:
        if layout.encoding == "gzip":
            fh.seek(layout.offset)
            pieces: Iterator[bytes] = _inflate(fh.read(), f)
        else:
            pieces = _read_raw(fh, layout.offset)
        for piece in pieces:
            buf = carry + piece if carry else piece
            n_whole = min(len(buf) // slice_bytes, nz - k)
            if n_whole:
                block = buf[: n_whole * slice_bytes]
                words = np.frombuffer(block, dtype=word).reshape(n_whole, -1)
                for i in np.flatnonzero(words.max(axis=1)).tolist():
                    s = np.frombuffer(block, layout.dtype, ny * nx, i * slice_bytes)
                    fg = s != 0
                    values.update(np.unique(s[fg]).tolist())
                    if len(values) > 1:
                        raise _not_binary(f, sorted(values))
                    kept[k + i] = fg.reshape(ny, nx)
                k += n_whole
            carry = buf[n_whole * slice_bytes :]
            if k == nz and carry:
                break
    got = k * slice_bytes + len(carry)
    if got < expected or (layout.encoding == "gzip" and got > expected):
        raise InputError(
            f"{f}: holds {got} bytes of voxel data, the header's size {nx}x{ny}x{nz} "
            f"({layout.dtype}) needs {expected}. The file is damaged or cut short; re-export it."
        )
    return _assemble(shape, kept)


def _assemble(shape: tuple[int, int, int], kept: dict[int, npt.NDArray[np.bool_]]) -> CroppedMask:
    if not kept:
        return CroppedMask(shape, None, np.zeros((0, 0, 0), bool))
    z0, z1 = min(kept), max(kept) + 1
    rows = np.logical_or.reduce([m.any(axis=1) for m in kept.values()])
    cols = np.logical_or.reduce([m.any(axis=0) for m in kept.values()])
    r = np.flatnonzero(rows)
    c = np.flatnonzero(cols)
    box = (slice(z0, z1), slice(int(r[0]), int(r[-1]) + 1), slice(int(c[0]), int(c[-1]) + 1))
    crop = np.zeros((z1 - z0, box[1].stop - box[1].start, box[2].stop - box[2].start), bool)
    for kk, m in kept.items():
        crop[kk - z0] = m[box[1], box[2]]
    return CroppedMask(shape, box, crop)


def _not_binary(f: Path, values: list[Any]) -> InputError:
    shown = values[:5]
    return InputError(
        f"{f}: not a binary mask (several non-zero values, e.g. {shown}); a mask folder holds "
        "one organ per file. Load a multi-label map as a single file instead."
    )


def read_cropped_mask(f: Path) -> tuple[Volume, CroppedMask]:
    """Grid and cropped foreground of one binary mask file.

    Parameters
    ----------
    f
        NRRD, NIfTI or MetaImage file holding one organ (0 = outside, one non-zero value inside).

    Returns
    -------
    grid, mask
        The grid (its array a zero-stride placeholder of zeros, ``uint8``) and the mask.

    Raises
    ------
    InputError
        Unreadable, damaged or truncated file; not a 3D scalar image; several non-zero values.
        Every message names the file and says what is wrong.
    """
    from medseg.io.image_files import read_image_file

    try:
        layout = _nrrd_layout(f)
        if layout is not None:
            grid = header_grid(f)
            return grid, _stream_nrrd(f, layout, grid.shape)
    except PermissionError as exc:
        raise InputError(f"{f}: permission denied; make the file readable.") from exc
    except IsADirectoryError as exc:
        raise InputError(f"{f}: is a folder, not a mask file.") from exc
    except OSError as exc:
        raise InputError(f"{f}: cannot read the file ({exc.strerror or exc}).") from exc
    vol = read_image_file(f)
    arr = vol.array
    mask = CroppedMask.from_array(arr)
    if mask.box is not None:
        inside = arr[mask.box][mask.crop]
        top, bottom = inside.max(), inside.min()
        if top != bottom:
            raise _not_binary(f, sorted({bottom.item(), top.item()}))
    grid = vol.with_array(np.broadcast_to(np.zeros((), np.uint8), vol.shape))
    return grid, mask
