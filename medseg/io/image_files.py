"""Read and write single-file volumes: NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr), MHA/MHD.

NIfTI goes through nibabel (RAS ↔ LPS converted in :mod:`medseg.volume`); NRRD and MetaImage go
through SimpleITK (LPS natively). Reading validates the header before allocating voxels and
verifies compressed data to the end of the stream (see :func:`read_image_file`). Writes are
atomic: a temporary file in the target folder is renamed over the destination only when
complete.
"""

from __future__ import annotations

import gzip
import io
import logging
import math
import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import ExportError, InputError, MedsegError
from medseg.io.atomic import write_atomic
from medseg.io.grid_limits import check_axes, check_grid, check_voxel_count
from medseg.volume import Volume, from_nibabel, from_sitk, to_nibabel, to_sitk

logger = logging.getLogger(__name__)

__all__ = ["detect_file_format", "gunzip_verified", "read_image_file", "write_image_file"]

_SUFFIXES = {
    ".nii": "nifti",
    ".nii.gz": "nifti",
    ".nrrd": "nrrd",
    ".nhdr": "nrrd",
    ".mha": "metaimage",
    ".mhd": "metaimage",
}


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _open_error(path: Path, exc: OSError) -> InputError:
    if isinstance(exc, PermissionError):
        return InputError(
            f"{path}: cannot read the file (permission denied). Give this user read access "
            f"(e.g. chmod u+r '{path}') or copy the file somewhere readable."
        )
    return InputError(f"{path}: cannot read the file ({exc.strerror or exc}).")


def _corrupt(path: Path, exc: BaseException | str) -> InputError:
    return InputError(
        f"{path}: corrupt or truncated compressed data ({exc}); the voxels cannot be trusted, so "
        "the file is refused. Copy or export the file again from its source."
    )


def detect_file_format(path: Path) -> str:
    """Return ``"nifti"``, ``"nrrd"``, ``"metaimage"``, ``"dicom"`` or ``"unknown"`` by content.

    The content decides; the suffix only breaks ties for formats without a magic number.

    Raises
    ------
    InputError
        The file cannot be read (permission denied, I/O error) or its gzip header is corrupt.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(352)
    except OSError as exc:
        raise _open_error(path, exc) from exc
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head[:4] == b"NRRD":
        return "nrrd"
    if head[:2] == b"\x1f\x8b":
        try:
            with gzip.open(path, "rb") as gz:
                head = gz.read(352)
        except (OSError, EOFError, zlib.error) as exc:
            raise _corrupt(path, exc) from exc
    if len(head) >= 348 and (head[344:348] in (b"n+1\x00", b"ni1\x00", b"n+2\x00")):
        return "nifti"
    if len(head) >= 4 and head[4:8] in (b"n+2\x00",):
        return "nifti"
    if int.from_bytes(head[:4], "little") in (348, 540) or int.from_bytes(head[:4], "big") in (
        348,
        540,
    ):
        return "nifti"
    text = head[:64].lstrip()
    if text.startswith((b"ObjectType", b"NDims")):
        return "metaimage"
    return "unknown"


_CHUNK = 1 << 20


def gunzip_verified(path: Path, *, keep: int | None = None) -> bytes:
    """Decompress a whole gzip file, verifying every member's CRC-32 and length.

    Parameters
    ----------
    path
        The ``.gz`` file.
    keep
        Keep at most this many decompressed bytes (the rest is still decompressed, to check the
        CRC, but not stored); ``None`` keeps everything.

    Raises
    ------
    InputError
        The stream is corrupt (CRC or length mismatch, invalid deflate data, trailing garbage)
        or truncated, or the file cannot be read.
    """
    out = bytearray()
    try:
        with gzip.open(path, "rb") as gz:
            while chunk := gz.read(_CHUNK):
                if keep is None or len(out) < keep:
                    out += chunk if keep is None else chunk[: keep - len(out)]
    except PermissionError as exc:
        raise _open_error(path, exc) from exc
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise _corrupt(path, exc) from exc
    except OSError as exc:
        raise _open_error(path, exc) from exc
    return bytes(out)


def _nifti_header(head: bytes, p: Path) -> Any:
    """The NIfTI-1/2 header of the first bytes, as stored (no nibabel fixes applied)."""
    import nibabel as nib

    size = int.from_bytes(head[:4], "little")
    if size not in (348, 540):
        size = int.from_bytes(head[:4], "big")
    klass = nib.Nifti2Header if size == 540 else nib.Nifti1Header
    if len(head) < size:
        raise InputError(
            f"{p}: truncated NIfTI header ({len(head)} bytes, a NIfTI-{1 if size == 348 else 2} "
            f"header needs {size}). The file is damaged; export it again."
        )
    try:
        return klass.from_fileobj(io.BytesIO(head[:size]), check=False)
    except (nib.spatialimages.HeaderDataError, ValueError) as exc:
        raise InputError(f"{p}: invalid NIfTI header ({exc}).") from exc


def _check_nifti_header(hdr: Any, p: Path) -> int:
    """Validate the grid of a raw NIfTI header before any voxel is read; return the data end.

    Refuses a zero/negative/absurd voxel size (nibabel would silently make a zero pixdim 1 mm),
    a sheared sform, more than :data:`MAX_VOXELS` voxels. Returns ``vox_offset + data bytes``.
    """
    import nibabel as nib

    try:
        shape = tuple(int(d) for d in hdr.get_data_shape())
        itemsize = int(hdr.get_data_dtype().itemsize)
        offset = int(hdr.get_data_offset())
    except (nib.spatialimages.HeaderDataError, ValueError, TypeError) as exc:
        raise InputError(f"{p}: invalid NIfTI header ({exc}).") from exc
    if any(d < 0 for d in shape):
        raise InputError(f"{p}: NIfTI header has a negative dimension {shape}; it is corrupt.")
    check_voxel_count(shape, str(p))
    if len(shape) >= 3 and all(d > 0 for d in shape):
        spatial = shape[:3]
        if int(hdr["sform_code"]) != 0:
            axes = np.asarray(hdr.get_sform(), dtype=np.float64)[:3, :3]
            norms = [float(v) for v in np.linalg.norm(axes, axis=0)]
            check_grid(spatial, norms, f"{p} (sform)")
            check_axes(axes, f"{p} (sform)")
        else:
            pixdim = [float(v) for v in hdr["pixdim"][1:4]]
            check_grid(spatial, pixdim, f"{p} (pixdim)")
    return offset + math.prod(shape) * itemsize


def _load_nifti(p: Path) -> Any:
    """nibabel image of a NIfTI file, after validating its header and its whole data stream.

    A gzip file is decompressed once, entirely (CRC and length verified), and given to nibabel
    from memory; misnamed files (no .nii/.nii.gz suffix) are read the same way, because nibabel
    picks its reader by suffix while medseg detects the format by content.
    """
    import nibabel as nib

    try:
        with open(p, "rb") as fh:
            magic = fh.read(2)
    except OSError as exc:
        raise _open_error(p, exc) from exc
    gz = magic == b"\x1f\x8b"
    if gz:
        try:
            with gzip.open(p, "rb") as fh:
                head = fh.read(540)
        except (OSError, EOFError, zlib.error) as exc:
            raise _corrupt(p, exc) from exc
    else:
        with open(p, "rb") as fh:
            head = fh.read(540)
    hdr = _nifti_header(head, p)
    end = _check_nifti_header(hdr, p)
    if gz:
        data = gunzip_verified(p, keep=end)
        have = len(data)
    else:
        have = p.stat().st_size
    if have < end:
        raise InputError(
            f"{p}: truncated NIfTI file: the header's image needs {end:,} bytes (offset + "
            f"voxels), the {'decompressed ' if gz else ''}file holds {have:,}. The file is "
            "incomplete; copy or export it again."
        )
    klass = nib.Nifti2Image if isinstance(hdr, nib.Nifti2Header) else nib.Nifti1Image
    if gz:
        return klass.from_bytes(data)
    if _suffix(p) == ".nii":
        return nib.load(str(p))
    return klass.from_bytes(p.read_bytes())


def _header_text(p: Path, end_marker: bytes, limit: int = 1 << 16) -> tuple[str, int]:
    """Header text of an NRRD/MetaImage file up to and including ``end_marker``, and its size."""
    try:
        with open(p, "rb") as fh:
            head = fh.read(limit)
    except OSError as exc:
        raise _open_error(p, exc) from exc
    at = head.find(end_marker)
    if at < 0:
        return head.decode("latin-1"), -1
    stop = at + len(end_marker)
    return head[:stop].decode("latin-1"), stop


def _verify_stream(path: Path, offset: int, decompressor: Any, what: str) -> None:
    """Decompress ``path`` from ``offset`` to the end, discarding output, to verify it."""
    try:
        fh = open(path, "rb")  # noqa: SIM115 (closed below; read and decode errors differ)
    except OSError as exc:
        raise _open_error(path, exc) from exc
    with fh:
        fh.seek(offset)
        # small input chunks bound each output buffer (deflate expands at most ~1032:1)
        while not decompressor.eof:
            try:
                chunk = fh.read(1 << 14)
            except OSError as exc:
                raise _open_error(path, exc) from exc
            if not chunk:
                break
            try:
                decompressor.decompress(chunk)
            except zlib.error as exc:
                raise _corrupt(path, f"{what}: {exc}") from exc
    if not decompressor.eof:
        raise _corrupt(path, f"{what}: the compressed stream ends before its end marker")


def _data_file(header_path: Path, name: str) -> Path | None:
    """The detached data file named in a header, or None for a list/pattern of files."""
    name = name.strip()
    if not name or name.upper().startswith("LIST") or "%" in name or " " in name:
        return None
    return header_path.parent / name


def _nrrd_encoding(p: Path) -> str:
    """The ``encoding`` field of an NRRD header (``"raw"`` when absent)."""
    text, _ = _header_text(p, b"\n\n")
    for line in text.splitlines()[1:]:
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() == "encoding":
            return value.lstrip("=").strip().lower()
    return "raw"


def _verify_nrrd_compression(p: Path) -> None:
    """Verify a gzip-encoded NRRD data stream (attached or one detached file) to its end.

    teem (ITK's NRRD reader) reads only the bytes it needs: a damaged stream can load with wrong
    voxels, so the stream is decompressed once here, CRC and length checked.
    """
    text, stop = _header_text(p, b"\n\n")
    fields = {}
    for line in text.splitlines()[1:]:
        if ":" in line and not line.startswith("#"):
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.lstrip("=").strip()
    encoding = fields.get("encoding", "raw").lower()
    if encoding not in ("gzip", "gz"):
        return
    detached = fields.get("data file") or fields.get("datafile")
    if detached is not None:
        target, offset = _data_file(p, detached), 0
    else:
        target, offset = p, stop
    if target is None or offset < 0 or "line skip" in fields or "lineskip" in fields:
        logger.info("%s: compressed NRRD data layout not verified before reading", p)
        return
    _verify_stream(target, offset, zlib.decompressobj(47), f"NRRD {encoding} data")


def _verify_metaimage_compression(p: Path) -> None:
    """Verify a zlib-compressed MetaImage data stream to its end (checksum included).

    ITK reads compressed MetaImage data without checking the zlib checksum (a damaged file is
    read with wrong voxels), so the stream is checked here first.
    """
    text, stop = _header_text(p, b"ElementDataFile")
    if stop < 0:
        return
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition("=")
        fields[key.strip().lower()] = value.strip()
    if fields.get("compresseddata", "false").lower() != "true":
        return
    with open(p, "rb") as fh:
        fh.seek(stop)
        rest = fh.read(4096)
    line_end = rest.find(b"\n")
    if line_end < 0:
        return
    name = rest[:line_end].decode("latin-1").partition("=")[2].strip()
    target = p if name.upper() == "LOCAL" else _data_file(p, name)
    offset = stop + line_end + 1 if name.upper() == "LOCAL" else 0
    if target is None:
        return
    _verify_stream(target, offset, zlib.decompressobj(47), "MetaImage zlib data")


def _read_itk(p: Path, fmt: str, modality: str) -> Volume:
    """NRRD/MetaImage through SimpleITK, with the grid validated before the voxels are read."""
    import SimpleITK as sitk

    encoding = _nrrd_encoding(p) if fmt == "nrrd" else "raw"
    if fmt == "metaimage":
        _verify_metaimage_compression(p)
    elif encoding in ("bzip2", "bz2"):
        raise InputError(
            f"{p}: bzip2-encoded NRRD data cannot be read (SimpleITK's NrrdIO lacks bzip2); "
            "re-save the file with gzip or raw encoding."
        )
    elif encoding != "raw":
        _verify_nrrd_compression(p)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(p))
    reader.ReadImageInformation()
    size = tuple(int(v) for v in reader.GetSize())
    check_voxel_count(size, str(p))
    if reader.GetDimension() == 3 and all(v > 0 for v in size):
        check_grid(size, [float(v) for v in reader.GetSpacing()], str(p))
        check_axes(np.asarray(reader.GetDirection(), dtype=np.float64).reshape(3, 3), str(p))
    return from_sitk(reader.Execute(), modality=modality)


def read_image_file(path: str | os.PathLike[str], *, modality: str = "OT") -> Volume:
    """Read a NIfTI, NRRD or MetaImage file into a :class:`~medseg.volume.Volume`.

    The header is validated before any voxel is allocated (:mod:`medseg.io.grid_limits`:
    voxel count, voxel size, grid extent, orthogonal axes) and a compressed file is verified
    to the end of its stream (gzip CRC and length, zlib checksum), so a damaged file is
    refused rather than read with wrong voxels.

    Raises
    ------
    InputError
        Unknown, unreadable, corrupt or truncated file, non-3D data, NaN values, an empty array
        or a grid too large to be an image.
    GeometryError
        Zero, negative, non-finite or absurd voxel size; sheared (non-orthogonal) axes.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file.")
    if p.stat().st_size == 0:
        raise InputError(f"{p}: file is empty (0 bytes).")
    fmt = detect_file_format(p)
    try:
        if fmt == "nifti":
            volume = from_nibabel(_load_nifti(p), modality=modality)
        elif fmt in ("nrrd", "metaimage"):
            volume = _read_itk(p, fmt, modality)
        else:
            raise InputError(
                f"{p}: not a recognised volume file (expected NIfTI .nii/.nii.gz, NRRD, MetaImage "
                ".mha/.mhd, or DICOM). Convert it to one of these formats."
            )
    except MedsegError as exc:
        if str(p) in str(exc):
            raise
        raise type(exc)(f"{p}: {exc}") from exc
    except PermissionError as exc:
        raise _open_error(p, exc) from exc
    except (OSError, EOFError, RuntimeError, ValueError, zlib.error) as exc:
        raise InputError(f"{p}: cannot read {fmt} file ({type(exc).__name__}: {exc}).") from exc
    arr = volume.array
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        n_bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise InputError(
            f"{p}: {n_bad} voxels are NaN or infinite. Fix the file (e.g. replace NaN with the "
            "background value) before segmenting it."
        )
    return volume


def write_image_file(
    volume: Volume, path: str | os.PathLike[str], *, overwrite: bool = False
) -> Path:
    """Write ``volume`` as NIfTI, NRRD or MetaImage (chosen by suffix), atomically.

    Existing files are kept unless ``overwrite`` is true.
    """
    p = Path(path)
    suffix = _suffix(p)
    fmt = _SUFFIXES.get(suffix)
    if fmt is None:
        raise ExportError(f"{p}: unknown output suffix {suffix!r}; use one of {sorted(_SUFFIXES)}.")
    if p.exists() and not overwrite:
        raise ExportError(f"{p} exists; pass overwrite=True (CLI: --overwrite) to replace it.")

    def writer(tmp: Path) -> None:
        if fmt == "nifti":
            import nibabel as nib

            nib.save(to_nibabel(volume), str(tmp))
        else:
            import SimpleITK as sitk

            sitk.WriteImage(to_sitk(volume), str(tmp), useCompression=True)

    write_atomic(p, writer)
    logger.debug("wrote %s", p)
    return p
