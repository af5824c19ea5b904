"""Read and write single-file volumes: NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr), MHA/MHD.

NIfTI goes through nibabel (RAS ↔ LPS converted in :mod:`medseg.volume`); NRRD and MetaImage go
through SimpleITK (LPS natively). Writes are atomic: a temporary file in the target folder is
renamed over the destination only when complete.
"""

from __future__ import annotations

import gzip
import logging
import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import ExportError, InputError
from medseg.io.atomic import write_atomic
from medseg.volume import Volume, from_nibabel, from_sitk, to_nibabel, to_sitk

logger = logging.getLogger(__name__)

__all__ = ["detect_file_format", "read_image_file", "write_image_file"]

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


def detect_file_format(path: Path) -> str:
    """Return ``"nifti"``, ``"nrrd"``, ``"metaimage"``, ``"dicom"`` or ``"unknown"`` by content.

    The content decides; the suffix only breaks ties for formats without a magic number.
    """
    with open(path, "rb") as fh:
        head = fh.read(352)
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head[:4] == b"NRRD":
        return "nrrd"
    if head[:2] == b"\x1f\x8b":
        try:
            with gzip.open(path, "rb") as gz:
                head = gz.read(352)
        except (OSError, EOFError, zlib.error) as exc:
            raise InputError(f"{path}: gzip stream is corrupt ({exc}).") from exc
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


def _load_nifti(p: Path) -> Any:
    """nibabel image of a NIfTI file; misnamed files (no .nii/.nii.gz suffix) are read from bytes,
    because nibabel picks its reader by suffix while medseg detects the format by content."""
    import nibabel as nib

    if _suffix(p) in (".nii", ".nii.gz"):
        return nib.load(str(p))
    data = p.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    if int.from_bytes(data[:4], "little") == 540 or int.from_bytes(data[:4], "big") == 540:
        return nib.Nifti2Image.from_bytes(data)
    return nib.Nifti1Image.from_bytes(data)


def read_image_file(path: str | os.PathLike[str], *, modality: str = "OT") -> Volume:
    """Read a NIfTI, NRRD or MetaImage file into a :class:`~medseg.volume.Volume`.

    Raises
    ------
    InputError
        Unknown or corrupt file, non-3D data, NaN values, or an empty array.
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
            import SimpleITK as sitk

            volume = from_sitk(sitk.ReadImage(str(p)), modality=modality)
        else:
            raise InputError(
                f"{p}: not a recognised volume file (expected NIfTI .nii/.nii.gz, NRRD, MetaImage "
                ".mha/.mhd, or DICOM). Convert it to one of these formats."
            )
    except InputError as exc:
        if str(p) in str(exc):
            raise
        raise InputError(f"{p}: {exc}") from exc
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
