"""``medseg export`` in-process: NIfTI labels in another axis order → SEG / RTSTRUCT / NIfTI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from dicom_testdata import Exported, dciodvfy

from medseg.cli import main
from medseg.io import load_labels, save_labels
from medseg.preprocess import reorient


def test_export_command_seg_rtstruct_nifti(
    synthetic_exports: dict[str, Exported], tmp_path: Path
) -> None:
    ex = synthetic_exports["coronal"]
    # labels saved as NIfTI in another axis order: the command maps them back exactly
    flipped = reorient(ex.labels.volume, "RAS")
    assert flipped.orientation != ex.reference.orientation
    labels_path = save_labels(
        type(ex.labels)(flipped, ex.labels.label_map), tmp_path / "labels.nii.gz"
    )
    for fmt, name in (("seg", "seg.dcm"), ("rtstruct", "rt.dcm"), ("nifti", "back.nii.gz")):
        argv = ["export", str(labels_path), "--reference", str(ex.folder), "--format", fmt,
                "-o", str(tmp_path / name), "--algorithm-version", "9.9"]  # fmt: skip
        assert main(argv) == 0, fmt
        # existing output is kept without --overwrite (exit 2), replaced with it
        before = (tmp_path / name).stat().st_mtime_ns
        assert main(argv) == 2
        assert (tmp_path / name).stat().st_mtime_ns == before
        assert main([*argv, "--overwrite"]) == 0
    seg = load_labels(tmp_path / "seg.dcm", reference=ex.reference)
    for e in ex.labels.label_map:
        np.testing.assert_array_equal(seg.mask(e.name), ex.labels.mask(e.id))
    assert dciodvfy(tmp_path / "seg.dcm")[0] == [] and dciodvfy(tmp_path / "rt.dcm")[0] == []
    ds = pydicom.dcmread(tmp_path / "rt.dcm")
    assert ds.SoftwareVersions == "9.9"
    assert [r.ROIName for r in ds.StructureSetROISequence] == list(ex.labels.label_map.names)
    back = load_labels(tmp_path / "back.nii.gz")
    assert back.volume.same_grid(ex.reference)
    assert back.label_map.names == ex.labels.label_map.names


def test_export_command_errors(synthetic_exports: dict[str, Exported], tmp_path: Path) -> None:
    ex = synthetic_exports["axial"]
    nifti_ref = tmp_path / "ct.nii.gz"
    from medseg.io import save_volume

    save_volume(ex.reference, nifti_ref)
    labels_path = save_labels(ex.labels, tmp_path / "labels.nii.gz")
    argv = ["export", str(labels_path), "--reference", str(nifti_ref), "--format", "seg",
            "-o", str(tmp_path / "x.dcm")]  # fmt: skip
    assert main(argv) == 2  # the reference must be a DICOM series
    other = synthetic_exports["sagittal"]
    argv = ["export", str(labels_path), "--reference", str(other.folder), "--format", "seg",
            "-o", str(tmp_path / "x.dcm")]  # fmt: skip
    assert main(argv) == 2  # labels are not on that series' grid
    assert not (tmp_path / "x.dcm").exists()


def test_evaluate_accepts_seg_and_rtstruct_as_reference(
    synthetic_exports: dict[str, Exported], tmp_path: Path
) -> None:
    """A (clinical) RTSTRUCT or SEG can be the reference for QA with ``medseg evaluate``."""
    import json

    ex = synthetic_exports["feet_first"]
    pred = save_labels(ex.labels, tmp_path / "pred.nii.gz")
    for ref in (ex.rtstruct, ex.seg):
        out = tmp_path / f"metrics_{ref.stem}.json"
        assert main(["evaluate", str(pred), str(ref), "--json", str(out)]) == 0
        labels = json.loads(out.read_text())["cases"][0]["labels"]
        assert set(labels) == set(ex.labels.label_map.names)
        assert all(v["dice"] >= 0.97 for v in labels.values()), labels


def test_export_converts_dcmqi_seg_to_rtstruct(shared_data: Path, tmp_path: Path) -> None:
    """A third-party SEG (dcmqi liver.dcm) → RTSTRUCT on the same CT, read back with Dice ≥ 0.97."""
    d = shared_data / "dcmqi_ct3slice_seg"
    out = tmp_path / "liver_rt.dcm"
    argv = ["export", str(d / "liver.dcm"), "--reference", str(d / "ct-3slice"),
            "--format", "rtstruct", "-o", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert dciodvfy(out)[0] == []
    from medseg.io import load_volume

    ref = load_volume(d / "ct-3slice")
    back = load_labels(out, reference=ref)
    liver = load_labels(d / "liver_seg.nrrd").array == 1
    got = back.mask("Liver")
    assert 2 * (got & liver).sum() / (got.sum() + liver.sum()) >= 0.97
