"""RT Structure Set (RTSTRUCT) export, written directly with pydicom.

Each label becomes one ROI (number = label id, name, display colour, interpreted type ``ORGAN``,
generation algorithm ``AUTOMATIC``). Contours are extracted slice by slice in the source series'
own image planes (:mod:`medseg.raster`: marching squares, holes as separate inner
contours read with the even-odd rule, sub-voxel fragments dropped) and mapped to patient LPS mm
through the Volume affine, so any orientation (negated cosines, feet-first, sagittal, coronal) is
placed exactly. Every contour references the image it lies on (ContourImageSequence). Coordinates
are written with 4 decimals (0.1 µm), always ≤ 16 characters per value.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian, RTStructureSetStorage, generate_uid
from scipy import ndimage

from medseg.errors import ExportError
from medseg.export._common import (
    PATIENT_STUDY_KEYWORDS,
    check_copied_values,
    check_inputs,
    check_label_names,
    check_output,
    check_source_geometry,
    check_written_values,
    output_character_set,
    read_source_headers,
    resolve_series_info,
)
from medseg.io.atomic import write_atomic
from medseg.io.dicom_values import value_problem
from medseg.io.dicom_write import SeriesInfo
from medseg.raster import mask_to_contours
from medseg.volume import DicomSource, LabelVolume, Volume

logger = logging.getLogger(__name__)

__all__ = ["contour_data_string", "write_rtstruct"]

_CONTOUR_DATA = Tag(0x3006, 0x0050)
#: Retired "Detached Study Management" SOP class, still the value every TPS expects here.
_STUDY_COMPONENT_CLASS = "1.2.840.10008.3.1.2.3.1"
#: Generated contour items (coordinates encoded by contour_data_string) are not re-checked.
_LARGE_SEQUENCES = frozenset({"ROIContourSequence"})


def contour_data_string(points_mm: npt.NDArray[np.float64]) -> bytes:
    """Encode ``(N, 3)`` LPS points as a DICOM DS multi-value (4 decimals, each ≤ 16 chars).

    Examples
    --------
    >>> contour_data_string(np.array([[19.034504652023315, -0.5, 1e-9]]))
    b'19.0345\\\\-0.5000\\\\0.0000'
    """
    flat = np.asarray(points_mm, dtype=np.float64).ravel()
    if not np.all(np.isfinite(flat)) or np.max(np.abs(flat), initial=0.0) >= 1e10:
        raise ExportError("contour coordinates must be finite and below 1e10 mm.")
    text = "\\".join(map("{:.4f}".format, flat.tolist())).encode("ascii")
    return text + b" " if len(text) % 2 else text


def _contour_item(points_mm: npt.NDArray[np.float64], image_ref: Dataset) -> Dataset:
    item = Dataset()
    item.ContourImageSequence = Sequence([image_ref])
    item.ContourGeometricType = "CLOSED_PLANAR"
    item.NumberOfContourPoints = len(points_mm)
    raw = contour_data_string(points_mm)
    item[_CONTOUR_DATA] = RawDataElement(_CONTOUR_DATA, "DS", len(raw), raw, 0, False, True)
    # Mark the item as already in the output encoding so pydicom writes the raw value as is
    # (otherwise it parses every coordinate into a DSfloat and back).
    item.set_original_encoding(False, True, item._character_set)
    return item


def _sct_item(code: tuple[str, str]) -> Dataset:
    item = Dataset()
    item.CodeValue = code[0]
    item.CodingSchemeDesignator = "SCT"
    item.CodeMeaning = code[1][:64]
    return item


def _image_refs(ref: DicomSource) -> list[Dataset]:
    refs = []
    for uid in ref.sop_instance_uids:
        d = Dataset()
        d.ReferencedSOPClassUID = ref.sop_class_uid
        d.ReferencedSOPInstanceUID = uid
        refs.append(d)
    return refs


def _label_contours(
    array: npt.NDArray[np.integer], label_id: int, box: tuple[slice, ...], volume: Volume
) -> list[tuple[int, npt.NDArray[np.float64]]]:
    """(slice index, (N, 3) LPS points) of every contour of one label."""
    out = []
    sub = array[box] == label_id
    k0, r0, c0 = box[0].start, box[1].start, box[2].start
    lin = volume.affine[:3, :3]
    for dk in range(sub.shape[0]):
        for pts in mask_to_contours(sub[dk]):
            k = k0 + dk
            idx = np.column_stack([np.full(len(pts), k, float), pts[:, 0] + r0, pts[:, 1] + c0])
            out.append((k, idx @ lin.T + volume.affine[:3, 3]))
    return out


def _copy_patient_study(ds: Dataset, header: Dataset) -> None:
    for kw in PATIENT_STUDY_KEYWORDS:
        if kw in header:
            setattr(ds, kw, header[kw].value)
    for kw in (  # type 2: present, empty when the source has no value (nothing invented)
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyDate",
        "StudyTime",
        "StudyID",
        "AccessionNumber",
        "ReferringPhysicianName",
    ):
        if kw not in ds:
            setattr(ds, kw, "")


def write_rtstruct(
    labels: LabelVolume,
    source: Volume,
    path: str | os.PathLike[str],
    *,
    info: SeriesInfo | None = None,
    structure_set_label: str = "medseg",
    overwrite: bool = False,
) -> Path:
    """Write ``labels`` as an RT Structure Set referencing the ``source`` series.

    Parameters
    ----------
    labels
        Integer labels on the source grid (axes slice, row, column; 0 = background).
    source
        The reference image Volume read from DICOM (``source.source`` filled; patient and study
        attributes are read from its first file, header only).
    path
        Output ``.dcm`` file; written atomically.
    info
        The new series: description (default ``"medseg contours"``), number (default 902),
        Series Instance UID (default new), manufacturer, and the algorithm name and version
        written as ROI Generation Description, Manufacturer's Model Name and Software Versions.
        Its patient/study fields must be ``None``.
    structure_set_label
        StructureSetLabel (≤ 16 characters).
    overwrite
        Replace an existing file.

    Returns
    -------
    Path
        The file written.

    Raises
    ------
    ExportError
        Among others: a value copied from the source (patient, study) that is not valid for its
        VR (length, character repertoire, format); nothing is written then.

    Notes
    -----
    Labels absent from the array still get an ROI (without ContourSequence) so that the
    structure list is complete; contour rules are in :mod:`medseg.raster`.
    """
    what = "RTSTRUCT export"
    info = resolve_series_info(info, what)
    problem = value_problem("SH", structure_set_label, ("ISO_IR 192",))
    if problem is not None:
        raise ExportError(f"{what}: structure_set_label {structure_set_label!r}: {problem}.")
    ref = check_inputs(labels, source, what)
    check_label_names(labels.label_map, what)
    out = check_output(path, overwrite=overwrite)
    header = read_source_headers(ref, all_slices=False)[0]
    check_copied_values(header, (*PATIENT_STUDY_KEYWORDS, "PositionReferenceIndicator"), what)
    check_source_geometry(source, {0: header})
    if source.shape[0] > 1:
        last = source.shape[0] - 1
        check_source_geometry(source, {last: read_source_headers(ref, only=last)[0]})
    now = _dt.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    name, version = info.algorithm_name, info.algorithm_version
    description = "medseg contours" if info.series_description is None else info.series_description
    texts = [e.name[:64] for e in labels.label_map]
    texts += [description, info.manufacturer, name, version, structure_set_label]

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RTStructureSetStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = RTStructureSetStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    _copy_patient_study(ds, header)
    charset = output_character_set(header, texts)
    if charset != ("",):
        ds.SpecificCharacterSet = list(charset) if len(charset) > 1 else charset[0]
    ds.FrameOfReferenceUID = ref.frame_of_reference_uid
    ds.PositionReferenceIndicator = header.get("PositionReferenceIndicator", "")
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = info.series_instance_uid or generate_uid()
    ds.SeriesNumber = 902 if info.series_number is None else info.series_number
    ds.SeriesDate, ds.SeriesTime = date, time
    ds.SeriesDescription = description
    ds.OperatorsName = ""
    ds.Manufacturer = info.manufacturer
    ds.ManufacturerModelName = name
    ds.SoftwareVersions = version
    ds.InstanceNumber = 1
    ds.StructureSetLabel = structure_set_label
    ds.StructureSetName = structure_set_label
    ds.StructureSetDate, ds.StructureSetTime = date, time

    image_refs = _image_refs(ref)
    series_item = Dataset()
    series_item.SeriesInstanceUID = ref.series_instance_uid
    series_item.ContourImageSequence = Sequence(image_refs)
    study_item = Dataset()
    study_item.ReferencedSOPClassUID = _STUDY_COMPONENT_CLASS
    study_item.ReferencedSOPInstanceUID = ref.study_instance_uid
    study_item.RTReferencedSeriesSequence = Sequence([series_item])
    for_item = Dataset()
    for_item.FrameOfReferenceUID = ref.frame_of_reference_uid
    for_item.RTReferencedStudySequence = Sequence([study_item])
    ds.ReferencedFrameOfReferenceSequence = Sequence([for_item])

    arr = np.asarray(labels.array)
    if arr.dtype.kind not in "iu":
        arr = arr.astype(np.uint8)  # boolean masks
    boxes = ndimage.find_objects(arr) if arr.max() > 0 else []
    roi_items, contour_items, obs_items = [], [], []
    n_contours = 0
    for n, entry in enumerate(labels.label_map, start=1):
        roi = Dataset()
        roi.ROINumber = entry.id
        roi.ReferencedFrameOfReferenceUID = ref.frame_of_reference_uid
        roi.ROIName = entry.name[:64]
        roi.ROIGenerationAlgorithm = "AUTOMATIC"
        roi.ROIGenerationDescription = f"{name} {version}"[:64]
        roi_items.append(roi)

        box = boxes[entry.id - 1] if entry.id <= len(boxes) else None
        contours = _label_contours(arr, entry.id, box, source) if box is not None else []
        rc = Dataset()
        rc.ROIDisplayColor = [int(v) for v in entry.color]
        if contours:  # Type 3, but must not be empty when present
            rc.ContourSequence = Sequence([_contour_item(p, image_refs[k]) for k, p in contours])
        rc.ReferencedROINumber = entry.id
        contour_items.append(rc)
        n_contours += len(contours)
        if not contours:
            logger.info("RTSTRUCT: label %r has no contour (empty or only fragments)", entry.name)

        obs = Dataset()
        obs.ObservationNumber = n
        obs.ReferencedROINumber = entry.id
        obs.ROIObservationLabel = entry.name[:16]  # SH
        obs.RTROIInterpretedType = "ORGAN"
        obs.ROIInterpreter = ""
        if entry.snomed_type is not None:  # what the structure is, for TPS structure mapping
            obs.RTROIIdentificationCodeSequence = Sequence([_sct_item(entry.snomed_type)])
        obs_items.append(obs)
    ds.StructureSetROISequence = Sequence(roi_items)
    ds.ROIContourSequence = Sequence(contour_items)
    ds.RTROIObservationsSequence = Sequence(obs_items)
    ds.ApprovalStatus = "UNAPPROVED"
    check_written_values(ds, header, what, skip=_LARGE_SEQUENCES)
    ds.set_original_encoding(False, True, ds._character_set)

    write_atomic(out, lambda tmp: pydicom.dcmwrite(tmp, ds, enforce_file_format=True))
    logger.info("wrote RTSTRUCT with %d ROIs and %d contours", len(roi_items), n_contours)
    return out
