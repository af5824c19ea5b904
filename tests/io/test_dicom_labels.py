"""Reading DICOM-SEG and RTSTRUCT into label maps: real files from dcmqi and dicompyler."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from matplotlib.path import Path as MplPath

from medseg.errors import InputError
from medseg.io import load_labels, load_volume
from medseg.io.dicom_labels import load_dicom_labels, load_dicom_masks
from medseg.volume import Volume, affine_from_geometry

BREAST_ROIS = ("BODY", "Areola", "Borders", "Breast", "Heart", "Lt Lung", "Nodes", "Scar",
               "Tumor Bed", "Tumor Bed Block")  # fmt: skip


@pytest.fixture(scope="module")
def ct3slice(shared_data: Path) -> Volume:
    return load_volume(shared_data / "dcmqi_ct3slice_seg" / "ct-3slice")


@pytest.fixture(scope="module")
def breast_grid(shared_data: Path) -> Volume:
    """98-slice grid of the breast CT: ct.0.dcm's geometry, slices at the contour planes."""
    ct = pydicom.dcmread(
        shared_data / "dicompyler_breast_rtstruct" / "ct.0.dcm", stop_before_pixels=True
    )
    top = np.asarray(ct.ImagePositionPatient, float)  # the top slice (z 168.56)
    ps = [float(v) for v in ct.PixelSpacing]
    origin = top - np.array([0.0, 0.0, 97 * 3.0])
    affine = affine_from_geometry((3.0, ps[0], ps[1]), origin_mm=origin)
    return Volume(np.zeros((98, int(ct.Rows), int(ct.Columns)), np.int16), affine, modality="CT")


def test_dcmqi_liver_seg_matches_its_nrrd(shared_data: Path, ct3slice: Volume) -> None:
    d = shared_data / "dcmqi_ct3slice_seg"
    grid, structures, warnings = load_dicom_masks(d / "liver.dcm", ct3slice)
    assert [s.entry.name for s in structures] == ["Liver"]
    assert structures[0].n_items == 3  # frames
    nrrd = load_labels(d / "liver_seg.nrrd")
    assert nrrd.volume.same_grid(grid)
    np.testing.assert_array_equal(structures[0].mask, nrrd.array == 1)
    assert warnings == []
    # old "SRT" coding scheme is read as SNOMED: liver's type code is kept
    labels = load_labels(d / "liver.dcm", reference=ct3slice)
    assert labels.label_map[1].snomed_type == ("T-62000", "Liver")


def test_dcmqi_partial_overlaps(shared_data: Path, ct3slice: Volume) -> None:
    d = shared_data / "dcmqi_ct3slice_seg"
    _grid, structures, _w = load_dicom_masks(d / "partial_overlaps.dcm", ct3slice)
    names = [s.entry.name for s in structures]
    assert names == ["GREEN", "ORANGE", "PURPLE", "LIGHT_BLUE", "DARK_BLUE"]
    assert sum(s.n_items for s in structures) == 7
    # dcmqi's source maps: segments 1, 4, 5 in map 1, 2 in map 2, 3 in map 3
    sources = {1: (1, 1), 2: (2, 2), 3: (3, 3), 4: (1, 4), 5: (1, 5)}
    for s in structures:
        nrrd_index, value = sources[s.entry.id]
        nrrd = load_labels(d / f"partial_overlaps-{nrrd_index}.nrrd")
        np.testing.assert_array_equal(s.mask, nrrd.array == value, err_msg=s.entry.name)
    # single label map: the smaller structure wins, every overlap is reported
    labels = load_dicom_labels(d / "partial_overlaps.dcm", ct3slice)
    green = next(s for s in structures if s.entry.name == "GREEN").mask
    orange = next(s for s in structures if s.entry.name == "ORANGE").mask
    assert np.all(labels.mask("GREEN") == green)  # GREEN is smaller than ORANGE and PURPLE
    assert np.array_equal(
        labels.mask("ORANGE"), orange & ~labels.mask("GREEN") & ~labels.mask("PURPLE")
    )
    assert any("voxels are in both 'GREEN' and the larger 'ORANGE'" in w for w in labels.warnings)


def test_dcmqi_seg_without_reference_uses_frame_geometry(
    shared_data: Path, ct3slice: Volume
) -> None:
    labels = load_labels(shared_data / "dcmqi_ct3slice_seg" / "liver.dcm")
    assert labels.volume.same_grid(ct3slice)
    nrrd = load_labels(shared_data / "dcmqi_ct3slice_seg" / "liver_seg.nrrd")
    np.testing.assert_array_equal(labels.mask("Liver"), nrrd.array == 1)


def _even_odd_oracle(
    rtss: pydicom.Dataset, roi_number: int, grid: Volume, every: int = 1
) -> np.ndarray:
    """Independent rasteriser: matplotlib point-in-polygon on pixel centres, XOR per slice."""
    out = np.zeros(grid.shape, bool)
    rc = next(r for r in rtss.ROIContourSequence if int(r.ReferencedROINumber) == roi_number)
    for c in rc.ContourSequence:
        pts = np.asarray(c.ContourData, float).reshape(-1, 3)
        idx = grid.voxel_indices(pts)
        k = round(float(idx[0, 0]))
        if k % every:
            continue
        lo = np.maximum(np.floor(idx[:, 1:].min(axis=0)).astype(int), 0)
        hi = np.minimum(np.ceil(idx[:, 1:].max(axis=0)).astype(int) + 1, grid.shape[1:])
        rows, cols = np.meshgrid(np.arange(lo[0], hi[0]), np.arange(lo[1], hi[1]), indexing="ij")
        centres = np.column_stack([rows.ravel(), cols.ravel()])
        inside = MplPath(idx[:, 1:]).contains_points(centres).reshape(rows.shape)
        out[k, lo[0] : hi[0], lo[1] : hi[1]] ^= inside
    return out


def test_clinical_breast_rtstruct(shared_data: Path, breast_grid: Volume) -> None:
    path = shared_data / "dicompyler_breast_rtstruct" / "rtss.dcm"
    _grid, structures, warnings = load_dicom_masks(path, breast_grid)
    assert tuple(s.entry.name for s in structures) == BREAST_ROIS
    rtss = pydicom.dcmread(path)
    per_roi = {
        int(rc.ReferencedROINumber): len(rc.get("ContourSequence", []))
        for rc in rtss.ROIContourSequence
    }
    assert {s.entry.id: s.n_items for s in structures} == per_roi
    assert sum(s.n_items for s in structures) == 441
    assert warnings == []
    by_name = {s.entry.name: s for s in structures}
    assert not by_name["Areola"].mask.any()  # ROI without contours stays empty
    assert by_name["Heart"].entry.color == tuple(
        int(v) for v in rtss.ROIContourSequence[4].ROIDisplayColor
    )
    for name, number, every in (("Heart", 5, 1), ("Lt Lung", 6, 1), ("BODY", 1, 7)):
        oracle = _even_odd_oracle(rtss, number, breast_grid, every)
        mask = by_name[name].mask.copy()
        mask[np.arange(mask.shape[0]) % every != 0] = False
        assert (mask != oracle).sum() <= 0.001 * oracle.sum(), name
    heart_cm3 = by_name["Heart"].mask.sum() * np.prod(breast_grid.spacing_mm) / 1000
    assert 200 < heart_cm3 < 1500
    labels = load_dicom_labels(path, breast_grid)
    # heart lies inside BODY: the smaller structure keeps its voxels in the label map
    np.testing.assert_array_equal(
        labels.mask("Heart"), by_name["Heart"].mask & ~labels.mask("Tumor Bed")
    )
    assert any("'Heart' and the larger 'BODY'" in w for w in labels.warnings)


def test_tolerant_rtstruct_reading(shared_data: Path, breast_grid: Volume, tmp_path: Path) -> None:
    ds = pydicom.dcmread(shared_data / "dicompyler_breast_rtstruct" / "rtss.dcm")
    heart = next(r for r in ds.ROIContourSequence if int(r.ReferencedROINumber) == 5)
    first = heart.ContourSequence[0]
    pts = np.asarray(first.ContourData, float).reshape(-1, 3)
    two = pydicom.Dataset()
    two.ContourGeometricType = "CLOSED_PLANAR"
    two.NumberOfContourPoints = 2
    two.ContourData = pts[:2].ravel().tolist()
    between = pydicom.Dataset()
    between.ContourGeometricType = "CLOSED_PLANAR"
    shifted = pts.copy()
    shifted[:, 2] += 1.5  # half a slice
    between.NumberOfContourPoints = len(shifted)
    between.ContourData = shifted.ravel().tolist()
    heart.ContourSequence.extend([two, between])
    first.ContourGeometricType = "OPEN_PLANAR"
    out = tmp_path / "rt.dcm"
    ds.save_as(out)
    _grid, structures, warnings = load_dicom_masks(out, breast_grid)
    assert len(structures) == 10
    assert any("CLOSED_PLANAR contour with 2 points: 1 skipped" in w for w in warnings)
    assert any("OPEN_PLANAR contour" in w for w in warnings)
    assert any("between reference slices" in w for w in warnings)
    heart_mask = next(s for s in structures if s.entry.name == "Heart").mask
    assert heart_mask.sum() > 0


def test_rtstruct_needs_a_reference_and_non_label_dicom_is_refused(
    shared_data: Path,
) -> None:
    with pytest.raises(InputError, match="reference"):
        load_labels(shared_data / "dicompyler_breast_rtstruct" / "rtss.dcm")
    with pytest.raises(InputError, match="not a label object"):
        load_dicom_labels(shared_data / "dicompyler_breast_rtstruct" / "rtplan.dcm")


def test_rtstruct_partly_outside_the_reference_gives_one_warning_per_roi_and_reason(
    shared_data: Path, breast_grid: Volume
) -> None:
    """The lower half of the breast grid: contours above it are summarised, not listed."""
    top_half = Volume(breast_grid.array[:49], breast_grid.affine, modality="CT")
    path = shared_data / "dicompyler_breast_rtstruct" / "rtss.dcm"
    _grid, structures, warnings = load_dicom_masks(path, top_half)
    outside = [w for w in warnings if "lies outside the reference volume" in w]
    assert outside and len(warnings) <= 2 * len(BREAST_ROIS)  # not one line per slice
    body = next(w for w in outside if w.startswith("BODY:"))
    assert "skipped (slice indices 49.00 to" in body and "slices 0 to 48" in body
    full = {s.entry.name: s for s in load_dicom_masks(path, breast_grid)[1]}
    for s in structures:  # what lies inside is placed exactly as on the full grid
        np.testing.assert_array_equal(s.mask, full[s.entry.name].mask[:49])


def test_rtstruct_of_another_patient_is_one_geometry_error(
    shared_data: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from medseg.errors import GeometryError
    from medseg.io.mask_folder import read_mask_folder

    head = read_mask_folder(
        shared_data / "deepmind_hn_oar_masks" / "test" / "oncologist" / "0522c0017"
    )
    with caplog.at_level("WARNING"), pytest.raises(GeometryError) as exc:
        load_dicom_masks(shared_data / "dicompyler_breast_rtstruct" / "rtss.dcm", head.grid)
    msg = str(exc.value)
    assert "none of the RTSTRUCT's 441 contours lies on a slice of the reference image" in msg
    assert "-1178.0" in msg and "another patient" in msg
    assert caplog.records == []  # no warning flood before the error


def test_a_folder_or_a_non_dicom_file_is_named_in_words(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="a folder, not a DICOM-SEG or RTSTRUCT file"):
        load_dicom_masks(tmp_path)
    junk = tmp_path / "seg.dcm"
    junk.write_bytes(b"no DICOM here" * 20)
    with pytest.raises(InputError, match=r"seg\.dcm: not a readable DICOM file"):
        load_dicom_masks(junk)
