"""``medseg segment`` in-process: outputs, sidecar, overwrite policy, formats, bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from tiny_models import tiny_checkpoint

from medseg.cli import main
from medseg.io import load_labels, load_volume
from medseg.io.dicom_write import write_dicom_series
from medseg.io.openkbp import OPENKBP_OARS
from medseg.preprocess import crop


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight checkpoint naming the seven OpenKBP organs."""
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


def test_segment_openkbp_folder(
    shared_data: Path, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    patient = shared_data / "openkbp_hn_ct" / "train-pats" / "pt_4"
    out = tmp_path / "out"
    args = ["segment", str(patient), "-o", str(out), "--model", str(checkpoint)]
    options = ["--device", "cpu", "--overlap", "0", "--precision", "float32"]
    assert main([*args, *options, "--accumulator", "float32"]) == 0
    labels = load_labels(out / "segmentation.nii.gz")
    ct = load_volume(patient)
    assert labels.volume.same_grid(ct, tolerance_mm=1e-3)
    assert labels.label_map.names == OPENKBP_OARS
    side = json.loads((out / "segmentation.json").read_text())
    assert side["model"]["name"] == "tiny"
    assert "sha256" in side["model"]["version"]
    assert side["labels"][2]["name"] == "LeftParotid" and len(side["labels"][2]["color"]) == 3
    assert side["labels"][0]["snomed_type"][0] == "15926001"  # Brainstem
    assert side["timings"]["network_s"] > 0 and side["timings"]["total_s"] > 0
    assert side["inference"]["overlap"] == 0 and side["inference"]["windows_run"] > 0
    assert side["inference"]["precision"] == "float32"
    assert side["inference"]["accumulator"] == "float32"
    assert isinstance(side["warnings"], list)
    # the network's own confidence per organ it found, for the review flags
    found = {e.name for e in labels.label_map if (labels.array == e.id).any()}
    assert found and found <= set(side["quality"])
    assert all(0.0 <= side["quality"][n]["expected_dice"] <= 1.0 for n in found)
    # existing outputs are kept without --overwrite
    before = (out / "segmentation.json").stat().st_mtime_ns
    assert main(args) == 2
    assert "already exist" in capsys.readouterr().err
    assert (out / "segmentation.json").stat().st_mtime_ns == before


@pytest.mark.slow  # end to end incl. DICOM-SEG + RTSTRUCT export (~90 s on the busy 2 cores)
def test_segment_dicom_series_to_seg_and_rtstruct(
    shared_data: Path, checkpoint: Path, tmp_path: Path
) -> None:
    ct = load_volume(shared_data / "totalsegmentator_example_ct" / "example_ct.nii.gz")
    ct = crop(ct, (slice(50, 80), slice(0, 101), slice(0, 122)))  # 30 slices: export is slow
    series = tmp_path / "series"
    write_dicom_series(ct.with_array(ct.array.astype(np.int16), modality="CT"), series)
    out = tmp_path / "out"
    argv = ["segment", str(series), "-o", str(out), "--model", str(checkpoint)]
    assert main([*argv, "--format", "nifti,seg,rtstruct", "--overlap", "0"]) == 0
    seg = pydicom.dcmread(out / "seg.dcm")
    rts = pydicom.dcmread(out / "rtstruct.dcm")
    assert seg.Modality == "SEG" and rts.Modality == "RTSTRUCT"
    source = load_volume(series)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.source.series_instance_uid
    labels = load_labels(out / "segmentation.nii.gz")
    assert labels.volume.same_grid(source)
    side = json.loads((out / "segmentation.json").read_text())
    assert side["outputs"] == {
        "nifti": "segmentation.nii.gz",
        "seg": "seg.dcm",
        "rtstruct": "rtstruct.dcm",
    }


def test_bad_requests_exit_2_with_a_message(
    shared_data: Path, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nifti = shared_data / "totalsegmentator_example_ct" / "example_ct_sm.nii.gz"
    base = ["segment", str(nifti), "-o", str(tmp_path / "o"), "--model", str(checkpoint)]
    assert main([*base, "--format", "nifti,jpeg"]) == 2
    assert "unknown ['jpeg']" in capsys.readouterr().err
    assert main([*base, "--format", "seg"]) == 2
    assert "needs a DICOM input" in capsys.readouterr().err
    assert main([*base, "--overlap", "1.5"]) == 2
    assert "overlap" in capsys.readouterr().err
    image2d = tmp_path / "photo.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((64, 64), np.int16), np.eye(4)), image2d)
    assert (
        main(["segment", str(image2d), "-o", str(tmp_path / "o2"), "--model", str(checkpoint)]) == 2
    )
    assert "3D" in capsys.readouterr().err
    one_slice = tmp_path / "slice.nii.gz"
    slice_hu = np.full((64, 64, 1), -1000, np.int16)  # a CT slice: air around 40 HU tissue
    slice_hu[16:48, 16:48] = 40
    nib.save(nib.Nifti1Image(slice_hu, np.eye(4)), one_slice)
    assert (
        main(["segment", str(one_slice), "-o", str(tmp_path / "o3"), "--model", str(checkpoint)])
        == 2
    )
    assert "too small" in capsys.readouterr().err
    assert main(["segment", str(nifti), "-o", str(tmp_path / "o4"), "--model", "nope"]) == 2
    assert "neither a shipped model" in capsys.readouterr().err
