"""Helpers shared by the DICOM writers: checks, source headers, atomic file writes."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from medseg.errors import ExportError, GeometryError
from medseg.volume import DicomSource, LabelVolume, Volume

logger = logging.getLogger(__name__)

#: Patient and study attributes copied verbatim from the source series (never invented).
PATIENT_STUDY_KEYWORDS = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "PatientWeight",
    "PatientSize",
    "PatientIdentityRemoved",
    "DeidentificationMethod",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "StudyDescription",
    "AccessionNumber",
    "ReferringPhysicianName",
)


def check_inputs(labels: LabelVolume, source: Volume, what: str) -> DicomSource:
    """Check that ``labels`` lie on ``source``'s grid and that ``source`` came from DICOM.

    Returns the :class:`DicomSource` of ``source``.
    """
    ref = source.source
    if ref is None:
        raise ExportError(
            f"{what} needs the DICOM series the labels were made on, but the reference Volume has "
            "no DICOM source (it was read from NIfTI/NRRD?). Load the reference with "
            "medseg.io.load_volume(<DICOM folder>)."
        )
    if len(ref.sop_instance_uids) != source.shape[0]:
        raise ExportError(
            f"{what}: the reference Volume has {source.shape[0]} slices but its DicomSource lists "
            f"{len(ref.sop_instance_uids)} SOPInstanceUIDs; it must list one per slice."
        )
    if not labels.volume.same_grid(source, tolerance_mm=1e-2):
        raise GeometryError(
            f"{what}: labels grid {labels.volume!r} (origin {labels.volume.origin_mm}) is not the "
            f"reference series grid {source!r} (origin {source.origin_mm}). Resample the labels "
            "onto the reference grid first (medseg.preprocess.resample_to_grid, order=0)."
        )
    return ref


def read_source_headers(ref: DicomSource, *, all_slices: bool) -> list[Dataset]:
    """Read the headers (no pixel data) of the source files, in slice order.

    With ``all_slices=False`` only the first file is read.
    """
    if not ref.files:
        raise ExportError(
            "the reference Volume's DicomSource lists no files; patient and study attributes "
            "cannot be copied. Load the reference with medseg.io.load_volume(<DICOM folder>)."
        )
    files = ref.files if all_slices else ref.files[:1]
    out: list[Dataset] = []
    for f in files:
        try:
            out.append(pydicom.dcmread(f, stop_before_pixels=True))
        except (OSError, pydicom.errors.InvalidDicomError) as exc:
            raise ExportError(f"{f}: cannot read the source DICOM header ({exc}).") from exc
    return out


def check_output(path: str | os.PathLike[str], *, overwrite: bool) -> Path:
    """Refuse to replace an existing output unless ``overwrite``; create the parent folder."""
    out = Path(path)
    if out.is_dir():
        raise ExportError(f"{out} is a folder; give a file name such as {out / 'seg.dcm'}.")
    if out.exists() and not overwrite:
        raise ExportError(f"{out} exists; pass overwrite=True (CLI: --overwrite) to replace it.")
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def write_atomic(path: Path, writer: Callable[[Path], None]) -> Path:
    """Call ``writer(tmp)`` on a temporary file beside ``path``, then rename it into place."""
    fd, tmp_name = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        writer(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
