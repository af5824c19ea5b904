"""Bad-input corpus: each case must end in the specific MedsegError subclass with a message that
names the problem (and, for DICOM, the series by hash and how to proceed)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from dicom_cases import make_volume, write_series
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from medseg.errors import GeometryError, InputError, MedsegError
from medseg.io import DicomReadOptions, load_volume
from medseg.io.dicom_series import load_dicom_series
from medseg.io.dicom_write import SeriesInfo
from medseg.volume import Volume, affine_from_geometry

Builder = Callable[[Path, Path], Path]  # (tmp_path, shared_data) -> input path


def _series(modify: Callable[[int, Dataset], None] | None = None, **kw: object) -> Builder:
    def build(tmp: Path, shared: Path) -> Path:
        write_series(tmp / "s", modify=modify, **kw)  # type: ignore[arg-type]
        return tmp / "s"

    return build


def _tilt(k: int, ds: Dataset) -> None:
    x, y, z = (float(v) for v in ds.ImagePositionPatient)
    ds.ImagePositionPatient = [x, y + 0.5 * k, z]


def _gap(k: int, ds: Dataset) -> None:
    x, y, z = (float(v) for v in ds.ImagePositionPatient)
    ds.ImagePositionPatient = [x, y, z + (2.5 if k >= 3 else 0.0)]


def _irregular(k: int, ds: Dataset) -> None:
    x, y, z = (float(v) for v in ds.ImagePositionPatient)
    ds.ImagePositionPatient = [x, y, z + 0.7 * (k % 2)]


def _duplicate(k: int, ds: Dataset) -> None:
    if k == 4:
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, z - 2.5]


def _two_acquisitions(k: int, ds: Dataset) -> None:
    ds.AcquisitionNumber = 1 + k % 2
    x, y, z = (float(v) for v in ds.ImagePositionPatient)
    ds.ImagePositionPatient = [x, y, z - 2.5 * (k % 2)]


def _mixed_size(k: int, ds: Dataset) -> None:
    if k == 2:
        arr = np.frombuffer(ds.PixelData, np.int16).reshape(ds.Rows, ds.Columns)[:, :8]
        ds.Columns = 8
        ds.PixelData = np.ascontiguousarray(arr).tobytes()


def _mixed_orientation(k: int, ds: Dataset) -> None:
    if k == 1:
        ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]


def _mixed_spacing(k: int, ds: Dataset) -> None:
    if k == 5:
        ds.PixelSpacing = [0.9, 0.6]


def _no_pixels(k: int, ds: Dataset) -> None:
    if k == 2:
        del ds.PixelData


def _no_ipp(k: int, ds: Dataset) -> None:
    if k == 3:
        del ds.ImagePositionPatient


def _skewed(k: int, ds: Dataset) -> None:
    ds.ImageOrientationPatient = [1, 0, 0, 0.3, 0.95393920141, 0]


def _multiframe(k: int, ds: Dataset) -> None:
    ds.NumberOfFrames = 2


def _colour(k: int, ds: Dataset) -> None:
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"


def _truncated_pixels(tmp: Path, shared: Path) -> Path:
    paths = write_series(tmp / "s")
    data = paths[2].read_bytes()
    paths[2].write_bytes(data[:-100])
    return tmp / "s"


def _truncated_header(tmp: Path, shared: Path) -> Path:
    paths = write_series(tmp / "s")
    data = paths[0].read_bytes()
    (tmp / "t").mkdir()
    (tmp / "t" / "cut.dcm").write_bytes(data[:300])
    return tmp / "t"


def _rtstruct_only(tmp: Path, shared: Path) -> Path:
    (tmp / "rt").mkdir()
    shutil.copy(shared / "dicompyler_breast_rtstruct" / "rtss.dcm", tmp / "rt")
    shutil.copy(shared / "dicompyler_breast_rtstruct" / "rtplan.dcm", tmp / "rt")
    return tmp / "rt"


def _seg_only(tmp: Path, shared: Path) -> Path:
    (tmp / "seg").mkdir()
    shutil.copy(shared / "dcmqi_ct3slice_seg" / "liver.dcm", tmp / "seg")
    return tmp / "seg"


def _single_ct(tmp: Path, shared: Path) -> Path:
    return shared / "dicompyler_breast_rtstruct" / "ct.0.dcm"


def _single_slice_folder(tmp: Path, shared: Path) -> Path:
    paths = write_series(tmp / "s")
    for p in paths[1:]:
        p.unlink()
    return tmp / "s"


def _empty_folder(tmp: Path, shared: Path) -> Path:
    (tmp / "empty").mkdir()
    return tmp / "empty"


def _text_folder(tmp: Path, shared: Path) -> Path:
    (tmp / "docs").mkdir()
    (tmp / "docs" / "notes.txt").write_text("not an image\n")
    return tmp / "docs"


def _nifti(array: np.ndarray) -> Builder:
    def build(tmp: Path, shared: Path) -> Path:
        nib.save(nib.Nifti1Image(array, np.eye(4)), str(tmp / "x.nii.gz"))
        return tmp / "x.nii.gz"

    return build


def _nan_array() -> np.ndarray:
    a = np.zeros((4, 5, 6), np.float32)
    a[1, 2, 3] = np.nan
    return a


def _unknown_file(tmp: Path, shared: Path) -> Path:
    (tmp / "scan.dat").write_bytes(b"\x01\x02 something else entirely" * 20)
    return tmp / "scan.dat"


def _empty_file(tmp: Path, shared: Path) -> Path:
    (tmp / "empty.nii.gz").write_bytes(b"")
    return tmp / "empty.nii.gz"


def _corrupt_gzip(tmp: Path, shared: Path) -> Path:
    (tmp / "bad.nii.gz").write_bytes(b"\x1f\x8b\x08\x00garbage-not-deflate" * 3)
    return tmp / "bad.nii.gz"


def _missing(tmp: Path, shared: Path) -> Path:
    return tmp / "does_not_exist"


# (id, builder, options, error class, message patterns that must all appear)
CASES: list[tuple[str, Builder, DicomReadOptions | None, type[MedsegError], tuple[str, ...]]] = [
    ("gantry_tilt", _series(_tilt), None, GeometryError, ("gantry tilt", "correct_tilt=True")),
    ("gap", _series(_gap), None, GeometryError, ("1 slice(s) missing", "resample_irregular")),
    ("irregular", _series(_irregular), None, GeometryError, ("irregular slice spacing",)),
    ("duplicate", _series(_duplicate), None, GeometryError, ("occur twice", "drop_duplicates")),
    ("acquisitions", _series(_two_acquisitions), None, GeometryError,
     ("several acquisitions", "acquisition_number")),
    ("mixed_size", _series(_mixed_size), None, GeometryError, ("different matrix sizes",)),
    ("mixed_orientation", _series(_mixed_orientation), None, GeometryError,
     ("different orientations", "orientation=")),
    ("mixed_spacing", _series(_mixed_spacing), None, GeometryError, ("different PixelSpacing",)),
    ("skewed_iop", _series(_skewed), None, GeometryError, ("non-orthogonal",)),
    ("missing_pixel_data", _series(_no_pixels), None, InputError, ("no PixelData",)),
    ("missing_ipp", _series(_no_ipp), None, InputError, ("ImagePositionPatient",)),
    ("multiframe", _series(_multiframe), None, InputError, ("multi-frame",)),
    ("colour", _series(_colour), None, InputError, ("samples per pixel",)),
    ("truncated_pixels", _truncated_pixels, None, InputError, ("truncated",)),
    ("truncated_header", _truncated_header, None, InputError, ("no PixelData", "truncated")),
    ("rtstruct_only", _rtstruct_only, None, InputError, ("no image series", "RTSTRUCT")),
    ("seg_only", _seg_only, None, InputError, ("no image series", "SEG")),
    ("single_ct_file", _single_ct, None, InputError, ("only 1 image slice",)),
    ("single_slice_folder", _single_slice_folder, None, InputError, ("only 1 image slice",)),
    ("empty_folder", _empty_folder, None, InputError, ("empty",)),
    ("no_dicom_files", _text_folder, None, InputError, ("no DICOM files",)),
    ("series_not_found", _series(), DicomReadOptions(series_instance_uid="ffffffff"),
     InputError, ("no image series matches", "medseg info")),
    ("modality_not_found", _series(), DicomReadOptions(modality="MR"), InputError,
     ("no series matches", "modality CT")),
    ("nan_nifti", _nifti(_nan_array()), None, InputError, ("NaN",)),
    ("2d_nifti", _nifti(np.zeros((8, 9), np.float32)), None, InputError, ("3D",)),
    ("4d_nifti", _nifti(np.zeros((4, 5, 6, 2), np.float32)), None, InputError, ("3D",)),
    ("zero_size_nifti", _nifti(np.zeros((0, 5, 6), np.float32)), None, InputError, ("empty",)),
    ("unknown_file", _unknown_file, None, InputError, ("unknown file type",)),
    ("empty_file", _empty_file, None, InputError, ("0 bytes",)),
    ("corrupt_gzip", _corrupt_gzip, None, InputError, ("corrupt",)),
    ("missing_path", _missing, None, InputError, ("no such file",)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("builder", "options", "error", "patterns"),
    [pytest.param(*c[1:], id=c[0]) for c in CASES],
)
def test_bad_input(
    tmp_path: Path,
    shared_data: Path,
    builder: Builder,
    options: DicomReadOptions | None,
    error: type[MedsegError],
    patterns: tuple[str, ...],
) -> None:
    path = builder(tmp_path, shared_data)
    with pytest.raises(error) as info:
        load_volume(path, dicom=options)
    message = str(info.value)
    for pattern in patterns:
        assert pattern in message, f"{pattern!r} not in {message!r}"


def test_corpus_is_big_enough() -> None:
    assert len(CASES) >= 20


def test_dicom_errors_name_the_series_by_hash_not_uid(tmp_path: Path) -> None:
    uid = generate_uid()
    write_series(tmp_path / "s", modify=_tilt, info=SeriesInfo(series_instance_uid=uid))
    with pytest.raises(GeometryError) as info:
        load_dicom_series(tmp_path / "s")
    from medseg.io.dicom_scan import uid_hash

    assert f"series {uid_hash(uid)}" in str(info.value)
    assert uid not in str(info.value)
    assert "Anonymous" not in str(info.value)


def test_tolerated_header_problems_warn_and_load(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def sloppy(k: int, ds: Dataset) -> None:
        # unparsable slope (written with a text VR): slope 1 assumed, with a warning
        ds[0x00281053] = DataElement(0x00281053, "LO", "abc")
        ds.RescaleIntercept = "-1024"
        del ds.SOPInstanceUID  # taken from the file meta information

    write_series(tmp_path / "s", modify=sloppy)
    vol = load_dicom_series(tmp_path / "s")
    assert vol.source is not None and all(vol.source.sop_instance_uids)
    assert "RescaleSlope" in caplog.text and "SOPInstanceUID" in caplog.text
    np.testing.assert_array_equal(vol.array, make_volume().array)


def test_invalid_options_are_config_errors() -> None:
    with pytest.raises(InputError, match="orientation must be one of"):
        DicomReadOptions(orientation="oblique")
    with pytest.raises(InputError, match="DICOM read options: unknown keys"):
        DicomReadOptions.from_dict({"modality": "CT", "resample": True})
    assert DicomReadOptions.from_dict({"image_type": ["ORIGINAL"]}).image_type == ("ORIGINAL",)


def test_zero_size_and_2d_arrays_are_rejected_by_volume() -> None:
    with pytest.raises(InputError, match="empty"):
        Volume(np.zeros((0, 3, 3)), affine_from_geometry((1, 1, 1)))
    with pytest.raises(InputError, match="3D array"):
        Volume(np.zeros((3, 3)), affine_from_geometry((1, 1, 1)))
