"""Fixtures: synthetic series (five orientations) and real series, exported once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
from dicom_testdata import ORIENTATIONS, Exported, repaired_copy, synthetic_case

from medseg.export import SeriesInfo, match_reference_grid, write_dicom_seg, write_rtstruct
from medseg.io import load_labels, load_volume
from medseg.volume import LabelMap, LabelVolume, Volume

# TotalSegmentator "total" class names of the labels in example_seg_dicom (see its SOURCE.md).
_RIBS = {92 + i: f"rib_left_{i + 1}" for i in range(12)} | {
    104 + i: f"rib_right_{i + 1}" for i in range(12)
}
TOTALSEG_NAMES = {
    1: "spleen", 5: "liver", 6: "stomach", 7: "pancreas", 8: "adrenal_gland_right",
    20: "colon", 32: "vertebrae_T12", 33: "vertebrae_T11", 52: "aorta",
    63: "inferior_vena_cava", 64: "portal_vein_and_splenic_vein", 69: "humerus_left",
    70: "humerus_right", 79: "spinal_cord", 86: "autochthon_left", 87: "autochthon_right",
    117: "costal_cartilages",
} | {k: v for k, v in _RIBS.items() if 97 <= k <= 103 or 109 <= k <= 115}  # fmt: skip


def _export(folder: Path, reference: Volume, labels: LabelVolume, out: Path) -> Exported:
    info = SeriesInfo(algorithm_version="1.2.3")
    seg = write_dicom_seg(labels, reference, out / "seg.dcm", info=info)
    segl = write_dicom_seg(labels, reference, out / "seg_lm.dcm", segmentation_type="labelmap")
    rt = write_rtstruct(labels, reference, out / "rtstruct.dcm", info=info)
    return Exported(folder, reference, labels, seg, segl, rt)


@pytest.fixture(scope="session")
def synthetic_exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Exported]:
    """Synthetic CT series (axial, negated cosines, feet-first, sagittal, coronal) + exports."""
    out = {}
    for name in ORIENTATIONS:
        base = tmp_path_factory.mktemp(f"synthetic_{name}")
        reference, labels = synthetic_case(base / "ct", name)
        out[name] = _export(base / "ct", reference, labels, base)
    return out


@pytest.fixture(scope="session")
def totalseg_export(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """The TotalSegmentator DICOM series (UIDs repaired, pixels untouched) and its label map."""
    base = tmp_path_factory.mktemp("totalseg")
    folder = repaired_copy(
        shared_data / "totalsegmentator_example_ct" / "example_ct_dicom", base / "ct"
    )
    reference = load_volume(folder)
    raw = load_labels(
        shared_data / "totalsegmentator_example_ct" / "example_seg_dicom.nii.gz",
        label_map=LabelMap.from_dict(TOTALSEG_NAMES),
    )
    labels = match_reference_grid(raw, reference)
    return _export(folder, reference, labels, base)


@pytest.fixture(scope="session")
def ct3slice_export(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """dcmqi's ct-3slice series with its liver/spine NRRD label map."""
    base = tmp_path_factory.mktemp("ct3slice")
    folder = shared_data / "dcmqi_ct3slice_seg" / "ct-3slice"
    reference = load_volume(folder)
    raw = load_labels(
        shared_data / "dcmqi_ct3slice_seg" / "liver_spine_seg.nrrd",
        label_map=LabelMap.from_dict({1: "Liver", 2: "Spine"}),
    )
    labels = match_reference_grid(raw, reference)
    return _export(folder, reference, labels, base)


@pytest.fixture(scope="session")
def all_exports(
    synthetic_exports: dict[str, Exported], totalseg_export: Exported, ct3slice_export: Exported
) -> dict[str, Exported]:
    """Every exported case by name."""
    return {**synthetic_exports, "totalseg": totalseg_export, "ct3slice": ct3slice_export}
