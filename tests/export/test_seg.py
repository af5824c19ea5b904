"""DICOM-SEG export: validity (dciodvfy), round trips, highdicom as independent reader, metadata."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from dicom_testdata import EXPORT_CASES as CASES
from dicom_testdata import PATIENT_STUDY, Exported, dciodvfy
from pydicom.uid import UID

from medseg.errors import ExportError, GeometryError
from medseg.export import write_dicom_seg
from medseg.io import load_labels
from medseg.io.dicom_labels import load_dicom_labels
from medseg.volume import LabelMap, LabelVolume, Volume


@pytest.mark.parametrize("case", CASES)
def test_seg_is_valid_for_dciodvfy(all_exports: dict[str, Exported], case: str) -> None:
    errors, _warnings = dciodvfy(all_exports[case].seg)
    assert errors == []


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("kind", ["binary", "labelmap"])
def test_seg_round_trip_voxel_for_voxel(
    all_exports: dict[str, Exported], case: str, kind: str
) -> None:
    ex = all_exports[case]
    path = ex.seg if kind == "binary" else ex.seg_labelmap
    back = load_labels(path, reference=ex.reference)
    present = [e for e in ex.labels.label_map if ex.labels.mask(e.id).any()]
    assert back.label_map.names == tuple(e.name for e in present)
    for e in present:
        np.testing.assert_array_equal(back.mask(e.name), ex.labels.mask(e.id), err_msg=e.name)
    assert back.volume.same_grid(ex.reference)
    assert back.warnings == ()


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("kind", ["binary", "labelmap"])
def test_highdicom_reads_our_seg_to_the_same_masks(
    all_exports: dict[str, Exported], case: str, kind: str
) -> None:
    ex = all_exports[case]
    seg = hd.seg.segread(ex.seg if kind == "binary" else ex.seg_labelmap)
    uids = list(ex.reference.source.sop_instance_uids)  # type: ignore[union-attr]
    arr = seg.get_pixels_by_source_instance(uids, combine_segments=True, relabel=False)
    for number in seg.segment_numbers:
        name = seg.get_segment_description(number).segment_label
        np.testing.assert_array_equal(arr == number, ex.labels.mask(name), err_msg=name)


def test_seg_without_reference_uses_its_own_frame_geometry(
    synthetic_exports: dict[str, Exported],
) -> None:
    """Without a reference, the grid spans the frames (slice axis along row × column cosines)."""
    for name, ex in synthetic_exports.items():
        own = load_dicom_labels(ex.seg)
        shape = own.volume.shape
        k, r, c = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
        idx = np.stack([k.ravel(), r.ravel(), c.ravel()], axis=1)
        ref_idx = ex.reference.voxel_indices(own.volume.world_coordinates(idx))
        rounded = np.rint(ref_idx).astype(int)
        np.testing.assert_allclose(ref_idx, rounded, atol=1e-3, err_msg=name)
        values = ex.labels.array[rounded[:, 0], rounded[:, 1], rounded[:, 2]].reshape(shape)
        for e in own.label_map:
            expected = values == ex.labels.label_map.id_of(e.name)
            np.testing.assert_array_equal(own.mask(e.name), expected, err_msg=f"{name} {e.name}")
        covered = np.unique(rounded[:, 0])
        outside = np.setdiff1d(np.arange(ex.reference.shape[0]), covered)
        assert ex.labels.array[outside].max(initial=0) == 0, name


def test_seg_metadata(totalseg_export: Exported) -> None:
    ex = totalseg_export
    ds = pydicom.dcmread(ex.seg)
    src = pydicom.dcmread(ex.reference.source.files[0], stop_before_pixels=True)  # type: ignore[union-attr]
    # patient/study copied (empty where the source is empty: nothing invented)
    for kw in PATIENT_STUDY:
        assert str(ds.get(kw, "")) == str(src.get(kw, "")), kw
    assert ds.IssuerOfPatientID == src.IssuerOfPatientID
    # a new, valid series and instance
    assert ds.SeriesInstanceUID != src.SeriesInstanceUID and UID(ds.SeriesInstanceUID).is_valid
    assert ds.SOPInstanceUID != src.SOPInstanceUID and UID(ds.SOPInstanceUID).is_valid
    assert ds.FrameOfReferenceUID == src.FrameOfReferenceUID
    assert ds.SegmentationType == "BINARY"
    # one segment per present label with name, codes, colour, algorithm identification
    present = [e for e in ex.labels.label_map if ex.labels.mask(e.id).any()]
    assert [s.SegmentLabel for s in ds.SegmentSequence] == [e.name for e in present]
    liver = next(s for s in ds.SegmentSequence if s.SegmentLabel == "liver")
    assert liver.SegmentedPropertyTypeCodeSequence[0].CodeValue == "10200004"
    assert liver.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "123037004"
    assert liver.SegmentAlgorithmType == "AUTOMATIC"
    assert liver.SegmentAlgorithmName == "medseg"
    alg = liver.SegmentationAlgorithmIdentificationSequence[0]
    assert alg.AlgorithmVersion == "1.2.3" and alg.AlgorithmName == "medseg"
    rgb = hd.color.CIELabColor.from_dicom_value(tuple(liver.RecommendedDisplayCIELabValue)).to_rgb()
    assert tuple(rgb) == ex.labels.label_map[ex.labels.label_map.id_of("liver")].color
    colon = next(s for s in ds.SegmentSequence if s.SegmentLabel == "colon")
    assert colon.SegmentedPropertyTypeCodeSequence[0].CodeValue == "85756007"  # generic fallback
    # empty frames omitted: one frame per non-empty (slice, segment) pair
    expected = sum(int(ex.labels.mask(e.id).any(axis=(1, 2)).sum()) for e in present)
    assert ds.NumberOfFrames == expected


def test_seg_laterality_modifier(synthetic_exports: dict[str, Exported]) -> None:
    ds = pydicom.dcmread(synthetic_exports["axial"].seg)
    parotid = next(s for s in ds.SegmentSequence if s.SegmentLabel == "Left Parotid")
    type_item = parotid.SegmentedPropertyTypeCodeSequence[0]
    assert type_item.CodeValue == "45289007"
    assert type_item.SegmentedPropertyTypeModifierCodeSequence[0].CodeValue == "7771000"


def test_seg_refuses_overwrite_and_bad_inputs(
    synthetic_exports: dict[str, Exported], shared_data: Path, tmp_path: Path
) -> None:
    ex = synthetic_exports["axial"]
    before = ex.seg.read_bytes()
    with pytest.raises(ExportError, match="overwrite"):
        write_dicom_seg(ex.labels, ex.reference, ex.seg)
    assert ex.seg.read_bytes() == before
    out = write_dicom_seg(ex.labels, ex.reference, tmp_path / "a.dcm")
    write_dicom_seg(ex.labels, ex.reference, out, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["a.dcm"]  # no temp files left
    with pytest.raises(ExportError, match="segmentation_type"):
        write_dicom_seg(ex.labels, ex.reference, tmp_path / "b.dcm", segmentation_type="fractional")
    no_source = Volume(ex.reference.array, ex.reference.affine)
    with pytest.raises(ExportError, match="no DICOM source"):
        write_dicom_seg(ex.labels, no_source, tmp_path / "c.dcm")
    shifted = ex.labels.volume.affine.copy()
    shifted[:3, 3] += 1.0
    moved = LabelVolume(Volume(ex.labels.array, shifted), ex.labels.label_map)
    with pytest.raises(GeometryError, match="not the reference series grid"):
        write_dicom_seg(moved, ex.reference, tmp_path / "d.dcm")
    empty = LabelVolume(ex.labels.volume.with_array(np.zeros_like(ex.labels.array)), LabelMap())
    with pytest.raises(ExportError, match="empty"):
        write_dicom_seg(empty, ex.reference, tmp_path / "e.dcm")
    assert not (tmp_path / "d.dcm").exists() and not (tmp_path / "e.dcm").exists()


def test_seg_refuses_source_without_uids(shared_data: Path, tmp_path: Path) -> None:
    """The shared TotalSegmentator files have empty Study/Series/SOP UIDs in their datasets."""
    from medseg.io import load_volume

    ref = load_volume(shared_data / "totalsegmentator_example_ct" / "example_ct_dicom")
    labels = LabelVolume(ref.with_array(np.ones(ref.shape, np.uint8)), LabelMap.from_names(["a"]))
    with pytest.raises(ExportError, match="empty or invalid StudyInstanceUID"):
        write_dicom_seg(labels, ref, tmp_path / "x.dcm")
    assert not (tmp_path / "x.dcm").exists()


def test_exports_refuse_a_reference_changed_after_reading(
    synthetic_exports: dict[str, Exported], tmp_path: Path
) -> None:
    """A reoriented Volume keeps its DicomSource but no longer matches the source images."""
    from medseg.export import write_rtstruct
    from medseg.preprocess import reorient

    ex = synthetic_exports["axial"]
    ref = reorient(ex.reference, "IAR")
    assert ref.source is ex.reference.source
    labels = LabelVolume(reorient(ex.labels.volume, "IAR"), ex.labels.label_map)
    with pytest.raises(GeometryError, match="resampled, reoriented or cropped"):
        write_dicom_seg(labels, ref, tmp_path / "seg.dcm")
    with pytest.raises(GeometryError, match="resampled, reoriented or cropped"):
        write_rtstruct(labels, ref, tmp_path / "rt.dcm")
    assert list(tmp_path.iterdir()) == []
