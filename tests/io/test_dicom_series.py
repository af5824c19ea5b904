"""DICOM series reader: real series (JPEG 2000, implicit VR), orientations, codecs, selection,
opt-in fixes."""

from __future__ import annotations

import io
import logging
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dicom_cases import (
    AXIAL,
    encode_jpeg_lossless,
    ipp_by_uid,
    make_volume,
    phantom,
    rotation,
    write_series,
)
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from medseg.io import DicomReadOptions, load_volume
from medseg.io.dicom_series import load_dicom_series, scan_dicom_tree
from medseg.io.dicom_write import SeriesInfo
from medseg.io.image_files import read_image_file
from medseg.preprocess import reorient
from medseg.volume import Volume, affine_from_geometry, from_sitk

TS = "totalsegmentator_example_ct"


# --- real data --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ts_ct(shared_data: Path) -> Volume:
    return load_dicom_series(shared_data / TS / "example_ct_dicom")


def test_totalsegmentator_jpeg2000_grid_matches_nifti_labels(
    ts_ct: Volume, shared_data: Path
) -> None:
    assert ts_ct.shape == (20, 512, 512)
    assert ts_ct.modality == "CT" and ts_ct.array.dtype == np.int16
    np.testing.assert_allclose(ts_ct.spacing_mm, (2.0, 0.9765625, 0.9765625), atol=1e-6)
    seg = read_image_file(shared_data / TS / "example_seg_dicom.nii.gz")
    assert seg.orientation == "SAL"  # stored with rows flipped (LAS in NIfTI terms)
    seg = reorient(seg, ts_ct.orientation)
    assert seg.shape == ts_ct.shape
    assert ts_ct.same_grid(seg, tolerance_mm=1e-3)
    np.testing.assert_allclose(seg.affine, ts_ct.affine, atol=1e-3)
    labels, hu = seg.array, ts_ct.array.astype(np.float64)
    vertebrae = (labels >= 26) & (labels <= 50)
    lungs = (labels >= 10) & (labels <= 14)
    ribs = (labels >= 92) & (labels <= 115)
    assert vertebrae.sum() > 1000 and ribs.sum() > 1000
    assert hu[vertebrae].mean() > 150
    assert hu[ribs].mean() > 150
    assert hu[labels == 0].mean() < -300  # mostly air around the body
    if lungs.any():
        assert hu[lungs].mean() < -500
    # a one-voxel shift of the labels would drop the bone HU noticeably
    shifted = np.roll(vertebrae, 3, axis=1)
    assert hu[vertebrae].mean() > hu[shifted & ~vertebrae].mean() + 100


def test_totalsegmentator_matches_simpleitk_oracle(ts_ct: Volume, shared_data: Path) -> None:
    folder = str(shared_data / TS / "example_ct_dicom")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder))
    ref = from_sitk(reader.Execute())
    assert ts_ct.same_grid(ref, tolerance_mm=1e-3)
    np.testing.assert_array_equal(ts_ct.array, ref.array)


def test_totalsegmentator_source_references(ts_ct: Volume) -> None:
    src = ts_ct.source
    assert src is not None
    assert len(src.sop_instance_uids) == 20 == len(set(src.sop_instance_uids))
    assert src.frame_of_reference_uid.startswith("1.3.12.2")
    for k, f in enumerate(src.files):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        assert ds.file_meta.MediaStorageSOPInstanceUID == src.sop_instance_uids[k]
        ipp = np.asarray(ds.ImagePositionPatient, dtype=float)
        np.testing.assert_allclose(ts_ct.world_coordinates([k, 0, 0])[0], ipp, atol=1e-4)


def test_dcmqi_ct3slice_spacing_and_label_grids(shared_data: Path) -> None:
    folder = shared_data / "dcmqi_ct3slice_seg"
    ct = load_dicom_series(folder)  # SEG objects in the folder are skipped
    assert ct.shape == (3, 512, 512)
    np.testing.assert_allclose(ct.spacing_mm, (1.0, 0.810547, 0.810547), atol=1e-5)
    liver = None
    for name in ("liver_seg", "spine_seg", "heart_seg", "liver_spine_seg"):
        lab = read_image_file(folder / f"{name}.nrrd")
        assert ct.same_grid(lab, tolerance_mm=1e-3), name
        if name == "liver_seg":
            liver = lab.array > 0
    assert liver is not None and liver.sum() > 1000
    assert 0 < ct.array[liver].mean() < 200  # soft tissue HU under the liver mask
    spine = read_image_file(folder / "spine_seg.nrrd").array > 0
    assert ct.array[spine].mean() > 150
    # load_volume classifies the folder as DICOM although NRRD label maps lie beside the series
    via_load_volume = load_volume(folder)
    assert via_load_volume.same_grid(ct)
    np.testing.assert_array_equal(via_load_volume.array, ct.array)


# --- synthetic orientations -------------------------------------------------------------------
ORIENTATIONS = {
    "axial": AXIAL,
    "negated_cosines": AXIAL * np.array([1.0, -1.0, -1.0]),  # rows → A, columns → R
    "feet_first": AXIAL * np.array([-1.0, 1.0, -1.0]),  # slices inferior, columns → R
    "sagittal": np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]]).T,  # slice L, rows I, cols P
    "coronal": np.array([[0.0, 1, 0], [1, 0, 0], [0, 0, -1]]).T,  # slice P, rows L... cols I
    "oblique": rotation("x", 17.0) @ rotation("z", -23.0) @ AXIAL,
}


@pytest.mark.parametrize("name", sorted(ORIENTATIONS))
def test_orientation_round_trip(tmp_path: Path, name: str) -> None:
    direction = ORIENTATIONS[name].copy()
    normal = np.cross(direction[:, 2], direction[:, 1])  # DICOM: row cosine × column cosine
    assert abs(abs(normal @ direction[:, 0]) - 1) < 1e-9
    direction[:, 0] = normal  # slices written along the normal come back in the same order
    vol = make_volume(direction, spacing=(3.0, 0.7, 1.1))
    write_series(tmp_path, vol, shuffle_names=True)
    got = load_dicom_series(tmp_path)
    assert got.same_grid(vol, tolerance_mm=1e-4), name
    np.testing.assert_array_equal(got.array, vol.array)
    assert got.orientation == vol.orientation
    ipps = ipp_by_uid(tmp_path)
    assert got.source is not None
    for k, uid in enumerate(got.source.sop_instance_uids):
        np.testing.assert_allclose(got.world_coordinates([k, 0, 0])[0], ipps[uid], atol=1e-4)


def test_slices_written_against_the_normal_come_back_reversed(tmp_path: Path) -> None:
    vol = make_volume(AXIAL * np.array([-1.0, 1.0, 1.0]))  # slice axis → inferior
    write_series(tmp_path, vol)
    got = load_dicom_series(tmp_path)
    assert got.orientation == "SPL" and vol.orientation == "IPL"
    np.testing.assert_array_equal(got.array, vol.array[::-1])
    np.testing.assert_allclose(got.world_coordinates([0, 0, 0]), vol.world_coordinates([5, 0, 0]))


def test_rescale_slope_gives_float_hu_and_int16_when_exact(tmp_path: Path) -> None:
    def slope(k: int, ds: Dataset) -> None:
        arr = np.frombuffer(ds.PixelData, np.int16).astype(np.float64)  # HU + 1024
        ds.PixelData = np.rint(arr * 2).astype(np.int16).tobytes()  # stored = 2 × (HU + 1024)
        ds.RescaleSlope, ds.RescaleIntercept = "0.5", "-1024"

    write_series(tmp_path / "a", modify=slope)
    got = load_dicom_series(tmp_path / "a")
    assert got.array.dtype == np.float32
    np.testing.assert_allclose(got.array, phantom(), atol=1e-4)
    write_series(tmp_path / "b")
    assert load_dicom_series(tmp_path / "b").array.dtype == np.int16


def test_single_file_of_a_series_is_a_clear_error(tmp_path: Path) -> None:
    paths = write_series(tmp_path)
    with pytest.raises(Exception, match="only 1 image slice"):
        load_volume(paths[0])


# --- compressed transfer syntaxes -------------------------------------------------------------
def _compress(uid: str):  # type: ignore[no-untyped-def]
    def modify(k: int, ds: Dataset) -> None:
        ds.compress(uid, encoding_plugin="pydicom" if uid == RLELossless else "")

    return modify


@pytest.mark.parametrize("uid", [RLELossless, JPEG2000Lossless, JPEGLSLossless])
def test_lossless_codecs_decode_exactly(tmp_path: Path, uid: str) -> None:
    vol = make_volume(shape=(4, 64, 48))  # JPEG 2000 needs tiles larger than its resolutions
    write_series(tmp_path, vol, modify=_compress(uid))
    assert pydicom.dcmread(next(tmp_path.iterdir())).file_meta.TransferSyntaxUID == uid
    got = load_dicom_series(tmp_path)
    np.testing.assert_array_equal(got.array, vol.array)
    assert got.same_grid(vol)


def _to_uint16(ds: Dataset) -> np.ndarray:
    stored = np.frombuffer(ds.PixelData, np.int16).reshape(ds.Rows, ds.Columns)
    assert stored.min() >= 0  # phantom ≥ -1024 HU is written with intercept -1024
    ds.PixelRepresentation = 0
    return stored.astype(np.uint16)


def test_jpeg_lossless_sv1_decodes_exactly(tmp_path: Path) -> None:
    def modify(k: int, ds: Dataset) -> None:
        img = _to_uint16(ds)
        ds.PixelData = encapsulate([encode_jpeg_lossless(img)])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1

    write_series(tmp_path, modify=modify)
    got = load_dicom_series(tmp_path)
    np.testing.assert_array_equal(got.array, phantom())


def test_jpeg_baseline_decodes_within_lossy_tolerance(tmp_path: Path) -> None:
    from PIL import Image

    vol = make_volume(shape=(4, 64, 48))
    expected = np.clip(np.rint((vol.array + 1024) / 16), 0, 255)  # 8-bit stored, slope 16

    def modify(k: int, ds: Dataset) -> None:
        img = expected[k].astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img, mode="L").save(buf, format="JPEG", quality=95)
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit = 7
        ds.PixelRepresentation = 0
        ds.RescaleSlope, ds.RescaleIntercept = "16", "-1024"
        ds.PixelData = encapsulate([buf.getvalue()])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit

    write_series(tmp_path, vol, modify=modify)
    got = load_dicom_series(tmp_path)
    assert got.same_grid(vol)
    err = np.abs(got.array.astype(np.float64) - (expected * 16 - 1024))
    assert err.mean() < 16 and err.max() <= 16 * 8


# --- selection --------------------------------------------------------------------------------
def _multi_series_tree(root: Path) -> dict[str, str]:
    uids = {"big": generate_uid(), "small": generate_uid(), "mr": generate_uid()}
    study = generate_uid()
    write_series(
        root / "a" / "ct_big",
        make_volume(shape=(8, 12, 10)),
        info=SeriesInfo(study_instance_uid=study, series_instance_uid=uids["big"]),
    )
    write_series(
        root / "b",
        make_volume(shape=(4, 12, 10)),
        info=SeriesInfo(study_instance_uid=study, series_instance_uid=uids["small"]),
    )
    mr = make_volume(shape=(12, 12, 10))
    mr = Volume(mr.array, mr.affine, modality="MR")
    write_series(
        root / "c", mr, info=SeriesInfo(study_instance_uid=study, series_instance_uid=uids["mr"])
    )
    shutil.copy(Path(__file__).parents[2] / "README.md", root / "notes.md")
    return uids


def test_selection_rules(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    uids = _multi_series_tree(tmp_path)
    with caplog.at_level(logging.INFO, logger="medseg"):
        got = load_dicom_series(tmp_path)
    assert got.shape[0] == 8 and got.modality == "CT"  # CT preferred over the larger MR
    assert got.source is not None and got.source.series_instance_uid == uids["big"]
    assert "chose series" in caplog.text and "modality preference" in caplog.text
    assert uids["big"] not in caplog.text  # UIDs are hashed in logs
    from medseg.io.dicom_scan import uid_hash

    small = load_dicom_series(
        tmp_path, options=DicomReadOptions(series_instance_uid=uid_hash(uids["small"])[:6])
    )
    assert small.shape[0] == 4
    mr = load_dicom_series(tmp_path, options=DicomReadOptions(modality="MR"))
    assert mr.modality == "MR" and mr.shape[0] == 12
    only_big = load_dicom_series(tmp_path, options=DicomReadOptions(min_slices=5, modality="CT"))
    assert only_big.shape[0] == 8


def test_scan_dicom_tree_lists_every_series(tmp_path: Path) -> None:
    uids = _multi_series_tree(tmp_path)
    rows = {s.series_instance_uid: s for s in scan_dicom_tree(tmp_path)}
    assert set(rows) == set(uids.values())
    big = rows[uids["big"]]
    assert big.shape == (8, 12, 10) and big.orientation == "SPL" and big.problems == ()
    np.testing.assert_allclose(big.spacing_mm, (2.5, 0.8, 0.6))
    assert rows[uids["mr"]].modality == "MR"
    assert uids["big"] not in str(big.to_json())


def test_localizer_in_series_is_dropped_by_image_type(tmp_path: Path) -> None:
    def scout(k: int, ds: Dataset) -> None:
        if k == 0:
            ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
            ds.ImageOrientationPatient = ["1", "0", "0", "0", "0", "-1"]

    write_series(tmp_path, make_volume(shape=(7, 12, 10)), modify=scout)
    got = load_dicom_series(tmp_path)
    assert got.shape[0] == 6
    with pytest.raises(Exception, match="orientations"):
        load_dicom_series(tmp_path, options=DicomReadOptions(exclude_image_types=()))
    axial = load_dicom_series(
        tmp_path, options=DicomReadOptions(exclude_image_types=(), orientation="axial")
    )
    assert axial.shape[0] == 6


# --- opt-in fixes -----------------------------------------------------------------------------
def test_correct_tilt_keeps_world_positions(tmp_path: Path) -> None:
    shape = (10, 40, 40)
    tilt = np.radians(15.0)
    affine = affine_from_geometry((2.0, 1.0, 1.0), origin_mm=(-20.0, -20.0, 0.0))
    affine[1, 0] = 2.0 * np.tan(tilt)  # each slice starts further posterior: a sheared grid
    k, r, c = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    world = np.stack([k, r, c], -1).reshape(-1, 3) @ affine[:3, :3].T + affine[:3, 3]
    block = (np.abs(world[:, 0] - 1) < 6) & (np.abs(world[:, 1] - 2) < 6)
    arr = np.where(block, 1000.0, -1000.0).reshape(shape).astype(np.float32)
    write_series(tmp_path, Volume(arr, affine, modality="CT"))
    with pytest.raises(Exception, match="gantry tilt"):
        load_dicom_series(tmp_path)
    got = load_dicom_series(tmp_path, options=DicomReadOptions(correct_tilt=True))
    assert any("correct_tilt" in p for p in got.provenance)
    np.testing.assert_allclose(got.direction, np.eye(3)[:, [2, 1, 0]], atol=1e-9)
    inside = np.argwhere(got.array > 0)
    centre = got.world_coordinates(inside).mean(axis=0)
    np.testing.assert_allclose(centre[:2], [1.0, 2.0], atol=0.6)  # block centre stays put


def test_resample_irregular_fills_a_gap(tmp_path: Path) -> None:
    vol = make_volume(shape=(8, 12, 10))
    paths = write_series(tmp_path, vol)
    paths[3].unlink()
    with pytest.raises(Exception, match=r"1 slice\(s\) missing"):
        load_dicom_series(tmp_path)
    got = load_dicom_series(tmp_path, options=DicomReadOptions(resample_irregular=True))
    assert got.same_grid(vol)
    np.testing.assert_allclose(got.array, vol.array, atol=1e-3)  # phantom is linear in k
    assert got.source is not None and got.source.sop_instance_uids == ()
    assert any("resample_irregular" in p for p in got.provenance)


def test_drop_duplicates_and_acquisition_choice(tmp_path: Path) -> None:
    paths = write_series(tmp_path / "dup")
    ds = pydicom.dcmread(paths[2])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.InstanceNumber = 99
    ds.save_as(tmp_path / "dup" / "copy.dcm")
    got = load_dicom_series(tmp_path / "dup", options=DicomReadOptions(drop_duplicates=True))
    assert got.shape[0] == 6 and any("drop_duplicates" in p for p in got.provenance)
    np.testing.assert_array_equal(got.array, phantom())

    info = SeriesInfo(series_instance_uid=generate_uid(), study_instance_uid=generate_uid())
    write_series(tmp_path / "acq" / "1", info=info)

    def second(k: int, ds: Dataset) -> None:
        ds.AcquisitionNumber = 2
        ds.PixelData = (np.frombuffer(ds.PixelData, np.int16) + 5).astype(np.int16).tobytes()

    write_series(tmp_path / "acq" / "2", info=info, modify=second)
    two = load_dicom_series(tmp_path / "acq", options=DicomReadOptions(acquisition_number=2))
    np.testing.assert_array_equal(two.array, phantom() + 5)
