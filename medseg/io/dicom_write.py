"""Write a :class:`~medseg.volume.Volume` as a DICOM image series (one file per slice).

Uses: turning a NIfTI/OpenKBP CT into a DICOM series that a planning system can import (so that
RTSTRUCT/SEG outputs have something to reference), building synthetic series with any
orientation for geometry tests, and benchmark data. The slice geometry comes only from the
Volume affine: ``ImagePositionPatient`` of slice ``k`` is ``affine @ (k, 0, 0, 1)``,
``ImageOrientationPatient`` is (column-axis direction, row-axis direction) and ``PixelSpacing``
is (row spacing, column spacing).
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from medseg.errors import ExportError
from medseg.volume import Volume

logger = logging.getLogger(__name__)

__all__ = ["SeriesInfo", "format_ds", "write_dicom_series"]

_SOP_CLASS = {"CT": CTImageStorage, "MR": MRImageStorage}


def format_ds(value: float, max_len: int = 16) -> str:
    """Format a float as a DICOM Decimal String of at most ``max_len`` characters.

    Examples
    --------
    >>> format_ds(19.034504652023315)
    '19.0345046520233'
    >>> format_ds(-0.000001234)
    '-1.234e-06'
    >>> format_ds(3.0)
    '3'
    """
    v = float(value)
    if not np.isfinite(v):
        raise ExportError(f"cannot write non-finite value {value!r} as a DICOM decimal string.")
    if v == 0:
        return "0"
    for precision in range(max_len, 0, -1):
        s = f"{v:.{precision}g}"
        if len(s) <= max_len:
            return s
    raise ExportError(f"cannot fit {value!r} into a {max_len}-character decimal string.")


@dataclass(frozen=True)
class SeriesInfo:
    """Identifying attributes for a written series. Defaults are anonymous test values."""

    patient_name: str = "Anonymous^Test"
    patient_id: str = "MEDSEG0001"
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    frame_of_reference_uid: str | None = None
    series_description: str = "medseg volume"
    series_number: int = 1
    study_id: str = "1"


def write_dicom_series(
    volume: Volume,
    folder: str | os.PathLike[str],
    *,
    info: SeriesInfo | None = None,
    modify: Callable[[int, Dataset], None] | None = None,
    file_pattern: str = "slice_{:04d}.dcm",
) -> list[Path]:
    """Write ``volume`` as a single-frame DICOM series, one file per slice, into ``folder``.

    Parameters
    ----------
    volume
        CT (HU) or MR volume; written as int16 with RescaleSlope 1 and the intercept chosen so
        that values fit (CT: intercept -1024 when the minimum is ≥ -1024).
    folder
        Output folder (created).
    info
        Patient/study/series attributes; new UIDs are generated when not given.
    modify
        Optional callback ``modify(k, dataset)`` called before each slice is saved (tests use
        it to build broken series: tilt, gaps, missing tags).
    file_pattern
        File name pattern formatted with the slice index.

    Returns
    -------
    list of Path
        Files written, in slice order.
    """
    info = info or SeriesInfo()
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    study_uid = info.study_instance_uid or generate_uid()
    series_uid = info.series_instance_uid or generate_uid()
    for_uid = info.frame_of_reference_uid or generate_uid()
    modality = volume.modality if volume.modality in _SOP_CLASS else "CT"
    sop_class = _SOP_CLASS.get(volume.modality, SecondaryCaptureImageStorage)
    if volume.modality not in _SOP_CLASS:
        sop_class = CTImageStorage

    arr = np.asarray(volume.array)
    lo = float(np.min(arr))
    intercept = 0.0
    if np.issubdtype(arr.dtype, np.floating) or lo < -32768 or float(np.max(arr)) > 32767:
        intercept = -1024.0 if lo >= -1024 else float(np.floor(lo))
    stored = np.rint(arr - intercept)
    if stored.min() < -32768 or stored.max() > 32767:
        raise ExportError(
            f"volume values {lo}..{float(np.max(arr))} do not fit 16-bit DICOM pixels."
        )
    stored = stored.astype(np.int16)

    d = volume.direction
    sp = volume.spacing_mm
    iop = [*d[:, 2].tolist(), *d[:, 1].tolist()]
    now = _dt.datetime.now()
    paths = []
    for k in range(volume.shape[0]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.PatientName = info.patient_name
        ds.PatientID = info.patient_id
        ds.PatientBirthDate = ""
        ds.PatientSex = ""
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = for_uid
        ds.PositionReferenceIndicator = ""
        ds.StudyDate = now.strftime("%Y%m%d")
        ds.StudyTime = now.strftime("%H%M%S")
        ds.ContentDate = ds.StudyDate
        ds.ContentTime = ds.StudyTime
        ds.AccessionNumber = ""
        ds.ReferringPhysicianName = ""
        ds.StudyID = info.study_id
        ds.SeriesNumber = info.series_number
        ds.InstanceNumber = k + 1
        ds.AcquisitionNumber = 1
        ds.Modality = modality
        ds.Manufacturer = "medseg"
        ds.SeriesDescription = info.series_description
        ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
        ds.PatientPosition = "HFS"
        ds.ImagePositionPatient = [format_ds(v) for v in volume.world_coordinates([k, 0, 0])[0]]
        ds.ImageOrientationPatient = [format_ds(v) for v in iop]
        ds.PixelSpacing = [format_ds(sp[1]), format_ds(sp[2])]
        ds.SliceThickness = format_ds(sp[0])
        ds.SpacingBetweenSlices = format_ds(sp[0])
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = volume.shape[1], volume.shape[2]
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = format_ds(intercept)
        ds.RescaleSlope = "1"
        if modality == "CT":
            ds.RescaleType = "HU"
            ds.KVP = ""
        ds.PixelData = np.ascontiguousarray(stored[k]).tobytes()
        if modify is not None:
            modify(k, ds)
        path = out / file_pattern.format(k)
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        paths.append(path)
    logger.debug("wrote %d slices to %s", len(paths), out)
    return paths
