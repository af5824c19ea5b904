"""Test helpers for DICOM export/import: reference Volumes and synthetic series.

``reference_from_folder`` builds a reference :class:`Volume` (with its :class:`DicomSource`) from
the headers of a single-series DICOM folder, independently of medseg's series reader, so the export
tests check the writers against a geometry computed here from first principles.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom

from medseg.io.dicom_write import SeriesInfo, write_dicom_series
from medseg.volume import DicomSource, LabelMap, LabelVolume, Volume, affine_from_geometry

#: Attributes copied from the source series into every SEG/RTSTRUCT we write.
PATIENT_STUDY = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
    "StudyDate", "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName",
)  # fmt: skip
#: Type 1/2 attributes of the RT Structure Set IOD checked on every RTSTRUCT we write.
RT_REQUIRED = (
    "SeriesInstanceUID", "SeriesNumber", "OperatorsName", "Manufacturer", "StructureSetLabel",
    "StructureSetDate", "StructureSetTime", "FrameOfReferenceUID", "PositionReferenceIndicator",
)  # fmt: skip
#: The export round-trip cases (keys of the ``all_exports`` fixture).
EXPORT_CASES = ["axial", "negated", "feet_first", "sagittal", "coronal", "totalseg", "ct3slice"]


def reference_from_folder(folder: Path, *, with_pixels: bool = False) -> Volume:
    """Reference Volume of a one-series DICOM folder, slices sorted along the normal."""
    headers = []
    for p in sorted(Path(folder).iterdir()):
        ds = pydicom.dcmread(p, stop_before_pixels=not with_pixels)
        headers.append((p, ds))
    iop = np.asarray(headers[0][1].ImageOrientationPatient, dtype=float)
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    headers.sort(key=lambda h: float(np.dot(normal, np.asarray(h[1].ImagePositionPatient, float))))
    pos = np.array([np.asarray(ds.ImagePositionPatient, float) for _, ds in headers])
    ps = [float(v) for v in headers[0][1].PixelSpacing]
    if len(pos) > 1:
        step = (pos[-1] - pos[0]) / (len(pos) - 1)
    else:
        step = normal * float(headers[0][1].SliceThickness)
    affine = np.eye(4)
    affine[:3, 0] = step
    affine[:3, 1] = col_dir * ps[0]
    affine[:3, 2] = row_dir * ps[1]
    affine[:3, 3] = pos[0]
    ds0 = headers[0][1]
    shape = (len(headers), int(ds0.Rows), int(ds0.Columns))
    if with_pixels:
        array = np.stack([ds.pixel_array for _, ds in headers]).astype(np.int16)
    else:
        array = np.zeros(shape, np.int16)
    source = DicomSource(
        study_instance_uid=str(ds0.StudyInstanceUID),
        series_instance_uid=str(ds0.SeriesInstanceUID),
        frame_of_reference_uid=str(ds0.FrameOfReferenceUID),
        sop_class_uid=str(ds0.SOPClassUID),
        sop_instance_uids=tuple(str(ds.SOPInstanceUID) for _, ds in headers),
        files=tuple(str(p) for p, _ in headers),
    )
    return Volume(array, affine, modality=str(ds0.Modality), source=source)


def labels_on_grid(labels: LabelVolume, reference: Volume) -> LabelVolume:
    """Move labels onto ``reference``'s grid when the grids coincide up to axis order/flips."""
    k, r, c = np.meshgrid(*[np.arange(n) for n in reference.shape], indexing="ij")
    idx = np.stack([k.ravel(), r.ravel(), c.ravel()], axis=1)
    src = labels.volume.voxel_indices(reference.world_coordinates(idx))
    rounded = np.rint(src)
    assert np.max(np.abs(src - rounded)) < 0.02, "grids do not coincide"
    rounded = rounded.astype(int)
    arr = labels.array[rounded[:, 0], rounded[:, 1], rounded[:, 2]].reshape(reference.shape)
    vol = Volume(arr, reference.affine, modality="SEG")
    return LabelVolume(vol, labels.label_map)


#: Direction matrices (columns: LPS directions of slice, row, column axes) of the synthetic cases.
ORIENTATIONS: dict[str, np.ndarray] = {
    # standard axial, head-first: slices to S, rows to P, columns to L
    "axial": np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]], float),
    # negated in-plane cosines (rows to A, columns to R)
    "negated": np.array([[0, 0, -1], [0, -1, 0], [1, 0, 0]], float),
    # feet-first: slices run toward inferior
    "feet_first": np.array([[0, 0, 1], [0, 1, 0], [-1, 0, 0]], float),
    # sagittal: slices along L, rows to I, columns to P
    "sagittal": np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]], float),
    # coronal: slices along P, rows to I, columns to L
    "coronal": np.array([[0, 0, 1], [1, 0, 0], [0, -1, 0]], float),
}


def phantom_labels(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> np.ndarray:
    """Three structures in mm: a hollow sphere (a hole on every slice), an ellipsoid, a box."""
    k, r, c = np.meshgrid(
        *[np.arange(n) * s for n, s in zip(shape, spacing, strict=True)], indexing="ij"
    )
    ext = [n * s for n, s in zip(shape, spacing, strict=True)]
    arr = np.zeros(shape, np.uint8)
    d1 = np.sqrt((k - ext[0] * 0.5) ** 2 + (r - ext[1] * 0.35) ** 2 + (c - ext[2] * 0.3) ** 2)
    arr[(d1 < 18) & (d1 > 8)] = 1
    e = ((k - ext[0] * 0.45) / 14) ** 2 + ((r - ext[1] * 0.65) / 10) ** 2
    e = e + ((c - ext[2] * 0.7) / 16) ** 2
    arr[e < 1] = 2
    box = (abs(k - ext[0] * 0.5) < 9) & (abs(r - ext[1] * 0.3) < 5) & (abs(c - ext[2] * 0.75) < 7)
    arr[box] = 5
    return arr


def synthetic_case(
    folder: Path,
    orientation: str,
    *,
    shape: tuple[int, int, int] = (24, 40, 48),
    spacing: tuple[float, float, float] = (2.5, 1.5, 1.25),
    origin_mm: tuple[float, float, float] = (-31.7, 12.3, 105.55),
) -> tuple[Volume, LabelVolume]:
    """Write a synthetic CT series with ``orientation`` and return (reference, labels)."""
    affine = affine_from_geometry(spacing, origin_mm=origin_mm, direction=ORIENTATIONS[orientation])
    labels = phantom_labels(shape, spacing)
    ct = np.where(labels > 0, 40, -900).astype(np.int16)
    volume = Volume(ct, affine, modality="CT")
    info = SeriesInfo(patient_name="Phantom^Export", patient_id="EXP-" + orientation)
    paths = write_dicom_series(volume, folder, info=info)
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    h0 = headers[0]
    src = DicomSource(
        study_instance_uid=str(h0.StudyInstanceUID),
        series_instance_uid=str(h0.SeriesInstanceUID),
        frame_of_reference_uid=str(h0.FrameOfReferenceUID),
        sop_class_uid=str(h0.SOPClassUID),
        sop_instance_uids=tuple(str(h.SOPInstanceUID) for h in headers),
        files=tuple(str(p) for p in paths),
    )
    reference = Volume(ct, affine, modality="CT", source=src)
    label_map = LabelMap.from_dict({1: "hollow_sphere", 2: "Liver", 5: "Left Parotid"})
    return reference, LabelVolume(Volume(labels, affine, modality="SEG"), label_map)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient of two boolean arrays (1.0 when both are empty)."""
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int(np.logical_and(a, b).sum()) / s


def repaired_copy(folder: Path, out: Path) -> Path:
    """Copy a series whose datasets lost their UIDs (the TotalSegmentator example), filling them.

    SOPInstanceUID/SOPClassUID come from the file meta; Study/Series UIDs are derived
    deterministically from the frame of reference. Pixel data are copied untouched.
    """
    out.mkdir(parents=True, exist_ok=True)
    for p in sorted(Path(folder).iterdir()):
        ds = pydicom.dcmread(p)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
        for_uid = str(ds.FrameOfReferenceUID)
        ds.StudyInstanceUID = pydicom.uid.generate_uid(entropy_srcs=["study", for_uid])
        ds.SeriesInstanceUID = pydicom.uid.generate_uid(entropy_srcs=["series", for_uid])
        ds.save_as(out / p.name, enforce_file_format=True)
    return out


def dciodvfy(path: Path) -> tuple[list[str], list[str]]:
    """Run dicom3tools' validator; return (error lines, warning lines)."""
    import shutil
    import subprocess

    exe = shutil.which("dciodvfy")
    if exe is None:
        raise RuntimeError(
            "dciodvfy not found: install Debian's dicom3tools (make system-deps, as root)."
        )
    res = subprocess.run([exe, str(path)], capture_output=True, text=True, check=False)
    lines = (res.stdout + res.stderr).splitlines()
    return [x for x in lines if x.startswith("Error")], [x for x in lines if x.startswith("Warn")]


def centroid_mm(mask: np.ndarray, volume: Volume) -> np.ndarray:
    """LPS centroid of a mask in mm."""
    idx = np.argwhere(mask)
    return volume.world_coordinates(idx.mean(axis=0))[0]


@dataclass(frozen=True)
class Exported:
    """A reference series, its labels and the files written from them."""

    folder: Path
    reference: Volume
    labels: LabelVolume
    seg: Path
    seg_labelmap: Path
    rtstruct: Path
