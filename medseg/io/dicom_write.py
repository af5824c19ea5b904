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

from medseg import __version__
from medseg.errors import ExportError
from medseg.io.dicom_values import value_problem
from medseg.volume import Volume

logger = logging.getLogger(__name__)

__all__ = [
    "PATIENT_STUDY_FIELDS",
    "SeriesInfo",
    "character_set_for",
    "format_ds",
    "write_dicom_series",
]

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


#: SeriesInfo fields that name the patient and study: only for a new image series.
PATIENT_STUDY_FIELDS = (
    "patient_name",
    "patient_id",
    "study_instance_uid",
    "frame_of_reference_uid",
    "study_id",
)
_FIELD_VR = {
    "series_description": ("SeriesDescription", "LO"),
    "series_number": ("SeriesNumber", "IS"),
    "series_instance_uid": ("SeriesInstanceUID", "UI"),
    "manufacturer": ("Manufacturer", "LO"),
    "algorithm_name": ("ManufacturerModelName", "LO"),
    "algorithm_version": ("SoftwareVersions", "LO"),
    "patient_name": ("PatientName", "PN"),
    "patient_id": ("PatientID", "LO"),
    "study_instance_uid": ("StudyInstanceUID", "UI"),
    "frame_of_reference_uid": ("FrameOfReferenceUID", "UI"),
    "study_id": ("StudyID", "SH"),
}


@dataclass(frozen=True)
class SeriesInfo:
    """Attributes of a new series medseg writes: an image series, a DICOM-SEG or an RTSTRUCT.

    ``None`` means the writer's default (a new UID; the description and number each writer
    documents). Every value is checked against its DICOM VR when the object is made.

    Parameters
    ----------
    series_description, series_number
        Series Description (LO, ≤ 64 characters) and Series Number (IS).
    series_instance_uid
        Series Instance UID; new when ``None``.
    manufacturer
        Manufacturer (LO).
    algorithm_name, algorithm_version
        The software that made the content: Manufacturer's Model Name and Software Versions; in a
        SEG also each segment's algorithm identification, in an RTSTRUCT each ROI's generation
        description. ``algorithm_version`` defaults to medseg's version.
    patient_name, patient_id, study_instance_uid, frame_of_reference_uid, study_id
        Patient and study of a new image series (:func:`write_dicom_series`; anonymous test values
        and new UIDs when ``None``). A SEG or RTSTRUCT copies them from its source series and
        refuses a SeriesInfo that sets them.

    Raises
    ------
    ExportError
        A value that is not valid for its VR (too long, wrong characters, not a UID).

    Examples
    --------
    >>> SeriesInfo(series_description="CT contours", algorithm_version="1.2").series_number is None
    True
    >>> SeriesInfo(series_description="x" * 65)
    Traceback (most recent call last):
    ...
    medseg.errors.ExportError: SeriesInfo.series_description (SeriesDescription, VR LO): it is 65 \
characters long (at most 64 for LO). Give a valid value.
    """

    series_description: str | None = None
    series_number: int | None = None
    series_instance_uid: str | None = None
    manufacturer: str = "medseg"
    algorithm_name: str = "medseg"
    algorithm_version: str = __version__
    patient_name: str | None = None
    patient_id: str | None = None
    study_instance_uid: str | None = None
    frame_of_reference_uid: str | None = None
    study_id: str | None = None

    def __post_init__(self) -> None:
        for name, (keyword, vr) in _FIELD_VR.items():
            value = getattr(self, name)
            if value is None:
                continue
            problem = value_problem(vr, value, ("ISO_IR 192",))  # any Unicode text
            if problem is None and vr == "UI" and not value:
                problem = "it is empty"
            if problem is not None:
                raise ExportError(
                    f"SeriesInfo.{name} ({keyword}, VR {vr}): {problem}. Give a valid value."
                )

    def patient_study_fields_set(self) -> list[str]:
        """Names of the patient/study fields that are not ``None``."""
        return [f for f in PATIENT_STUDY_FIELDS if getattr(self, f) is not None]


def character_set_for(texts: list[str]) -> str | None:
    """Specific Character Set for our own ``texts``: ``None`` (ASCII) or ``"ISO_IR 192"``.

    >>> character_set_for(["Doe^John"]), character_set_for(["Müller^Hans"])
    (None, 'ISO_IR 192')
    """
    return None if all(t.isascii() for t in texts) else "ISO_IR 192"


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
    texts = [v for v in (info.patient_name, info.series_description, info.manufacturer) if v]
    charset = character_set_for(texts)
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
        if charset is not None:
            ds.SpecificCharacterSet = charset
        ds.PatientName = "Anonymous^Test" if info.patient_name is None else info.patient_name
        ds.PatientID = "MEDSEG0001" if info.patient_id is None else info.patient_id
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
        ds.StudyID = "1" if info.study_id is None else info.study_id
        ds.SeriesNumber = 1 if info.series_number is None else info.series_number
        ds.InstanceNumber = k + 1
        ds.AcquisitionNumber = 1
        ds.Modality = modality
        ds.Manufacturer = info.manufacturer
        ds.SeriesDescription = (
            "medseg volume" if info.series_description is None else info.series_description
        )
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
