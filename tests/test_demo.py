"""`make demo` runs medseg.demo: keep it working end to end (slow: segments a real CT)."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest

from medseg.demo import main


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path: Path, shared_data: Path) -> None:
    out = tmp_path / "demo"
    assert main(["--shared", str(shared_data), "--out", str(out)]) == 0
    seg_dir = out / "segmentation"
    assert (seg_dir / "segmentation.nii.gz").is_file()
    info = json.loads((seg_dir / "segmentation.json").read_text())
    assert [e["name"] for e in info["labels"]][:2] == ["Brainstem", "SpinalCord"]
    seg = pydicom.dcmread(next(seg_dir.glob("*seg.dcm")), stop_before_pixels=True)
    rts = pydicom.dcmread(next(seg_dir.glob("*rtstruct.dcm")), stop_before_pixels=True)
    assert seg.Modality == "SEG" and rts.Modality == "RTSTRUCT"
    # both reference the CT series the demo wrote
    ct = pydicom.dcmread(next((out / "ct_dicom").glob("*.dcm")), stop_before_pixels=True)
    assert seg.StudyInstanceUID == rts.StudyInstanceUID == ct.StudyInstanceUID
    summary = json.loads((out / "demo_summary.json").read_text())
    labels = summary["metrics"]["labels"]
    # the shipped model's held-out mandible Dice is ~0.8 (docs/models/hn_oar.md)
    assert labels["Mandible"]["dice"] > 0.6, labels["Mandible"]
    assert (out / "overlay_axial.png").stat().st_size > 10_000
    assert len(summary["photos"]["images"]) == 3
