"""Helpers shared by the DICOM writers: checks, source headers, values, atomic file writes."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import UID

from medseg.errors import ExportError, GeometryError
from medseg.io.atomic import nearest_existing
from medseg.io.dicom_values import (
    character_set_terms,
    element_problems,
    fits_character_set,
    value_problem,
)
from medseg.io.dicom_write import SeriesInfo
from medseg.volume import DicomSource, LabelMap, LabelVolume, Volume

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
    for what_uid, uid in (
        ("StudyInstanceUID", ref.study_instance_uid),
        ("SeriesInstanceUID", ref.series_instance_uid),
        ("FrameOfReferenceUID", ref.frame_of_reference_uid),
        ("SOPClassUID", ref.sop_class_uid),
        *(("SOPInstanceUID", u) for u in ref.sop_instance_uids),
    ):
        if not UID(uid).is_valid:
            why = value_problem("UI", uid) or "it is empty"
            raise ExportError(
                f"{what}: the reference series has an empty or invalid {what_uid} "
                f"({uid[:80]!r}): {why}. "
                "The output could not reference it and no system would accept it. Repair the "
                "source series' UIDs (e.g. re-export it from the PACS) before exporting."
            )
    return ref


def resolve_series_info(info: SeriesInfo | None, what: str) -> SeriesInfo:
    """``info`` or the defaults; refuse patient/study fields (a SEG/RTSTRUCT copies them)."""
    info = SeriesInfo() if info is None else info
    fields = info.patient_study_fields_set()
    if fields:
        raise ExportError(
            f"{what}: SeriesInfo sets {fields}, but a SEG or RTSTRUCT takes patient and study "
            "from its source series (they must match the images it references). Leave these "
            "fields None; they are for medseg.io.dicom_write.write_dicom_series only."
        )
    return info


def check_label_names(label_map: LabelMap, what: str) -> None:
    """Refuse label names that cannot be written as LO/SH values (backslash, control chars)."""
    for entry in label_map:
        problem = value_problem("LO", entry.name[:64], ("ISO_IR 192",))
        if problem is not None:
            raise ExportError(
                f"{what}: label {entry.id} name {entry.name[:80]!r} cannot be written as a DICOM "
                f"name: {problem}. Rename the label (LabelMap / its JSON sidecar)."
            )


def output_character_set(header: Dataset, texts: list[str]) -> tuple[str, ...]:
    """The Specific Character Set of an output: the source's when our ``texts`` fit in it.

    Our own texts (label names, SeriesInfo values) that need characters the source's set lacks
    make the output UTF-8 (``ISO_IR 192``); the copied values, held as Unicode, are re-encoded.
    """
    terms = character_set_terms(header)
    if all(fits_character_set(t, terms) for t in texts):
        return terms
    logger.info("output written in UTF-8 (ISO_IR 192): names need characters outside %s", terms)
    return ("ISO_IR 192",)


def _copied_error(what: str, attr: str, vr: str, problem: str, source_file: str) -> ExportError:
    keyword = attr.split(" ", maxsplit=1)[0].split("[", maxsplit=1)[0]
    charset = "character set" in problem or "repertoire" in problem
    hint = (
        " If the value is right but its bytes are in another character set, declare that set in "
        "the source's Specific Character Set (0008,0005), e.g. ISO_IR 100 (Latin-1) or "
        "ISO_IR 192 (UTF-8)."
        if charset
        else ""
    )
    return ExportError(
        f"{what}: {attr} (VR {vr}) in the source series ({source_file}), which the output copies, "
        f"is not valid DICOM: {problem}. Nothing was written: systems reject such objects and "
        f"medseg does not alter patient data. Correct {keyword} in the source series (e.g. "
        f'dcmodify -m "{keyword}=..." on its files, or a corrected export from the PACS), then '
        f"export again.{hint}"
    )


def check_copied_values(header: Dataset, keywords: tuple[str, ...], what: str) -> None:
    """Refuse source attributes ``keywords`` whose values are not valid for their VR."""
    terms = character_set_terms(header)
    source_file = str(header.filename) if header.filename else "first file"
    for kw in keywords:
        if kw in header:
            for attr, vr, problem in element_problems(header[kw], terms):
                raise _copied_error(what, attr, vr, problem, source_file)


def check_written_values(ds: Dataset, header: Dataset, what: str, skip: frozenset[str]) -> None:
    """Check every value of the output ``ds`` (sequences in ``skip`` excepted) against its VR.

    Values copied from the source ``header`` are checked in the source's character set (bytes
    that were not valid there are caught), the others in the output's.
    """
    source_terms, out_terms = character_set_terms(header), character_set_terms(ds)
    source_file = str(header.filename) if header.filename else "first file"
    for elem in ds:
        if elem.keyword in skip or elem.VR in ("OB", "OW", "OF", "OD", "OL", "OV", "UN"):
            continue
        origin = header.get(elem.tag)
        if origin is not None and origin.value == elem.value:
            for attr, vr, problem in element_problems(origin, source_terms):
                raise _copied_error(what, attr, vr, problem, source_file)
        else:
            for attr, vr, problem in element_problems(elem, out_terms):
                raise ExportError(
                    f"{what}: {attr} (VR {vr}) that medseg would write is not valid DICOM: "
                    f"{problem}. Check the SeriesInfo and label names given; otherwise this is "
                    "a medseg bug, please report it."
                )


def read_source_headers(
    ref: DicomSource, *, all_slices: bool = False, only: int | None = None
) -> list[Dataset]:
    """Read the headers (no pixel data) of the source files, in slice order.

    With ``all_slices=False`` only the first file is read, or file ``only`` when given.
    """
    if not ref.files:
        raise ExportError(
            "the reference Volume's DicomSource lists no files; patient and study attributes "
            "cannot be copied. Load the reference with medseg.io.load_volume(<DICOM folder>)."
        )
    if len(ref.files) != len(ref.sop_instance_uids):
        raise ExportError(
            f"the reference DicomSource lists {len(ref.files)} files for "
            f"{len(ref.sop_instance_uids)} slices; it must list one file per slice."
        )
    if only is not None:
        files: tuple[str, ...] = (ref.files[only],)
    else:
        files = ref.files if all_slices else ref.files[:1]
    out: list[Dataset] = []
    for f in files:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
        except (OSError, pydicom.errors.InvalidDicomError) as exc:
            raise ExportError(f"{f}: cannot read the source DICOM header ({exc}).") from exc
        if "SpecificCharacterSet" in ds and not ds.SpecificCharacterSet:
            del ds.SpecificCharacterSet  # empty means the default repertoire
        out.append(ds)
    return out


def check_source_geometry(source: Volume, headers: dict[int, Dataset]) -> None:
    """Check that slice ``k`` of ``source`` is where source file ``k`` says it is.

    A Volume whose grid was changed after reading (resampled for gantry tilt, reoriented,
    cropped) no longer matches its DicomSource; a SEG/RTSTRUCT referencing those images would
    put structures on the wrong images.
    """
    normal_ok = True
    for k, ds in headers.items():
        if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds:
            raise ExportError(
                f"source slice {k} ({ds.get('SOPInstanceUID', '?')}) has no Image Position/"
                "Orientation (Patient); cannot reference it from a SEG or RTSTRUCT."
            )
        ipp = np.asarray([float(v) for v in ds.ImagePositionPatient])
        iop = np.asarray([float(v) for v in ds.ImageOrientationPatient])
        expected = source.world_coordinates([k, 0, 0])[0]
        d = source.direction
        normal_ok &= bool(np.allclose(iop, [*d[:, 2], *d[:, 1]], atol=1e-3))
        if not normal_ok or np.max(np.abs(ipp - expected)) > 0.05:
            raise GeometryError(
                f"the reference Volume's slice {k} is at {expected.round(3).tolist()} mm but its "
                f"source image is at {ipp.round(3).tolist()} mm (orientation "
                f"{iop.round(4).tolist()}): the Volume was resampled, reoriented or cropped after "
                "reading. Export on the grid the series was read with (resample the labels back "
                "with medseg.preprocess.resample_to_grid, order=0)."
            )


def check_output(path: str | os.PathLike[str], *, overwrite: bool) -> Path:
    """Refuse to replace an existing output unless ``overwrite``; create the parent folder."""
    out = Path(path)
    if out.is_dir():
        raise ExportError(f"{out} is a folder; give a file name such as {out / 'seg.dcm'}.")
    if out.exists() and not overwrite:
        raise ExportError(f"{out} exists; pass overwrite=True (CLI: --overwrite) to replace it.")
    parent = nearest_existing(out.parent)
    if not parent.is_dir():
        raise ExportError(
            f"cannot write {out}: {parent} is a file, so no folder can be made under it; "
            "choose another output path."
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def match_reference_grid(labels: LabelVolume, reference: Volume) -> LabelVolume:
    """Return ``labels`` on ``reference``'s grid when that needs no interpolation.

    Labels already on the grid are returned unchanged; labels whose grid holds the same voxel
    centres in another axis order or direction (e.g. a NIfTI in RAS/LAS of a DICOM series) are
    permuted/flipped exactly. Any other grid raises :class:`GeometryError` (nearest-neighbour
    resampling changes the structures; do it explicitly with
    :func:`medseg.preprocess.resample_to_grid` if intended).
    """
    if labels.volume.same_grid(reference, tolerance_mm=1e-2):
        return labels
    m = np.linalg.inv(labels.affine) @ reference.affine
    lin = m[:3, :3]
    exact = np.allclose(lin, np.rint(lin), atol=1e-3) and np.allclose(
        m[:3, 3], np.rint(m[:3, 3]), atol=1e-2
    )
    perm = np.rint(np.abs(lin)).astype(int)
    if exact and (perm.sum(axis=0) == 1).all() and (perm.sum(axis=1) == 1).all():
        k, r, c = (np.arange(n) for n in reference.shape)
        idx = np.stack(np.meshgrid(k, r, c, indexing="ij"), axis=-1).reshape(-1, 3)
        src = np.rint(idx @ lin.T + m[:3, 3]).astype(np.int64)
        inside = ((src >= 0) & (src < np.asarray(labels.volume.shape))).all(axis=1)
        if inside.all():
            arr = labels.array[src[:, 0], src[:, 1], src[:, 2]].reshape(reference.shape)
            volume = Volume(arr, reference.affine.copy(), modality=labels.volume.modality)
            return LabelVolume(volume, labels.label_map, labels.warnings)
    raise GeometryError(
        f"labels grid {labels.volume!r} (origin {labels.volume.origin_mm}) does not hold the "
        f"voxel centres of the reference series {reference!r} (origin {reference.origin_mm}). "
        "Resample the labels onto the reference grid first (medseg.preprocess.resample_to_grid, "
        "order=0) or give the labels that were made on this series."
    )
