"""RTSTRUCT export: dciodvfy validity, IOD content, round trips, plastimatch as a reader."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_testdata import EXPORT_CASES as CASES
from dicom_testdata import PATIENT_STUDY, RT_REQUIRED, Exported, centroid_mm, dciodvfy, dice

from medseg.errors import ExportError
from medseg.export import write_rtstruct
from medseg.io import load_labels, save_volume
from medseg.io.image_files import read_image_file
from medseg.raster import mask_to_contours
from medseg.volume import LabelMap, LabelVolume, Volume


@pytest.mark.parametrize("case", CASES)
def test_rtstruct_is_valid_for_dciodvfy(all_exports: dict[str, Exported], case: str) -> None:
    errors, _warnings = dciodvfy(all_exports[case].rtstruct)
    assert errors == []


@pytest.mark.parametrize("case", CASES)
def test_rtstruct_round_trip_dice_and_centroid(all_exports: dict[str, Exported], case: str) -> None:
    ex = all_exports[case]
    back = load_labels(ex.rtstruct, reference=ex.reference)
    assert back.label_map.names == ex.labels.label_map.names
    voxel_cm3 = float(np.prod(ex.reference.spacing_mm)) / 1000.0
    checked = 0
    for e in ex.labels.label_map:
        ours = ex.labels.mask(e.id)
        if ours.sum() * voxel_cm3 < 1.0:
            continue
        got = back.mask(e.name)
        assert dice(got, ours) >= 0.97, e.name
        shift = np.linalg.norm(centroid_mm(got, ex.reference) - centroid_mm(ours, ex.reference))
        assert shift <= 0.5, (e.name, shift)
        checked += 1
    assert checked >= 2


def test_rtstruct_iod_content(totalseg_export: Exported) -> None:
    ex = totalseg_export
    ds = pydicom.dcmread(ex.rtstruct)
    src = pydicom.dcmread(ex.reference.source.files[0], stop_before_pixels=True)  # type: ignore[union-attr]
    ref = ex.reference.source
    assert ref is not None
    assert ds.Modality == "RTSTRUCT" and ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.481.3"
    for kw in PATIENT_STUDY:
        assert kw in ds and str(ds[kw].value) == str(src.get(kw, "")), kw
    for kw in RT_REQUIRED:
        assert kw in ds, kw
    assert ds.SeriesInstanceUID != ref.series_instance_uid
    for_item = ds.ReferencedFrameOfReferenceSequence[0]
    assert for_item.FrameOfReferenceUID == ref.frame_of_reference_uid
    study = for_item.RTReferencedStudySequence[0]
    assert study.ReferencedSOPInstanceUID == ref.study_instance_uid
    series = study.RTReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == ref.series_instance_uid
    assert [i.ReferencedSOPInstanceUID for i in series.ContourImageSequence] == list(
        ref.sop_instance_uids
    )
    names = [r.ROIName for r in ds.StructureSetROISequence]
    assert names == list(ex.labels.label_map.names)
    assert all(r.ROIGenerationAlgorithm == "AUTOMATIC" for r in ds.StructureSetROISequence)
    assert all(o.RTROIInterpretedType == "ORGAN" for o in ds.RTROIObservationsSequence)
    liver_obs = next(o for o in ds.RTROIObservationsSequence if o.ROIObservationLabel == "liver")
    assert liver_obs.RTROIIdentificationCodeSequence[0].CodeValue == "10200004"
    back = load_labels(ex.rtstruct, reference=ex.reference)
    assert back.label_map[back.label_map.id_of("liver")].snomed_type == ("10200004", "Liver")
    lm = ex.labels.label_map
    n_points = 0
    for rc in ds.ROIContourSequence:
        entry = lm[int(rc.ReferencedROINumber)]
        assert tuple(rc.ROIDisplayColor) == entry.color
        for c in rc.ContourSequence:
            assert c.ContourGeometricType == "CLOSED_PLANAR" and c.NumberOfContourPoints >= 3
            raw = c["ContourData"].value
            assert len(raw) == 3 * c.NumberOfContourPoints
            pts = np.asarray(raw, float).reshape(-1, 3)
            # every contour lies on the image it references
            uid = c.ContourImageSequence[0].ReferencedSOPInstanceUID
            k = ref.sop_instance_uids.index(uid)
            np.testing.assert_allclose(ex.reference.voxel_indices(pts)[:, 0], k, atol=1e-3)
            n_points += len(pts)
    assert n_points > 1000
    # every decimal string is at most 16 characters (Eclipse rejects longer ones)
    text = ex.rtstruct.read_bytes()
    start = text.index(b"\x06\x30\x50\x00")  # first (3006,0050) ContourData
    value_len = int.from_bytes(text[start + 6 : start + 8], "little")
    values = text[start + 8 : start + 8 + value_len].strip().split(b"\\")
    assert max(len(v) for v in values) <= 16


def test_rtstruct_ds_values_are_short_for_long_floats(tmp_path: Path) -> None:
    """Origins like 19.034504652023315 (TotalSegmentator-AIDE #11) still give ≤ 16 chars."""
    from dicom_testdata import synthetic_case

    origin = (19.034504652023315, -123456.78901234567, 0.1 + 0.2)
    ref, labels = synthetic_case(
        tmp_path / "ct", "negated", spacing=(2.5, 0.977, 0.977), origin_mm=origin
    )
    out = write_rtstruct(labels, ref, tmp_path / "rt.dcm")
    ds = pydicom.dcmread(out)
    for rc in ds.ROIContourSequence:
        for c in rc.ContourSequence:
            assert all(len(str(v.original_string)) <= 16 for v in c.ContourData)


def test_holes_are_separate_inner_contours_and_fragments_dropped() -> None:
    m = np.zeros((20, 20), bool)
    m[2:15, 2:15] = True
    m[5:10, 5:10] = False  # hole
    m[7, 7] = True  # one-pixel island in the hole: sub-voxel fragment
    m[18, 18] = True  # isolated single pixel: dropped
    m[18, 1:3] = True  # two-pixel line: kept (area 1.5 px)
    contours = mask_to_contours(m)
    areas = sorted(
        round(
            abs(
                0.5
                * float(
                    np.dot(c[:, 0], np.roll(c[:, 1], -1)) - np.dot(np.roll(c[:, 0], -1), c[:, 1])
                )
            ),
            2,
        )
        for c in contours
    )
    assert len(contours) == 3  # outer, hole, two-pixel line
    assert areas == [1.5, 24.5, 168.5]
    assert all(len(c) >= 3 for c in contours)


def test_empty_label_keeps_its_roi(synthetic_exports: dict[str, Exported], tmp_path: Path) -> None:
    ex = synthetic_exports["axial"]
    lm = LabelMap(tuple(ex.labels.label_map) + LabelMap.from_dict({9: "Spleen"}).entries)
    labels = LabelVolume(ex.labels.volume, lm)
    out = write_rtstruct(labels, ex.reference, tmp_path / "rt.dcm")
    ds = pydicom.dcmread(out)
    spleen = next(rc for rc in ds.ROIContourSequence if rc.ReferencedROINumber == 9)
    assert "ContourSequence" not in spleen
    assert dciodvfy(out)[0] == []
    with pytest.raises(ExportError, match="overwrite"):
        write_rtstruct(labels, ex.reference, out)


def _plastimatch_masks(ex: Exported, out: Path) -> dict[str, Volume]:
    """Rasterise with plastimatch: even-odd (--xor-contours) on the reference grid (--fixed)."""
    exe = shutil.which("plastimatch")
    if exe is None:
        raise RuntimeError("plastimatch not found: install Debian's plastimatch (make system-deps)")
    fixed = save_volume(ex.reference, out.parent / "fixed.nrrd")
    cmd = [exe, "convert", "--input", str(ex.rtstruct), "--referenced-ct", str(ex.folder),
           "--fixed", str(fixed), "--xor-contours",
           "--output-prefix", str(out), "--prefix-format", "nrrd"]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    return {p.name[: -len(".nrrd")]: read_image_file(p) for p in sorted(out.glob("*.nrrd"))}  # type: ignore[misc]


@pytest.mark.parametrize(
    "case", ["negated", "feet_first", "sagittal", "coronal", "totalseg", "ct3slice"]
)
def test_plastimatch_agrees_with_our_rtstruct(
    all_exports: dict[str, Exported], case: str, tmp_path: Path
) -> None:
    ex = all_exports[case]
    masks = _plastimatch_masks(ex, tmp_path / "pm")
    ours = load_labels(ex.rtstruct, reference=ex.reference)
    voxel_cm3 = float(np.prod(ex.reference.spacing_mm)) / 1000.0
    checked = 0
    for e in ex.labels.label_map:
        if ex.labels.mask(e.id).sum() * voxel_cm3 < 1.0:
            continue
        pm = masks[e.name]
        from medseg.export import match_reference_grid

        pm_labels = LabelVolume(
            pm.with_array(pm.array.astype(np.uint8)), LabelMap.from_names(["x"])
        )
        on_grid = match_reference_grid(pm_labels, ex.reference).array > 0
        assert dice(on_grid, ours.mask(e.name)) >= 0.97, e.name
        checked += 1
    assert checked >= 2
